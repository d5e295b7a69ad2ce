//! The live state of each instance's line: written by its drain loop, read by the API
//! for `status`, `eta` and `waitingFor` (with the instance's quiet hours, so both
//! agree on when a card goes), and a wake-up bell the API rings after an enqueue, a
//! pause, a resume or a flush so the drain does not have to poll.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::clock::format_time_of_day;
use crate::quiet::QuietHours;
use crate::state::Authorization;

/// Why an instance's line is not sending right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// `contactq pause NAME`.
    Paused,
    /// The last `stateInstance` was not `authorized`.
    NotAuthorized { state: Authorization, since_ms: i64 },
    /// A temporary failure; the next try is at `until_ms`.
    BackOff { status: Option<u16>, until_ms: i64 },
    /// 466: the monthly quota is used up.
    Quota { until_ms: i64 },
    /// The API answered 401 (the token) or 403 (the instance id): a configuration
    /// mistake, said as one rather than as a connection error.
    Refused { status: u16, instance: String },
    /// Inside the instance's quiet hours (`window`, e.g. "22:00-08:00 Europe/Moscow"),
    /// which end at `until_ms`.
    Quiet { window: String, until_ms: i64 },
}

/// The `waitingFor` of a card whose `notBefore` is still ahead.
pub fn not_before_text(due_ms: i64) -> String {
    format!("notBefore {}", crate::clock::format_ms(due_ms))
}

/// The text of quiet hours that end at `until_ms`.
pub fn quiet_text(window: &str, until_ms: i64) -> String {
    format!(
        "quiet hours ({window}) until {}",
        format_time_of_day(until_ms)
    )
}

/// What a 401 or 403 means, naming the key to fix.
pub fn refused_text(instance: &str, status: u16) -> String {
    match status {
        403 => {
            format!("the API refused the instance id (403): check instances.{instance}.id_instance")
        }
        _ => format!("the API refused the token ({status}): check instances.{instance}.api_token"),
    }
}

/// The `waitingFor` of a card whose chat is held by a chats-quota 466.
pub fn chat_hold_text(chat_id: &str, until_ms: i64) -> String {
    format!(
        "chat {chat_id} over the monthly chats quota (466) until {}",
        format_time_of_day(until_ms)
    )
}

impl Hold {
    /// Whether cards have no expected send time while this hold lasts.
    pub fn blocks_eta(&self) -> bool {
        !matches!(self, Hold::BackOff { .. } | Hold::Quiet { .. })
    }

    /// The `waitingFor` text.
    pub fn describe(&self) -> String {
        match self {
            Hold::Paused => "paused".to_string(),
            Hold::NotAuthorized { state, since_ms } => {
                format!("instance {state} since {}", format_time_of_day(*since_ms))
            }
            Hold::BackOff { status, until_ms } => {
                let after =
                    status.map_or_else(|| "connection error".to_string(), |s| s.to_string());
                format!(
                    "back-off after {after} until {}",
                    format_time_of_day(*until_ms)
                )
            }
            Hold::Quota { until_ms } => {
                format!(
                    "quota exceeded (466) until {}",
                    format_time_of_day(*until_ms)
                )
            }
            Hold::Refused { status, instance } => refused_text(instance, *status),
            Hold::Quiet { window, until_ms } => quiet_text(window, *until_ms),
        }
    }
}

/// What `status` shows of a line, beyond the counts.
#[derive(Debug, Clone, PartialEq)]
pub struct LineStatus {
    /// The last `stateInstance` seen, or `unknown`.
    pub authorization: Authorization,
    pub hold: Option<Hold>,
    /// When the pacing allows the next send (ms), if known.
    pub next_send_at: Option<i64>,
    pub last_error: Option<String>,
    pub send_delay_ms: u64,
    /// Chats held by a chats-quota 466, with the wall time (ms) the hold ends.
    pub chat_holds: BTreeMap<String, i64>,
    /// The drain loop's last turn; the watchdog pings only while every one is recent.
    pub heartbeat: Option<std::time::Instant>,
    /// The instance's quiet hours, if it has any (set by its drain at start).
    pub quiet: Option<QuietHours>,
}

