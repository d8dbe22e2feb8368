//! Search view conformance: every case is one generic function over the view (`Projection + SearchView`),
//! run against the SQLite view (a temp folder) and the Meilisearch view, each on a fresh index. The
//! Meilisearch view talks to the real server at `MEILI_URL` (key `MEILI_MASTER_KEY`) when that is set, and
//! otherwise to the in-process contract mock (the `meili-mock` crate). A few Meilisearch-only cases
//! pin what the mock alone can show (the stored document, authentication, backend errors).
//!
//! Query words are chosen to mean the same on both adapters: only the last word is typed as a prefix
//! (Meilisearch prefix-matches the last query word only; the SQLite view prefix-matches every word).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use meilisearch_sdk::client::Client;
use orderflow::config::MeiliSettings;
use orderflow::domain::{CustomerId, Order, OrderEvent, OrderId, OrderStatus};
use orderflow::store::{StoredEvent, codec};
use orderflow::views::search_meili::MeiliSearchView;
use orderflow::views::search_sqlite::SqliteSearchView;
use orderflow::views::{ApplyReport, Cursor, Projection, SearchPage, SearchQuery, SearchView, SortOrder, ViewError};
use serde_json::{Value, json};
use uuid::Uuid;

/// Both halves of a search view, as one object.
pub trait SearchAdapter: Projection + SearchView {}
impl<T: Projection + SearchView> SearchAdapter for T {}

// ---- runners ------------------------------------------------------------------------------------------

/// Where the Meilisearch cases run: `MEILI_URL` / `MEILI_MASTER_KEY`, or the contract mock.
fn meili_target() -> (String, String) {
    match std::env::var("MEILI_URL") {
        Ok(url) if !url.is_empty() => (url, std::env::var("MEILI_MASTER_KEY").unwrap_or_default()),
        _ => (meili_mock::url(), String::new()),
    }
}

/// Settings for a fresh index on the target.
fn meili_settings() -> MeiliSettings {
    let (url, api_key) = meili_target();
    MeiliSettings { url, api_key, index: format!("orders_test_{}", Uuid::now_v7().simple()) }
}

/// An SDK client on the same server, to look behind the view and to clean up.
fn raw_client(settings: &MeiliSettings) -> Client {
    let key = (!settings.api_key.is_empty()).then(|| settings.api_key.clone());
    Client::new(&settings.url, key).expect("a Meilisearch client")
}

/// Deletes a test index (a real server keeps them otherwise); best effort.
async fn drop_index(settings: &MeiliSettings) {
    let client = raw_client(settings);
    if let Ok(task) = client.delete_index(&settings.index).await {
        let _ = task.wait_for_completion(&client, Some(Duration::from_millis(20)), Some(Duration::from_secs(30))).await;
    }
}

async fn run_sqlite<F: Future<Output = ()>>(case: impl FnOnce(Arc<dyn SearchAdapter>) -> F) {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = SqliteSearchView::open(dir.path(), 2).expect("open the SQLite view");
    case(view).await;
}

async fn run_meili<F: Future<Output = ()>>(case: impl FnOnce(Arc<dyn SearchAdapter>) -> F) {
    let settings = meili_settings();
    let view = MeiliSearchView::open(&settings).await.expect("open the Meilisearch view");
    case(view).await;
    drop_index(&settings).await;
}

/// One `#[tokio::test]` per adapter for each case: `sqlite::<case>` and `meili::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::run_sqlite(super::$case).await; })*
        }
        mod meili {
            $(#[tokio::test] async fn $case() { super::run_meili(super::$case).await; })*
        }
    };
}

conformance! {
    apply_then_get_returns_the_folded_document,
    redelivery_is_skipped_and_never_regresses_a_document,
    events_out_of_order_are_refused_and_the_batch_writes_nothing,
    filters_by_customer_status_and_placed_range,
    customer_ids_are_case_sensitive,
    each_sort_orders_the_hits,
    text_matches_names_and_skus_by_whole_words_and_a_last_prefix,
    text_without_letters_or_digits_matches_nothing,
    estimated_total_counts_every_match_and_cursors_end,
    cursor_walk_visits_every_order_exactly_once,
    a_rebuild_fills_a_fresh_copy_unseen_by_queries_until_it_is_swapped_in,
    an_aborted_rebuild_leaves_the_view_as_it_was,
}

// ---- builders -----------------------------------------------------------------------------------------

fn id(prefix: &str) -> OrderId {
    OrderId::parse("orderId", &format!("{prefix}-{}", Uuid::now_v7().simple())).expect("valid id")
}

/// 2024-05-01 10:00:00 UTC plus `minutes`.
fn at(minutes: i64) -> DateTime<Utc> {
    let base = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).single().expect("valid time");
    base + chrono::Duration::minutes(minutes)
}

fn event(order: &OrderId, version: u64, event: Value) -> StoredEvent {
    let event = serde_json::from_value::<OrderEvent>(event).expect("a valid event");
    StoredEvent {
        event_id: Uuid::now_v7(),
        order_id: order.clone(),
        version,
        position: 0,
        schema_version: codec::schema_version(&event),
        recorded_at: Utc::now(),
        traceparent: None,
        event,
    }
}

/// `OrderPlaced` with `(sku, name, quantity, unitPrice)` lines.
fn placed(order: &OrderId, customer: &str, minutes: i64, items: &[(&str, &str, u64, u64)]) -> StoredEvent {
    let total: u64 = items.iter().map(|(_, _, q, p)| q * p).sum();
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, name, quantity, unit_price)| json!({"sku": sku, "name": name, "quantity": quantity, "unitPrice": unit_price}))
        .collect();
    event(
        order,
        1,
        json!({"type": "OrderPlaced", "data": {
            "customerId": customer, "currency": "EUR", "items": items, "total": total, "placedAt": at(minutes),
        }}),
    )
}

fn paid(order: &OrderId, version: u64, amount: u64) -> StoredEvent {
    event(
        order,
        version,
        json!({"type": "PaymentConfirmed", "data": {"paymentId": "pay-1", "amount": amount, "paidAt": at(90)}}),
    )
}

fn shipped(order: &OrderId, version: u64) -> StoredEvent {
    event(
        order,
        version,
        json!({"type": "OrderShipped", "data": {"carrier": "DHL", "trackingNumber": "TN-1", "shippedAt": at(120)}}),
    )
}

fn cancelled(order: &OrderId, version: u64, refund: u64) -> StoredEvent {
    event(
        order,
        version,
        json!({"type": "OrderCancelled", "data": {"reason": "changed my mind", "refund": refund, "cancelledAt": at(150)}}),
    )
}

fn fold(events: &[StoredEvent]) -> Order {
    let first = events.first().expect("at least one event");
    Order::fold(None, &first.order_id, events.iter().map(|e| &e.event)).expect("a valid stream")
}

fn report(applied: u64, skipped: u64) -> ApplyReport {
    ApplyReport { applied, skipped }
}

fn query() -> SearchQuery {
    SearchQuery { limit: 20, ..SearchQuery::default() }
}

fn text(q: &str) -> SearchQuery {
    SearchQuery { text: Some(q.to_owned()), ..query() }
}

