//! The Debian package (debian/build-deb → cargo-deb), built from the binary this test
//! run already compiled, is checked with dpkg-deb and then installed, upgraded and
//! purged with the real dpkg in a throw-away root (`--root` with chroot-less maintainer
//! scripts, which work under `$DPKG_ROOT`). The installed binary runs with the
//! installed config against the sandbox. Without cargo-deb, dpkg or systemd's tools the
//! test says it is skipped; under `CI=true` it fails instead (.ci/ship-deps installs
//! them).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, received_names, sandbox, TOKEN};
use contactq::cli::client::{ApiRequest, Client};
use serde_json::{json, Value};

/// Every subcommand with a man page of its own (the hidden `manpage` has none), read
/// from the CLI's own definition so a new subcommand needs its page too.
fn subcommands() -> Vec<String> {
    use clap::CommandFactory;
    contactq::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// True when `program ARGS` runs; otherwise false outside CI, a failure under CI=true.
fn available(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`{program} {}` does not run (CI=true: run .ci/ship-deps)",
            args.join(" ")
        );
        eprintln!("`{program} {}` does not run: skipped", args.join(" "));
    }
    ok
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8 output")
}

/// `dpkg` against the throw-away root: its own database, scripts run outside a chroot
/// with `$DPKG_ROOT` set, dependencies (libc6, systemd) not installed there.
fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("dpkg.log").display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--force-unsafe-io",
            "--force-confold",
        ]);
    cmd
}

fn installed_version(root: &Path) -> String {
    stdout(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Version} ${db:Status-Abbrev}", "contactq"]),
    )
}

