//! The embedded event store: one SQLite file in WAL mode.
//!
//! Appends go through a single writer thread that does **group commit**: it takes every append waiting in
//! its queue (up to `max_batch`), writes each inside its own savepoint (so one conflicting append does not
//! spoil the others), commits once, and only then answers each caller. One fsync covers the whole batch.
//! A unique key on (order_id, version) makes the append conditional; the `position` column (rowid) is the
//! global log the embedded feed tails. Since one thread commits, positions become visible in order.
//!
//! Every commit is also handed to the feed in memory ([`Committed`], on a broadcast channel): projectors that
//! keep up take the events from there and read the log back only to catch up (after a start, a rebuild or a
//! lag), so the hot path does not read and decode every event it has just written.
//!
//! A failed append says whether it may have landed (`AppendError::Unavailable` vs `Unknown`, the `outcome` of
//! the command's 503): a full queue or a stopped writer refuses it before any write, and an append whose own
//! statements fail is rolled back to its savepoint; but a batch whose COMMIT fails, or a writer that dies
//! with appends in hand, leaves them unknown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot, watch};
use uuid::Uuid;

use super::{
    AppendError, AppendRequest, EventImport, EventStore, IdempotencyRecord, ImportError, Imported, LoadedStream,
    RawChunk, RawEvent, RebuildChunk, StoreUnavailable, StoredEvent, StoredResponse, codec,
};
use crate::config::{StoreSettings, Synchronous};
use crate::domain::{Order, OrderId};
use crate::sql::{self, DbError, ReadPool};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id       TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    trace          TEXT,
    UNIQUE (order_id, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    order_id TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    state    TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope        TEXT PRIMARY KEY,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    etag         TEXT,
    location     TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_at);
";

const EVENT_COLUMNS: &str = "event_id, order_id, version, position, schema_version, recorded_at, payload, trace, type";

type Reply = oneshot::Sender<Result<Vec<StoredEvent>, AppendError>>;

/// One group commit, as the in-memory feed carries it: every event whose log position is in `(after, head]`,
/// in log order. A reader at position `after` (or anywhere up to `head`) can go on from it without the log.
#[derive(Debug, Clone)]
pub struct Committed {
    pub after: u64,
    pub head: u64,
    pub events: Arc<[StoredEvent]>,
}

/// Group commits the in-memory feed holds for a slow reader before it lags (and reads the log instead).
const LIVE_CAPACITY: usize = 1024;

pub struct SqliteEventStore {
    queue: SyncSender<(AppendRequest, Reply)>,
    readers: Arc<ReadPool>,
    head: watch::Receiver<u64>,
    live: broadcast::Sender<Committed>,
    idempotency_ttl: chrono::Duration,
    /// For [`EventImport`], which writes on a connection of its own (see there).
    path: PathBuf,
    synchronous: Synchronous,
}

