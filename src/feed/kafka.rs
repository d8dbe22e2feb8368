//! The Kafka side of the distributed feed (docs/api.md §3): topic creation, the producer the bridge publishes
//! with, and [`KafkaSubscription`], the [`FeedSubscription`] a projector reads through.
//!
//! Delivery guarantees:
//! - **Order.** Records are keyed by orderId and the producer partitions with `murmur2_random` (the Java
//!   client's partitioner), so one order's events land on one partition, in the order the bridge enqueued
//!   them; the idempotent producer keeps that order across its internal retries.
//! - **At-least-once, committed after the view.** The consumer never auto-commits. A batch stays held until
//!   the projector acks it (after the view write is durable, docs/design.md guarantee 4); only then are the batch's
//!   offsets committed, synchronously. A batch that was not acked is handed out again as is; a consumer that
//!   dies before committing leaves the batch to be read again by whoever gets the partition. Views dedupe, so
//!   redelivery changes nothing.
//! - **Replay.** `seek(0)` rewinds every assigned partition to the beginning of the topic.
//!
//! Committed offsets are never read through `Consumer::committed()` on the `StreamConsumer`: with this
//! rdkafka that call made the consumer's later drop hang (SERVICES.md). A restarted consumer simply resumes
//! from the group's committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use futures_util::FutureExt as _;
use futures_util::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::cloudevents::{CONTENT_TYPE, CloudEvent};
use super::{EventSink, FeedError, FeedHealth, FeedSubscription};
use crate::config::KafkaSettings;
use crate::store::StoredEvent;

/// How long admin operations and seeks may take before they count as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates the event topic with the configured partitions and replication; an existing topic is fine (its
/// partition count is left alone: changing it would move keys to other partitions and break per-order order).
pub async fn ensure_topic(settings: &KafkaSettings) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "orderflow-admin")
        .create()
        .context("Kafka admin client")?;
    let topic =
        NewTopic::new(&settings.topic, settings.partitions, TopicReplication::Fixed(settings.replication_factor));
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics([&topic], &options).await.context("CreateTopics")?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(
                topic = %name,
                partitions = settings.partitions,
                replication_factor = settings.replication_factor,
                "created Kafka topic"
            ),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "Kafka topic already exists");
            }
            Err((name, code)) => anyhow::bail!("cannot create Kafka topic {name}: {code}"),
        }
    }
    Ok(())
}

/// The producer the bridge publishes with: Java-compatible murmur2 partitioning (so an orderId lands on the
/// same partition as a Java producer would put it), idempotent (no duplicates or reordering from librdkafka's
/// own retries), acks from all in-sync replicas, a short linger to batch a GetRecords page into few requests.
pub fn producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "orderflow-bridge")
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // A delivery that cannot complete in 30 s fails back to the bridge, which publishes the same records
        // again from its checkpoint, rather than sitting in librdkafka's queue for the default 5 minutes.
        .set("message.timeout.ms", "30000")
        .create()
        .context("Kafka producer")
}

/// How long readiness's broker check waits for the metadata answer: well inside the 2 s a readiness check gets,
/// and far above a healthy broker's milliseconds.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Readiness check `feed` for Kafka (cached by [`super::FeedChecks`]): a metadata request for the event topic,
/// answered within [`HEALTH_TIMEOUT`], the topic present with its partitions.
pub struct KafkaHealth {
    producer: FutureProducer,
    topic: String,
}

impl KafkaHealth {
    pub fn new(producer: FutureProducer, topic: &str) -> Self {
        Self { producer, topic: topic.to_owned() }
    }
}

