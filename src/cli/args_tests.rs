//! Tests for `args`: what parses, what exits 64, where the socket is.

use super::*;

fn parse(args: &[&str]) -> Result<Cli, i32> {
    parse_from(std::iter::once("contactq").chain(args.iter().copied()))
}

#[test]
fn the_command_line_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    assert_eq!(parse(&["frobnicate"]).unwrap_err(), 64);
    assert_eq!(parse(&[]).unwrap_err(), 64);
    assert_eq!(parse(&["list", "--limit", "many"]).unwrap_err(), 64);
    assert_eq!(parse(&["list", "--state", "lost"]).unwrap_err(), 64);
    assert_eq!(parse(&["send", "--chat-id", "1@c.us"]).unwrap_err(), 64);
    assert_eq!(
        parse(&["send", "-f", "x.json", "--phone", "1"]).unwrap_err(),
        64
    );
    assert_eq!(parse(&["--help"]).unwrap_err(), 0);
    assert_eq!(parse(&["--version"]).unwrap_err(), 0);
}

#[test]
fn send_takes_flags_or_a_file() {
    let cli = parse(&[
        "send",
        "--chat-id",
        "1@c.us",
        "--phone",
        "79001234568",
        "--json",
    ])
    .unwrap();
    let Command::Send(send) = cli.command else {
        panic!("not send")
    };
    assert_eq!(send.phone.as_deref(), Some("79001234568"));
    assert!(send.output.json);
    let cli = parse(&[
        "send",
        "-f",
        "-",
        "--instance",
        "main",
        "--idempotency-key",
        "k",
    ])
    .unwrap();
    let Command::Send(send) = cli.command else {
        panic!("not send")
    };
    assert_eq!(send.file, Some(PathBuf::from("-")));
    assert_eq!(send.instance.as_deref(), Some("main"));
}

#[test]
fn socket_is_global_and_list_filters_parse() {
    let cli = parse(&[
        "list",
        "--socket",
        "/tmp/x.sock",
        "--state",
        "failed",
        "--limit",
        "5",
    ])
    .unwrap();
    assert_eq!(cli.socket, Some(PathBuf::from("/tmp/x.sock")));
    assert_eq!(resolve_socket(&cli), PathBuf::from("/tmp/x.sock"));
    let Command::List(list) = cli.command else {
        panic!("not list")
    };
    assert_eq!(list.state, Some(MessageState::Failed));
    assert_eq!(list.limit, Some(5));
}

#[test]
fn the_socket_option_is_told_apart_from_the_variable() {
    let cli = parse(&["--socket", "/tmp/a.sock", "daemon"]).unwrap();
    assert!(cli.socket_flag);
    let cli = parse(&["daemon", "--socket", "/tmp/a.sock"]).unwrap();
    assert!(cli.socket_flag, "a global option after the subcommand");
    let cli = parse(&["daemon"]).unwrap();
    assert!(!cli.socket_flag);
    assert!(matches!(
        parse(&["check-config"]).unwrap().command,
        Command::CheckConfig
    ));
}
