//! Resolving a card whose request may or may not have reached the API (a crash, a
//! time-out, a 499/5xx or a connection lost after the request was written), before
//! anything else is sent on its instance.
//!
//! The card is looked for in `lastOutgoingMessages` (asking for the minutes since its
//! attempt began, plus 2) and in `showMessagesQueue` (the API's own queue, for an
//! instance that takes sends but has not sent them yet). An entry is the card when:
//! - its chat is the card's (a `@lid` card is matched on phone and time alone: the
//!   journal may name the chat otherwise);
//! - its phone, read from the vCard's `TEL` line only (never a name or the company),
//!   is the card's;
//! - its `timestamp` lies within 30 s either side of the attempt (the API's clock and
//!   ours differ), the attempt running from its start to its time-out, plus the
//!   API's own queue pacing and the card's typing time on the late side;
//! - its `idMessage` is not stored for another card.
//!
//! Entries sent through the API (`sendByApi`) are preferred, then the one nearest the
//! attempt. Found: `sent` with that id. Not found: `queued` again, but only after two
//! looks at least the API's `delaySendMessagesMilliseconds` apart both missed it (the
//! API's queue listing is known to leave out its first message, and a card leaves it
//! for the journal once per that delay), and not before the attempt's start +
//! `reconcile_lag` (the journal lists a send up to 2 minutes late) + that delay + the
//! card's `typingTime` (+ `lease` + `request_timeout` on a shared database, where the
//! attempt may be a frozen daemon's that could still write its request until its
//! lease ran out). Each journal method is called at most once per second (the API's
//! limit; `lastOutgoingMessages` through the gate the drain shares with delivery);
//! `getSettings` is asked on each authorization.

use std::time::Duration;

use super::{wait_until, Drain, Outcome, STATE_CALL_GAP_MS};
use crate::clock::duration_ms;
use crate::store::{SendOutcomeRecord, StoreError, UncertainCard};
use crate::upstream::JournalEntry;

/// How often the journal is looked at while waiting out `reconcile_lag`.
const LOOK_AGAIN: Duration = Duration::from_secs(5);
/// How far the API's clock may be from ours, either way.
const CLOCK_SLACK_S: i64 = 30;
/// The most `minutes` `lastOutgoingMessages` is asked for (its own default: a day).
const MAX_MINUTES: i64 = 1440;

/// What the reconciler keeps between steps.
#[derive(Debug, Default)]
pub(super) struct Reconciler {
    /// Monotonic time of the latest `getSettings` call (none yet: None); the journal
    /// calls go through the drain's `journal_gate`, shared with delivery.
    last_settings_call: Option<i64>,
    /// The instance's `delaySendMessagesMilliseconds`, once `getSettings` answered.
    api_delay_ms: Option<i64>,
    /// The looks at the card being resolved.
    looks: Option<Looks>,
}

/// The missed looks at one attempt of one card.
#[derive(Debug, Clone, PartialEq)]
struct Looks {
    card_id: String,
    attempt_started_at: i64,
    typing_ms: i64,
    first_miss: Option<i64>,
    last_miss: Option<i64>,
}

/// What to do after a look that missed the card.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Two looks far enough apart missed it, and the wait is over: back to `queued`.
    SendAgain,
    /// Look again at this time (Unix ms).
    LookAgainAt(i64),
}

impl Looks {
    fn missed_at(self, now: i64) -> Looks {
        Looks {
            first_miss: self.first_miss.or(Some(now)),
            last_miss: Some(now),
            ..self
        }
    }

    /// After a miss at `now`: the card may go out again once two looks at least
    /// `api_delay_ms` apart missed it and `not_before` has passed; until then the next
    /// look is soon enough to find a late entry quickly (every few seconds), and in
    /// time for the second look and the earliest re-queue.
    fn verdict(&self, now: i64, not_before: i64, api_delay_ms: i64) -> Verdict {
        let first = self.first_miss.unwrap_or(now);
        let last = self.last_miss.unwrap_or(now);
        let second_look_at = first.saturating_add(api_delay_ms.max(1));
        if last >= second_look_at && now >= not_before {
            return Verdict::SendAgain;
        }
        let at = not_before
            .max(second_look_at)
            .min(now.saturating_add(duration_ms(LOOK_AGAIN)))
            .max(now + STATE_CALL_GAP_MS);
        Verdict::LookAgainAt(at)
    }
}

/// The time window (Unix seconds, API clock) an entry of this attempt may carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Window {
    pub from_s: i64,
    pub to_s: i64,
    /// Where the attempt began; entries nearer to it are preferred.
    pub around_s: i64,
}