fn customer(c: &str) -> Option<CustomerId> {
    Some(CustomerId::parse("customerId", c).expect("valid customer id"))
}

async fn search(view: &dyn SearchAdapter, q: &SearchQuery) -> SearchPage {
    view.search(q).await.unwrap_or_else(|e| panic!("search {q:?}: {e}"))
}

fn ids(page: &SearchPage) -> Vec<String> {
    page.orders.iter().map(|o| o.order_id.as_str().to_owned()).collect()
}

fn id_set(page: &SearchPage) -> BTreeSet<String> {
    ids(page).into_iter().collect()
}

/// Four orders placed in this order, plus one for an upper-case customer id:
/// A (c-a, "Red ceramic mug" MUG-RED-1, 1000, placed), B (c-b, "Green tea leaves" TEA-42, 3000, paid),
/// C (c-a, "Steel kettle" KETTLE-9 + "Blue mug" MUG-BLUE-2, 2000, shipped), D (c-c, "Wooden spoon" SPOON-7,
/// 500, cancelled), E (C-A, "Tea cup" CUP-1, 700, placed).
struct Catalog {
    a: OrderId,
    b: OrderId,
    c: OrderId,
    d: OrderId,
    e: OrderId,
}

impl Catalog {
    async fn apply(view: &dyn SearchAdapter) -> Self {
        let (a, b, c, d, e) = (id("a"), id("b"), id("c"), id("d"), id("e"));
        let events = vec![
            placed(&a, "c-a", 0, &[("MUG-RED-1", "Red ceramic mug", 1, 1000)]),
            placed(&b, "c-b", 10, &[("TEA-42", "Green tea leaves", 2, 1500)]),
            placed(&c, "c-a", 20, &[("KETTLE-9", "Steel kettle", 1, 1500), ("MUG-BLUE-2", "Blue mug", 2, 250)]),
            paid(&b, 2, 3000),
            placed(&d, "c-c", 30, &[("SPOON-7", "Wooden spoon", 5, 100)]),
            paid(&c, 2, 2000),
            shipped(&c, 3),
            cancelled(&d, 2, 0),
            placed(&e, "C-A", 40, &[("CUP-1", "Tea cup", 1, 700)]),
        ];
        let applied = view.apply(&events, None).await.expect("the catalog applies");
        assert_eq!(applied, report(9, 0));
        Self { a, b, c, d, e }
    }

    /// The ids of `which` (letters A–E), in that order.
    fn ids(&self, which: &str) -> Vec<String> {
        which
            .chars()
            .map(|c| match c {
                'A' => &self.a,
                'B' => &self.b,
                'C' => &self.c,
                'D' => &self.d,
                _ => &self.e,
            })
            .map(|id| id.as_str().to_owned())
            .collect()
    }

    fn set(&self, which: &str) -> BTreeSet<String> {
        self.ids(which).into_iter().collect()
    }
}

// ---- cases --------------------------------------------------------------------------------------------

async fn apply_then_get_returns_the_folded_document(view: Arc<dyn SearchAdapter>) {
    let order = id("get");
    assert_eq!(view.get(&order).await.expect("get"), None, "nothing before the first event");

    let first =
        vec![placed(&order, "c-get", 0, &[("MUG-1", "Blue ceramic mug", 2, 1250), ("TEA-9", "Green tea", 1, 499)])];
    assert_eq!(view.apply(&first, None).await.expect("apply"), report(1, 0));
    let doc = view.get(&order).await.expect("get").expect("the document exists");
    assert_eq!(doc, fold(&first));
    assert_eq!((doc.version, doc.status, doc.total.minor()), (1, OrderStatus::Placed, 2999));

    let mut all = first.clone();
    all.push(paid(&order, 2, 2999));
    all.push(shipped(&order, 3));
    assert_eq!(view.apply(&all[1..], None).await.expect("apply"), report(2, 0));
    let doc = view.get(&order).await.expect("get").expect("the document exists");
    assert_eq!(doc, fold(&all), "the document is the fold of the stream");
    assert_eq!((doc.version, doc.status), (3, OrderStatus::Shipped));

    // The search hit is the same document.
    let page = search(view.as_ref(), &query()).await;
    assert_eq!(page.orders, vec![doc]);
    // Hits serialize as exactly the API document (no backend-only fields).
    let hit = serde_json::to_value(&page.orders[0]).expect("json");
    let keys: BTreeSet<&str> = hit.as_object().expect("an object").keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "orderId",
        "customerId",
        "status",
        "currency",
        "items",
        "total",
        "version",
        "placedAt",
        "paidAt",
        "paymentId",
        "shippedAt",
        "carrier",
        "trackingNumber",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(view.get(&id("nothing")).await.expect("get"), None);
    assert_eq!(view.apply(&[], None).await.expect("an empty batch"), report(0, 0));
}

async fn redelivery_is_skipped_and_never_regresses_a_document(view: Arc<dyn SearchAdapter>) {
    let order = id("dup");
    let events =
        vec![placed(&order, "c-dup", 0, &[("SKU-1", "Thing", 1, 100)]), paid(&order, 2, 100), shipped(&order, 3)];
    assert_eq!(view.apply(&events, None).await.expect("apply"), report(3, 0));
    let want = fold(&events);

    // The whole stream again, a prefix again, each event alone: nothing applies, nothing regresses.
    assert_eq!(view.apply(&events, None).await.expect("redelivery"), report(0, 3));
    assert_eq!(view.apply(&events[..2], None).await.expect("redelivery"), report(0, 2));
    for e in &events {
        assert_eq!(view.apply(std::slice::from_ref(e), None).await.expect("redelivery"), report(0, 1));
    }
    assert_eq!(view.get(&order).await.expect("get"), Some(want.clone()));
    assert_eq!(search(view.as_ref(), &query()).await.orders, vec![want]);

    // A batch that overlaps what is applied: the old part is skipped, the new part applied.
    let other = id("dup2");
    let first = placed(&other, "c-dup", 5, &[("SKU-2", "Other thing", 1, 200)]);
    assert_eq!(view.apply(std::slice::from_ref(&first), None).await.expect("apply"), report(1, 0));
    let more = vec![first.clone(), cancelled(&other, 2, 0), first];
    assert_eq!(view.apply(&more, None).await.expect("apply"), report(1, 2));
    let doc = view.get(&other).await.expect("get").expect("exists");
    assert_eq!((doc.version, doc.status), (2, OrderStatus::Cancelled));
    assert_eq!(search(view.as_ref(), &query()).await.estimated_total, 2);
}

