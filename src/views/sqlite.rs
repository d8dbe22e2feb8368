//! Plumbing shared by the embedded (SQLite) views: the checkpoint table, the batch transaction that applies
//! events and moves the checkpoint together, and the database generations a rebuild swaps between.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rusqlite::{Connection, OptionalExtension, params};

use super::{ApplyReport, ViewError};
use crate::config::Synchronous;
use crate::sql::{DbError, ReadPool, WriteConn};
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
    read_connections: usize,
    current: Arc<RwLock<(u64, Arc<ViewDb>)>>,
}

impl Generations {
    pub fn open(
        dir: &Path,
        name: &'static str,
        schema: &'static str,
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
        conn.execute_batch(self.schema)?;
        conn.execute_batch(CHECKPOINTS_SCHEMA)?;
        let readers = ReadPool::open(&path, self.read_connections)?;
        Ok(Arc::new(ViewDb { writer: WriteConn::new(conn), readers }))
    }

    /// The database queries and the projector use now.
    pub fn db(&self) -> Arc<ViewDb> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// An empty next generation, for a rebuild.
    pub fn fresh(&self) -> Result<(u64, Arc<ViewDb>), DbError> {
        let next = self.current.read().unwrap_or_else(|p| p.into_inner()).0 + 1;
        Ok((next, self.open_generation(next, true)?))
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

/// A rebuild of an embedded view: fills the next generation, then swaps it in.
pub(super) struct SqliteRebuild {
    pub gens: Generations,
    pub generation: u64,
    pub db: Arc<ViewDb>,
    pub projection: &'static str,
    pub apply_one: fn(&Connection, &StoredEvent) -> Result<bool, ViewError>,
}

#[async_trait::async_trait]
impl super::Rebuilder for SqliteRebuild {
    /// The checkpoint is the log position after `events`: the rebuilt generation's tail goes on from there.
    async fn apply(&mut self, events: &[StoredEvent], checkpoint: Option<u64>) -> Result<(), ViewError> {
        apply_batch(&self.db.writer, self.projection, events, checkpoint, self.apply_one).await.map(|_| ())
    }

    async fn finish(self: Box<Self>) -> Result<(), ViewError> {
        Ok(self.gens.swap(self.generation, self.db)?)
    }

    async fn abort(self: Box<Self>) {
        let Self { gens, generation, db, .. } = *self;
        drop(db);
        // The next rebuild would start this generation afresh anyway; this only gives the space back now.
        gens.remove_files(generation);
    }
}