impl SqliteEventStore {
    /// Opens `<dir>/events.db`, creating the schema, and starts the writer thread.
    pub fn open(dir: &Path, settings: &StoreSettings, read_connections: usize) -> Result<Arc<Self>, DbError> {
        let path = dir.join("events.db");
        let conn = sql::open(&path, settings.synchronous)?;
        conn.execute_batch(SCHEMA)?;
        // Event logs written before events carried a trace get the column (NULL for their events).
        let has_trace: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'trace'")?.exists([])?;
        if !has_trace {
            conn.execute_batch("ALTER TABLE events ADD COLUMN trace TEXT")?;
        }
        let head_position: u64 = conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0))?;
        let readers = ReadPool::open(&path, read_connections)?;
        let (head_tx, head) = watch::channel(head_position);
        let (queue, rx) = mpsc::sync_channel(settings.queue_capacity);
        let ttl = chrono::Duration::hours(settings.idempotency_ttl_hours as i64);
        let live = broadcast::Sender::new(LIVE_CAPACITY);
        let writer = Writer {
            conn,
            head: head_tx,
            live: live.clone(),
            max_batch: settings.max_batch,
            snapshot_every: settings.snapshot_every,
            ttl,
        };
        std::thread::Builder::new()
            .name("event-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| DbError::Worker(e.to_string()))?;
        Ok(Arc::new(Self { queue, readers, head, live, idempotency_ttl: ttl, path, synchronous: settings.synchronous }))
    }

    /// The group commits from now on, in commit order (see [`Committed`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.live.subscribe()
    }

    /// Events of all orders after a global position, in log order: the embedded feed.
    pub async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreUnavailable> {
        self.read_after(after, limit, query_events).await
    }

    /// [`Self::read_all`] as written (see [`RawEvent`]).
    pub async fn read_all_raw(&self, after: u64, limit: usize) -> Result<Vec<RawEvent>, StoreUnavailable> {
        self.read_after(after, limit, query_raw).await
    }

    async fn read_after<T: Send + 'static>(
        &self,
        after: u64,
        limit: usize,
        rows: RowsAfter<T>,
    ) -> Result<Vec<T>, StoreUnavailable> {
        self.readers
            .read(move |conn| {
                let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2");
                rows(conn, &sql, (after, limit as i64))
            })
            .await
            .map_err(unavailable)
    }

    /// Up to `limit` live (unexpired) idempotency records with a scope after `after`, in scope order, each with
    /// when it was written (epoch ms): what `orderflow migrate` carries over.
    pub async fn live_idempotency(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(IdempotencyRecord, i64)>, StoreUnavailable> {
        let after = after.to_owned();
        let live_after = (Utc::now() - self.idempotency_ttl).timestamp_millis();
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT request_hash, status, body, etag, location, scope, created_at FROM idempotency
                     WHERE scope > ?1 AND created_at >= ?2 ORDER BY scope LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![after, live_after, limit as i64], |r| {
                    Ok((idempotency_row(r, r.get(5)?)?, r.get(6)?))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .map_err(unavailable)
    }

    /// The number of events in the log.
    pub async fn count(&self) -> Result<u64, StoreUnavailable> {
        self.readers
            .read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?))
            .await
            .map_err(unavailable)
    }

    /// The position of the newest committed event; changes after every commit.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, AppendError> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send((request, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AppendError::Unavailable("write queue is full".into())),
            Err(TrySendError::Disconnected(_)) => return Err(AppendError::Unavailable("writer stopped".into())),
        }
        // Queued but never answered: the writer died with it, perhaps after its commit.
        answer.await.map_err(|_| AppendError::Unknown("the writer stopped with the append queued".into()))?
    }

    async fn load(&self, order_id: &OrderId) -> Result<LoadedStream, StoreUnavailable> {
        let id = order_id.clone();
        self.readers
            .read(move |conn| {
                let snapshot: Option<(u64, String)> = conn
                    .prepare_cached("SELECT version, state FROM snapshots WHERE order_id = ?1")?
                    .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (after, snapshot) = match snapshot {
                    Some((version, state)) => {
                        let order: Order = serde_json::from_str(&state).map_err(|e| DbError::Corrupt(e.to_string()))?;
                        (version, Some(order))
                    }
                    None => (0, None),
                };
                let events = query_events(
                    conn,
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE order_id = ?1 AND version > ?2 ORDER BY version"
                    ),
                    params![id.as_str(), after],
                )?;
                Ok(LoadedStream { snapshot, events })
            })
            .await
            .map_err(unavailable)
    }

    async fn history(&self, order_id: &OrderId) -> Result<Vec<StoredEvent>, StoreUnavailable> {
        let id = order_id.clone();
        self.readers
            .read(move |conn| {
                query_events(
                    conn,
                    &format!("SELECT {EVENT_COLUMNS} FROM events WHERE order_id = ?1 ORDER BY version"),
                    params![id.as_str()],
                )
            })
            .await
            .map_err(unavailable)
    }

    async fn idempotency_get(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreUnavailable> {
        let scope = scope.to_owned();
        let live_after = (Utc::now() - self.idempotency_ttl).timestamp_millis();
        self.readers
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT request_hash, status, body, etag, location FROM idempotency
                         WHERE scope = ?1 AND created_at >= ?2",
                    )?
                    .query_row(params![scope, live_after], |r| idempotency_row(r, scope.clone()))
                    .optional()?)
            })
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreUnavailable> {
        self.readers.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await.map_err(unavailable)
    }
}

#[async_trait]
impl super::RebuildSource for SqliteEventStore {
    /// The cursor is the global log position of the last event delivered, so the checkpoint a rebuilt view
    /// stores is exactly where its log tail goes on from.
    async fn read(&self, cursor: Option<&str>, limit: usize) -> Result<RebuildChunk, StoreUnavailable> {
        let events = self.read_all(log_cursor(cursor)?, limit).await?;
        let checkpoint = events.last().map(|e| e.position);
        Ok(RebuildChunk { next: checkpoint.map(|p| p.to_string()), checkpoint, events })
    }

