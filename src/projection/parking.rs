//! Retry-then-park for one projection (docs/design.md guarantee 5).
//!
//! A batch the view refuses is applied again one event at a time. An event the view refuses
//! (`ViewError::Rejected` / `OutOfOrder`) is retried `max_attempts` times with exponential backoff, then
//! parked with its error; its order is then *blocked*: every later event of that order is parked behind it,
//! so an order's events are never applied out of order, while other orders keep flowing. A backend that is
//! down (`ViewError::Unavailable`) is not the event's fault: nothing is parked, the batch is retried later.
//!
//! Replaying a parked event applies it and then the events parked behind it, in version order, stopping at
//! the first that fails again; discarding one records it as applied-without-effect (`Projection::skip`) and
//! lets the rest proceed the same way. One async mutex over the blocked set serializes batches, replays and
//! discards of a projection, so a replay never races the projector parking a newer event of the same order.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Mutex, MutexGuard};

use super::status::ProjectionStatus;
use crate::store::StoredEvent;
use crate::telemetry::{self, ProjectionOutcome};
use crate::views::parked::{ParkedEvent, ParkedStore};
use crate::views::{ApplyReport, Projection, ViewError};

/// How hard to try an event before parking it.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
}

/// Why applying one event did not work out.
pub enum EventFailure {
    /// The backend is unavailable: try the batch again later, park nothing.
    Transient(String),
    /// The view refused the event `attempts` times.
    Refused { error: String, attempts: u32 },
}

/// What a replay or discard did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    /// Parked events applied (and removed), in order.
    pub replayed: Vec<String>,
    /// Events of the same order still parked.
    pub remaining: usize,
    /// Why the replay stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParkingError {
    #[error("no parked event {0}")]
    NotFound(String),
    #[error(
        "parked event {id} waits behind {earlier}, an earlier event of the same order: replay or discard that first"
    )]
    NotFirst { id: String, earlier: String },
    #[error(transparent)]
    View(#[from] ViewError),
}

/// One projection's parked events and blocked orders.
#[derive(Clone)]
pub struct ParkingLot {
    projection: Arc<dyn Projection>,
    store: Arc<dyn ParkedStore>,
    blocked: Arc<Mutex<HashSet<String>>>,
    status: Arc<ProjectionStatus>,
    retry: RetryPolicy,
}

impl ParkingLot {
    /// Loads the projection's blocked orders from the store.
    pub async fn open(
        projection: Arc<dyn Projection>,
        store: Arc<dyn ParkedStore>,
        status: Arc<ProjectionStatus>,
        retry: RetryPolicy,
    ) -> Result<Self, ViewError> {
        let mine: Vec<ParkedEvent> =
            store.list().await?.into_iter().filter(|p| p.projection == projection.name()).collect();
        let blocked = mine.iter().map(|p| p.event.order_id.to_string()).collect();
        let lot = Self { projection, store, blocked: Arc::new(Mutex::new(blocked)), status, retry };
        lot.set_parked_count(mine.len() as u64);
        Ok(lot)
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    pub fn projection(&self) -> &Arc<dyn Projection> {
        &self.projection
    }

    /// Held for the whole of a batch, a replay or a discard.
    pub async fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.blocked.lock().await
    }

    fn set_parked_count(&self, n: u64) {
        self.status.set_parked(n);
        telemetry::projection_parked(self.name(), n);
    }

    fn add_parked(&self, delta: i64) {
        let n = (self.status.info().parked as i64 + delta).max(0) as u64;
        self.set_parked_count(n);
    }

