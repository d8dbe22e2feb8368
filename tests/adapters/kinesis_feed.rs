//! The Kinesis side of the distributed feed against the real services: kinesalite at `ORDERFLOW_TEST_KINESIS`
//! (default `http://127.0.0.1:4567`), DynamoDB Local (checkpoints, and the event store the bridge reads) and,
//! for the fan-out test, the tansu broker. Each test uses its own stream and tables, and prints a `SKIPPED`
//! line instead of failing when a service is not reachable (`scripts/services.sh start` starts them all).
//!
//! - `Bridge` with both sinks: an outside Kinesis consumer reading every shard from TRIM_HORIZON finds every
//!   event, as a CloudEvent with partition key = orderId, in version order per order; Kafka gets them all too.
//! - `Bridge` with one sink failing (the stream missing): no Streams checkpoint is saved while Kafka already has
//!   the page; once the stream exists the page reaches Kinesis and only then is checkpointed.
//! - `KinesisSubscription` while the stream is split and then merged under a stream of events: nothing lost,
//!   reordered or doubled.
//! - `KinesisSubscription` resuming after its acked checkpoints: the un-acked batch again, nothing acked again;
//!   `seek(0)` replays everything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use orderflow::actors::bridge::Bridge;
use orderflow::aws::Tables;
use orderflow::config::{BridgeSettings, Transport};
use orderflow::domain::OrderId;
use orderflow::feed::cloudevents::CloudEvent;
use orderflow::feed::kafka::{self, KafkaSink};
use orderflow::feed::kinesis::{self, KinesisSink};
use orderflow::feed::{EventSink, FeedSubscription};
use orderflow::store::StoredEvent;
use orderflow::store::dynamo::DynamoEventStore;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{
    Seen, append_versions, assert_exactly_once_in_order, aws_settings, checkpoints, consume_until, distinct_ids, drain,
    dynamodb, ids, kafka_brokers, kafka_settings, kinesalite, kinesis_settings, kinesis_setup, kinesis_subscription,
    open_shards, order_n, outside_consumer, read_everything, stop, store_settings, stored, unique, wait_active,
};

// ---- the bridge, fanning out to Kafka and Kinesis ------------------------------------------------------

#[actix_web::test]
async fn bridge_fans_out_and_an_outside_kinesis_consumer_sees_every_event_as_a_cloudevent_in_order() {
    let Some(endpoint) = kinesalite() else { return };
    let Some(brokers) = kafka_brokers() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let (settings, client, store, tables) = kinesis_setup(&endpoint, &sdk, &run, 3).await;
    let kafka = kafka_settings(&brokers, &run);
    kafka::ensure_topic(&kafka).await.expect("create the topic");

    let orders: Vec<OrderId> = (0..6).map(|n| order_n(n, &run)).collect();
    let appended = append_versions(&*store, &orders, 1..=4).await;
    let sinks: Vec<Arc<dyn EventSink>> = vec![
        Arc::new(KafkaSink::new(kafka::producer(&kafka).expect("producer"), kafka.topic.clone())),
        Arc::new(KinesisSink::new(client.clone(), settings.stream.clone())),
    ];
    let bridge_settings = BridgeSettings {
        poll_interval_ms: 100,
        batch_size: 5,
        sinks: vec![Transport::Kafka, Transport::Kinesis],
        lease_period_ms: 10_000,
    };
    let bridge = Bridge::new(
        aws_sdk_dynamodbstreams::Client::new(&sdk),
        aws_sdk_dynamodb::Client::new(&sdk),
        tables.clone(),
        sinks,
        bridge_settings,
    )
    .start();

    // What a Lambda or a KCL consumer would do: every shard from TRIM_HORIZON.
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = read_everything(&client, &settings.stream).await;
        if records.values().map(Vec::len).sum::<usize>() >= appended.len() || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut seen_ids = HashSet::new();
    let mut shard_of: HashMap<String, String> = HashMap::new();
    for (shard, shard_records) in &records {
        let mut last: HashMap<String, u64> = HashMap::new();
        for (key, data) in shard_records {
            let json: Value = serde_json::from_slice(data).expect("the record is JSON");
            assert_eq!(json["specversion"], "1.0");
            assert_eq!(json["source"], "orderflow");
            assert_eq!(json["datacontenttype"], "application/json");
            assert!(json["type"].as_str().is_some_and(|t| t.starts_with("orders.")), "{json}");
            assert_eq!(json["subject"].as_str(), Some(key.as_str()), "partition key = orderId");
            let event = CloudEvent::decode(data).expect("an orderflow CloudEvent");
            let previous = last.insert(key.clone(), event.version).unwrap_or(0);
            assert!(event.version > previous, "order {key} went from {previous} to {} on {shard}", event.version);
            let first_shard = shard_of.entry(key.clone()).or_insert_with(|| shard.clone());
            assert_eq!(first_shard, shard, "one order stays on one shard");
            seen_ids.insert(event.event_id);
        }
    }
    let expected: HashSet<Uuid> = ids(&appended).into_iter().collect();
    assert_eq!(seen_ids, expected, "every event on the Kinesis stream");

    // And the same events on Kafka: both sinks got every page.
    let consumer = outside_consumer(&kafka.brokers, &kafka.topic);
    let mut seen: Vec<Seen> = Vec::new();
    consume_until(&consumer, &mut seen, Duration::from_secs(60), |s| distinct_ids(s).len() >= appended.len()).await;
    let kafka_ids: HashSet<Uuid> =
        distinct_ids(&seen).iter().filter_map(|id| Uuid::parse_str(id).ok()).collect::<HashSet<_>>();
    assert_eq!(kafka_ids, expected, "every event on the Kafka topic too");
    stop(&bridge).await;
}

