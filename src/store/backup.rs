//! Restore of the SQLite file, and the check of a copy, offline: these run without a
//! daemon and write no database a daemon has open. (A backup, taken while the daemon
//! runs, is [`super::Store::backup_into`].) A restore is offline: it runs only while no daemon holds the
//! database (the caller holds `<database>.lock`), checks the copy, keeps the file it
//! replaces beside it, and pauses every line so that cards sent after the backup was
//! taken are not sent again before an operator has looked.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::error::{Cause, StoreError};

/// What a restore found in the copy it put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Cards `queued` or `sending` in the copy: any of them that went out after the
    /// backup was taken would go out again once its line is resumed.
    pub pending: i64,
    /// All cards in the copy.
    pub cards: i64,
    /// The lines paused by the restore.
    pub paused: Vec<String>,
    /// Where the replaced database was kept, if there was one.
    pub kept: Option<PathBuf>,
}

/// A copy's cards (a table only a contactq database has).
const CARDS: &str = "SELECT COUNT(*) FROM messages";

/// A copy's cards that a restore may send again.
const PENDING_CARDS: &str = "SELECT COUNT(*) FROM messages WHERE state IN ('queued', 'sending')";

/// Gives every line with a pending card a row, paused; then pauses every row.
const PAUSE_PENDING_LINES: &str = "INSERT INTO instances (name, paused)
    SELECT DISTINCT instance, 1 FROM messages WHERE state IN ('queued', 'sending')
    ON CONFLICT (name) DO UPDATE SET paused = 1";
const PAUSE_ALL_LINES: &str = "UPDATE instances SET paused = 1";
const LINE_NAMES: &str = "SELECT name FROM instances ORDER BY name";

/// Checks that `path` is an intact contactq database: SQLite's `quick_check` passes
/// and the schema has the queue's tables. Returns the number of cards.
pub fn verify_copy(path: &Path) -> Result<i64, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Database(Cause::context(path.display().to_string(), e)))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| StoreError::Database(Cause::context(path.display().to_string(), e)))?;
    if check != "ok" {
        return Err(StoreError::database(format!(
            "{} fails SQLite's quick_check: {check}",
            path.display()
        )));
    }
    conn.query_row(CARDS, [], |r| r.get(0)).map_err(|e| {
        StoreError::Database(Cause::context(
            format!("{} is not a contactq database", path.display()),
            e,
        ))
    })
}

/// Puts the copy `src` in place of `database`, pausing every line in it unless
/// `pause` is false. The caller holds the database's lock (no daemon runs). The file
/// replaced is kept as `<database>.before-restore-<unix seconds>`.
pub fn restore(
    src: &Path,
    database: &Path,
    pause: bool,
    now_secs: u64,
) -> Result<RestoreReport, StoreError> {
    let cards = verify_copy(src)?;
    let dir = database
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staged = sibling(database, ".restoring");
    copy_private(src, &staged)?;
    let result = (|| {
        let conn = Connection::open(&staged).map_err(StoreError::from)?;
        conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;")
            .map_err(StoreError::from)?;
        let paused = if pause { pause_all(&conn)? } else { Vec::new() };
        let pending: i64 = conn
            .query_row(PENDING_CARDS, [], |r| r.get(0))
            .map_err(StoreError::from)?;
        drop(conn);
        Ok::<_, StoreError>((paused, pending))
    })();
    let (paused, pending) = match result {
        Ok(found) => found,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    // An empty file is what the lock leaves where no database was: nothing to keep.
    if std::fs::metadata(database).is_ok_and(|m| m.len() == 0) {
        std::fs::remove_file(database).map_err(|e| io(database, e))?;
    }
    let kept = if database.exists() {
        let kept = sibling(database, &format!(".before-restore-{now_secs}"));
        std::fs::rename(database, &kept).map_err(|e| io(database, e))?;
        Some(kept)
    } else {
        None
    };
    // The old file's WAL belongs to the old file: replayed onto the copy it would
    // corrupt it.
    for suffix in ["-wal", "-shm"] {
        let side = sibling(database, suffix);
        if side.exists() {
            let keep_as = kept
                .as_ref()
                .map(|k| sibling(k, suffix))
                .unwrap_or_else(|| sibling(database, &format!("{suffix}.stale")));
            std::fs::rename(&side, &keep_as).map_err(|e| io(&side, e))?;
        }
    }
    std::fs::rename(&staged, database).map_err(|e| io(database, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    Ok(RestoreReport {
        pending,
        cards,
        paused,
        kept,
    })
}

/// Pauses every line that has a row or a pending card; answers their names.
fn pause_all(conn: &Connection) -> Result<Vec<String>, StoreError> {
    conn.execute(PAUSE_PENDING_LINES, [])
        .map_err(StoreError::from)?;
    conn.execute(PAUSE_ALL_LINES, [])
        .map_err(StoreError::from)?;
    let mut names = conn.prepare(LINE_NAMES).map_err(StoreError::from)?;
    let names = names
        .query_map([], |r| r.get(0))
        .map_err(StoreError::from)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(StoreError::from)?;
    Ok(names)
}

/// Copies `src` to a new file `dest`, readable by owner and group only, synced.
fn copy_private(src: &Path, dest: &Path) -> Result<(), StoreError> {
    let _ = std::fs::remove_file(dest);
    let mut from = File::open(src).map_err(|e| io(src, e))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(dest)
        .map_err(|e| io(dest, e))?;
    std::io::copy(&mut from, &mut to).map_err(|e| io(dest, e))?;
    to.flush().map_err(|e| io(dest, e))?;
    to.sync_all().map_err(|e| io(dest, e))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(Cause::context(path.display().to_string(), e))
}
