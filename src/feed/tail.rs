//! The embedded feed: a tail of the SQLite event log by global position.
//!
//! A projector that keeps up never reads the log: the store hands every group commit to the feed in memory
//! ([`Committed`]), and the tail takes the events from there as long as each commit continues where the tail's
//! buffer ends. Whenever it cannot tell that it has every event in order — at start, after a seek (replay,
//! rebuild), when it lagged behind the in-memory channel or its buffer is full — it reads the log from its
//! position instead, until it has caught up with the head. The log stays the truth; memory is only a shortcut.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::watch;

use super::{FeedError, FeedSubscription};
use crate::store::StoredEvent;
use crate::store::sqlite::{Committed, SqliteEventStore};

/// At most one batch per this long while events keep coming (Kafka's `linger.ms`): a view's commit rewrites the
/// same hot pages (index interiors, the text index's newest segment) whether it carries 5 events or 500, so under
/// load fewer, larger batches cost less per event. A quiet feed delivers at once.
const LINGER: Duration = Duration::from_millis(10);

/// Events held in memory for a projector that is behind (a view that is down, a rebuild): past this, commits
/// are left to the log, so a stalled projector costs a bounded amount of memory.
const MAX_BUFFERED: usize = 50_000;

pub struct LogTail {
    store: Arc<SqliteEventStore>,
    head: watch::Receiver<u64>,
    live: broadcast::Receiver<Committed>,
    /// Acked up to here.
    position: u64,
    /// Every event in `(position, buffered_to]`, in log order (delivered, not yet acked, or not yet delivered).
    pending: VecDeque<StoredEvent>,
    buffered_to: u64,
    /// When the last batch was handed out.
    delivered_at: tokio::time::Instant,
}

impl LogTail {
    /// A tail that delivers the events after `position` (the view's stored checkpoint).
    pub fn new(store: Arc<SqliteEventStore>, position: u64) -> Self {
        let head = store.head();
        let live = store.subscribe();
        // As if the last batch went out a linger ago: the first one goes at once.
        let now = tokio::time::Instant::now();
        let delivered_at = now.checked_sub(LINGER).unwrap_or(now);
        Self { store, head, live, position, pending: VecDeque::new(), buffered_to: position, delivered_at }
    }

    /// Takes a group commit from memory if it continues the buffer; anything else is left to the log.
    fn accept(&mut self, commit: &Committed) {
        if commit.head <= self.buffered_to || commit.after > self.buffered_to || self.pending.len() >= MAX_BUFFERED {
            return;
        }
        let after = self.buffered_to;
        self.pending.extend(commit.events.iter().filter(|e| e.position > after).cloned());
        self.buffered_to = commit.head;
    }

    /// Takes every commit waiting in memory.
    fn drain_live(&mut self) {
        loop {
            match self.live.try_recv() {
                Ok(commit) => self.accept(&commit),
                // Missed commits are read from the log (the head shows they exist).
                Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    /// Reads the log after the buffer, when the head shows commits the buffer does not have.
    async fn catch_up(&mut self, max: usize) -> Result<(), FeedError> {
        let head = *self.head.borrow_and_update();
        if head <= self.buffered_to || self.pending.len() >= MAX_BUFFERED {
            return Ok(());
        }
        let events = self.store.read_all(self.buffered_to, max).await?;
        if let Some(last) = events.last() {
            self.buffered_to = last.position;
        }
        self.pending.extend(events);
        Ok(())
    }

    fn front(&self, max: usize) -> Vec<StoredEvent> {
        self.pending.iter().take(max).cloned().collect()
    }
}

#[async_trait]
impl FeedSubscription for LogTail {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<StoredEvent>, FeedError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.drain_live();
            if self.pending.is_empty() {
                self.catch_up(max).await?;
            }
            if !self.pending.is_empty() {
                let ready = self.delivered_at + LINGER;
                if self.pending.len() < max && tokio::time::Instant::now() < ready {
                    tokio::time::sleep_until(ready).await;
                    self.drain_live();
                }
                self.delivered_at = tokio::time::Instant::now();
                return Ok(self.front(max));
            }
            // Nothing new committed yet: sleep until the next commit or the timeout.
            tokio::select! {
                commit = self.live.recv() => match commit {
                    Ok(commit) => self.accept(&commit),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    // The writer is gone (shutting down): only the log is left, and the head no longer moves.
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(deadline).await;
                        return Ok(Vec::new());
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    fn checkpoint_after(&self, batch: &[StoredEvent]) -> Option<u64> {
        batch.last().map(|e| e.position)
    }

    async fn ack(&mut self, batch: &[StoredEvent]) -> Result<(), FeedError> {
        if let Some(last) = batch.last() {
            self.position = self.position.max(last.position);
        }
        while self.pending.front().is_some_and(|e| e.position <= self.position) {
            self.pending.pop_front();
        }
        self.buffered_to = self.buffered_to.max(self.position);
        Ok(())
    }

    async fn seek(&mut self, position: u64) -> Result<(), FeedError> {
        self.position = position;
        self.pending.clear();
        self.buffered_to = position;
        Ok(())
    }

    fn position(&self) -> Option<u64> {
        Some(self.position)
    }
}
