//! Unit tests for the configuration layers and their error texts.

use super::*;
use std::collections::HashMap;
use std::io::Write;

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

const GOOD: &str = r#"
[daemon]
socket = "/tmp/x.sock"
database = "/tmp/x.db"
[queue]
max_age = "1h"
[instances.main]
api_url = "http://127.0.0.1:1/"
id_instance = "1101000001"
api_token = "secrettoken"
send_delay = "500ms"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let f = write(text);
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_from(Some(f.path()), &env)
}

#[test]
fn file_values_and_defaults_are_layered() {
    let s = load(GOOD, &[]).unwrap();
    assert_eq!(s.queue.max_age, Duration::from_secs(3600));
    assert_eq!(s.queue.retry_initial, Duration::from_secs(2));
    assert_eq!(s.queue.keep_done, Duration::from_secs(30 * 86400));
    assert_eq!(s.daemon.socket_mode, 0o660);
    let main = &s.instances["main"];
    assert_eq!(main.api_url, "http://127.0.0.1:1");
    assert_eq!(main.send_delay, Duration::from_millis(500));
    assert_eq!(main.api_token.expose(), "secrettoken");
}

#[test]
fn environment_overrides_the_file() {
    let s = load(
        GOOD,
        &[
            ("CONTACTQ_INSTANCES__MAIN__API_TOKEN", "fromenvtoken"),
            ("CONTACTQ_QUEUE__MAX_AGE", "2h"),
            ("CONTACTQ_CONFIG", "/ignored.toml"),
            ("CONTACTQ_SOCKET", "/ignored.sock"),
        ],
    )
    .unwrap();
    assert_eq!(s.instances["main"].api_token.expose(), "fromenvtoken");
    assert_eq!(s.queue.max_age, Duration::from_secs(7200));
}

#[test]
fn token_never_prints() {
    let s = load(GOOD, &[]).unwrap();
    let shown = format!("{:?} {}", s, s.instances["main"].api_token);
    assert!(!shown.contains("secrettoken"), "{shown}");
}

#[test]
fn token_file_is_read_and_trimmed() {
    let token = write("filetoken\n");
    let text = GOOD.replace(
        "api_token = \"secrettoken\"",
        &format!("api_token_file = \"{}\"", token.path().display()),
    );
    assert_eq!(
        load(&text, &[]).unwrap().instances["main"]
            .api_token
            .expose(),
        "filetoken"
    );
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            GOOD.replace("max_age = \"1h\"", "max_age = \"soon\""),
            "queue.max_age",
        ),
        (
            GOOD.replace("api_token = \"secrettoken\"", ""),
            "instances.main.api_token",
        ),
        (
            GOOD.replace("[queue]", "[queue]\nmax_agee = \"1h\""),
            "max_agee",
        ),
        (GOOD.replace("socket = ", "sockett = "), "sockett"),
        (
            GOOD.replace("id_instance = \"1101000001\"", ""),
            "instances.main.id_instance",
        ),
        (
            GOOD.replace("send_delay = \"500ms\"", "send_delay = \"5 parsecs\""),
            "instances.main.send_delay",
        ),
    ];
    for (text, key) in cases {
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(!err.contains("secrettoken"), "{err}");
    }
}

