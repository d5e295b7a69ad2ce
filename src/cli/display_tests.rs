//! Tests for `display`: given an answer, the table shows the cells a user looks for.

use super::*;
use serde_json::json;

fn now() -> DateTime<Utc> {
    super::super::table::parse_time("2026-11-24T10:01:00Z").unwrap()
}

fn draw(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

pub(crate) fn sent_message() -> MessageView {
    serde_json::from_value(json!({
        "id":"01JD3W0000000000000000000A", "instance":"main", "state":"sent",
        "chatId":"11001234567@c.us", "contact":{"phoneContact":79001234568u64,"firstName":"Artem","lastName":"Ivanov"},
        "quotedMessageId":null, "idempotencyKey":null,
        "enqueuedAt":"2026-11-24T10:00:00.000Z", "expiresAt":"2026-11-25T10:00:00.000Z",
        "attempts":1, "lastError":null, "idMessage":"3EB0C767D097B7C7C030",
        "sentAt":"2026-11-24T10:00:05.120Z",
        "delivery":"read", "deliveredAt":"2026-11-24T10:00:07.000Z",
        "readAt":"2026-11-24T10:01:00.000Z",
        "history":[
            {"at":"2026-11-24T10:00:00.000Z","event":"enqueued"},
            {"at":"2026-11-24T10:00:05.000Z","event":"attempt","attempt":1},
            {"at":"2026-11-24T10:00:05.120Z","event":"sent","httpStatus":200,"detail":"3EB0C767D097B7C7C030"}
        ]
    }))
    .unwrap()
}

fn queued_message() -> MessageView {
    serde_json::from_value(json!({
        "id":"01JD3W0000000000000000000B", "instance":"main", "state":"queued",
        "chatId":"11001234567@c.us", "contact":{"phoneContact":79001234569u64,"company":"Green API"},
        "quotedMessageId":null, "idempotencyKey":"k-1",
        "enqueuedAt":"2026-11-24T10:00:30.000Z", "expiresAt":"2026-11-25T10:00:30.000Z",
        "attempts":0, "lastError":"HTTP 502 from the API", "idMessage":null, "sentAt":null,
        "position":2, "eta":null, "waitingFor":"instance notAuthorized since 10:02:11",
        "warning":"eta after expiry"
    }))
    .unwrap()
}

#[test]
fn status_has_one_row_per_instance_with_its_counts() {
    let view: StatusView = serde_json::from_value(json!({
        "version":"0.1.0", "uptimeSeconds":3725.0, "instances":[
            {"name":"main","authorization":"authorized","queued":3,"sending":1,"sent":120,"failed":2,
             "expired":4,"cancelled":5,"oldestQueuedAgeSeconds":12.5,"sendDelayMs":5000,
             "nextSendAt":"2026-11-24T10:01:03Z","paused":false,"lastError":null,
             "delivery":{"sent":3,"delivered":0,"read":110,"failed":0,"noAccount":7,
                         "notInGroup":0,"unconfirmed":0}},
            {"name":"backup","authorization":"notAuthorized","queued":0,"sending":0,"sent":0,"failed":0,
             "expired":0,"cancelled":0,"oldestQueuedAgeSeconds":null,"sendDelayMs":5000,
             "nextSendAt":null,"paused":true,"lastError":"quota exceeded (466)"}
        ]
    }))
    .unwrap();
    let text = draw(|out| status(out, &view, false, now(), 80));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "contactq 0.1.0, up 1h02m");
    assert!(lines[1].starts_with("NAME"), "{text}");
    for header in ["AUTH", "QUEUED", "SENT", "FAILED", "OLDEST", "NEXT SEND"] {
        assert!(lines[1].contains(header), "{header} missing: {text}");
    }
    let main: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        main,
        ["main", "authorized", "3", "120", "2", "13s", "in", "3s"]
    );
    // The counts without a column, under the row; zero ones are left out.
    assert_eq!(lines[3], "  sending 1, expired 4, cancelled 5");
    assert_eq!(lines[4], "  delivery: sent 3, read 110, noAccount 7");
    assert!(lines[5].starts_with("backup"), "{text}");
    assert!(lines[5].contains("notAuthorized"), "{text}");
    assert_eq!(lines[6], "  held: paused");
    assert_eq!(lines[7], "  last error: quota exceeded (466)");
    assert_eq!(lines.len(), 8, "{text}");
    assert!(!text.contains('\x1b'), "no colour when asked for none");
    assert!(draw(|out| status(out, &view, true, now(), 80)).contains("\x1b[32mauthorized"));
}

