//! Revenue view conformance: every case is one generic function over the view (`Projection + RevenueView`),
//! run against the SQLite view (a temp folder) and the DynamoDB view (DynamoDB Local, fresh tables per test).

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use orderflow::domain::{Currency, OrderEvent, OrderId};
use orderflow::store::{StoredEvent, codec};
use orderflow::views::revenue_dynamo::DynamoRevenueView;
use orderflow::views::revenue_sqlite::SqliteRevenueView;
use orderflow::views::{ApplyReport, Projection, RevenueDay, RevenueView, ViewError};
use uuid::Uuid;

use crate::support::{at, cancelled, dynamo, order_id, paid, placed, shipped};

/// Both halves of a revenue view, as one object.
pub trait RevenueAdapter: Projection + RevenueView {}
impl<T: Projection + RevenueView> RevenueAdapter for T {}

async fn run_sqlite<F: Future<Output = ()>>(case: impl FnOnce(Arc<dyn RevenueAdapter>) -> F) {
    run_sqlite_in(Tz::UTC, case).await;
}

async fn run_dynamo<F: Future<Output = ()>>(case: impl FnOnce(Arc<dyn RevenueAdapter>) -> F) {
    run_dynamo_in(Tz::UTC, case).await;
}

/// The SQLite view with business days in `zone`.
async fn run_sqlite_in<F: Future<Output = ()>>(zone: Tz, case: impl FnOnce(Arc<dyn RevenueAdapter>) -> F) {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = SqliteRevenueView::open(dir.path(), 2, zone).expect("open the SQLite view");
    case(view).await;
}

/// The DynamoDB view with business days in `zone`.
async fn run_dynamo_in<F: Future<Output = ()>>(zone: Tz, case: impl FnOnce(Arc<dyn RevenueAdapter>) -> F) {
    let Some((client, tables)) = dynamo().await else { return };
    let view = DynamoRevenueView::open(client, tables, true, zone).await.expect("open the DynamoDB view");
    case(view).await;
}

/// One `#[tokio::test]` per adapter for each case: `sqlite::<case>` and `dynamo::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::run_sqlite(super::$case).await; })*
        }
        mod dynamo {
            $(#[tokio::test] async fn $case() { super::run_dynamo(super::$case).await; })*
        }
    };
}

conformance! {
    totals_are_exact_and_redelivery_changes_nothing,
    events_out_of_order_are_refused,
    daily_filters_by_range_and_currency_across_month_boundaries,
    shipping_only_moves_the_version,
    many_orders_paying_on_one_day_add_up,
    a_large_batch_delivered_twice_at_once_counts_each_event_once,
    a_rebuild_fills_a_fresh_copy_unseen_by_queries_until_it_is_swapped_in,
    an_aborted_rebuild_leaves_the_view_as_it_was,
}

/// The same case on both adapters, each built with `revenue.timezone = Europe/Berlin`.
mod business_days {
    use chrono_tz::Tz;

    #[tokio::test]
    async fn sqlite() {
        super::run_sqlite_in(Tz::Europe__Berlin, super::days_are_dates_in_the_views_time_zone_across_dst).await;
    }

    #[tokio::test]
    async fn dynamo() {
        super::run_dynamo_in(Tz::Europe__Berlin, super::days_are_dates_in_the_views_time_zone_across_dst).await;
    }
}

// ---- helpers ------------------------------------------------------------------------------------------

fn ev(id: &OrderId, version: u64, event: OrderEvent) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::now_v7(),
        order_id: id.clone(),
        version,
        position: 0,
        schema_version: codec::schema_version(&event),
        recorded_at: Utc::now(),
        traceparent: None,
        event,
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn day(date: NaiveDate, currency: &str, gross: u64, refunds: u64, paid: u64, cancelled: u64) -> RevenueDay {
    RevenueDay {
        date,
        currency: currency.to_owned(),
        gross_revenue: gross,
        refunds,
        net_revenue: gross as i64 - refunds as i64,
        paid_orders: paid,
        cancelled_orders: cancelled,
    }
}

fn currency(code: &str) -> Option<Currency> {
    Some(Currency::parse("currency", code).expect("valid currency"))
}

