//! The event feed between the write model and the projectors. A projector reads it through the
//! [`FeedSubscription`] port: the embedded profile tails the SQLite log by global position; the distributed
//! profile consumes Kafka or Kinesis Data Streams with the same port. The bridge publishes through the
//! [`EventSink`] port: Kafka, Kinesis, or both at once (fan-out).

pub mod cloudevents;
pub mod kafka;
pub mod kinesis;
pub mod shards;
pub mod streams;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::store::{StoreUnavailable, StoredEvent};

#[derive(Debug, thiserror::Error)]
#[error("event feed unavailable: {0}")]
pub struct FeedError(pub String);

impl From<StoreUnavailable> for FeedError {
    fn from(e: StoreUnavailable) -> Self {
        FeedError(e.0)
    }
}

/// The feed's broker as readiness sees it: `/health/ready` check `feed`.
#[async_trait]
pub trait FeedHealth: Send + Sync {
    async fn ping(&self) -> Result<(), FeedError>;
}

/// The embedded feed is the event store's own log, read in process: nothing to reach beyond the store, which
/// readiness checks as `eventStore`.
pub struct InProcessFeed;

#[async_trait]
impl FeedHealth for InProcessFeed {
    async fn ping(&self) -> Result<(), FeedError> {
        Ok(())
    }
}

/// How long one feed check's result is reused: every load balancer and orchestrator probing every instance
/// every few seconds should not each cost the broker a request.
const HEALTH_TTL: Duration = Duration::from_secs(2);

/// The distributed profile's `feed` check: every transport the instance uses (Kafka, Kinesis), checked
/// together; the result is kept for [`HEALTH_TTL`], and concurrent probes share one round of requests.
pub struct FeedChecks {
    checks: Vec<Arc<dyn FeedHealth>>,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

impl FeedChecks {
    pub fn new(checks: Vec<Arc<dyn FeedHealth>>) -> Self {
        Self { checks, last: tokio::sync::Mutex::new(None) }
    }
}

#[async_trait]
impl FeedHealth for FeedChecks {
    async fn ping(&self) -> Result<(), FeedError> {
        // Held across the requests: probes that come while some are out wait for their answer.
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < HEALTH_TTL
        {
            return result.clone().map_err(FeedError);
        }
        let results = futures_util::future::join_all(self.checks.iter().map(|c| c.ping())).await;
        let failures: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.0)).collect();
        let result = if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) };
        *last = Some((std::time::Instant::now(), result.clone()));
        result.map_err(FeedError)
    }
}

/// One projector's position in the feed. Events come in feed order (per order: version order).
/// Nothing moves until [`FeedSubscription::ack`]: a batch that was not acked is delivered again.
#[async_trait]
pub trait FeedSubscription: Send + 'static {
    /// The next events after the acked position, waiting up to `wait` for some; empty when none came.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<StoredEvent>, FeedError>;

    /// The checkpoint the view stores atomically with this batch, if this feed keeps checkpoints in the view.
    fn checkpoint_after(&self, batch: &[StoredEvent]) -> Option<u64>;

    /// The batch is durably applied: move past it.
    async fn ack(&mut self, batch: &[StoredEvent]) -> Result<(), FeedError>;

    /// Starts again from `position` (0 = the beginning of the feed).
    async fn seek(&mut self, position: u64) -> Result<(), FeedError>;

    /// How far into the feed the acked events reach, for `/admin/projections` (the log position; on Kafka,
    /// the sum of the committed offsets). `None` when this feed cannot tell.
    fn position(&self) -> Option<u64> {
        None
    }
}

/// Where the bridge publishes the events of one change-feed page. Every sink receives the same events in the
/// same order; the bridge checkpoints its change feed only after every sink returned `Ok`, so a failure in any
/// of them means the page is published again (to all of them: duplicates, which consumers dedupe, never loss).
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// For logs and errors: `kafka`, `kinesis`.
    fn name(&self) -> &'static str;

    /// Publishes `events` (in page order, so one order's events in version order) and returns once every one
    /// of them is acknowledged by the transport.
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), FeedError>;
}
