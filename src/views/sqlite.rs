//! Plumbing shared by the embedded (SQLite) views: the checkpoint table and the batch transaction that
//! applies events and moves the checkpoint together.

use rusqlite::{Connection, OptionalExtension, params};

use super::{ApplyReport, ViewError};
use crate::sql::{DbError, WriteConn};
use crate::store::StoredEvent;

pub(super) const CHECKPOINTS_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS checkpoints (projection TEXT PRIMARY KEY, position INTEGER NOT NULL);";

pub(super) fn save_checkpoint(conn: &Connection, projection: &str, position: u64) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO checkpoints (projection, position) VALUES (?1, ?2)
         ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
    )?
    .execute(params![projection, position])?;
    Ok(())
}

pub(super) fn read_checkpoint(conn: &Connection, projection: &str) -> Result<u64, DbError> {
    Ok(conn
        .prepare_cached("SELECT position FROM checkpoints WHERE projection = ?1")?
        .query_row([projection], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Applies `events` with `apply_one` (true = applied, false = duplicate skipped) and saves `checkpoint`, all
/// in one transaction: either the whole batch and its checkpoint are durable, or none of it.
pub(super) async fn apply_batch(
    writer: &WriteConn,
    projection: &'static str,
    events: &[StoredEvent],
    checkpoint: Option<u64>,
    apply_one: fn(&Connection, &StoredEvent) -> Result<bool, ViewError>,
) -> Result<ApplyReport, ViewError> {
    let events = events.to_vec();
    writer
        .write(move |conn| {
            let tx = conn.transaction()?;
            let mut report = ApplyReport::default();
            for event in &events {
                match apply_one(&tx, event) {
                    Ok(true) => report.applied += 1,
                    Ok(false) => report.skipped += 1,
                    Err(e) => return Ok(Err(e)),
                }
            }
            if let Some(position) = checkpoint {
                save_checkpoint(&tx, projection, position)?;
            }
            tx.commit()?;
            Ok(Ok(report))
        })
        .await?
}
