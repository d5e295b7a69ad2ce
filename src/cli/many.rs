//! Naming messages other than by one full id: `cancel --all` / `retry --all` with a
//! filter (looping while the daemon says more match), and an id given by its start,
//! found with `GET /v1/messages?idPrefix=` (docs/api.md §11).
use serde_json::{json, Map, Value};

use crate::ids::ULID_LEN;
use crate::protocol::{BulkResult, MessageList};

use super::args::ManyArgs;
use super::client::{encode, ApiRequest, Client};
use super::commands::{parse, Ctx};
use super::display;
use super::error::{check, CliError, NotFound};

/// How many candidates an ambiguous prefix lists.
const CANDIDATES: usize = 10;

/// The full id that `text` names: itself when it is as long as an id (the daemon
/// reads it in any case), else the one message whose id starts with it. A text that
/// cannot start an id is passed on as it is, for the daemon to call unknown.
pub async fn resolve_id(client: &Client, text: &str) -> Result<String, CliError> {
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let upper = text.to_ascii_uppercase();
    if upper.len() >= ULID_LEN || !upper.chars().all(|c| CROCKFORD.contains(c)) {
        return Ok(text.to_string());
    }
    let path = format!(
        "/v1/messages?idPrefix={}&limit={}",
        encode(&upper),
        CANDIDATES + 1
    );
    let response = check(
        client.send(ApiRequest::get(path)).await?,
        NotFound::Instance,
    )?;
    let list: MessageList = parse(&response)?;
    let mut ids: Vec<String> = list.messages.iter().map(|m| m.id.to_string()).collect();
    match ids.len() {
        0 => Err(CliError::NoSuchMessage(text.to_string())),
        1 => Ok(ids.remove(0)),
        n => {
            let more = n > CANDIDATES;
            ids.truncate(CANDIDATES);
            Err(CliError::Ambiguous {
                prefix: text.to_string(),
                candidates: ids,
                more,
            })
        }
    }
}

/// `contactq cancel --all …` (`action` "cancel") and `contactq retry --all …`
/// ("retry"): one call after another while the daemon says more match; prints the
/// total (with `--json`, each answer on its own line).
pub async fn all(ctx: &mut Ctx<'_>, args: &ManyArgs, action: &str) -> Result<(), CliError> {
    let mut filter = Map::new();
    if let Some(instance) = &args.instance {
        filter.insert("instance".into(), json!(instance));
    }
    if let Some(state) = args.state {
        filter.insert("state".into(), json!(state.as_str()));
    }
    if let Some(chat_id) = &args.chat_id {
        filter.insert("chatId".into(), json!(chat_id));
    }
    if let Some(before) = &args.before {
        filter.insert("before".into(), json!(before));
    }
    if filter.is_empty() {
        return Err(CliError::Usage(format!(
            "{action} --all needs a filter: --instance, --state, --chat-id or --before \
             (to touch every message, name the instance)"
        )));
    }
    let body = Value::Object(filter).to_string().into_bytes();
    let path = format!("/v1/messages:{action}");
    let mut total = 0u64;
    loop {
        let request = ApiRequest::post(path.clone(), Some(body.clone()));
        let response = check(ctx.client.send(request).await?, NotFound::Instance)?;
        let answer: BulkResult = parse(&response)?;
        if args.output.json {
            display::raw_json(ctx.out, &response.body)?;
        }
        total += answer.count;
        // A call that changed nothing ends the loop even if the daemon says more:
        // whatever matches is changing under us, and the next call would spin.
        if !answer.more || answer.count == 0 {
            break;
        }
    }
    if !args.output.json {
        let verb = if action == "cancel" {
            "cancelled"
        } else {
            "re-queued"
        };
        let noun = if total == 1 { "message" } else { "messages" };
        writeln!(ctx.out, "{verb} {total} {noun}")?;
    }
    Ok(())
}
