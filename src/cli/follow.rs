//! `contactq follow`: the event stream live (docs/api.md §11).
//!
//! Plain, it prints each event from the newest on (or after `--after`): one JSON object
//! a line, the very lines of `GET /v1/events`, when stdout is not a terminal or with
//! `--json`; a readable line on a terminal. With `--consumer NAME` it is a named
//! consumer like a hook of the daemon: its cursor lives in the daemon's database
//! (`/v1/consumers/NAME`) and moves on only after an event was printed, run (`--exec`,
//! exit 0) or posted (`--webhook`, a 2xx), so stopping it at any point and starting it
//! again delivers every event at least once, in `seq` order. A failed delivery is
//! recorded (the daemon's `status` shows it) and retried after a back-off.

use std::time::Duration;

use super::args::FollowArgs;
use super::client::{encode, ApiRequest, ApiResponse};
use super::commands::Ctx;
use super::error::{check, CliError, NotFound};
use crate::config::{HookTarget, WebhookSecret};
use crate::event::EventKind;
use crate::hooks::{back_off, Deliverer};
use crate::protocol::{ConsumerList, ConsumerView, EventView};

/// A follow stream sends a heartbeat every 15 s: this long without a line, the daemon
/// is gone.
const IDLE: Duration = Duration::from_secs(60);
/// Back-off between failed deliveries of an outside consumer.
const RETRY_INITIAL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What is done with each event.
enum Sink {
    Print { json: bool },
    Deliver(Deliverer),
}

pub async fn follow(ctx: &mut Ctx<'_>, args: &FollowArgs) -> Result<(), CliError> {
    let sink = sink(args, ctx.terminal)?;
    let wanted = wanted_events(args, &sink)?;
    let mut cursor = match &args.consumer {
        None => match args.after {
            Some(after) => after as i64,
            None => last_seq(ctx).await?,
        },
        Some(name) => consumer_cursor(ctx, name, args.after).await?,
    };
    let mut path = format!("/v1/events?after={cursor}&follow=true");
    if let Some(instance) = &args.instance {
        path.push_str(&format!("&instance={}", encode(instance)));
    }
    let mut lines = match ctx.client.lines(&path, IDLE).await? {
        Ok(lines) => lines,
        Err(response) => return Err(refused(response)),
    };
    // The events skipped (not taken) since the cursor was last stored.
    let mut skipped: Option<i64> = None;
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "{}" {
            if let (Some(name), Some(seq)) = (&args.consumer, skipped.take()) {
                put_cursor(ctx, name, seq).await?;
            }
            continue;
        }
        let event: EventView = serde_json::from_str(&line).map_err(|e| CliError::Unexpected {
            status: 200,
            body: format!("cannot read an event: {e}: {line}"),
        })?;
        if !wanted.as_ref().is_none_or(|w| w.contains(&event.event)) {
            skipped = Some(event.seq);
            continue;
        }
        match &sink {
            Sink::Print { json } => {
                print_event(ctx, &event, &line, *json)?;
            }
            Sink::Deliver(deliverer) => {
                let name = args.consumer.as_deref().unwrap_or_default();
                deliver_until_done(ctx, name, deliverer, &event).await?;
            }
        }
        cursor = event.seq;
        skipped = None;
        if let Some(name) = &args.consumer {
            put_cursor(ctx, name, cursor).await?;
        }
    }
    Err(CliError::Unavailable {
        error: "the event stream ended".into(),
        details: "the daemon closed it (it is stopping?); run the command again to go on".into(),
    })
}

fn sink(args: &FollowArgs, terminal: bool) -> Result<Sink, CliError> {
    let timeout = humantime::parse_duration(&args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--timeout '{}' is not a duration like 30s",
                args.timeout
            ))
        })?;
    let target = match (&args.exec, &args.webhook) {
        (Some(program), None) => {
            let mut argv = vec![program.clone()];
            argv.extend(args.args.iter().cloned());
            HookTarget::Exec(argv)
        }
        (None, Some(url)) => {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && reqwest::Url::parse(url).is_ok();
            if !ok {
                return Err(CliError::Usage(format!(
                    "--webhook '{url}' is not an http:// or https:// URL"
                )));
            }
            let secret = args
                .webhook_secret
                .clone()
                .filter(|s| s.len() >= 16)
                .ok_or_else(|| {
                    CliError::Usage(
                        "--webhook needs --webhook-secret (or CONTACTQ_WEBHOOK_SECRET) of at least 16 characters".into(),
                    )
                })?;
            HookTarget::Webhook {
                url: url.clone(),
                secret: WebhookSecret::new(secret),
            }
        }
        _ => {
            return Ok(Sink::Print {
                json: args.output.json || !terminal,
            })
        }
    };
    Deliverer::new(target, timeout)
        .map(Sink::Deliver)
        .map_err(CliError::Usage)
}