async fn events_out_of_order_are_refused_and_the_batch_writes_nothing(view: Arc<dyn SearchAdapter>) {
    let known = id("gap");
    let p1 = placed(&known, "c-gap", 0, &[("SKU-1", "Thing", 1, 100)]);
    view.apply(std::slice::from_ref(&p1), None).await.expect("apply");

    // v3 after v1: a gap. The other order in the same batch is not written either.
    let fresh = id("gap-fresh");
    let batch = vec![placed(&fresh, "c-gap", 1, &[("SKU-2", "Other", 1, 50)]), shipped(&known, 3)];
    match view.apply(&batch, None).await {
        Err(ViewError::OutOfOrder { order_id, version, have }) => {
            assert_eq!((order_id.as_str(), version, have), (known.as_str(), 3, 1));
        }
        other => panic!("expected OutOfOrder, got {other:?}"),
    }
    assert_eq!(view.get(&fresh).await.expect("get"), None, "a refused batch writes nothing");
    assert_eq!(view.get(&known).await.expect("get").map(|o| o.version), Some(1));

    // A later event of an order the view has never seen.
    let unseen = id("gap-unseen");
    match view.apply(&[paid(&unseen, 2, 100)], None).await {
        Err(ViewError::OutOfOrder { version: 2, have: 0, .. }) => {}
        other => panic!("expected OutOfOrder, got {other:?}"),
    }
    assert_eq!(view.get(&unseen).await.expect("get"), None);

    // Once the missing event arrives, the stream continues.
    let fill = vec![paid(&known, 2, 100), shipped(&known, 3)];
    assert_eq!(view.apply(&fill, None).await.expect("apply"), report(2, 0));
    assert_eq!(search(view.as_ref(), &query()).await.estimated_total, 1);
}

async fn filters_by_customer_status_and_placed_range(view: Arc<dyn SearchAdapter>) {
    let cat = Catalog::apply(view.as_ref()).await;
    let v = view.as_ref();
    let by_customer = |c: &str| SearchQuery { customer_id: customer(c), ..query() };
    let by_status = |s: OrderStatus| SearchQuery { status: Some(s), ..query() };

    assert_eq!(id_set(&search(v, &by_customer("c-a")).await), cat.set("AC"));
    assert_eq!(ids(&search(v, &by_customer("c-b")).await), cat.ids("B"));
    assert_eq!(ids(&search(v, &by_customer("nobody")).await), Vec::<String>::new());
    assert_eq!(id_set(&search(v, &by_status(OrderStatus::Placed)).await), cat.set("AE"));
    assert_eq!(ids(&search(v, &by_status(OrderStatus::Paid)).await), cat.ids("B"));
    assert_eq!(ids(&search(v, &by_status(OrderStatus::Shipped)).await), cat.ids("C"));
    let cancelled = search(v, &by_status(OrderStatus::Cancelled)).await;
    assert_eq!((ids(&cancelled), cancelled.estimated_total), (cat.ids("D"), 1));
    let both = SearchQuery { status: Some(OrderStatus::Placed), ..by_customer("c-a") };
    assert_eq!(ids(&search(v, &both).await), cat.ids("A"));
    let with_text = SearchQuery { text: Some("kettle".into()), ..by_customer("c-a") };
    assert_eq!(ids(&search(v, &with_text).await), cat.ids("C"));
    let no_match = SearchQuery { text: Some("mug".into()), ..by_customer("c-b") };
    assert_eq!(ids(&search(v, &no_match).await), Vec::<String>::new());

    // Bounds are inclusive, to the millisecond: B is placed at +10 min, C at +20 min.
    let range = |from: Option<i64>, to: Option<i64>| SearchQuery {
        placed_from: from.map(at),
        placed_to: to.map(at),
        ..query()
    };
    assert_eq!(id_set(&search(v, &range(Some(10), Some(20))).await), cat.set("BC"));
    assert_eq!(id_set(&search(v, &range(Some(10), None)).await), cat.set("BCDE"));
    assert_eq!(id_set(&search(v, &range(None, Some(20))).await), cat.set("ABC"));
    let one_ms = chrono::Duration::milliseconds(1);
    let narrow = SearchQuery { placed_from: Some(at(10) + one_ms), placed_to: Some(at(20) - one_ms), ..query() };
    assert_eq!(ids(&search(v, &narrow).await), Vec::<String>::new());
    let future = SearchQuery { placed_from: Some(at(41)), ..query() };
    assert_eq!(search(v, &future).await.estimated_total, 0);
    let mixed = SearchQuery { customer_id: customer("c-a"), ..range(Some(10), Some(20)) };
    assert_eq!(ids(&search(v, &mixed).await), cat.ids("C"));
}

async fn customer_ids_are_case_sensitive(view: Arc<dyn SearchAdapter>) {
    // `C-A` and `c-a` are two customers: neither may see the other's orders.
    let cat = Catalog::apply(view.as_ref()).await;
    let upper = SearchQuery { customer_id: customer("C-A"), ..query() };
    assert_eq!(ids(&search(view.as_ref(), &upper).await), cat.ids("E"));
    let lower = SearchQuery { customer_id: customer("c-a"), ..query() };
    assert!(!ids(&search(view.as_ref(), &lower).await).contains(&cat.e.as_str().to_owned()));
    let mixed = SearchQuery { customer_id: customer("C-a"), ..query() };
    assert_eq!(search(view.as_ref(), &mixed).await.estimated_total, 0);
}

async fn each_sort_orders_the_hits(view: Arc<dyn SearchAdapter>) {
    let cat = Catalog::apply(view.as_ref()).await;
    let v = view.as_ref();
    let sorted = |sort: SortOrder| SearchQuery { sort, ..query() };
    assert_eq!(ids(&search(v, &query()).await), cat.ids("EDCBA"), "default placedAt:desc");
    assert_eq!(ids(&search(v, &sorted(SortOrder::PlacedAtDesc)).await), cat.ids("EDCBA"));
    assert_eq!(ids(&search(v, &sorted(SortOrder::PlacedAtAsc)).await), cat.ids("ABCDE"));
    assert_eq!(ids(&search(v, &sorted(SortOrder::TotalDesc)).await), cat.ids("BCAED"));
    assert_eq!(ids(&search(v, &sorted(SortOrder::TotalAsc)).await), cat.ids("DEACB"));
    // With text, the sort still decides the order (not relevance).
    let mug = |sort: SortOrder| SearchQuery { text: Some("mug".into()), sort, ..query() };
    assert_eq!(ids(&search(v, &mug(SortOrder::TotalAsc)).await), cat.ids("AC"));
    assert_eq!(ids(&search(v, &mug(SortOrder::TotalDesc)).await), cat.ids("CA"));
    assert_eq!(ids(&search(v, &mug(SortOrder::PlacedAtAsc)).await), cat.ids("AC"));
    assert_eq!(ids(&search(v, &mug(SortOrder::PlacedAtDesc)).await), cat.ids("CA"));
    let tea = |sort: SortOrder| SearchQuery { text: Some("tea".into()), sort, ..query() };
    assert_eq!(ids(&search(v, &tea(SortOrder::TotalDesc)).await), cat.ids("BE"));
    assert_eq!(ids(&search(v, &tea(SortOrder::TotalAsc)).await), cat.ids("EB"));
}