/// Long-ish real values: 12-character names, counts in the millions, the longest
/// authorization state, a long hold reason and last error. Every line fits 80 columns
/// (and a narrower terminal's width), colour codes not counted.
#[test]
fn status_fits_80_columns_with_long_values() {
    let long_error = "HTTP 502 from the API: <html><head><title>502 Bad Gateway</title></head>\
                      <body>nginx upstream timed out while reading response header</body></html>";
    let view: StatusView = serde_json::from_value(json!({
        "version":"0.1.0-rc.1+deb12", "uptimeSeconds":31_536_000.0, "instances":[
            {"name":"sales-europe","authorization":"notAuthorized","queued":12_345_678,
             "sending":1,"sent":98_765_432,"failed":1_234_567,"expired":7_654_321,
             "cancelled":2_345_678,"oldestQueuedAgeSeconds":86399.0,"sendDelayMs":5000,
             "nextSendAt":"2026-11-24T10:59:59Z","paused":true,
             "held":"the API refused the token (401): check instances.sales-europe.api_token and restart",
             "lastError":long_error},
            {"name":"support-asia","authorization":"starting","queued":1_000_000,"sending":0,
             "sent":9_999_999,"failed":0,"expired":0,"cancelled":0,
             "oldestQueuedAgeSeconds":3599.0,"sendDelayMs":5000,
             "nextSendAt":"2026-11-24T11:00:00Z","paused":false,"lastError":null}
        ]
    }))
    .unwrap();
    for width in [80, 60] {
        for color in [false, true] {
            let text = draw(|out| status(out, &view, color, now(), width));
            let plain = strip_ansi(&text);
            for line in plain.lines() {
                assert!(
                    line.chars().count() <= width,
                    "{} > {width}: {line:?}\n{plain}",
                    line.chars().count()
                );
            }
            // Nothing that matters was dropped to make it fit.
            if width == 80 {
                for cell in [
                    "sales-europe",
                    "12345678",
                    "98765432",
                    "1234567",
                    "support-asia",
                ] {
                    assert!(plain.contains(cell), "{cell} missing:\n{plain}");
                }
                assert!(
                    plain.contains("  held: the API refused the token"),
                    "{plain}"
                );
                assert!(
                    plain.contains("  last error: HTTP 502 from the API"),
                    "{plain}"
                );
                assert!(
                    plain.contains("expired 7654321, cancelled 2345678"),
                    "{plain}"
                );
            }
        }
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn list_shows_the_cells_and_the_next_page() {
    let list = MessageList {
        messages: vec![queued_message(), sent_message()],
        next: Some("CUR5OR".into()),
    };
    let text = draw(|out| message_list(out, &list, " --instance main", false, now()));
    let lines: Vec<&str> = text.lines().collect();
    for header in [
        "ID", "INSTANCE", "STATE", "DELIVERY", "CHAT", "PHONE", "NAME", "ENQUEUED", "ATTEMPTS",
    ] {
        assert!(lines[0].contains(header), "{header} missing: {text}");
    }
    for cell in [
        "01JD3W0000000000000000000B",
        "queued",
        "79001234569",
        "Green API",
        "30s ago",
        "HTTP 502 from the API",
    ] {
        assert!(lines[1].contains(cell), "{cell} missing: {text}");
    }
    for cell in [
        "sent",
        "read",
        "Artem Ivanov",
        "1m00s ago",
        "3EB0C767D097B7C7C030",
    ] {
        assert!(lines[2].contains(cell), "{cell} missing: {text}");
    }
    assert_eq!(
        lines[3],
        "next page: contactq list --before CUR5OR --instance main"
    );
    let last = MessageList {
        messages: vec![],
        next: None,
    };
    assert_eq!(
        draw(|out| message_list(out, &last, "", false, now())),
        "no messages\n"
    );
}

#[test]
fn show_lists_fields_then_history() {
    let text = draw(|out| message_detail(out, &sent_message(), false));
    for line in ["id:", "state:", "idMessage:", "sentAt:", "history:"] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{line} missing: {text}"
        );
    }
    assert!(text.contains("name:            Artem Ivanov"), "{text}");
    for line in [
        "delivery:        read",
        "deliveredAt:     2026-11-24T10:00:07.000Z",
        "readAt:          2026-11-24T10:01:00.000Z",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    assert!(
        text.contains("  2026-11-24T10:00:05.120Z  sent  HTTP 200  3EB0C767D097B7C7C030"),
        "{text}"
    );
    assert!(!text.contains("position:"), "{text}");

    let text = draw(|out| message_detail(out, &queued_message(), false));
    for line in [
        "position:        2",
        "eta:             - (line held)",
        "waitingFor:      instance notAuthorized",
        "warning:         eta after expiry",
        "name:            Green API",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    assert!(!text.contains("history:"), "{text}");
}

#[test]
fn json_output_is_the_bytes_received() {
    assert_eq!(
        draw(|out| raw_json(out, b"{\"ok\":true}")),
        "{\"ok\":true}\n"
    );
    assert_eq!(draw(|out| raw_json(out, b"{}\n")), "{}\n");
}

#[test]
fn send_prints_one_id_per_line() {
    let text = draw(|out| sent_ids(out, &[sent_message(), queued_message()]));
    assert_eq!(
        text,
        "01JD3W0000000000000000000A\n01JD3W0000000000000000000B\n"
    );
}

/// The `status` example in docs/operations.md is what this code draws.
#[test]
fn the_documented_status_example_is_what_status_draws() {
    let view: StatusView = serde_json::from_value(json!({
        "version":"0.4.0", "uptimeSeconds":200_000.0, "instances":[
            {"name":"main","authorization":"authorized","queued":3,"sending":1,
             "sent":98_765_432,"failed":2,"expired":4,"cancelled":5,
             "oldestQueuedAgeSeconds":12.5,"sendDelayMs":5000,
             "nextSendAt":"2026-11-24T10:01:03Z","paused":false,"lastError":null,
             "delivery":{"sent":3,"delivered":0,"read":110,"failed":0,"noAccount":7,
                         "notInGroup":0,"unconfirmed":0}},
            {"name":"support-asia","authorization":"notAuthorized","queued":1000,"sending":0,
             "sent":9_999_999,"failed":0,"expired":0,"cancelled":0,
             "oldestQueuedAgeSeconds":3599.0,"sendDelayMs":5000,"nextSendAt":null,
             "paused":true,"lastError":"HTTP 502 from the API: <html><head><title>502 Bad Gateway</title></head><body></body></html>"}
        ]
    }))
    .unwrap();
    let drawn = draw(|out| status(out, &view, false, now(), 80));
    let doc = include_str!("../../docs/operations.md");
    let start = doc.find("```\ncontactq 0.4.0").expect("the example") + 4;
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    assert_eq!(example, drawn, "docs/operations.md differs from:\n{drawn}");
}

#[test]
fn status_shows_the_nodes_and_who_drains_after_a_take_over_within_80_columns() {
    let view: StatusView = serde_json::from_value(json!({
        "version":"0.1.0", "uptimeSeconds":5.0, "instances":[
            {"name":"main","authorization":"authorized","queued":0,"sending":0,"sent":1,"failed":0,
             "expired":0,"cancelled":0,"oldestQueuedAgeSeconds":null,"sendDelayMs":5000,
             "nextSendAt":null,"paused":false,"lastError":null,
             "drainedBy":"app-2.example.internal","leaseEpoch":7},
            {"name":"other","authorization":"authorized","queued":0,"sending":0,"sent":0,"failed":0,
             "expired":0,"cancelled":0,"oldestQueuedAgeSeconds":null,"sendDelayMs":5000,
             "nextSendAt":null,"paused":false,"lastError":null,
             "drainedBy":null,"leaseEpoch":3},
            {"name":"third","authorization":"authorized","queued":0,"sending":0,"sent":0,"failed":0,
             "expired":0,"cancelled":0,"oldestQueuedAgeSeconds":null,"sendDelayMs":5000,
             "nextSendAt":null,"paused":false,"lastError":null,
             "drainedBy":"app-1","leaseEpoch":1}
        ],
        "nodes":[
            {"name":"app-1.example.internal","lastSeen":"2026-11-24T10:00:57Z"},
            {"name":"app-2.example.internal","lastSeen":"2026-11-24T10:00:59Z"},
            {"name":"app-3.example.internal","lastSeen":"2026-11-24T09:00:00Z"}
        ]
    }))
    .unwrap();
    let text = draw(|out| status(out, &view, false, now(), 80));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("nodes: app-1.example.internal (seen "),
        "{text}"
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 80), "{text}");
    assert!(
        text.contains("\n  drained by app-2.example.internal, lease epoch 7\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  drained by no daemon (lease epoch 3)\n"),
        "{text}"
    );
    // The first holder of a lease is not worth a line.
    assert!(!text.contains("app-1, lease epoch"), "{text}");
}

#[test]
fn status_says_so_when_commits_go_to_an_asynchronous_standby_and_only_then() {
    let with = |durability: &str| -> StatusView {
        serde_json::from_value(json!({
            "version":"0.1.0", "uptimeSeconds":5.0, "instances":[], "durability": durability
        }))
        .unwrap()
    };
    let text = draw(|out| status(out, &with("async"), false, now(), 80));
    assert!(
        text.contains("\ndurability: async (PostgreSQL streams to an asynchronous standby)\n"),
        "{text}"
    );
    let text = draw(|out| status(out, &with("sync"), false, now(), 80));
    assert!(!text.contains("durability"), "{text}");
}
