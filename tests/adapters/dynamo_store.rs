//! `EventStore` conformance: every case is one generic function over `Arc<dyn EventStore>`, run against the
//! SQLite adapter (a temp folder) and the DynamoDB adapter (DynamoDB Local, tables with a fresh prefix per
//! test). A few DynamoDB-only cases pin what other components rely on: the item format the bridge decodes,
//! the stream and TTL settings of the tables, the transaction size limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType, TimeToLiveStatus};
use chrono::Utc;
use orderflow::aws::Tables;
use orderflow::config::{AwsSettings, StoreSettings};
use orderflow::domain::{Money, Order, OrderEvent, OrderId, OrderStatus, Text};
use orderflow::store::RebuildSource;
use orderflow::store::dynamo::{DynamoEventStore, event_from_item};
use orderflow::store::sqlite::SqliteEventStore;
use orderflow::store::{AppendError, AppendRequest, EventStore, IdempotencyRecord, StoredEvent, StoredResponse};
use uuid::Uuid;

use crate::support::{at, cancelled, dynamo, order_id, paid, placed, placed_with_items, shipped, store_settings};

// ---- fixtures -----------------------------------------------------------------------------------------

/// The SQLite store in a temp folder (kept alive as long as the store is used).
pub fn sqlite_store(settings: StoreSettings) -> (tempfile::TempDir, Arc<dyn EventStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path(), &settings, 2).expect("open the SQLite store");
    (dir, store)
}

pub async fn dynamo_store(
    settings: StoreSettings,
) -> Option<(Arc<DynamoEventStore>, aws_sdk_dynamodb::Client, Tables)> {
    let (client, tables) = dynamo().await?;
    let store =
        DynamoEventStore::open(client.clone(), tables.clone(), &settings, true).await.expect("open the DynamoDB store");
    Some((store, client, tables))
}

async fn run_sqlite<F: Future<Output = ()>>(settings: StoreSettings, case: impl FnOnce(Arc<dyn EventStore>) -> F) {
    let (_dir, store) = sqlite_store(settings);
    case(store).await;
}

async fn run_dynamo<F: Future<Output = ()>>(settings: StoreSettings, case: impl FnOnce(Arc<dyn EventStore>) -> F) {
    let Some((store, _, _)) = dynamo_store(settings).await else { return };
    case(store).await;
}

/// One `#[tokio::test]` per adapter for each case: `sqlite::<case>` and `dynamo::<case>`.
macro_rules! conformance {
    ($($case:ident $(with $settings:expr)?;)*) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut settings = crate::support::store_settings();
                    $(settings = $settings;)?
                    super::run_sqlite(settings, super::$case).await;
                }
            )*
        }
        mod dynamo {
            $(
                #[tokio::test]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut settings = crate::support::store_settings();
                    $(settings = $settings;)?
                    super::run_dynamo(settings, super::$case).await;
                }
            )*
        }
    };
}

conformance! {
    append_load_and_history_round_trip;
    stale_expected_version_is_a_conflict;
    concurrent_appends_at_one_version_let_exactly_one_win;
    idempotency_record_is_written_with_the_events_or_not_at_all;
    idempotency_key_alone_is_a_conditional_write;
    expired_idempotency_keys_are_gone_and_reusable with super::StoreSettings { idempotency_ttl_hours: 0, ..crate::support::store_settings() };
    load_is_the_snapshot_and_the_tail;
    snapshots_are_ignored_when_the_store_takes_none with super::StoreSettings { snapshot_every: 0, ..crate::support::store_settings() };
    history_beyond_one_megabyte_loads_completely;
}

fn append(id: &OrderId, expected_version: u64, events: Vec<OrderEvent>) -> AppendRequest {
    AppendRequest {
        order_id: id.clone(),
        expected_version,
        events,
        snapshot: None,
        idempotency: None,
        traceparent: None,
    }
}