    async fn head(&self) -> u64 {
        *self.head.borrow()
    }
}

/// Imports write on a connection of their own, in one transaction per call, beside the writer thread (SQLite
/// serializes the two): `orderflow import` runs in a process of its own, where nothing else appends. That
/// process's in-memory head and feed do not see the imported events; a service started afterwards reads them
/// from the log like any others.
#[async_trait]
impl EventImport for SqliteEventStore {
    async fn import(&self, runs: &[Vec<RawEvent>], _publish: bool) -> Result<Imported, ImportError> {
        let (path, synchronous, runs) = (self.path.clone(), self.synchronous, runs.to_vec());
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = sql::open(&path, synchronous).map_err(|e| StoreUnavailable(e.to_string()))?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StoreUnavailable(e.to_string()))?;
            let mut done = Imported::default();
            for run in &runs {
                done += import_run(&tx, run)?;
            }
            tx.commit().map_err(|e| StoreUnavailable(e.to_string()))?;
            Ok(done)
        });
        task.await.map_err(|e| StoreUnavailable(format!("import task: {e}")))?
    }

    /// The cursor is a global log position, as for [`super::RebuildSource::read`].
    async fn read_raw(&self, cursor: Option<&str>, limit: usize) -> Result<RawChunk, StoreUnavailable> {
        let events = self.read_all_raw(log_cursor(cursor)?, limit).await?;
        Ok(RawChunk { next: events.last().map(|e| e.position.to_string()), events })
    }
}

/// A rebuild's or an export's cursor: the log position of the last event delivered.
fn log_cursor(cursor: Option<&str>) -> Result<u64, StoreUnavailable> {
    match cursor {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| StoreUnavailable(format!("not a log cursor: {text:?}"))),
    }
}

/// One order's run inside the import's transaction: skips what is there and identical, appends the rest.
fn import_run(tx: &Connection, run: &[RawEvent]) -> Result<Imported, ImportError> {
    let db = |e: rusqlite::Error| ImportError::Unavailable(StoreUnavailable(e.to_string()));
    let Some(first) = run.first() else { return Ok(Imported::default()) };
    let order_id = &first.order_id;
    let at: u64 = tx
        .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE order_id = ?1")
        .and_then(|mut stmt| stmt.query_row([order_id.as_str()], |r| r.get(0)))
        .map_err(db)?;
    let mut done = Imported::default();
    for event in run {
        if event.version <= at {
            let there = query_raw(
                tx,
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE order_id = ?1 AND version = ?2"),
                params![order_id.as_str(), event.version],
            )
            .map_err(unavailable)?;
            match there.first() {
                Some(existing) if existing.same_as(event) => done.skipped += 1,
                Some(existing) => return Err(different(event, existing)),
                None => return Err(ImportError::Gap { order_id: order_id.clone(), first: event.version }),
            }
            continue;
        }
        if event.version != at + done.written + 1 {
            return Err(ImportError::Gap { order_id: order_id.clone(), first: event.version });
        }
        tx.prepare_cached(
            "INSERT INTO events (order_id, version, event_id, type, schema_version, recorded_at, payload, trace)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                order_id.as_str(),
                event.version,
                event.event_id.to_string(),
                event.type_name,
                event.schema_version,
                event.recorded_at.timestamp_millis(),
                event.payload,
                event.traceparent.as_deref()
            ])
        })
        .map_err(db)?;
        done.written += 1;
    }
    Ok(done)
}

/// The error for an import that finds another event at its event's version.
pub(super) fn different(event: &RawEvent, existing: &RawEvent) -> ImportError {
    ImportError::Different {
        order_id: event.order_id.clone(),
        version: event.version,
        detail: format!(
            "there: {} {} {}; imported: {} {} {}",
            existing.event_id,
            existing.type_name,
            existing.recorded_at.to_rfc3339(),
            event.event_id,
            event.type_name,
            event.recorded_at.to_rfc3339()
        ),
    }
}

fn unavailable(e: DbError) -> StoreUnavailable {
    StoreUnavailable(e.to_string())
}

fn query_events(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<StoredEvent>, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, read_event_row)?;
    rows.map(|row| row.map_err(DbError::from)?.map_err(DbError::Corrupt)).collect()
}

/// How [`SqliteEventStore::read_after`] reads the rows after a position: decoded or as written.
type RowsAfter<T> = fn(&Connection, &str, (u64, i64)) -> Result<Vec<T>, DbError>;

