//! The command-line client: parse the command line, talk to the daemon's socket, draw.
//!
//! Laid out like pueue's client: `args` (the clap definition), `client` (HTTP over the
//! Unix socket), `commands` (one function per command: fetch and decide the exit code),
//! `display` (tables and `--json`). `main.rs` runs `daemon`, `sandbox` and `demo`
//! itself and hands every other command to [`run_client`].

mod args;
pub mod client;
mod commands;
mod display;
mod error;
mod follow;
mod input;
mod many;
mod offline;
mod table;

use std::io::{IsTerminal, Write};

use clap::CommandFactory;

pub use args::{default_socket_path, parse_args, resolve_socket, Cli, Command, MigrateStoreArgs};
pub use error::CliError;

use commands::Ctx;

/// Runs a client command (and `completions`, `manpage`) and returns the exit code.
/// Errors are printed on stderr as `contactq: <error>`.
pub async fn run_client(cli: Cli) -> i32 {
    let mut stdout = std::io::stdout();
    let result = execute(&cli, &mut stdout).await;
    let _ = stdout.flush();
    match result {
        Ok(()) => 0,
        // `contactq list | head`: the reader has what it wanted.
        Err(CliError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            eprintln!("contactq: {err}");
            err.exit_code()
        }
    }
}

/// [`run_client`] writing to `out`, returning the error instead of printing it.
pub async fn execute(cli: &Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let terminal = std::io::stdout().is_terminal();
    let mut ctx = Ctx {
        client: client::Client::new(resolve_socket(cli)),
        out,
        color: terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        terminal,
    };
    match &cli.command {
        Command::Send(a) => commands::send(&mut ctx, a).await,
        Command::Status(a) => commands::status(&mut ctx, a).await,
        Command::List(a) => commands::list(&mut ctx, a).await,
        Command::Show(a) => commands::show(&mut ctx, a).await,
        Command::Cancel(a) => commands::cancel(&mut ctx, a).await,
        Command::Retry(a) => commands::retry(&mut ctx, a).await,
        Command::Pause(a) => commands::pause(&mut ctx, a, false).await,
        Command::Resume(a) => commands::pause(&mut ctx, a, true).await,
        Command::Flush(a) => commands::flush(&mut ctx, a).await,
        Command::Follow(a) => follow::follow(&mut ctx, a).await,
        Command::Backup(a) => offline::backup(&mut ctx, a).await,
        Command::Restore(a) => offline::restore(&mut ctx, cli.config.as_deref(), a),
        Command::Completions { shell } => {
            let shell: clap_complete::Shell = (*shell).into();
            clap_complete::generate(shell, &mut Cli::command(), "contactq", ctx.out);
            Ok(())
        }
        Command::Manpage { dir: None } => {
            Ok(clap_mangen::Man::new(Cli::command()).render(ctx.out)?)
        }
        Command::Manpage { dir: Some(dir) } => {
            std::fs::create_dir_all(dir)?;
            Ok(clap_mangen::generate_to(Cli::command(), dir)?)
        }
        Command::Daemon
        | Command::CheckConfig
        | Command::AdoptConfig
        | Command::MigrateStore(_)
        | Command::Sandbox(_)
        | Command::Demo => Err(CliError::Usage(
            "daemon, check-config, sandbox and demo are not client commands".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
