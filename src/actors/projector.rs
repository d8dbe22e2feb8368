//! `Projector`: keeps one view up to date from the event feed. It works in batches: take the next events,
//! apply them to the view (which stores the feed checkpoint in the same transaction), then ack them to the
//! feed. A batch that fails is not acked, so it is delivered again after a backoff; views are idempotent, so a
//! redelivery changes nothing. Each batch is one message to itself, so control messages (reset, stop) are
//! handled between batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use serde::Serialize;
use tokio::sync::watch;

use futures_util::future::BoxFuture;

use super::bridge::Bridge;
use super::parking::{EventFailure, ParkingLot, PoisonSwitch};
use crate::feed::{FeedError, FeedSubscription};
use crate::store::{RebuildChunk, RebuildSource, StoredEvent};
use crate::telemetry::{self, ProjectionOutcome};
use crate::views::Rebuilder;
use crate::views::ViewError;
use crate::views::parked::{ParkedEvent, ParkedStore};

/// Live state of one projection, shared with `/admin/projections` and readiness.
pub struct ProjectionStatus {
    pub name: &'static str,
    state: AtomicU8,
    position: AtomicU64,
    lag_millis: AtomicU64,
    restarts: AtomicU64,
    parked: AtomicU64,
    consecutive_failures: AtomicU64,
    /// Crashes (panics) since the last batch that went through: three in a row is a crash loop.
    consecutive_crashes: AtomicU64,
    /// A rebuild in progress: (position, target, events); target 0 = none.
    rebuild: [AtomicU64; 3],
    /// Bumped after every applied batch: `minVersion` readers wait on it.
    progress: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProjectorState {
    Starting = 0,
    Running = 1,
    Retrying = 2,
    Stopped = 3,
    /// Restarting after a crash.
    Restarting = 4,
    /// Crashed three times or more in a row.
    CrashLooping = 5,
    /// Being rebuilt from the write model (queries are served from the current view meanwhile).
    Rebuilding = 6,
}

impl ProjectorState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Running,
            2 => Self::Retrying,
            3 => Self::Stopped,
            4 => Self::Restarting,
            5 => Self::CrashLooping,
            6 => Self::Rebuilding,
            _ => Self::Starting,
        }
    }
}

/// One row of `GET /admin/projections`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionInfo {
    pub name: &'static str,
    pub status: ProjectorState,
    pub position: u64,
    pub lag_seconds: f64,
    pub restarts: u64,
    pub parked: u64,
    /// Progress of a rebuild in progress (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildProgress>,
}

/// How far a rebuild has come: in write-model log positions (embedded), or in events read out of about how
/// many the write model holds (distributed: the DynamoDB table's item count, which AWS refreshes only every
/// few hours, so `position` may pass `target` there).
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildProgress {
    pub position: u64,
    /// Where the write model reached when the rebuild started (it goes on until it has read everything).
    pub target: u64,
    pub events: u64,
}