impl Window {
    /// The attempt from `started_ms` to `started_ms + until_ms`, widened by the clock
    /// slack on both sides.
    pub fn of_attempt(started_ms: i64, until_ms: i64) -> Window {
        let around_s = started_ms.div_euclid(1000);
        Window {
            from_s: around_s - CLOCK_SLACK_S,
            to_s: (started_ms.saturating_add(until_ms)).div_euclid(1000) + 1 + CLOCK_SLACK_S,
            around_s,
        }
    }
}

impl Drain {
    /// Asks `getSettings` for the API's own send delay (on each authorization, and
    /// from the reconciler while it is unknown). A failure keeps what was known.
    pub(super) async fn refresh_api_settings(&mut self) {
        let mono = self.clock.mono_ms();
        if self
            .reconcile
            .last_settings_call
            .is_some_and(|last| mono < last + STATE_CALL_GAP_MS)
        {
            return;
        }
        self.reconcile.last_settings_call = Some(mono);
        let started = std::time::Instant::now();
        let answer = self.api.settings().await;
        self.count_call("getSettings", answer.is_ok(), started);
        self.reconcile.last_settings_call = Some(self.clock.mono_ms());
        match answer {
            Ok(settings) => {
                let ms = i64::try_from(settings.delay_send_ms).unwrap_or(i64::MAX);
                if self.reconcile.api_delay_ms != Some(ms) {
                    tracing::info!(instance = %self.name, delay_send_messages_ms = ms, "instance settings read");
                }
                self.reconcile.api_delay_ms = Some(ms);
            }
            Err(error) => {
                tracing::warn!(instance = %self.name, %error, "getSettings failed; the reconciler assumes send_delay as the API's send delay");
            }
        }
    }

    fn count_call(&self, method: &'static str, ok: bool, started: std::time::Instant) {
        let status = if ok { "200" } else { "error" };
        crate::metrics::upstream_request(&self.name, method, status, started.elapsed());
    }

    /// The API's send delay: from `getSettings`, else the configured `send_delay`.
    fn api_delay_ms(&self) -> i64 {
        self.reconcile
            .api_delay_ms
            .unwrap_or_else(|| duration_ms(self.send_delay))
    }

    #[tracing::instrument(skip_all, fields(instance = %self.name, message_id = %card.id))]
    pub(super) async fn reconcile_card(
        &mut self,
        card: UncertainCard,
    ) -> Result<Outcome, StoreError> {
        // The 1 request/s gap is a wait: monotonic. The attempt's window and the two
        // looks compare with stored wall times.
        let mono = self.clock.mono_ms();
        let due = self.journal_gate.next_at();
        if due > mono {
            return Ok(wait_until(mono, due));
        }
        if self.reconcile.api_delay_ms.is_none() {
            self.refresh_api_settings().await;
        }
        let looks = match self.reconcile.looks.take() {
            Some(l) if l.card_id == card.id && l.attempt_started_at == card.attempt_started_at => l,
            _ => Looks {
                card_id: card.id.clone(),
                attempt_started_at: card.attempt_started_at,
                typing_ms: self.typing_ms(&card.id).await?,
                first_miss: None,
                last_miss: None,
            },
        };
        let now = self.clock.wall_ms();
        self.journal_gate.mark(self.clock.mono_ms());
        let minutes = minutes_to_ask(now, card.attempt_started_at);
        let started = std::time::Instant::now();
        let journal = self.api.last_outgoing(minutes).await;
        self.count_call("lastOutgoingMessages", journal.is_ok(), started);
        let started = std::time::Instant::now();
        let queue = self.api.queue().await;
        self.count_call("showMessagesQueue", queue.is_ok(), started);
        // The gap runs from the answers, so the API, counting from when the requests
        // arrived, never sees two of one method within a second.
        self.journal_gate.mark(self.clock.mono_ms());
        let entries: Vec<JournalEntry> = match (journal, queue) {
            (Ok(mut journal), Ok(queue)) => {
                journal.extend(queue);
                journal
            }
            (Err(error), _) | (_, Err(error)) => {
                // A failed look is not a miss: the card may be there.
                self.reconcile.looks = Some(looks);
                tracing::warn!(%error, "journal look-up failed; will look again");
                let wait = self.backoff.next_delay();
                self.back_off(now, None, wait, &error.to_string());
                return Ok(Outcome::Wait(wait));
            }
        };
        let api_delay = self.api_delay_ms();
        let late_side = duration_ms(self.queue.request_timeout)
            .saturating_add(api_delay)
            .saturating_add(looks.typing_ms);
        let window = Window::of_attempt(card.attempt_started_at, late_side);
        for entry in candidates(&entries, &card, window) {
            if !self.store.id_message_taken(&entry.id_message).await? {
                tracing::info!(id_message = %entry.id_message, in_queue = entry.timestamp.is_none(), "uncertain send found in the API's journal or queue");
                let record = SendOutcomeRecord::Reconciled {
                    id_message: entry.id_message.clone(),
                };
                self.store.record_outcome(&card.id, &record, now).await?;
                self.backoff.reset();
                crate::metrics::ended(&self.name, crate::state::MessageState::Sent);
                self.follow_new_send();
                return Ok(Outcome::Progress);
            }
        }
        let looks = looks.missed_at(now);
        // On a shared database the attempt may be another daemon's, which may still
        // write its request until its lease ran out (and then take request_timeout).
        let lease_wait = self.store.lease_ms().map_or(0, |lease| {
            lease.saturating_add(duration_ms(self.queue.request_timeout))
        });
        let not_before = card
            .attempt_started_at
            .saturating_add(lease_wait)
            .saturating_add(duration_ms(self.queue.reconcile_lag))
            .saturating_add(api_delay)
            .saturating_add(looks.typing_ms);
        if let Verdict::LookAgainAt(at) = looks.verdict(now, not_before, api_delay) {
            self.reconcile.looks = Some(looks);
            return Ok(wait_until(now, at));
        }
        tracing::info!(
            "uncertain send in neither the API's journal nor its queue after two looks; sending again"
        );
        self.reconcile.looks = None;
        let record = SendOutcomeRecord::Requeue {
            error: "not found in the API's journal or queue after reconcile_lag; sending again"
                .into(),
            http_status: None,
        };
        self.store.record_outcome(&card.id, &record, now).await?;
        Ok(Outcome::Progress)
    }

