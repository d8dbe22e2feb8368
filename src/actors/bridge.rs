//! `Bridge`: forwards the write model's change feed to the public event feed. It reads the DynamoDB Streams
//! stream of the events table and publishes each INSERT's NEW_IMAGE as a CloudEvent (docs/api.md §3) to every
//! configured [`EventSink`]: Kafka (keyed by orderId, header `content-type: application/cloudevents+json`),
//! Kinesis Data Streams (partition key = orderId), or both at once.
//!
//! Delivery guarantees:
//! - **At-least-once, nothing skipped.** The stream is read shard by shard with `feed::shards` (checkpoints in
//!   the checkpoints table, `bridge#<shardId>`; parents before children; one reader per shard with leases). One
//!   `GetRecords` page is published and *every* delivery to *every* sink is confirmed before the shard's
//!   checkpoint moves past it. Any failure after the read (a sink, the checkpoint write) drops the shard's
//!   iterator, so the next step reads the same records again from the checkpoint and publishes them again:
//!   records may be duplicated (consumers dedupe on `id`), never lost. A restarted bridge resumes at the
//!   checkpoints, so it repeats at most the page that was in flight.
//! - **Per-order order.** One order's items live in one shard at a time, and shards are read in order, a child
//!   only once its parent is finished, so an order's events reach Kafka in version order, where the key keeps
//!   them on one partition.
//! - **Stops cleanly.** The loop is one [`Step`] message at a time, handled atomically, so a [`Shutdown`] (or
//!   the system stopping) lands between steps, after the step's checkpoint is saved.
//! - **Supervised.** A step runs as its own task, so a panic in it (a bug, a record that crashes the code) is
//!   caught as a crash: the actor stops and its actix [`Supervisor`] restarts it with a fresh worker, which
//!   reads the shard list and every shard's checkpoint again, after a bounded exponential backoff with jitter.
//!   A failed step (an unreachable table or broker) is not a crash: it is retried with the same backoff. Both
//!   show in the bridge's [`ProjectionStatus`] (`/admin/projections` row `bridge`, readiness
//!   `projection:bridge`); restarts count in `orderflow_projector_restarts_total{projection="bridge"}`.
//! - **One reader per shard.** With several instances (see [`Bridge::with_leases`]), a shard is read only by
//!   the instance that holds its lease; another takes it over, from the checkpoint, once the holder stopped
//!   renewing for a lease period. Around a takeover a page may be published twice, never lost.
//!
//! - **Imported history is not published again.** An event item with `publish` = false (written by
//!   `orderflow migrate` or `orderflow import` without `--publish`, see `crate::lifecycle`) is skipped; the
//!   shard's checkpoint moves past it like past any other record.
//!
//! Items that do not decode as events are logged at error level and not published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{OperationType, Record};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;

use crate::aws::Tables;
use crate::config::BridgeSettings;
use crate::feed::EventSink;
use crate::feed::shards::{CheckpointTable, ShardStream, Shards};
use crate::feed::streams::{DynamoStream, decode_image, streams_client_with_timeouts};
use crate::lease::Leases;
use crate::projection::{ProjectionStatus, backoff};
use crate::telemetry::{self, BridgeSource};

const SOURCE: BridgeSource = BridgeSource::DynamoDbStreams;

/// How often the shard list is read again to find new shards (DynamoDB rolls shards over every few hours and
/// splits busy ones); it is also read at once whenever a shard finishes, since its children are waiting.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(15);
/// How long to wait between looks for the events table's stream while it has none.
const NO_STREAM_WAIT: Duration = Duration::from_secs(2);

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
        self.io.leases = Some(leases);
        // Not started yet: its first worker reads with the leases.
        self.worker = Some(Worker::new(self.io.clone()));
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

/// The result of one page of one shard.
struct PageOutcome {
    published: u64,
    /// Approximate creation time of the last record published from the page.
    last_created: Option<DateTime<Utc>>,
    more: bool,
}

impl PageOutcome {
    const NOTHING: Self = Self { published: 0, last_created: None, more: false };
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
    stream: Option<DynamoStream>,
    /// The stream's shards: checkpoints (`bridge#<shardId>` in the checkpoints table), parents first, leases.
    shards: Shards,
    told_no_stream: bool,
}

impl Worker {
    /// A worker that knows no stream or shard yet: its first steps find them and load their checkpoints.
    fn new(io: Io) -> Self {
        let checkpoints = CheckpointTable { dynamo: io.dynamo.clone(), table: io.tables.checkpoints.clone() };
        let shards = Shards::new(checkpoints, |shard| format!("bridge#{shard}"), DISCOVERY_INTERVAL, NAME.to_owned())
            .with_leases(io.leases.clone());
        Self { io, stream: None, shards, told_no_stream: false }
    }

    async fn step(&mut self) -> Result<StepDone, String> {
        let Some(stream) = &self.stream else {
            return self.find_stream().await.map(|progress| StepDone { progress, published: 0, lag: None });
        };
        if self.shards.discovery_due() {
            match stream.list().await {
                Ok(listed) => self.shards.update(listed).await?,
                Err(e) => {
                    if stream.gone() {
                        // Disabled and expired: look the table's current stream up again.
                        self.stream = None;
                    }
                    return Err(e);
                }
            }
        }
        let Some(stream) = &self.stream else {
            return Ok(StepDone { progress: Progress::More, published: 0, lag: None });
        };
        let readable = self.shards.readable().await?;
        let mut more = false;
        let mut published = 0;
        // The lag is that of the shard furthest behind among those that published.
        let mut oldest_last: Option<DateTime<Utc>> = None;
        let mut first_error = None;
        for id in readable {
            match read_page(&self.io, stream, &mut self.shards, &id).await {
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
                    self.shards.discover_soon();
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
                self.stream = Some(DynamoStream::new(&self.io.streams, arn.to_owned()));
                self.shards.discover_soon();
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
}

/// Reads one page of a shard, publishes it and moves the shard's checkpoint past it. On any failure after the
/// read the shard's iterator is dropped, so the next step reads the same records again from the checkpoint.
async fn read_page(io: &Io, stream: &DynamoStream, shards: &mut Shards, id: &str) -> Result<PageOutcome, String> {
    let read = match shards.read(stream, id, io.batch_size).await {
        Ok(Some(read)) => read,
        // An expired iterator: a fresh one from the checkpoint, at once.
        Ok(None) => {
            shards.rewind(id);
            return Ok(PageOutcome { more: true, ..PageOutcome::NOTHING });
        }
        Err(e) => {
            if e.rewind {
                shards.rewind(id);
            }
            return Err(e.message);
        }
    };
    if read.records.is_empty() && !read.advance.finished {
        shards.keep_iterator(id, read.advance.iterator);
        return Ok(PageOutcome::NOTHING);
    }
    let published = io.publish(id, &read.records).await.map_err(|e| format!("publishing shard {id}: {e}"));
    let (published, last_created) = match published {
        Ok(done) => done,
        Err(e) => {
            shards.rewind(id);
            return Err(e);
        }
    };
    if let Err(e) = shards.commit(&BTreeMap::from([(id.to_owned(), read.advance)])).await {
        shards.rewind(id);
        return Err(e);
    }
    Ok(PageOutcome { published, last_created, more: true })
}

impl Io {
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
            if matches!(
                image.get(crate::store::dynamo::PUBLISH_ATTRIBUTE),
                Some(aws_sdk_dynamodbstreams::types::AttributeValue::Bool(false))
            ) {
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
}