async fn text_matches_names_and_skus_by_whole_words_and_a_last_prefix(view: Arc<dyn SearchAdapter>) {
    let cat = Catalog::apply(view.as_ref()).await;
    let v = view.as_ref();
    let hits = |q: &'static str| async move { id_set(&search(v, &text(q)).await) };
    assert_eq!(hits("mug").await, cat.set("AC"), "a word of item names");
    assert_eq!(hits("MUG").await, cat.set("AC"), "case-insensitive");
    assert_eq!(hits("ceramic").await, cat.set("A"));
    assert_eq!(hits("kettle").await, cat.set("C"), "a word of the second line");
    assert_eq!(hits("kett").await, cat.set("C"), "a prefix");
    assert_eq!(hits("Ke").await, cat.set("C"), "a short prefix");
    assert_eq!(hits("tea").await, cat.set("BE"));
    assert_eq!(hits("TEA-42").await, cat.set("B"), "a sku");
    assert_eq!(hits("SPOON-7").await, cat.set("D"), "a sku");
    assert_eq!(hits("MUG-BLUE-2").await, cat.set("C"), "a sku sharing a word with another");
    assert_eq!(hits("spoon-").await, cat.set("D"), "punctuation around words is ignored");
    assert_eq!(hits("green tea").await, cat.set("B"), "several words");
    assert_eq!(hits("red mug").await, cat.set("A"), "several words, all must match");
    assert_eq!(hits("steel ket").await, cat.set("C"), "several words, the last as a prefix");
    assert_eq!(hits("mug zebra").await, BTreeSet::new(), "every word must match");
    assert_eq!(hits("tea mug").await, BTreeSet::new(), "words of different orders do not combine");

    let none = search(v, &text("zebra")).await;
    assert_eq!((ids(&none), none.estimated_total, none.next_cursor), (Vec::new(), 0, None));
    // Search-engine syntax is plain text.
    for q in ["mug*", "mug OR tea", "\"mug", "NEAR(mug)", "'; DROP", "-mug", "mug AND", "(", "^"] {
        let page = view.search(&text(q)).await.unwrap_or_else(|e| panic!("q={q}: {e}"));
        assert!(page.orders.len() <= 5, "q={q}");
    }
    assert_eq!(hits("-mug").await, cat.set("AC"), "a leading `-` is not a negation");
    assert_eq!(hits("mug OR tea").await, BTreeSet::new(), "`OR` is a word like any other");
}

async fn text_without_letters_or_digits_matches_nothing(view: Arc<dyn SearchAdapter>) {
    Catalog::apply(view.as_ref()).await;
    for q in ["--!!", "\"", "*", "( )", "-"] {
        let page = search(view.as_ref(), &text(q)).await;
        assert_eq!((page.orders.len(), page.estimated_total, page.next_cursor), (0, 0, None), "q={q:?}");
    }
}

async fn estimated_total_counts_every_match_and_cursors_end(view: Arc<dyn SearchAdapter>) {
    let cat = Catalog::apply(view.as_ref()).await;
    let v = view.as_ref();
    let first = search(v, &SearchQuery { limit: 1, ..query() }).await;
    assert_eq!(ids(&first), cat.ids("E"));
    assert_eq!(first.estimated_total, 5, "the total counts every match, not the page");
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = search(v, &SearchQuery { limit: 1, cursor: Cursor::decode(&cursor), ..query() }).await;
    assert_eq!(ids(&second), cat.ids("D"));
    assert_eq!(second.estimated_total, 5);

    let exact = search(v, &SearchQuery { limit: 5, ..query() }).await;
    assert_eq!((exact.orders.len(), exact.next_cursor), (5, None), "no next page after the last");
    let mug = search(v, &SearchQuery { limit: 1, ..text("mug") }).await;
    assert_eq!((mug.orders.len(), mug.estimated_total), (1, 2));
    let cursor = mug.next_cursor.expect("a next page");
    let rest = search(v, &SearchQuery { limit: 1, cursor: Cursor::decode(&cursor), ..text("mug") }).await;
    assert_eq!((rest.orders.len(), rest.estimated_total, rest.next_cursor), (1, 2, None));
    assert_eq!(search(v, &SearchQuery { limit: 100, ..query() }).await.orders.len(), 5);
}

async fn cursor_walk_visits_every_order_exactly_once(view: Arc<dyn SearchAdapter>) {
    // Ties on total and on placedAt, so the tie-break is exercised across page boundaries.
    let totals = [500, 500, 500, 1000, 1000, 2000, 3000, 3000, 100];
    let mut events = Vec::new();
    for (i, total) in totals.iter().enumerate() {
        let order = id(&format!("page{i}"));
        let customer = if i % 2 == 0 { "c-even" } else { "c-odd" };
        events.push(placed(&order, customer, (i / 3) as i64, &[("PAGE-1", "Paged widget", 1, *total)]));
    }
    assert_eq!(view.apply(&events, None).await.expect("apply"), report(9, 0));
    let orders: Vec<Order> = events.iter().map(|e| fold(std::slice::from_ref(e))).collect();

    for sort in [SortOrder::PlacedAtDesc, SortOrder::PlacedAtAsc, SortOrder::TotalDesc, SortOrder::TotalAsc] {
        let base = SearchQuery { sort, ..query() };
        let walked = walk(view.as_ref(), &base).await;
        let mut expected: Vec<&Order> = orders.iter().collect();
        expected.sort_by(|a, b| (sort.key(a), a.order_id.as_str()).cmp(&(sort.key(b), b.order_id.as_str())));
        if sort.descending() {
            expected.reverse();
        }
        let expected: Vec<String> = expected.iter().map(|o| o.order_id.as_str().to_owned()).collect();
        assert_eq!(walked, expected, "pages follow the sort, ties by order id ({sort:?})");
        let one_page = ids(&search(view.as_ref(), &SearchQuery { limit: 100, ..base }).await);
        assert_eq!(walked, one_page, "{sort:?}");
    }
    // Filters and text apply to every page.
    let evens =
        walk(view.as_ref(), &SearchQuery { customer_id: customer("c-even"), sort: SortOrder::TotalAsc, ..query() })
            .await;
    assert_eq!((evens.len(), evens.iter().collect::<BTreeSet<_>>().len()), (5, 5));
    let widgets = walk(view.as_ref(), &text("widget")).await;
    assert_eq!(widgets.len(), 9);
    assert_eq!(widgets.iter().collect::<BTreeSet<_>>().len(), 9);
}

/// Walks every page of `base` with `limit = 2`; returns the ids in order.
/// A rebuild fills a fresh copy from the write model with the view's own apply logic; queries see the current
/// view until `finish` swaps the copy in, and the projector then goes on against the copy (deduplicating).
async fn a_rebuild_fills_a_fresh_copy_unseen_by_queries_until_it_is_swapped_in(view: Arc<dyn SearchAdapter>) {
    let (a, b) = (id("rb-a"), id("rb-b"));
    let a_placed = placed(&a, "c-rb", 0, &[("RB-1", "Rebuilt mug", 1, 800)]);
    // The current view holds A placed; the write model also has A paid and B placed.
    view.apply(std::slice::from_ref(&a_placed), None).await.expect("the current view");
    let write_model = [a_placed, placed(&b, "c-rb", 5, &[("RB-2", "Rebuilt mug", 2, 300)]), paid(&a, 2, 800)];
    let mine = SearchQuery { customer_id: customer("c-rb"), ..query() };

    let mut rebuild = view.rebuild().await.expect("a fresh copy");
    rebuild.apply(Arc::from(&write_model[..2]), Some(2)).await.expect("first chunk");
    assert_eq!(ids(&search(&*view, &mine).await), [a.as_str()], "queries see the current view, not the copy");
    rebuild.apply(Arc::from(&write_model[2..]), Some(3)).await.expect("second chunk");
    assert_eq!(view.get(&a).await.expect("get").map(|o| o.version), Some(1), "still the current view");
    assert_eq!(view.get(&b).await.expect("get"), None);

    rebuild.finish().await.expect("swapped in");
    let page = search(&*view, &mine).await;
    assert_eq!(id_set(&page), [a.as_str().to_owned(), b.as_str().to_owned()].into());
    assert_eq!(view.get(&a).await.expect("get"), Some(fold(&[write_model[0].clone(), write_model[2].clone()])));
    assert_eq!(view.get(&b).await.expect("get"), Some(fold(&write_model[1..2])));
    assert_eq!(search(&*view, &text("rebuilt")).await.estimated_total, 2);

    // The projector's next batch: a redelivery of what the rebuild already applied, then a new event.
    let after = [paid(&a, 2, 800), shipped(&a, 3)];
    assert_eq!(view.apply(&after, None).await.expect("after the swap"), report(1, 1));
    assert_eq!(view.get(&a).await.expect("get").map(|o| o.status), Some(OrderStatus::Shipped));
}

