//! The event feed between the write model and the projectors. A projector reads it through the
//! [`FeedSubscription`] port: the embedded profile tails the SQLite log by global position; the distributed
//! profile will consume Kafka (or Kinesis) with the same port.

pub mod cloudevents;
pub mod kafka;
pub mod tail;

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