fn report(applied: u64, skipped: u64) -> ApplyReport {
    ApplyReport { applied, skipped }
}

/// Four orders around the January/February boundary, their events interleaved as a feed would deliver them
/// (each order's in version order).
fn boundary_feed() -> Vec<StoredEvent> {
    let (a, b, c, d) = (order_id(), order_id(), order_id(), order_id());
    let jan30 = at(2025, 1, 30, 9, 0, 0);
    vec![
        ev(&a, 1, placed("EUR", 1000, jan30)),
        ev(&b, 1, placed("EUR", 2500, jan30)),
        ev(&a, 2, paid(1000, at(2025, 1, 31, 23, 59, 59))),
        ev(&c, 1, placed("USD", 700, jan30)),
        ev(&b, 2, paid(2500, at(2025, 1, 31, 10, 0, 0))),
        ev(&d, 1, placed("EUR", 400, jan30)),
        ev(&c, 2, paid(700, at(2025, 1, 31, 12, 0, 0))),
        // A refund counts on the day of the cancellation, not of the payment.
        ev(&a, 3, cancelled(1000, at(2025, 2, 1, 0, 0, 1))),
        ev(&b, 3, shipped(at(2025, 2, 1, 8, 0, 0))),
        // Cancelled before payment: counted as a cancellation, with no refund.
        ev(&d, 2, cancelled(0, at(2025, 2, 1, 9, 0, 0))),
    ]
}

fn boundary_days() -> Vec<RevenueDay> {
    vec![
        day(date(2025, 1, 31), "EUR", 3500, 0, 2, 0),
        day(date(2025, 1, 31), "USD", 700, 0, 1, 0),
        day(date(2025, 2, 1), "EUR", 0, 1000, 0, 2),
    ]
}

async fn all_days(view: &dyn RevenueAdapter) -> Vec<RevenueDay> {
    view.daily(date(2024, 12, 1), date(2025, 12, 31), None).await.expect("daily")
}

// ---- the cases ----------------------------------------------------------------------------------------

async fn totals_are_exact_and_redelivery_changes_nothing(view: Arc<dyn RevenueAdapter>) {
    let feed = boundary_feed();
    assert_eq!(view.apply(&feed, None).await.expect("apply"), report(10, 0));
    assert_eq!(all_days(&*view).await, boundary_days());

    // The whole batch again (a replay), then a suffix of it (a redelivery after a crash): all skipped.
    assert_eq!(view.apply(&feed, None).await.expect("replay"), report(0, 10));
    assert_eq!(view.apply(&feed[6..], None).await.expect("redelivery"), report(0, 4));
    for event in &feed {
        assert_eq!(view.apply(std::slice::from_ref(event), None).await.expect("one"), report(0, 1));
    }
    assert_eq!(all_days(&*view).await, boundary_days());

    // A redelivered suffix followed by a new order's events: only the new ones count.
    let mut batch = feed[7..].to_vec();
    let e = order_id();
    batch.push(ev(&e, 1, placed("EUR", 10, at(2025, 2, 1, 0, 0, 0))));
    batch.push(ev(&e, 2, paid(10, at(2025, 2, 1, 12, 0, 0))));
    assert_eq!(view.apply(&batch, None).await.expect("mixed"), report(2, 3));
    let mut want = boundary_days();
    want[2] = day(date(2025, 2, 1), "EUR", 10, 1000, 1, 2);
    assert_eq!(all_days(&*view).await, want);
}