impl ProjectionStatus {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            state: AtomicU8::new(0),
            position: AtomicU64::new(0),
            lag_millis: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            consecutive_crashes: AtomicU64::new(0),
            rebuild: Default::default(),
            progress: watch::channel(0).0,
        })
    }

    fn set_state(&self, state: ProjectorState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn info(&self) -> ProjectionInfo {
        let [position, target, events] = self.rebuild.each_ref().map(|a| a.load(Ordering::Relaxed));
        let rebuild = (target > 0).then_some(RebuildProgress { position, target, events });
        ProjectionInfo {
            name: self.name,
            status: match rebuild {
                Some(_) => ProjectorState::Rebuilding,
                None => ProjectorState::from_u8(self.state.load(Ordering::Relaxed)),
            },
            rebuild,
            position: self.position.load(Ordering::Relaxed),
            lag_seconds: self.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0,
            restarts: self.restarts.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }

    /// Marks a rebuild as started (false if one is already running).
    fn begin_rebuild(&self, target: u64) -> bool {
        let started = self.rebuild[1].compare_exchange(0, target.max(1), Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if started {
            self.rebuild[0].store(0, Ordering::Relaxed);
            self.rebuild[2].store(0, Ordering::Relaxed);
        }
        started
    }

    fn rebuild_progress(&self, position: u64, events: u64) {
        self.rebuild[0].store(position, Ordering::Relaxed);
        self.rebuild[2].fetch_add(events, Ordering::Relaxed);
    }

    fn end_rebuild(&self) {
        self.rebuild[1].store(0, Ordering::Relaxed);
    }

    /// Healthy unless the projector keeps failing or keeps crashing.
    pub fn healthy(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) < 5 && self.consecutive_crashes.load(Ordering::Relaxed) < 3
    }

    pub fn set_parked(&self, parked: u64) {
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// Records where the view starts (its stored checkpoint).
    pub fn set_position(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
    }

    // What another supervised actor (the Streams bridge) reports into a status of its own, so that it shows in
    // `/admin/projections` and readiness as the projectors do.

    /// A step went through: the failure streak ends, and the crash streak too when the step got past where a
    /// crash can happen (`past_crashes`: it read its records, not only set itself up after a restart).
    pub(crate) fn record_progress(&self, position: u64, lag: Option<Duration>, past_crashes: bool) {
        if past_crashes {
            self.consecutive_crashes.store(0, Ordering::Relaxed);
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.position.store(position, Ordering::Relaxed);
        if let Some(lag) = lag {
            self.lag_millis.store(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        if self.consecutive_crashes.load(Ordering::Relaxed) < 3 {
            self.set_state(ProjectorState::Running);
        }
    }

    /// A step failed (it is retried): the failure streak, after this one.
    pub(crate) fn record_failure(&self) -> u64 {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.consecutive_crashes.load(Ordering::Relaxed) < 3 {
            self.set_state(ProjectorState::Retrying);
        }
        failures
    }

    /// The actor crashed (it stops; its supervisor restarts it): the crash streak, after this one.
    pub(crate) fn record_crash(&self) -> u64 {
        self.consecutive_crashes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The supervisor restarts the actor: counted (`orderflow_projector_restarts_total`), and shown as
    /// restarting, or as crash-looping from the third crash in a row.
    pub(crate) fn record_restart(&self) -> u64 {
        let crashes = self.consecutive_crashes.load(Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        telemetry::projector_restarted(self.name);
        self.set_state(if crashes >= 3 { ProjectorState::CrashLooping } else { ProjectorState::Restarting });
        crashes
    }

    /// Crashes in a row so far (0 once a step went through).
    pub(crate) fn crash_streak(&self) -> u64 {
        self.consecutive_crashes.load(Ordering::Relaxed)
    }

    /// Changes after every batch the view applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }
}

/// Opens the projection's feed at the view's last checkpoint: at start and after every crash.
pub type FeedFactory = Arc<dyn Fn() -> BoxFuture<'static, Result<Box<dyn FeedSubscription>, FeedError>> + Send + Sync>;

pub struct Projector {
    lot: ParkingLot,
    make_feed: FeedFactory,
    /// Lent to the batch in progress (`None` while one runs).
    feed: Option<Box<dyn FeedSubscription>>,
    /// A position the feed must move to before its next batch (set by [`Replay`]).
    pending_seek: Option<u64>,
    status: Arc<ProjectionStatus>,
    batch_size: usize,
}

impl Projector {
    /// A projector whose feed `make_feed` opens (under a [`Supervisor`]: see [`Projector::start_supervised`]).
    pub fn new(lot: ParkingLot, make_feed: FeedFactory, status: Arc<ProjectionStatus>, batch_size: usize) -> Self {
        Self { lot, make_feed, feed: None, pending_seek: None, status, batch_size }
    }

    /// Starts the projector under an actix [`Supervisor`]: when a batch panics, the actor stops and the
    /// supervisor restarts it, which reopens the feed from the view's last checkpoint after a backoff.
    pub fn start_supervised(self) -> Addr<Self> {
        Supervisor::start(|_| self)
    }
}

impl Actor for Projector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let crashes = self.status.consecutive_crashes.load(Ordering::Relaxed);
        ctx.notify_later(OpenFeed, if crashes == 0 { Duration::ZERO } else { backoff(crashes) });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.status.set_state(ProjectorState::Stopped);
    }
}

impl Supervised for Projector {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        let crashes = self.status.consecutive_crashes.load(Ordering::Relaxed);
        self.status.restarts.fetch_add(1, Ordering::Relaxed);
        telemetry::projector_restarted(self.status.name);
        self.status.set_state(if crashes >= 3 { ProjectorState::CrashLooping } else { ProjectorState::Restarting });
        // The feed went down with the crashed batch; `started` opens a new one at the checkpoint.
        self.feed = None;
        self.pending_seek = None;
        tracing::warn!(projection = self.status.name, crashes, "projector restarted by its supervisor");
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct OpenFeed;

impl Handler<OpenFeed> for Projector {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: OpenFeed, _ctx: &mut Self::Context) -> Self::Result {
        let open = (self.make_feed)();
        AtomicResponse::new(Box::pin(open.into_actor(self).map(|feed, act, ctx| match feed {
            Ok(feed) => {
                act.feed = Some(feed);
                if act.status.consecutive_crashes.load(Ordering::Relaxed) < 3 {
                    act.status.set_state(ProjectorState::Running);
                }
                ctx.notify(NextBatch);
            }
            Err(e) => {
                let failures = act.status.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(projection = act.status.name, error = %e, "cannot open the feed; retrying");
                act.status.set_state(ProjectorState::Retrying);
                ctx.notify_later(OpenFeed, backoff(failures));
            }
        })))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct NextBatch;

/// How long a caught-up projector waits for new events before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(500);

enum BatchOutcome {
    Idle,
    Applied,
    Failed(String),
}

impl Handler<NextBatch> for Projector {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: NextBatch, ctx: &mut Self::Context) -> Self::Result {
        let Some(mut feed) = self.feed.take() else {
            // A batch is still out with the feed: look again shortly, never let the loop end.
            ctx.notify_later(NextBatch, Duration::from_millis(10));
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        };
        let seek = self.pending_seek.take();
        let lot = self.lot.clone();
        let status = Arc::clone(&self.status);
        let max = self.batch_size;
        // The batch runs as its own task so that a panic in it (a bug, a poison event that crashes the view
        // code) is caught here as a crash instead of unwinding through the arbiter.
        let work = actix::spawn(async move {
            if let Some(position) = seek
                && let Err(e) = feed.seek(position).await
            {
                return (feed, BatchOutcome::Failed(e.to_string()));
            }
            let outcome = run_batch(&mut *feed, &lot, &status, max).await;
            (feed, outcome)
        });
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|joined, act, ctx| {
            let Ok((feed, outcome)) = joined else {
                let crashes = act.status.consecutive_crashes.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(projection = act.status.name, crashes, "projection batch panicked; restarting");
                ctx.stop();
                return;
            };
            act.feed = Some(feed);
            match outcome {
                BatchOutcome::Applied => {
                    act.status.consecutive_crashes.store(0, Ordering::Relaxed);
                    act.status.consecutive_failures.store(0, Ordering::Relaxed);
                    act.status.set_state(ProjectorState::Running);
                    ctx.notify(NextBatch);
                }
                BatchOutcome::Idle => {
                    act.status.consecutive_failures.store(0, Ordering::Relaxed);
                    if act.status.consecutive_crashes.load(Ordering::Relaxed) < 3 {
                        act.status.set_state(ProjectorState::Running);
                    }
                    ctx.notify(NextBatch);
                }
                BatchOutcome::Failed(error) => {
                    let failures = act.status.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    let backoff = backoff(failures);
                    tracing::warn!(projection = act.status.name, %error, failures, ?backoff, "projection batch failed; retrying");
                    act.status.set_state(ProjectorState::Retrying);
                    ctx.notify_later(NextBatch, backoff);
                }
            }
        })))
    }
}

/// The last hop of a command's trace: one debug line per projected event, with the trace id its command had
/// (stored with the event, carried by the feed). Skipped entirely unless debug logging is on.
fn traced(projection: &'static str, events: &[crate::store::StoredEvent]) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        for event in events {
            let trace_id = crate::trace::trace_id_of(event.traceparent.as_deref());
            tracing::debug!(projection, order_id = %event.order_id, version = event.version, trace_id, "event projected");
        }
    }
}

async fn run_batch(
    feed: &mut dyn FeedSubscription,
    lot: &ParkingLot,
    status: &ProjectionStatus,
    max: usize,
) -> BatchOutcome {
    let name = status.name;
    let events = match feed.next_batch(max, IDLE_WAIT).await {
        Ok(events) => events,
        Err(e) => return BatchOutcome::Failed(e.to_string()),
    };
    let Some(last) = events.last() else {
        status.lag_millis.store(0, Ordering::Relaxed);
        telemetry::projection_lag(name, Duration::ZERO);
        return BatchOutcome::Idle;
    };
    let checkpoint = feed.checkpoint_after(&events);
    let mut blocked = lot.lock().await;
    let projection = lot.projection();
    // The whole batch at once when no order in it is blocked; one event at a time when the view refuses the
    // batch, so that only the refused events are parked.
    let fast = !events.iter().any(|e| blocked.contains(e.order_id.as_str()));
    let whole = if fast { Some(projection.apply(&events, checkpoint).await) } else { None };
    match whole {
        Some(Ok(report)) => {
            telemetry::projection_events(name, ProjectionOutcome::Applied, report.applied);
            telemetry::projection_events(name, ProjectionOutcome::Skipped, report.skipped);
            traced(name, &events);
        }
        Some(Err(ViewError::Unavailable(e))) => {
            telemetry::projection_events(name, ProjectionOutcome::Failed, events.len() as u64);
            return BatchOutcome::Failed(e);
        }
        Some(Err(_)) | None => {
            for event in &events {
                let order = event.order_id.as_str();
                let outcome = if blocked.contains(order) {
                    Err(EventFailure::Refused { error: "an earlier event of this order is parked".into(), attempts: 0 })
                } else {
                    lot.apply_with_retries(event).await
                };
                let parked = match outcome {
                    Ok(report) => {
                        telemetry::projection_events(name, ProjectionOutcome::Applied, report.applied);
                        telemetry::projection_events(name, ProjectionOutcome::Skipped, report.skipped);
                        traced(name, std::slice::from_ref(event));
                        Ok(())
                    }
                    Err(EventFailure::Transient(e)) => {
                        telemetry::projection_events(name, ProjectionOutcome::Failed, 1);
                        return BatchOutcome::Failed(e);
                    }
                    Err(EventFailure::Refused { error, attempts }) => {
                        telemetry::projection_events(name, ProjectionOutcome::Failed, u64::from(attempts));
                        lot.park(&mut blocked, event, error, attempts).await
                    }
                };
                if let Err(e) = parked {
                    return BatchOutcome::Failed(format!("could not park an event: {e}"));
                }
            }
            // Every event is applied or parked: move the checkpoint past the batch.
            if let Err(e) = projection.apply(&[], checkpoint).await {
                return BatchOutcome::Failed(e.to_string());
            }
        }
    }
    drop(blocked);
    if let Err(e) = feed.ack(&events).await {
        return BatchOutcome::Failed(e.to_string());
    }
    let lag = (Utc::now() - last.recorded_at).to_std().unwrap_or_default();
    status.lag_millis.store(lag.as_millis() as u64, Ordering::Relaxed);
    telemetry::projection_lag(name, lag);
    if let Some(position) = feed.position().or(checkpoint) {
        status.position.store(position, Ordering::Relaxed);
    }
    status.progress.send_modify(|n| *n = n.wrapping_add(1));
    BatchOutcome::Applied
}

/// Exponential backoff with jitter, bounded at 30 s.
fn backoff(failures: u64) -> Duration {
    let base = 100u64.saturating_mul(1 << failures.min(9)).min(30_000);
    let jitter = rand::random_range(0..=base / 4);
    Duration::from_millis(base + jitter)
}

/// Forget the view's checkpoint and read the whole feed again (the view dedupes, so totals stay the same).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Replay;

impl Handler<Replay> for Projector {
    type Result = AtomicResponse<Self, Result<(), String>>;

    fn handle(&mut self, _: Replay, _ctx: &mut Self::Context) -> Self::Result {
        let projection = Arc::clone(self.lot.projection());
        let work = async move { projection.reset_checkpoint().await.map_err(|e| e.to_string()) };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, _ctx| {
            if result.is_ok() {
                // The feed moves back with the next batch (the feed may be out with a batch right now).
                act.pending_seek = Some(0);
            }
            result
        })))
    }
}