/// A rebuild given up (a failed read of the write model) changes nothing, and a later rebuild starts afresh.
async fn an_aborted_rebuild_leaves_the_view_as_it_was(view: Arc<dyn SearchAdapter>) {
    let a = id("ab-a");
    let a_placed = placed(&a, "c-ab", 0, &[("AB-1", "Kept lamp", 1, 800)]);
    view.apply(std::slice::from_ref(&a_placed), None).await.expect("the current view");
    let mut rebuild = view.rebuild().await.expect("a fresh copy");
    rebuild.apply(Arc::from([a_placed.clone(), paid(&a, 2, 800)]), Some(2)).await.expect("fill");
    rebuild.abort().await;
    assert_eq!(view.get(&a).await.expect("get").map(|o| o.version), Some(1));

    let mut again = view.rebuild().await.expect("another fresh copy");
    again.apply(Arc::from([a_placed.clone()]), Some(1)).await.expect("fill");
    again.finish().await.expect("swapped in");
    assert_eq!(view.get(&a).await.expect("get"), Some(fold(&[a_placed])));
    assert_eq!(ids(&search(&*view, &text("lamp")).await), [a.as_str()]);
}

async fn walk(view: &dyn SearchAdapter, base: &SearchQuery) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let page = search(view, &SearchQuery { limit: 2, cursor: cursor.clone(), ..base.clone() }).await;
        assert!(page.orders.len() <= 2);
        all.extend(ids(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(Cursor::decode(&next).expect("the view's cursors decode")),
            None => return all,
        }
    }
    panic!("paging {base:?} did not end");
}

// ---- Meilisearch only ---------------------------------------------------------------------------------

/// The stored document carries the filter and sort fields; what the view hands out does not.
#[tokio::test]
async fn meili_documents_hold_the_order_plus_filter_fields_and_the_index_is_set_up() {
    let settings = meili_settings();
    let view = MeiliSearchView::open(&settings).await.expect("open");
    let order = id("raw");
    let event = placed(&order, "Cust-1", 3, &[("SKU-1", "Thing", 1, 100)]);
    view.apply(std::slice::from_ref(&event), None).await.expect("apply");

    let index = raw_client(&settings).index(&settings.index);
    let stored: Value = index.get_document(order.as_str()).await.expect("the stored document");
    assert_eq!(stored["placedAtMs"], json!(at(3).timestamp_millis()));
    assert_eq!(stored["customerKey"], json!(".cust-1"));
    assert_eq!(stored["customerId"], json!("Cust-1"));
    let mut without = stored.clone();
    if let Some(map) = without.as_object_mut() {
        map.remove("placedAtMs");
        map.remove("customerKey");
    }
    assert_eq!(without, serde_json::to_value(fold(&[event])).expect("json"), "the rest is the API document");

    let info = raw_client(&settings).get_raw_index(&settings.index).await.expect("the index");
    assert_eq!(info["primaryKey"], "orderId");
    let index_settings = index.get_settings().await.expect("settings");
    assert_eq!(index_settings.ranking_rules.as_ref().and_then(|r| r.first()).map(String::as_str), Some("sort"));
    assert_eq!(index_settings.typo_tolerance.and_then(|t| t.enabled), Some(false));
    let sortable: BTreeSet<String> = index_settings.sortable_attributes.unwrap_or_default().into_iter().collect();
    assert_eq!(sortable, ["placedAtMs", "total", "orderId"].map(String::from).into());

    // Opening again (a restart, a second instance) keeps the index and its documents.
    let again = MeiliSearchView::open(&settings).await.expect("open an existing index");
    assert_eq!(again.get(&order).await.expect("get").map(|o| o.version), Some(1));
    drop_index(&settings).await;
}

/// Writes are visible to the next query as soon as `apply` returns (it waits on its task).
#[tokio::test]
async fn meili_apply_returns_only_once_the_write_is_searchable() {
    let settings = meili_settings();
    let view = MeiliSearchView::open(&settings).await.expect("open");
    for i in 0..5 {
        let order = id(&format!("vis{i}"));
        view.apply(&[placed(&order, "c-vis", i, &[("VIS-1", "Visible thing", 1, 100)])], None).await.expect("apply");
        assert!(view.get(&order).await.expect("get").is_some(), "get sees write {i}");
        let page = view.search(&text("visible")).await.expect("search");
        assert_eq!(page.estimated_total, i as u64 + 1, "search sees write {i}");
    }
    drop_index(&settings).await;
}

/// The backend failing is `Unavailable`, never a panic: a missing index, a wrong key, no server.
#[tokio::test]
async fn meili_backend_errors_are_unavailable() {
    let settings = meili_settings();
    let view = MeiliSearchView::open(&settings).await.expect("open");
    drop_index(&settings).await;
    let order = id("gone");
    assert!(matches!(view.get(&order).await, Err(ViewError::Unavailable(_))));
    assert!(matches!(view.search(&query()).await, Err(ViewError::Unavailable(_))));
    let batch = [placed(&order, "c-gone", 0, &[("SKU-1", "Thing", 1, 100)])];
    assert!(matches!(view.apply(&batch, None).await, Err(ViewError::Unavailable(_))));

    let nowhere = MeiliSettings { url: "http://127.0.0.1:9".into(), api_key: String::new(), index: "orders".into() };
    assert!(MeiliSearchView::open(&nowhere).await.is_err());
    let unprintable = MeiliSettings { api_key: "bad\nkey".into(), ..meili_settings() };
    assert!(MeiliSearchView::open(&unprintable).await.is_err(), "refused, not a panic in the SDK");
}

