//! The `contactq` binary: parse the command line, call into the library, map errors to
//! exit codes (BSD sysexits).

use std::process::ExitCode;

use contactq::cli::{self, Command};
use contactq::config::Settings;
use contactq::daemon::{self, DaemonError};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EX_USAGE: u8 = 64;
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
        Command::CheckConfig => check_config(&cli),
        Command::AdoptConfig => runtime.block_on(adopt_config(&cli)),
        Command::MigrateStore(args) => runtime.block_on(migrate_store(args)),
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

/// Loads and checks the configuration: the one line naming the key, exit 78.
fn load_settings(cli: &cli::Cli) -> Result<Settings, ExitCode> {
    Settings::load(cli.config.as_deref()).map_err(|e| {
        eprintln!("contactq: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

/// `contactq check-config`: every check `daemon` makes before it starts, nothing started.
fn check_config(cli: &cli::Cli) -> ExitCode {
    let settings = match load_settings(cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let file = cli
        .config
        .clone()
        .or_else(|| {
            Some(std::path::PathBuf::from(contactq::config::SYSTEM_CONFIG)).filter(|p| p.exists())
        })
        .map_or_else(
            || "built-in defaults".to_string(),
            |p| p.display().to_string(),
        );
    let names: Vec<&str> = settings.instances.keys().map(String::as_str).collect();
    println!(
        "ok: {file}: {} instance{} ({}); socket {}; database {}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        settings.daemon.socket.display(),
        settings.daemon.database
    );
    ExitCode::SUCCESS
}

/// `contactq adopt-config`: this configuration becomes the shared database's record.
async fn adopt_config(cli: &cli::Cli) -> ExitCode {
    let settings = match load_settings(cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match contactq::sharing::adopt_config(&settings).await {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => daemon_failed(e),
    }
}

/// `contactq migrate-store --from SQLITE_PATH --to postgres://…`.
async fn migrate_store(args: &cli::MigrateStoreArgs) -> ExitCode {
    match contactq::sharing::migrate_store(&args.from, &args.to).await {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => daemon_failed(e),
    }
}

/// The exit code (and the line on stderr) of a daemon-side failure.
fn daemon_failed(e: DaemonError) -> ExitCode {
    eprintln!("contactq: {e}");
    ExitCode::from(match e {
        DaemonError::AlreadyRunning(_) => EX_TEMPFAIL,
        DaemonError::Refused(_) => EX_CONFIG,
        _ => EX_SOFTWARE,
    })
}

/// `--socket` and CONTACTQ_SOCKET tell a client where the daemon is; the daemon's own
/// socket is `daemon.socket`. The option on the daemon's command line is a mistake
/// (it would be ignored), so it is refused. The variable is often inherited (a shell
/// that exported it for the client, a unit's Environment=): it is tolerated when it
/// names the socket the daemon will listen on, and refused when it names another.
fn check_socket_option(cli: &cli::Cli, settings: Option<&Settings>) -> Result<(), ExitCode> {
    let Some(socket) = &cli.socket else {
        return Ok(());
    };
    let problem = if cli.socket_flag {
        Some(format!(
            "--socket {} is a client option; the daemon listens on daemon.socket from its configuration",
            socket.display()
        ))
    } else {
        settings
            .filter(|s| s.daemon.socket != *socket)
            .map(|s| {
                format!(
                    "CONTACTQ_SOCKET={} is a client option and differs from daemon.socket ({}); unset it or set daemon.socket",
                    socket.display(),
                    s.daemon.socket.display()
                )
            })
    };
    match problem {
        Some(problem) => {
            eprintln!("contactq: usage: {problem}");
            Err(ExitCode::from(EX_USAGE))
        }
        None => Ok(()),
    }
}

async fn run_daemon(cli: &cli::Cli) -> ExitCode {
    if let Err(code) = check_socket_option(cli, None) {
        return code;
    }
    let settings = match load_settings(cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(code) = check_socket_option(cli, Some(&settings)) {
        return code;
    }
    contactq::logging::init(
        settings.daemon.log_format,
        settings.daemon.log_level.as_deref(),
    );
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
