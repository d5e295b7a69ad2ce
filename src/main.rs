//! The `contactq` binary: parse the command line, call into the library, map errors to
//! exit codes (BSD sysexits).

use std::process::ExitCode;

use contactq::cli::{self, Command};
use contactq::config::Settings;
use contactq::daemon::{self, DaemonError};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EX_SOFTWARE: u8 = 70;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = match cli::parse_args() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code as u8),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("contactq: cannot start the async runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    match &cli.command {
        Command::Daemon => runtime.block_on(run_daemon(&cli)),
        Command::Sandbox(args) => {
            contactq::logging::init(contactq::config::LogFormat::Text, None);
            match runtime.block_on(contactq::sandbox::run(args.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("contactq sandbox: {e}");
                    ExitCode::from(EX_SOFTWARE)
                }
            }
        }
        Command::Demo => match runtime.block_on(contactq::demo::run()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("contactq demo: {e:#}");
                ExitCode::from(EX_SOFTWARE)
            }
        },
        _ => ExitCode::from(runtime.block_on(cli::run_client(cli)) as u8),
    }
}

async fn run_daemon(cli: &cli::Cli) -> ExitCode {
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("contactq: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    contactq::logging::init(
        settings.daemon.log_format,
        settings.daemon.log_level.as_deref(),
    );
    if settings.instances.is_empty() {
        tracing::warn!("no [instances.NAME] configured: cards can be enqueued for none");
    }
    match daemon::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ DaemonError::AlreadyRunning(_)) => {
            eprintln!("contactq: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
        Err(e @ DaemonError::Refused(_)) => {
            eprintln!("contactq: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("contactq: {e}");
            tracing::error!(error = %e, "daemon stopped on an error");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}
