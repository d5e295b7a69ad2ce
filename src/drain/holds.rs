//! The drain's waits that outlive one step, kept on the monotonic clock: the chats
//! held by a chats-quota 466, and the pacing of the first send after a start.
//!
//! Both come from wall times in the database (they survive a restart); read back,
//! each is clamped to the longest wait it could have been set for, so a wall clock
//! stepped back in between cannot stall a line or a chat for longer than that.

use std::collections::BTreeMap;

use crate::clock::remaining_ms;
use crate::store::ChatHold;

/// Chats whose cards step aside: chat id → (wall end, monotonic end).
#[derive(Debug, Default)]
pub(super) struct ChatHolds {
    holds: BTreeMap<String, (i64, i64)>,
}

impl ChatHolds {
    /// Takes the stored holds. One already known (same chat, same stored end) keeps
    /// its monotonic end; a new one is clamped to `longest` (`quota_retry`).
    pub fn load(&mut self, stored: &[ChatHold], wall: i64, mono: i64, longest: i64) {
        let mut holds = BTreeMap::new();
        for hold in stored {
            let mono_until = match self.holds.get(&hold.chat_id) {
                Some(&(w, m)) if w == hold.until => m,
                _ => mono.saturating_add(remaining_ms(hold.until, wall, longest)),
            };
            holds.insert(hold.chat_id.clone(), (hold.until, mono_until));
        }
        self.holds = holds;
    }

    pub fn insert(&mut self, chat_id: &str, wall_until: i64, mono_until: i64) {
        self.holds
            .insert(chat_id.to_string(), (wall_until, mono_until));
    }

    /// Removes the holds that have ended by `mono`; returns them as (chat, wall end).
    pub fn take_ended(&mut self, mono: i64) -> Vec<(String, i64)> {
        let ended: Vec<(String, i64)> = self
            .holds
            .iter()
            .filter(|(_, &(_, m))| m <= mono)
            .map(|(chat, &(w, _))| (chat.clone(), w))
            .collect();
        for (chat, _) in &ended {
            self.holds.remove(chat);
        }
        ended
    }

    /// The held chat ids.
    pub fn chats(&self) -> Vec<String> {
        self.holds.keys().cloned().collect()
    }

    /// The monotonic time the first hold ends.
    pub fn next_end(&self) -> Option<i64> {
        self.holds.values().map(|&(_, m)| m).min()
    }

    /// Chat → when its hold ends, as a wall time to show, derived from the monotonic
    /// end so that it agrees with when the cards actually go.
    pub fn to_show(&self, wall: i64, mono: i64) -> BTreeMap<String, i64> {
        self.holds
            .iter()
            .map(|(chat, &(_, m))| (chat.clone(), wall.saturating_add(m - mono)))
            .collect()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

/// How long the first send after a start waits, from the persisted wall time of the
/// last claim: `send_delay` (plus a margin, since the request left a little after its
/// claim) after it, but never longer than `send_delay`, whatever the wall clock did
/// meanwhile.
pub(super) fn restart_wait_ms(
    last_send_at: Option<i64>,
    wall_now: i64,
    send_delay_ms: i64,
    margin_ms: i64,
) -> i64 {
    last_send_at.map_or(0, |t| {
        remaining_ms(
            t.saturating_add(send_delay_ms + margin_ms),
            wall_now,
            send_delay_ms,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(chat: &str, until: i64) -> ChatHold {
        ChatHold {
            chat_id: chat.into(),
            until,
            reason: None,
        }
    }

    #[test]
    fn a_wall_clock_step_back_after_a_restart_stalls_pacing_at_most_send_delay() {
        // Last claim at wall 10 000 s, then the clock went back a day.
        let t = 10_000_000;
        assert_eq!(restart_wait_ms(Some(t), t - 86_400_000, 5_000, 250), 5_000);
        // Forward or a normal restart: what is left of the delay, or nothing.
        assert_eq!(restart_wait_ms(Some(t), t + 2_000, 5_000, 250), 3_250);
        assert_eq!(restart_wait_ms(Some(t), t + 86_400_000, 5_000, 250), 0);
        assert_eq!(restart_wait_ms(None, t, 5_000, 250), 0);
    }

    #[test]
    fn chat_holds_run_on_the_monotonic_clock_whatever_the_wall_clock_does() {
        let quota = 3_600_000;
        let mut holds = ChatHolds::default();
        // Set at wall 1 000 000, mono 0, for an hour.
        holds.insert("1@c.us", 1_000_000 + quota, quota);
        // The wall clock goes back a day; re-reading the store keeps the known end.
        holds.load(
            &[stored("1@c.us", 1_000_000 + quota)],
            1_000_000 - 86_400_000,
            10,
            quota,
        );
        assert_eq!(holds.next_end(), Some(quota));
        // The wall clock jumps a day ahead: the hold still lasts its real hour.
        holds.load(
            &[stored("1@c.us", 1_000_000 + quota)],
            1_000_000 + 86_400_000,
            20,
            quota,
        );
        assert!(holds.take_ended(quota - 1).is_empty());
        assert_eq!(
            holds.take_ended(quota),
            [("1@c.us".to_string(), 1_000_000 + quota)]
        );
        assert!(holds.is_empty());
    }

    #[test]
    fn a_stored_hold_read_at_start_is_clamped_to_quota_retry() {
        let mut holds = ChatHolds::default();
        // Written at wall 1 000 000 for an hour; read after a restart with the clock a
        // day behind: it waits an hour at most, not a day and an hour.
        holds.load(
            &[stored("2@c.us", 4_600_000)],
            4_600_000 - 90_000_000,
            0,
            3_600_000,
        );
        assert_eq!(holds.next_end(), Some(3_600_000));
        holds.load(&[], 0, 0, 3_600_000);
        assert!(
            holds.is_empty(),
            "resume cleared the store: the hold is gone"
        );
    }
}
