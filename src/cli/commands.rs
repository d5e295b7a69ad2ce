//! One function per client command: build the request, ask the daemon, decide what
//! the answer means (and so the exit code), hand the value to `display`.
//!
//! What a status means is decided once for all commands, in [`check`].

use std::io::{IsTerminal, Write};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;

use crate::protocol::{BatchAccepted, MessageList, MessageView, PauseState, StatusView};
use crate::state::MessageState;

use super::args::{IdArgs, InstanceArgs, ListArgs, ManyArgs, SendArgs, StatusArgs};
use super::client::{encode, ApiRequest, ApiResponse, Client};
use super::display;
use super::error::{check, CliError, NotFound};
use super::input::{self, Payload};

/// Where a command writes, and how.
pub struct Ctx<'a> {
    pub client: Client,
    pub out: &'a mut (dyn Write + Send),
    /// Colour state names (stdout is a terminal and NO_COLOR is unset).
    pub color: bool,
    /// stdout is a terminal (`status --watch` clears the screen only then).
    pub terminal: bool,
}

/// Reads a success answer as the protocol type it should be.
pub(super) fn parse<T: DeserializeOwned>(response: &ApiResponse) -> Result<T, CliError> {
    serde_json::from_slice(&response.body).map_err(|err| CliError::Unexpected {
        status: response.status,
        body: format!("cannot read the answer: {err}"),
    })
}

/// `contactq send`: one card from flags or a file, or a batch from a file.
pub async fn send(ctx: &mut Ctx<'_>, args: &SendArgs) -> Result<(), CliError> {
    // Read the input before asking anything, so a bad file fails fast.
    let payload = match &args.file {
        Some(path) => input::classify(input::read_file(path)?)?,
        None => Payload::Single(input::body_from_flags(args).to_string().into_bytes()),
    };
    let instance = match &args.instance {
        Some(name) => name.clone(),
        None => only_instance(&ctx.client).await?,
    };
    let path = format!("/v1/instances/{}/sendContact", encode(&instance));
    // `notBefore` is a query parameter of both enqueue endpoints (docs/api.md §11).
    let query = match &args.at {
        Some(at) => format!("?notBefore={}", encode(at)),
        None => String::new(),
    };
    match payload {
        Payload::Single(body) => {
            let request = ApiRequest::post(format!("{path}{query}"), Some(body))
                .with_idempotency_key(args.idempotency_key.clone());
            let response = check(ctx.client.send(request).await?, NotFound::Instance)?;
            if args.output.json {
                return Ok(display::raw_json(ctx.out, &response.body)?);
            }
            let message: MessageView = parse(&response)?;
            warn_about(std::slice::from_ref(&message));
            Ok(display::sent_ids(ctx.out, &[message])?)
        }
        Payload::Batch(chunks) => {
            let total: usize = chunks.iter().map(|c| c.len).sum();
            let several = chunks.len() > 1;
            let progress = if several && std::io::stderr().is_terminal() {
                ProgressBar::new(total as u64).with_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} cards enqueued")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                )
            } else {
                ProgressBar::hidden()
            };
            for (n, chunk) in chunks.iter().enumerate() {
                // The key covers one request; each chunk gets its own, derived from the
                // user's, so re-running the same command repeats nothing.
                let key = match &args.idempotency_key {
                    Some(key) if several => Some(format!("{key}#{}", n + 1)),
                    other => other.clone(),
                };
                let request =
                    ApiRequest::post(format!("{path}:batch{query}"), Some(chunk.body.clone()))
                        .with_idempotency_key(key);
                let answer = match ctx.client.send(request).await {
                    Ok(response) => check(response, NotFound::Instance),
                    Err(err) => Err(err.into()),
                };
                let response = match answer {
                    Ok(response) => response,
                    Err(err) => {
                        progress.abandon();
                        if chunk.first > 0 {
                            eprintln!(
                                "contactq: cards 0 to {} were enqueued (their ids are above); cards from {} on were not, and the indexes below count from card {}",
                                chunk.first - 1, chunk.first, chunk.first
                            );
                        }
                        return Err(err);
                    }
                };
                if args.output.json {
                    display::raw_json(ctx.out, &response.body)?;
                } else {
                    let accepted: BatchAccepted = parse(&response)?;
                    warn_about(&accepted.messages);
                    display::sent_ids(ctx.out, &accepted.messages)?;
                }
                progress.inc(chunk.len as u64);
            }
            progress.finish_and_clear();
            Ok(())
        }
    }
}

