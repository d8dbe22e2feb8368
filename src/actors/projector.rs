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

use crate::feed::FeedSubscription;
use crate::telemetry::{self, ProjectionOutcome};
use crate::views::Projection;

/// Live state of one projection, shared with `/admin/projections` and readiness.
pub struct ProjectionStatus {
    pub name: &'static str,
    state: AtomicU8,
    position: AtomicU64,
    lag_millis: AtomicU64,
    restarts: AtomicU64,
    parked: AtomicU64,
    consecutive_failures: AtomicU64,
    /// Bumped after every applied batch: `minVersion` readers wait on it.
    progress: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProjectorState {
    Starting,
    Running,
    Retrying,
    Stopped,
}

impl ProjectorState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Running,
            2 => Self::Retrying,
            3 => Self::Stopped,
            _ => Self::Starting,
        }
    }
}

/// One row of `GET /admin/projections`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionInfo {
    pub name: &'static str,
    pub status: ProjectorState,
    pub position: u64,
    pub lag_seconds: f64,
    pub restarts: u64,
    pub parked: u64,
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
            progress: watch::channel(0).0,
        })
    }

    fn set_state(&self, state: ProjectorState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn info(&self) -> ProjectionInfo {
        ProjectionInfo {
            name: self.name,
            status: ProjectorState::from_u8(self.state.load(Ordering::Relaxed)),
            position: self.position.load(Ordering::Relaxed),
            lag_seconds: self.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0,
            restarts: self.restarts.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }

    /// Healthy unless the projector keeps failing.
    pub fn healthy(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) < 5
    }

    /// Records where the view starts (its stored checkpoint).
    pub fn set_position(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
    }

    /// Changes after every batch the view applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }
}

pub struct Projector {
    projection: Arc<dyn Projection>,
    /// Lent to the batch in progress (`None` while one runs).
    feed: Option<Box<dyn FeedSubscription>>,
    /// A position the feed must move to before its next batch (set by [`Replay`]).
    pending_seek: Option<u64>,
    status: Arc<ProjectionStatus>,
    batch_size: usize,
}

impl Projector {
    pub fn new(
        projection: Arc<dyn Projection>,
        feed: Box<dyn FeedSubscription>,
        status: Arc<ProjectionStatus>,
        batch_size: usize,
    ) -> Self {
        Self { projection, feed: Some(feed), pending_seek: None, status, batch_size }
    }
}

impl Actor for Projector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.status.set_state(ProjectorState::Running);
        ctx.notify(NextBatch);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.status.set_state(ProjectorState::Stopped);
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
        let projection = Arc::clone(&self.projection);
        let status = Arc::clone(&self.status);
        let max = self.batch_size;
        let work = async move {
            if let Some(position) = seek
                && let Err(e) = feed.seek(position).await
            {
                return (feed, BatchOutcome::Failed(e.to_string()));
            }
            let outcome = run_batch(&mut *feed, &*projection, &status, max).await;
            (feed, outcome)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|(feed, outcome), act, ctx| {
            act.feed = Some(feed);
            match outcome {
                BatchOutcome::Idle | BatchOutcome::Applied => {
                    act.status.consecutive_failures.store(0, Ordering::Relaxed);
                    act.status.set_state(ProjectorState::Running);
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

async fn run_batch(
    feed: &mut dyn FeedSubscription,
    projection: &dyn Projection,
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
    match projection.apply(&events, checkpoint).await {
        Ok(report) => {
            telemetry::projection_events(name, ProjectionOutcome::Applied, report.applied);
            telemetry::projection_events(name, ProjectionOutcome::Skipped, report.skipped);
        }
        Err(e) => {
            telemetry::projection_events(name, ProjectionOutcome::Failed, events.len() as u64);
            return BatchOutcome::Failed(e.to_string());
        }
    }
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
        let projection = Arc::clone(&self.projection);
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

/// A running projector: its shared status and its address.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub status: Arc<ProjectionStatus>,
    pub addr: Addr<Projector>,
}

/// The application's projectors, by name.
#[derive(Clone, Default)]
pub struct Projections(Arc<Vec<ProjectionHandle>>);

impl Projections {
    pub fn new(handles: Vec<ProjectionHandle>) -> Self {
        Self(Arc::new(handles))
    }

    pub fn infos(&self) -> Vec<ProjectionInfo> {
        self.0.iter().map(|h| h.status.info()).collect()
    }

    pub fn status(&self, name: &str) -> Option<&Arc<ProjectionStatus>> {
        self.0.iter().find(|h| h.status.name == name).map(|h| &h.status)
    }

    /// Every projector is running and not stuck failing.
    pub fn healthy(&self) -> bool {
        self.0.iter().all(|h| h.addr.connected() && h.status.healthy())
    }

    /// Replays the whole feed into one view (see [`Replay`]).
    pub async fn replay(&self, name: &str) -> Result<(), String> {
        let handle = self.0.iter().find(|h| h.status.name == name).ok_or_else(|| format!("no projection {name}"))?;
        handle.addr.send(Replay).await.map_err(|e| e.to_string())?
    }
}
