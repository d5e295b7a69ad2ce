//! The demo's cards: the seed's `sendContact` examples (personal chat, group chat, a
//! quoted message, Cyrillic names, the phone as a numeric string) and a few invalid
//! ones, and enqueueing them through the socket exactly as any local program would.

use serde_json::{json, Value};

use super::{call, fetch, DemoError, INSTANCE};
use crate::cli::client::{ApiRequest, Client};
use crate::protocol::{ErrorBody, MessageView};

/// A card the daemon accepted, with the example it shows.
#[derive(Debug, Clone)]
pub struct Queued {
    pub label: &'static str,
    pub view: MessageView,
}

const CHAT: &str = "11001234567@c.us";
const GROUP: &str = "11001234567-1581234048@g.us";

/// The seed's examples, in the order they are enqueued.
fn examples() -> Vec<(&'static str, Value)> {
    let artem = json!({
        "phoneContact": 79001234568_u64,
        "firstName": "Artem",
        "middleName": "Petrovich",
        "lastName": "Evpatoriysky",
        "company": "Bicycle",
    });
    vec![
        ("personal chat", json!({"chatId": CHAT, "contact": artem})),
        ("group chat", json!({"chatId": GROUP, "contact": artem})),
        (
            "quoted message",
            json!({
                "chatId": CHAT,
                "contact": {"phoneContact": 79001234569_u64, "firstName": "Artem"},
                "quotedMessageId": "361B0E63F2FDF95903B6A9C9A102F34B",
            }),
        ),
        (
            "Cyrillic names",
            json!({
                "chatId": CHAT,
                "contact": {"phoneContact": 79001234570_u64, "firstName": "Артём", "lastName": "Евпаторийский"},
            }),
        ),
        (
            "phone as a numeric string",
            json!({
                "chatId": CHAT,
                "contact": {"phoneContact": "79001234568", "firstName": "Artem"},
            }),
        ),
    ]
}

/// Cards the Green API would refuse; the daemon refuses them the same way.
fn invalid() -> Vec<(&'static str, Value)> {
    vec![
        ("empty body", json!({})),
        (
            "bad chatId",
            json!({"chatId": "12345", "contact": {"phoneContact": 79001234568_u64, "firstName": "Artem"}}),
        ),
        (
            "phone too short",
            json!({"chatId": CHAT, "contact": {"phoneContact": 790012_u64, "firstName": "Artem"}}),
        ),
        (
            "unknown field",
            json!({"chatId": CHAT, "contact": {"phoneContact": 79001234568_u64, "firstName": "Artem", "email": "artem@example.com"}}),
        ),
    ]
}

fn send_contact(body: &Value) -> ApiRequest {
    ApiRequest::post(
        format!("/v1/instances/{INSTANCE}/sendContact"),
        Some(body.to_string().into_bytes()),
    )
}

/// Enqueues the examples (each answered 202) and prints one line per card.
pub async fn enqueue_examples(client: &Client) -> Result<Vec<Queued>, DemoError> {
    let mut queued = Vec::new();
    for (label, body) in examples() {
        let what = format!("enqueueing the {label} example");
        let view: MessageView = fetch(client, send_contact(&body), 202, &what).await?;
        say!(
            "  queued   {}  {:<26} position {}",
            view.id,
            label,
            view.position.map_or("-".into(), |p| p.to_string())
        )?;
        queued.push(Queued { label, view });
    }
    Ok(queued)
}

/// Sends the invalid cards (each must be answered 400) and prints each error's details.
pub async fn enqueue_invalid(client: &Client) -> Result<(), DemoError> {
    for (label, body) in invalid() {
        let what = format!("enqueueing the invalid card ({label})");
        let answer = call(client, send_contact(&body), 400, &what).await?;
        let error: ErrorBody =
            serde_json::from_slice(&answer.body).map_err(|source| DemoError::Json {
                what: what.clone(),
                source,
            })?;
        say!("  refused  {label:<16} 400 {}", error.details)?;
    }
    Ok(())
}
