//! Revenue view conformance: every case is one generic function over the view (`Projection + RevenueView`),
//! run against the SQLite view (a temp folder) and the DynamoDB view (DynamoDB Local, fresh tables per test).

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use orderflow::domain::{Currency, OrderEvent, OrderId};
use orderflow::store::{EVENT_SCHEMA_VERSION, StoredEvent};
use orderflow::views::revenue_dynamo::DynamoRevenueView;
use orderflow::views::revenue_sqlite::SqliteRevenueView;
use orderflow::views::{ApplyReport, Projection, RevenueDay, RevenueView, ViewError};
use uuid::Uuid;

use crate::dynamo_store::{at, cancelled, dynamo, order_id, paid, placed, shipped};

/// Both halves of a revenue view, as one object.
pub trait RevenueAdapter: Projection + RevenueView {}
impl<T: Projection + RevenueView> RevenueAdapter for T {}

async fn run_sqlite<F: Future<Output = ()>>(case: impl FnOnce(Arc<dyn RevenueAdapter>) -> F) {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = SqliteRevenueView::open(dir.path(), 2).expect("open the SQLite view");
    case(view).await;
}

async fn run_dynamo<F: Future<Output = ()>>(case: impl FnOnce(Arc<dyn RevenueAdapter>) -> F) {
    let Some((client, tables)) = dynamo().await else { return };
    let view = DynamoRevenueView::open(client, tables, true).await.expect("open the DynamoDB view");
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
}

// ---- helpers ------------------------------------------------------------------------------------------

fn ev(id: &OrderId, version: u64, event: OrderEvent) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::now_v7(),
        order_id: id.clone(),
        version,
        position: 0,
        schema_version: EVENT_SCHEMA_VERSION,
        recorded_at: Utc::now(),
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