fn query_raw(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RawEvent>, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, read_raw_row)?;
    rows.map(|row| row.map_err(DbError::from)?.map_err(DbError::Corrupt)).collect()
}

/// An idempotency record from a row that starts `request_hash, status, body, etag, location`.
fn idempotency_row(r: &Row<'_>, scope: String) -> rusqlite::Result<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        scope,
        request_hash: r.get(0)?,
        response: StoredResponse { status: r.get(1)?, body: r.get(2)?, etag: r.get(3)?, location: r.get(4)? },
    })
}

/// A row of [`EVENT_COLUMNS`] in today's shape, whatever version it was written with.
fn read_event_row(row: &Row<'_>) -> rusqlite::Result<Result<StoredEvent, String>> {
    Ok(read_raw_row(row)?.and_then(|raw| raw.decode().map_err(|e| e.to_string())))
}

/// A row of [`EVENT_COLUMNS`] as written.
fn read_raw_row(row: &Row<'_>) -> rusqlite::Result<Result<RawEvent, String>> {
    let event_id: String = row.get(0)?;
    let order_id: String = row.get(1)?;
    let recorded_at: i64 = row.get(5)?;
    Ok(Ok(RawEvent {
        event_id: match Uuid::parse_str(&event_id) {
            Ok(id) => id,
            Err(e) => return Ok(Err(e.to_string())),
        },
        order_id: match OrderId::parse("orderId", &order_id) {
            Ok(id) => id,
            Err(e) => return Ok(Err(e.message)),
        },
        version: row.get(2)?,
        position: row.get(3)?,
        schema_version: row.get(4)?,
        recorded_at: match DateTime::from_timestamp_millis(recorded_at) {
            Some(at) => at,
            None => return Ok(Err(format!("bad recorded_at {recorded_at}"))),
        },
        payload: row.get(6)?,
        traceparent: row.get(7)?,
        type_name: row.get(8)?,
    }))
}

