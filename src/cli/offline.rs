//! `backup` and `restore`: the two commands that deal in database files.
//!
//! `backup` still goes through the socket (the daemon takes the copy, the client writes
//! it); `restore` cannot, since no daemon may run while the database is replaced: it
//! takes the daemon's own lock on the database for as long as it works.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::args::{BackupArgs, RestoreArgs};
use super::commands::Ctx;
use super::error::{check, CliError, NotFound};
use crate::store;

/// `contactq backup DEST`: the daemon's consistent copy, written to a new file that is
/// checked with SQLite's `quick_check` before it takes its name.
pub async fn backup(ctx: &mut Ctx<'_>, args: &BackupArgs) -> Result<(), CliError> {
    let dest = &args.dest;
    if dest.exists() {
        return Err(CliError::CannotCreate {
            path: dest.clone(),
            reason: "it exists; contactq backup never overwrites a file".into(),
        });
    }
    let partial = with_suffix(dest, ".partial");
    let cannot = |path: &Path, e: std::io::Error| CliError::CannotCreate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&partial)
        .map_err(|e| cannot(&partial, e))?;
    let result = async {
        let answer = ctx.client.download("/v1/backup", &mut file).await?;
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(response) => {
                check(response, NotFound::Instance)?;
                return Err(CliError::Unexpected {
                    status: 200,
                    body: "no backup in the answer".into(),
                });
            }
        };
        file.sync_all().map_err(|e| cannot(&partial, e))?;
        let cards = store::verify_copy(&partial).map_err(|e| CliError::Unexpected {
            status: 200,
            body: format!("the copy does not check out: {e}"),
        })?;
        Ok((bytes, cards))
    }
    .await;
    let (bytes, cards) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, dest).map_err(|e| cannot(dest, e))?;
    Ok(writeln!(
        ctx.out,
        "backup written to {}: {cards} cards, {bytes} bytes",
        dest.display()
    )?)
}

/// `contactq restore BACKUP`: refuses while a daemon runs; pauses every line unless
/// told not to, and says how many cards could go out a second time.
pub fn restore(
    ctx: &mut Ctx<'_>,
    config: Option<&Path>,
    args: &RestoreArgs,
) -> Result<(), CliError> {
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| crate::config::database_from_config(config));
    if crate::config::is_postgres_url(&database.to_string_lossy()) {
        return Err(CliError::BadInput(
            "daemon.database is a PostgreSQL database: restore it with pg_restore \
             (contactq restore puts back SQLite files only)"
                .into(),
        ));
    }
    if !args.backup.is_file() {
        return Err(CliError::Input {
            path: args.backup.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such backup file"),
        });
    }
    let _lock = crate::daemon::lock_database(&database).map_err(|e| match e {
        crate::daemon::DaemonError::AlreadyRunning(_) => CliError::DaemonRunning(format!(
            "a contactq daemon is running on {}: stop it first (systemctl stop contactq)",
            database.display()
        )),
        other => CliError::CannotCreate {
            path: database.clone(),
            reason: other.to_string(),
        },
    })?;
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report =
        store::restore(&args.backup, &database, !args.no_pause, now_secs).map_err(|e| {
            CliError::BadInput(format!("cannot restore {}: {e}", args.backup.display()))
        })?;
    writeln!(
        ctx.out,
        "restored {} ({} cards) to {}",
        args.backup.display(),
        report.cards,
        database.display()
    )?;
    if let Some(kept) = &report.kept {
        writeln!(
            ctx.out,
            "the database it replaced is kept as {}",
            kept.display()
        )?;
    }
    if report.pending > 0 {
        eprintln!(
            "contactq: warning: {} cards were queued or in flight when the backup was taken; \
             any of them that went out since would go out again",
            report.pending
        );
    }
    if report.paused.is_empty() {
        if args.no_pause && report.pending > 0 {
            eprintln!(
                "contactq: warning: --no-pause: they will be sent as soon as the daemon starts"
            );
        }
    } else {
        eprintln!(
            "contactq: every line is paused ({}): check `contactq list --state queued`, cancel \
             what already went out, then `contactq resume NAME`",
            report.paused.join(", ")
        );
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
