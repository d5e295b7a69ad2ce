//! Following each sent card's WhatsApp delivery (docs/api.md §11) from the
//! `statusMessage` of `lastOutgoingMessages`, matched by `idMessage`.
//!
//! The drain looks every `delivery_poll` while any card of its instance is followed
//! (none: no look at all until the next send), asking for the minutes since the oldest
//! followed card's send + 2 (at most a day; an older card is still followed until its
//! window ends). More than [`FOLLOW_BATCH`] cards followed are looked at a page per
//! look, oldest first, so none waits for the older ones to end. A card not delivered when its `delivery_window` ends becomes
//! `unconfirmed`; a delivered one keeps `delivered` and is no longer followed.
//!
//! A look never holds the line: the drain makes it only while it would otherwise wait
//! (for pacing, a hold, an empty line), or, on a line that never waits, once it is a
//! whole `delivery_poll` late. `send_delay` paces `sendContact` alone. The API allows
//! one `lastOutgoingMessages` a second per instance, and the reconciler calls it too:
//! both go through the one [`JournalGate`] of the drain.

use std::collections::HashMap;

use super::{Drain, Outcome, STATE_CALL_GAP_MS};
use crate::clock::duration_ms;
use crate::state::Delivery;
use crate::store::{FollowedCard, StoreError};

/// The most followed cards read at one look.
const FOLLOW_BATCH: i64 = 5_000;
/// The most `minutes` `lastOutgoingMessages` is asked for (its own default: a day).
const MAX_MINUTES: i64 = 1440;

/// The one gate of an instance's `lastOutgoingMessages` calls (delivery and reconcile).
#[derive(Debug, Default)]
pub(super) struct JournalGate {
    /// Monotonic ms of the latest call's answer (None: no call yet).
    last: Option<i64>,
}

impl JournalGate {
    /// Monotonic ms from which the next call may start.
    pub fn next_at(&self) -> i64 {
        self.last
            .map_or(i64::MIN, |l| l.saturating_add(STATE_CALL_GAP_MS))
    }

    /// A call started or answered at `mono`: the gap runs from the later of the two.
    pub fn mark(&mut self, mono: i64) {
        self.last = Some(self.last.map_or(mono, |l| l.max(mono)));
    }
}

/// What the drain keeps about the cards it follows.
#[derive(Debug)]
pub(super) struct Follower {
    /// Monotonic ms of the next look; None while no card is followed.
    next_look: Option<i64>,
    /// Cards sent before this (wall ms) are past their window and dealt with.
    swept_to: i64,
    /// Where the next look's page starts (a send time) when the last page was full;
    /// None: from `swept_to`. More cards than a page are looked at page by page.
    page_from: Option<i64>,
}

impl Default for Follower {
    /// After a start, look once at once: cards may be followed from before.
    fn default() -> Self {
        Self {
            next_look: Some(i64::MIN),
            swept_to: 0,
            page_from: None,
        }
    }
}

/// `minutes` for `lastOutgoingMessages`: the oldest followed send's age + 2, at most a day.
pub(super) fn minutes_since(now: i64, oldest_sent_at: i64) -> u32 {
    let age_min = now.saturating_sub(oldest_sent_at).max(0) / 60_000;
    u32::try_from((age_min + 2).min(MAX_MINUTES)).unwrap_or(1440)
}

impl Drain {
    /// A card was sent (or found sent): follow it, the first look a `delivery_poll` on.
    pub(super) fn follow_new_send(&mut self) {
        let at = self
            .clock
            .mono_ms()
            .saturating_add(duration_ms(self.queue.delivery_poll));
        let next = self.follower.next_look.map_or(at, |n| n.min(at));
        self.follower.next_look = Some(next);
    }

    /// When the next look may start (monotonic ms), if any card is followed.
    pub(super) fn next_delivery_look(&self) -> Option<i64> {
        self.follower
            .next_look
            .map(|n| n.max(self.journal_gate.next_at()))
    }

    /// Whether to look now, after a step that ended with `outcome`: due, no outcome
    /// held back for the next claim, and the loop is about to wait anyway, or a whole
    /// `delivery_poll` late on a line that never waits.
    pub(super) fn delivery_look_now(&self, outcome: &Outcome) -> bool {
        // A sent outcome not yet written would be missed by the look: it goes first.
        if self.pending.is_some() {
            return false;
        }
        let Some(due) = self.next_delivery_look() else {
            return false;
        };
        let now = self.clock.mono_ms();
        match outcome {
            Outcome::Progress => now >= due.saturating_add(duration_ms(self.queue.delivery_poll)),
            Outcome::Wait(_) | Outcome::Idle => now >= due,
        }
    }