/// Reads the whole write model into `rebuilder` and swaps it in, holding the projection's lock so that no batch,
/// replay or discard runs meanwhile. Returns the number of events applied. The next chunk is read while the
/// current one is applied (both run on the blocking pool, so on two cores at once). A read or apply step that
/// fails for a passing reason is retried with backoff (both are idempotent: the copy dedupes); on failure the
/// copy is given up and the current view stays.
async fn fill(
    mut rebuilder: Box<dyn Rebuilder>,
    source: &dyn RebuildSource,
    lot: &ParkingLot,
    status: &ProjectionStatus,
) -> Result<u64, String> {
    let _exclusive = lot.lock().await;
    let mut total = 0u64;
    let read_all = async {
        let mut position = 0u64;
        let mut chunk = read_chunk(source, None, status).await?;
        loop {
            let RebuildChunk { events, next, checkpoint } = chunk;
            let following = async {
                match &next {
                    Some(cursor) => Some(read_chunk(source, Some(cursor), status).await),
                    None => None,
                }
            };
            let applied = apply_chunk(&mut *rebuilder, events, checkpoint, &mut total, &mut position, status);
            let (applied, following) = tokio::join!(applied, following);
            applied?;
            match following {
                Some(next) => chunk = next?,
                None => return Ok::<_, String>(()),
            }
        }
    };
    if let Err(e) = read_all.await {
        rebuilder.abort().await;
        return Err(e);
    }
    rebuilder.finish().await.map_err(|e| e.to_string())?;
    Ok(total)
}