fn record(scope: &str, hash: &str, status: u16, etag: Option<&str>, location: Option<&str>) -> IdempotencyRecord {
    IdempotencyRecord {
        scope: scope.to_owned(),
        request_hash: hash.to_owned(),
        response: StoredResponse {
            status,
            body: format!("{{\"scope\":\"{scope}\"}}"),
            etag: etag.map(str::to_owned),
            location: location.map(str::to_owned),
        },
    }
}

/// Equal as far as both adapters promise: everything but the store-specific `position`, times to the ms.
fn assert_same(got: &[StoredEvent], want: &[StoredEvent]) {
    assert_eq!(got.len(), want.len(), "number of events");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (&g.event_id, &g.order_id, g.version, g.schema_version, &g.event),
            (&w.event_id, &w.order_id, w.version, w.schema_version, &w.event)
        );
        assert_eq!(g.recorded_at.timestamp_millis(), w.recorded_at.timestamp_millis());
    }
}

// ---- the cases ----------------------------------------------------------------------------------------

async fn append_load_and_history_round_trip(store: Arc<dyn EventStore>) {
    store.ping().await.expect("ping");
    let id = order_id();
    let t = at(2025, 3, 1, 10, 0, 0);
    let mut appended = store.append(append(&id, 0, vec![placed("EUR", 1250, t)])).await.expect("append v1");
    assert_eq!(appended.len(), 1);
    // `OrderPlaced` is written at schema version 2 (docs/api.md §3).
    assert_eq!((appended[0].version, appended[0].schema_version), (1, 2));
    appended.extend(store.append(append(&id, 1, vec![paid(1250, t)])).await.expect("append v2"));
    appended
        .extend(store.append(append(&id, 2, vec![shipped(t), cancelled(0, t)])).await.expect("append v3, v4 at once"));
    assert_eq!(appended.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3, 4]);

    let loaded = store.load(&id).await.expect("load");
    assert!(loaded.snapshot.is_none(), "no snapshot was requested");
    assert_same(&loaded.events, &appended);
    assert_same(&store.history(&id).await.expect("history"), &appended);
    let order = loaded.fold(&id).expect("an order");
    assert_eq!((order.version, order.status), (4, OrderStatus::Cancelled));

    let unknown = order_id();
    let empty = store.load(&unknown).await.expect("load unknown");
    assert!(empty.snapshot.is_none() && empty.events.is_empty());
    assert!(store.history(&unknown).await.expect("history unknown").is_empty());
    assert!(store.idempotency_get("nobody:key").await.expect("get unknown key").is_none());
}

async fn stale_expected_version_is_a_conflict(store: Arc<dyn EventStore>) {
    let id = order_id();
    let t = at(2025, 3, 1, 10, 0, 0);
    store.append(append(&id, 0, vec![placed("EUR", 100, t)])).await.expect("v1");
    assert_eq!(store.append(append(&id, 0, vec![placed("EUR", 100, t)])).await, Err(AppendError::Conflict));
    store.append(append(&id, 1, vec![paid(100, t)])).await.expect("v2");
    assert_eq!(store.append(append(&id, 1, vec![shipped(t)])).await, Err(AppendError::Conflict));
    // A multi-event append whose second event collides writes none of them.
    assert_eq!(store.append(append(&id, 1, vec![shipped(t), shipped(t)])).await, Err(AppendError::Conflict));
    let history = store.history(&id).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].event, paid(100, t));
}