    /// The card's `typingTime` (the API shows "typing…" that long before sending).
    async fn typing_ms(&self, id: &str) -> Result<i64, StoreError> {
        let row = self.store.message(id).await?;
        let body: serde_json::Value = serde_json::from_str(&row.body).unwrap_or_default();
        Ok(body
            .get("typingTime")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
            .clamp(0, 60_000))
    }
}

/// `minutes` for `lastOutgoingMessages`: the attempt's age in minutes + 2, at most a day.
fn minutes_to_ask(now: i64, attempt_started_at: i64) -> u32 {
    let age_min = now.saturating_sub(attempt_started_at).max(0) / 60_000;
    u32::try_from((age_min + 2).min(MAX_MINUTES)).unwrap_or(1440)
}

/// Entries that may be this card, best first: sent through the API, then nearest the
/// attempt's start (an entry still in the API's queue counts as nearest). Whether an
/// entry's idMessage is already another card's is for the caller to check.
pub(super) fn candidates<'a>(
    entries: &'a [JournalEntry],
    card: &UncertainCard,
    window: Window,
) -> Vec<&'a JournalEntry> {
    let lid = card.chat_id.ends_with("@lid");
    let mut found: Vec<&JournalEntry> = entries
        .iter()
        .filter(|e| e.phone.is_some_and(|p| i64::try_from(p) == Ok(card.phone)))
        .filter(|e| match e.timestamp {
            // The API's journal: chat (unless @lid) and time.
            Some(t) => {
                (lid || e.chat_id == card.chat_id) && (window.from_s..=window.to_s).contains(&t)
            }
            // The API's queue holds our own body, chat id included, and no time.
            None => e.chat_id == card.chat_id,
        })
        .collect();
    found.sort_by_key(|e| {
        (
            !e.send_by_api,
            e.timestamp.map_or(0, |t| (t - window.around_s).abs()),
        )
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "11001234567@c.us";
    const PHONE: u64 = 79001234568;
    /// The attempt began at 1_700_000_000.900 s.
    const STARTED: i64 = 1_700_000_000_900;

    fn entry(id: &str, chat: &str, phone: u64, ts: Option<i64>) -> JournalEntry {
        JournalEntry {
            id_message: id.into(),
            chat_id: chat.into(),
            phone: Some(phone),
            timestamp: ts,
            send_by_api: true,
        }
    }

    fn card(chat: &str) -> UncertainCard {
        UncertainCard {
            id: "m".into(),
            chat_id: chat.into(),
            phone: PHONE as i64,
            attempt_started_at: STARTED,
        }
    }

    fn ids(entries: &[JournalEntry], card: &UncertainCard, late_ms: i64) -> Vec<String> {
        candidates(
            entries,
            card,
            Window::of_attempt(card.attempt_started_at, late_ms),
        )
        .iter()
        .map(|e| e.id_message.clone())
        .collect()
    }

    #[test]
    fn matches_chat_phone_and_time_within_thirty_seconds_either_side() {
        let s = STARTED / 1000;
        let entries = vec![
            entry("far-before", CHAT, PHONE, Some(s - 31)),
            entry("skewed-before", CHAT, PHONE, Some(s - 30)),
            entry("skewed-after", CHAT, PHONE, Some(s + 25)),
            entry("same-second", CHAT, PHONE, Some(s)),
            entry("far-after", CHAT, PHONE, Some(s + 5 + 1 + 31)),
            entry("other-chat", "11001234568@c.us", PHONE, Some(s)),
            entry("other-phone", CHAT, PHONE + 1, Some(s)),
            entry("queued", CHAT, PHONE, None),
            entry("queued-other-chat", "11001234568@c.us", PHONE, None),
        ];
        // The attempt may run 5 s (its time-out).
        assert_eq!(
            ids(&entries, &card(CHAT), 5_000),
            ["same-second", "queued", "skewed-after", "skewed-before"]
        );
        // The API's pacing and the typing time widen the late side only.
        assert_eq!(
            ids(&entries, &card(CHAT), 6_000),
            [
                "same-second",
                "queued",
                "skewed-after",
                "skewed-before",
                "far-after"
            ]
        );
    }

    #[test]
    fn entries_sent_by_the_api_come_first() {
        let s = STARTED / 1000;
        let mut typed = entry("typed-on-the-phone", CHAT, PHONE, Some(s));
        typed.send_by_api = false;
        let entries = vec![typed, entry("by-api", CHAT, PHONE, Some(s + 20))];
        assert_eq!(
            ids(&entries, &card(CHAT), 0),
            ["by-api", "typed-on-the-phone"]
        );
    }

    #[test]
    fn a_lid_card_matches_on_phone_and_time() {
        let s = STARTED / 1000;
        let lid = "123456789012345@lid";
        let entries = vec![
            entry("as-phone-chat", CHAT, PHONE, Some(s + 1)),
            entry("other-phone", lid, PHONE + 1, Some(s)),
            entry("too-old", lid, PHONE, Some(s - 100)),
            entry("queued-elsewhere", CHAT, PHONE, None),
            entry("queued", lid, PHONE, None),
        ];
        assert_eq!(ids(&entries, &card(lid), 0), ["queued", "as-phone-chat"]);
        // A @c.us card is held to its chat.
        assert_eq!(
            ids(&entries, &card(CHAT), 0),
            ["queued-elsewhere", "as-phone-chat"]
        );
    }

    #[test]
    fn of_two_cards_with_one_phone_the_nearer_entry_is_first() {
        // Card A went at s-20 (its id stored), card B, uncertain, at s: both entries
        // match B's window; B's own is nearer, and A's is skipped as taken anyway.
        let s = STARTED / 1000;
        let entries = vec![
            entry("card-a", CHAT, PHONE, Some(s - 20)),
            entry("card-b", CHAT, PHONE, Some(s + 1)),
        ];
        assert_eq!(ids(&entries, &card(CHAT), 0), ["card-b", "card-a"]);
    }

    #[test]
    fn a_card_goes_out_again_only_after_two_misses_a_send_delay_apart_and_the_wait() {
        let looks = Looks {
            card_id: "m".into(),
            attempt_started_at: 0,
            typing_ms: 0,
            first_miss: None,
            last_miss: None,
        };
        let delay = 3_000;
        // A first miss long after the wait (a restart): one more look, a delay later.
        let first = looks.clone().missed_at(600_000);
        assert_eq!(
            first.verdict(600_000, 120_000, delay),
            Verdict::LookAgainAt(603_000)
        );
        let early = first.clone().missed_at(602_000);
        assert_eq!(
            early.verdict(602_000, 120_000, delay),
            Verdict::LookAgainAt(603_100)
        );
        let second = early.missed_at(603_000);
        assert_eq!(second.verdict(603_000, 120_000, delay), Verdict::SendAgain);
        // Two misses far apart, but the wait is not over: look every few seconds.
        let one = looks.clone().missed_at(1_000).missed_at(10_000);
        assert_eq!(
            one.verdict(10_000, 125_000, delay),
            Verdict::LookAgainAt(15_000)
        );
        assert_eq!(
            one.verdict(124_000, 125_000, delay),
            Verdict::LookAgainAt(125_100)
        );
        assert_eq!(
            one.clone()
                .missed_at(125_000)
                .verdict(125_000, 125_000, delay),
            Verdict::SendAgain
        );
        // One miss alone never sends again, even with no send delay at all.
        let single = looks.missed_at(200_000);
        assert!(matches!(
            single.verdict(200_000, 0, 0),
            Verdict::LookAgainAt(_)
        ));
    }

    #[test]
    fn minutes_cover_the_attempt_and_stop_at_a_day() {
        let now = STARTED;
        assert_eq!(minutes_to_ask(now, now), 2);
        assert_eq!(minutes_to_ask(now + 59_999, now), 2);
        assert_eq!(minutes_to_ask(now + 61_000, now), 3);
        assert_eq!(minutes_to_ask(now + 10 * 86_400_000, now), 1440);
        assert_eq!(minutes_to_ask(now - 5_000, now), 2, "a clock stepped back");
    }
}
