//! Bringing stale view state back to the write model's truth, for views without conditional writes
//! (Meilisearch: [`Projection::repair`]). See docs/adr/007-no-stale-search-documents.md for why these are the
//! places and not others.
//!
//! With several instances a search document can go stale in two ways: an instance writes an order to the index
//! that another instance's rebuild is about to swap out (the swap drops the write, and its Kafka offset is
//! already committed), or the previous owner of a partition lands a late write over the new owner's newer
//! document. The order's next event then meets a document older than its predecessor, and a stale document of
//! an order that gets no more events stays stale. Two repairs close both:
//!
//! - **A gap is repaired, not parked** (`actors::projector`): an event refused as out of order (the document is
//!   older than the event's predecessor) has the order refolded from its history here. The history holds the
//!   event, so the document comes out at or past it, and nothing is parked for staleness.
//! - **A rebuild reconciles after its swap** (`rebuild::fill`): every order with an event recorded since the
//!   rebuild began (less [`REBUILD_MARGIN`], for clocks of other instances a little behind) is refolded the same
//!   way. Writes that the swap dropped were of such events; writes after the swap reach the new index.
//!
//! A repair is checked after the write: the document read back and the history read again. Another writer may
//! have enqueued a write computed from an older state just before ours was applied, or events may have been
//! appended meanwhile that their owner applied before our write landed; either way the check sees the view
//! behind the store and the order is repaired again (up to [`ROUNDS`] times; a later event repairs the rest).

use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream;

use crate::domain::OrderId;
use crate::store::RebuildSource;
use crate::views::{Projection, ViewError};

/// How far before a rebuild's start its reconciliation looks: events are stamped with the clock of the
/// instance that appended them, which may run behind the rebuilding instance's.
pub const REBUILD_MARGIN: Duration = Duration::from_secs(60);

/// Repairs of one order before giving up on it for now.
const ROUNDS: usize = 5;

/// Orders repaired at once.
const CONCURRENCY: usize = 16;

/// What a reconciliation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Orders rewritten from their history and found current.
    pub repaired: usize,
    /// Orders still behind after [`ROUNDS`] repairs (left to their next event).
    pub behind: usize,
}

/// What a repair of one order came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The view needs no repair (or the order has no events).
    NotNeeded,
    /// The view holds at least the store's latest version, this one.
    Current(u64),
    /// Still behind after [`ROUNDS`] repairs.
    Behind,
}

/// Brings `order_id`'s state in `view` up to its history, checking after each write (see the module doc).
pub async fn repair(view: &dyn Projection, store: &dyn RebuildSource, order_id: &OrderId) -> Result<Repair, ViewError> {
    if !view.repairs() {
        return Ok(Repair::NotNeeded);
    }
    let unavailable = |e: crate::store::StoreUnavailable| ViewError::Unavailable(e.0);
    for _ in 0..ROUNDS {
        let history = store.history(order_id).await.map_err(unavailable)?;
        let Some(holds) = view.repair(&history).await? else { return Ok(Repair::NotNeeded) };
        let latest = store.history(order_id).await.map_err(unavailable)?.last().map_or(0, |e| e.version);
        if holds >= latest {
            return Ok(Repair::Current(latest));
        }
        tracing::debug!(projection = view.name(), order = %order_id, holds, latest, "repaired document behind; again");
    }
    Ok(Repair::Behind)
}

/// Repairs every order with an event recorded at or after `since` (see the module doc).
pub async fn since(
    view: &dyn Projection,
    store: &dyn RebuildSource,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Reconciled, ViewError> {
    if !view.repairs() {
        return Ok(Reconciled::default());
    }
    let orders = store.changed_since(since).await.map_err(|e| ViewError::Unavailable(e.0))?;
    let outcomes: Vec<Result<Repair, ViewError>> =
        stream::iter(&orders).map(|id| repair(view, store, id)).buffer_unordered(CONCURRENCY).collect().await;
    let mut done = Reconciled::default();
    for outcome in outcomes {
        match outcome? {
            Repair::Current(_) => done.repaired += 1,
            Repair::NotNeeded => {}
            Repair::Behind => done.behind += 1,
        }
    }
    Ok(done)
}