/// One instance's line.
#[derive(Debug)]
pub struct Line {
    status: Mutex<LineStatus>,
    /// Rung after an enqueue, a pause, a resume, a retry or a flush.
    pub wake: Notify,
    /// Set by `pause` and `resume` before they ring the bell: the stored instance row
    /// changed, so the drain reads it again. An enqueue's bell alone reads nothing.
    instance_changed: AtomicBool,
    /// Set by `flush` before it rings the bell: ask the state now, end any back-off.
    flush: AtomicBool,
    /// Set by `resume` before it rings the bell: the stored chat holds changed.
    holds_changed: AtomicBool,
    /// Set by an enqueue with a `notBefore` ahead before it rings the bell: the drain
    /// asks again when its first not-yet-due card comes due.
    due_changed: AtomicBool,
}

impl LineStatus {
    /// When the first card in line is expected to go out: None while the line is held
    /// (paused, not authorized, quota); otherwise the later of the pacing slot, the end
    /// of a back-off or of quiet hours, and now.
    pub fn first_send_at(&self, now: i64) -> Option<i64> {
        let paced = self.next_send_at.unwrap_or(now).max(now);
        let start = match &self.hold {
            None => paced,
            Some(Hold::BackOff { until_ms, .. }) | Some(Hold::Quiet { until_ms, .. }) => {
                paced.max(*until_ms)
            }
            Some(_) => return None,
        };
        Some(self.after_quiet(start, 0))
    }

    /// When a line that starts at `start` and has `work` ms of sends ahead reaches a
    /// card, skipping the quiet hours on the way.
    pub fn after_quiet(&self, start: i64, work: i64) -> i64 {
        match &self.quiet {
            Some(quiet) => quiet.eta(start, work),
            None => start.saturating_add(work),
        }
    }

    /// If `now` is inside the quiet hours, when they end.
    pub fn quiet_until(&self, now: i64) -> Option<i64> {
        self.quiet.as_ref()?.end_if_inside(now)
    }
}

impl Line {
    pub fn status(&self) -> LineStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut LineStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// `contactq flush NAME`: the drain asks `getStateInstance` at its next turn and
    /// drops any back-off.
    pub fn request_flush(&self) {
        self.flush.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether a flush was asked for since the last call.
    pub fn take_flush(&self) -> bool {
        self.flush.swap(false, Ordering::SeqCst)
    }

    /// The stored chat holds changed (`resume` cleared them): the drain reads them
    /// again. Call before ringing the bell.
    pub fn holds_changed(&self) {
        self.holds_changed.store(true, Ordering::SeqCst);
    }

    /// Whether the stored chat holds changed since the last call.
    pub fn take_holds_changed(&self) -> bool {
        self.holds_changed.swap(false, Ordering::SeqCst)
    }

    /// The stored instance row changed (`pause`, `resume`): the drain reads it again
    /// at its next step, even mid-drain. Call before ringing the bell.
    pub fn instance_changed(&self) {
        self.instance_changed.store(true, Ordering::SeqCst);
    }

    /// Whether the stored instance row changed since the last call.
    pub fn take_instance_changed(&self) -> bool {
        self.instance_changed.swap(false, Ordering::SeqCst)
    }

    /// Cards with a `notBefore` ahead were enqueued: the drain reads again when the
    /// first comes due. Call before ringing the bell.
    pub fn due_changed(&self) {
        self.due_changed.store(true, Ordering::SeqCst);
    }

    /// Whether such cards were enqueued since the last call.
    pub fn take_due_changed(&self) -> bool {
        self.due_changed.swap(false, Ordering::SeqCst)
    }
}

/// Every configured instance's line, by name.
#[derive(Debug, Default)]
pub struct Lines(BTreeMap<String, Arc<Line>>);

impl Lines {
    pub fn new<'a>(instances: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        Lines(
            instances
                .into_iter()
                .map(|(name, send_delay_ms)| {
                    let line = Line {
                        status: Mutex::new(LineStatus {
                            authorization: Authorization::Unknown,
                            hold: None,
                            next_send_at: None,
                            last_error: None,
                            send_delay_ms,
                            chat_holds: BTreeMap::new(),
                            heartbeat: None,
                            quiet: None,
                        }),
                        wake: Notify::new(),
                        flush: AtomicBool::new(false),
                        holds_changed: AtomicBool::new(true),
                        instance_changed: AtomicBool::new(false),
                        due_changed: AtomicBool::new(true),
                    };
                    (name.to_string(), Arc::new(line))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Line>> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Line>)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