/// Every warning of the enqueue answer, on stderr (stdout keeps only the ids): a phone
/// length the API does not document, a card that will not go out before it expires.
fn warn_about(messages: &[MessageView]) {
    for m in messages {
        // An older daemon sends only `warning`.
        let warnings = match (&m.warnings, &m.warning) {
            (Some(all), _) => all.clone(),
            (None, Some(one)) => vec![one.clone()],
            (None, None) => Vec::new(),
        };
        for warning in warnings {
            eprintln!("contactq: warning: {}: {warning}", m.id);
        }
    }
}

/// `send` without `--instance`: fine when the daemon has exactly one.
async fn only_instance(client: &Client) -> Result<String, CliError> {
    let response = check(
        client.send(ApiRequest::get("/v1/status")).await?,
        NotFound::Instance,
    )?;
    let status: StatusView = parse(&response)?;
    let mut names: Vec<String> = status.instances.into_iter().map(|i| i.name).collect();
    match names.len() {
        1 => Ok(names.remove(0)),
        0 => Err(CliError::Usage(
            "the daemon has no instances configured".into(),
        )),
        _ => Err(CliError::Usage(format!(
            "several instances are configured ({}): choose one with --instance NAME",
            names.join(", ")
        ))),
    }
}

/// `contactq status`, once or every second with `--watch`.
pub async fn status(ctx: &mut Ctx<'_>, args: &StatusArgs) -> Result<(), CliError> {
    if !args.watch {
        return status_once(ctx, args.output.json).await;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if ctx.terminal && !args.output.json {
            // Home the cursor and clear the screen.
            write!(ctx.out, "\x1b[H\x1b[2J")?;
        }
        // While watching, a failure is shown and retried: the daemon may be restarting.
        if let Err(err) = status_once(ctx, args.output.json).await {
            writeln!(ctx.out, "contactq: {err}")?;
        }
        if !ctx.terminal && !args.output.json {
            writeln!(ctx.out)?;
        }
        ctx.out.flush()?;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

async fn status_once(ctx: &mut Ctx<'_>, json: bool) -> Result<(), CliError> {
    let response = ctx.client.send(ApiRequest::get("/v1/status")).await?;
    let response = check(response, NotFound::Instance)?;
    if json {
        return Ok(display::raw_json(ctx.out, &response.body)?);
    }
    let view: StatusView = parse(&response)?;
    let width = super::table::output_width(ctx.terminal);
    Ok(display::status(
        ctx.out,
        &view,
        ctx.color,
        Utc::now(),
        width,
    )?)
}

/// `contactq list`.
pub async fn list(ctx: &mut Ctx<'_>, args: &ListArgs) -> Result<(), CliError> {
    let (query, filters) = list_query(args);
    let response = ctx
        .client
        .send(ApiRequest::get(format!("/v1/messages{query}")))
        .await?;
    let response = check(response, NotFound::Instance)?;
    if args.output.json {
        return Ok(display::raw_json(ctx.out, &response.body)?);
    }
    let list: MessageList = parse(&response)?;
    Ok(display::message_list(
        ctx.out,
        &list,
        &filters,
        ctx.color,
        Utc::now(),
    )?)
}

/// The query string (`?instance=…&…`, or empty) and the same filters as options, for
/// the next-page hint (without `--before`, which the hint sets).
pub fn list_query(args: &ListArgs) -> (String, String) {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let mut filters = String::new();
    if let Some(instance) = &args.instance {
        pairs.push(("instance", instance.clone()));
        filters.push_str(&format!(" --instance {instance}"));
    }
    if let Some(state) = args.state {
        pairs.push(("state", state.as_str().to_string()));
        filters.push_str(&format!(" --state {}", state.as_str()));
    }
    if let Some(chat_id) = &args.chat_id {
        pairs.push(("chatId", chat_id.clone()));
        filters.push_str(&format!(" --chat-id {chat_id}"));
    }
    if let Some(phone) = &args.phone {
        pairs.push(("phone", phone.clone()));
        filters.push_str(&format!(" --phone {phone}"));
    }
    if let Some(limit) = args.limit {
        pairs.push(("limit", limit.to_string()));
        filters.push_str(&format!(" --limit {limit}"));
    }
    if let Some(before) = &args.before {
        pairs.push(("before", before.clone()));
    }
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    (query, filters)
}

/// `contactq show ID`.
pub async fn show(ctx: &mut Ctx<'_>, args: &IdArgs) -> Result<(), CliError> {
    let id = super::many::resolve_id(&ctx.client, &args.id).await?;
    let path = format!("/v1/messages/{}", encode(&id));
    let response = check(
        ctx.client.send(ApiRequest::get(path)).await?,
        NotFound::Message(&args.id),
    )?;
    if args.output.json {
        return Ok(display::raw_json(ctx.out, &response.body)?);
    }
    let message: MessageView = parse(&response)?;
    Ok(display::message_detail(ctx.out, &message, ctx.color)?)
}

/// `contactq cancel ID`. Idempotent like `rm -f`: a message that is already
/// `cancelled` is a success ("already cancelled", exit 0). The socket API still
/// answers 409 to the second DELETE; the CLI then reads the message to tell "already
/// cancelled" from "already sent" (or failed, expired…), which stays exit 65.
pub async fn cancel(ctx: &mut Ctx<'_>, args: &ManyArgs) -> Result<(), CliError> {
    let Some(given) = &args.id else {
        return super::many::all(ctx, args, "cancel").await;
    };
    let id = super::many::resolve_id(&ctx.client, given).await?;
    let path = format!("/v1/messages/{}", encode(&id));
    let answer = ctx.client.send(ApiRequest::delete(path.clone())).await?;
    let refused = answer.status == 409;
    let response = match check(answer, NotFound::Message(given)) {
        Ok(response) => response,
        Err(err) if refused => {
            let current = check(
                ctx.client.send(ApiRequest::get(path)).await?,
                NotFound::Message(given),
            )?;
            let state = parse::<MessageView>(&current).map(|m| m.state);
            if state.ok() != Some(MessageState::Cancelled) {
                return Err(err);
            }
            if args.output.json {
                return Ok(display::raw_json(ctx.out, &current.body)?);
            }
            return Ok(writeln!(ctx.out, "already cancelled {given}")?);
        }
        Err(err) => return Err(err),
    };
    if args.output.json {
        return Ok(display::raw_json(ctx.out, &response.body)?);
    }
    Ok(writeln!(ctx.out, "cancelled {given}")?)
}

/// `contactq retry ID`, or `retry --all` with a filter.
pub async fn retry(ctx: &mut Ctx<'_>, args: &ManyArgs) -> Result<(), CliError> {
    let Some(given) = &args.id else {
        return super::many::all(ctx, args, "retry").await;
    };
    let id = super::many::resolve_id(&ctx.client, given).await?;
    let path = format!("/v1/messages/{}/retry", encode(&id));
    let response = check(
        ctx.client.send(ApiRequest::post(path, None)).await?,
        NotFound::Message(given),
    )?;
    if args.output.json {
        return Ok(display::raw_json(ctx.out, &response.body)?);
    }
    // The position is a courtesy: an answer without it is still a success.
    let position = parse::<MessageView>(&response)
        .ok()
        .and_then(|m| m.position);
    match position {
        Some(p) => writeln!(ctx.out, "re-queued {given} (position {p})")?,
        None => writeln!(ctx.out, "re-queued {given}")?,
    }
    Ok(())
}

/// `POST /v1/instances/NAME/ACTION`; with `--json` the answer is printed as it came and
/// None returned, else the answer is handed back for the command's own line.
async fn instance_action(
    ctx: &mut Ctx<'_>,
    args: &InstanceArgs,
    action: &str,
) -> Result<Option<ApiResponse>, CliError> {
    let path = format!("/v1/instances/{}/{action}", encode(&args.name));
    let response = check(
        ctx.client.send(ApiRequest::post(path, None)).await?,
        NotFound::Instance,
    )?;
    if args.output.json {
        display::raw_json(ctx.out, &response.body)?;
        return Ok(None);
    }
    Ok(Some(response))
}

/// `contactq pause NAME` (`resume == false`) and `contactq resume NAME`.
pub async fn pause(ctx: &mut Ctx<'_>, args: &InstanceArgs, resume: bool) -> Result<(), CliError> {
    let verb = if resume { "resume" } else { "pause" };
    let Some(response) = instance_action(ctx, args, verb).await? else {
        return Ok(());
    };
    let paused = parse::<PauseState>(&response).map_or(!resume, |s| s.paused);
    let word = if paused { "paused" } else { "resumed" };
    Ok(writeln!(ctx.out, "{word} {}", args.name)?)
}

/// `contactq flush NAME`: the drain asks the state now and ends any back-off.
pub async fn flush(ctx: &mut Ctx<'_>, args: &InstanceArgs) -> Result<(), CliError> {
    if instance_action(ctx, args, "flush").await?.is_none() {
        return Ok(());
    }
    Ok(writeln!(
        ctx.out,
        "flushed {}: asking its state now, back-off ended",
        args.name
    )?)
}