    /// One look at the cards followed: those past their window end, the others are
    /// matched with the journal's entries by `idMessage`.
    pub(super) async fn look_at_deliveries(&mut self) -> Result<(), StoreError> {
        let wall = self.clock.wall_ms();
        let window = duration_ms(self.queue.delivery_window);
        let cutoff = wall.saturating_sub(window);
        let first_page = self.follower.page_from.is_none();
        let from = self
            .follower
            .page_from
            .take()
            .unwrap_or(self.follower.swept_to);
        let cards = self.store.followed(&self.name, from, FOLLOW_BATCH).await?;
        let full = i64::try_from(cards.len()).unwrap_or(i64::MAX) >= FOLLOW_BATCH;
        // A full page: the next look goes on from its last send (that card again).
        self.follower.page_from = cards.last().filter(|_| full).map(|c| c.sent_at);
        let (ended, open): (Vec<FollowedCard>, Vec<FollowedCard>) =
            cards.into_iter().partition(|c| c.sent_at < cutoff);
        for card in &ended {
            if let Some(next) = card.delivery.when_window_ends(card.sent_at, window, wall) {
                self.record_delivery(card, next, wall).await?;
            }
        }
        // Cards sent before the cutoff are done with (unconfirmed, or delivered and no
        // longer followed), once a page from `swept_to` has seen them; a full page of
        // them means more to sweep at once.
        if first_page {
            self.follower.swept_to = match ended.last() {
                Some(last) if open.is_empty() && full => last.sent_at,
                _ => self.follower.swept_to.max(cutoff),
            };
        }
        let Some(oldest) = open.first().map(|c| c.sent_at) else {
            // Nothing open on this page: more pages (or the first again) at once, else
            // nothing is followed until the next send.
            self.follower.next_look = (full || !first_page).then_some(self.clock.mono_ms());
            return Ok(());
        };
        let minutes = minutes_since(wall, oldest);
        self.journal_gate.mark(self.clock.mono_ms());
        let started = std::time::Instant::now();
        let answer = self.api.last_outgoing_statuses(minutes).await;
        crate::metrics::upstream_request(
            &self.name,
            "lastOutgoingMessages",
            if answer.is_ok() { "200" } else { "error" },
            started.elapsed(),
        );
        let mono = self.clock.mono_ms();
        self.journal_gate.mark(mono);
        self.follower.next_look = Some(mono.saturating_add(duration_ms(self.queue.delivery_poll)));
        let statuses: HashMap<String, String> = match answer {
            Ok(entries) => entries.into_iter().collect(),
            Err(error) => {
                tracing::warn!(instance = %self.name, %error, "lastOutgoingMessages failed; delivery is looked up again at the next poll");
                return Ok(());
            }
        };
        let seen = self.clock.wall_ms();
        for card in &open {
            let next = statuses
                .get(&card.id_message)
                .and_then(|s| Delivery::from_status_message(s));
            if let Some(next) = next.filter(|n| card.delivery.may_become(*n)) {
                self.record_delivery(card, next, seen).await?;
            }
        }
        Ok(())
    }

    async fn record_delivery(
        &self,
        card: &FollowedCard,
        next: Delivery,
        at: i64,
    ) -> Result<(), StoreError> {
        if self.store.record_delivery(&card.id, next, at).await? {
            tracing::info!(instance = %self.name, message_id = %card.id, id_message = %card.id_message, delivery = %next, "delivery changed");
            if next == Delivery::Read && card.delivery == Delivery::Sent {
                crate::metrics::delivery(&self.name, Delivery::Delivered);
            }
            crate::metrics::delivery(&self.name, next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_cover_the_oldest_followed_card_and_stop_at_a_day() {
        let now = 1_700_000_000_000;
        assert_eq!(minutes_since(now, now), 2);
        assert_eq!(minutes_since(now, now - 61_000), 3);
        assert_eq!(minutes_since(now, now - 3 * 86_400_000), 1440);
        assert_eq!(minutes_since(now, now + 5_000), 2, "a clock stepped back");
    }

    #[test]
    fn the_journal_gate_keeps_a_second_and_more_between_calls() {
        let mut gate = JournalGate::default();
        assert_eq!(gate.next_at(), i64::MIN);
        gate.mark(10_000);
        gate.mark(10_400);
        assert_eq!(gate.next_at(), 10_400 + STATE_CALL_GAP_MS);
        gate.mark(9_000);
        assert_eq!(gate.next_at(), 10_400 + STATE_CALL_GAP_MS, "never earlier");
    }
}