/// A view in Europe/Berlin around the switch to summer time (2026-03-29, 01:00 UTC): its 29th runs from
/// 2026-03-28T23:00Z to 2026-03-29T22:00Z, and each payment and refund counts on its local date.
async fn days_are_dates_in_the_views_time_zone_across_dst(view: Arc<dyn RevenueAdapter>) {
    let (a, b, c) = (order_id(), order_id(), order_id());
    let noon = at(2026, 3, 28, 12, 0, 0);
    let feed = [
        ev(&a, 1, placed("EUR", 100, noon)),
        ev(&b, 1, placed("EUR", 200, noon)),
        ev(&c, 1, placed("EUR", 400, noon)),
        // 23:30 CET on the 28th (a UTC day would say the same).
        ev(&a, 2, paid(100, at(2026, 3, 28, 22, 30, 0))),
        // 00:30 CET on the 29th, still the 28th in UTC.
        ev(&b, 2, paid(200, at(2026, 3, 28, 23, 30, 0))),
        // 23:30 CEST on the 29th.
        ev(&c, 2, paid(400, at(2026, 3, 29, 21, 30, 0))),
        // 00:30 CEST on the 30th, still the 29th in UTC: the refund counts on the 30th.
        ev(&c, 3, cancelled(400, at(2026, 3, 29, 22, 30, 0))),
    ];
    assert_eq!(view.apply(&feed, None).await.expect("apply"), report(7, 0));
    let days = view.daily(date(2026, 3, 1), date(2026, 3, 31), None).await.expect("daily");
    assert_eq!(
        days,
        [
            day(date(2026, 3, 28), "EUR", 100, 0, 1, 0),
            day(date(2026, 3, 29), "EUR", 600, 0, 2, 0),
            day(date(2026, 3, 30), "EUR", 0, 400, 0, 1),
        ]
    );
}

async fn events_out_of_order_are_refused(view: Arc<dyn RevenueAdapter>) {
    let id = order_id();
    let t = at(2025, 5, 10, 12, 0, 0);
    view.apply(&[ev(&id, 1, placed("EUR", 500, t))], None).await.expect("v1");

    // A gap: v3 after v1.
    match view.apply(&[ev(&id, 3, cancelled(500, t))], None).await {
        Err(ViewError::OutOfOrder { order_id, version: 3, have: 1 }) => assert_eq!(order_id, id.as_str()),
        other => panic!("expected OutOfOrder v3 after v1, got {other:?}"),
    }
    // A payment for an order the view has never seen placed.
    let unknown = order_id();
    match view.apply(&[ev(&unknown, 2, paid(500, t))], None).await {
        Err(ViewError::OutOfOrder { version: 2, have: 0, .. }) => {}
        other => panic!("expected OutOfOrder v2 after nothing, got {other:?}"),
    }
    assert!(all_days(&*view).await.is_empty(), "nothing counted");

    // Once the gap is filled, the same events apply.
    let rest = [ev(&id, 2, paid(500, t)), ev(&id, 3, cancelled(500, t))];
    assert_eq!(view.apply(&rest, None).await.expect("in order"), report(2, 0));
    assert_eq!(all_days(&*view).await, [day(date(2025, 5, 10), "EUR", 500, 500, 1, 1)]);
}

async fn daily_filters_by_range_and_currency_across_month_boundaries(view: Arc<dyn RevenueAdapter>) {
    let mut feed = boundary_feed();
    // One more payment at the turn of the year, and one outside every range below.
    let (y, late) = (order_id(), order_id());
    feed.push(ev(&y, 1, placed("USD", 300, at(2024, 12, 30, 0, 0, 0))));
    feed.push(ev(&y, 2, paid(300, at(2024, 12, 31, 23, 0, 0))));
    feed.push(ev(&late, 1, placed("EUR", 50, at(2025, 3, 1, 0, 0, 0))));
    feed.push(ev(&late, 2, paid(50, at(2025, 3, 2, 0, 0, 0))));
    view.apply(&feed, None).await.expect("apply");

    let [jan31_eur, jan31_usd, feb1_eur] = <[RevenueDay; 3]>::try_from(boundary_days()).expect("three days");
    let dec31_usd = day(date(2024, 12, 31), "USD", 300, 0, 1, 0);
    let none: [RevenueDay; 0] = [];
    let query = |from: NaiveDate, to: NaiveDate, code: Option<&'static str>| {
        let view = Arc::clone(&view);
        async move { view.daily(from, to, code.and_then(currency)).await.expect("daily") }
    };

    // Across a month boundary, both ends inclusive, sorted by date then currency.
    assert_eq!(
        query(date(2025, 1, 31), date(2025, 2, 1), None).await,
        [jan31_eur.clone(), jan31_usd.clone(), feb1_eur.clone()]
    );
    assert_eq!(query(date(2025, 1, 31), date(2025, 2, 1), Some("USD")).await, std::slice::from_ref(&jan31_usd));
    assert_eq!(query(date(2025, 1, 31), date(2025, 2, 1), Some("EUR")).await, [jan31_eur.clone(), feb1_eur.clone()]);
    assert_eq!(query(date(2025, 1, 31), date(2025, 2, 1), Some("GBP")).await, none);
    // Across a year boundary.
    assert_eq!(query(date(2024, 12, 31), date(2025, 1, 31), Some("USD")).await, [dec31_usd.clone(), jan31_usd.clone()]);
    // Single days, and ranges that hold no activity.
    assert_eq!(query(date(2025, 2, 1), date(2025, 2, 1), None).await, std::slice::from_ref(&feb1_eur));
    assert_eq!(query(date(2025, 1, 1), date(2025, 1, 30), None).await, none);
    assert_eq!(query(date(2025, 2, 2), date(2025, 3, 1), None).await, none);
    assert_eq!(query(date(2025, 2, 1), date(2025, 1, 31), None).await, none, "from after to");
    // A whole year: everything, in order.
    assert_eq!(
        query(date(2024, 12, 1), date(2025, 11, 30), None).await,
        [dec31_usd, jan31_eur, jan31_usd, feb1_eur, day(date(2025, 3, 2), "EUR", 50, 0, 1, 0)]
    );
}

