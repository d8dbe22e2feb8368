//! Rebuilding a view from the write model: read the whole event store in chunks into a fresh copy of the view
//! (queries keep being served from the current one), then swap it in. See [`fill`].

use std::sync::Arc;

use super::parking::ParkingLot;
use super::status::ProjectionStatus;
use super::{FIRST_RETRY, backoff};
use crate::store::{RebuildChunk, RebuildSource, StoredEvent};
use crate::views::{Rebuilder, ViewError};

/// Events read from the write model per rebuild read (DynamoDB also stops a page at 1 MB).
const REBUILD_CHUNK: usize = 5000;

/// Events applied to the fresh copy per rebuild step; progress moves after each.
const REBUILD_STEP: usize = 500;

/// Tries of one rebuild read or step before the rebuild gives up.
const REBUILD_ATTEMPTS: u64 = 5;

/// Reads the whole write model into `rebuilder` and swaps it in, holding the projection's lock so that no batch,
/// replay or discard runs meanwhile. Returns the number of events applied. The next chunk is read while the
/// current one is applied (both run on the blocking pool, so on two cores at once). A read or apply step that
/// fails for a passing reason is retried with backoff (both are idempotent: the copy dedupes); on failure the
/// copy is given up and the current view stays.
pub async fn fill(
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
                tokio::time::sleep(backoff(FIRST_RETRY, attempt)).await;
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
                    tokio::time::sleep(backoff(FIRST_RETRY, attempt)).await;
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
