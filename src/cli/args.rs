//! The whole command line, as clap derive types (docs/api.md §1), and where the socket is.
//!
//! Parsing only: nothing here talks to the daemon. `main.rs` dispatches `daemon`,
//! `sandbox` and `demo`; every other command goes to [`crate::cli::run_client`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::state::MessageState;

/// A persistent outbound send-queue daemon for the Green API `sendContact` method.
#[derive(Debug, Parser)]
#[command(name = "contactq", version, about)]
pub struct Cli {
    /// Configuration file (default /etc/contactq/contactq.toml if it exists).
    #[arg(long, global = true, env = "CONTACTQ_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The daemon's Unix socket, for client commands (also accepted after the command).
    #[arg(long, env = "CONTACTQ_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// `socket` came from `--socket` itself (before or after the command), not from
    /// CONTACTQ_SOCKET (the daemon refuses the option but tolerates an inherited
    /// variable that agrees with it).
    #[arg(skip)]
    pub socket_flag: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (what systemd starts).
    // `--socket` is parsed (hidden) only so that `main` can refuse it in one clear line.
    #[command(arg = clap::Arg::new("socket").long("socket").value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf)).hide(true))]
    Daemon,
    /// Check the daemon's configuration without starting it (exit 0, or 78 and the key).
    CheckConfig,
    /// Enqueue a contact card (or a batch of them from a file); prints the new message id.
    Send(SendArgs),
    /// Per-instance overview: authorization, counts, oldest queued age, next send.
    Status(StatusArgs),
    /// Messages, newest first.
    List(ListArgs),
    /// One message with its whole history.
    Show(IdArgs),
    /// Cancel a message that is still queued, or every queued one matching a filter
    /// with --all.
    Cancel(ManyArgs),
    /// Put a failed or expired message back in its instance's line, or every one
    /// matching a filter with --all (they keep their order).
    Retry(ManyArgs),
    /// Hold an instance's line: nothing is sent until `resume` (survives restarts).
    Pause(InstanceArgs),
    /// Release an instance's line held by `pause` or by the quota.
    Resume(InstanceArgs),
    /// Ask the instance's state now and end any back-off, so a re-authorized
    /// instance drains at once (quota holds and pause stay).
    Flush(InstanceArgs),
    /// Print the event stream live (sent, failed, delivered, …), or feed it to a program
    /// or a webhook as a named consumer with its cursor in the daemon's database.
    Follow(FollowArgs),
    /// Write a consistent copy of the queue to DEST while the daemon runs.
    Backup(BackupArgs),
    /// Put a backup in place of the database (the daemon must be stopped); pauses every line.
    Restore(RestoreArgs),
    /// Record this configuration's `[instances]` in the shared PostgreSQL database,
    /// replacing the record the daemons sharing it are checked against.
    AdoptConfig,
    /// Copy a SQLite database into an empty PostgreSQL one, check the counts, and mark
    /// the SQLite file as moved (no daemon starts on it again).
    MigrateStore(MigrateStoreArgs),
    /// A local Green API emulator on loopback, for trying the daemon and for tests.
    Sandbox(SandboxArgs),
    /// Start a sandbox and a daemon in a temporary directory and watch sample cards drain.
    Demo,
    /// Print shell completions to stdout.
    Completions {
        /// The shell to write completions for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: CompletionShell,
    },
    /// Print the manual page (roff) to stdout.
    #[command(hide = true)]
    Manpage {
        /// Write every page instead (contactq.1, contactq-SUBCOMMAND.1) into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub use crate::sandbox::SandboxArgs;

/// `--socket` after a client command (the same as before it; read through
/// [`Cli::socket`], which [`parse_from`] fills from either place). Only client
/// commands have it, so only their `--help` lists it.
#[derive(Debug, Clone, Default, Args)]
pub struct SocketArg {
    /// The daemon's Unix socket (env CONTACTQ_SOCKET; default: daemon.socket of the
    /// configuration).
    #[arg(id = "socket", long = "socket", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

/// Non-empty text: an empty id, name, key or cursor is a usage error (64), not a
/// question for the daemon.
fn non_empty() -> clap::builder::NonEmptyStringValueParser {
    clap::builder::NonEmptyStringValueParser::new()
}

/// `--json`, shared by every client command.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputArgs {
    /// Print exactly the JSON the daemon answered instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `contactq send`.
#[derive(Debug, Clone, Default, Args)]
pub struct SendArgs {
    /// A `sendContact` JSON body; `-` reads stdin. A JSON array or NDJSON is a batch,
    /// every card checked before any is sent (at most 64 MiB).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Instance name (may be omitted when exactly one instance is configured).
    #[arg(long, value_name = "NAME", value_parser = non_empty())]
    pub instance: Option<String>,
    /// Recipient: `<digits>@c.us`, `<digits>@lid` or a group `…@g.us`.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub chat_id: Option<String>,
    /// The card's phone number, 7 to 15 digits (outside 11–12 with a warning).
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub phone: Option<String>,
    /// The card's first name.
    #[arg(long, conflicts_with = "file")]
    pub first_name: Option<String>,
    /// The card's middle name.
    #[arg(long, conflicts_with = "file")]
    pub middle_name: Option<String>,
    /// The card's last name.
    #[arg(long, conflicts_with = "file")]
    pub last_name: Option<String>,
    /// The card's company.
    #[arg(long, conflicts_with = "file")]
    pub company: Option<String>,
    /// Send the card as a reply to this message.
    #[arg(long, conflicts_with = "file")]
    pub quoted_message_id: Option<String>,
    /// Repeating an enqueue with the same key and body returns the original message.
    #[arg(long, value_name = "KEY", value_parser = non_empty())]
    pub idempotency_key: Option<String>,
    /// Not before this time (RFC 3339, e.g. 2026-11-24T10:00:00+03:00; at most 30 days
    /// ahead): the card joins its line then, holding nobody back meanwhile.
    #[arg(long, value_name = "TIME", value_parser = non_empty())]
    pub at: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `contactq status`.
#[derive(Debug, Clone, Default, Args)]
pub struct StatusArgs {
    /// Redraw every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `contactq list`.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Only this instance's messages.
    #[arg(long, value_name = "NAME", value_parser = non_empty())]
    pub instance: Option<String>,
    /// Only messages in this state.
    #[arg(long, value_name = "STATE", value_parser = message_state())]
    pub state: Option<MessageState>,
    /// At most this many messages, 1 to 1000 (default 50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT))]
    pub limit: Option<u32>,
    /// The cursor printed after the previous page.
    #[arg(long, value_name = "CURSOR", value_parser = non_empty())]
    pub before: Option<String>,
    /// Only messages to this chat (`<digits>@c.us`, …).
    #[arg(long, value_name = "CHAT_ID", value_parser = non_empty())]
    pub chat_id: Option<String>,
    /// Only cards carrying this phone number.
    #[arg(long, value_name = "DIGITS", value_parser = non_empty())]
    pub phone: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// The most messages one `GET /v1/messages` page holds (`limit`, docs/api.md §3).
pub const MAX_LIST_LIMIT: i64 = 1000;

/// `contactq follow`.
#[derive(Debug, Clone, Default, Args)]
pub struct FollowArgs {
    /// Only this instance's events.
    #[arg(long, value_name = "NAME", value_parser = non_empty())]
    pub instance: Option<String>,
    /// Start after this event (`seq`); 0 for every event kept. Default: the newest
    /// event (only what happens from now on), or the consumer's cursor.
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub after: Option<u64>,
    /// Run as the named consumer: its cursor is kept in the daemon's database and
    /// moves on after each delivery, so a restart goes on where it stopped (at least
    /// once). Without --exec or --webhook the events are printed.
    #[arg(long, value_name = "NAME", value_parser = non_empty())]
    pub consumer: Option<String>,
    /// Run PROG once per event (the event JSON on stdin, CONTACTQ_* in its environment);
    /// arguments for it follow `--`.
    #[arg(
        long,
        value_name = "PROG",
        requires = "consumer",
        conflicts_with = "webhook"
    )]
    pub exec: Option<String>,
    /// Arguments of the --exec program.
    #[arg(last = true, value_name = "ARG", requires = "exec")]
    pub args: Vec<String>,
    /// POST each event to URL, signed with --webhook-secret.
    #[arg(long, value_name = "URL", requires = "consumer")]
    pub webhook: Option<String>,
    /// The secret the webhook requests are signed with (at least 16 characters).
    #[arg(
        long,
        value_name = "SECRET",
        env = "CONTACTQ_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// The events delivered, comma-separated (default for --exec and --webhook: sent,
    /// failed, expired, deliveryFailed; otherwise every event).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub events: Vec<String>,
    /// How long one delivery may take before it counts as failed (the program is
    /// killed).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `contactq backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Where to write the copy (a new file; it must not exist).
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `contactq migrate-store`.
#[derive(Debug, Clone, Args)]
pub struct MigrateStoreArgs {
    /// The SQLite database file (no daemon may be running on it).
    #[arg(long, value_name = "SQLITE_PATH")]
    pub from: PathBuf,
    /// The PostgreSQL database, `postgres://…`; it must be empty.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

/// `contactq restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// A copy written by `contactq backup`.
    #[arg(value_name = "BACKUP")]
    pub backup: PathBuf,
    /// The database to replace (default: `[daemon] database` of the configuration).
    #[arg(long, value_name = "PATH")]
    pub database: Option<PathBuf>,
    /// Leave the lines as they were in the copy instead of pausing them. Cards sent after
    /// the backup was taken are then sent again at once.
    #[arg(long)]
    pub no_pause: bool,
}

/// `show`: one message id.
#[derive(Debug, Clone, Default, Args)]
pub struct IdArgs {
    /// The message id, as `send` printed it (a 26-character ULID, in any case), or
    /// the start of one that no other id shares.
    #[arg(value_name = "ID", value_parser = non_empty())]
    pub id: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `cancel`, `retry`: one message id, or `--all` with a filter.
#[derive(Debug, Clone, Default, Args)]
pub struct ManyArgs {
    /// The message id (any case), or the start of one that no other id shares.
    #[arg(value_name = "ID", value_parser = non_empty(),
          required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Every message matching the filter (--instance, --state, --chat-id, --before;
    /// at least one): cancel touches only queued ones, retry only failed and expired.
    #[arg(long)]
    pub all: bool,
    /// With --all: only this instance's messages.
    #[arg(long, value_name = "NAME", value_parser = non_empty(), requires = "all")]
    pub instance: Option<String>,
    /// With --all: only messages in this state.
    #[arg(long, value_name = "STATE", value_parser = message_state(), requires = "all")]
    pub state: Option<MessageState>,
    /// With --all: only messages to this chat.
    #[arg(long, value_name = "CHAT_ID", value_parser = non_empty(), requires = "all")]
    pub chat_id: Option<String>,
    /// With --all: only messages enqueued before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = non_empty(), requires = "all")]
    pub before: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `pause`, `resume`, `flush`: one instance name.
#[derive(Debug, Clone, Default, Args)]
pub struct InstanceArgs {
    /// The instance, as named in the configuration (`[instances.NAME]`).
    #[arg(value_name = "NAME", value_parser = non_empty())]
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `list --state`: one of the message states (docs/api.md §5), the domain's own enum;
/// help and completions list the wire names.
fn message_state() -> impl clap::builder::TypedValueParser<Value = MessageState> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(MessageState::names())
        .map(|name| name.parse::<MessageState>().expect("a listed state parses"))
}

/// The shells `completions` supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Parses `std::env::args`, printing clap's own message. `Err` carries the exit code:
/// 0 after `--help`/`--version`, 64 (EX_USAGE) for anything the user got wrong.
pub fn parse_args() -> Result<Cli, i32> {
    parse_from(std::env::args_os())
}

/// [`parse_args`] over any argument list (for tests).
pub fn parse_from<I, T>(args: I) -> Result<Cli, i32>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
    Cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| {
            let mut cli = Cli::from_arg_matches(&matches)?;
            cli.socket_flag = matches.value_source("socket") == Some(ValueSource::CommandLine);
            // `--socket` after the command (client commands, and the daemon's hidden one)
            // wins over the one before it and over CONTACTQ_SOCKET.
            if let Some((_, sub)) = matches.subcommand() {
                if let Ok(Some(path)) = sub.try_get_one::<PathBuf>("socket") {
                    cli.socket = Some(path.clone());
                    cli.socket_flag = true;
                }
            }
            Ok(cli)
        })
        .map_err(|err| {
            let _ = err.print();
            clap_exit_code(&err)
        })
}

/// clap exits 2 on usage errors; sysexits wants 64. Help and version are successes.
pub fn clap_exit_code(err: &clap::Error) -> i32 {
    if err.use_stderr() {
        super::error::EX_USAGE
    } else {
        0
    }
}

/// The socket a client command talks to: `--socket`/`CONTACTQ_SOCKET`, else what the
/// daemon's configuration says, else the built-in default.
pub fn resolve_socket(cli: &Cli) -> PathBuf {
    if let Some(path) = &cli.socket {
        return path.clone();
    }
    crate::config::socket_from_config(cli.config.as_deref()).unwrap_or_else(default_socket_path)
}

/// docs/api.md §2 default: `$RUNTIME_DIRECTORY/contactq.sock` under systemd, else
/// `$XDG_RUNTIME_DIR/contactq.sock`, else `/tmp/contactq-<uid>.sock`.
pub fn default_socket_path() -> PathBuf {
    crate::config::socket_path_from(
        std::env::var("RUNTIME_DIRECTORY").ok().as_deref(),
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
        // SAFETY: getuid has no preconditions and cannot fail.
        unsafe { libc::getuid() },
    )
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