async fn shipping_only_moves_the_version(view: Arc<dyn RevenueAdapter>) {
    let id = order_id();
    let t: DateTime<Utc> = at(2025, 7, 1, 12, 0, 0);
    let events = [ev(&id, 1, placed("EUR", 900, t)), ev(&id, 2, paid(900, t)), ev(&id, 3, shipped(t))];
    assert_eq!(view.apply(&events, None).await.expect("apply"), report(3, 0));
    let after_ship = all_days(&*view).await;
    assert_eq!(after_ship, [day(date(2025, 7, 1), "EUR", 900, 0, 1, 0)]);
    // v4 follows the shipment (the view checks order, not business rules): the shipment moved the version.
    assert_eq!(view.apply(&[ev(&id, 4, cancelled(900, t))], None).await.expect("v4"), report(1, 0));
    assert_eq!(view.apply(&[ev(&id, 3, shipped(t))], None).await.expect("v3 again"), report(0, 1));
    assert_eq!(all_days(&*view).await, [day(date(2025, 7, 1), "EUR", 900, 900, 1, 1)]);
}

async fn many_orders_paying_on_one_day_add_up(view: Arc<dyn RevenueAdapter>) {
    // Many orders in one batch all add to the same day row (the DynamoDB view applies orders concurrently).
    let t = at(2025, 9, 15, 8, 0, 0);
    let mut feed = Vec::new();
    for n in 0..40u64 {
        let id = order_id();
        feed.push(ev(&id, 1, placed("EUR", 100 + n, t)));
        feed.push(ev(&id, 2, paid(100 + n, at(2025, 9, 15, 9, 0, n as u32))));
        if n % 4 == 0 {
            feed.push(ev(&id, 3, cancelled(100 + n, at(2025, 9, 15, 18, 0, 0))));
        }
    }
    let gross: u64 = (0..40).map(|n| 100 + n).sum();
    let refunds: u64 = (0..40).filter(|n| n % 4 == 0).map(|n| 100 + n).sum();
    assert_eq!(view.apply(&feed, None).await.expect("apply"), report(90, 0));
    assert_eq!(view.apply(&feed, None).await.expect("replay"), report(0, 90));
    assert_eq!(all_days(&*view).await, [day(date(2025, 9, 15), "EUR", gross, refunds, 40, 10)]);
}

