//! `Bridge`: forwards the write model's change feed to the public event feed. It reads the DynamoDB Streams
//! stream of the events table and publishes each INSERT's NEW_IMAGE as a CloudEvent (docs/api.md §3) to every
//! configured [`EventSink`]: Kafka (keyed by orderId, header `content-type: application/cloudevents+json`),
//! Kinesis Data Streams (partition key = orderId), or both at once.
//!
//! Delivery guarantees:
//! - **At-least-once, nothing skipped.** Each shard is read strictly in order, from its checkpoint
//!   (`AFTER_SEQUENCE_NUMBER`) or, for a shard never read, from `TRIM_HORIZON`. One `GetRecords` page is
//!   published and *every* delivery to *every* sink is confirmed before the shard's checkpoint (its last
//!   sequence number) is saved in the checkpoints table. Any failure after the read (a sink, the checkpoint write)
//!   drops the shard's iterator, so the next step reads the same records again from the checkpoint and
//!   publishes them again: records may be duplicated (consumers dedupe on `id`), never lost. A restarted
//!   bridge resumes at the checkpoints, so it repeats at most the page that was in flight.
//! - **Per-order order.** One order's items live in one shard at a time, and shards are read in order; after
//!   a shard split or rollover a child shard is read only once its parent is finished (closed and read to
//!   the end), so an order's events reach Kafka in version order, where the key keeps them on one partition.
//! - **Stops cleanly.** The loop is one [`Step`] message at a time, handled atomically, so a [`Shutdown`] (or
//!   the system stopping) lands between steps, after the step's checkpoint is saved.
//! - **Supervised.** A step runs as its own task, so a panic in it (a bug, a record that crashes the code) is
//!   caught as a crash: the actor stops and its actix [`Supervisor`] restarts it with a fresh worker, which
//!   reads the shard list and every shard's checkpoint again, after a bounded exponential backoff with jitter.
//!   A failed step (an unreachable table or broker) is not a crash: it is retried with the same backoff. Both
//!   show in the bridge's [`ProjectionStatus`] (`/admin/projections` row `bridge`, readiness
//!   `projection:bridge`); restarts count in `orderflow_projector_restarts_total{projection="bridge"}`.
//!
//! - **One reader per shard.** With several instances (see [`Bridge::with_leases`]), a shard is read only by
//!   the instance that holds its lease (`crate::lease`); another takes it over, from the checkpoint, once the
//!   holder stopped renewing for a lease period. Around a takeover a page may be published twice, never lost.
//!
//! - **Imported history is not published again.** An event item with `publish` = false (written by
//!   `orderflow migrate` or `orderflow import` without `--publish`, see `crate::lifecycle`) is skipped; the
//!   shard's checkpoint moves past it like past any other record.
//!
//! Not yet here: items that do not decode as events are logged at error level and not published (parking them
//! is a later change).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use aws_sdk_dynamodb::types::AttributeValue as ItemValue;
use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, OperationType, Record, ShardIteratorType};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;

use crate::aws::Tables;
use crate::config::BridgeSettings;
use crate::feed::EventSink;
use crate::lease::Leases;
use crate::projection::{ProjectionStatus, backoff};
use crate::store::StoredEvent;
use crate::store::dynamo::event_from_item;
use crate::telemetry::{self, BridgeSource};

const SOURCE: BridgeSource = BridgeSource::DynamoDbStreams;

/// How often the shard list is read again to find new shards (DynamoDB rolls shards over every few hours and
/// splits busy ones); it is also read at once whenever a shard finishes, since its children are waiting.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(15);
/// How long to wait between looks for the events table's stream while it has none.
const NO_STREAM_WAIT: Duration = Duration::from_secs(2);
/// Per-attempt and per-operation limits on Streams calls: the SDK sets none, and a hung call would stall
/// every shard behind it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The name the bridge shows under in `/admin/projections`, readiness and the restart metric.
pub const NAME: &str = "bridge";

pub struct Bridge {
    /// Lent to the step in progress (`None` while one runs; lost with a step that panicked).
    worker: Option<Worker>,
    /// What a fresh worker is made from after a crash.
    io: Io,
    poll_interval: Duration,
    failures: u64,
    status: Arc<ProjectionStatus>,
    /// Records published since the process started: the `position` `/admin/projections` shows.
    published: u64,
    /// [`Shutdown`] came: no more steps, also after a supervisor's restart.
    shut_down: bool,
}

