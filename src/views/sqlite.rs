//! Plumbing shared by the embedded (SQLite) views: the checkpoint table, the batch transaction that applies
//! events and moves the checkpoint together, and the database generations a rebuild swaps between.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, params};

use super::{ApplyReport, ViewError};
use crate::config::Synchronous;
use crate::sql::{DbError, ReadPool, WriteConn};
use crate::store::StoredEvent;

/// Page cache of a generation being rebuilt (KiB, as `PRAGMA cache_size` takes it when negative), and after.
const BULK_CACHE_KIB: i64 = -65_536;
const DEFAULT_CACHE_KIB: i64 = -2_000;

/// WAL pages after which a view's writer checkpoints (SQLite's default is 1,000).
const VIEW_CHECKPOINT_PAGES: i64 = 10_000;

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

/// How a view applies a batch of events (in feed order) inside the caller's transaction: each one applied, or
/// skipped as a duplicate, and counted in the report. A closure, so a view can apply with its settings (the
/// revenue view's business time zone).
pub(super) type ApplyFn = Arc<dyn Fn(&Connection, &[StoredEvent]) -> Result<ApplyReport, ViewError> + Send + Sync>;

/// Applies `events` one at a time with `apply_one` (true = applied, false = duplicate skipped).
pub(super) fn apply_each(
    conn: &Connection,
    events: &[StoredEvent],
    apply_one: impl Fn(&Connection, &StoredEvent) -> Result<bool, ViewError>,
) -> Result<ApplyReport, ViewError> {
    let mut report = ApplyReport::default();
    for event in events {
        match apply_one(conn, event)? {
            true => report.applied += 1,
            false => report.skipped += 1,
        }
    }
    Ok(report)
}

/// Applies `events` with `apply` and saves `checkpoint`, all in one transaction: either the whole batch and its
/// checkpoint are durable, or none of it. `committed` then gets what `apply` produced besides its report, still on
/// the writer (so in commit order, before any later write of the view): the search view keeps the documents it
/// wrote as the recent ones there.
pub(super) async fn apply_batch<T: Send + 'static>(
    writer: &WriteConn,
    projection: &'static str,
    events: &[StoredEvent],
    checkpoint: Option<u64>,
    apply: impl FnOnce(&Connection, &[StoredEvent]) -> Result<(ApplyReport, T), ViewError> + Send + 'static,
    committed: impl FnOnce(T) + Send + 'static,
) -> Result<ApplyReport, ViewError> {
    let events = events.to_vec();
    writer
        .write(move |conn| {
            let tx = conn.transaction()?;
            let (report, produced) = match apply(&tx, &events) {
                Ok(applied) => applied,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(position) = checkpoint {
                save_checkpoint(&tx, projection, position)?;
            }
            tx.commit()?;
            committed(produced);
            Ok(Ok(report))
        })
        .await?
}

/// One generation of an embedded view's database.
pub(super) struct ViewDb {
    pub writer: WriteConn,
    pub readers: Arc<ReadPool>,
}

/// An embedded view's database files, by generation: `<name>.db` (generation 0) or `<name>.<n>.db`, the
/// current one named in `<name>.current`. A rebuild fills generation n+1 while queries keep reading n, then
/// [`Generations::swap`] points the view (and the `.current` file, atomically) at the new one.
#[derive(Clone)]
pub(super) struct Generations {
    dir: PathBuf,
    name: &'static str,
    schema: &'static str,
    /// Secondary indexes a rebuild builds once at the end instead of row by row (they come back from `schema`).
    deferred_indexes: &'static [&'static str],
    read_connections: usize,
    current: Arc<RwLock<(u64, Arc<ViewDb>)>>,
}