/// With a master key, the view sends it; a wrong key is refused (against a keyed mock; with `MEILI_URL`, the
/// real server's key).
#[tokio::test]
async fn meili_master_key_is_required_and_sent() {
    let keyed = match std::env::var("MEILI_URL") {
        Ok(url) if !url.is_empty() && !std::env::var("MEILI_MASTER_KEY").unwrap_or_default().is_empty() => {
            meili_settings()
        }
        Ok(url) if !url.is_empty() => {
            eprintln!("SKIPPED: MEILI_URL is set without MEILI_MASTER_KEY; nothing to check about keys");
            return;
        }
        _ => MeiliSettings {
            url: meili_mock::start(Some("mock-master-key")),
            api_key: "mock-master-key".into(),
            index: format!("orders_test_{}", Uuid::now_v7().simple()),
        },
    };
    let view = MeiliSearchView::open(&keyed).await.expect("open with the key");
    let order = id("key");
    view.apply(&[placed(&order, "c-key", 0, &[("SKU-1", "Thing", 1, 100)])], None).await.expect("apply with the key");
    assert!(view.get(&order).await.expect("get").is_some());

    let wrong = MeiliSettings { api_key: "not-the-key".into(), ..keyed.clone() };
    assert!(MeiliSearchView::open(&wrong).await.is_err());
    let missing = MeiliSettings { api_key: String::new(), ..keyed.clone() };
    assert!(MeiliSearchView::open(&missing).await.is_err());
    drop_index(&keyed).await;
}

/// A rebuild swaps the fresh index in with `POST /swap-indexes`: the live index then has the view's settings
/// and the rebuilt documents, and no `<index>_rebuild_*` index is left behind (after a swap or an abort).
#[tokio::test]
async fn meili_rebuild_swaps_the_fresh_index_in_and_leaves_no_index_behind() {
    let settings = meili_settings();
    let view = MeiliSearchView::open(&settings).await.expect("open");
    let (old, new) = (id("sw-old"), id("sw-new"));
    // The current index holds an order the write model no longer leads to (say, a bug wrote it): after the
    // rebuild only what the events say is there.
    view.apply(&[placed(&old, "c-sw", 0, &[("SW-1", "Stale thing", 1, 100)])], None).await.expect("apply");
    let leftovers = || async {
        let client = raw_client(&settings);
        let mut query = meilisearch_sdk::indexes::IndexesQuery::new(&client);
        query.with_limit(1000);
        let all = client.list_all_indexes_with(&query).await.expect("indexes");
        let prefix = format!("{}_rebuild_", settings.index);
        all.results.into_iter().map(|i| i.uid).filter(|uid| uid.starts_with(&prefix)).collect::<Vec<_>>()
    };

    let mut aborted = view.rebuild().await.expect("a fresh index");
    assert_eq!(leftovers().await.len(), 1, "the fresh index exists while the rebuild runs");
    aborted.apply(Arc::from([placed(&new, "c-sw", 1, &[("SW-2", "Fresh thing", 1, 100)])]), None).await.expect("fill");
    aborted.abort().await;
    assert!(leftovers().await.is_empty(), "an aborted rebuild deletes its index");

    let mut rebuild = view.rebuild().await.expect("a fresh index");
    rebuild.apply(Arc::from([placed(&new, "c-sw", 1, &[("SW-2", "Fresh thing", 1, 100)])]), None).await.expect("fill");
    assert!(view.get(&old).await.expect("get").is_some(), "before the swap: the current index");
    rebuild.finish().await.expect("swap");
    assert!(leftovers().await.is_empty(), "the swapped-out index is deleted");
    assert_eq!(view.get(&old).await.expect("get"), None);
    assert_eq!(view.get(&new).await.expect("get").map(|o| o.version), Some(1));

    let index = raw_client(&settings).index(&settings.index);
    let live = index.get_settings().await.expect("settings");
    let sortable: BTreeSet<String> = live.sortable_attributes.unwrap_or_default().into_iter().collect();
    assert_eq!(sortable, ["placedAtMs", "total", "orderId"].map(String::from).into(), "the view's settings");
    assert_eq!(live.ranking_rules.as_ref().and_then(|r| r.first()).map(String::as_str), Some("sort"));
    assert_eq!(view.search(&text("fresh")).await.expect("search").estimated_total, 1);
    drop_index(&settings).await;
}

// ---- Meilisearch failures and keys, on the contract mock -----------------------------------------------
//
// The faults below cannot be ordered from a real server (a full disk, a revoked key at the right moment, a
// settings task that takes minutes), so these cases run on a mock of their own even when `MEILI_URL` is set.

const MASTER: &str = "mock-master-key";

/// The actions the README documents for `meilisearch.api_key`.
const ACTIONS: [&str; 9] = orderflow::views::search_meili::API_KEY_ACTIONS;

/// A keyed mock of its own, and view settings on a fresh index of it with `key`.
fn keyed_mock(key: &str) -> (meili_mock::MeiliMock, MeiliSettings) {
    let mock = meili_mock::launch(Some(MASTER));
    let index = format!("orders_test_{}", Uuid::now_v7().simple());
    (mock.clone(), MeiliSettings { url: mock.url().to_owned(), api_key: key.to_owned(), index })
}

/// A key limited to `actions` on the view's index and its rebuild indexes.
fn limited_key(mock: &meili_mock::MeiliMock, settings: &MeiliSettings, key: &str, actions: &[&str]) {
    mock.add_key(key, actions, &[&settings.index, &format!("{}_rebuild_*", settings.index)]);
}

fn one_order(prefix: &str) -> (OrderId, StoredEvent) {
    let order = id(prefix);
    let event = placed(&order, "c-fault", 0, &[("F-1", "Fault thing", 1, 100)]);
    (order, event)
}

fn unavailable_saying(result: Result<impl std::fmt::Debug, ViewError>, words: &[&str]) {
    match result {
        Err(ViewError::Unavailable(e)) => {
            for word in words {
                assert!(e.contains(word), "{word:?} in {e:?}");
            }
        }
        other => panic!("expected Unavailable saying {words:?}, got {other:?}"),
    }
}

/// A document Meilisearch refuses (`invalid_request`) is the events' fault: the batch is `Rejected`, and since the
/// server fails every task of a batch with one document's error, the projector retries the events alone: the
/// good ones apply, the bad one is refused again (and parked). Readiness stays green.
#[tokio::test]
async fn meili_a_refused_document_is_the_events_fault() {
    let (mock, settings) = keyed_mock(MASTER);
    let view = MeiliSearchView::open(&settings).await.expect("open");
    let ((good, good_placed), (bad, bad_placed)) = (one_order("good"), one_order("bad"));
    mock.refuse_document(bad.as_str(), meili_mock::Fault::max_fields_limit_exceeded());
    let batch = [good_placed, bad_placed];
    assert!(matches!(view.apply(&batch, None).await, Err(ViewError::Rejected(_))));
    assert_eq!(view.get(&good).await.expect("get"), None, "the failed batch wrote nothing");
    assert_eq!(view.apply(&batch[..1], None).await.expect("alone, the good event applies"), report(1, 0));
    let alone = view.apply(&batch[1..], None).await;
    assert!(matches!(&alone, Err(ViewError::Rejected(e)) if e.contains("max_fields_limit_exceeded")), "{alone:?}");
    assert_eq!(view.get(&bad).await.expect("get"), None);
    view.ping().await.expect("the backend is fine: readiness stays green");
}