impl Bridge {
    pub fn new(
        streams: aws_sdk_dynamodbstreams::Client,
        dynamo: aws_sdk_dynamodb::Client,
        tables: Tables,
        sinks: Vec<Arc<dyn EventSink>>,
        settings: BridgeSettings,
    ) -> Self {
        let io = Io {
            streams: streams_client_with_timeouts(&streams),
            dynamo: crate::aws::dynamo_client_with_timeouts(&dynamo),
            tables,
            sinks,
            // DynamoDB Streams allows 1 to 1000 records per GetRecords.
            batch_size: settings.batch_size.clamp(1, 1000),
            leases: None,
        };
        Self {
            worker: Some(Worker::new(io.clone())),
            io,
            poll_interval: Duration::from_millis(settings.poll_interval_ms.max(1)),
            failures: 0,
            status: ProjectionStatus::new(NAME),
            published: 0,
            shut_down: false,
        }
    }

    /// Reads only the shards whose lease this instance holds (several instances on one table).
    pub fn with_leases(mut self, leases: Arc<Leases>) -> Self {
        self.io.leases = Some(Arc::clone(&leases));
        if let Some(worker) = &mut self.worker {
            worker.io.leases = Some(leases);
        }
        self
    }

    /// The bridge's live status, for `/admin/projections` and readiness.
    pub fn status(&self) -> Arc<ProjectionStatus> {
        Arc::clone(&self.status)
    }

    /// Starts the bridge under an actix [`Supervisor`]: a step that panics stops the actor, and the supervisor
    /// restarts it from the checkpoints.
    pub fn start_supervised(self) -> Addr<Self> {
        Supervisor::start(|_| self)
    }
}

fn streams_client_with_timeouts(client: &aws_sdk_dynamodbstreams::Client) -> aws_sdk_dynamodbstreams::Client {
    use aws_sdk_dynamodbstreams::config::timeout::TimeoutConfig;
    let config = client.config();
    let wanted = TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let timeouts = match config.timeout_config() {
        Some(current) => current.clone().to_builder().take_unset_from(wanted.into_builder()).build(),
        None => wanted,
    };
    aws_sdk_dynamodbstreams::Client::from_conf(config.to_builder().timeout_config(timeouts).build())
}

impl Actor for Bridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.shut_down {
            // A supervisor restarts an actor that stopped while its address is held: stay idle instead.
            return;
        }
        let sinks: Vec<&str> = self.io.sinks.iter().map(|s| s.name()).collect();
        tracing::info!(table = %self.io.tables.events, ?sinks, "bridge started");
        // After a crash, wait before reading again (a record that crashes the bridge would otherwise spin).
        match self.status.crash_streak() {
            0 => ctx.notify(Step),
            crashes => {
                ctx.notify_later(Step, backoff(FIRST_RETRY, crashes));
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!("bridge stopped");
    }
}

impl Supervised for Bridge {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if self.shut_down {
            return;
        }
        let crashes = self.status.record_restart();
        // The crashed step took its worker (iterators, shard list) with it; a fresh one starts from the saved
        // checkpoints, so at most the page in flight is published again.
        self.worker = Some(Worker::new(self.io.clone()));
        self.failures = 0;
        tracing::warn!(crashes, "bridge restarted by its supervisor");
    }
}

/// One pass: (re)discover shards when due, then one page from every readable shard.
#[derive(Message)]
#[rtype(result = "()")]
struct Step;

/// Stops the bridge after the step in progress (whose checkpoints are saved first).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Bridge {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.shut_down = true;
        ctx.stop();
    }
}

