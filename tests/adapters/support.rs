//! Test support shared by the adapter tests: reaching the real services of `scripts/services.sh` (or printing a
//! `SKIPPED` line when one is not reachable), their settings, domain builders, and the feed fixtures and
//! assertions. Test files import from here, never from each other.

use std::collections::{HashMap, HashSet};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::types::ShardIteratorType;
use chrono::{DateTime, TimeZone, Utc};
use orderflow::actors::bridge::{Bridge, Shutdown};
use orderflow::aws::Tables;
use orderflow::config::{AwsSettings, KafkaSettings, KinesisSettings, StoreSettings, Synchronous};
use orderflow::domain::{Currency, CustomerId, LineItem, Money, OrderEvent, OrderId, Quantity, Text};
use orderflow::feed::FeedSubscription;
use orderflow::feed::kinesis::{self, KinesisSubscription};
use orderflow::store::dynamo::DynamoEventStore;
use orderflow::store::{AppendRequest, EventStore, StoredEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};
use uuid::Uuid;

// ---- the services -------------------------------------------------------------------------------------

pub fn store_settings() -> StoreSettings {
    StoreSettings {
        snapshot_every: 2,
        max_batch: 64,
        queue_capacity: 1024,
        idempotency_ttl_hours: 24,
        synchronous: Synchronous::Normal,
    }
}

/// DynamoDB Local's SDK configuration, or `None` (with a line saying so) when it does not answer at
/// `ORDERFLOW_TEST_DYNAMODB` (default `http://127.0.0.1:8000`).
pub async fn dynamodb() -> Option<aws_config::SdkConfig> {
    let settings = aws_settings();
    let sdk = orderflow::aws::sdk_config(&settings).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    match tokio::time::timeout(Duration::from_secs(5), client.list_tables().limit(1).send()).await {
        Ok(Ok(_)) => Some(sdk),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => orderflow::aws::error_text(&e),
                _ => "timed out".to_owned(),
            };
            let endpoint = settings.endpoint_url;
            eprintln!("SKIPPED: DynamoDB Local is not reachable at {endpoint} ({why}); run scripts/services.sh start");
            None
        }
    }
}

/// A DynamoDB Local client and a fresh set of table names (see [`dynamodb`]).
pub async fn dynamo() -> Option<(aws_sdk_dynamodb::Client, Tables)> {
    let client = aws_sdk_dynamodb::Client::new(&dynamodb().await?);
    Some((client, Tables::new(&format!("t{}", unique()))))
}

/// The AWS settings of the local services (DynamoDB Local's endpoint; Kinesis has its own in its settings).
pub fn aws_settings() -> AwsSettings {
    AwsSettings {
        region: "us-east-1".to_owned(),
        endpoint_url: std::env::var("ORDERFLOW_TEST_DYNAMODB").unwrap_or_else(|_| "http://127.0.0.1:8000".to_owned()),
        access_key_id: "test".to_owned(),
        secret_access_key: "test".to_owned(),
    }
}

pub fn unique() -> String {
    Uuid::now_v7().simple().to_string()
}

/// The broker list, or `None` (with a line saying so) when no broker answers.
pub fn kafka_brokers() -> Option<String> {
    let brokers = std::env::var("ORDERFLOW_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let reachable = brokers
        .split(',')
        .filter_map(|b| b.trim().to_socket_addrs().ok())
        .flatten()
        .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    if reachable {
        Some(brokers)
    } else {
        eprintln!("SKIPPED: Kafka is not reachable at {brokers}; run scripts/services.sh start");
        None
    }
}

pub fn kafka_settings(brokers: &str, name: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers.to_owned(),
        topic: format!("test.{name}"),
        group_prefix: format!("g{name}"),
        create_topic: true,
        partitions: 3,
        replication_factor: 1,
    }
}

pub fn order_n(n: usize, run: &str) -> OrderId {
    OrderId::parse("orderId", &format!("o-{n}-{}", &run[..8])).expect("a valid order id")
}

