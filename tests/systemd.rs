//! The shipped systemd units and example configuration stay usable: the example loads
//! with the real `Settings` code, agrees with the units on the socket and credential
//! paths, and `systemd-analyze` finds the service hardened (exposure ≤ 2.0) and the
//! units valid. Without `systemd-analyze` (or with one older than systemd 250) those two
//! tests say they are skipped, and under `CI=true` they fail instead.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use contactq::config::Settings;

mod common;

const MAX_EXPOSURE: f64 = 2.0;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).expect("repository file is readable")
}

/// The value of the first `Key=` line of a unit file.
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
}

/// Runs `systemd-analyze ARGS`, or None (with a message) where it is not installed.
fn systemd_analyze(args: &[&str]) -> Option<Output> {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            common::skip_or_fail("systemd-analyze is not installed (apt-get install systemd)");
            None
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

#[test]
fn example_config_loads_with_every_key_it_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("main.token");
    std::fs::write(&token_file, "example-token-0123456789\n").expect("token file");
    // A token file must not be readable by others (mode 0640 at most).
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // The example reads the token from systemd's credential directory; the environment
    // layer points it at a file of ours, as an operator could.
    let env = HashMap::from([(
        "CONTACTQ_INSTANCES__MAIN__API_TOKEN_FILE".to_string(),
        token_file.display().to_string(),
    )]);
    let example = repo_file("config/contactq.example.toml");
    let settings = Settings::load_from(Some(&example), &env)
        .unwrap_or_else(|e| panic!("config/contactq.example.toml does not load: {e}"));

    let d = &settings.daemon;
    assert_eq!(d.socket, Path::new("/run/contactq/contactq.sock"));
    assert_eq!(d.socket_mode, 0o660);
    assert_eq!(d.log_format, contactq::config::LogFormat::Text);
    assert_eq!(d.log_level.as_deref(), Some("info"));
    assert!(d.allowed_uids.is_empty() && d.allowed_gids.is_empty());
    assert_eq!(d.metrics_listen, None);
    let q = &settings.queue;
    assert_eq!(q.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(q.state_poll, Duration::from_secs(30));
    assert_eq!(q.retry_initial, Duration::from_secs(2));
    assert_eq!(q.retry_max, Duration::from_secs(300));
    assert_eq!(q.reconcile_lag, Duration::from_secs(120));
    assert_eq!(q.quota_retry, Duration::from_secs(3600));
    assert_eq!(q.keep_done, Duration::from_secs(30 * 86400));
    assert_eq!(q.request_timeout, Duration::from_secs(30));
    assert_eq!(q.delivery_poll, Duration::from_secs(15));
    assert_eq!(q.delivery_window, Duration::from_secs(24 * 3600));
    let main = &settings.instances["main"];
    assert_eq!(main.api_url, "https://api.green-api.com");
    assert_eq!(main.id_instance, "1101000001");
    assert_eq!(main.api_token.expose(), "example-token-0123456789");
    assert_eq!(main.send_delay, Duration::from_secs(5));
    assert_eq!(settings.instances.len(), 1);
}

#[test]
fn commented_out_example_keys_are_valid_too() {
    // Uncommenting an optional key of the example must not produce an unknown key.
    let example = read("config/contactq.example.toml");
    let uncommented: String = example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with("database =")
                    || rest.starts_with("metrics_listen =")
                    || rest.starts_with("max_database_size =")
                    || rest.starts_with("quiet_hours =")
                    || rest.starts_with("timezone =") =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("contactq.toml");
    std::fs::write(
        &file,
        uncommented.replace(
            "api_token_file = \"/run/credentials/contactq.service/token_main\"",
            "api_token = \"inline-token\"",
        ),
    )
    .expect("write");
    let settings = Settings::load_from(Some(&file), &HashMap::new())
        .unwrap_or_else(|e| panic!("the example with its optional keys does not load: {e}"));
    assert_eq!(
        settings.daemon.database.sqlite_path(),
        Some(Path::new("/var/lib/contactq/queue.db"))
    );
    assert_eq!(
        settings.daemon.metrics_listen,
        Some("127.0.0.1:9464".parse().expect("addr"))
    );
    assert_eq!(settings.daemon.max_database_pages, Some((1 << 30) / 4096));
    let quiet = settings.instances["main"].quiet_hours.as_ref();
    assert_eq!(
        quiet.map(ToString::to_string).as_deref(),
        Some("22:00-08:00 Europe/Moscow")
    );
}

#[test]
fn units_and_example_agree_on_socket_and_token_paths() {
    let service = read("systemd/contactq.service");
    let socket = read("systemd/contactq.socket");
    let example = read("config/contactq.example.toml");

    let listen = directive(&socket, "ListenStream").expect("ListenStream=");
    assert!(
        example.contains(&format!("socket = \"{listen}\"")),
        "the example's socket must be contactq.socket's ListenStream= ({listen})"
    );
    let (id, path) = token_credential(&service);
    assert_eq!(
        path, "/etc/contactq/tokens",
        "one directory for every instance"
    );
    assert!(
        example.contains(&format!(
            "api_token_file = \"/run/credentials/contactq.service/{id}_main\""
        )),
        "the example's api_token_file must be the credential {id}_main"
    );
    assert_eq!(directive(&service, "Type"), Some("notify"));
    assert_eq!(directive(&socket, "SocketMode"), Some("0660"));
}

/// The unit's one `LoadCredential=ID:DIRECTORY` line, as (ID, DIRECTORY).
fn token_credential(service: &str) -> (String, String) {
    let lines: Vec<&str> = service
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LoadCredential="))
        .collect();
    assert_eq!(lines.len(), 1, "one LoadCredential= line for all instances");
    let (id, path) = lines[0].split_once(':').expect("LoadCredential=ID:PATH");
    (id.to_string(), path.to_string())
}

/// What systemd does with `LoadCredential=ID:DIRECTORY` (systemd.exec(5)): every file
/// in the directory becomes the credential `ID_FILENAME` in `$CREDENTIALS_DIRECTORY`.
fn load_credential_directory(id: &str, source: &Path, credentials: &Path) {
    for entry in std::fs::read_dir(source).expect("read the tokens directory") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("utf-8 file name");
        let credential = credentials.join(format!("{id}_{name}"));
        std::fs::copy(entry.path(), &credential).expect("copy a credential");
        // systemd makes every credential 0400, owned by the service.
        std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o400))
            .expect("chmod a credential");
    }
}

