//! Ids and states as types, seen from outside: a message id is found whatever its case
//! (API and CLI), the list filter takes exactly the six state names, and `status` and
//! `waitingFor` name the API's authorization by its wire name.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon};
use contactq::cli::client::ApiRequest;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_message_id_is_found_in_any_case_by_the_api_and_the_cli() {
    let sb = sandbox().await;
    // Held: the card stays queued, so it can be cancelled below.
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    assert_eq!(id, id.to_uppercase(), "ids are written upper-case");
    let lower = id.to_lowercase();

    let (status, view) = d.get(&format!("/v1/messages/{lower}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["id"], id.as_str(), "the answer names the canonical id");
    assert!(view["history"].as_array().is_some_and(|h| !h.is_empty()));

    let mut show = d.command();
    show.args(["show", &lower]);
    let out = show.output().expect("contactq runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));

    let mut cancel = d.command();
    cancel.args(["cancel", &lower]);
    let out = cancel.output().expect("contactq runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.message(&id).await["state"], "cancelled");

    // A text that is no ULID names no message: 404, as an unknown id.
    let (status, answer) = d
        .request(ApiRequest::delete("/v1/messages/not-a-ulid"))
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["details"]
            .as_str()
            .unwrap_or("")
            .contains("not-a-ulid"),
        "{answer}"
    );
}

#[tokio::test]
async fn the_list_filter_takes_exactly_the_six_state_names() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    let (status, list) = d.get("/v1/messages?state=queued").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["messages"][0]["id"], id.as_str());
    let (status, list) = d.get("/v1/messages?state=sent").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["messages"].as_array().map(Vec::len), Some(0));
    for bad in ["Queued", "done", "notAuthorized"] {
        let (status, answer) = d.get(&format!("/v1/messages?state={bad}")).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(
            answer["details"],
            "'state' must be one of queued, sending, sent, failed, expired, cancelled",
            "{bad}"
        );
    }
    // The CLI's --state offers the same six names and refuses others (usage, 64).
    let mut list = d.command();
    list.args(["list", "--state", "Queued"]);
    let out = list.output().expect("contactq runs");
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("queued, sending, sent, failed, expired, cancelled"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn status_and_waiting_for_name_the_authorization_by_its_wire_name() {
    let sb = sandbox().await;
    sb.set_state(None, "yellowCard");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(
        Duration::from_secs(10),
        "status shows yellowCard",
        || async { d.status().await["authorization"] == "yellowCard" },
    )
    .await;
    let waiting = d.message(&id).await["waitingFor"].clone();
    assert!(
        waiting
            .as_str()
            .is_some_and(|w| w.starts_with("instance yellowCard since ")),
        "{waiting}"
    );
    sb.set_state(None, "authorized");
    d.wait_state(&id, "sent", Duration::from_secs(15)).await;
    assert_eq!(d.status().await["authorization"], "authorized");
}
