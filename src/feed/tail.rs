//! The embedded feed: a tail of the SQLite event log by global position. The store announces every commit on
//! a watch channel, so a caught-up projector wakes at once instead of polling.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{FeedError, FeedSubscription};
use crate::store::StoredEvent;
use crate::store::sqlite::SqliteEventStore;

pub struct LogTail {
    store: Arc<SqliteEventStore>,
    head: watch::Receiver<u64>,
    position: u64,
}

impl LogTail {
    /// A tail that delivers the events after `position` (the view's stored checkpoint).
    pub fn new(store: Arc<SqliteEventStore>, position: u64) -> Self {
        let head = store.head();
        Self { store, head, position }
    }
}

#[async_trait]
impl FeedSubscription for LogTail {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<StoredEvent>, FeedError> {
        if *self.head.borrow_and_update() <= self.position {
            // Nothing new committed yet: sleep until the next commit or the timeout.
            let _ = tokio::time::timeout(wait, self.head.changed()).await;
        }
        Ok(self.store.read_all(self.position, max).await?)
    }

    fn checkpoint_after(&self, batch: &[StoredEvent]) -> Option<u64> {
        batch.last().map(|e| e.position)
    }

    async fn ack(&mut self, batch: &[StoredEvent]) -> Result<(), FeedError> {
        if let Some(last) = batch.last() {
            self.position = self.position.max(last.position);
        }
        Ok(())
    }

    async fn seek(&mut self, position: u64) -> Result<(), FeedError> {
        self.position = position;
        Ok(())
    }

    fn position(&self) -> Option<u64> {
        Some(self.position)
    }
}