/// On the mock as on the real server, a failed batch fails EVERY task in it with the same error: two document
/// tasks queued behind a long task are processed as one batch, and one bad document fails both.
#[tokio::test]
async fn meili_mock_fails_every_task_of_a_failed_batch() {
    let (mock, settings) = keyed_mock(MASTER);
    MeiliSearchView::open(&settings).await.expect("open");
    let (good, bad) = (id("good"), id("bad"));
    mock.refuse_document(bad.as_str(), meili_mock::Fault::max_fields_limit_exceeded());
    mock.hold_settings(Duration::from_millis(300));
    let index = raw_client(&settings).index(&settings.index);
    let held = index.set_settings(&meilisearch_sdk::settings::Settings::new()).await.expect("settings task");
    let first = index.add_or_replace(&[json!({"orderId": good.as_str()})], Some("orderId")).await.expect("enqueued");
    let second = index.add_or_replace(&[json!({"orderId": bad.as_str()})], Some("orderId")).await.expect("enqueued");
    let client = raw_client(&settings);
    let wait = |task: meilisearch_sdk::task_info::TaskInfo| {
        let client = client.clone();
        async move {
            task.wait_for_completion(&client, Some(Duration::from_millis(20)), Some(Duration::from_secs(10)))
                .await
                .expect("task done")
        }
    };
    assert!(wait(held).await.is_success());
    let (first, second) = (wait(first).await, wait(second).await);
    for task in [&first, &second] {
        match task {
            meilisearch_sdk::tasks::Task::Failed { content } => {
                assert_eq!(content.error.error_code.to_string(), "max_fields_limit_exceeded")
            }
            other => panic!("every task of the batch fails: {other:?}"),
        }
    }
}

/// `system` and `internal` errors, 5xx answers: Meilisearch is down, not the events' fault. The batch is
/// `Unavailable` (retried with backoff, nothing parked) and readiness raises no alarm for it.
#[tokio::test]
async fn meili_system_and_internal_errors_and_5xx_mean_the_backend_is_down() {
    use meili_mock::Fault;
    let (mock, settings) = keyed_mock(MASTER);
    let view = MeiliSearchView::open(&settings).await.expect("open");
    for (fault, code) in [
        (Fault::no_space_left_on_device(), "no_space_left_on_device"),
        (Fault::io_error(), "io_error"),
        (Fault::internal(), "internal"),
    ] {
        mock.fail_batches(fault, 1);
        let (order, placed) = one_order(code);
        let batch = [placed];
        unavailable_saying(view.apply(&batch, None).await, &[code]);
        view.ping().await.expect("no alarm: the server's trouble passes");
        assert_eq!(view.apply(&batch, None).await.expect("the retry applies"), report(1, 0));
        assert!(view.get(&order).await.expect("get").is_some());
    }
    for (fault, what) in [(Fault::proxy(502), "502"), (Fault::internal(), "internal")] {
        mock.fail_requests(fault, 1);
        let (_, placed) = one_order("proxy");
        unavailable_saying(view.apply(std::slice::from_ref(&placed), None).await, &[what]);
        assert_eq!(view.apply(&[placed], None).await.expect("the retry applies"), report(1, 0));
    }
    view.ping().await.expect("ready");
}

/// No answer (a frozen server) is Meilisearch down too: the call gives up after its timeout, and no alarm stays
/// raised once it answers again.
#[tokio::test]
async fn meili_no_answer_means_the_backend_is_down() {
    let (mock, settings) = keyed_mock(MASTER);
    let view = MeiliSearchView::open(&settings).await.expect("open");
    let (order, placed) = one_order("frozen");
    mock.pause_switch().pause();
    unavailable_saying(view.apply(std::slice::from_ref(&placed), None).await, &["no answer"]);
    mock.pause_switch().resume();
    view.ping().await.expect("ready once it answers");
    assert_eq!(view.apply(&[placed], None).await.expect("the retry applies"), report(1, 0));
    assert!(view.get(&order).await.expect("get").is_some());
}

/// A revoked key is loud: writes are `Unavailable` (nothing parked) and readiness fails saying the key was
/// refused, until the key works again. A wrong key fails readiness the same way (`/health` would have said ok).
#[tokio::test]
async fn meili_a_revoked_key_fails_readiness_with_the_reason() {
    let (mock, settings) = keyed_mock("orderflow-key");
    limited_key(&mock, &settings, "orderflow-key", &ACTIONS);
    let view = MeiliSearchView::open(&settings).await.expect("open with the key");
    view.ping().await.expect("ready");
    mock.revoke_key("orderflow-key");
    unavailable_saying(view.ping().await, &["meilisearch.api_key", "invalid_api_key"]);
    let (order, placed) = one_order("revoked");
    unavailable_saying(
        view.apply(std::slice::from_ref(&placed), None).await,
        &["meilisearch.api_key", "documents.get"],
    );
    limited_key(&mock, &settings, "orderflow-key", &ACTIONS);
    assert_eq!(view.apply(&[placed], None).await.expect("the key works again"), report(1, 0));
    view.ping().await.expect("ready again");
    assert!(view.get(&order).await.expect("get").is_some());

    let wrong = MeiliSettings { api_key: "wrong-key".into(), ..settings.clone() };
    let error = MeiliSearchView::open(&wrong).await.err().expect("a wrong key is refused at startup");
    assert!(format!("{error:#}").contains("meilisearch.api_key"), "{error:#}");
}

/// The index deleted after start is loud: a write is `Unavailable` (nothing parked; the index is not silently
/// made again, empty) and readiness says the index is gone.
#[tokio::test]
async fn meili_the_index_deleted_after_start_is_loud() {
    let (_mock, settings) = keyed_mock(MASTER);
    let view = MeiliSearchView::open(&settings).await.expect("open");
    drop_index(&settings).await;
    let (_, placed) = one_order("gone");
    unavailable_saying(view.apply(&[placed], None).await, &["not found"]);
    unavailable_saying(view.ping().await, &["not found"]);
    let listed = raw_client(&settings).get_raw_index(&settings.index).await;
    assert!(listed.is_err(), "the view did not recreate the index behind the operator's back");
}

/// A batch over the server's payload limit (413 `payload_too_large`) is written in halves; a single document over
/// it is loud (readiness says why), and writes again once the limit allows it.
#[tokio::test]
async fn meili_a_batch_over_the_payload_limit_is_split() {
    let (mock, settings) = keyed_mock(MASTER);
    let view = MeiliSearchView::open(&settings).await.expect("open");
    let orders: Vec<(OrderId, StoredEvent)> = (0..8).map(|i| one_order(&format!("big{i}"))).collect();
    let one = serde_json::to_vec(&fold(std::slice::from_ref(&orders[0].1))).expect("json").len();
    mock.limit_payload(one * 3);
    let batch: Vec<StoredEvent> = orders.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(view.apply(&batch, None).await.expect("split into writes under the limit"), report(8, 0));
    for (order, _) in &orders {
        assert!(view.get(order).await.expect("get").is_some(), "{order} written");
    }
    assert!(mock.task_count("documentAdditionOrUpdate", &settings.index) >= 4, "several smaller writes");
    view.ping().await.expect("no alarm: the split went through");

    mock.limit_payload(one / 2);
    let (order, placed) = one_order("huge");
    unavailable_saying(view.apply(std::slice::from_ref(&placed), None).await, &["payload"]);
    unavailable_saying(view.ping().await, &["payload"]);
    mock.limit_payload(100 * 1024 * 1024);
    assert_eq!(view.apply(&[placed], None).await.expect("applies once the limit allows"), report(1, 0));
    view.ping().await.expect("alarm cleared");
    assert!(view.get(&order).await.expect("get").is_some());
}