/// One read of the write model for a rebuild, retried with backoff.
async fn read_chunk(
    source: &dyn RebuildSource,
    cursor: Option<&str>,
    status: &ProjectionStatus,
) -> Result<RebuildChunk, String> {
    let mut attempt = 0;
    loop {
        match source.read(cursor, REBUILD_CHUNK).await {
            Ok(chunk) => return Ok(chunk),
            Err(e) if attempt + 1 < REBUILD_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(projection = status.name, error = %e, attempt, "rebuild read failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Applies a chunk in steps, so progress moves at a steady pace even where a chunk is slow to apply (the
/// DynamoDB view's transactions). A step's events keep their order, so each order's stay in version
/// order; the checkpoint goes with the chunk's last step only.
async fn apply_chunk(
    rebuilder: &mut dyn Rebuilder,
    events: Vec<StoredEvent>,
    chunk_checkpoint: Option<u64>,
    total: &mut u64,
    position: &mut u64,
    status: &ProjectionStatus,
) -> Result<(), String> {
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let step: Arc<[StoredEvent]> = events.by_ref().take(REBUILD_STEP).collect();
        let checkpoint = chunk_checkpoint.filter(|_| events.peek().is_none());
        let mut attempt = 0;
        loop {
            match rebuilder.apply(Arc::clone(&step), checkpoint).await {
                Ok(()) => break,
                Err(ViewError::Unavailable(e)) if attempt + 1 < REBUILD_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(projection = status.name, error = %e, attempt, "rebuild step failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        *total += step.len() as u64;
        // A log position where the source has one, else the count of events read (see RebuildProgress).
        *position = match chunk_checkpoint {
            None => *total,
            Some(_) => checkpoint.unwrap_or(*position),
        };
        status.rebuild_progress(*position, step.len() as u64);
    }
    Ok(())
}

/// A running projector: its shared status, its parked events and its address.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub status: Arc<ProjectionStatus>,
    pub lot: ParkingLot,
    pub addr: Addr<Projector>,
}

/// The application's projectors, by name, with the store of their parked events.
#[derive(Clone)]
pub struct Projections {
    handles: Arc<Vec<ProjectionHandle>>,
    parked: Arc<dyn ParkedStore>,
    poison: PoisonSwitch,
    /// Where rebuilds read the write model from.
    source: Arc<dyn RebuildSource>,
    /// The Streams bridge's status and address, where there is a bridge.
    bridge: Option<Arc<ProjectionStatus>>,
    bridge_addr: Option<Addr<Bridge>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection named {0}")]
    UnknownProjection(String),
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    /// The view's backend could not make the fresh copy (nothing changed; try again later).
    #[error("cannot start the rebuild: {0}")]
    Unavailable(String),
}

/// Events read from the write model per rebuild read (DynamoDB also stops a page at 1 MB).
const REBUILD_CHUNK: usize = 5000;

/// Events applied to the fresh copy per rebuild step; progress moves after each.
const REBUILD_STEP: usize = 500;

/// Tries of one rebuild read or step before the rebuild gives up.
const REBUILD_ATTEMPTS: u64 = 5;

impl Projections {
    pub fn new(
        handles: Vec<ProjectionHandle>,
        parked: Arc<dyn ParkedStore>,
        poison: PoisonSwitch,
        source: Arc<dyn RebuildSource>,
    ) -> Self {
        Self { handles: Arc::new(handles), parked, poison, source, bridge: None, bridge_addr: None }
    }

    /// Starts rebuilding a view from the write model into a fresh copy, swapped in when it has caught up.
    /// Queries keep being served from the current view meanwhile; the projector waits (its lag grows) and
    /// then goes on from where it was, its re-delivered events deduplicated by the new view. Progress shows
    /// in [`ProjectionInfo::rebuild`].
    pub async fn rebuild(&self, name: &str) -> Result<(), RebuildError> {
        let handle = self
            .handles
            .iter()
            .find(|h| h.status.name == name)
            .ok_or_else(|| RebuildError::UnknownProjection(name.to_owned()))?;
        let source = Arc::clone(&self.source);
        if !handle.status.begin_rebuild(source.head().await) {
            return Err(RebuildError::AlreadyRunning(name.to_owned()));
        }
        let (lot, status) = (handle.lot.clone(), Arc::clone(&handle.status));
        let rebuilder = match lot.projection().rebuild().await {
            Ok(rebuilder) => rebuilder,
            Err(e) => {
                status.end_rebuild();
                return Err(RebuildError::Unavailable(e.to_string()));
            }
        };
        actix::spawn(async move {
            let started = std::time::Instant::now();
            let result = fill(rebuilder, &*source, &lot, &status).await;
            status.end_rebuild();
            match result {
                Ok(events) => tracing::info!(projection = status.name, events, elapsed = ?started.elapsed(),
                    rate = events as f64 / started.elapsed().as_secs_f64().max(1e-9), "rebuild swapped in"),
                Err(e) => {
                    tracing::error!(projection = status.name, error = %e, "rebuild failed; the current view stays")
                }
            }
        });
        Ok(())
    }

    /// Every parked event, oldest first.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, ViewError> {
        self.parked.list().await
    }

    /// The `projections.poison_order_prefix` test hook, switchable at run time.
    pub fn poison(&self) -> &PoisonSwitch {
        &self.poison
    }

    /// Shows the Streams bridge (distributed profile) beside the projectors: in `/admin/projections` and in
    /// readiness (`projection:bridge`). It has no view, so nothing to rebuild, replay or park.
    pub fn with_bridge(mut self, addr: Addr<Bridge>, status: Arc<ProjectionStatus>) -> Self {
        // Held for the supervisor: it restarts a crashed actor only while someone still holds its address.
        self.bridge_addr = Some(addr);
        self.bridge = Some(status);
        self
    }

    pub fn infos(&self) -> Vec<ProjectionInfo> {
        self.handles.iter().map(|h| &h.status).chain(&self.bridge).map(|s| s.info()).collect()
    }

    pub fn status(&self, name: &str) -> Option<&Arc<ProjectionStatus>> {
        self.handles.iter().map(|h| &h.status).chain(&self.bridge).find(|s| s.name == name)
    }

    /// Every projector is running and not stuck failing.
    pub fn healthy(&self) -> bool {
        self.handles.iter().all(|h| h.addr.connected() && h.status.healthy()) && self.bridge.iter().all(|s| s.healthy())
    }

    /// The parking lot of one projection.
    pub fn lot(&self, name: &str) -> Option<&ParkingLot> {
        self.handles.iter().find(|h| h.status.name == name).map(|h| &h.lot)
    }

    /// Replays the whole feed into one view (see [`Replay`]).
    pub async fn replay(&self, name: &str) -> Result<(), String> {
        let handle =
            self.handles.iter().find(|h| h.status.name == name).ok_or_else(|| format!("no projection {name}"))?;
        handle.addr.send(Replay).await.map_err(|e| e.to_string())?
    }
}
