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
//! Delivery guarantees of the subscription (the shard bookkeeping is `feed::shards`, shared with the bridge):
//! - **One reader per shard, parents first.** Each open shard is read from its checkpoint
//!   (`AFTER_SEQUENCE_NUMBER`) or, never read, from `TRIM_HORIZON`. After a split or merge, a child shard is read
//!   only once every parent is finished (closed and read to the end), so an order's events arrive in version
//!   order although its partition key moved to another shard.
//! - **Checkpoints after the view.** A batch stays held until the projector acks it (after the view write is
//!   durable); only then are the shards' new sequence numbers saved in the checkpoints table (one item per
//!   stream, projection and shard), as the Kafka path commits offsets. A restart resumes after them; the views
//!   dedupe the at most one batch read twice.
//! - **Expired iterators** (5 minutes) are renewed from the checkpoint.
//! - **One instance per shard.** With several instances ([`KinesisSubscription::with_leases`]), each shard is read,
//!   for a projection, only by the instance holding its lease ([`crate::lease`]); a shard whose holder died is
//!   taken over one lease period later, from its checkpoint.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;

use super::cloudevents::CloudEvent;
use super::shards::{Advance, CheckpointTable, Listed, Page, PageError, ShardStream, Shards};
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

/// The Kinesis calls a subscription reads a stream with (see [`ShardStream`]).
struct KinesisStream {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

/// A Kinesis record as the subscription sees it: the event it carries (`None`: not an orderflow event) and when
/// it arrived.
struct KinesisRecord {
    event: Option<StoredEvent>,
    arrival: Option<DateTime<Utc>>,
}

#[async_trait]
impl ShardStream for KinesisStream {
    type Record = KinesisRecord;

    async fn list(&self) -> Result<Vec<Listed>, String> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // With a NextToken the stream name must be left out.
            let request = match token.take() {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let output =
                request.send().await.map_err(|e| format!("ListShards {}: {}", self.stream, DisplayErrorContext(&e)))?;
            for shard in output.shards() {
                let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()].into_iter().flatten();
                listed.push(Listed { id: shard.shard_id().to_owned(), parents: parents.map(str::to_owned).collect() });
            }
            match output.next_token() {
                Some(next) if !output.shards().is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(listed)
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<Option<String>, String> {
        let request = self.client.get_shard_iterator().stream_name(&self.stream).shard_id(shard);
        let request = match after {
            Some(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(sequence)
            }
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let output =
            request.send().await.map_err(|e| format!("GetShardIterator on {shard}: {}", DisplayErrorContext(&e)))?;
        Ok(output.shard_iterator().map(str::to_owned))
    }

    async fn page(&self, shard: &str, iterator: &str, limit: i32) -> Result<Page<KinesisRecord>, PageError> {
        let output = match self.client.get_records().shard_iterator(iterator).limit(limit).send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_expired_iterator_exception()) => {
                return Err(PageError::Expired);
            }
            Err(e) => return Err(PageError::Failed(format!("GetRecords on {shard}: {}", DisplayErrorContext(&e)))),
        };
        let mut last_sequence: Option<String> = None;
        let mut records = Vec::with_capacity(output.records().len());
        for record in output.records() {
            let sequence = record.sequence_number();
            if last_sequence.as_deref().is_none_or(|c| compare_sequence(sequence, c) == Ordering::Greater) {
                last_sequence = Some(sequence.to_owned());
            }
            let event = match CloudEvent::decode(record.data().as_ref()) {
                Ok(event) => Some(event),
                // Counted in the checkpoint so the reader moves past it (parking foreign records is for later).
                Err(e) => {
                    tracing::error!(shard, sequence, error = %e, "Kinesis record is not an orderflow event; skipped");
                    None
                }
            };
            let arrival = record
                .approximate_arrival_timestamp()
                .and_then(|t| t.to_millis().ok())
                .and_then(DateTime::from_timestamp_millis);
            records.push(KinesisRecord { event, arrival });
        }
        // Real Kinesis also names the children at a shard's end (`ChildShards`); the shard list is read again
        // as soon as the shard is finished, which finds them on Kinesis and kinesalite alike.
        Ok(Page { records, last_sequence, next: output.next_shard_iterator().map(str::to_owned) })
    }
}

/// A batch handed to the projector and not yet acked.
struct HeldBatch {
    events: Vec<StoredEvent>,
    advances: BTreeMap<String, Advance>,
    newest_arrival: Option<DateTime<Utc>>,
}

/// One projection's reader of the stream: every readable shard read in each round (see `feed::shards`), its
/// checkpoints one item per (stream, projection, shard) in the checkpoints table, saved on ack.
pub struct KinesisSubscription {
    stream: KinesisStream,
    projection: &'static str,
    poll_interval: Duration,
    shards: Shards,
    held: Option<HeldBatch>,
}

impl KinesisSubscription {
    pub fn new(
        client: aws_sdk_kinesis::Client,
        checkpoints: CheckpointTable,
        settings: &KinesisSettings,
        projection: &'static str,
    ) -> Self {
        let checkpoints = CheckpointTable {
            dynamo: crate::aws::dynamo_client_with_timeouts(&checkpoints.dynamo),
            table: checkpoints.table,
        };
        let stream = settings.stream.clone();
        let key = {
            let stream = stream.clone();
            move |shard: &str| format!("kinesis#{stream}#{projection}#{shard}")
        };
        let reader = format!("kinesis {stream} for {projection}");
        Self {
            stream: KinesisStream { client, stream },
            projection,
            poll_interval: Duration::from_millis(settings.poll_interval_ms.max(1)),
            shards: Shards::new(checkpoints, key, DISCOVERY_INTERVAL, reader),
            held: None,
        }
    }