#[test]
fn one_token_file_per_instance_reaches_its_instance_through_the_unit() {
    // The operator's side: /etc/contactq/tokens/NAME for each instance, the example
    // config with its second instance uncommented. systemd's side is emulated from
    // the unit's own LoadCredential= line; the daemon's side is the real Settings.
    let service = read("systemd/contactq.service");
    let (id, _) = token_credential(&service);
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&tokens).expect("mkdir tokens");
    std::fs::create_dir(&credentials).expect("mkdir credentials");
    std::fs::write(tokens.join("main"), "main-token-0123456789\n").expect("token");
    std::fs::write(tokens.join("sales"), "sales-token-9876543210\n").expect("token");
    load_credential_directory(&id, &tokens, &credentials);

    let example = read("config/contactq.example.toml")
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with("[instances.sales]")
                    || rest.starts_with("id_instance = \"1101000002\"")
                    || rest.starts_with(
                        "api_token_file = \"/run/credentials/contactq.service/token_sales",
                    )
                    || rest.starts_with("send_delay =") =>
            {
                rest.to_string()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "/run/credentials/contactq.service/",
            &format!("{}/", credentials.display()),
        );
    let file = dir.path().join("contactq.toml");
    std::fs::write(&file, example).expect("write");
    let settings = Settings::load_from(Some(&file), &HashMap::new())
        .unwrap_or_else(|e| panic!("the example with two instances does not load: {e}"));
    assert_eq!(settings.instances.len(), 2);
    assert_eq!(
        settings.instances["main"].api_token.expose(),
        "main-token-0123456789"
    );
    assert_eq!(
        settings.instances["sales"].api_token.expose(),
        "sales-token-9876543210"
    );
}

#[test]
fn service_exposure_is_at_most_2() {
    let unit = repo_file("systemd/contactq.service");
    let Some(out) = systemd_analyze(&["security", "--offline=true", &unit.display().to_string()])
    else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("--offline") {
        common::skip_or_fail(&format!(
            "this systemd-analyze has no --offline (systemd < 250):\n{stderr}"
        ));
        return;
    }
    // "→ Overall exposure level for contactq.service: 1.2 OK 🙂"
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}\n{stderr}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|tail| tail.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("{line}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn units_verify_clean() {
    // verify checks that ExecStart= exists: point it at the binary cargo just built.
    let dir = tempfile::tempdir().expect("tempdir");
    let service = read("systemd/contactq.service").replace(
        "ExecStart=/usr/local/bin/contactq ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_contactq")),
    );
    assert!(service.contains(env!("CARGO_BIN_EXE_contactq")));
    let service_path = dir.path().join("contactq.service");
    let socket_path = dir.path().join("contactq.socket");
    std::fs::write(&service_path, service).expect("write");
    std::fs::write(&socket_path, read("systemd/contactq.socket")).expect("write");
    let Some(out) = systemd_analyze(&[
        "verify",
        &service_path.display().to_string(),
        &socket_path.display().to_string(),
    ]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("contactq")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
    if !stderr.trim().is_empty() {
        eprintln!("systemd-analyze verify, about other units:\n{stderr}");
    }
}
