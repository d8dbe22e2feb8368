//! `FeedSubscription` conformance: one suite, run against every feed a projector can read — the embedded
//! profile's log tail (SQLite, a temp folder), Kafka (the tansu broker) and Kinesis Data Streams (kinesalite,
//! with its checkpoints in DynamoDB Local). A transport's own cases (its headers, foreign records, leases,
//! shard splits) stay in its file; what every feed promises a projector is here:
//!
//! 1. every event is delivered, each order's in version order;
//! 2. nothing moves before `ack`: an un-acked batch is handed out again, also to the next subscription opened
//!    after a restart;
//! 3. a subscription opened after an `ack` resumes after it, with nothing acked delivered again;
//! 4. events published later arrive too;
//! 5. `seek(0)` replays everything, in order.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use orderflow::feed::kafka::{self, KafkaSink, KafkaSubscription};
use orderflow::feed::kinesis::KinesisSink;
use orderflow::feed::tail::LogTail;
use orderflow::feed::{EventSink, FeedSubscription};
use orderflow::store::StoredEvent;
use orderflow::store::sqlite::SqliteEventStore;
use uuid::Uuid;

use crate::support::{
    append_versions, assert_exactly_once_in_order, dynamodb, ids, kafka_brokers, kafka_settings, kinesalite,
    kinesis_setup, kinesis_subscription, next_nonempty, order_n, store_settings, stored, unique,
};

/// One feed under test: how the application's write side puts events on it, and how a projector opens it.
#[async_trait(?Send)]
trait Feed {
    /// Puts new versions of `orders` on the feed as the application does (append to the log, or publish them
    /// through the bridge's sink), and returns them in feed order.
    async fn publish(
        &mut self,
        orders: &[orderflow::domain::OrderId],
        versions: std::ops::RangeInclusive<u64>,
    ) -> Vec<StoredEvent>;

    /// Opens a subscription as a projector does after a (re)start: `checkpoint` is what its view stored last
    /// (the log tail resumes from it; the brokers resume from their own commits and ignore it).
    async fn open(&mut self, checkpoint: u64) -> Box<dyn FeedSubscription>;
}

async fn conformance(mut feed: impl Feed, run: &str) {
    let orders: Vec<_> = (0..4).map(|n| order_n(n, run)).collect();
    let mut all = feed.publish(&orders, 1..=3).await;

    // 1 + 2: a first look, not acked; a restart gets the same events again.
    let mut first = feed.open(0).await;
    let unacked = next_nonempty(&mut *first, 5).await;
    assert!(unacked.len() <= 5, "a batch holds at most max events");
    let again = first.next_batch(5, std::time::Duration::from_millis(200)).await.expect("next_batch");
    assert_eq!(ids(&again), ids(&unacked), "an un-acked batch is handed out again as is");
    drop(first);
    let mut second = feed.open(0).await;
    let mut checkpoint = 0;
    let mut acked = Vec::new();
    while acked.len() < 6 {
        let batch = next_nonempty(&mut *second, 3).await;
        checkpoint = second.checkpoint_after(&batch).unwrap_or(checkpoint);
        second.ack(&batch).await.expect("ack");
        acked.extend(batch);
    }
    // (What `first` saw is not in `acked` or `rest`: it is delivered again below, or the last check fails.)
    let acked_ids: HashSet<Uuid> = ids(&acked).into_iter().collect();
    drop(second);

    // 3 + 4: after a restart, the rest once, then what is published meanwhile.
    all.extend(feed.publish(&orders, 4..=5).await);
    let mut third = feed.open(checkpoint).await;
    let rest = drain_acking(&mut *third, all.len() - acked.len()).await;
    assert!(ids(&rest).iter().all(|id| !acked_ids.contains(id)), "nothing acked is delivered again");
    let mut together = acked.clone();
    together.extend(rest);
    assert_exactly_once_in_order(&together, &all);
    for (got, sent) in together.iter().filter_map(|g| all.iter().find(|e| e.event_id == g.event_id).map(|s| (g, s))) {
        assert_eq!(
            (&got.order_id, got.version, &got.event, &got.traceparent),
            (&sent.order_id, sent.version, &sent.event, &sent.traceparent),
            "an event comes as it was written"
        );
    }

    // 5: a replay.
    third.seek(0).await.expect("seek(0)");
    let replayed = drain_acking(&mut *third, all.len()).await;
    assert_exactly_once_in_order(&replayed, &all);
}

/// Reads and acks until `want` events came, then looks a little longer for extra ones.
async fn drain_acking(sub: &mut dyn FeedSubscription, want: usize) -> Vec<StoredEvent> {
    crate::support::drain(sub, want, 4).await
}

// ---- the embedded log tail ----------------------------------------------------------------------------

struct Tail {
    _dir: tempfile::TempDir,
    store: Arc<SqliteEventStore>,
}

#[async_trait(?Send)]
impl Feed for Tail {
    async fn publish(
        &mut self,
        orders: &[orderflow::domain::OrderId],
        versions: std::ops::RangeInclusive<u64>,
    ) -> Vec<StoredEvent> {
        append_versions(&*self.store, orders, versions).await
    }

    async fn open(&mut self, checkpoint: u64) -> Box<dyn FeedSubscription> {
        Box::new(LogTail::new(Arc::clone(&self.store), checkpoint))
    }
}

#[actix_web::test]
async fn the_embedded_log_tail_is_a_feed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path(), &store_settings(), 2).expect("store");
    conformance(Tail { _dir: dir, store }, &unique()).await;
}

// ---- Kafka --------------------------------------------------------------------------------------------

/// Events published through the bridge's sink, read by a projector's subscription.
struct Broker<S> {
    sink: S,
    open: Box<dyn FnMut() -> Box<dyn FeedSubscription>>,
}

#[async_trait(?Send)]
impl<S: EventSink> Feed for Broker<S> {
    async fn publish(
        &mut self,
        orders: &[orderflow::domain::OrderId],
        versions: std::ops::RangeInclusive<u64>,
    ) -> Vec<StoredEvent> {
        // Interleaved, as a busy write model produces them.
        let events: Vec<StoredEvent> = versions.flat_map(|v| orders.iter().map(move |o| stored(o, v))).collect();
        self.sink.publish(&events).await.expect("publish");
        events
    }

    async fn open(&mut self, _checkpoint: u64) -> Box<dyn FeedSubscription> {
        (self.open)()
    }
}

#[actix_web::test]
async fn kafka_is_a_feed() {
    let Some(brokers) = kafka_brokers() else { return };
    let run = unique();
    let settings = kafka_settings(&brokers, &run);
    kafka::ensure_topic(&settings).await.expect("create the topic");
    let sink = KafkaSink::new(kafka::producer(&settings).expect("producer"), settings.topic.clone());
    let open = Box::new(move || {
        Box::new(KafkaSubscription::new(&settings, "search").expect("subscription")) as Box<dyn FeedSubscription>
    });
    conformance(Broker { sink, open }, &run).await;
}

// ---- Kinesis ------------------------------------------------------------------------------------------

#[actix_web::test]
async fn kinesis_is_a_feed() {
    let Some(endpoint) = kinesalite() else { return };
    let Some(sdk) = dynamodb().await else { return };
    let run = unique();
    let (settings, client, _store, tables) = kinesis_setup(&endpoint, &sdk, &run, 2).await;
    let sink = KinesisSink::new(client.clone(), settings.stream.clone());
    let open = Box::new(move || {
        Box::new(kinesis_subscription(&client, &sdk, &tables, &settings, "search")) as Box<dyn FeedSubscription>
    });
    conformance(Broker { sink, open }, &run).await;
}