impl Generations {
    pub fn open(
        dir: &Path,
        name: &'static str,
        schema: &'static str,
        deferred_indexes: &'static [&'static str],
        read_connections: usize,
    ) -> Result<Self, DbError> {
        let generation = match std::fs::read_to_string(dir.join(format!("{name}.current"))) {
            Ok(text) => text.trim().parse().map_err(|_| DbError::Corrupt(format!("{name}.current: {text:?}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(DbError::Worker(e.to_string())),
        };
        let mut gens = Self {
            dir: dir.to_owned(),
            name,
            schema,
            deferred_indexes,
            read_connections,
            current: Arc::new(RwLock::new((0, Arc::new(Self::placeholder()?)))),
        };
        let db = gens.open_generation(generation, false)?;
        gens.current = Arc::new(RwLock::new((generation, db)));
        Ok(gens)
    }

    /// An in-memory stand-in, replaced before `open` returns.
    fn placeholder() -> Result<ViewDb, DbError> {
        Ok(ViewDb { writer: WriteConn::new(Connection::open_in_memory()?), readers: Arc::new(ReadPool::empty()) })
    }

    fn path(&self, generation: u64) -> PathBuf {
        match generation {
            0 => self.dir.join(format!("{}.db", self.name)),
            n => self.dir.join(format!("{}.{n}.db", self.name)),
        }
    }

    fn remove_files(&self, generation: u64) {
        let path = self.path(generation);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    fn open_generation(&self, generation: u64, fresh: bool) -> Result<Arc<ViewDb>, DbError> {
        if fresh {
            self.remove_files(generation);
        }
        let path = self.path(generation);
        let conn = crate::sql::open(&path, Synchronous::Normal)?;
        // Checkpoint the WAL into the file every ~40 MB instead of every ~4 MB: a view's hot pages (index
        // interiors, the text index's segments) are rewritten by nearly every batch, and each checkpoint copies
        // them once however often they changed in between.
        conn.pragma_update(None, "wal_autocheckpoint", VIEW_CHECKPOINT_PAGES)?;
        conn.execute_batch(self.schema)?;
        conn.execute_batch(CHECKPOINTS_SCHEMA)?;
        let readers = ReadPool::open(&path, self.read_connections)?;
        Ok(Arc::new(ViewDb { writer: WriteConn::new(conn), readers }))
    }

    /// The database queries and the projector use now.
    pub fn db(&self) -> Arc<ViewDb> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// An empty next generation, for a rebuild, set up for a bulk load: no fsync (a copy that fails half way
    /// is thrown away, and [`SqliteRebuild::finish`] makes it durable before it is used), a large page cache,
    /// and the secondary indexes left out until the end.
    pub fn fresh(&self) -> Result<(u64, Arc<ViewDb>), DbError> {
        let next = self.current.read().unwrap_or_else(|p| p.into_inner()).0 + 1;
        let db = self.open_generation(next, true)?;
        db.writer.write_blocking(|conn| {
            conn.pragma_update(None, "synchronous", "OFF")?;
            conn.pragma_update(None, "cache_size", BULK_CACHE_KIB)?;
            for index in self.deferred_indexes {
                conn.execute_batch(&format!("DROP INDEX IF EXISTS {index}"))?;
            }
            Ok(())
        })?;
        Ok((next, db))
    }

    /// Ends a generation's bulk load: its indexes built, its pages on disk, back to the normal settings.
    fn settle(&self, db: &ViewDb) -> Result<(), DbError> {
        db.writer.write_blocking(|conn| {
            if !conn.is_autocommit() {
                conn.execute_batch("COMMIT")?;
            }
            conn.execute_batch(self.schema)?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            conn.pragma_update(None, "cache_size", DEFAULT_CACHE_KIB)?;
            Ok(())
        })
    }

    /// Makes `generation` the current one: durably (the `.current` file is replaced atomically) and at once
    /// for new queries; queries already running finish on the old one, whose files are then removed.
    pub fn swap(&self, generation: u64, db: Arc<ViewDb>) -> Result<(), DbError> {
        let pointer = self.dir.join(format!("{}.current", self.name));
        let tmp = self.dir.join(format!("{}.current.tmp", self.name));
        let io = |e: std::io::Error| DbError::Worker(format!("switching {}: {e}", self.name));
        {
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            std::io::Write::write_all(&mut file, generation.to_string().as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &pointer).map_err(io)?;
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(|p| p.into_inner()), (generation, db));
        drop(old.1);
        // Unlinking files still open by a finishing query is fine on Unix; the space returns when it closes.
        self.remove_files(old.0);
        Ok(())
    }
}

/// How a rebuild takes the write model in: it may hold events in memory and write them later (the search view
/// folds each order's events into one document write), or write them as they come ([`Direct`]).
pub(super) trait BulkLoad: Send {
    /// Takes one step of events into the copy (reading it as needed); true when it holds enough to write now.
    fn add(&mut self, conn: &Connection, events: &[StoredEvent]) -> Result<bool, ViewError>;
    /// Writes whatever it still holds.
    fn write(&mut self, conn: &Connection) -> Result<(), ViewError>;
}

/// A bulk load that applies every step at once, with the view's live apply.
pub(super) struct Direct(pub ApplyFn);

impl BulkLoad for Direct {
    fn add(&mut self, conn: &Connection, events: &[StoredEvent]) -> Result<bool, ViewError> {
        (self.0)(conn, events).map(|_| false)
    }

    fn write(&mut self, _conn: &Connection) -> Result<(), ViewError> {
        Ok(())
    }
}

/// A rebuild of an embedded view: fills the next generation in bulk mode (see [`Generations::fresh`]), in large
/// transactions, then builds its indexes, makes it durable and swaps it in.
pub(super) struct SqliteRebuild {
    gens: Generations,
    generation: u64,
    db: Arc<ViewDb>,
    projection: &'static str,
    load: Arc<Mutex<Box<dyn BulkLoad>>>,
    /// Events taken in since the last commit.
    uncommitted: usize,
}

impl SqliteRebuild {
    pub fn new(gens: &Generations, projection: &'static str, load: Box<dyn BulkLoad>) -> Result<Self, DbError> {
        let (generation, db) = gens.fresh()?;
        Ok(Self { gens: gens.clone(), generation, db, projection, load: Arc::new(Mutex::new(load)), uncommitted: 0 })
    }
}

/// Events a rebuild takes in per transaction: every commit writes the pages it dirtied to the WAL, so fewer,
/// larger commits write each page fewer times.
const BULK_COMMIT_EVENTS: usize = 100_000;

#[async_trait::async_trait]
impl super::Rebuilder for SqliteRebuild {
    /// The checkpoint is the log position after `events`: the rebuilt generation's tail goes on from there. It is
    /// committed with everything before it. Steps share a transaction; each step is a savepoint in it, so a step
    /// that fails leaves nothing behind in the copy, and one retried is folded again idempotently. A failed write
    /// or commit of the transaction is final for the rebuild.
    async fn apply(&mut self, events: Arc<[StoredEvent]>, checkpoint: Option<u64>) -> Result<(), ViewError> {
        let (projection, load) = (self.projection, Arc::clone(&self.load));
        let uncommitted = self.uncommitted + events.len();
        let committed = self
            .db
            .writer
            .write(move |conn| {
                let mut load = load.lock().unwrap_or_else(|p| p.into_inner());
                if conn.is_autocommit() {
                    conn.execute_batch("BEGIN")?;
                }
                let step = conn.savepoint()?;
                let full = match load.add(&step, &events) {
                    Ok(full) => full,
                    Err(e) => return Ok(Err(e)),
                };
                if let Some(position) = checkpoint {
                    save_checkpoint(&step, projection, position)?;
                }
                step.commit()?;
                if !(full || uncommitted >= BULK_COMMIT_EVENTS) {
                    return Ok(Ok(false));
                }
                // What was folded in memory and the steps since the last commit are gone if this fails: retrying
                // one step could not bring them back, so the rebuild gives up (the current view stays).
                let flushed =
                    load.write(conn).and_then(|()| Ok(conn.execute_batch("COMMIT").map_err(DbError::from)?));
                match flushed {
                    Ok(()) => Ok(Ok(true)),
                    Err(e) => Ok(Err(ViewError::Rejected(format!("writing the rebuilt copy failed: {e}")))),
                }
            })
            .await??;
        self.uncommitted = if committed { 0 } else { uncommitted };
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), ViewError> {
        let Self { gens, generation, db, load, .. } = *self;
        tokio::task::spawn_blocking(move || {
            let written = db.writer.write_blocking(|conn| {
                let mut load = load.lock().unwrap_or_else(|p| p.into_inner());
                if conn.is_autocommit() {
                    conn.execute_batch("BEGIN")?;
                }
                Ok(load.write(conn))
            })?;
            written?;
            gens.settle(&db)?;
            Ok::<_, ViewError>(gens.swap(generation, db)?)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }

    async fn abort(self: Box<Self>) {
        let Self { gens, generation, db, .. } = *self;
        drop(db);
        // The next rebuild would start this generation afresh anyway; this only gives the space back now.
        gens.remove_files(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::Rebuilder;

    /// A bulk load that fails where it is told to.
    struct Failing {
        add: Option<ViewError>,
        write: Option<ViewError>,
    }

    impl BulkLoad for Failing {
        fn add(&mut self, _conn: &Connection, _events: &[StoredEvent]) -> Result<bool, ViewError> {
            self.add.take().map_or(Ok(true), Err)
        }

        fn write(&mut self, _conn: &Connection) -> Result<(), ViewError> {
            self.write.take().map_or(Ok(()), Err)
        }
    }

    fn rebuild(dir: &Path, load: Failing) -> SqliteRebuild {
        let gens = Generations::open(dir, "test", "CREATE TABLE IF NOT EXISTS t (x);", &[], 1).expect("gens");
        SqliteRebuild::new(&gens, "test", Box::new(load)).expect("rebuild")
    }

    fn stored_checkpoint(rebuild: &SqliteRebuild) -> u64 {
        rebuild.db.writer.write_blocking(|conn| read_checkpoint(conn, "test")).expect("checkpoint")
    }

    /// A step that fails to fold is retryable and leaves nothing behind; a failed write of what was folded is
    /// final (the steps folded before it are gone from memory, a retry of one step could not bring them back).
    #[tokio::test]
    async fn a_failed_step_is_retryable_a_failed_write_is_final() {
        let dir = tempfile::tempdir().expect("dir");
        let none: Arc<[StoredEvent]> = Arc::from(Vec::new());
        let mut failing_step =
            rebuild(dir.path(), Failing { add: Some(ViewError::Unavailable("busy".into())), write: None });
        let first = failing_step.apply(Arc::clone(&none), Some(7)).await;
        assert!(matches!(first, Err(ViewError::Unavailable(_))), "{first:?}");
        assert_eq!(stored_checkpoint(&failing_step), 0, "the failed step left no checkpoint");
        failing_step.apply(Arc::clone(&none), Some(7)).await.expect("the retry succeeds");
        assert_eq!(stored_checkpoint(&failing_step), 7);

        let dir = tempfile::tempdir().expect("dir");
        let mut failing_write =
            rebuild(dir.path(), Failing { add: None, write: Some(ViewError::Unavailable("disk".into())) });
        let written = failing_write.apply(none, Some(3)).await;
        assert!(matches!(written, Err(ViewError::Rejected(_))), "{written:?}");
    }
}
