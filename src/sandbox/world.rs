//! The emulated instances' state, without HTTP: each instance's knobs, its own send
//! queue (paced by `delaySendMessagesMilliseconds`), its journal of sent messages and
//! their `statusMessage` (`sent`, then `delivered` and `read` as the knobs' delays pass,
//! unless a status is pinned for the message or its chat), scripted answers, accepted
//! cards and request counters.
//!
//! Everything sits behind one mutex ([`Shared`]); no lock is held across an await.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use serde_json::{json, Value};

use super::knobs::{KnobPatch, Knobs};
use super::limits::Limits;
use super::replies::journal_entry;
use super::types::{ReceivedCard, ScriptStep};
use super::validate::Card;

/// The real service keeps an unsent message 24 hours, then drops it.
const QUEUE_KEEP_MS: i64 = 24 * 3600 * 1000;

/// A message waiting in an instance's own send queue.
#[derive(Debug, Clone)]
struct Queued {
    id_message: String,
    card: Card,
    accepted_at_ms: i64,
}

/// A message that left the queue.
#[derive(Debug, Clone)]
struct Sent {
    id_message: String,
    card: Card,
    left_at_ms: i64,
    /// False for a message typed on the phone (see [`World::typed_on_phone`]).
    send_by_api: bool,
}

/// One emulated instance.
#[derive(Default)]
pub struct Instance {
    pub overrides: KnobPatch,
    pub token: Option<String>,
    queue: VecDeque<Queued>,
    journal: Vec<Sent>,
    next_send_at_ms: i64,
    pub script: VecDeque<ScriptStep>,
    pub received: Vec<ReceivedCard>,
    pub requests: HashMap<String, usize>,
    /// Requests refused by the per-second limits, per method.
    pub limited: HashMap<String, usize>,
    /// `statusMessage` pinned for one message (idMessage) or one chat: it shows that,
    /// and nothing else, from then on.
    pub pinned_messages: HashMap<String, String>,
    pub pinned_chats: HashMap<String, String>,
}

/// The `statusMessage` values of the real journal (GREEN_API_NOTES.md).
pub const STATUSES: [&str; 8] = [
    "pending",
    "sent",
    "delivered",
    "read",
    "failed",
    "noAccount",
    "notInGroup",
    "yellowCard",
];

impl Instance {
    /// The `statusMessage` of a message that left the queue, at `now_ms`.
    fn status_of(&self, sent: &Sent, knobs: &Knobs, now_ms: i64) -> String {
        if let Some(pinned) = self
            .pinned_messages
            .get(&sent.id_message)
            .or_else(|| self.pinned_chats.get(&sent.card.chat_id))
        {
            return pinned.clone();
        }
        let deliver = i64::try_from(knobs.deliver_after_ms).unwrap_or(i64::MAX);
        let read = deliver.saturating_add(i64::try_from(knobs.read_after_ms).unwrap_or(i64::MAX));
        let age = now_ms.saturating_sub(sent.left_at_ms);
        let status = if age >= read {
            "read"
        } else if age >= deliver {
            "delivered"
        } else {
            "sent"
        };
        status.to_owned()
    }
}

/// All instances plus the defaults they start from.
pub struct World {
    pub defaults: Knobs,
    pub rate_limits: bool,
    pub instances: HashMap<String, Instance>,
    limits: Limits,
    issued: HashSet<String>,
}

impl World {
    pub fn new(defaults: Knobs, rate_limits: bool) -> Self {
        Self {
            defaults,
            rate_limits,
            instances: HashMap::new(),
            limits: Limits::default(),
            issued: HashSet::new(),
        }
    }

    pub fn instance(&mut self, id: &str) -> &mut Instance {
        self.instances.entry(id.to_owned()).or_default()
    }

    /// The effective knobs of an instance: the defaults with its overrides applied.
    pub fn knobs(&self, id: &str) -> Knobs {
        let mut knobs = self.defaults.clone();
        if let Some(inst) = self.instances.get(id) {
            knobs.apply(&inst.overrides);
        }
        knobs
    }

    /// Changes the defaults (`instance` absent) or one instance's overrides.
    pub fn patch(&mut self, instance: Option<&str>, patch: &KnobPatch) {
        match instance {
            None => self.defaults.apply(patch),
            Some(id) => self.instance(id).overrides.merge(patch),
        }
    }

    pub fn count(&mut self, id: &str, method: &str) {
        *self
            .instance(id)
            .requests
            .entry(method.to_owned())
            .or_default() += 1;
    }

    pub fn token_ok(&self, id: &str, token: &str) -> bool {
        match self.instances.get(id).and_then(|i| i.token.as_deref()) {
            Some(expected) => expected == token,
            None => true,
        }
    }

    /// `Err(wait)` when the request is over the API's per-second limit (counted).
    pub fn rate_check(&mut self, id: &str, method: &str) -> Result<(), std::time::Duration> {
        if !self.rate_limits {
            return Ok(());
        }
        let checked = self.limits.check(id, method);
        if checked.is_err() {
            *self
                .instance(id)
                .limited
                .entry(method.to_owned())
                .or_default() += 1;
        }
        checked
    }

    /// Pins the `statusMessage` of one message (`id_message`) or of every message to one
    /// chat, or lifts the pin (`status` None). The status must be one of [`STATUSES`].
    pub fn pin_status(&mut self, id: &str, target: &StatusTarget, status: Option<String>) {
        let inst = self.instance(id);
        let (map, key) = match target {
            StatusTarget::Message(m) => (&mut inst.pinned_messages, m),
            StatusTarget::Chat(c) => (&mut inst.pinned_chats, c),
        };
        match status {
            Some(s) => {
                map.insert(key.clone(), s);
            }
            None => {
                map.remove(key);
            }
        }
    }

