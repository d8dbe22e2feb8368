//! `orderflow backup <dir>`: a consistent copy of the embedded profile's data folder, taken while the service
//! runs.
//!
//! **One consistent point.** Every database is read inside a read transaction of its own, and all of them are
//! opened before any page is copied, in a fixed order: the views, the parked events and the audit log first,
//! the event log last. In WAL mode a read transaction sees the database as it was when it began, however long
//! the copy takes and whatever the service commits meanwhile. So each copy is one instant of its database, and
//! the instants are ordered so that the copy is a state the service can be in: a view's checkpoint never passes
//! the copied log's head (a view only records positions the log had committed), and every parked event is in
//! the copied log. A service started on the copy goes on from there: its projectors catch the views up with the
//! log, exactly as after a crash. The pages are copied with SQLite's online backup API from those transactions,
//! so the service's writers are never blocked (readers never block writers in WAL mode).
//!
//! **What is copied.** `events.db`, the current generation of each view (written as generation 0, so the copy
//! needs no `.current` pointer), `parked.db`, `audit.db`, and the small files beside them: the generated JWT
//! secret (tokens stay valid on a restored service) and the instance id. Nothing of a rebuild in progress is
//! copied (its generation is not current yet).
//!
//! **Checked before it says done.** Each copy passes `PRAGMA integrity_check`, and the views' checkpoints are
//! compared with the copied log's head. The summary names every file with its size, and the log's event count
//! and head.
//!
//! Restore: stop the service, and start it with `data_dir` pointing at the backup folder (or move the folder
//! into place). The distributed profile has no data folder to copy: DynamoDB's point-in-time recovery and
//! `orderflow export` cover it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

use crate::config::{Profile, Settings};

/// The small files of the data folder a restored service needs, copied as they are.
const PLAIN_FILES: [&str; 2] = ["jwt_secret", "instance_id"];

/// One database of the data folder: where it is, and its name in the copy.
struct Source {
    from: PathBuf,
    to: &'static str,
    /// A view (its checkpoint must not pass the log's head).
    view: Option<&'static str>,
}

/// What `backup` copied, for its summary.
#[derive(Debug)]
pub struct Report {
    /// (file in the copy, bytes)
    pub files: Vec<(String, u64)>,
    pub events: u64,
    pub head: u64,
    /// (view, checkpoint)
    pub checkpoints: Vec<(&'static str, u64)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (file, bytes) in &self.files {
            writeln!(f, "  {file:<16} {bytes:>12} bytes")?;
        }
        write!(f, "  event log: {} events, head position {}", self.events, self.head)?;
        for (view, checkpoint) in &self.checkpoints {
            write!(f, "\n  view {view}: checkpoint {checkpoint} (catches up on start)")?;
        }
        Ok(())
    }
}

/// Copies the data folder of `settings` into `target`, which must not exist or be empty.
pub fn backup(settings: &Settings, target: &Path) -> anyhow::Result<Report> {
    if settings.profile != Profile::Embedded {
        bail!(crate::admin_client::UsageError(
            "backup copies the embedded profile's data folder; on the distributed profile use DynamoDB \
             point-in-time recovery or `orderflow export`"
                .to_owned()
        ));
    }
    copy_data_folder(&settings.data_dir, target)
}