async fn concurrent_appends_at_one_version_let_exactly_one_win(store: Arc<dyn EventStore>) {
    let t = at(2025, 3, 1, 10, 0, 0);
    for round in 0..6 {
        let id = order_id();
        store.append(append(&id, 0, vec![placed("EUR", 100, t)])).await.expect("v1");
        let order = Order::fold(None, &id, [&placed("EUR", 100, t), &paid(100, t)]).expect("state");
        // Odd rounds: plain single-item writes. Even rounds: transactions (key + snapshot) on both sides.
        let contender = |n: u32| {
            let mut request = append(&id, 1, vec![paid(100, t)]);
            if round % 2 == 0 {
                request.idempotency = Some(record(&format!("race:{id}:{n}"), "h", 200, None, None));
                request.snapshot = Some(order.clone());
            }
            request
        };
        let (a, b) = tokio::join!(store.append(contender(1)), store.append(contender(2)));
        let oks = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "round {round}: exactly one wins: {a:?} / {b:?}");
        let loser = if a.is_ok() { (&b, 2) } else { (&a, 1) };
        assert_eq!(loser.0, &Err(AppendError::Conflict), "round {round}");
        assert_eq!(store.history(&id).await.expect("history").len(), 2);
        if round % 2 == 0 {
            // The loser's idempotency record went down with its event.
            let scope = format!("race:{id}:{}", loser.1);
            assert!(store.idempotency_get(&scope).await.expect("get").is_none(), "round {round}");
            let winner = format!("race:{id}:{}", 3 - loser.1);
            assert!(store.idempotency_get(&winner).await.expect("get").is_some(), "round {round}");
        }
    }
}

async fn idempotency_record_is_written_with_the_events_or_not_at_all(store: Arc<dyn EventStore>) {
    let t = at(2025, 3, 1, 10, 0, 0);
    let (a, b) = (order_id(), order_id());
    let scope = format!("client-1:{}", Uuid::now_v7());
    let first = record(&scope, "hash-a", 201, Some("\"1\""), Some(&format!("/orders/{a}")));
    let mut request = append(&a, 0, vec![placed("EUR", 100, t)]);
    request.idempotency = Some(first.clone());
    store.append(request).await.expect("first use of the key");
    assert_eq!(store.idempotency_get(&scope).await.expect("get"), Some(first.clone()));

    // The same key on another order: refused, and that order's event is not written.
    let mut request = append(&b, 0, vec![placed("EUR", 100, t)]);
    request.idempotency = Some(record(&scope, "hash-b", 201, None, None));
    assert_eq!(store.append(request).await, Err(AppendError::IdempotencyKeyTaken));
    assert!(store.history(&b).await.expect("history").is_empty(), "the losing append wrote its events");

    // Key taken and version taken at once: the key is reported (as the SQLite store checks it first).
    let mut request = append(&a, 0, vec![placed("EUR", 100, t)]);
    request.idempotency = Some(record(&scope, "hash-c", 201, None, None));
    assert_eq!(store.append(request).await, Err(AppendError::IdempotencyKeyTaken));

    // The first record is untouched; a record without etag / location round-trips as such.
    assert_eq!(store.idempotency_get(&scope).await.expect("get"), Some(first));
    let bare_scope = format!("client-2:{}", Uuid::now_v7());
    let bare = record(&bare_scope, "hash-d", 200, None, None);
    let mut request = append(&a, 1, vec![paid(100, t)]);
    request.idempotency = Some(bare.clone());
    store.append(request).await.expect("second key");
    assert_eq!(store.idempotency_get(&bare_scope).await.expect("get"), Some(bare));
    assert_eq!(store.history(&a).await.expect("history").len(), 2);
}

async fn idempotency_key_alone_is_a_conditional_write(store: Arc<dyn EventStore>) {
    let id = order_id();
    let scope = format!("client-1:{}", Uuid::now_v7());
    let only = record(&scope, "hash", 200, Some("\"3\""), None);
    let mut request = append(&id, 3, vec![]);
    request.idempotency = Some(only.clone());
    assert_eq!(store.append(request.clone()).await, Ok(vec![]));
    assert_eq!(store.idempotency_get(&scope).await.expect("get"), Some(only));
    assert_eq!(store.append(request).await, Err(AppendError::IdempotencyKeyTaken));
    assert!(store.history(&id).await.expect("history").is_empty());
}