/// The event an order's `version` carries: placed, paid, then shipped (the feed does not check the rules).
pub fn event_for(version: u64) -> OrderEvent {
    let at = "2024-05-01T10:00:00Z";
    let value = match version {
        1 => json!({"type": "OrderPlaced", "data": {
            "customerId": "c-1", "currency": "EUR", "total": 2500, "placedAt": at,
            "items": [{"sku": "SKU-1", "name": "Widget", "quantity": 2, "unitPrice": 1250}]}}),
        2 => json!({"type": "PaymentConfirmed", "data": {"paymentId": "pay-1", "amount": 2500, "paidAt": at}}),
        _ => json!({"type": "OrderShipped", "data": {
            "carrier": "DHL", "trackingNumber": format!("T-{version}"), "shippedAt": at}}),
    };
    serde_json::from_value(value).expect("a valid event")
}

pub fn stored(order: &OrderId, version: u64) -> StoredEvent {
    let event = event_for(version);
    StoredEvent {
        event_id: Uuid::now_v7(),
        order_id: order.clone(),
        version,
        position: 0,
        schema_version: orderflow::store::codec::schema_version(&event),
        recorded_at: Utc::now(),
        traceparent: Some(trace_for(version)),
        event,
    }
}

/// A well-formed W3C `traceparent`, different per version.
pub fn trace_for(version: u64) -> String {
    format!("00-{:032x}-00f067aa0ba902b7-01", 0x4bf9_2f35_0000u128 + u128::from(version))
}

pub fn ids(events: &[StoredEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

/// Every order's events in strictly increasing version order (no repeats).
pub fn assert_strict_order(events: &[StoredEvent]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in events {
        let previous = last.insert(e.order_id.as_str(), e.version).unwrap_or(0);
        assert!(e.version > previous, "order {} went from version {previous} to {}", e.order_id, e.version);
    }
}

// ---- domain builders ----------------------------------------------------------------------------------

pub fn order_id() -> OrderId {
    OrderId::parse("orderId", &format!("o-{}", Uuid::now_v7().simple())).expect("valid id")
}

pub fn text(value: &str) -> Text {
    Text::parse("text", value, value.chars().count().max(1)).expect("valid text")
}

pub fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).single().expect("valid time")
}

pub fn placed(currency: &str, total: u64, placed_at: DateTime<Utc>) -> OrderEvent {
    placed_with_items(currency, total, placed_at, 1)
}

/// An `OrderPlaced` with `n` line items whose names are as long as the API allows (for big payloads).
pub fn placed_with_items(currency: &str, total: u64, placed_at: DateTime<Utc>, n: usize) -> OrderEvent {
    let items = (0..n)
        .map(|i| LineItem {
            sku: text(&format!("SKU-{i:04}")),
            name: text(&format!("{i:04} {}", "x".repeat(195))),
            quantity: Quantity::parse("quantity", 1).expect("valid quantity"),
            unit_price: Money::from_minor(total / n.max(1) as u64),
        })
        .collect();
    OrderEvent::OrderPlaced {
        customer_id: CustomerId::parse("customerId", "c-1").expect("valid id"),
        currency: Currency::parse("currency", currency).expect("valid currency"),
        items,
        total: Money::from_minor(total),
        placed_at,
        shipping_address: None,
    }
}

pub fn paid(amount: u64, paid_at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::PaymentConfirmed { payment_id: text("pay-1"), amount: Money::from_minor(amount), paid_at }
}

pub fn shipped(shipped_at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::OrderShipped { carrier: text("DHL"), tracking_number: text("TRK-1"), shipped_at }
}

pub fn cancelled(refund: u64, cancelled_at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::OrderCancelled { reason: text("changed my mind"), refund: Money::from_minor(refund), cancelled_at }
}

// ---- reading a feed -----------------------------------------------------------------------------------

/// Polls until a non-empty batch comes, without acking it.
pub async fn next_nonempty(sub: &mut dyn FeedSubscription, max: usize) -> Vec<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let batch = sub.next_batch(max, Duration::from_millis(300)).await.expect("next_batch");
        if !batch.is_empty() {
            return batch;
        }
        assert!(Instant::now() < deadline, "no events within 60 s");
    }
}