/// [`backup`], from the data folder `data`.
pub fn copy_data_folder(data: &Path, target: &Path) -> anyhow::Result<Report> {
    let log = data.join("events.db");
    if !log.exists() {
        bail!("no event log at {}: is data_dir right?", log.display());
    }
    if target.exists() && std::fs::read_dir(target)?.next().is_some() {
        bail!(crate::admin_client::UsageError(format!("{} is not empty", target.display())));
    }
    crate::files::private_dir(target).with_context(|| format!("creating {}", target.display()))?;

    let mut sources = Vec::new();
    for view in crate::views::NAMES {
        sources.push(Source { from: current_generation(data, view)?, to: view_file(view), view: Some(view) });
    }
    for (file, to) in [("parked.db", "parked.db"), ("audit.db", "audit.db")] {
        if data.join(file).exists() {
            sources.push(Source { from: data.join(file), to, view: None });
        }
    }
    sources.push(Source { from: log, to: "events.db", view: None });

    // Every snapshot first, the log's last (see the module doc); then the copies.
    let snapshots = sources
        .iter()
        .map(|source| snapshot(&source.from).with_context(|| format!("reading {}", source.from.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = Report { files: Vec::new(), events: 0, head: 0, checkpoints: Vec::new() };
    for (source, conn) in sources.iter().zip(&snapshots) {
        let to = target.join(source.to);
        crate::files::private_file(&to)?;
        let mut copy = Connection::open(&to)?;
        rusqlite::backup::Backup::new(conn, &mut copy)?
            .step(-1)
            .with_context(|| format!("copying {}", source.from.display()))?;
        let verdict: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if verdict != "ok" {
            bail!("the copy of {} fails its integrity check: {verdict}", source.from.display());
        }
        if let Some(view) = source.view {
            let checkpoint = copy
                .query_row("SELECT position FROM checkpoints WHERE projection = ?1", [view], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            report.checkpoints.push((view, checkpoint));
        }
        if source.to == "events.db" {
            (report.events, report.head) =
                copy.query_row("SELECT count(*), coalesce(max(position), 0) FROM events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        }
        drop(copy);
        report.files.push((source.to.to_owned(), std::fs::metadata(&to)?.len()));
    }
    drop(snapshots);
    if let Some((view, checkpoint)) = report.checkpoints.iter().find(|(_, c)| *c > report.head) {
        bail!("the copy is inconsistent: view {view} is at {checkpoint}, past the log's head {}", report.head);
    }
    for file in PLAIN_FILES {
        let from = data.join(file);
        if from.exists() {
            let to = target.join(file);
            crate::files::create_atomically(&to, &std::fs::read(&from)?)
                .with_context(|| format!("copying {}", from.display()))?;
            report.files.push((file.to_owned(), std::fs::metadata(&to)?.len()));
        }
    }
    Ok(report)
}

/// The file of a view's current generation (see `views::sqlite::Generations`).
fn current_generation(data: &Path, view: &str) -> anyhow::Result<PathBuf> {
    let generation: u64 = match std::fs::read_to_string(data.join(format!("{view}.current"))) {
        Ok(text) => text.trim().parse().with_context(|| format!("{view}.current: {text:?}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(match generation {
        0 => data.join(format!("{view}.db")),
        n => data.join(format!("{view}.{n}.db")),
    })
}

fn view_file(view: &'static str) -> &'static str {
    match view {
        crate::views::SEARCH => "search.db",
        _ => "revenue.db",
    }
}

/// A read-only connection inside a read transaction that has begun: it sees the database as of now until it
/// is dropped.
fn snapshot(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // A transaction begins reading at its first statement, not at BEGIN.
    conn.execute_batch("BEGIN")?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(path: &Path, sql: &str) {
        crate::sql::open(path, crate::config::Synchronous::Normal).expect("open").execute_batch(sql).expect("sql");
    }

    #[test]
    fn the_copy_takes_each_views_current_generation_the_secret_and_refuses_a_full_folder() {
        let data = tempfile::tempdir().expect("temp dir");
        let d = data.path();
        database(
            &d.join("events.db"),
            "CREATE TABLE events (position INTEGER PRIMARY KEY); INSERT INTO events VALUES (1), (2), (3);",
        );
        let view = |checkpoint: u64| {
            format!(
                "CREATE TABLE checkpoints (projection TEXT, position INTEGER); INSERT INTO checkpoints VALUES ('search', {checkpoint}), ('revenue', {checkpoint});"
            )
        };
        // The search view was rebuilt: generation 2 is current, the stale generation 0 is still on disk.
        database(&d.join("search.db"), &view(1));
        database(&d.join("search.2.db"), &view(3));
        std::fs::write(d.join("search.current"), "2").expect("pointer");
        database(&d.join("revenue.db"), &view(2));
        std::fs::write(d.join("jwt_secret"), "s".repeat(40)).expect("secret");

        let target = tempfile::tempdir().expect("temp dir");
        let report = copy_data_folder(d, target.path()).expect("backup");
        assert_eq!((report.events, report.head), (3, 3));
        assert_eq!(report.checkpoints, vec![("search", 3), ("revenue", 2)]);
        assert!(!target.path().join("search.current").exists(), "the copy is generation 0");
        assert_eq!(std::fs::read_to_string(target.path().join("jwt_secret")).expect("secret"), "s".repeat(40));
        let err = copy_data_folder(d, target.path()).expect_err("a full folder");
        assert!(err.downcast_ref::<crate::admin_client::UsageError>().is_some(), "{err:#}");
    }

    #[test]
    fn a_snapshot_does_not_see_later_commits_and_its_copy_is_that_instant() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.db");
        let writer = crate::sql::open(&path, crate::config::Synchronous::Normal).expect("open");
        writer.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);").expect("write");
        let snap = snapshot(&path).expect("snapshot");
        writer.execute("INSERT INTO t VALUES (2)", []).expect("a later commit");
        let mut copy = Connection::open(dir.path().join("copy.db")).expect("copy");
        rusqlite::backup::Backup::new(&snap, &mut copy).expect("backup").step(-1).expect("step");
        let rows: i64 = copy.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("count");
        assert_eq!(rows, 1, "the copy is the snapshot's instant, not the later commit");
    }
}