/// The single writer: owns the write connection, batches appends into one transaction each.
struct Writer {
    conn: Connection,
    head: watch::Sender<u64>,
    live: broadcast::Sender<Committed>,
    max_batch: usize,
    snapshot_every: u64,
    ttl: chrono::Duration,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<(AppendRequest, Reply)>) {
        const PURGE_EVERY: Duration = Duration::from_secs(600);
        let mut last_purge = std::time::Instant::now();
        loop {
            let first = match rx.recv_timeout(PURGE_EVERY) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    self.purge_expired_keys();
                    last_purge = std::time::Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
            if last_purge.elapsed() >= PURGE_EVERY {
                self.purge_expired_keys();
                last_purge = std::time::Instant::now();
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<(AppendRequest, Reply)>) {
        let now = Utc::now();
        let snapshot_every = self.snapshot_every;
        let expired_before = (now - self.ttl).timestamp_millis();
        let mut results = Vec::with_capacity(batch.len());
        let outcome = (|| -> rusqlite::Result<()> {
            let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (request, reply) in batch {
                let savepoint = tx.savepoint()?;
                let result = write_append(&savepoint, &request, now, snapshot_every, expired_before);
                if result.is_ok() {
                    savepoint.commit()?;
                }
                // Dropping an uncommitted savepoint rolls it back: this append leaves no trace.
                results.push((reply, result));
            }
            tx.commit()
        })();
        if let Err(e) = outcome {
            // A failed COMMIT (a full disk, a failed fsync) may still leave the batch in the WAL, to reappear on
            // the next start: "unknown", not "not applied".
            tracing::error!(error = %e, "event store commit failed; answering 503 to the whole batch");
            for (reply, _) in results {
                let _ = reply.send(Err(AppendError::Unknown(format!("commit failed: {e}"))));
            }
            return;
        }
        let after = *self.head.borrow();
        let mut head = after;
        let feed = self.live.receiver_count() > 0;
        let mut committed = Vec::new();
        for (reply, result) in results {
            if let Ok(events) = &result {
                for event in events {
                    head = head.max(event.position);
                    crate::telemetry::event_appended(event.event.type_name());
                }
                if feed {
                    committed.extend_from_slice(events);
                }
            }
            let _ = reply.send(result);
        }
        if feed && head > after {
            // Only with the events in it: a reader that subscribed after the count above sees the head move
            // without a batch and reads the log. A send without a receiver left is fine for the same reason.
            let _ = self.live.send(Committed { after, head, events: committed.into() });
        }
        self.head.send_if_modified(|h| std::mem::replace(h, head) != head);
    }

    fn purge_expired_keys(&mut self) {
        let cutoff = (Utc::now() - self.ttl).timestamp_millis();
        if let Err(e) = self.conn.execute("DELETE FROM idempotency WHERE created_at < ?1", [cutoff]) {
            tracing::warn!(error = %e, "could not purge expired idempotency keys");
        }
    }
}

/// Writes one append inside its savepoint. A unique-key failure on events is a conflict; on the
/// idempotency key it means a concurrent request with the same key won.
fn write_append(
    tx: &Connection,
    request: &AppendRequest,
    now: DateTime<Utc>,
    snapshot_every: u64,
    expired_before: i64,
) -> Result<Vec<StoredEvent>, AppendError> {
    let db_err = |e: rusqlite::Error| AppendError::Unavailable(e.to_string());
    if let Some(record) = &request.idempotency {
        let changed = tx
            .prepare_cached(
                "INSERT INTO idempotency (scope, request_hash, status, body, etag, location, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (scope) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status,
                     body = excluded.body, etag = excluded.etag, location = excluded.location,
                     created_at = excluded.created_at
                 WHERE idempotency.created_at < ?8",
            )
            .and_then(|mut stmt| {
                let r = &record.response;
                stmt.execute(params![
                    record.scope,
                    record.request_hash,
                    r.status,
                    r.body,
                    r.etag,
                    r.location,
                    now.timestamp_millis(),
                    expired_before
                ])
            })
            .map_err(db_err)?;
        if changed == 0 {
            return Err(AppendError::IdempotencyKeyTaken);
        }
    }
    let mut stored = Vec::with_capacity(request.events.len());
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO events (order_id, version, event_id, type, schema_version, recorded_at, payload, trace)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(db_err)?;
    for (i, event) in request.events.iter().enumerate() {
        let version = request.expected_version + 1 + i as u64;
        let event_id = Uuid::now_v7();
        let payload = codec::encode(event).map_err(|e| AppendError::Unavailable(e.to_string()))?;
        let schema_version = codec::schema_version(event);
        let result = insert.execute(params![
            request.order_id.as_str(),
            version,
            event_id.to_string(),
            event.type_name(),
            schema_version,
            now.timestamp_millis(),
            payload,
            request.traceparent.as_deref()
        ]);
        match result {
            Ok(_) => {}
            Err(e) if sql::is_constraint_violation(&e) => return Err(AppendError::Conflict),
            Err(e) => return Err(db_err(e)),
        }
        stored.push(StoredEvent {
            event_id,
            order_id: request.order_id.clone(),
            version,
            position: tx.last_insert_rowid() as u64,
            schema_version,
            recorded_at: now,
            traceparent: request.traceparent.clone(),
            event: event.clone(),
        });
    }
    drop(insert);
    if let Some(snapshot) = request.snapshot.as_ref().filter(|_| snapshot_every > 0) {
        let state = serde_json::to_string(snapshot).map_err(|e| AppendError::Unavailable(e.to_string()))?;
        tx.prepare_cached(
            "INSERT INTO snapshots (order_id, version, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (order_id) DO UPDATE SET version = excluded.version, state = excluded.state",
        )
        .and_then(|mut stmt| stmt.execute(params![request.order_id.as_str(), snapshot.version, state]))
        .map_err(db_err)?;
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::domain::OrderEvent;
    use crate::store::RebuildSource;

    /// The events of the fixture written before `OrderPlaced` schema version 2 come back in today's shape, at
    /// today's version, through every read of the store.
    #[actix_web::test]
    async fn events_written_with_schema_version_1_are_read_upcast() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-embedded/events.db");
        std::fs::copy(fixture, dir.path().join("events.db")).unwrap();
        let settings = StoreSettings {
            snapshot_every: 0,
            max_batch: 64,
            queue_capacity: 64,
            idempotency_ttl_hours: 24,
            synchronous: Synchronous::Normal,
        };
        let store = SqliteEventStore::open(dir.path(), &settings, 1).unwrap();
        let id = OrderId::parse("orderId", "v1-shipped").unwrap();
        let history = store.history(&id).await.unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history.iter().map(|e| e.schema_version).collect::<Vec<_>>(), [2, 1, 1]);
        assert!(matches!(history[0].event, OrderEvent::OrderPlaced { shipping_address: None, .. }));
        let chunk = store.read(None, 100).await.unwrap();
        assert_eq!(chunk.events.len(), 11);
        assert!(chunk.events.iter().all(|e| e.schema_version == codec::schema_version(&e.event)));
    }
}