async fn expired_idempotency_keys_are_gone_and_reusable(store: Arc<dyn EventStore>) {
    // The store under test keeps keys for 0 hours: a key is expired as soon as the clock moves on.
    let id = order_id();
    let scope = format!("client-1:{}", Uuid::now_v7());
    let mut request = append(&id, 0, vec![placed("EUR", 100, at(2025, 3, 1, 10, 0, 0))]);
    request.idempotency = Some(record(&scope, "old", 201, None, None));
    store.append(request).await.expect("first use");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.idempotency_get(&scope).await.expect("get"), None, "an expired key is not returned");
    let mut request = append(&id, 1, vec![paid(100, at(2025, 3, 1, 11, 0, 0))]);
    let fresh = record(&scope, "new", 200, None, None);
    request.idempotency = Some(fresh);
    store.append(request).await.expect("an expired key can be used again");
}

async fn load_is_the_snapshot_and_the_tail(store: Arc<dyn EventStore>) {
    // The store under test takes snapshots (snapshot_every = 2); the actor decides when.
    let id = order_id();
    let t = at(2025, 3, 1, 10, 0, 0);
    let events = [placed("EUR", 100, t), paid(100, t), shipped(t)];
    store.append(append(&id, 0, vec![events[0].clone()])).await.expect("v1");
    let at_two = Order::fold(None, &id, &events[..2]).expect("state at v2");
    let mut request = append(&id, 1, vec![events[1].clone()]);
    request.snapshot = Some(at_two.clone());
    store.append(request).await.expect("v2 with snapshot");
    let tail = store.append(append(&id, 2, vec![events[2].clone()])).await.expect("v3");

    let loaded = store.load(&id).await.expect("load");
    assert_eq!(loaded.snapshot, Some(at_two));
    assert_same(&loaded.events, &tail);
    let order = loaded.fold(&id).expect("state");
    assert_eq!(Some(order), Order::fold(None, &id, &events));
    assert_eq!(store.history(&id).await.expect("history").len(), 3, "history ignores snapshots");
}

async fn snapshots_are_ignored_when_the_store_takes_none(store: Arc<dyn EventStore>) {
    let id = order_id();
    let t = at(2025, 3, 1, 10, 0, 0);
    let events = [placed("EUR", 100, t), paid(100, t)];
    let mut request = append(&id, 0, events.to_vec());
    request.snapshot = Order::fold(None, &id, &events);
    store.append(request).await.expect("append");
    let loaded = store.load(&id).await.expect("load");
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.events.len(), 2);
}

/// An order of 241 events of ~8 KB each (payment ids far beyond the API's limit: the store does not check
/// rules), about 2 MB: a DynamoDB query needs at least two 1 MB pages for it.
async fn write_big_history(store: &dyn EventStore) -> (OrderId, Vec<StoredEvent>) {
    let id = order_id();
    let t = at(2025, 3, 1, 10, 0, 0);
    let mut all = store.append(append(&id, 0, vec![placed_with_items("EUR", 100, t, 20)])).await.expect("v1");
    let big = |n: u64| OrderEvent::PaymentConfirmed {
        payment_id: Text::parse("paymentId", &format!("{n:05}-{}", "p".repeat(8000)), 10_000).expect("text"),
        amount: Money::from_minor(n),
        paid_at: t,
    };
    for _ in 0..12 {
        let next = all.len() as u64;
        let chunk: Vec<OrderEvent> = (next..next + 20).map(big).collect();
        all.extend(store.append(append(&id, next, chunk)).await.expect("append a chunk"));
    }
    let bytes: usize = all.iter().map(|e| serde_json::to_string(&e.event).map_or(0, |s| s.len())).sum();
    assert!(bytes > 1_900_000, "the history is {bytes} bytes");
    (id, all)
}