#[async_trait]
impl FeedHealth for KafkaHealth {
    /// One metadata request. librdkafka blocks its calling thread for it, so it runs on the blocking pool.
    async fn ping(&self) -> Result<(), FeedError> {
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), HEALTH_TIMEOUT)
                .map_err(|e| format!("Kafka broker metadata: {e}"))?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            match found {
                None => Err(format!("Kafka topic {topic} is missing")),
                Some(t) if t.error().is_some() => Err(format!("Kafka topic {topic}: {:?}", t.error())),
                Some(t) if t.partitions().is_empty() => Err(format!("Kafka topic {topic} has no partitions")),
                Some(_) => Ok(()),
            }
        })
        .await
        .map_err(|e| FeedError(format!("Kafka broker check: {e}")))?
        .map_err(FeedError)
    }
}

/// How long one enqueue may wait for room in librdkafka's queue before the page counts as failed.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kafka header that carries a record's W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The bridge's Kafka sink: each event keyed by orderId with the `content-type` header, every delivery awaited.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaSink {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    /// Hands one record to librdkafka, in order; when its queue is full, waits for room instead of letting a
    /// later record overtake this one.
    async fn enqueue(&self, key: &str, payload: &[u8], traceparent: Option<&str>) -> Result<DeliveryFuture, String> {
        let deadline = std::time::Instant::now() + ENQUEUE_TIMEOUT;
        loop {
            let mut headers = OwnedHeaders::new().insert(Header { key: "content-type", value: Some(CONTENT_TYPE) });
            if let Some(traceparent) = traceparent {
                // W3C Trace Context over Kafka: the command's trace, for consumers that continue it.
                headers = headers.insert(Header { key: TRACEPARENT, value: Some(traceparent) });
            }
            let record = FutureRecord::to(&self.topic).key(key).payload(payload).headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    }
}

#[async_trait]
impl EventSink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, events: &[StoredEvent]) -> Result<(), FeedError> {
        let mut deliveries = Vec::with_capacity(events.len());
        let mut failed = None;
        for event in events {
            let traceparent = event.traceparent.as_deref();
            match self.enqueue(event.order_id.as_ref(), &CloudEvent::encode(event), traceparent).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Await every enqueued one, even after a failure, so no delivery of this page is still in flight when
        // the same records are published again.
        for result in join_all(deliveries).await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failed.get_or_insert(e.to_string());
                }
                Err(_) => {
                    failed.get_or_insert_with(|| "the producer was dropped".to_owned());
                }
            }
        }
        match failed {
            Some(e) => Err(FeedError(format!("Kafka topic {}: {e}", self.topic))),
            None => Ok(()),
        }
    }
}

/// A batch handed to the projector and not yet acked.
struct HeldBatch {
    events: Vec<StoredEvent>,
    /// Highest offset seen per (topic, partition), undecodable records included, so acking moves past them.
    offsets: BTreeMap<(String, i32), i64>,
}

/// One projector's consumer: group `<group_prefix>.<projection>`, so each projection keeps its own offsets
/// and several instances of the service share a projection's partitions.
pub struct KafkaSubscription {
    /// `None` only while being dropped (see the `Drop` impl).
    consumer: Option<Arc<StreamConsumer>>,
    topic: String,
    group: String,
    held: Option<HeldBatch>,
    /// A replay in progress: the partitions already rewound. It ends once every assigned partition is in the
    /// set; until then (the group had not assigned any yet, a partition refused the seek) the rest are tried
    /// again before each read, without rewinding the finished ones a second time.
    rewinding: Option<BTreeSet<(String, i32)>>,
    /// The next offset this consumer committed, per partition: their sum is the position `/admin` shows.
    acked: BTreeMap<(String, i32), i64>,
}

