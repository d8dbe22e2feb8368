//! `Projector`: keeps one view up to date from the event feed. It works in batches: take the next events,
//! apply them to the view (which stores the feed checkpoint in the same transaction), then ack them to the
//! feed. A batch that fails is not acked, so it is delivered again after a backoff; views are idempotent, so a
//! redelivery changes nothing. Each batch is one message to itself, so control messages (replay) are handled
//! between batches. Events the view refuses go to the parking lot (`projection::parking`); the status it reports
//! into is `projection::status`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use futures_util::future::BoxFuture;

use crate::feed::{FeedError, FeedSubscription};
use crate::projection::parking::{EventFailure, ParkingLot};
use crate::projection::{FIRST_RETRY, ProjectionStatus, ProjectorState, backoff};
use crate::telemetry::{self, ProjectionOutcome};
use crate::views::ViewError;

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
        let crashes = self.status.crash_streak();
        ctx.notify_later(OpenFeed, if crashes == 0 { Duration::ZERO } else { backoff(FIRST_RETRY, crashes) });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.status.set_state(ProjectorState::Stopped);
    }
}

impl Supervised for Projector {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        let crashes = self.status.record_restart();
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
                act.status.mark_running();
                ctx.notify(NextBatch);
            }
            Err(e) => {
                let failures = act.status.record_failure();
                tracing::warn!(projection = act.status.name, error = %e, "cannot open the feed; retrying");
                ctx.notify_later(OpenFeed, backoff(FIRST_RETRY, failures));
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
                let crashes = act.status.record_crash();
                tracing::error!(projection = act.status.name, crashes, "projection batch panicked; restarting");
                ctx.stop();
                return;
            };
            act.feed = Some(feed);
            match outcome {
                // A batch that applied events got past where a crash can happen; an idle one did not.
                BatchOutcome::Applied => {
                    act.status.record_step(true);
                    ctx.notify(NextBatch);
                }
                BatchOutcome::Idle => {
                    act.status.record_step(false);
                    ctx.notify(NextBatch);
                }
                BatchOutcome::Failed(error) => {
                    let failures = act.status.record_failure();
                    let backoff = backoff(FIRST_RETRY, failures);
                    tracing::warn!(projection = act.status.name, %error, failures, ?backoff, "projection batch failed; retrying");
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
        status.set_lag(Duration::ZERO);
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
    status.set_lag(lag);
    telemetry::projection_lag(name, lag);
    if let Some(position) = feed.position().or(checkpoint) {
        status.set_position(position);
    }
    status.batch_applied();
    BatchOutcome::Applied
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