async fn history_beyond_one_megabyte_loads_completely(store: Arc<dyn EventStore>) {
    let (id, all) = write_big_history(&*store).await;
    assert_eq!(all.len(), 241);
    let loaded = store.load(&id).await.expect("load");
    assert_same(&loaded.events, &all);
    assert_same(&store.history(&id).await.expect("history"), &all);
}

// ---- DynamoDB only ------------------------------------------------------------------------------------

/// The item format is a contract with the bridge (which decodes stream images with `event_from_item`).
#[tokio::test]
async fn dynamo_event_items_have_the_documented_attributes() {
    let Some((store, client, tables)) = dynamo_store(store_settings()).await else { return };
    let id = order_id();
    let t = at(2025, 3, 1, 10, 0, 0);
    let stored = store.append(append(&id, 0, vec![placed("EUR", 100, t)])).await.expect("append");
    let item = client
        .get_item()
        .table_name(&tables.events)
        .key("orderId", AttributeValue::S(id.to_string()))
        .key("version", AttributeValue::N("1".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the event item");
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["eventId", "orderId", "payload", "recordedAt", "schemaVersion", "type", "version"]);
    assert_eq!(item["type"], AttributeValue::S("OrderPlaced".into()));
    // `OrderPlaced` is written at schema version 2 (docs/api.md §3).
    assert_eq!(item["schemaVersion"], AttributeValue::N("2".into()));
    assert_eq!(item["eventId"], AttributeValue::S(stored[0].event_id.to_string()));
    assert_eq!(item["recordedAt"], AttributeValue::N(stored[0].recorded_at.timestamp_millis().to_string()));
    let payload: serde_json::Value = match &item["payload"] {
        AttributeValue::S(s) => serde_json::from_str(s).expect("JSON payload"),
        other => panic!("payload is {other:?}"),
    };
    assert_eq!(payload["type"], "OrderPlaced");
    assert_eq!(payload["data"]["currency"], "EUR");
    assert_eq!(payload["data"]["shippingAddress"], serde_json::Value::Null);
    assert_eq!(event_from_item(&item), Ok(stored[0].clone()));

    // Tables: the events stream carries new images; idempotency keys expire by TTL on expiresAt.
    let events =
        client.describe_table().table_name(&tables.events).send().await.expect("describe").table.expect("table");
    let stream = events.stream_specification().expect("a stream");
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewImage));
    assert!(events.latest_stream_arn().is_some());
    let ttl = client.describe_time_to_live().table_name(&tables.idempotency).send().await.expect("describe ttl");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert!(matches!(ttl.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)));
    assert_eq!(ttl.attribute_name(), Some("expiresAt"));
    for table in [&tables.snapshots, &tables.checkpoints] {
        client.describe_table().table_name(table.as_str()).send().await.expect("table exists");
    }

    // The idempotency item carries its TTL in epoch seconds.
    let scope = format!("k:{}", Uuid::now_v7());
    let mut request = append(&id, 1, vec![]);
    request.idempotency = Some(record(&scope, "h", 200, None, None));
    store.append(request).await.expect("key");
    let item = client
        .get_item()
        .table_name(&tables.idempotency)
        .key("scope", AttributeValue::S(scope))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .expect("the key item");
    let expires: i64 = match &item["expiresAt"] {
        AttributeValue::N(n) => n.parse().expect("number"),
        other => panic!("expiresAt is {other:?}"),
    };
    let in_a_day = Utc::now().timestamp() + 24 * 3600;
    assert!((in_a_day - 5..=in_a_day + 5).contains(&expires), "expiresAt {expires}");
    assert!(!item.contains_key("etag") && !item.contains_key("location"));
}

/// The big history of the conformance case really is more than one query page (or the case proves nothing).
#[tokio::test]
async fn dynamo_big_history_spans_several_query_pages() {
    let Some((store, client, tables)) = dynamo_store(store_settings()).await else { return };
    let (id, all) = write_big_history(&*store).await;
    let first_page = client
        .query()
        .table_name(&tables.events)
        .key_condition_expression("orderId = :id")
        .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    assert!(first_page.last_evaluated_key.is_some(), "one page held the whole history");
    assert!(first_page.items.unwrap_or_default().len() < all.len());
    assert_eq!(store.load(&id).await.expect("load").events.len(), all.len());
}