#[actix_web::test]
async fn the_bridge_checkpoints_nothing_while_one_sink_fails_and_catches_up_once_it_works() {
    let Some(endpoint) = kinesalite() else { return };
    let Some(brokers) = kafka_brokers() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let settings = kinesis_settings(&endpoint, &run, 2);
    let client = kinesis::client(&aws_settings(), &settings).await;
    let tables = Tables::new(&format!("t{run}"));
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let store = DynamoEventStore::open(dynamo.clone(), tables.clone(), &store_settings(), true).await.expect("tables");
    let kafka = kafka_settings(&brokers, &run);
    kafka::ensure_topic(&kafka).await.expect("create the topic");

    // The Kinesis stream does not exist yet: every PutRecords fails (ResourceNotFoundException) while Kafka works.
    let orders: Vec<OrderId> = (0..3).map(|n| order_n(n, &run)).collect();
    let appended = append_versions(&*store, &orders, 1..=3).await;
    let sinks: Vec<Arc<dyn EventSink>> = vec![
        Arc::new(KafkaSink::new(kafka::producer(&kafka).expect("producer"), kafka.topic.clone())),
        Arc::new(KinesisSink::new(client.clone(), settings.stream.clone())),
    ];
    let bridge_settings = BridgeSettings {
        poll_interval_ms: 100,
        batch_size: 100,
        sinks: vec![Transport::Kafka, Transport::Kinesis],
        lease_period_ms: 10_000,
    };
    let bridge =
        Bridge::new(aws_sdk_dynamodbstreams::Client::new(&sdk), dynamo.clone(), tables.clone(), sinks, bridge_settings)
            .start();
    let consumer = outside_consumer(&kafka.brokers, &kafka.topic);
    let mut seen: Vec<Seen> = Vec::new();
    consume_until(&consumer, &mut seen, Duration::from_secs(60), |s| distinct_ids(s).len() >= appended.len()).await;
    assert_eq!(distinct_ids(&seen).len(), appended.len(), "Kafka got the page");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let saved = checkpoints(&dynamo, &tables).await;
    assert!(
        saved.iter().all(|item| !item.contains_key("sequenceNumber")),
        "no Streams checkpoint while the Kinesis sink fails: {saved:?}"
    );

    // Once the stream exists, the bridge publishes the same page again and only then checkpoints it.
    kinesis::ensure_stream(&client, &settings).await.expect("create the stream");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = read_everything(&client, &settings.stream).await;
        let on_kinesis: HashSet<Uuid> = records
            .values()
            .flatten()
            .filter_map(|(_, data)| CloudEvent::decode(data).ok())
            .map(|e| e.event_id)
            .collect();
        let saved = checkpoints(&dynamo, &tables).await;
        if on_kinesis == ids(&appended).into_iter().collect::<HashSet<_>>()
            && saved.iter().any(|item| item.contains_key("sequenceNumber"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the bridge did not catch up on Kinesis within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(&bridge).await;
}

// ---- the subscription ---------------------------------------------------------------------------------

#[actix_web::test]
async fn a_split_and_a_merge_during_a_stream_of_events_lose_reorder_and_double_nothing() {
    let Some(endpoint) = kinesalite() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let (settings, client, _store, tables) = kinesis_setup(&endpoint, &sdk, &run, 1).await;
    let sink = KinesisSink::new(client.clone(), settings.stream.clone());
    let orders: Vec<OrderId> = (0..16).map(|n| order_n(n, &run)).collect();
    let pages: Vec<Vec<StoredEvent>> =
        (1..=12).map(|version| orders.iter().map(|o| stored(o, version)).collect()).collect();
    let all: Vec<StoredEvent> = pages.iter().flatten().cloned().collect();

    // The reader starts once the split shard's parent and children all hold unread events (after the split,
    // before the merge), and reads small batches, so it must choose the order in which it finishes shards.
    let (published, mut watch_published) = tokio::sync::watch::channel(0usize);
    let publish = async {
        for (n, page) in pages.iter().enumerate() {
            sink.publish(page).await.expect("publish a page");
            published.send_replace(n + 1);
            if n == 3 {
                // Split the one shard in the middle of its hash range.
                wait_active(&client, &settings.stream).await;
                let shards = open_shards(&client, &settings.stream).await;
                let (id, start, end) = shards.first().cloned().expect("an open shard");
                let middle = start + (end - start) / 2;
                client
                    .split_shard()
                    .stream_name(&settings.stream)
                    .shard_to_split(id)
                    .new_starting_hash_key(middle.to_string())
                    .send()
                    .await
                    .expect("split the shard");
                wait_active(&client, &settings.stream).await;
            }
            if n == 7 {
                // Merge the two children back into one.
                wait_active(&client, &settings.stream).await;
                let mut shards = open_shards(&client, &settings.stream).await;
                shards.sort_by_key(|s| s.1);
                assert_eq!(shards.len(), 2, "the split made two open shards");
                client
                    .merge_shards()
                    .stream_name(&settings.stream)
                    .shard_to_merge(shards[0].0.clone())
                    .adjacent_shard_to_merge(shards[1].0.clone())
                    .send()
                    .await
                    .expect("merge the shards");
                wait_active(&client, &settings.stream).await;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let mut sub = kinesis_subscription(&client, &sdk, &tables, &settings, "revenue");
    let read = async {
        watch_published.wait_for(|n| *n >= 6).await.expect("the publisher goes on");
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut got = Vec::new();
        while got.len() < all.len() {
            assert!(Instant::now() < deadline, "only {} of {} events within 90 s", got.len(), all.len());
            let batch = sub.next_batch(6, Duration::from_millis(200)).await.expect("next_batch");
            sub.ack(&batch).await.expect("ack");
            got.extend(batch);
        }
        got
    };
    let ((), mut got) = tokio::join!(publish, read);
    let extra = sub.next_batch(1000, Duration::from_millis(500)).await.expect("next_batch");
    got.extend(extra);
    // 1 parent, 2 children of the split, 1 child of the merge.
    let listed = client.list_shards().stream_name(&settings.stream).send().await.expect("list shards");
    assert_eq!(listed.shards().len(), 4, "the stream was split and merged");
    assert_exactly_once_in_order(&got, &all);
}

#[actix_web::test]
async fn a_subscription_resumes_after_its_acked_checkpoints_and_replays_from_the_start() {
    let Some(endpoint) = kinesalite() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let (settings, client, _store, tables) = kinesis_setup(&endpoint, &sdk, &run, 2).await;
    let sink = KinesisSink::new(client.clone(), settings.stream.clone());
    let orders: Vec<OrderId> = (0..5).map(|n| order_n(n, &run)).collect();
    let all: Vec<StoredEvent> = (1..=6).flat_map(|version| orders.iter().map(move |o| stored(o, version))).collect();
    sink.publish(&all).await.expect("publish");
    // A foreign record on the stream is skipped, not fatal.
    client
        .put_record()
        .stream_name(&settings.stream)
        .partition_key("not-an-order")
        .data(aws_sdk_kinesis::primitives::Blob::new(b"not a CloudEvent".to_vec()))
        .send()
        .await
        .expect("put a foreign record");

    let mut first = kinesis_subscription(&client, &sdk, &tables, &settings, "search");
    let mut acked = Vec::new();
    while acked.len() < 10 {
        let batch = first.next_batch(4, Duration::from_millis(300)).await.expect("next_batch");
        assert!(first.checkpoint_after(&batch).is_none(), "Kinesis positions live in the checkpoints table");
        first.ack(&batch).await.expect("ack");
        acked.extend(batch);
    }
    let unacked = loop {
        let batch = first.next_batch(4, Duration::from_millis(300)).await.expect("next_batch");
        if !batch.is_empty() {
            break batch;
        }
    };
    let again = first.next_batch(4, Duration::from_millis(100)).await.expect("next_batch");
    assert_eq!(ids(&again), ids(&unacked), "an un-acked batch is handed out again as is");
    drop(first);

    // A restart: after the acked events, the un-acked batch first of its shards, everything else once.
    let mut second = kinesis_subscription(&client, &sdk, &tables, &settings, "search");
    let rest = drain(&mut second, all.len() - acked.len(), 4).await;
    let rest_ids: HashSet<Uuid> = ids(&rest).into_iter().collect();
    assert!(ids(&acked).iter().all(|id| !rest_ids.contains(id)), "nothing acked is read again");
    assert!(ids(&unacked).iter().all(|id| rest_ids.contains(id)), "the un-acked batch is read again");
    let mut together = acked.clone();
    together.extend(rest.iter().cloned());
    assert_exactly_once_in_order(&together, &all);
    // Per order, the events after the restart continue where the acked ones stopped.
    let mut high: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &acked {
        high.insert(e.order_id.as_str(), e.version);
    }
    for e in &rest {
        assert!(e.version > high.get(e.order_id.as_str()).copied().unwrap_or(0));
    }

    // Another projection has its own checkpoints: it reads everything.
    let mut other = kinesis_subscription(&client, &sdk, &tables, &settings, "revenue");
    assert_exactly_once_in_order(&drain(&mut other, all.len(), 50).await, &all);

    // A replay: everything again, and a restart during it goes on replaying (the reset is durable).
    second.seek(0).await.expect("seek to the start");
    drop(second);
    let mut third = kinesis_subscription(&client, &sdk, &tables, &settings, "search");
    assert_exactly_once_in_order(&drain(&mut third, all.len(), 50).await, &all);
}

#[actix_web::test]
async fn two_instances_with_leases_read_every_event_once_between_them() {
    let Some(endpoint) = kinesalite() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let (settings, client, _store, tables) = kinesis_setup(&endpoint, &sdk, &run, 4).await;
    let sink = KinesisSink::new(client.clone(), settings.stream.clone());
    let orders: Vec<OrderId> = (0..12).map(|n| order_n(n, &run)).collect();
    let all: Vec<StoredEvent> = (1..=3).flat_map(|version| orders.iter().map(move |o| stored(o, version))).collect();
    sink.publish(&all).await.expect("publish");
    let leases = |owner: &str| {
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        Arc::new(orderflow::lease::Leases::new(
            dynamo,
            tables.checkpoints.clone(),
            owner.to_owned(),
            Duration::from_secs(30),
        ))
    };
    let mut a = kinesis_subscription(&client, &sdk, &tables, &settings, "search").with_leases(leases("a"));
    let mut b = kinesis_subscription(&client, &sdk, &tables, &settings, "search").with_leases(leases("b"));
    // Both poll in turns: a shard is read only by the instance holding its lease (without leases, each would
    // read every shard and every event would arrive twice).
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got_a.len() + got_b.len() < all.len() {
        assert!(Instant::now() < deadline, "only {} of {} events", got_a.len() + got_b.len(), all.len());
        for (sub, got) in [(&mut a, &mut got_a), (&mut b, &mut got_b)] {
            let batch = sub.next_batch(5, Duration::from_millis(100)).await.expect("next_batch");
            sub.ack(&batch).await.expect("ack");
            got.extend(batch);
        }
    }
    for (sub, got) in [(&mut a, &mut got_a), (&mut b, &mut got_b)] {
        let extra = sub.next_batch(100, Duration::from_millis(300)).await.expect("next_batch");
        got.extend(extra);
    }
    let mut together = got_a.clone();
    together.extend(got_b.iter().cloned());
    assert_exactly_once_in_order(&together, &all);
}