impl KafkaSubscription {
    /// Subscribes to the topic; the group join happens on the first read.
    pub fn new(settings: &KafkaSettings, projection: &str) -> anyhow::Result<Self> {
        // rdkafka's StreamConsumer spawns its wake-up task on the current tokio runtime (and would panic
        // without one).
        tokio::runtime::Handle::try_current().context("a Kafka subscription must be created inside the runtime")?;
        let group = format!("{}.{}", settings.group_prefix, projection);
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &group)
            .set("client.id", format!("orderflow-{projection}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A group with no committed offset starts at the beginning: the feed is the views' only source.
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .create()
            .with_context(|| format!("Kafka consumer for group {group}"))?;
        consumer.subscribe(&[&settings.topic]).with_context(|| format!("subscribing to {}", settings.topic))?;
        Ok(Self {
            consumer: Some(Arc::new(consumer)),
            topic: settings.topic.clone(),
            group,
            held: None,
            rewinding: None,
            acked: BTreeMap::new(),
        })
    }

    fn consumer(&self) -> Result<Arc<StreamConsumer>, FeedError> {
        self.consumer.clone().ok_or_else(|| FeedError("Kafka consumer closed".into()))
    }

    /// Commits `offset + 1` for every partition of the batch. librdkafka's synchronous commit blocks its
    /// thread until the broker answers, so it runs on the blocking pool, not on the actor's thread.
    async fn commit(&self, offsets: &BTreeMap<(String, i32), i64>) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for ((topic, partition), offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))?;
        }
        // `Canceled` is rdkafka's "client dropped"; the consumer is only gone while this value is being dropped.
        let consumer = self.consumer.clone().ok_or(KafkaError::Canceled)?;
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }

    /// Goes on with a replay in progress (see `rewinding`); the replay ends once every assigned partition is
    /// rewound, and stays in progress on any error.
    async fn rewind(&mut self) -> Result<(), FeedError> {
        let Some(mut done) = self.rewinding.take() else { return Ok(()) };
        let result = self.rewind_rest(&mut done).await;
        match result {
            Ok(true) => {
                tracing::info!(group = %self.group, partitions = done.len(), "Kafka feed rewound to the beginning")
            }
            Ok(false) | Err(_) => self.rewinding = Some(done),
        }
        result.map(|_| ())
    }

    /// Seeks the assigned partitions not in `done` to the beginning. True when every assigned partition is done.
    async fn rewind_rest(&self, done: &mut BTreeSet<(String, i32)>) -> Result<bool, FeedError> {
        let consumer = self.consumer()?;
        let assignment = consumer.assignment().map_err(|e| FeedError(format!("Kafka assignment: {e}")))?;
        if assignment.count() == 0 {
            tracing::debug!(group = %self.group, "replay asked before the group assigned partitions; rewinding later");
            return Ok(false);
        }
        let mut todo = TopicPartitionList::new();
        for el in assignment.elements() {
            if !done.contains(&(el.topic().to_owned(), el.partition())) {
                todo.add_partition_offset(el.topic(), el.partition(), Offset::Beginning)
                    .map_err(|e| FeedError(format!("Kafka seek: {e}")))?;
            }
        }
        if todo.count() > 0 {
            let list = tokio::task::spawn_blocking(move || consumer.seek_partitions(todo, ADMIN_TIMEOUT))
                .await
                .map_err(|e| FeedError(format!("Kafka seek: {e}")))?
                .map_err(|e| FeedError(format!("Kafka seek: {e}")))?;
            for el in list.elements() {
                match el.error() {
                    Ok(()) => {
                        done.insert((el.topic().to_owned(), el.partition()));
                    }
                    Err(e) => tracing::warn!(
                        group = %self.group, topic = el.topic(), partition = el.partition(), error = %e,
                        "partition not rewound yet; retrying before the next read"
                    ),
                }
            }
        }
        Ok(assignment.elements().iter().all(|el| done.contains(&(el.topic().to_owned(), el.partition()))))
    }
}

/// True when a commit failed because this consumer no longer owns the partitions (a rebalance happened while
/// the batch was out). The batch was applied; whoever owns the partitions now reads it again from the last
/// commit, and the views dedupe it.
fn lost_ownership(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::AssignmentLost
        )
    )
}

/// The record's `traceparent` header, when it has a well-formed one.
fn traceparent(message: &BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    let value = headers.iter().find(|h| h.key == TRACEPARENT)?.value?;
    let value = std::str::from_utf8(value).ok()?;
    crate::trace::TraceParent::parse(value).map(|t| t.to_string())
}

