//! The Kafka side of the distributed feed against the real services: the tansu broker at
//! `ORDERFLOW_TEST_KAFKA` (default `127.0.0.1:9092`) and DynamoDB Local at `ORDERFLOW_TEST_DYNAMODB` (default
//! `http://127.0.0.1:8000`). Each test uses its own topic, consumer groups and tables, and prints a `SKIPPED`
//! line instead of failing when a service is not reachable (`scripts/services.sh start` starts both).
//!
//! - `KafkaSubscription`: per-order order, nothing committed before `ack`, an un-acked batch handed out again,
//!   a new consumer in the group resuming after the commit, `seek(0)` replaying the whole topic.
//! - `Bridge`: events appended to the DynamoDB event store reach the topic as an outside consumer sees them
//!   (CloudEvents, key = orderId, `content-type` header, version order per order), and a bridge restarted
//!   mid-stream resumes from its checkpoints: nothing lost, and not everything published twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use orderflow::actors::bridge::Bridge;
use orderflow::aws::Tables;
use orderflow::config::{BridgeSettings, KafkaSettings, StoreSettings, Synchronous, Transport};
use orderflow::domain::OrderId;
use orderflow::feed::cloudevents::{CONTENT_TYPE, CloudEvent};
use orderflow::feed::kafka::{self, KafkaSink, KafkaSubscription};
use orderflow::feed::{EventSink, FeedSubscription};
use orderflow::store::StoredEvent;
use orderflow::store::dynamo::DynamoEventStore;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use uuid::Uuid;

use crate::support::{
    append_versions, assert_strict_order, checkpoints, consume_until, distinct_ids, drain, dynamodb, ids,
    kafka_brokers, kafka_settings, next_nonempty, order_n, outside_consumer, stop, stored, unique,
};

// ---- KafkaSubscription --------------------------------------------------------------------------------

#[actix_web::test]
async fn kafka_subscription_orders_redelivers_until_acked_resumes_after_commit_and_replays() {
    let Some(brokers) = kafka_brokers() else { return };
    let run = unique();
    let settings = kafka_settings(&brokers, &run);
    kafka::ensure_topic(&settings).await.expect("create the topic");
    kafka::ensure_topic(&settings).await.expect("an existing topic is fine");

    // 4 orders × 4 versions, interleaved as a busy write model would produce them, and one foreign record.
    let orders: Vec<OrderId> = (0..4).map(|n| order_n(n, &run)).collect();
    let events: Vec<StoredEvent> = (1..=4).flat_map(|version| orders.iter().map(move |o| stored(o, version))).collect();
    let producer = kafka::producer(&settings).expect("producer");
    let garbage = FutureRecord::to(&settings.topic).key("not-an-order").payload("not a CloudEvent");
    producer.send(garbage, Duration::from_secs(10)).await.expect("produce a foreign record");
    for event in &events {
        let payload = CloudEvent::encode(event);
        let headers = OwnedHeaders::new()
            .insert(Header { key: "content-type", value: Some(CONTENT_TYPE) })
            .insert(Header { key: "traceparent", value: event.traceparent.as_deref() });
        let record = FutureRecord::to(&settings.topic).key(event.order_id.as_str()).payload(&payload).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.expect("produce");
    }
    let all: HashSet<Uuid> = ids(&events).into_iter().collect();

    // A consumer that goes away without acking commits nothing: its batch goes to the next one.
    let mut sub0 = KafkaSubscription::new(&settings, "search").expect("subscription");
    let unacked = next_nonempty(&mut sub0, 3).await;
    drop(sub0);

    let mut sub1 = KafkaSubscription::new(&settings, "search").expect("subscription");
    let first = next_nonempty(&mut sub1, 3).await;
    assert!(first.len() <= 3, "a batch holds at most max events");
    for event in &first {
        let sent = events.iter().find(|e| e.event_id == event.event_id).expect("a sent event");
        assert_eq!(event.traceparent, sent.traceparent, "the traceparent header comes back with the event");
    }
    // Not acked: the same batch again, however long we wait.
    let again = sub1.next_batch(3, Duration::from_millis(200)).await.expect("next_batch");
    assert_eq!(ids(&again), ids(&first), "an un-acked batch is delivered again as is");
    assert_eq!(sub1.checkpoint_after(&first), None, "Kafka keeps the position, not the view");
    sub1.ack(&first).await.expect("ack");
    drop(sub1);

    // A new consumer in the same group resumes after the commit: nothing of `first` again, all the rest.
    let mut sub2 = KafkaSubscription::new(&settings, "search").expect("subscription");
    let rest = drain(&mut sub2, events.len() - first.len(), 5).await;
    let first_ids: HashSet<Uuid> = ids(&first).into_iter().collect();
    assert!(rest.iter().all(|e| !first_ids.contains(&e.event_id)), "an acked batch was delivered again");
    let mut seen: Vec<StoredEvent> = first.clone();
    seen.extend(rest.iter().cloned());
    assert_eq!(seen.len(), events.len(), "each event exactly once across the commit");
    assert_eq!(ids(&seen).into_iter().collect::<HashSet<_>>(), all);
    assert!(unacked.iter().all(|e| all.contains(&e.event_id)));
    assert_strict_order(&seen);
    for (got, sent) in seen.iter().filter_map(|g| events.iter().find(|e| e.event_id == g.event_id).map(|s| (g, s))) {
        assert_eq!((got.version, &got.order_id, &got.event), (sent.version, &sent.order_id, &sent.event));
    }

    // Replay: the whole topic again, in order.
    sub2.seek(0).await.expect("seek(0)");
    let replayed = drain(&mut sub2, events.len(), 5).await;
    assert_eq!(replayed.len(), events.len(), "a replay delivers every event once");
    assert_eq!(ids(&replayed).into_iter().collect::<HashSet<_>>(), all);
    assert_strict_order(&replayed);
    assert!(sub2.seek(7).await.is_err(), "Kafka has no global position to seek to");
    drop(sub2);

    // A replay asked before the group has assigned anything (a projector told to replay right after a
    // restart) still starts from the beginning, though every offset is committed.
    let mut sub3 = KafkaSubscription::new(&settings, "search").expect("subscription");
    sub3.seek(0).await.expect("seek(0) before the group join");
    let replayed = drain(&mut sub3, events.len(), 5).await;
    assert_eq!(ids(&replayed).into_iter().collect::<HashSet<_>>(), all);
}