impl Handler<Step> for Bridge {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Step, ctx: &mut Self::Context) -> Self::Result {
        let Some(mut worker) = self.worker.take() else {
            ctx.notify_later(Step, Duration::from_millis(10));
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        };
        // The step runs as its own task so that a panic in it is caught here as a crash instead of unwinding
        // through the arbiter.
        let work = actix::spawn(async move {
            let outcome = worker.step().await;
            (worker, outcome)
        });
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|joined, act, ctx| {
            let Ok((worker, outcome)) = joined else {
                let crashes = act.status.record_crash();
                tracing::error!(crashes, "bridge step panicked; restarting from the checkpoints");
                ctx.stop();
                return;
            };
            act.worker = Some(worker);
            let next = match outcome {
                Ok(step) => {
                    act.published = act.published.saturating_add(step.published);
                    // Finding the stream and the shards is not yet reading them: a record that crashes the
                    // bridge is behind those, so only a step that published or caught up ends a crash streak.
                    let past_crashes = step.published > 0 || matches!(step.progress, Progress::Idle);
                    act.status.record_progress(act.published, step.lag, past_crashes);
                    match step.progress {
                        Progress::More => Duration::ZERO,
                        Progress::Idle => act.poll_interval,
                        Progress::NoStream => NO_STREAM_WAIT,
                    }
                }
                Err(error) => {
                    act.failures = act.failures.saturating_add(1);
                    act.status.record_failure();
                    let wait = backoff(FIRST_RETRY, act.failures);
                    tracing::warn!(
                        %error, failures = act.failures, ?wait,
                        "bridge step failed; retrying from the checkpoints"
                    );
                    ctx.notify_later(Step, wait);
                    return;
                }
            };
            act.failures = 0;
            if next.is_zero() {
                ctx.notify(Step);
            } else {
                ctx.notify_later(Step, next);
            }
        })))
    }
}

/// The first wait after a failed or crashed step (throttling, an unreachable broker or table).
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// What one step did: how to go on, records published, the lag it saw (when it could tell).
struct StepDone {
    progress: Progress,
    published: u64,
    lag: Option<Duration>,
}

enum Progress {
    /// Records moved or a shard finished: step again at once.
    More,
    /// Every shard is caught up: wait `poll_interval`.
    Idle,
    /// The events table has no stream (yet).
    NoStream,
}

/// What the bridge knows about one shard.
#[derive(Debug, Clone, Default)]
struct ShardState {
    parent: Option<String>,
    /// The last sequence number published and saved; `None` = start at TRIM_HORIZON.
    checkpoint: Option<String>,
    /// Where the next GetRecords continues; `None` = ask for a fresh one from the checkpoint.
    iterator: Option<String>,
    /// Closed and read to the end.
    finished: bool,
    /// This instance holds the shard's lease (always, without leases). When it gets the lease back after
    /// another instance read the shard, the checkpoint is read again first.
    held: bool,
}

/// The result of one page of one shard.
struct PageOutcome {
    published: u64,
    /// Approximate creation time of the last record published from the page.
    last_created: Option<DateTime<Utc>>,
    more: bool,
}

/// The clients and names the steps work with.
#[derive(Clone)]
struct Io {
    streams: aws_sdk_dynamodbstreams::Client,
    dynamo: aws_sdk_dynamodb::Client,
    tables: Tables,
    sinks: Vec<Arc<dyn EventSink>>,
    batch_size: i32,
    /// Several instances: a shard is read only while this instance holds its lease.
    leases: Option<Arc<Leases>>,
}

/// The bridge's state, moved into each step's future and back.
struct Worker {
    io: Io,
    stream_arn: Option<String>,
    shards: BTreeMap<String, ShardState>,
    /// When the shard list is read next; `None` = now.
    next_discovery: Option<Instant>,
    told_no_stream: bool,
}

impl Worker {
    /// A worker that knows no stream or shard yet: its first steps find them and load their checkpoints.
    fn new(io: Io) -> Self {
        Self { io, stream_arn: None, shards: BTreeMap::new(), next_discovery: None, told_no_stream: false }
    }

