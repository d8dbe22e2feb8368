//! The Kinesis Data Streams side of the distributed feed, beside Kafka: stream creation, [`KinesisSink`] (the
//! bridge publishes through it) and [`KinesisSubscription`] (the [`FeedSubscription`] a projector reads through).
//! A record's data is the same CloudEvents JSON as the Kafka value (docs/api.md §3); its partition key is the orderId.
//!
//! Delivery guarantees of the sink:
//! - **Per-order order.** Kinesis keeps one partition key on one shard in put order, but a PutRecords call may
//!   fail some of its records and store the rest, so two events of one order in one call could end up in the
//!   wrong order (the earlier failed, the later stored). A call therefore carries at most one event per order:
//!   the order's earliest one not yet stored. Its next event goes in a later call, once this one is stored; a
//!   failed one is retried first. Calls hold at most 500 records and 5 MiB.
//! - **Throttling backs off.** `ProvisionedThroughputExceededException`, for the whole call or for records,
//!   waits with exponential backoff and jitter; after [`PUT_DEADLINE`] the page fails back to the bridge, which
//!   publishes it again from its checkpoint (duplicates, which consumers dedupe, never loss).
//!
//! Delivery guarantees of the subscription:
//! - **One reader per shard, parents first.** Each open shard is read from its checkpoint
//!   (`AFTER_SEQUENCE_NUMBER`) or, never read, from `TRIM_HORIZON`. After a split or merge, a child shard is read
//!   only once every parent is finished (closed and read to the end), so an order's events arrive in version
//!   order although its partition key moved to another shard.
//! - **Checkpoints after the view.** A batch stays held until the projector acks it (after the view write is
//!   durable); only then are the shards' new sequence numbers saved in the checkpoints table (one item per
//!   projection and shard), as the Kafka path commits offsets. A restart resumes after them; the views dedupe
//!   the at most one batch read twice.
//! - **Expired iterators** (5 minutes) are renewed from the checkpoint.
//! - **One instance per shard.** With several instances ([`KinesisSubscription::with_leases`]), each shard is read,
//!   for a projection, only by the instance holding its lease ([`crate::lease`], the same mechanism as the Streams
//!   bridge's); a shard whose holder died is taken over one lease period later, from its checkpoint.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;

use super::cloudevents::CloudEvent;
use super::{EventSink, FeedError, FeedHealth, FeedSubscription};
use crate::config::{AwsSettings, KinesisSettings};
use crate::lease::Leases;
use crate::store::StoredEvent;
use crate::telemetry::{self, BridgeSource};

/// PutRecords limits: 500 records and 5 MiB (data plus partition keys) per call.
const MAX_RECORDS_PER_PUT: usize = 500;
const MAX_BYTES_PER_PUT: usize = 5 * 1024 * 1024;
/// How long the sink keeps retrying a page's failed records before the page fails back to the bridge.
const PUT_DEADLINE: Duration = Duration::from_secs(60);
/// How often a reader lists the shards again to find children of splits and merges; also at once whenever a
/// shard finishes.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// How long `ensure_stream` waits for a new stream to become ACTIVE.
const ACTIVE_WAIT: Duration = Duration::from_secs(60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kinesis client: the shared AWS configuration with `[kinesis] endpoint_url` over `[aws] endpoint_url`
/// (kinesalite and DynamoDB Local are two servers), and attempt and operation timeouts so a hung call becomes
/// a retry, not a stalled bridge.
pub async fn client(aws: &AwsSettings, settings: &KinesisSettings) -> aws_sdk_kinesis::Client {
    let sdk = crate::aws::sdk_config(aws).await;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&sdk).timeout_config(
        aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build(),
    );
    if !settings.endpoint_url.is_empty() {
        builder = builder.endpoint_url(&settings.endpoint_url);
    }
    aws_sdk_kinesis::Client::from_conf(builder.build())
}

