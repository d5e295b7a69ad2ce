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
