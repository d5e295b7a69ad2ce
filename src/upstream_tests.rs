//! Unit tests for the answer classification and journal parsing.

use super::*;

#[test]
fn ok_with_id_message_is_sent() {
    assert_eq!(
        classify(200, r#"{"idMessage":"3EB0C767D097B7C7C030"}"#, None),
        SendOutcome::Sent {
            id_message: "3EB0C767D097B7C7C030".into()
        }
    );
}

#[test]
fn ok_without_id_message_is_not_a_send() {
    assert!(matches!(
        classify(200, r#"{"code":401,"description":"Unauthorized"}"#, None),
        SendOutcome::NotAuthorized { status: 401, .. }
    ));
    assert!(matches!(
        classify(200, "{}", None),
        SendOutcome::Uncertain { .. }
    ));
}

#[test]
fn bad_request_fails_unless_it_is_about_the_instance() {
    let body = r#"{"statusCode":400,"message":"Validation failed. Details: 'chatId' is required"}"#;
    assert_eq!(
        classify(400, body, None),
        SendOutcome::Rejected {
            status: 400,
            error: "Validation failed. Details: 'chatId' is required".into()
        }
    );
    for text in [
        "instance in starting process try later",
        "instance account not authorized",
    ] {
        let body = format!(r#"{{"message":"{text}"}}"#);
        assert!(
            matches!(
                classify(400, &body, None),
                SendOutcome::NotAuthorized { .. }
            ),
            "{text}"
        );
    }
}

#[test]
fn throttling_and_server_errors_are_told_apart() {
    assert!(matches!(
        classify(401, "Unauthorized", None),
        SendOutcome::NotAuthorized { .. }
    ));
    assert!(matches!(
        classify(403, "Forbidden", None),
        SendOutcome::NotAuthorized { .. }
    ));
    assert_eq!(
        classify(429, "{}", Some(Duration::from_secs(3))),
        SendOutcome::RetryLater {
            status: Some(429),
            error: "429 {}".into(),
            retry_after: Some(Duration::from_secs(3))
        }
    );
    assert!(matches!(
        classify(
            466,
            r#"{"correspondentsStatus":{"description":"quota"}}"#,
            None
        ),
        SendOutcome::QuotaExceeded { .. }
    ));
    for status in [499, 500, 502, 504] {
        assert!(
            matches!(classify(status, "", None), SendOutcome::Uncertain { .. }),
            "{status}"
        );
    }
}

#[test]
fn redactor_cuts_the_token_out() {
    let r = Redactor::new(&ApiToken::new("s3cr3t"));
    assert_eq!(
        r.clean("/waInstance1/sendContact/s3cr3t failed"),
        "/waInstance1/sendContact/*** failed"
    );
}

// The journal parsing is tested in `upstream/journal.rs`.

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Wed, 25 Nov 2026 10:00:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn a_chats_quota_466_refuses_the_chat_and_a_method_quota_466_the_line() {
    // The shapes of GREEN_API_NOTES (the Developer plan's two quotas).
    let chats = r#"{"invokeStatus":{"method":"sendmessage","used":67,"total":0,"status":"QUOTE_ALLOWED"},
        "correspondentsStatus":{"method":"correspondents","used":3,"total":3,
        "status":"CORRESPONDENTS_QUOTE_EXCEEDED","description":"Monthly quota has been exceeded. You can only send or receive messages from these numbers: 12345678901@c.us"}}"#;
    match classify(466, chats, None) {
        SendOutcome::ChatQuotaExceeded { error } => {
            assert!(
                error.starts_with("466 Monthly quota has been exceeded"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    let method = r#"{"invokeStatus":{"method":"checkwhatsapp","used":100,"total":100,
        "status":"QUOTE_EXCEEDED","description":"Monthly quota has been exceeded."}}"#;
    assert!(matches!(
        classify(466, method, None),
        SendOutcome::QuotaExceeded { .. }
    ));
    // Both exceeded: the method quota wins (the whole line is refused).
    let both = chats.replace("QUOTE_ALLOWED", "QUOTE_EXCEEDED");
    assert!(matches!(
        classify(466, &both, None),
        SendOutcome::QuotaExceeded { .. }
    ));
    // Any other 466 holds the line.
    assert!(matches!(
        classify(466, "<html>quota</html>", None),
        SendOutcome::QuotaExceeded { .. }
    ));
}

#[test]
fn a_redirect_is_a_temporary_failure() {
    for status in [301, 302, 307, 308] {
        assert!(
            matches!(
                classify(status, "", None),
                SendOutcome::RetryLater { status: Some(s), .. } if s == status
            ),
            "{status}"
        );
    }
}

/// A one-shot loopback server answering `head` then `body_len` bytes of `[`.
async fn serve_once(head: String, body_len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(head.as_bytes()).await;
        let chunk = vec![b'['; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
    });
    url
}

fn client_for(url: &str) -> GreenApi {
    let settings = InstanceSettings {
        name: "main".into(),
        api_url: url.into(),
        id_instance: "1".into(),
        api_token: ApiToken::new("s3cr3t"),
        send_delay: Duration::ZERO,
        quiet_hours: None,
    };
    GreenApi::new(
        &settings,
        GreenApi::http_client(Duration::from_secs(10)).unwrap(),
    )
}

#[tokio::test]
async fn a_journal_longer_than_32_mib_is_an_error_read_no_further() {
    // Chunked (no Content-Length), so the cap is enforced while streaming.
    let total = 40 * 1024 * 1024;
    let url = serve_once(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".into(),
        total,
    )
    .await;
    let error = client_for(&url).last_outgoing(10).await.unwrap_err();
    assert!(error.0.contains("longer than 33554432 bytes"), "{error}");
}

#[tokio::test]
async fn a_state_answer_over_64_kib_is_an_error() {
    let url = serve_once(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            1024 * 1024
        ),
        1024 * 1024,
    )
    .await;
    match client_for(&url).state().await {
        Err(StateError::Other(e)) => assert!(e.contains("longer than 65536 bytes"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_401_or_403_to_get_state_is_a_refusal_not_a_connection_error() {
    for status in [401, 403] {
        let url = serve_once(
            format!("HTTP/1.1 {status} No\r\nContent-Length: 12\r\nConnection: close\r\n\r\nUnauthorized"),
            0,
        )
        .await;
        match client_for(&url).state().await {
            Err(StateError::Refused { status: s, .. }) => assert_eq!(s, status),
            other => panic!("{status}: {other:?}"),
        }
    }
    // The API's other way of saying it: 200 carrying {"code":401}.
    let body = r#"{"code":401,"description":"Unauthorized"}"#;
    let url = serve_once(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        0,
    )
    .await;
    assert!(matches!(
        client_for(&url).state().await,
        Err(StateError::Refused { status: 401, .. })
    ));
}

#[tokio::test]
async fn a_state_answer_is_typed_and_an_unlisted_state_keeps_its_text() {
    for (body, expected) in [
        (
            r#"{"stateInstance":"authorized"}"#,
            Authorization::Authorized,
        ),
        (
            r#"{"stateInstance":"yellowCard"}"#,
            Authorization::YellowCard,
        ),
        (
            r#"{"stateInstance":"pendingMigration"}"#,
            Authorization::Other("pendingMigration".into()),
        ),
    ] {
        let url = serve_once(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            0,
        )
        .await;
        let state = client_for(&url).state().await.unwrap();
        assert_eq!(state, expected, "{body}");
        assert_eq!(state.is_authorized(), body.contains("\"authorized\""));
    }
}
