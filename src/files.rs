//! The data folder's files, private and whole. The folder holds the write model, the views, the audit log, the
//! JWT secret and the instance id: nobody but the service's user has any business reading them, so the folder
//! is `0700` and every file in it `0600`, whatever the umask says.
//!
//! SQLite gives a database's `-wal` and `-shm` files the mode of the database file, so creating the database
//! file `0600` before SQLite opens it is enough for all three (see [`private_file`]).
//!
//! Small files that must never be seen half-written (the JWT secret: an empty secret would be a key anyone
//! knows) are written to a temporary file, synced, and only then given their name ([`create_atomically`]).

use std::io::Write as _;
use std::path::Path;

#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) if needed and makes it `0700`.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, true)
}

/// Makes sure `path` exists and is `0600` before a database opens it: created empty (SQLite treats an empty
/// file as a new database) when missing, narrowed when it exists, and so are its `-wal` / `-shm` companions
/// left by an earlier run.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    match open_new(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => set_mode(path, false)?,
        Err(e) => return Err(e),
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        match set_mode(Path::new(&companion), false) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Writes `contents` to `path`, which must not exist, so that no reader ever sees it partly written: a
/// temporary file is written and synced, then linked under its name (which fails with `AlreadyExists` if
/// another process got there first: a rename would silently replace that process's file), and the folder is
/// synced so the name survives a crash.
pub fn create_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temp = write_temp(path, contents)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    linked?;
    sync_parent(path)
}

/// Writes `contents` to `path`, replacing whatever is there, with the same guarantees as
/// [`create_atomically`] (the temporary file is renamed over it).
pub fn replace_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temp = write_temp(path, contents)?;
    if let Err(e) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    sync_parent(path)
}

/// `<path>.tmp-<random>`, `0600`, holding `contents`, synced.
fn write_temp(path: &Path, contents: &[u8]) -> std::io::Result<std::path::PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    let temp = std::path::PathBuf::from(name);
    let written = open_new(&temp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => std::fs::File::open(".")?.sync_all(),
    }
}

#[cfg(unix)]
fn open_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn set_mode(path: &Path, dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if dir { DIR_MODE } else { FILE_MODE };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(path: &Path, _dir: bool) -> std::io::Result<()> {
    std::fs::metadata(path).map(|_| ())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_and_created_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        private_dir(&data).expect("dir");
        assert_eq!(mode(&data), 0o700);
        let secret = data.join("secret");
        create_atomically(&secret, b"abc").expect("created");
        assert_eq!((std::fs::read(&secret).expect("read"), mode(&secret)), (b"abc".to_vec(), 0o600));
        let again = create_atomically(&secret, b"xyz").expect_err("exists");
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&secret).expect("read"), b"abc", "the first one stays");
        replace_atomically(&secret, b"new").expect("replaced");
        assert_eq!(std::fs::read(&secret).expect("read"), b"new");
        let leftovers = std::fs::read_dir(&data).expect("list").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");

        let db = data.join("x.db");
        std::fs::write(data.join("x.db-wal"), b"").expect("wal");
        std::fs::set_permissions(data.join("x.db-wal"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        private_file(&db).expect("private");
        assert_eq!((mode(&db), mode(&data.join("x.db-wal"))), (0o600, 0o600));
    }
}