/// Decodes one record into the batch; a record that is not an orderflow CloudEvent is logged and skipped,
/// but its offset still counts so acking moves past it (parking such records is for a later change).
fn take(message: &BorrowedMessage<'_>, events: &mut Vec<StoredEvent>, offsets: &mut BTreeMap<(String, i32), i64>) {
    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
    let slot = offsets.entry((topic.to_owned(), partition)).or_insert(offset);
    *slot = (*slot).max(offset);
    match message.payload().map(CloudEvent::decode) {
        Some(Ok(mut event)) => {
            // The header, as the CloudEvents Kafka binding puts it; the value's extension attribute otherwise.
            event.traceparent = traceparent(message).or(event.traceparent);
            events.push(event)
        }
        Some(Err(e)) => {
            tracing::error!(topic, partition, offset, error = %e, "Kafka record is not an orderflow event; skipped")
        }
        None => tracing::error!(topic, partition, offset, "Kafka record has no value; skipped"),
    }
}

#[async_trait]
impl FeedSubscription for KafkaSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<StoredEvent>, FeedError> {
        if let Some(held) = &self.held {
            // Not acked: the same events again, in the same order.
            return Ok(held.events.clone());
        }
        self.rewind().await?;
        let consumer = self.consumer()?;
        let mut events = Vec::new();
        let mut offsets = BTreeMap::new();
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Err(e)) => return Err(FeedError(format!("Kafka consumer {} on {}: {e}", self.group, self.topic))),
            Ok(Ok(message)) => take(&message, &mut events, &mut offsets),
        }
        let mut received = 1;
        // Then whatever librdkafka has already fetched, without waiting: a batch is what is there now.
        while received < max.max(1) {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => take(&message, &mut events, &mut offsets),
                Some(Err(e)) => {
                    tracing::warn!(group = %self.group, error = %e, "Kafka consumer error; returning the batch so far");
                    break;
                }
                None => break,
            }
            received += 1;
        }
        if events.is_empty() {
            // Only undecodable records: nothing for the view to apply, so move past them now.
            return match self.commit(&offsets).await {
                Ok(()) => Ok(Vec::new()),
                Err(e) if lost_ownership(&e) => Ok(Vec::new()),
                Err(e) => Err(FeedError(format!("Kafka commit for {}: {e}", self.group))),
            };
        }
        self.held = Some(HeldBatch { events: events.clone(), offsets });
        Ok(events)
    }

    fn checkpoint_after(&self, _batch: &[StoredEvent]) -> Option<u64> {
        // The position lives in the consumer group's committed offsets, not in the view.
        None
    }

    async fn ack(&mut self, _batch: &[StoredEvent]) -> Result<(), FeedError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        match self.commit(&held.offsets).await {
            Ok(()) => {
                for (partition, offset) in held.offsets {
                    self.acked.insert(partition, offset + 1);
                }
                Ok(())
            }
            Err(e) if lost_ownership(&e) => {
                tracing::warn!(
                    group = %self.group, error = %e,
                    "partitions moved during the batch; their new owner re-reads it"
                );
                Ok(())
            }
            Err(e) => {
                // Keep the batch: the projector retries, re-applies (a no-op for the view) and acks again.
                self.held = Some(held);
                Err(FeedError(format!("Kafka commit for {}: {e}", self.group)))
            }
        }
    }

    async fn seek(&mut self, position: u64) -> Result<(), FeedError> {
        if position != 0 {
            return Err(FeedError(format!(
                "the Kafka feed has no global position {position}; only a replay from the beginning (0) is possible"
            )));
        }
        self.held = None;
        self.acked.clear();
        self.rewinding = Some(BTreeSet::new());
        self.rewind().await
    }

    fn position(&self) -> Option<u64> {
        Some(self.acked.values().map(|offset| *offset as u64).sum())
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // Dropping a group consumer leaves the group and blocks until librdkafka has closed it: do that on the
        // blocking pool when there is a runtime, so an actor's thread is not held up.
        if let (Some(consumer), Ok(runtime)) = (self.consumer.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}