/// Creates the stream with `shards` shards when it is missing and waits until it is ACTIVE; an existing stream
/// keeps its shard count (resharding is an operator's decision: readers follow it).
pub async fn ensure_stream(client: &aws_sdk_kinesis::Client, settings: &KinesisSettings) -> anyhow::Result<()> {
    let stream = &settings.stream;
    match client.create_stream().stream_name(stream).shard_count(settings.shards).send().await {
        Ok(_) => tracing::info!(%stream, shards = settings.shards, "created Kinesis stream"),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
            tracing::debug!(%stream, "Kinesis stream already exists");
        }
        Err(e) => anyhow::bail!("CreateStream {stream}: {}", DisplayErrorContext(&e)),
    }
    let deadline = Instant::now() + ACTIVE_WAIT;
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .with_context(|| format!("DescribeStreamSummary {stream}"))?;
        let status = summary.stream_description_summary().map(|d| d.stream_status().clone());
        // UPDATING (a reshard in progress) still reads and writes.
        if matches!(status, Some(StreamStatus::Active | StreamStatus::Updating)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Kinesis stream {stream} is not ACTIVE after {ACTIVE_WAIT:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long readiness's Kinesis check waits for `DescribeStreamSummary`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Readiness check `feed` for Kinesis (cached by [`super::FeedChecks`]): the stream answers
/// `DescribeStreamSummary` within [`HEALTH_TIMEOUT`] and is ACTIVE (or UPDATING, which still reads and writes).
pub struct KinesisHealth {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

impl KinesisHealth {
    pub fn new(client: aws_sdk_kinesis::Client, stream: &str) -> Self {
        Self { client, stream: stream.to_owned() }
    }
}

#[async_trait]
impl FeedHealth for KinesisHealth {
    async fn ping(&self) -> Result<(), FeedError> {
        let stream = &self.stream;
        let call = self.client.describe_stream_summary().stream_name(stream).send();
        let summary = match tokio::time::timeout(HEALTH_TIMEOUT, call).await {
            Ok(Ok(summary)) => summary,
            Ok(Err(e)) => return Err(FeedError(format!("Kinesis stream {stream}: {}", DisplayErrorContext(&e)))),
            Err(_) => return Err(FeedError(format!("Kinesis stream {stream}: no answer within {HEALTH_TIMEOUT:?}"))),
        };
        match summary.stream_description_summary().map(|d| d.stream_status().clone()) {
            Some(StreamStatus::Active | StreamStatus::Updating) => Ok(()),
            status => Err(FeedError(format!("Kinesis stream {stream} is {status:?}"))),
        }
    }
}

/// Kinesis sequence numbers are decimal strings of up to 128 bits and more digits than any integer type
/// holds comfortably: the longer one is the later, and equal lengths compare as text.
pub fn compare_sequence(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------------------------------------
// The sink
// ---------------------------------------------------------------------------------------------------------

/// How one record of a PutRecords call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutResult {
    Stored,
    /// `ProvisionedThroughputExceededException` on this record: back off before retrying.
    Throttled,
    /// Any other per-record error (`InternalFailure`): retried at once.
    Failed(String),
}

/// Why a whole PutRecords call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCallError {
    Throttled(String),
    /// Anything else the SDK did not retry away: the page fails back to the bridge.
    Other(String),
}

/// One record to put: partition key and data.
#[derive(Debug, Clone)]
pub struct PutEntry {
    pub key: String,
    pub data: Vec<u8>,
}

/// The records of one page, and which are stored. [`PutPlan::next_call`] picks the next call's records.
#[derive(Debug)]
pub struct PutPlan {
    entries: Vec<PutEntry>,
    stored: Vec<bool>,
}

impl PutPlan {
    pub fn new(entries: Vec<PutEntry>) -> Self {
        let stored = vec![false; entries.len()];
        Self { entries, stored }
    }

    pub fn done(&self) -> bool {
        self.stored.iter().all(|s| *s)
    }

    /// Indexes of the next call's records, in page order: per partition key only its earliest record not yet
    /// stored (so no later record of an order can be stored while an earlier one fails), at most 500 records
    /// and 5 MiB. A key whose earliest pending record does not fit sends nothing more in this call.
    pub fn next_call(&self) -> Vec<usize> {
        let mut keys = HashSet::new();
        let mut picked = Vec::new();
        let mut bytes = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            if self.stored[i] || !keys.insert(entry.key.as_str()) {
                continue;
            }
            let size = entry.key.len() + entry.data.len();
            if picked.len() == MAX_RECORDS_PER_PUT || (bytes + size > MAX_BYTES_PER_PUT && !picked.is_empty()) {
                continue;
            }
            bytes += size;
            picked.push(i);
        }
        picked
    }

    pub fn entry(&self, index: usize) -> &PutEntry {
        &self.entries[index]
    }

    /// Marks the call's stored records; true when some record was throttled.
    fn record(&mut self, call: &[usize], results: &[PutResult]) -> (bool, Option<String>) {
        let mut throttled = false;
        let mut error = None;
        for (index, result) in call.iter().zip(results) {
            match result {
                PutResult::Stored => self.stored[*index] = true,
                PutResult::Throttled => throttled = true,
                PutResult::Failed(e) => {
                    error.get_or_insert_with(|| e.clone());
                }
            }
        }
        (throttled, error)
    }
}

/// Exponential backoff with jitter for throttling: 100 ms doubling, at most 5 s.
fn throttle_backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(base + rand::random_range(0..=base / 4))
}