/// Least privilege: a key with exactly the documented actions on `<index>` and `<index>_rebuild_*` runs the whole
/// view, rebuild included; without any one of them, startup (or, for the rebuild's and the writes' actions, the
/// call and readiness) says which action is missing.
#[tokio::test]
async fn meili_a_key_with_the_documented_actions_is_enough_and_a_missing_action_is_named() {
    let (mock, settings) = keyed_mock("least");
    limited_key(&mock, &settings, "least", &ACTIONS);
    let view = MeiliSearchView::open(&settings).await.expect("open with the limited key");
    let (order, placed) = one_order("least");
    assert_eq!(view.apply(std::slice::from_ref(&placed), None).await.expect("apply"), report(1, 0));
    assert!(view.get(&order).await.expect("get").is_some());
    assert_eq!(view.search(&text("fault")).await.expect("search").estimated_total, 1);
    let mut rebuild = view.rebuild().await.expect("a fresh index");
    rebuild.apply(Arc::from([placed]), None).await.expect("fill");
    rebuild.finish().await.expect("swap and delete");
    view.ping().await.expect("ready");
    assert!(view.get(&order).await.expect("get").is_some());

    // Startup uses these (on a fresh index): a key without one is refused at startup, naming it.
    for missing in ["settings.get", "indexes.create", "settings.update", "tasks.get", "search", "documents.get"] {
        let (mock, settings) = keyed_mock("partial");
        let actions: Vec<&str> = ACTIONS.iter().copied().filter(|a| *a != missing).collect();
        limited_key(&mock, &settings, "partial", &actions);
        let error = MeiliSearchView::open(&settings).await.err().expect("refused at startup");
        assert!(format!("{error:#}").contains(&format!("`{missing}`")), "names {missing}: {error:#}");
    }
    // Writes and rebuilds: the failing call names the action, and a refused write fails readiness.
    let (mock, settings) = keyed_mock("no-add");
    limited_key(
        &mock,
        &settings,
        "no-add",
        &ACTIONS.iter().copied().filter(|a| *a != "documents.add").collect::<Vec<_>>(),
    );
    let view = MeiliSearchView::open(&settings).await.expect("open");
    unavailable_saying(view.apply(&[one_order("no-add").1], None).await, &["`documents.add`"]);
    unavailable_saying(view.ping().await, &["`documents.add`"]);
    for missing in ["indexes.swap", "indexes.create"] {
        let (mock, settings) = keyed_mock("no-rebuild");
        limited_key(&mock, &settings, "no-rebuild", &ACTIONS);
        let view = MeiliSearchView::open(&settings).await.expect("open");
        limited_key(
            &mock,
            &settings,
            "no-rebuild",
            &ACTIONS.iter().copied().filter(|a| *a != missing).collect::<Vec<_>>(),
        );
        let refused = match view.rebuild().await {
            Err(e) => e,
            Ok(rebuild) => rebuild.finish().await.expect_err("the swap is refused"),
        };
        assert!(refused.to_string().contains(&format!("`{missing}`")), "names {missing}: {refused}");
    }
}

/// Startup on an index whose settings take long to apply (a large index being reindexed): it waits past the old
/// 60 s limit instead of exiting, and never sends the settings twice: a second instance (or a restart) starting
/// meanwhile waits for the update under way, and a start after it finds the settings applied.
#[tokio::test]
async fn meili_startup_waits_for_a_long_settings_update_and_never_sends_it_twice() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish();
    // This test's runtime runs every task it spawns on this thread.
    let _logging = tracing::subscriber::set_default(subscriber);
    let (mock, settings) = keyed_mock(MASTER);
    let client = raw_client(&settings);
    let created = client.create_index(&settings.index, Some("orderId")).await.expect("an existing index");
    created.wait_for_completion(&client, None, None).await.expect("created");
    mock.hold_settings(Duration::from_secs(65));
    let started = std::time::Instant::now();
    let first = tokio::spawn({
        let settings = settings.clone();
        async move { MeiliSearchView::open(&settings).await.map(|_| ()).map_err(|e| format!("{e:#}")) }
    });
    while mock.task_count("settingsUpdate", &settings.index) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = tokio::spawn({
        let settings = settings.clone();
        async move { MeiliSearchView::open(&settings).await.map(|_| ()).map_err(|e| format!("{e:#}")) }
    });
    first.await.expect("joined").expect("the first start waits it out");
    second.await.expect("joined").expect("the second start waits for the same update");
    assert!(started.elapsed() >= Duration::from_secs(60), "past the old limit: {:?}", started.elapsed());
    assert_eq!(mock.task_count("settingsUpdate", &settings.index), 1, "the settings were sent once");
    let logged = logs.text();
    let progress = logged.lines().filter(|l| l.contains("waiting for a meilisearch index task")).collect::<Vec<_>>();
    assert!(progress.len() >= 5, "progress logged every few seconds: {logged}");
    assert!(progress.iter().any(|l| l.contains("% (processing tasks")), "with the batch's progress: {logged}");

    let again = std::time::Instant::now();
    MeiliSearchView::open(&settings).await.expect("a restart");
    assert_eq!(mock.task_count("settingsUpdate", &settings.index), 1, "already applied: not sent again");
    assert!(again.elapsed() < Duration::from_secs(5), "a restart does not wait: {:?}", again.elapsed());
}

/// What the code under test logs through `tracing`, as text.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What the Meilisearch SDK logs at WARN or above (it logs through the `log` facade).
fn sdk_warnings() -> &'static std::sync::Mutex<Vec<String>> {
    struct Recorder(std::sync::Mutex<Vec<String>>);
    impl log::Log for Recorder {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Warn && metadata.target().starts_with("meilisearch_sdk")
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                let line = format!("{} {}: {}", record.level(), record.target(), record.args());
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        }
        fn flush(&self) {}
    }
    static RECORDER: std::sync::OnceLock<&'static Recorder> = std::sync::OnceLock::new();
    let recorder = RECORDER.get_or_init(|| {
        let recorder: &'static Recorder = Box::leak(Box::new(Recorder(std::sync::Mutex::new(Vec::new()))));
        if log::set_logger(recorder).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
        recorder
    });
    &recorder.0
}

/// A `minVersion` poll for a document not there yet is an expected miss, not a warning: reading it logs nothing at
/// WARN (the SDK warns about every unexpected status code, such as a 404 of `GET /documents/{id}`).
#[tokio::test]
async fn meili_reading_a_missing_document_logs_no_warning() {
    let warnings = sdk_warnings();
    let settings = meili_settings();
    let view = MeiliSearchView::open(&settings).await.expect("open");
    warnings.lock().expect("lock").clear();
    for _ in 0..3 {
        assert_eq!(view.get(&id("not-yet")).await.expect("a miss, not an error"), None);
    }
    assert_eq!(*warnings.lock().expect("lock"), Vec::<String>::new());
    drop_index(&settings).await;
}