    /// A fresh, never issued `idMessage`: 20 upper-case hex digits.
    pub fn fresh_id(&mut self) -> String {
        let mut rng = rand::rng();
        loop {
            let bytes: [u8; 10] = rng.random();
            let id: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            if self.issued.insert(id.clone()) {
                return id;
            }
        }
    }

    /// Takes a card into the instance's queue; returns its `idMessage`.
    pub fn accept(&mut self, id: &str, raw: &Value, card: Card, now_ms: i64) -> String {
        let id_message = self.fresh_id();
        let inst = self.instance(id);
        inst.received.push(ReceivedCard {
            id_message: id_message.clone(),
            chat_id: card.chat_id.clone(),
            body: raw.clone(),
            received_at_ms: now_ms,
        });
        inst.queue.push_back(Queued {
            id_message: id_message.clone(),
            card,
            accepted_at_ms: now_ms,
        });
        self.drain_due(id, now_ms);
        id_message
    }

    /// Moves due messages out of an instance's queue: one per send delay, and only
    /// while the instance is in a sending state. Expires those older than 24 h.
    pub fn drain_due(&mut self, id: &str, now_ms: i64) {
        let knobs = self.knobs(id);
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        inst.queue
            .retain(|q| now_ms - q.accepted_at_ms < QUEUE_KEEP_MS);
        if !knobs.drains() {
            // Held messages start their pacing when sending resumes, not before.
            inst.next_send_at_ms = inst.next_send_at_ms.max(now_ms);
            return;
        }
        let delay = i64::try_from(knobs.delay_send_ms).unwrap_or(i64::MAX);
        // Each message leaves at its own slot (one per delay), even when this runs
        // late, so a busy machine does not slow the emulated instance down.
        while let Some(front) = inst.queue.front() {
            let slot = inst.next_send_at_ms.max(front.accepted_at_ms);
            if slot > now_ms {
                break;
            }
            let Some(q) = inst.queue.pop_front() else {
                break;
            };
            inst.journal.push(Sent {
                id_message: q.id_message,
                card: q.card,
                left_at_ms: slot,
                send_by_api: true,
            });
            inst.next_send_at_ms = slot.saturating_add(delay);
        }
    }

    /// Adds a card sent from the phone itself (`sendByApi: false`) to the journal, as
    /// if it left at `at_ms`; returns its `idMessage`.
    pub fn typed_on_phone(&mut self, id: &str, card: Card, at_ms: i64) -> String {
        let id_message = self.fresh_id();
        self.instance(id).journal.push(Sent {
            id_message: id_message.clone(),
            card,
            left_at_ms: at_ms,
            send_by_api: false,
        });
        id_message
    }

    pub fn drain_all(&mut self, now_ms: i64) {
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in ids {
            self.drain_due(&id, now_ms);
        }
    }

    /// `lastOutgoingMessages`: newest first, those sent within `minutes` and already
    /// visible (past the journal lag).
    pub fn journal(&self, id: &str, minutes: i64, now_ms: i64) -> Vec<Value> {
        let knobs = self.knobs(id);
        let lag = i64::try_from(knobs.journal_lag_ms).unwrap_or(i64::MAX);
        let skew = knobs.clock_skew_ms;
        let since = now_ms.saturating_sub(minutes.saturating_mul(60_000));
        let Some(inst) = self.instances.get(id) else {
            return Vec::new();
        };
        inst.journal
            .iter()
            .rev()
            .filter(|s| s.left_at_ms >= since && s.left_at_ms.saturating_add(lag) <= now_ms)
            .map(|s| {
                let at = s.left_at_ms.saturating_add(skew).div_euclid(1000);
                let mut entry = journal_entry(&s.id_message, &s.card, at, knobs.vcard_item_tel);
                entry["sendByApi"] = Value::Bool(s.send_by_api);
                entry["statusMessage"] = Value::String(inst.status_of(s, &knobs, now_ms));
                entry
            })
            .collect()
    }

    /// `showMessagesQueue`: the messages still waiting, first to go first.
    pub fn queue_view(&self, id: &str) -> Vec<Value> {
        let Some(inst) = self.instances.get(id) else {
            return Vec::new();
        };
        inst.queue
            .iter()
            .map(|q| {
                let mut body = q.card.to_body();
                if let Some(obj) = body.as_object_mut() {
                    obj.entry("typingTime").or_insert(Value::Null);
                }
                json!({ "messageID": q.id_message, "type": "sendContact", "body": body })
            })
            .collect()
    }

    pub fn queue_len(&self, id: &str) -> usize {
        self.instances.get(id).map_or(0, |i| i.queue.len())
    }

    pub fn sent_len(&self, id: &str) -> usize {
        self.instances.get(id).map_or(0, |i| i.journal.len())
    }
}

/// Whose `statusMessage` a pin sets: one message, or every message to one chat.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusTarget {
    Message(String),
    Chat(String),
}

/// The world behind its lock, cheap to clone.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<World>>);

impl Shared {
    pub fn new(world: World) -> Self {
        Self(Arc::new(Mutex::new(world)))
    }

    /// Locks the world; a panic elsewhere while it was held leaves plain data that is
    /// still usable, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