/// Puts every record of the plan through `put` (one PutRecords call per invocation: records in, one result per
/// record out), retrying failed records in order and backing off on throttling, until all are stored or
/// `deadline` passes. Separate from the client so the throttling path is unit-tested (kinesalite never
/// throttles).
pub async fn put_all<F, Fut>(plan: &mut PutPlan, deadline: Duration, mut put: F) -> Result<(), String>
where
    F: FnMut(Vec<PutEntry>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<PutResult>, PutCallError>>,
{
    let until = Instant::now() + deadline;
    let mut throttles = 0u32;
    let mut last_error = String::new();
    while !plan.done() {
        if Instant::now() >= until {
            return Err(format!("records still not stored after {deadline:?}: {last_error}"));
        }
        let call = plan.next_call();
        let entries = call.iter().map(|i| plan.entry(*i).clone()).collect();
        match put(entries).await {
            Ok(results) => {
                if results.len() != call.len() {
                    return Err(format!("PutRecords answered {} results for {} records", results.len(), call.len()));
                }
                let (throttled, error) = plan.record(&call, &results);
                if throttled {
                    last_error = "ProvisionedThroughputExceededException".into();
                    throttles += 1;
                    tokio::time::sleep(throttle_backoff(throttles)).await;
                } else if let Some(e) = error {
                    // An internal failure of some records: retry them soon, in order.
                    last_error = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    throttles = 0;
                }
            }
            Err(PutCallError::Throttled(e)) => {
                last_error = e;
                throttles += 1;
                tokio::time::sleep(throttle_backoff(throttles)).await;
            }
            Err(PutCallError::Other(e)) => return Err(e),
        }
    }
    Ok(())
}

/// The bridge's Kinesis sink.
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream: String) -> Self {
        Self { client, stream }
    }

    async fn put(&self, entries: Vec<PutEntry>) -> Result<Vec<PutResult>, PutCallError> {
        let records = entries
            .into_iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .partition_key(e.key)
                    .data(Blob::new(e.data))
                    .build()
                    .map_err(|e| PutCallError::Other(format!("PutRecords entry: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output =
            self.client.put_records().stream_name(&self.stream).set_records(Some(records)).send().await.map_err(
                |e| {
                    let text = format!("PutRecords on {}: {}", self.stream, DisplayErrorContext(&e));
                    if e.as_service_error().is_some_and(|s| s.is_provisioned_throughput_exceeded_exception()) {
                        PutCallError::Throttled(text)
                    } else {
                        PutCallError::Other(text)
                    }
                },
            )?;
        Ok(output
            .records()
            .iter()
            .map(|r| match r.error_code() {
                None => PutResult::Stored,
                Some("ProvisionedThroughputExceededException") => PutResult::Throttled,
                Some(code) => PutResult::Failed(format!("{code}: {}", r.error_message().unwrap_or_default())),
            })
            .collect())
    }
}

#[async_trait]
impl EventSink for KinesisSink {
    fn name(&self) -> &'static str {
        "kinesis"
    }

    async fn publish(&self, events: &[StoredEvent]) -> Result<(), FeedError> {
        let entries =
            events.iter().map(|e| PutEntry { key: e.order_id.to_string(), data: CloudEvent::encode(e) }).collect();
        let mut plan = PutPlan::new(entries);
        put_all(&mut plan, PUT_DEADLINE, |entries| self.put(entries))
            .await
            .map_err(|e| FeedError(format!("Kinesis stream {}: {e}", self.stream)))
    }
}

// ---------------------------------------------------------------------------------------------------------
// The subscription
// ---------------------------------------------------------------------------------------------------------

/// What a projection's reader knows about one shard.
#[derive(Debug, Clone, Default)]
struct ShardReader {
    /// The parent and, after a merge, the adjacent parent.
    parents: Vec<String>,
    /// The last sequence number acked (durably saved); `None` = start at TRIM_HORIZON.
    checkpoint: Option<String>,
    /// Where the next GetRecords continues; `None` = a fresh one from the checkpoint.
    iterator: Option<String>,
    /// Closed and read to the end, acked.
    finished: bool,
    /// Records of the shard up to the checkpoint: their sum is the position `/admin` shows, like the sum of the
    /// committed offsets on Kafka.
    records: u64,
    /// This instance holds the shard's lease for this projection (always, without leases). On getting it (back)
    /// the checkpoint is read again: another instance may have moved it.
    held: bool,
}

/// How a read moves one shard's reader once its batch is acked.
#[derive(Debug, Clone)]
struct Advance {
    checkpoint: Option<String>,
    iterator: Option<String>,
    finished: bool,
    records: u64,
}

/// A batch handed to the projector and not yet acked.
struct HeldBatch {
    events: Vec<StoredEvent>,
    advances: BTreeMap<String, Advance>,
    newest_arrival: Option<DateTime<Utc>>,
}

/// Where a subscription keeps its checkpoints: one item per (stream, projection, shard) in the checkpoints table.
#[derive(Clone)]
pub struct CheckpointStore {
    pub dynamo: aws_sdk_dynamodb::Client,
    pub table: String,
}

/// One projection's reader of the stream: a reader state per shard, all read in each round.
pub struct KinesisSubscription {
    client: aws_sdk_kinesis::Client,
    checkpoints: CheckpointStore,
    stream: String,
    projection: &'static str,
    poll_interval: Duration,
    shards: BTreeMap<String, ShardReader>,
    next_discovery: Option<Instant>,
    held: Option<HeldBatch>,
    leases: Option<Arc<Leases>>,
}

impl KinesisSubscription {
    pub fn new(
        client: aws_sdk_kinesis::Client,
        checkpoints: CheckpointStore,
        settings: &KinesisSettings,
        projection: &'static str,
    ) -> Self {
        Self {
            client,
            checkpoints: CheckpointStore {
                dynamo: crate::aws::dynamo_client_with_timeouts(&checkpoints.dynamo),
                table: checkpoints.table,
            },
            stream: settings.stream.clone(),
            projection,
            poll_interval: Duration::from_millis(settings.poll_interval_ms.max(1)),
            shards: BTreeMap::new(),
            next_discovery: None,
            held: None,
            leases: None,
        }
    }

    /// Several instances: each shard is read, for this projection, only by the instance holding its lease.
    pub fn with_leases(mut self, leases: Arc<Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// The readable shards whose lease this instance holds (all of them without leases).
    async fn leased(&mut self, readable: Vec<String>) -> Result<Vec<String>, FeedError> {
        let Some(leases) = self.leases.clone() else { return Ok(readable) };
        let mut mine = Vec::new();
        for id in readable {
            let held = leases.hold(&self.checkpoint_id(&id)).await.map_err(|e| FeedError(e.to_string()))?;
            let was = self.shards.get(&id).is_some_and(|r| r.held);
            if held && !was {
                let (checkpoint, finished, records) = self.load_checkpoint(&id).await?;
                if let Some(reader) = self.shards.get_mut(&id) {
                    let parents = std::mem::take(&mut reader.parents);
                    *reader = ShardReader { parents, checkpoint, iterator: None, finished, records, held: true };
                }
            } else if !held
                && was
                && let Some(reader) = self.shards.get_mut(&id)
            {
                reader.held = false;
                reader.iterator = None;
            }
            if held && self.shards.get(&id).is_some_and(|r| !r.finished) {
                mine.push(id);
            }
        }
        Ok(mine)
    }

    fn checkpoint_id(&self, shard: &str) -> String {
        format!("kinesis#{}#{}#{shard}", self.stream, self.projection)
    }

    /// Lists the shards (all pages) and loads the checkpoints of new ones; a child is never added without its
    /// listed parents.
    async fn discover(&mut self) -> Result<(), FeedError> {
        let mut listed: Vec<(String, Vec<String>)> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // With a NextToken the stream name must be left out.
            let request = match token.take() {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let output = request
                .send()
                .await
                .map_err(|e| FeedError(format!("ListShards {}: {}", self.stream, DisplayErrorContext(&e))))?;
            for shard in output.shards() {
                let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned);
                listed.push((shard.shard_id().to_owned(), parents.collect()));
            }
            match output.next_token() {
                Some(next) if !output.shards().is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        let still: HashSet<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        self.shards.retain(|id, _| still.contains(id.as_str()));
        // Shards another instance reads: whether it finished them (their children wait for that).
        let others: Vec<String> =
            self.shards.iter().filter(|(_, r)| !r.held && !r.finished).map(|(id, _)| id.clone()).collect();
        for id in others {
            let finished = self.load_checkpoint(&id).await?.1;
            if let Some(reader) = self.shards.get_mut(&id) {
                reader.finished = finished;
            }
        }
        let mut found = Vec::new();
        for (id, parents) in listed {
            if self.shards.contains_key(&id) {
                continue;
            }
            let (checkpoint, finished, records) = self.load_checkpoint(&id).await?;
            let held = self.leases.is_none();
            found.push((id, ShardReader { parents, checkpoint, iterator: None, finished, records, held }));
        }
        for (id, reader) in found {
            tracing::debug!(
                stream = %self.stream, projection = self.projection, shard = %id,
                checkpoint = ?reader.checkpoint, finished = reader.finished, "Kinesis shard discovered"
            );
            self.shards.insert(id, reader);
        }
        self.next_discovery = Some(Instant::now() + DISCOVERY_INTERVAL);
        Ok(())
    }

    /// Shards that may be read now: not finished, and every listed parent finished.
    fn readable(&self) -> Vec<String> {
        self.shards
            .iter()
            .filter(|(_, reader)| {
                !reader.finished
                    && reader.parents.iter().all(|p| self.shards.get(p).is_none_or(|parent| parent.finished))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    async fn load_checkpoint(&self, shard: &str) -> Result<(Option<String>, bool, u64), FeedError> {
        let output = self
            .checkpoints
            .dynamo
            .get_item()
            .table_name(&self.checkpoints.table)
            .key("id", AttributeValue::S(self.checkpoint_id(shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                FeedError(format!("reading the Kinesis checkpoint of {shard}: {}", DisplayErrorContext(&e)))
            })?;
        let Some(item) = output.item() else { return Ok((None, false, 0)) };
        let sequence = match item.get("sequenceNumber") {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        };
        let records = match item.get("records") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        Ok((sequence, matches!(item.get("finished"), Some(AttributeValue::Bool(true))), records))
    }

    async fn save_checkpoint(&self, shard: &str, advance: &Advance) -> Result<(), FeedError> {
        let mut request = self
            .checkpoints
            .dynamo
            .put_item()
            .table_name(&self.checkpoints.table)
            .item("id", AttributeValue::S(self.checkpoint_id(shard)))
            .item("finished", AttributeValue::Bool(advance.finished))
            .item("records", AttributeValue::N(advance.records.to_string()))
            .item("updatedAt", AttributeValue::N(Utc::now().timestamp_millis().to_string()));
        if let Some(sequence) = &advance.checkpoint {
            request = request.item("sequenceNumber", AttributeValue::S(sequence.clone()));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| FeedError(format!("saving the Kinesis checkpoint of {shard}: {}", DisplayErrorContext(&e))))
    }

    /// Saves every advance that moves a checkpoint, then applies them all to the readers.
    async fn commit(&mut self, advances: &BTreeMap<String, Advance>) -> Result<(), FeedError> {
        let saves = advances.iter().filter(|(id, advance)| {
            self.shards.get(*id).is_none_or(|r| r.checkpoint != advance.checkpoint || r.finished != advance.finished)
        });
        let results = join_all(saves.map(|(id, advance)| self.save_checkpoint(id, advance))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        for (id, advance) in advances {
            if let Some(reader) = self.shards.get_mut(id) {
                reader.checkpoint = advance.checkpoint.clone();
                reader.iterator = advance.iterator.clone();
                reader.finished = advance.finished;
                reader.records = advance.records;
                if advance.finished {
                    tracing::info!(stream = %self.stream, projection = self.projection, shard = %id, "Kinesis shard finished");
                    // Its children may now be read.
                    self.next_discovery = None;
                }
            }
        }
        Ok(())
    }

    /// An iterator just after the checkpoint, or at the trim horizon for a shard never read; `None` when the
    /// shard is closed and nothing is left after the checkpoint.
    async fn fresh_iterator(&self, shard: &str, checkpoint: Option<&str>) -> Result<Option<String>, FeedError> {
        let request = self.client.get_shard_iterator().stream_name(&self.stream).shard_id(shard);
        let request = match checkpoint {
            Some(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(sequence)
            }
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let output = request
            .send()
            .await
            .map_err(|e| FeedError(format!("GetShardIterator on {shard}: {}", DisplayErrorContext(&e))))?;
        Ok(output.shard_iterator().map(str::to_owned))
    }

    /// One GetRecords of one shard: the events read, how the reader moves, the newest arrival time. `None` when
    /// the iterator had expired (the reader takes a fresh one from the checkpoint next round).
    async fn read_shard(&self, id: &str, limit: i32) -> Result<Option<ShardRead>, FeedError> {
        let Some(reader) = self.shards.get(id) else { return Ok(None) };
        let iterator = match &reader.iterator {
            Some(iterator) => iterator.clone(),
            None => match self.fresh_iterator(id, reader.checkpoint.as_deref()).await? {
                Some(iterator) => iterator,
                None => {
                    let advance = Advance {
                        checkpoint: reader.checkpoint.clone(),
                        iterator: None,
                        finished: true,
                        records: reader.records,
                    };
                    return Ok(Some(ShardRead { events: Vec::new(), advance, records: 0, newest_arrival: None }));
                }
            },
        };
        let output = match self.client.get_records().shard_iterator(&iterator).limit(limit).send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_expired_iterator_exception()) => {
                tracing::debug!(shard = %id, "Kinesis iterator expired; renewing from the checkpoint");
                return Ok(None);
            }
            Err(e) => return Err(FeedError(format!("GetRecords on {id}: {}", DisplayErrorContext(&e)))),
        };
        let mut events = Vec::with_capacity(output.records().len());
        let mut checkpoint = reader.checkpoint.clone();
        let mut newest_arrival = None;
        for record in output.records() {
            let sequence = record.sequence_number();
            if checkpoint.as_deref().is_none_or(|c| compare_sequence(sequence, c) == Ordering::Greater) {
                checkpoint = Some(sequence.to_owned());
            }
            newest_arrival = record
                .approximate_arrival_timestamp()
                .and_then(|t| t.to_millis().ok())
                .and_then(DateTime::from_timestamp_millis)
                .or(newest_arrival);
            match CloudEvent::decode(record.data().as_ref()) {
                Ok(event) => events.push(event),
                // Counted in the checkpoint so the reader moves past it (parking foreign records is for later).
                Err(e) => {
                    tracing::error!(shard = %id, sequence, error = %e, "Kinesis record is not an orderflow event; skipped")
                }
            }
        }
        let next = output.next_shard_iterator().map(str::to_owned);
        // Real Kinesis also names the children at a shard's end (`ChildShards`); the shard list is read again
        // as soon as the shard is finished, which finds them on Kinesis and kinesalite alike.
        let finished = next.is_none();
        let records = output.records().len();
        Ok(Some(ShardRead {
            events,
            advance: Advance { checkpoint, iterator: next, finished, records: reader.records + records as u64 },
            records,
            newest_arrival,
        }))
    }
}

/// The result of one shard's read.
struct ShardRead {
    events: Vec<StoredEvent>,
    advance: Advance,
    records: usize,
    newest_arrival: Option<DateTime<Utc>>,
}

#[async_trait]
impl FeedSubscription for KinesisSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<StoredEvent>, FeedError> {
        if let Some(held) = &self.held {
            // Not acked: the same events again, in the same order.
            return Ok(held.events.clone());
        }
        let until = Instant::now() + wait;
        loop {
            if self.next_discovery.is_none_or(|at| Instant::now() >= at) {
                self.discover().await?;
            }
            let readable = self.readable();
            let readable = self.leased(readable).await?;
            let limit = (max / readable.len().max(1)).clamp(1, 10_000) as i32;
            let reads = join_all(readable.iter().map(|id| self.read_shard(id, limit))).await;
            let mut events = Vec::new();
            let mut advances = BTreeMap::new();
            let mut newest_arrival: Option<DateTime<Utc>> = None;
            let mut moved = false;
            for (id, read) in readable.into_iter().zip(reads) {
                match read? {
                    None => {
                        if let Some(reader) = self.shards.get_mut(&id) {
                            reader.iterator = None;
                        }
                        moved = true;
                    }
                    Some(read) => {
                        if read.records == 0 && !read.advance.finished {
                            // Nothing new: only the iterator moves; no checkpoint to wait for.
                            if let Some(reader) = self.shards.get_mut(&id) {
                                reader.iterator = read.advance.iterator;
                            }
                            continue;
                        }
                        moved = true;
                        events.extend(read.events);
                        newest_arrival = newest_arrival.max(read.newest_arrival);
                        advances.insert(id, read.advance);
                    }
                }
            }
            if !events.is_empty() {
                self.held = Some(HeldBatch { events: events.clone(), advances, newest_arrival });
                return Ok(events);
            }
            if !advances.is_empty() {
                // Finished shards, or only foreign records: nothing for the view, so move past them now.
                self.commit(&advances).await?;
            }
            if moved {
                continue;
            }
            telemetry::bridge_lag(BridgeSource::Kinesis, Duration::ZERO);
            let now = Instant::now();
            if now >= until {
                return Ok(Vec::new());
            }
            tokio::time::sleep(self.poll_interval.min(until - now)).await;
        }
    }

    fn checkpoint_after(&self, _batch: &[StoredEvent]) -> Option<u64> {
        // The positions live in the checkpoints table, per shard, saved on ack.
        None
    }

    async fn ack(&mut self, _batch: &[StoredEvent]) -> Result<(), FeedError> {
        let Some(held) = self.held.take() else { return Ok(()) };
        if let Err(e) = self.commit(&held.advances).await {
            // Keep the batch: the projector retries, re-applies (a no-op for the view) and acks again.
            self.held = Some(held);
            return Err(e);
        }
        telemetry::bridge_records(BridgeSource::Kinesis, held.events.len() as u64);
        if let Some(arrival) = held.newest_arrival {
            telemetry::bridge_lag(BridgeSource::Kinesis, (Utc::now() - arrival).to_std().unwrap_or_default());
        }
        Ok(())
    }

    async fn seek(&mut self, position: u64) -> Result<(), FeedError> {
        if position != 0 {
            return Err(FeedError(format!(
                "the Kinesis feed has no global position {position}; only a replay from the beginning (0) is possible"
            )));
        }
        self.held = None;
        if self.next_discovery.is_none() {
            self.discover().await?;
        }
        // Every shard back to the trim horizon, durably, so a restart during the replay goes on replaying.
        let reset = Advance { checkpoint: None, iterator: None, finished: false, records: 0 };
        let ids: Vec<String> = self.shards.keys().cloned().collect();
        join_all(ids.iter().map(|id| self.save_checkpoint(id, &reset)))
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        let held = self.leases.is_none();
        for reader in self.shards.values_mut() {
            *reader = ShardReader { parents: std::mem::take(&mut reader.parents), held, ..ShardReader::default() };
        }
        tracing::info!(stream = %self.stream, projection = self.projection, shards = ids.len(), "Kinesis feed rewound");
        Ok(())
    }

    fn position(&self) -> Option<u64> {
        Some(self.shards.values().map(|r| r.records).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(keys: &[&str]) -> PutPlan {
        PutPlan::new(keys.iter().map(|k| PutEntry { key: (*k).to_owned(), data: vec![b'x'; 10] }).collect())
    }

    #[test]
    fn sequence_numbers_compare_by_length_then_text() {
        assert_eq!(compare_sequence("9", "10"), Ordering::Less);
        assert_eq!(
            compare_sequence("49590338271490256608559692538361571095921575989136588898", "9"),
            Ordering::Greater
        );
        assert_eq!(compare_sequence("123", "123"), Ordering::Equal);
        assert_eq!(compare_sequence("124", "123"), Ordering::Greater);
    }

    #[test]
    fn a_call_carries_one_record_per_order_in_page_order() {
        let mut p = plan(&["a", "b", "a", "c", "b", "a"]);
        assert_eq!(p.next_call(), vec![0, 1, 3]);
        // "b" failed, "a" and "c" stored: "a"'s second event may go, "b"'s first goes again before its second.
        p.record(&[0, 1, 3], &[PutResult::Stored, PutResult::Failed("InternalFailure".into()), PutResult::Stored]);
        assert_eq!(p.next_call(), vec![1, 2]);
        p.record(&[1, 2], &[PutResult::Stored, PutResult::Stored]);
        assert_eq!(p.next_call(), vec![4, 5]);
        p.record(&[4, 5], &[PutResult::Stored, PutResult::Stored]);
        assert!(p.done() && p.next_call().is_empty());
    }

    #[test]
    fn a_call_respects_the_record_and_byte_limits() {
        let keys: Vec<String> = (0..1200).map(|i| format!("o-{i}")).collect();
        let p = PutPlan::new(keys.iter().map(|k| PutEntry { key: k.clone(), data: vec![1; 10] }).collect());
        assert_eq!(p.next_call().len(), MAX_RECORDS_PER_PUT);
        // 20 records of 1 MiB: five fit in 5 MiB (with their keys, four).
        let big =
            PutPlan::new((0..20).map(|i| PutEntry { key: format!("k{i}"), data: vec![1; 1024 * 1024] }).collect());
        let call = big.next_call();
        assert_eq!(call, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn throttling_backs_off_and_nothing_overtakes_a_throttled_record() {
        let mut p = plan(&["a", "b", "a", "b"]);
        let mut calls: Vec<Vec<String>> = Vec::new();
        let mut stored: Vec<String> = Vec::new();
        let started = Instant::now();
        let result = put_all(&mut p, Duration::from_secs(60), |entries| {
            let n = calls.len();
            calls.push(entries.iter().map(|e| e.key.clone()).collect());
            let results: Result<Vec<PutResult>, PutCallError> = match n {
                // The whole call throttled, then "a" throttled alone, then everything goes.
                0 => Err(PutCallError::Throttled("ProvisionedThroughputExceededException".into())),
                1 => Ok(vec![PutResult::Throttled, PutResult::Stored]),
                _ => Ok(entries.iter().map(|_| PutResult::Stored).collect()),
            };
            if let Ok(results) = &results {
                for (e, r) in entries.iter().zip(results) {
                    if *r == PutResult::Stored {
                        stored.push(e.key.clone());
                    }
                }
            }
            std::future::ready(results)
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls, vec![vec!["a", "b"], vec!["a", "b"], vec!["a", "b"], vec!["a"]]);
        // "b" (index 1) stored in call 1, then "a" first and "b"'s second; "a"'s second last.
        assert_eq!(stored, vec!["b", "a", "b", "a"]);
        // Two backoffs of at least 200 ms and 400 ms.
        assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn endless_throttling_fails_the_page_after_the_deadline() {
        let mut p = plan(&["a"]);
        let result = put_all(&mut p, Duration::from_secs(1), |_| {
            std::future::ready(Err(PutCallError::Throttled("ProvisionedThroughputExceededException".into())))
        })
        .await;
        assert!(result.is_err_and(|e| e.contains("ProvisionedThroughputExceeded")));
        let other = put_all(&mut plan(&["a"]), Duration::from_secs(5), |_| {
            std::future::ready(Err(PutCallError::Other("AccessDenied".into())))
        })
        .await;
        assert_eq!(other, Err("AccessDenied".to_owned()));
    }
}
