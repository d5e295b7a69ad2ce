//! What the store trusts about its files, checked rather than assumed: the database is
//! created private (0640, its new directories 0750) whatever the umask; at start a
//! database that SQLite's `quick_check` finds damaged, or that cannot be written, is
//! refused untouched; and while the daemon runs, a database or WAL file deleted or
//! replaced under it is noticed, so nothing is acknowledged that lives only in an
//! unlinked file a restart would never see.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::error::StoreError;

/// Mode of the database files contactq creates (the WAL and shm files take the
/// database file's mode from SQLite): phone numbers are not for every local user.
pub const FILE_MODE: u32 = 0o640;
/// Mode of the directories contactq creates for its database.
pub const DIR_MODE: u32 = 0o750;

/// How often the files' identity is compared with the open one's. Health must turn 503
/// within a second of a deletion; a write checks again itself before it is answered.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Creates `dir` and any missing parents with [`DIR_MODE`], set explicitly so the
/// umask cannot widen (or narrow) it. Directories that already exist are left alone.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    create_dirs(dir, DIR_MODE, "daemon.database")
}

/// Creates `dir` and any missing parents with exactly `mode`; a failure names `key`.
pub fn create_dirs(dir: &Path, mode: u32, key: &str) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    let refuse = |d: &Path, e: std::io::Error| {
        StoreError::Refused(format!(
            "{key}: cannot create the directory {}: {e}",
            d.display()
        ))
    };
    for d in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                .map_err(|e| refuse(d, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(refuse(d, e)),
        }
    }
    Ok(())
}

/// Creates `path` empty with `mode` if it does not exist (mode set explicitly, whatever
/// the umask). Never follows a symlink when creating.
pub fn create_private_file(path: &Path, mode: u32) -> std::io::Result<bool> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The database's companion files SQLite keeps beside it.
pub fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Everything checked before SQLite opens the database for writing: a new database is
/// created 0640; an existing one must be a regular file, writable (as must its WAL and
/// shm files, if any), and pass `quick_check`. A refusal names the file and changes
/// nothing in it.
pub fn prepare(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let refuse = |what: String| StoreError::Refused(format!("database {}: {what}", path.display()));
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_private_file(path, FILE_MODE)
                .map_err(|e| refuse(format!("cannot be created: {e}")))?;
            return Ok(());
        }
        Err(e) => return Err(refuse(format!("cannot be read: {e}"))),
        Ok(meta) => meta,
    };
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    for file in [
        path.to_path_buf(),
        sidecar(path, "-wal"),
        sidecar(path, "-shm"),
    ] {
        match std::fs::metadata(&file) {
            Err(_) if file != path => {
                // SQLite will create it next to the database: the directory must let it.
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                let dir = dir.unwrap_or(Path::new("."));
                if let Err(e) = writable_dir(dir) {
                    return Err(StoreError::Refused(format!(
                        "database file {} cannot be created: the directory {}: {e}",
                        file.display(),
                        dir.display()
                    )));
                }
                continue;
            }
            // A FIFO or device there would block the open below, or SQLite, for ever.
            Ok(m) if !m.is_file() => {
                return Err(StoreError::Refused(format!(
                    "database file {} is not a regular file",
                    file.display()
                )))
            }
            _ => {}
        }
        // A real open for writing, not a mode check: root ignores modes, but not an
        // immutable file or a read-only mount. Nothing is written. (SQLite has not
        // opened the file yet, so closing this descriptor drops none of its locks.)
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&file);
        if let Err(e) = writable {
            return Err(StoreError::Refused(format!(
                "database file {} cannot be written: {e}",
                file.display()
            )));
        }
    }
    if meta.len() > 0 {
        quick_check(path).map_err(|why| {
            refuse(format!(
                "fails SQLite's quick_check ({why}); it was left untouched: restore it from a \
                 backup, or move it aside to start with an empty queue"
            ))
        })?;
    }
    Ok(())
}

/// Whether files can be created in `dir`, asked of the kernel (access(2) sees an
/// immutable directory and a read-only mount, even for root), creating nothing.
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SQLite's `quick_check` on a read-only connection (it cannot write the database).
fn quick_check(path: &Path) -> Result<(), String> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(rows.join("; "))
    }
}

/// Device and inode: which file a path names right now.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The identity of the database and WAL files the store opened, and whether either
/// has since been deleted or replaced (for the life of the process: the open
/// connections keep writing to the old file, which no restart would read).
#[derive(Debug)]
pub struct Identity {
    files: Vec<(PathBuf, FileId)>,
    /// The shm file, which (with the WAL) belongs to the file that was opened.
    shm: Option<(PathBuf, FileId)>,
    lost: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Identity {
    /// Records the files as they are now (call after the store has opened them).
    pub fn record(database: &Path) -> Result<Identity, StoreError> {
        let mut files = Vec::new();
        for path in [database.to_path_buf(), sidecar(database, "-wal")] {
            let id = file_id(&path).ok_or_else(|| {
                StoreError::unavailable(format!("{} vanished while opening", path.display()))
            })?;
            files.push((path, id));
        }
        let shm = sidecar(database, "-shm");
        Ok(Identity {
            files,
            shm: file_id(&shm).map(|id| (shm, id)),
            lost: AtomicBool::new(false),
            why: Mutex::new(None),
        })
    }

    /// Compares the paths with the open files now; once lost, always lost.
    pub fn verify(&self) -> Result<(), StoreError> {
        if !self.lost.load(Ordering::SeqCst) {
            for (path, id) in &self.files {
                let now = file_id(path);
                if now != Some(*id) {
                    let what = if now.is_none() { "deleted" } else { "replaced" };
                    let why = format!(
                        "{} was {what} while the daemon ran; nothing more is accepted: \
                         restart the daemon",
                        path.display()
                    );
                    tracing::error!(file = %path.display(), what, "database file {what} under the daemon: refusing writes");
                    *self.why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    self.lost.store(true, Ordering::SeqCst);
                    self.move_aside_ours();
                    break;
                }
            }
        }
        if self.lost.load(Ordering::SeqCst) {
            let why = self.why.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(StoreError::unavailable(why.unwrap_or_default()));
        }
        Ok(())
    }

    /// Our WAL and shm files, if still at their paths, belong to the file that is gone:
    /// left there, SQLite would apply that WAL's pages to whatever database is opened
    /// at the path next (the replacement, or a new empty one), mixing two databases.
    /// They are renamed aside, never deleted: the WAL holds that file's last commits.
    fn move_aside_ours(&self) {
        let stamp = crate::clock::now_ms();
        let ours = self.files.iter().skip(1).chain(self.shm.iter());
        for (path, id) in ours {
            if file_id(path) != Some(*id) {
                continue;
            }
            let aside = sidecar(path, &format!(".orphaned-{stamp}"));
            match std::fs::rename(path, &aside) {
                Ok(()) => tracing::warn!(from = %path.display(), to = %aside.display(),
                    "moved the lost database's file aside, so it is not applied to another"),
                Err(error) => tracing::error!(file = %path.display(), %error,
                    "cannot move the lost database's file aside"),
            }
        }
    }
}