/// More orders than one DynamoDB transaction holds (the view writes a batch in packs of up to 100 items), and
/// the same batch applied twice at the same time (a redelivery racing the delivery, or two instances): one
/// apply finds rows moved under it and must count those events as duplicates, not twice and not as gaps.
async fn a_large_batch_delivered_twice_at_once_counts_each_event_once(view: Arc<dyn RevenueAdapter>) {
    let mut feed = Vec::new();
    for n in 0..150u64 {
        let id = order_id();
        feed.push(ev(&id, 1, placed("EUR", 10 + n, at(2025, 10, 1, 8, 0, 0))));
        feed.push(ev(&id, 2, paid(10 + n, at(2025, 10, 1, 9, 0, 0))));
        if n % 3 == 0 {
            feed.push(ev(&id, 3, cancelled(10 + n, at(2025, 10, 2, 10, 0, 0))));
        }
    }
    let (a, b) = tokio::join!(view.apply(&feed, None), view.apply(&feed, None));
    let (a, b) = (a.expect("the delivery"), b.expect("the redelivery"));
    assert_eq!((a.applied + b.applied, a.skipped + b.skipped), (350, 350), "each event counted once: {a:?} {b:?}");
    let gross: u64 = (0..150).map(|n| 10 + n).sum();
    let refunds: u64 = (0..150).filter(|n| n % 3 == 0).map(|n| 10 + n).sum();
    assert_eq!(
        all_days(&*view).await,
        [day(date(2025, 10, 1), "EUR", gross, 0, 150, 0), day(date(2025, 10, 2), "EUR", 0, refunds, 0, 50)]
    );
    // And once more, alone: nothing new.
    assert_eq!(view.apply(&feed, None).await.expect("replay"), report(0, 350));
}

/// A rebuild fills a fresh copy (a SQLite generation; fresh DynamoDB tables) with the view's own apply logic;
/// queries see the current totals until `finish` switches, and the projector then goes on against the copy.
async fn a_rebuild_fills_a_fresh_copy_unseen_by_queries_until_it_is_swapped_in(view: Arc<dyn RevenueAdapter>) {
    let feed = boundary_feed();
    // The current view lags behind the write model: only A placed and paid, B placed.
    view.apply(&feed[..3], None).await.expect("the current view");
    let before = all_days(&*view).await;
    assert_eq!(before, [day(date(2025, 1, 31), "EUR", 1000, 0, 1, 0)]);

    let mut rebuild = view.rebuild().await.expect("a fresh copy");
    rebuild.apply(Arc::from(&feed[..6]), Some(6)).await.expect("first chunk");
    assert_eq!(all_days(&*view).await, before, "queries never see the partial copy");
    rebuild.apply(Arc::from(&feed[6..]), Some(10)).await.expect("second chunk");
    assert_eq!(all_days(&*view).await, before);
    rebuild.finish().await.expect("switched");
    assert_eq!(all_days(&*view).await, boundary_days());

    // The projector's next batch: a redelivered suffix (skipped by the copy's dedupe rows) and a new order.
    let mut batch = feed[7..].to_vec();
    let e = order_id();
    batch.push(ev(&e, 1, placed("EUR", 10, at(2025, 2, 1, 0, 0, 0))));
    batch.push(ev(&e, 2, paid(10, at(2025, 2, 1, 12, 0, 0))));
    assert_eq!(view.apply(&batch, None).await.expect("after the switch"), report(2, 3));
    let mut want = boundary_days();
    want[2] = day(date(2025, 2, 1), "EUR", 10, 1000, 1, 2);
    assert_eq!(all_days(&*view).await, want);

    // And again: a second rebuild from the same write model gives the same totals.
    let mut again = view.rebuild().await.expect("another fresh copy");
    let mut write_model = feed.clone();
    write_model.extend_from_slice(&batch[3..]);
    again.apply(Arc::from(write_model.as_slice()), Some(12)).await.expect("fill");
    again.finish().await.expect("switched again");
    assert_eq!(all_days(&*view).await, want);
}