    /// Several instances: each shard is read, for this projection, only by the instance holding its lease.
    pub fn with_leases(mut self, leases: Arc<Leases>) -> Self {
        self.shards = self.shards.with_leases(Some(leases));
        self
    }

    async fn commit(&mut self, advances: &BTreeMap<String, Advance>) -> Result<(), FeedError> {
        self.shards.commit(advances).await.map_err(FeedError)
    }
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
            if self.shards.discovery_due() {
                let listed = self.stream.list().await.map_err(FeedError)?;
                self.shards.update(listed).await.map_err(FeedError)?;
            }
            let readable = self.shards.readable().await.map_err(FeedError)?;
            let limit = (max / readable.len().max(1)).clamp(1, 10_000) as i32;
            let reads = join_all(readable.iter().map(|id| self.shards.read(&self.stream, id, limit))).await;
            let mut events = Vec::new();
            let mut advances = BTreeMap::new();
            let mut newest_arrival: Option<DateTime<Utc>> = None;
            let mut moved = false;
            for (id, read) in readable.into_iter().zip(reads) {
                match read {
                    Err(e) => {
                        if e.rewind {
                            self.shards.rewind(&id);
                        }
                        return Err(FeedError(e.message));
                    }
                    Ok(None) => {
                        self.shards.rewind(&id);
                        moved = true;
                    }
                    Ok(Some(read)) => {
                        if read.records.is_empty() && !read.advance.finished {
                            // Nothing new: only the iterator moves; no checkpoint to wait for.
                            self.shards.keep_iterator(&id, read.advance.iterator);
                            continue;
                        }
                        moved = true;
                        for record in read.records {
                            newest_arrival = newest_arrival.max(record.arrival);
                            events.extend(record.event);
                        }
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
        if self.shards.discovery_due() {
            let listed = self.stream.list().await.map_err(FeedError)?;
            self.shards.update(listed).await.map_err(FeedError)?;
        }
        // Every shard back to the trim horizon, durably, so a restart during the replay goes on replaying.
        let shards = self.shards.rewind_all().await.map_err(FeedError)?;
        tracing::info!(stream = %self.stream.stream, projection = self.projection, shards, "Kinesis feed rewound");
        Ok(())
    }

    fn position(&self) -> Option<u64> {
        Some(self.shards.states().map(|s| s.records).sum())
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