    /// Applies one event, retrying a refusal with exponential backoff.
    pub async fn apply_with_retries(&self, event: &StoredEvent) -> Result<ApplyReport, EventFailure> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.projection.apply(std::slice::from_ref(event), None).await {
                Ok(report) => return Ok(report),
                Err(ViewError::Unavailable(e)) => return Err(EventFailure::Transient(e)),
                Err(e) if attempts >= self.retry.max_attempts => {
                    return Err(EventFailure::Refused { error: e.to_string(), attempts });
                }
                Err(e) => {
                    let pause = self.retry.backoff.saturating_mul(1 << (attempts - 1).min(10));
                    tracing::debug!(projection = self.name(), order = %event.order_id, version = event.version,
                        error = %e, attempts, "event refused; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Parks `event` (durably) and blocks its order. Parking the same event again updates it.
    pub async fn park(
        &self,
        blocked: &mut HashSet<String>,
        event: &StoredEvent,
        error: String,
        attempts: u32,
    ) -> Result<(), ViewError> {
        let mut parked = ParkedEvent::new(self.name(), event.clone(), error, attempts);
        // One id per (projection, event): parking again after a redelivery updates instead of duplicating.
        parked.id = format!("{}-{}", self.name(), event.event_id);
        let known = self.store.list().await?.iter().any(|p| p.id == parked.id);
        self.store.park(&parked).await?;
        let newly = blocked.insert(event.order_id.to_string());
        tracing::warn!(projection = self.name(), id = %parked.id, order = %event.order_id, version = event.version,
            error = %parked.error, attempts, behind = !newly, "event parked");
        if !known {
            telemetry::projection_events(self.name(), ProjectionOutcome::Parked, 1);
            self.add_parked(1);
        }
        Ok(())
    }

    /// The parked events of `order_id` in this projection, in version order.
    async fn parked_of(&self, order_id: &str) -> Result<Vec<ParkedEvent>, ViewError> {
        let mut mine: Vec<ParkedEvent> = self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|p| p.projection == self.name() && p.event.order_id.as_str() == order_id)
            .collect();
        mine.sort_by_key(|p| p.event.version);
        Ok(mine)
    }

    /// The parked event `id` of this projection, which must be the earliest parked event of its order.
    async fn first_parked(&self, id: &str) -> Result<(ParkedEvent, Vec<ParkedEvent>), ParkingError> {
        let all = self.store.list().await?;
        let target = all
            .iter()
            .find(|p| p.id == id && p.projection == self.name())
            .cloned()
            .ok_or_else(|| ParkingError::NotFound(id.to_owned()))?;
        let queue = self.parked_of(target.event.order_id.as_str()).await?;
        match queue.first() {
            Some(first) if first.id != target.id => {
                Err(ParkingError::NotFirst { id: id.to_owned(), earlier: first.id.clone() })
            }
            _ => Ok((target, queue)),
        }
    }

    /// Applies `queue` (one order's parked events, in version order) until one fails; unblocks the order once
    /// nothing of it is parked any more.
    async fn drain(&self, blocked: &mut HashSet<String>, queue: Vec<ParkedEvent>, order_id: &str) -> ReplayReport {
        let mut report = ReplayReport::default();
        for mut parked in queue {
            match self.projection.apply(std::slice::from_ref(&parked.event), None).await {
                Ok(applied) => {
                    telemetry::projection_events(self.name(), ProjectionOutcome::Applied, applied.applied);
                    telemetry::projection_events(self.name(), ProjectionOutcome::Skipped, applied.skipped);
                    match self.store.remove(&parked.id).await {
                        Ok(_) => {
                            self.add_parked(-1);
                            report.replayed.push(parked.id);
                        }
                        Err(e) => {
                            report.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                Err(e) => {
                    parked.attempts += 1;
                    parked.error = e.to_string();
                    if let Err(e) = self.store.park(&parked).await {
                        tracing::warn!(error = %e, "could not record a failed replay attempt");
                    }
                    report.error = Some(parked.error);
                    break;
                }
            }
        }
        report.remaining = match self.parked_of(order_id).await {
            Ok(rest) => rest.len(),
            Err(e) => {
                report.error.get_or_insert(e.to_string());
                1
            }
        };
        if report.remaining == 0 {
            blocked.remove(order_id);
        }
        report
    }

    /// Replays parked event `id` and, if it applies, the events parked behind it.
    pub async fn replay(&self, id: &str) -> Result<ReplayReport, ParkingError> {
        let mut blocked = self.lock().await;
        let (target, queue) = self.first_parked(id).await?;
        tracing::info!(projection = self.name(), id, order = %target.event.order_id, "replaying parked events");
        Ok(self.drain(&mut blocked, queue, target.event.order_id.as_str()).await)
    }

    /// Discards parked event `id` (recorded as applied without effect, logged) and replays those behind it.
    pub async fn discard(&self, id: &str) -> Result<ReplayReport, ParkingError> {
        let mut blocked = self.lock().await;
        let (target, queue) = self.first_parked(id).await?;
        self.projection.skip(&target.event).await?;
        if self.store.remove(&target.id).await? {
            self.add_parked(-1);
        }
        tracing::warn!(projection = self.name(), id, order = %target.event.order_id, version = target.event.version,
            event_type = target.event.event.type_name(), error = %target.error, "parked event discarded");
        let rest = queue.into_iter().filter(|p| p.id != target.id).collect();
        Ok(self.drain(&mut blocked, rest, target.event.order_id.as_str()).await)
    }
}