    async fn step(&mut self) -> Result<StepDone, String> {
        let Some(arn) = self.stream_arn.clone() else {
            return self.find_stream().await.map(|progress| StepDone { progress, published: 0, lag: None });
        };
        if self.next_discovery.is_none_or(|at| Instant::now() >= at) {
            self.discover(&arn).await?;
        }
        let readable: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, shard)| !shard.finished && parent_finished(&self.shards, shard))
            .map(|(id, _)| id.clone())
            .collect();
        let mut more = false;
        let mut published = 0;
        // The lag is that of the shard furthest behind among those that published.
        let mut oldest_last: Option<DateTime<Utc>> = None;
        let mut first_error = None;
        for id in readable {
            let Some(mut shard) = self.shards.remove(&id) else { continue };
            let result = match self.lease(&id, &mut shard).await {
                Ok(true) => self.io.read_page(&arn, &id, &mut shard).await,
                Ok(false) => Ok(PageOutcome { published: 0, last_created: None, more: false }),
                Err(e) => Err(e),
            };
            if shard.finished {
                tracing::info!(shard = %id, checkpoint = ?shard.checkpoint, "stream shard finished");
                // Its children (a split, or the next shard after a rollover) may now be read.
                self.next_discovery = None;
            }
            self.shards.insert(id, shard);
            match result {
                Ok(page) => {
                    more |= page.more;
                    published += page.published;
                    if let Some(created) = page.last_created {
                        oldest_last = Some(oldest_last.map_or(created, |o| o.min(created)));
                    }
                }
                // The other shards still move; the step reports the failure for the backoff, and the shard
                // list is read again in case the shard is gone.
                Err(e) => {
                    first_error.get_or_insert(e);
                    self.next_discovery = None;
                }
            }
        }
        telemetry::bridge_records(SOURCE, published);
        let lag = match oldest_last {
            Some(created) => Some((Utc::now() - created).to_std().unwrap_or_default()),
            None if !more && first_error.is_none() => Some(Duration::ZERO),
            None => None,
        };
        if let Some(lag) = lag {
            telemetry::bridge_lag(SOURCE, lag);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(StepDone { progress: if more { Progress::More } else { Progress::Idle }, published, lag }),
        }
    }

    /// Whether this instance may read the shard now. On getting a lease (back), the shard's checkpoint is read
    /// again: another instance may have moved it, or finished the shard.
    async fn lease(&self, id: &str, shard: &mut ShardState) -> Result<bool, String> {
        let Some(leases) = &self.io.leases else { return Ok(true) };
        let held = leases.hold(id).await.map_err(|e| format!("lease of shard {id}: {e}"))?;
        if held && !shard.held {
            let (checkpoint, finished) = self.io.load_checkpoint(id).await?;
            tracing::info!(shard = %id, ?checkpoint, finished, owner = leases.owner(), "reading stream shard (lease held)");
            *shard = ShardState { checkpoint, finished, iterator: None, held: true, parent: shard.parent.take() };
        }
        if !held && shard.held {
            tracing::info!(shard = %id, "stream shard's lease is another instance's; not reading it");
            shard.held = false;
            shard.iterator = None;
        }
        Ok(held && !shard.finished)
    }

    async fn find_stream(&mut self) -> Result<Progress, String> {
        let table = &self.io.tables.events;
        let output = self
            .io
            .dynamo
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| format!("DescribeTable {table}: {}", DisplayErrorContext(&e)))?;
        match output.table().and_then(|t| t.latest_stream_arn()) {
            Some(arn) => {
                tracing::info!(%table, stream = %arn, "bridge reading the events table's stream");
                self.stream_arn = Some(arn.to_owned());
                self.next_discovery = None;
                Ok(Progress::More)
            }
            None => {
                if !self.told_no_stream {
                    tracing::warn!(%table, "the events table has no stream yet; waiting for one");
                    self.told_no_stream = true;
                }
                Ok(Progress::NoStream)
            }
        }
    }

    /// Lists the stream's shards (all pages), loads the checkpoints of new ones and forgets those that left.
    async fn discover(&mut self, arn: &str) -> Result<(), String> {
        let mut listed: Vec<(String, Option<String>)> = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let output = self
                .io
                .streams
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| {
                    if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) {
                        // The stream is gone (disabled and expired): look the table's current one up again.
                        self.stream_arn = None;
                    }
                    format!("DescribeStream {arn}: {}", DisplayErrorContext(&e))
                })?;
            let Some(description) = output.stream_description() else { break };
            for shard in description.shards() {
                if let Some(id) = shard.shard_id() {
                    listed.push((id.to_owned(), shard.parent_shard_id().map(str::to_owned)));
                }
            }
            match description.last_evaluated_shard_id() {
                Some(last) => start = Some(last.to_owned()),
                None => break,
            }
        }
        let still_listed: HashSet<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        self.shards.retain(|id, shard| {
            let keep = still_listed.contains(id.as_str());
            if !keep && !shard.finished {
                tracing::error!(
                    shard = %id, checkpoint = ?shard.checkpoint,
                    "shard left the stream before the bridge read it to the end; its remaining records expired"
                );
            }
            keep
        });
        // Shards another instance reads: whether it finished them (their children wait for that).
        for (id, shard) in self.shards.iter_mut().filter(|(_, s)| !s.held && !s.finished) {
            shard.finished = self.io.load_checkpoint(id).await?.1;
        }
        // Load every new shard's checkpoint before adding any: a child must never be seen without its parent.
        let mut found = Vec::new();
        let held = self.io.leases.is_none();
        for (id, parent) in listed {
            if self.shards.contains_key(&id) {
                continue;
            }
            let (checkpoint, finished) = self.io.load_checkpoint(&id).await?;
            found.push((id, ShardState { parent, checkpoint, iterator: None, finished, held }));
        }
        for (id, shard) in found {
            tracing::info!(
                shard = %id, parent = ?shard.parent, checkpoint = ?shard.checkpoint, finished = shard.finished,
                "discovered stream shard"
            );
            self.shards.insert(id, shard);
        }
        self.next_discovery = Some(Instant::now() + DISCOVERY_INTERVAL);
        Ok(())
    }
}