#[test]
fn missing_file_is_an_error() {
    let err =
        Settings::load_from(Some(Path::new("/nonexistent/c.toml")), &HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/c.toml"));
}

#[test]
fn send_delay_under_500ms_only_against_loopback() {
    let real = GOOD.replace("http://127.0.0.1:1/", "https://api.green-api.com");
    assert!(load(&real, &[]).is_ok(), "500ms is the API's minimum");
    let err = load(&real.replace("500ms", "499ms"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("instances.main.send_delay"), "{err}");
    assert!(
        load(&GOOD.replace("500ms", "0s"), &[]).is_ok(),
        "loopback sandbox"
    );
    assert!(load(
        &GOOD
            .replace("http://127.0.0.1:1/", "http://localhost:7880")
            .replace("500ms", "0s"),
        &[]
    )
    .is_ok());
    assert!(load(
        &GOOD
            .replace("http://127.0.0.1:1/", "http://[::1]:7880")
            .replace("500ms", "0s"),
        &[]
    )
    .is_ok());
}

#[test]
fn default_socket_follows_spec_section_2() {
    let p = |r, x| socket_path_from(r, x, 1000);
    assert_eq!(
        p(Some("/run/contactq"), Some("/run/user/1000")),
        PathBuf::from("/run/contactq/contactq.sock")
    );
    assert_eq!(
        p(Some("/run/a:/run/b"), None),
        PathBuf::from("/run/a/contactq.sock")
    );
    assert_eq!(
        p(Some(""), Some("/run/user/1000")),
        PathBuf::from("/run/user/1000/contactq.sock")
    );
    assert_eq!(p(None, None), PathBuf::from("/tmp/contactq-1000.sock"));
}

#[test]
fn log_level_takes_levels_and_target_directives_only() {
    for ok in [
        "info",
        "DEBUG",
        "warn,contactq::drain=debug",
        "off",
        " error ",
    ] {
        let text = GOOD.replace("[daemon]", &format!("[daemon]\nlog_level = {ok:?}"));
        assert!(load(&text, &[]).is_ok(), "{ok}");
    }
    for bad in ["verbose", "contactq", "info,", "contactq=loud", ""] {
        let text = GOOD.replace("[daemon]", &format!("[daemon]\nlog_level = {bad:?}"));
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("daemon.log_level"), "{bad}: {err}");
    }
}

#[test]
fn no_instance_is_a_configuration_error() {
    let text = &GOOD[..GOOD.find("[instances.main]").unwrap()];
    let err = load(text, &[]).unwrap_err().to_string();
    assert!(err.contains("instances: no instance configured"), "{err}");
}

#[test]
fn token_files_must_be_private_and_non_empty() {
    use std::os::unix::fs::PermissionsExt;
    let token = write("filetoken\n");
    let text = GOOD.replace(
        "api_token = \"secrettoken\"",
        &format!("api_token_file = \"{}\"", token.path().display()),
    );
    let set_mode = |mode| {
        std::fs::set_permissions(token.path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for ok in [0o600, 0o400, 0o640, 0o440, 0o700] {
        set_mode(ok);
        assert!(load(&text, &[]).is_ok(), "{ok:o}");
    }
    for bad in [0o644, 0o660, 0o604, 0o650, 0o666] {
        set_mode(bad);
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("instances.main.api_token_file") && err.contains(&format!("{bad:04o}")),
            "{err}"
        );
    }
    set_mode(0o600);
    std::fs::write(token.path(), "  \n").unwrap();
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("is empty"), "{err}");
    std::fs::write(token.path(), "x".repeat(5000)).unwrap();
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("at most 4096 bytes"), "{err}");
    let err = load(
        &text.replace(&token.path().display().to_string(), "/dev/zero"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn the_database_path_must_be_creatable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let with_db = |db: &Path| GOOD.replace("/tmp/x.db", &db.display().to_string());
    assert!(load(&with_db(&dir.path().join("new/deeper/queue.db")), &[]).is_ok());
    let under_file = format!("{} is not a directory", dir.path().join("file").display());
    for (bad, why) in [
        (dir.path().join("file/queue.db"), under_file.as_str()),
        (dir.path().join("file/a/b/queue.db"), under_file.as_str()),
        (
            dir.path().to_path_buf(),
            "it exists and is not a regular file",
        ),
    ] {
        let err = load(&with_db(&bad), &[]).unwrap_err().to_string();
        assert!(
            err.contains("daemon.database")
                && err.contains(&bad.display().to_string())
                && err.contains(why),
            "{err}"
        );
    }
    assert!(!dir.path().join("new").exists(), "checking creates nothing");
}

/// A `postgres://` database: the password (of the URL or of
/// `database_password_file`) never prints, the file must be private, `node` is kept,
/// and a password file with a SQLite path is a mistake naming the key.
#[test]
fn a_postgres_database_hides_its_password_and_reads_the_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let with = |database: &str, extra: &str| {
        GOOD.replace(
            "database = \"/tmp/x.db\"",
            &format!("database = {database:?}\n{extra}"),
        )
    };
    let s = load(
        &with(
            "postgres://queue:s3cret-pw@db.example:5432/contactq",
            "node = \"app-1\"",
        ),
        &[],
    )
    .unwrap();
    assert_eq!(s.daemon.node, "app-1");
    let shown = format!("{} {:?}", s.daemon.database, s.daemon.database);
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(
        shown.contains("postgres://queue:***@db.example:5432/contactq"),
        "{shown}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file-pw\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!("database_password_file = {:?}", file.display().to_string());
    let s = load(&with("postgres://queue@db.example/contactq", &extra), &[]).unwrap();
    let Database::Postgres(target) = &s.daemon.database else {
        panic!("not PostgreSQL: {:?}", s.daemon.database);
    };
    assert!(!format!("{target:?}").contains("from-file-pw"));
    let options = target.connect_options().unwrap();
    assert_eq!(options.get_username(), "queue");
    assert_eq!(options.get_database(), Some("contactq"));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(&with("postgres://queue@db.example/contactq", &extra), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("daemon.database_password_file"), "{err}");
    let err = load(&with("/tmp/x.db", &extra), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("daemon.database_password_file"), "{err}");
}

/// `daemon.lease`: 10 s by default; a value that is no duration, or outside 3 s..10 min,
/// is a mistake naming the key.
#[test]
fn the_drain_lease_defaults_to_ten_seconds_and_a_bad_one_names_the_key() {
    let with = |lease: &str| {
        GOOD.replace(
            "database = \"/tmp/x.db\"",
            &format!("database = \"/tmp/x.db\"\nlease = {lease:?}"),
        )
    };
    assert_eq!(
        load(GOOD, &[]).unwrap().daemon.lease,
        Duration::from_secs(10)
    );
    assert_eq!(
        load(&with("30s"), &[]).unwrap().daemon.lease,
        Duration::from_secs(30)
    );
    for bad in ["soon", "1s", "2h"] {
        let err = load(&with(bad), &[]).unwrap_err().to_string();
        assert!(err.contains("daemon.lease"), "{bad}: {err}");
    }
}