#[tokio::test]
async fn dynamo_open_is_idempotent_on_existing_tables() {
    let Some((store, client, tables)) = dynamo_store(store_settings()).await else { return };
    let again = DynamoEventStore::open(client, tables, &store_settings(), true).await.expect("open again");
    let id = order_id();
    store.append(append(&id, 0, vec![placed("EUR", 1, at(2025, 1, 1, 0, 0, 0))])).await.expect("append");
    assert_eq!(again.history(&id).await.expect("history").len(), 1);
}

#[tokio::test]
async fn dynamo_appends_beyond_one_transaction_are_refused_whole() {
    let Some((store, _, _)) = dynamo_store(store_settings()).await else { return };
    let t = at(2025, 3, 1, 10, 0, 0);
    let id = order_id();
    let mut request = append(&id, 0, (0..100).map(|_| paid(1, t)).collect());
    request.idempotency = Some(record(&format!("k:{}", Uuid::now_v7()), "h", 200, None, None));
    match store.append(request).await {
        Err(AppendError::Unavailable(message)) => assert!(message.contains("at most 100 items"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(store.history(&id).await.expect("history").is_empty());
    // 99 events and a key are exactly 100 items: one transaction.
    let mut request = append(&id, 0, (0..99).map(|_| paid(1, t)).collect());
    request.idempotency = Some(record(&format!("k:{}", Uuid::now_v7()), "h", 200, None, None));
    assert_eq!(store.append(request).await.expect("100 items").len(), 99);
    assert_eq!(store.load(&id).await.expect("load").events.len(), 99);
}

#[tokio::test]
async fn dynamo_unreachable_endpoint_is_unavailable_not_a_panic() {
    let settings = AwsSettings {
        region: "us-east-1".to_owned(),
        // Nothing listens on port 9 (discard) here: connections are refused at once.
        endpoint_url: "http://127.0.0.1:9".to_owned(),
        access_key_id: "test".to_owned(),
        secret_access_key: "test".to_owned(),
    };
    let client = aws_sdk_dynamodb::Client::new(&orderflow::aws::sdk_config(&settings).await);
    let store = DynamoEventStore::open(client, Tables::new("nowhere"), &store_settings(), false).await.expect("open");
    let id = order_id();
    assert!(matches!(
        store.append(append(&id, 0, vec![paid(1, at(2025, 1, 1, 0, 0, 0))])).await,
        Err(AppendError::Unavailable(_))
    ));
    assert!(store.load(&id).await.is_err());
    assert!(store.ping().await.is_err());
    assert!(store.idempotency_get("k").await.is_err());
}

// ---- rebuild source -----------------------------------------------------------------------------------

/// Reads the whole write model as a rebuild does, `limit` events a step, checking as it goes that each order's
/// versions arrive one after the other from 1 (never a later version before an earlier one, never twice).
async fn read_like_a_rebuild(source: &dyn RebuildSource, limit: usize) -> (Vec<StoredEvent>, Vec<Option<u64>>) {
    let (mut all, mut checkpoints) = (Vec::new(), Vec::new());
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let chunk = source.read(cursor.as_deref(), limit).await.expect("read");
        for event in &chunk.events {
            let have = seen.entry(event.order_id.to_string()).or_insert(0);
            assert_eq!(event.version, *have + 1, "{} v{} after v{have}", event.order_id, event.version);
            *have = event.version;
        }
        checkpoints.push(chunk.checkpoint);
        all.extend(chunk.events);
        match chunk.next {
            Some(next) => cursor = Some(next),
            None => return (all, checkpoints),
        }
    }
    panic!("the source never reached its end");
}

/// Orders of 1 to 4 events, appended interleaved; returns every stored event.
async fn write_orders_for_a_rebuild(store: &dyn EventStore, orders: usize) -> Vec<StoredEvent> {
    let t = at(2025, 4, 1, 9, 0, 0);
    let ids: Vec<OrderId> = (0..orders).map(|_| order_id()).collect();
    let mut stored = Vec::new();
    for version in 1..=4u64 {
        for (i, id) in ids.iter().enumerate() {
            if version as usize > 1 + i % 4 {
                continue;
            }
            let event = match version {
                1 => placed("EUR", 100, t),
                2 => paid(100, t),
                3 => shipped(t),
                _ => cancelled(100, t),
            };
            stored.extend(store.append(append(id, version - 1, vec![event])).await.expect("append"));
        }
    }
    stored
}

fn sorted_ids(events: &[StoredEvent]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    ids.sort();
    ids
}

/// The embedded source pages by global log position, which is also the checkpoint a rebuilt view stores.
#[tokio::test]
async fn sqlite_rebuild_source_reads_the_log_in_position_order_with_checkpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path(), &store_settings(), 2).expect("open the SQLite store");
    let stored = write_orders_for_a_rebuild(&*store, 10).await;
    // The head (for progress) follows the commits a moment later.
    let last = stored.last().map(|e| e.position).expect("events");
    for _ in 0..100 {
        if RebuildSource::head(&*store).await == last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(RebuildSource::head(&*store).await, last);
    let (read, checkpoints) = read_like_a_rebuild(&*store, 4).await;
    assert_same(&read, &stored);
    let positions: Vec<u64> = read.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "log order");
    // One checkpoint per chunk: the position of its last event; the empty last chunk has none.
    let want: Vec<Option<u64>> = read.chunks(4).map(|c| c.last().map(|e| e.position)).chain([None]).collect();
    assert_eq!(checkpoints, want);
}