impl Io {
    /// Reads one page of a shard, publishes it and saves the checkpoint; on any failure after the read the
    /// iterator is dropped, so the next step reads the same records again from the checkpoint.
    async fn read_page(&self, arn: &str, id: &str, shard: &mut ShardState) -> Result<PageOutcome, String> {
        let iterator = match shard.iterator.take() {
            Some(iterator) => iterator,
            None => match self.fresh_iterator(arn, id, shard.checkpoint.as_deref()).await? {
                Some(iterator) => iterator,
                None => {
                    // Nothing can be read after the checkpoint of a closed shard.
                    self.save_checkpoint(id, shard.checkpoint.as_deref(), true).await?;
                    shard.finished = true;
                    return Ok(PageOutcome { published: 0, last_created: None, more: true });
                }
            },
        };
        let output = match self.streams.get_records().shard_iterator(&iterator).limit(self.batch_size).send().await {
            Ok(output) => output,
            Err(e) => {
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_expired_iterator_exception()) {
                    // Iterators live 15 minutes: take a new one from the checkpoint, no backoff needed.
                    tracing::debug!(shard = %id, "shard iterator expired; renewing from the checkpoint");
                    return Ok(PageOutcome { published: 0, last_created: None, more: true });
                }
                if !service.is_some_and(|s| s.is_trimmed_data_access_exception() || s.is_resource_not_found_exception())
                {
                    // Throttling, a server error, a timeout: the iterator is still good for the retry.
                    shard.iterator = Some(iterator);
                }
                return Err(format!("GetRecords on shard {id}: {}", DisplayErrorContext(&e)));
            }
        };
        let records = output.records();
        let next = output.next_shard_iterator().map(str::to_owned);
        let (published, last_created) =
            self.publish(id, records).await.map_err(|e| format!("publishing shard {id}: {e}"))?;
        let last_sequence = records
            .iter()
            .rev()
            .find_map(|r| r.dynamodb().and_then(|d| d.sequence_number()))
            .map(str::to_owned)
            .or_else(|| shard.checkpoint.clone());
        let finished = next.is_none();
        if !records.is_empty() || finished {
            self.save_checkpoint(id, last_sequence.as_deref(), finished).await?;
        }
        shard.checkpoint = last_sequence;
        shard.iterator = next;
        shard.finished = finished;
        Ok(PageOutcome { published, last_created, more: !records.is_empty() || finished })
    }

    /// An iterator just after the checkpoint, or at the trim horizon for a shard never read. `None` when a
    /// closed shard has nothing left to read.
    async fn fresh_iterator(&self, arn: &str, id: &str, checkpoint: Option<&str>) -> Result<Option<String>, String> {
        let request = self.streams.get_shard_iterator().stream_arn(arn).shard_id(id);
        let request = match checkpoint {
            Some(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(sequence)
            }
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match request.send().await {
            Ok(output) => Ok(output.shard_iterator().map(str::to_owned)),
            Err(e)
                if checkpoint.is_some()
                    && e.as_service_error().is_some_and(|s| s.is_trimmed_data_access_exception()) =>
            {
                // The records after the checkpoint are past the stream's 24-hour retention: they are gone for
                // good, and the oldest record still there is the best place to go on from.
                tracing::error!(
                    shard = %id, ?checkpoint,
                    "records after the checkpoint expired from the stream before the bridge read them; \
                     continuing at the trim horizon"
                );
                Box::pin(self.fresh_iterator(arn, id, None)).await
            }
            Err(e) => Err(format!("GetShardIterator on shard {id}: {}", DisplayErrorContext(&e))),
        }
    }

    /// Publishes the page's events in order to every sink and waits until each has acknowledged all of them.
    /// Returns the number published and the approximate creation time of the last one.
    async fn publish(&self, shard: &str, records: &[Record]) -> Result<(u64, Option<DateTime<Utc>>), String> {
        let mut events = Vec::with_capacity(records.len());
        let mut last_created = None;
        for record in records {
            let Some(change) = record.dynamodb() else { continue };
            // Events are only ever inserted; a MODIFY or REMOVE (a manual fix, a TTL) is not an event.
            if record.event_name() != Some(&OperationType::Insert) {
                continue;
            }
            let sequence = change.sequence_number().unwrap_or_default();
            let Some(image) = change.new_image() else {
                // A stream without images (KEYS_ONLY) can never be bridged: fail loudly rather than skip all.
                return Err(format!(
                    "record {sequence} has no NEW_IMAGE: the events table's stream must include new images"
                ));
            };
            // History that `orderflow migrate` / `import` wrote without `--publish` (`crate::lifecycle`):
            // consumers saw it where it came from, so it is not published a second time.
            if matches!(image.get(crate::store::dynamo::PUBLISH_ATTRIBUTE), Some(StreamValue::Bool(false))) {
                continue;
            }
            let event = match decode_image(image) {
                Ok(event) => event,
                Err(error) => {
                    tracing::error!(
                        shard, sequence, %error,
                        "events table item does not decode as an event; not published"
                    );
                    continue;
                }
            };
            last_created = change
                .approximate_creation_date_time()
                .and_then(|t| t.to_millis().ok())
                .and_then(DateTime::from_timestamp_millis)
                .or(Some(event.recorded_at));
            events.push(event);
        }
        if events.is_empty() {
            return Ok((0, last_created));
        }
        // The sinks publish side by side; each keeps the page's order itself. Every one is awaited, even after
        // one failed, so no delivery of this page is still in flight when the page is published again.
        let results = join_all(self.sinks.iter().map(|sink| sink.publish(&events))).await;
        let failures: Vec<String> = self
            .sinks
            .iter()
            .zip(results)
            .filter_map(|(sink, result)| result.err().map(|e| format!("{}: {}", sink.name(), e.0)))
            .collect();
        if failures.is_empty() { Ok((events.len() as u64, last_created)) } else { Err(failures.join("; ")) }
    }

    async fn load_checkpoint(&self, shard: &str) -> Result<(Option<String>, bool), String> {
        let table = &self.tables.checkpoints;
        let output = self
            .dynamo
            .get_item()
            .table_name(table)
            .key("id", ItemValue::S(checkpoint_id(shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                format!("reading the checkpoint of shard {shard} from {table}: {}", DisplayErrorContext(&e))
            })?;
        let Some(item) = output.item() else { return Ok((None, false)) };
        let sequence = match item.get("sequenceNumber") {
            Some(ItemValue::S(s)) => Some(s.clone()),
            _ => None,
        };
        let finished = matches!(item.get("finished"), Some(ItemValue::Bool(true)));
        Ok((sequence, finished))
    }

    async fn save_checkpoint(&self, shard: &str, sequence: Option<&str>, finished: bool) -> Result<(), String> {
        let table = &self.tables.checkpoints;
        let mut request = self
            .dynamo
            .put_item()
            .table_name(table)
            .item("id", ItemValue::S(checkpoint_id(shard)))
            .item("finished", ItemValue::Bool(finished))
            .item("updatedAt", ItemValue::N(Utc::now().timestamp_millis().to_string()));
        if let Some(sequence) = sequence {
            request = request.item("sequenceNumber", ItemValue::S(sequence.to_owned()));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("saving the checkpoint of shard {shard} in {table}: {}", DisplayErrorContext(&e)))
    }
}

/// A child shard waits for its parent; a parent no longer listed has left the stream (older than its 24-hour
/// retention), so there is nothing of it left to wait for.
fn parent_finished(shards: &BTreeMap<String, ShardState>, shard: &ShardState) -> bool {
    shard.parent.as_ref().and_then(|p| shards.get(p)).is_none_or(|p| p.finished)
}

fn checkpoint_id(shard: &str) -> String {
    format!("bridge#{shard}")
}

/// A stream record's NEW_IMAGE as the event it stores, through the event store's own item decoder.
fn decode_image(image: &HashMap<String, StreamValue>) -> Result<StoredEvent, String> {
    let item = image
        .iter()
        .map(|(name, value)| Ok((name.clone(), to_item_value(value)?)))
        .collect::<Result<HashMap<_, _>, String>>()?;
    event_from_item(&item)
}

/// The Streams SDK and the DynamoDB SDK each have their own (identical) attribute value type.
fn to_item_value(value: &StreamValue) -> Result<ItemValue, String> {
    Ok(match value {
        StreamValue::S(s) => ItemValue::S(s.clone()),
        StreamValue::N(n) => ItemValue::N(n.clone()),
        StreamValue::B(b) => ItemValue::B(b.clone()),
        StreamValue::Bool(b) => ItemValue::Bool(*b),
        StreamValue::Null(n) => ItemValue::Null(*n),
        StreamValue::Ss(v) => ItemValue::Ss(v.clone()),
        StreamValue::Ns(v) => ItemValue::Ns(v.clone()),
        StreamValue::Bs(v) => ItemValue::Bs(v.clone()),
        StreamValue::L(list) => ItemValue::L(list.iter().map(to_item_value).collect::<Result<_, _>>()?),
        StreamValue::M(map) => ItemValue::M(
            map.iter().map(|(k, v)| Ok((k.clone(), to_item_value(v)?))).collect::<Result<HashMap<_, _>, String>>()?,
        ),
        other => return Err(format!("unsupported attribute value {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(payload: &str, kind: &str) -> HashMap<String, StreamValue> {
        HashMap::from([
            ("orderId".to_owned(), StreamValue::S("o-1".into())),
            ("version".to_owned(), StreamValue::N("3".into())),
            ("eventId".to_owned(), StreamValue::S("0190f5c2-7d3e-7a51-9c1e-3f2b8d4a6e01".into())),
            ("type".to_owned(), StreamValue::S(kind.into())),
            ("schemaVersion".to_owned(), StreamValue::N("1".into())),
            ("recordedAt".to_owned(), StreamValue::N("1700000000123".into())),
            ("payload".to_owned(), StreamValue::S(payload.into())),
        ])
    }

    const PAID: &str =
        r#"{"type":"PaymentConfirmed","data":{"paymentId":"pay-1","amount":2500,"paidAt":"2023-11-14T22:13:20.123Z"}}"#;

    #[test]
    fn a_new_image_decodes_to_the_stored_event() {
        let event = decode_image(&image(PAID, "PaymentConfirmed")).unwrap();
        assert_eq!(event.order_id.to_string(), "o-1");
        assert_eq!((event.version, event.schema_version, event.position), (3, 1, 0));
        assert_eq!(event.recorded_at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(event.event.type_name(), "PaymentConfirmed");
        assert_eq!(event.event_id.to_string(), "0190f5c2-7d3e-7a51-9c1e-3f2b8d4a6e01");
    }

    #[test]
    fn a_foreign_or_inconsistent_item_is_refused() {
        assert!(decode_image(&image("not json", "PaymentConfirmed")).is_err());
        assert!(decode_image(&image(PAID, "OrderShipped")).is_err());
        let mut missing = image(PAID, "PaymentConfirmed");
        missing.remove("eventId");
        assert!(decode_image(&missing).is_err());
    }

    #[test]
    fn nested_values_convert() {
        let value = StreamValue::M(HashMap::from([(
            "l".to_owned(),
            StreamValue::L(vec![StreamValue::N("1".into()), StreamValue::Bool(true), StreamValue::Null(true)]),
        )]));
        let ItemValue::M(map) = to_item_value(&value).unwrap() else { panic!("not a map") };
        assert_eq!(
            map.get("l"),
            Some(&ItemValue::L(vec![ItemValue::N("1".into()), ItemValue::Bool(true), ItemValue::Null(true)]))
        );
    }

    #[test]
    fn a_child_waits_for_its_parent_until_the_parent_is_finished_or_gone() {
        let mut shards = BTreeMap::from([("parent".to_owned(), ShardState::default())]);
        let child = ShardState { parent: Some("parent".into()), ..ShardState::default() };
        assert!(!parent_finished(&shards, &child));
        if let Some(parent) = shards.get_mut("parent") {
            parent.finished = true;
        }
        assert!(parent_finished(&shards, &child));
        shards.clear();
        assert!(parent_finished(&shards, &child));
        assert!(parent_finished(&shards, &ShardState::default()));
    }
}