/// The events taken; None: every one.
fn wanted_events(args: &FollowArgs, sink: &Sink) -> Result<Option<Vec<EventKind>>, CliError> {
    if args.events.is_empty() {
        return Ok(match sink {
            Sink::Print { .. } => None,
            Sink::Deliver(_) => Some(EventKind::HOOK_DEFAULT.to_vec()),
        });
    }
    args.events
        .iter()
        .map(|name| name.trim().parse::<EventKind>())
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(|e| CliError::Usage(format!("--events: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(response: &ApiResponse) -> Result<T, CliError> {
    serde_json::from_slice(&response.body).map_err(|err| CliError::Unexpected {
        status: response.status,
        body: format!("cannot read the answer: {err}"),
    })
}

/// A refusal of the stream: 410 says where the kept events begin.
fn refused(response: ApiResponse) -> CliError {
    if response.status == 410 {
        let oldest = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v["oldest"].as_i64())
            .unwrap_or(0);
        return CliError::Rejected {
            error: "events gone".into(),
            details: format!(
                "the events asked for were deleted (queue.keep_done); the oldest kept is {oldest}: use --after {}",
                (oldest - 1).max(0)
            ),
        };
    }
    match check(response, NotFound::Instance) {
        Err(e) => e,
        Ok(r) => CliError::Unexpected {
            status: r.status,
            body: "the event stream did not start".into(),
        },
    }
}

async fn last_seq(ctx: &Ctx<'_>) -> Result<i64, CliError> {
    let response = check(
        ctx.client.send(ApiRequest::get("/v1/consumers")).await?,
        NotFound::Instance,
    )?;
    Ok(parse::<ConsumerList>(&response)?.stream.last_seq)
}

/// The consumer's cursor: `--after` when given, else the stored one, else the newest.
async fn consumer_cursor(ctx: &Ctx<'_>, name: &str, after: Option<u64>) -> Result<i64, CliError> {
    if let Some(after) = after {
        return put_cursor(ctx, name, after as i64).await;
    }
    let path = format!("/v1/consumers/{}", encode(name));
    let response = ctx.client.send(ApiRequest::get(path)).await?;
    if response.status == 404 {
        let last = last_seq(ctx).await?;
        return put_cursor(ctx, name, last).await;
    }
    let response = check(response, NotFound::Instance)?;
    Ok(parse::<ConsumerView>(&response)?.cursor)
}

async fn put_cursor(ctx: &Ctx<'_>, name: &str, cursor: i64) -> Result<i64, CliError> {
    let body = serde_json::json!({ "cursor": cursor })
        .to_string()
        .into_bytes();
    let request = ApiRequest {
        method: hyper::Method::PUT,
        ..ApiRequest::post(format!("/v1/consumers/{}", encode(name)), Some(body))
    };
    let response = check(ctx.client.send(request).await?, NotFound::Instance)?;
    Ok(parse::<ConsumerView>(&response)?.cursor)
}

/// Delivers `event`, recording each failure with the daemon and retrying after a
/// back-off, until it succeeds.
async fn deliver_until_done(
    ctx: &Ctx<'_>,
    name: &str,
    deliverer: &Deliverer,
    event: &EventView,
) -> Result<(), CliError> {
    let mut failures = 0u32;
    loop {
        let Err(error) = deliverer.deliver(event).await else {
            return Ok(());
        };
        failures += 1;
        let wait = back_off(RETRY_INITIAL, RETRY_MAX, failures);
        eprintln!(
            "contactq: event {} ({}) not delivered: {error}; trying again in {} s",
            event.seq,
            event.event,
            wait.as_secs_f64()
        );
        let body = serde_json::json!({ "error": error })
            .to_string()
            .into_bytes();
        let path = format!("/v1/consumers/{}/failure", encode(name));
        check(
            ctx.client.send(ApiRequest::post(path, Some(body))).await?,
            NotFound::Instance,
        )?;
        tokio::time::sleep(wait).await;
    }
}

/// One event on stdout: its JSON line, or on a terminal a readable line.
fn print_event(
    ctx: &mut Ctx<'_>,
    event: &EventView,
    line: &str,
    json: bool,
) -> Result<(), CliError> {
    if json {
        writeln!(ctx.out, "{line}")?;
    } else {
        let detail = match &event.message {
            Some(m) => match (&m.id_message, &m.last_error) {
                (_, Some(error)) if event.event == EventKind::Failed => error.clone(),
                (Some(id_message), _) if event.event != EventKind::Queued => {
                    format!("idMessage {id_message}")
                }
                _ => m.chat_id.clone(),
            },
            None => String::new(),
        };
        writeln!(
            ctx.out,
            "{:>6}  {}  {}  {:<14} {}  {}",
            event.seq,
            event.at,
            event.instance,
            event.event.as_str(),
            event.id,
            detail
        )?;
    }
    ctx.out.flush()?;
    Ok(())
}