/// The DynamoDB source scans the events table: with pages smaller than an order, every event still comes
/// exactly once and each order's in version order; an order appended to mid-scan stays in order too.
#[tokio::test]
async fn dynamo_rebuild_source_scans_every_event_once_each_order_in_version_order() {
    let Some((store, _, _)) = dynamo_store(store_settings()).await else { return };
    let stored = write_orders_for_a_rebuild(&*store, 12).await;
    assert_eq!(store.head().await, stored.len() as u64, "DynamoDB Local's ItemCount is exact");
    for limit in [1, 2, 3, 7, 1000] {
        let (read, checkpoints) = read_like_a_rebuild(&*store, limit).await;
        assert_eq!(sorted_ids(&read), sorted_ids(&stored), "every event once (pages of {limit})");
        assert!(checkpoints.iter().all(Option::is_none), "no log positions in DynamoDB");
    }

    // Appends while a scan runs: whatever the scan delivers of an order is still in version order.
    let mut cursor: Option<String> = None;
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut extra = 0;
    loop {
        let chunk = store.read(cursor.as_deref(), 2).await.expect("read");
        for event in &chunk.events {
            let have = seen.entry(event.order_id.to_string()).or_insert(0);
            assert_eq!(event.version, *have + 1, "{} v{} after v{have}", event.order_id, event.version);
            *have = event.version;
        }
        // Each step, one more event for an order with fewer than 4 (its next version).
        if let Some(e) = stored.iter().filter(|e| e.version == 1).nth(extra) {
            let now = store.history(&e.order_id).await.expect("history").len() as u64;
            if now < 6 {
                store.append(append(&e.order_id, now, vec![shipped(at(2025, 4, 2, 0, 0, 0))])).await.expect("append");
            }
            extra += 1;
        }
        match chunk.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(extra > 0);
    let bad = RebuildSource::read(&*store, Some("not a cursor"), 10).await;
    assert!(bad.is_err(), "a foreign cursor is an error, not a panic");
}