/// A rebuild given up (a failed read of the write model) changes nothing, and a later rebuild starts afresh.
async fn an_aborted_rebuild_leaves_the_view_as_it_was(view: Arc<dyn RevenueAdapter>) {
    let feed = boundary_feed();
    view.apply(&feed[..3], None).await.expect("the current view");
    let before = all_days(&*view).await;
    let mut rebuild = view.rebuild().await.expect("a fresh copy");
    rebuild.apply(Arc::from(feed.as_slice()), Some(10)).await.expect("fill");
    rebuild.abort().await;
    assert_eq!(all_days(&*view).await, before);
    // The current view still takes the projector's batches.
    assert_eq!(view.apply(&feed, None).await.expect("apply"), report(7, 3));
    assert_eq!(all_days(&*view).await, boundary_days());

    let mut again = view.rebuild().await.expect("another fresh copy");
    again.apply(Arc::from(&feed[..3]), Some(3)).await.expect("fill");
    again.finish().await.expect("switched");
    assert_eq!(all_days(&*view).await, before, "exactly what the rebuild was given");
}

/// The DynamoDB switch is durable and cleans up: the pointer item names the new generation, a view opened
/// afterwards (a restart, another instance) reads the new tables, the old ones are deleted, and an aborted
/// rebuild deletes its tables.
#[tokio::test]
async fn dynamo_rebuild_switches_table_generations_durably_and_deletes_the_old_tables() {
    let Some((client, tables)) = dynamo().await else { return };
    let view = DynamoRevenueView::open(client.clone(), tables.clone(), true, Tz::UTC).await.expect("open");
    let feed = boundary_feed();
    view.apply(&feed[..3], None).await.expect("the current view");
    let exists = |name: String| {
        let client = client.clone();
        async move { client.describe_table().table_name(name).send().await.is_ok() }
    };
    let generation = || async {
        let item = client
            .get_item()
            .table_name(&tables.checkpoints)
            .key("id", aws_sdk_dynamodb::types::AttributeValue::S("revenue#generation".into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get the pointer")
            .item
            .unwrap_or_default();
        item.get("generation").and_then(|v| v.as_n().ok()).map(|n| n.parse::<u64>().expect("a number"))
    };
    assert_eq!(generation().await, None, "no rebuild yet: generation 0");

    // Aborted: its tables go, the pointer stays.
    let mut aborted = view.rebuild().await.expect("fresh tables");
    assert!(exists(tables.revenue_generation(1).daily).await, "generation 1 is being filled");
    aborted.apply(Arc::from(feed.as_slice()), None).await.expect("fill");
    aborted.abort().await;
    assert!(!exists(tables.revenue_generation(1).daily).await && !exists(tables.revenue_generation(1).orders).await);
    assert_eq!(generation().await, None);

    // Switched: generation 2 (numbers are never reused), durable, old tables gone.
    let mut rebuild = view.rebuild().await.expect("fresh tables");
    rebuild.apply(Arc::from(feed.as_slice()), None).await.expect("fill");
    rebuild.finish().await.expect("switched");
    assert_eq!(generation().await, Some(2));
    assert!(exists(tables.revenue_generation(2).daily).await);
    assert!(!exists(tables.revenue_daily.clone()).await && !exists(tables.revenue_orders.clone()).await);
    assert_eq!(all_days(&*view).await, boundary_days());

    // A view opened now (a restart) reads generation 2, and an old handle whose tables are gone moves on too.
    let reopened = DynamoRevenueView::open(client.clone(), tables.clone(), true, Tz::UTC).await.expect("reopen");
    assert_eq!(all_days(&*reopened).await, boundary_days());
    assert!(!exists(tables.revenue_daily.clone()).await, "reopening does not recreate generation 0");
    let mut third = reopened.rebuild().await.expect("fresh tables");
    third.apply(Arc::from(&feed[..3]), None).await.expect("fill");
    third.finish().await.expect("switched by the other handle");
    assert_eq!(all_days(&*view).await, all_days(&*reopened).await, "the first handle follows the switch");
    assert_eq!(generation().await, Some(3));

    // A rebuild begun before another one switched cannot switch over it.
    let mut late = view.rebuild().await.expect("fresh tables");
    let mut early = reopened.rebuild().await.expect("fresh tables");
    early.apply(Arc::from(feed.as_slice()), None).await.expect("fill");
    early.finish().await.expect("the first to finish switches");
    late.apply(Arc::from(&feed[..3]), None).await.expect("fill");
    assert!(matches!(late.finish().await, Err(ViewError::Unavailable(_))), "the stale rebuild is refused");
    assert_eq!(all_days(&*view).await, boundary_days());
}