/// The package's debug build, in `dir`: the binary the test harness built is the one
/// packed (no release build in the test suite).
fn build_package(dir: &Path) -> PathBuf {
    let started = Instant::now();
    run(Command::new(repo().join("debian/build-deb"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_contactq"))
        .args(["--strip", "--fast", "--deb-version", "0.1.0-1", "-o"])
        .arg(dir));
    eprintln!("package built in {:?}", started.elapsed());
    let deb = dir.join(format!(
        "contactq_0.1.0-1_{}.deb",
        stdout(Command::new("dpkg").arg("--print-architecture")).trim()
    ));
    assert!(deb.is_file(), "no {}", deb.display());
    deb
}

/// The same package as version `version` (an upgrade), repacked without compression.
fn repack(deb: &Path, version: &str, dir: &Path) -> PathBuf {
    let tree = dir.join(format!("tree-{version}"));
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("control");
    let text = text.replace("Version: 0.1.0-1", &format!("Version: {version}"));
    std::fs::write(&control, text).expect("control");
    let out = dir.join(format!("contactq_{version}.deb"));
    run(Command::new("dpkg-deb")
        .args(["-Znone", "--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&out));
    out
}

/// The installed binary as `contactq daemon` with the installed config; what a unit
/// would change comes in through the environment layer (CONTACTQ_SECTION__KEY).
struct Installed {
    child: Child,
    socket: PathBuf,
}

impl Installed {
    async fn start(root: &Path, sandbox_url: &str, run_dir: &Path) -> Installed {
        let socket = run_dir.join("contactq.sock");
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(run_dir.join("daemon.log")).expect("log");
        let mut child = Command::new(root.join("usr/bin/contactq"))
            .arg("--config")
            .arg(root.join("etc/contactq/contactq.toml"))
            .arg("daemon")
            .env_remove("CONTACTQ_CONFIG")
            .env_remove("CONTACTQ_SOCKET")
            .env("CONTACTQ_DAEMON__SOCKET", &socket)
            // systemd's StateDirectory= with DynamicUser=yes: /var/lib/contactq is a
            // link into /var/lib/private.
            .env(
                "CONTACTQ_DAEMON__DATABASE",
                root.join("var/lib/contactq/queue.db"),
            )
            .env("CONTACTQ_INSTANCES__MAIN__API_URL", sandbox_url)
            .env(
                "CONTACTQ_INSTANCES__MAIN__API_TOKEN_FILE",
                root.join("etc/contactq/tokens/main"),
            )
            .env("CONTACTQ_INSTANCES__MAIN__SEND_DELAY", "100ms")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the installed binary starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = Client::new(&socket)
                .send(ApiRequest::get("/v1/health"))
                .await
            {
                if r.status == 200 {
                    return Installed { child, socket };
                }
            }
            if let Some(status) = child.try_wait().expect("wait") {
                panic!(
                    "the installed daemon exited ({status}): {}",
                    std::fs::read_to_string(run_dir.join("daemon.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the installed daemon did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = Client::new(&self.socket)
            .send(ApiRequest::get(path))
            .await
            .expect("the daemon answers");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("JSON")
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "SIGTERM: a clean exit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deb_builds_installs_upgrades_keeping_the_queue_and_purges() {
    if !available("cargo", &["deb", "--version"])
        || !available("dpkg", &["--version"])
        || !available("dpkg-deb", &["--version"])
        || !available("systemd-sysusers", &["--version"])
        || !available("systemd-analyze", &["--version"])
    {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let deb = build_package(work.path());

    // What the package says about itself, and what it holds.
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for wanted in ["Package: contactq", "Version: 0.1.0-1", "Section: net"] {
        assert!(info.contains(wanted), "no {wanted:?} in:\n{info}");
    }
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends in:\n{info}"));
    assert!(
        depends.contains("libc6") && depends.contains("systemd"),
        "{depends}"
    );
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/contactq/contactq.toml");
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mut expected: Vec<String> = [
        "./usr/bin/contactq",
        "./lib/systemd/system/contactq.service",
        "./lib/systemd/system/contactq.socket",
        "./usr/lib/sysusers.d/contactq.conf",
        "./usr/lib/tmpfiles.d/contactq.conf",
        "./etc/contactq/contactq.toml",
        "./usr/share/man/man1/contactq.1.gz",
        "./usr/share/man/man5/contactq.toml.5.gz",
        "./usr/share/bash-completion/completions/contactq",
        "./usr/share/zsh/vendor-completions/_contactq",
        "./usr/share/fish/vendor_completions.d/contactq.fish",
        "./usr/share/doc/contactq/operations.md",
        "./usr/share/doc/contactq/dashboards/contactq.json",
        "./usr/share/doc/contactq/dashboards/alerts.yml",
        "./usr/share/doc/contactq/examples/enqueue.py",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.extend(
        subcommands()
            .iter()
            .map(|s| format!("./usr/share/man/man1/contactq-{s}.1.gz")),
    );
    for path in &expected {
        assert!(
            listing.lines().any(|l| l.ends_with(path.as_str())),
            "{path} is not in the package:\n{listing}"
        );
    }
    assert!(
        !listing.contains("contactq-manpage"),
        "the hidden manpage command gets no page"
    );

    // The maintainer scripts: present, executable, valid sh; a first install starts
    // nothing, an upgrade restarts a running daemon, a purge removes the data.
    let control = work.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("no {script}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o755, 0o755, "{script} is executable");
        run(Command::new("sh").arg("-n").arg(&path));
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(
        !postinst.contains("systemctl enable") && !postinst.contains("systemctl start"),
        "a fresh install must not start an unconfigured daemon"
    );
    assert!(
        postinst
            .contains("if [ -n \"$2\" ]; then\n            systemctl try-restart contactq.service"),
        "an upgrade restarts a running daemon, and only then:\n{postinst}"
    );

    // Install into a throw-away root.
    let root = work.path().join("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    run(dpkg(&root).arg("-i").arg(&deb));
    assert_eq!(installed_version(&root), "0.1.0-1 ii ");

    let version = stdout(Command::new(root.join("usr/bin/contactq")).arg("--version"));
    assert_eq!(version.trim(), "contactq 0.1.0");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd in the root");
    assert!(
        passwd.lines().any(|l| l.starts_with("contactq:")),
        "the contactq user:\n{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).expect("group in the root");
    assert!(group.lines().any(|l| l.starts_with("contactq:")), "{group}");
    let tokens = root.join("etc/contactq/tokens");
    let mode = std::fs::metadata(&tokens)
        .expect("the token directory")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o700, "tokens are root-only");
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/contactq.service")).expect("unit");
    assert!(unit.contains("\nExecStart=/usr/bin/contactq daemon\n"));
    assert!(unit.contains("\nLoadCredential=token:/etc/contactq/tokens\n"));
    // The installed unit, read from the root by systemd's own analyzer, is as hardened
    // as the repository's (tests/systemd.rs).
    let security = stdout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(format!("--root={}", root.display()))
            .arg("contactq.service"),
    );
    let score: f64 = security
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for contactq.service: "))
        .and_then(|tail| tail.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    assert!(score <= 2.0, "exposure {score}:\n{security}");
    let page = std::fs::read(root.join("usr/share/man/man1/contactq.1.gz")).expect("page");
    assert_eq!(&page[..2], &[0x1f, 0x8b], "man pages are gzipped");
    // contactq(1) lists the subcommands' pages: each one it names is installed.
    let roff = stdout(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/contactq.1.gz")),
    );
    // roff escapes every hyphen: `contactq\-check\-config(1)`.
    let named: Vec<String> = roff
        .split("contactq\\-")
        .skip(1)
        .filter_map(|rest| {
            rest.split_once("(1)")
                .map(|(name, _)| name.replace("\\-", "-"))
        })
        .collect();
    assert_eq!(named.len(), subcommands().len(), "{roff}");
    for name in named {
        assert!(
            root.join(format!("usr/share/man/man1/contactq-{name}.1.gz"))
                .is_file(),
            "contactq(1) names contactq-{name}(1), which is not installed"
        );
    }

    // Configured as the docs say, the installed binary sends with the installed config.
    std::fs::write(tokens.join("main"), format!("{TOKEN}\n")).expect("token");
    // As the docs say: the token file is the owner's alone.
    std::fs::set_permissions(
        tokens.join("main"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod the token");
    let private = root.join("var/lib/private/contactq");
    std::fs::create_dir_all(&private).expect("state dir");
    std::os::unix::fs::symlink("private/contactq", root.join("var/lib/contactq"))
        .expect("state link");
    let sandbox = sandbox().await;
    let run_dir = tempfile::tempdir().expect("run dir");
    let daemon = Installed::start(&root, &sandbox.url(), run_dir.path()).await;
    let card = json!({"chatId": "11001234567@c.us",
                      "contact": {"phoneContact": 79_001_234_500u64, "firstName": "card-1"}});
    let r = Client::new(&daemon.socket)
        .send(ApiRequest::post(
            "/v1/instances/main/sendContact",
            Some(card.to_string().into_bytes()),
        ))
        .await
        .expect("enqueue");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    eventually(
        Duration::from_secs(30),
        "the card reaches the sandbox",
        || {
            let names = received_names(&sandbox);
            async move { names == ["card-1"] }
        },
    )
    .await;
    daemon.stop();

    // Upgrade: an edited conffile and the queue stay; the new binary opens the queue.
    let config = root.join("etc/contactq/contactq.toml");
    let edited = std::fs::read_to_string(&config).expect("config") + "# edited by the operator\n";
    std::fs::write(&config, &edited).expect("edit config");
    let newer = repack(&deb, "0.1.0-2", work.path());
    run(dpkg(&root).arg("-i").arg(&newer));
    assert_eq!(installed_version(&root), "0.1.0-2 ii ");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited);
    assert!(
        tokens.join("main").is_file(),
        "the token survives an upgrade"
    );
    let daemon = Installed::start(&root, &sandbox.url(), run_dir.path()).await;
    let messages = daemon.get("/v1/messages").await;
    let messages = messages["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "the queue survives the upgrade");
    assert_eq!(messages[0]["state"], "sent");
    daemon.stop();
    sandbox.shutdown();

    // Remove keeps data and config; purge takes them.
    run(dpkg(&root).arg("--remove").arg("contactq"));
    assert!(!root.join("usr/bin/contactq").exists());
    assert!(private.join("queue.db").is_file(), "remove keeps the queue");
    assert!(config.is_file(), "remove keeps the config");
    run(dpkg(&root).arg("--purge").arg("contactq"));
    for gone in [
        "var/lib/private/contactq",
        "var/lib/contactq",
        "etc/contactq",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(gone)).is_err(),
            "purge leaves /{gone}"
        );
    }
}

#[test]
fn manpage_dir_writes_a_page_per_subcommand_and_every_page_named_exists() {
    // What debian/build-deb packs; runs without cargo-deb or dpkg.
    let dir = tempfile::tempdir().expect("tempdir");
    let man = dir.path().join("man");
    run(Command::new(env!("CARGO_BIN_EXE_contactq"))
        .args(["manpage", "--dir"])
        .arg(&man));
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .expect("the directory is made")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    pages.sort();
    let mut expected: Vec<String> = subcommands()
        .iter()
        .map(|s| format!("contactq-{s}.1"))
        .chain(["contactq.1".to_string()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);
    let top = std::fs::read_to_string(man.join("contactq.1")).expect("contactq.1");
    for page in &pages {
        let name = page.trim_end_matches(".1").replace('-', "\\-");
        assert!(
            page == "contactq.1" || top.contains(&format!("{name}(1)")),
            "contactq(1) does not point to {page}"
        );
    }
    let send = std::fs::read_to_string(man.join("contactq-send.1")).expect("send page");
    assert!(send.contains("\\-\\-chat\\-id"), "{send}");
    // Printing one page to stdout still works as before.
    let out = stdout(Command::new(env!("CARGO_BIN_EXE_contactq")).arg("manpage"));
    assert!(out.contains("\n.TH contactq 1 "), "{out}");
}