// ---- Bridge -------------------------------------------------------------------------------------------

#[actix_web::test]
async fn bridge_publishes_every_event_as_a_cloudevent_in_order_and_resumes_from_its_checkpoints() {
    let Some(brokers) = kafka_brokers() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let prometheus = orderflow::telemetry::prometheus();
    let run = unique();
    let tables = Tables::new(&format!("t{run}"));
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let store_settings = StoreSettings {
        snapshot_every: 0,
        max_batch: 64,
        queue_capacity: 1024,
        idempotency_ttl_hours: 24,
        synchronous: Synchronous::Normal,
    };
    let store = DynamoEventStore::open(dynamo.clone(), tables.clone(), &store_settings, true)
        .await
        .expect("the event store and its tables (events with a stream, checkpoints)");
    let kafka = kafka_settings(&brokers, &run);
    kafka::ensure_topic(&kafka).await.expect("create the topic");
    // Small pages, so the first bridge is stopped between checkpoints of one shard.
    let bridge_settings =
        BridgeSettings { poll_interval_ms: 100, batch_size: 3, sinks: vec![Transport::Kafka], lease_period_ms: 10_000 };
    let start_bridge = || {
        let producer = kafka::producer(&kafka).expect("producer");
        let sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(KafkaSink::new(producer, kafka.topic.clone()))];
        Bridge::new(streams.clone(), dynamo.clone(), tables.clone(), sinks, bridge_settings.clone()).start()
    };

    let orders: Vec<OrderId> = (0..5).map(|n| order_n(n, &run)).collect();
    let mut appended = append_versions(&*store, &orders, 1..=6).await;
    let consumer = outside_consumer(&brokers, &kafka.topic);
    let mut seen = Vec::new();

    // Stop the first bridge as soon as it has saved its first checkpoint: mid-stream, pages still to go.
    let bridge = start_bridge();
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoints(&dynamo, &tables).await.is_empty() {
        assert!(Instant::now() < deadline, "the bridge saved no checkpoint within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(&bridge).await;
    consume_until(&consumer, &mut seen, Duration::from_secs(60), |s| !s.is_empty()).await;
    consume_until(&consumer, &mut seen, Duration::from_secs(2), |_| false).await;
    let before_restart = distinct_ids(&seen).len();
    assert!(before_restart > 0, "the first bridge published nothing");

    // Written while no bridge runs; the next one must pick them up after its checkpoints.
    appended.extend(append_versions(&*store, &orders, 7..=10).await);
    let expected: HashMap<String, &StoredEvent> = appended.iter().map(|e| (e.event_id.to_string(), e)).collect();
    let bridge = start_bridge();
    consume_until(&consumer, &mut seen, Duration::from_secs(90), |s| distinct_ids(s).len() >= expected.len()).await;
    // Give any duplicates a moment to show up before counting them.
    consume_until(&consumer, &mut seen, Duration::from_secs(2), |_| false).await;
    stop(&bridge).await;

    assert_eq!(
        distinct_ids(&seen),
        expected.keys().cloned().collect::<HashSet<_>>(),
        "every event arrives, nothing else"
    );
    println!(
        "bridge: {} events; {before_restart} published before the restart (of 30 then written); \
         {} records on the topic in all",
        expected.len(),
        seen.len()
    );
    assert!(seen.len() < 2 * expected.len(), "a restarted bridge republished everything: {} records", seen.len());

    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in &seen {
        let v = &record.value;
        let id = v["id"].as_str().expect("id");
        let event = expected.get(id).expect("a known event");
        let order = event.order_id.as_str();
        assert_eq!(record.key.as_deref(), Some(order), "key = orderId");
        assert_eq!(record.content_type.as_deref(), Some("application/cloudevents+json"));
        assert_eq!(record.traceparent, event.traceparent, "the command's trace travels as a Kafka header");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["source"], "orderflow");
        assert_eq!(v["type"], format!("orders.{}", event.event.type_name()));
        assert_eq!(v["subject"], order);
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["sequence"], event.version.to_string());
        let time = v["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        assert_eq!(time.map(|t| t.with_timezone(&Utc)), Some(event.occurred_at()), "time is when it happened");
        assert!(v["data"].is_object(), "data holds the event's fields");
        let decoded = CloudEvent::decode(v.to_string().as_bytes()).expect("decodes as an orderflow event");
        assert_eq!((&decoded.event, decoded.version), (&event.event, event.version));
        versions.entry(order.to_owned()).or_default().push(event.version);
    }
    // Version order per order: duplicates (a page published again) may repeat versions already seen, but each
    // version first arrives after all lower ones.
    for (order, got) in &versions {
        let mut firsts = Vec::new();
        for v in got {
            if !firsts.contains(v) {
                firsts.push(*v);
            }
        }
        assert_eq!(firsts, (1..=10).collect::<Vec<u64>>(), "order {order} arrived as {got:?}");
    }

    // The checkpoints the second bridge resumed from are in the checkpoints table.
    let saved = checkpoints(&dynamo, &tables).await;
    assert!(!saved.is_empty(), "no shard checkpoint saved");
    assert!(saved.iter().all(|i| matches!(i.get("sequenceNumber"), Some(AttributeValue::S(_)))));

    let metrics = prometheus.render();
    assert!(
        metrics.contains(r#"orderflow_bridge_records_total{source="dynamodb-streams"}"#),
        "bridge records metric missing:\n{metrics}"
    );
    assert!(metrics.contains(r#"orderflow_bridge_lag_seconds{source="dynamodb-streams"}"#));
}

/// A page whose deliveries fail is not checkpointed but published again, so nothing is lost. The broker here
/// is librdkafka's in-process mock cluster, which can fail produce requests on demand (tansu cannot); the
/// write model is the real DynamoDB Local.
#[actix_web::test]
async fn bridge_publishes_a_page_again_when_its_delivery_failed() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let tables = Tables::new(&format!("t{run}"));
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let store_settings = StoreSettings {
        snapshot_every: 0,
        max_batch: 64,
        queue_capacity: 1024,
        idempotency_ttl_hours: 24,
        synchronous: Synchronous::Normal,
    };
    let store = DynamoEventStore::open(dynamo.clone(), tables.clone(), &store_settings, true).await.expect("store");
    let mock = MockCluster::new(1).expect("mock cluster");
    let kafka = KafkaSettings { brokers: mock.bootstrap_servers(), ..kafka_settings("unused", &run) };
    mock.create_topic(&kafka.topic, 2, 1).expect("mock topic");
    // The first produce requests are refused for good (not a retriable error): those deliveries fail.
    let refused = RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
    mock.request_errors(RDKafkaApiKey::Produce, &[refused, refused]);

    let orders: Vec<OrderId> = (0..3).map(|n| order_n(n, &run)).collect();
    let appended = append_versions(&*store, &orders, 1..=3).await;
    let producer = kafka::producer(&kafka).expect("producer");
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let settings =
        BridgeSettings { poll_interval_ms: 50, batch_size: 4, sinks: vec![Transport::Kafka], lease_period_ms: 10_000 };
    let sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(KafkaSink::new(producer, kafka.topic.clone()))];
    let bridge = Bridge::new(streams, dynamo, tables, sinks, settings).start();

    let consumer = outside_consumer(&kafka.brokers, &kafka.topic);
    let mut seen = Vec::new();
    consume_until(&consumer, &mut seen, Duration::from_secs(60), |s| distinct_ids(s).len() >= appended.len()).await;
    stop(&bridge).await;
    let expected: HashSet<String> = appended.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(distinct_ids(&seen), expected, "every event arrives despite the refused deliveries");
    let mut firsts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in &seen {
        let version: u64 = record.value["sequence"].as_str().and_then(|s| s.parse().ok()).expect("sequence");
        let order = firsts.entry(record.key.clone().unwrap_or_default()).or_default();
        if !order.contains(&version) {
            order.push(version);
        }
    }
    for (order, versions) in firsts {
        assert_eq!(versions, vec![1, 2, 3], "order {order} first arrived as {versions:?}");
    }
}

#[actix_web::test]
async fn two_bridges_with_leases_publish_each_shard_once_and_one_takes_over_when_the_other_stops() {
    let Some(brokers) = kafka_brokers() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let tables = Tables::new(&format!("t{run}"));
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let store_settings = StoreSettings {
        snapshot_every: 0,
        max_batch: 64,
        queue_capacity: 1024,
        idempotency_ttl_hours: 24,
        synchronous: Synchronous::Normal,
    };
    let store = DynamoEventStore::open(dynamo.clone(), tables.clone(), &store_settings, true).await.expect("store");
    let kafka = kafka_settings(&brokers, &run);
    kafka::ensure_topic(&kafka).await.expect("create the topic");
    // Long enough that a bridge slowed down by a busy machine still renews in time (a takeover is legitimate
    // once a holder falls silent for a whole period, and would republish its unsaved pages).
    let period = Duration::from_secs(5);
    let settings =
        BridgeSettings { poll_interval_ms: 50, batch_size: 100, sinks: vec![Transport::Kafka], lease_period_ms: 5_000 };
    let start = |owner: &str| {
        let producer = kafka::producer(&kafka).expect("producer");
        let sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(KafkaSink::new(producer, kafka.topic.clone()))];
        let leases =
            orderflow::lease::Leases::new(dynamo.clone(), tables.checkpoints.clone(), owner.to_owned(), period);
        Bridge::new(streams.clone(), dynamo.clone(), tables.clone(), sinks, settings.clone())
            .with_leases(Arc::new(leases))
            .start()
    };
    let orders: Vec<OrderId> = (0..4).map(|n| order_n(n, &run)).collect();
    let mut appended = append_versions(&*store, &orders, 1..=3).await;
    let (a, b) = (start("a"), start("b"));
    let consumer = outside_consumer(&brokers, &kafka.topic);
    let mut seen = Vec::new();
    consume_until(&consumer, &mut seen, Duration::from_secs(60), |s| distinct_ids(s).len() >= appended.len()).await;
    consume_until(&consumer, &mut seen, Duration::from_secs(2), |_| false).await;
    assert_eq!(seen.len(), appended.len(), "two bridges, one lease per shard: every record once");

    // Whichever holds the shard stops (without handing its lease back); the other takes over after a period.
    stop(&a).await;
    stop(&b).await;
    let survivor = start("b");
    appended.extend(append_versions(&*store, &orders, 4..=5).await);
    let expected: HashSet<String> = appended.iter().map(|e| e.event_id.to_string()).collect();
    consume_until(&consumer, &mut seen, Duration::from_secs(60), |s| distinct_ids(s) == expected).await;
    stop(&survivor).await;
    assert_eq!(distinct_ids(&seen), expected, "the survivor publishes what was written after the stop");
}