/// Reads and acks batches of at most `max` until `want` events came, then looks a little longer for extra ones.
pub async fn drain(sub: &mut dyn FeedSubscription, want: usize, max: usize) -> Vec<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < want {
        assert!(Instant::now() < deadline, "only {} of {want} events within 60 s", got.len());
        let batch = sub.next_batch(max, Duration::from_millis(300)).await.expect("next_batch");
        sub.ack(&batch).await.expect("ack");
        got.extend(batch);
    }
    let extra = sub.next_batch(1000, Duration::from_millis(700)).await.expect("next_batch");
    sub.ack(&extra).await.expect("ack");
    got.extend(extra);
    got
}

// ---- Kafka, the bridge ---------------------------------------------------------------------------------

/// A record as an outside consumer sees it.
pub struct Seen {
    pub key: Option<String>,
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    pub value: Value,
}

/// A plain consumer of the topic in its own group, from the earliest offset: what a downstream team runs.
pub fn outside_consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("outside.{}", unique()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .expect("outside consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads records into `seen` until `done(seen)` or the deadline.
pub async fn consume_until(
    consumer: &StreamConsumer,
    seen: &mut Vec<Seen>,
    within: Duration,
    done: impl Fn(&[Seen]) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(seen) && Instant::now() < deadline {
        let Ok(message) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else { continue };
        let message = message.expect("consume");
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key.eq_ignore_ascii_case(name))
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
        };
        seen.push(Seen {
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            content_type: header("content-type"),
            traceparent: header("traceparent"),
            value: serde_json::from_slice(message.payload().unwrap_or_default()).expect("the value is JSON"),
        });
    }
}

pub fn distinct_ids(seen: &[Seen]) -> HashSet<String> {
    seen.iter().filter_map(|s| s.value["id"].as_str().map(str::to_owned)).collect()
}

/// Appends `versions` of every order (all orders' first version, then their second, …), as the application does.
pub async fn append_versions(
    store: &dyn EventStore,
    orders: &[OrderId],
    versions: std::ops::RangeInclusive<u64>,
) -> Vec<StoredEvent> {
    let mut appended = Vec::new();
    for version in versions {
        for order in orders {
            let request = AppendRequest {
                order_id: order.clone(),
                expected_version: version - 1,
                events: vec![event_for(version)],
                snapshot: None,
                idempotency: None,
                traceparent: Some(trace_for(version)),
            };
            appended.extend(store.append(request).await.expect("append"));
        }
    }
    appended
}

/// The bridge's shard checkpoints (items `bridge#<shardId>` of the checkpoints table).
pub async fn checkpoints(dynamo: &aws_sdk_dynamodb::Client, tables: &Tables) -> Vec<HashMap<String, AttributeValue>> {
    let output =
        dynamo.scan().table_name(&tables.checkpoints).consistent_read(true).send().await.expect("scan checkpoints");
    output
        .items()
        .iter()
        .filter(|i| matches!(i.get("id"), Some(AttributeValue::S(id)) if id.starts_with("bridge#")))
        .cloned()
        .collect()
}

