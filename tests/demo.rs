//! `contactq demo` end to end: the real binary, no config and no account, drains the
//! example cards to the sandbox, shows the invalid cards' errors, each card going
//! queued -> sent -> delivered -> read, the exec hook firing, and the final table, and
//! leaves nothing behind.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// A 20-character hexadecimal `idMessage`, as the Green API returns them.
fn is_id_message(word: &str) -> bool {
    word.len() == 20 && word.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn demo_drains_the_examples_shows_the_errors_and_cleans_up() {
    let run = Command::new(env!("CARGO_BIN_EXE_contactq"))
        .arg("demo")
        // Neither the user's config nor their daemon's socket may play a part.
        .env_remove("CONTACTQ_CONFIG")
        .env_remove("CONTACTQ_SOCKET")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the demo finishes within 90 s")
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // The hold was visible before the instance was authorized.
    assert!(stdout.contains("instance notAuthorized since"), "{stdout}");

    // The invalid cards' errors, as the API words them.
    for detail in [
        "'value' must have at least 1 key",
        "'chatId' with value '12345' fails to match the required pattern",
        "'contact.phoneContact'",
        "'contact.email' is not allowed",
    ] {
        assert!(stdout.contains(detail), "missing {detail:?} in:\n{stdout}");
    }

    // The final table: every example sent, each with its own idMessage.
    let table = stdout
        .split_once("ID MESSAGE")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no final table in:\n{stdout}"));
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.split_whitespace().any(is_id_message))
        .collect();
    assert_eq!(rows.len(), 5, "{table}");
    for row in &rows {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words.get(1), Some(&"sent"), "{row}");
    }
    let mut ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split_whitespace().find(|w| is_id_message(w)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "idMessages are distinct: {table}");
    assert!(table.contains("Артём Евпаторийский"), "{table}");

    // Each card went queued -> sent -> delivered -> read, as the stream numbered it.
    let stories = stdout
        .lines()
        .filter(|l| l.ends_with("queued → sent → delivered → read"))
        .count();
    assert_eq!(stories, 5, "{stdout}");
    for row in &rows {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words.get(2), Some(&"read"), "{row}");
    }
    // The exec hook fired once per delivered and read event, in seq order.
    let hook: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("hook: "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(hook.len(), 10, "{stdout}");
    for event in ["delivered", "read"] {
        assert_eq!(hook.iter().filter(|h| h[1] == event).count(), 5, "{stdout}");
    }
    let seqs: Vec<i64> = hook.iter().map(|h| h[0].parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The temporary directory it named is gone.
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cleaned up "))
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no `cleaned up` line in:\n{stdout}"));
    assert!(dir.contains("contactq-demo-"), "{dir}");
    assert!(!Path::new(dir).exists(), "{dir} is still there");
}
