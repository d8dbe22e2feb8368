//! SQLite plumbing shared by the embedded adapters: opening a connection with the right pragmas, and a
//! small pool of read connections used from `spawn_blocking` so that async code never blocks on disk.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::config::Synchronous;

/// Opens (creating if needed) a database in WAL mode: readers never block the writer, and a commit is one
/// append to the WAL (plus an fsync with `synchronous = full`). The file is made `0600` first (its `-wal` and
/// `-shm` files take its mode), see `files`.
pub fn open(path: &Path, synchronous: Synchronous) -> rusqlite::Result<Connection> {
    crate::files::private_file(path).map_err(|e| {
        let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN);
        rusqlite::Error::SqliteFailure(code, Some(format!("{}: {e}", path.display())))
    })?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match synchronous {
        Synchronous::Off => "OFF",
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    // The plan of a cached statement must not depend on the values bound to it: without this guarantee, SQLite
    // (built with STAT4) prepares a statement again on every run whose parameters could change the plan, which
    // cost a full parse and plan per search (5 % of the service's CPU under load).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// Read connections, handed out round-robin (a free one first).
pub struct ReadPool {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

/// A failure of the database itself (not of the request): callers map it to 503.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("database worker stopped: {0}")]
    Worker(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl ReadPool {
    pub fn open(path: &Path, size: usize) -> rusqlite::Result<Arc<Self>> {
        let conns = (0..size.max(1))
            .map(|_| {
                let conn = open(path, Synchronous::Normal)?;
                conn.pragma_update(None, "query_only", "ON")?;
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Arc::new(Self { conns, next: AtomicUsize::new(0) }))
    }

    /// A pool with no connection (a placeholder never read from).
    pub fn empty() -> Self {
        Self { conns: Vec::new(), next: AtomicUsize::new(0) }
    }

    /// Runs `f` on a read connection on the blocking thread pool.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let start = pool.next.fetch_add(1, Ordering::Relaxed);
            let n = pool.conns.len();
            if n == 0 {
                return Err(DbError::Worker("no read connection".into()));
            }
            let guard = (0..n)
                .find_map(|i| pool.conns[(start + i) % n].try_lock().ok())
                .map(Ok)
                .unwrap_or_else(|| pool.conns[start % n].lock());
            // A poisoned lock only means another reader panicked; the connection itself is fine.
            let conn = guard.unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }
}

/// True when a write failed on a UNIQUE / PRIMARY KEY constraint.
pub fn is_constraint_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// The one write connection of a database, used from `spawn_blocking`.
#[derive(Clone)]
pub struct WriteConn(Arc<Mutex<Connection>>);

impl WriteConn {
    pub fn new(conn: Connection) -> Self {
        Self(Arc::new(Mutex::new(conn)))
    }

    /// Runs `f` on the write connection on this thread (start-up work, before anything else uses it).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Runs `f` on the write connection on the blocking thread pool.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }
}