pub async fn stop(bridge: &actix::Addr<Bridge>) {
    bridge.send(Shutdown).await.expect("the bridge takes Shutdown");
    let deadline = Instant::now() + Duration::from_secs(30);
    while bridge.connected() {
        assert!(Instant::now() < deadline, "the bridge did not stop within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Kinesis -------------------------------------------------------------------------------------------

/// kinesalite's endpoint, or `None` (with a line saying so) when it does not answer.
pub fn kinesalite() -> Option<String> {
    let endpoint = std::env::var("ORDERFLOW_TEST_KINESIS").unwrap_or_else(|_| "http://127.0.0.1:4567".to_owned());
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let reachable = address
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    if reachable {
        Some(endpoint)
    } else {
        eprintln!("SKIPPED: kinesalite is not reachable at {endpoint}; run scripts/services.sh start");
        None
    }
}

pub fn kinesis_settings(endpoint: &str, run: &str, shards: i32) -> KinesisSettings {
    KinesisSettings {
        endpoint_url: endpoint.to_owned(),
        stream: format!("test-{run}"),
        shards,
        create_stream: true,
        poll_interval_ms: 50,
    }
}

/// A stream of `shards` shards and the tables (checkpoints among them) of a fresh prefix.
pub async fn kinesis_setup(
    endpoint: &str,
    sdk: &aws_config::SdkConfig,
    run: &str,
    shards: i32,
) -> (KinesisSettings, aws_sdk_kinesis::Client, Arc<DynamoEventStore>, Tables) {
    let settings = kinesis_settings(endpoint, run, shards);
    let client = kinesis::client(&aws_settings(), &settings).await;
    kinesis::ensure_stream(&client, &settings).await.expect("create the stream");
    kinesis::ensure_stream(&client, &settings).await.expect("an existing stream is fine");
    let tables = Tables::new(&format!("t{run}"));
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let store =
        DynamoEventStore::open(dynamo, tables.clone(), &StoreSettings { snapshot_every: 0, ..store_settings() }, true)
            .await
            .expect("tables");
    (settings, client, store, tables)
}

pub fn kinesis_subscription(
    client: &aws_sdk_kinesis::Client,
    sdk: &aws_config::SdkConfig,
    tables: &Tables,
    settings: &KinesisSettings,
    projection: &'static str,
) -> KinesisSubscription {
    let checkpoints = orderflow::feed::shards::CheckpointTable {
        dynamo: aws_sdk_dynamodb::Client::new(sdk),
        table: tables.checkpoints.clone(),
    };
    KinesisSubscription::new(client.clone(), checkpoints, settings, projection)
}

/// Exactly `expected`, each once, and every order in version order.
pub fn assert_exactly_once_in_order(got: &[StoredEvent], expected: &[StoredEvent]) {
    assert_strict_order(got);
    let got_ids = ids(got);
    let distinct: HashSet<Uuid> = got_ids.iter().copied().collect();
    assert_eq!(distinct.len(), got_ids.len(), "no event delivered twice");
    assert_eq!(distinct, ids(expected).into_iter().collect::<HashSet<_>>(), "every event, nothing else");
}

pub async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let summary = client.describe_stream_summary().stream_name(stream).send().await.expect("describe");
        let status = summary.stream_description_summary().map(|d| d.stream_status().as_str().to_owned());
        if status.as_deref() == Some("ACTIVE") {
            return;
        }
        assert!(Instant::now() < deadline, "stream not ACTIVE within 30 s: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The open shards' ids and hash key ranges.
pub async fn open_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, u128, u128)> {
    let listed = client.list_shards().stream_name(stream).send().await.expect("list shards");
    listed
        .shards()
        .iter()
        .filter(|s| s.sequence_number_range().is_some_and(|r| r.ending_sequence_number().is_none()))
        .filter_map(|s| {
            let range = s.hash_key_range()?;
            Some((
                s.shard_id().to_owned(),
                range.starting_hash_key().parse().ok()?,
                range.ending_hash_key().parse().ok()?,
            ))
        })
        .collect()
}

/// Every record of every shard from TRIM_HORIZON, as an outside consumer would read the stream, per shard in
/// order. Shard id → (partition key, data).
pub async fn read_everything(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> HashMap<String, Vec<(String, Vec<u8>)>> {
    let mut out = HashMap::new();
    let listed = client.list_shards().stream_name(stream).send().await.expect("ListShards");
    for shard in listed.shards() {
        let id = shard.shard_id();
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator()
            .map(str::to_owned);
        let records: &mut Vec<(String, Vec<u8>)> = out.entry(id.to_owned()).or_default();
        while let Some(current) = iterator.take() {
            let page = client.get_records().shard_iterator(current).send().await.expect("GetRecords");
            for record in page.records() {
                records.push((record.partition_key().unwrap_or_default().to_owned(), record.data().as_ref().to_vec()));
            }
            // An open shard never ends: stop at the tip.
            if page.records().is_empty() {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    out
}
