//! Resolving a card whose request may or may not have reached the API (a crash, a
//! time-out, a 499/5xx after the request was written), before anything else is sent on
//! its instance (SPEC §6).
//!
//! The card is looked for in `lastOutgoingMessages` and `showMessagesQueue`: same
//! `chatId`, the same phone in the vCard, a `timestamp` not before the attempt's start
//! truncated to the second, and an `idMessage` not already stored for another card.
//! Found: `sent` with that id. Not found: `queued` again, but only once the attempt is
//! older than `reconcile_lag`, because the journal lists a sent message up to 2 minutes
//! late. Each journal method is called at most once per second (the API's limit).

use std::time::Duration;

use super::{wait_until, Drain, Outcome, STATE_CALL_GAP_MS};
use crate::clock::{duration_ms, now_ms};
use crate::store::{SendOutcomeRecord, StoreError, UncertainCard};
use crate::upstream::JournalEntry;

/// How often the journal is looked at while waiting out `reconcile_lag`.
const LOOK_AGAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(super) struct Reconciler {
    last_journal_call: i64,
}

impl Drain {
    #[tracing::instrument(skip_all, fields(instance = %self.name, message_id = %card.id))]
    pub(super) async fn reconcile_card(
        &mut self,
        card: UncertainCard,
    ) -> Result<Outcome, StoreError> {
        let now = now_ms();
        let due = self.reconcile.last_journal_call + STATE_CALL_GAP_MS;
        if due > now {
            return Ok(wait_until(now, due));
        }
        self.reconcile.last_journal_call = now;
        let age_ms = now - card.attempt_started_at;
        let minutes = u32::try_from(age_ms / 60_000 + 2)
            .unwrap_or(u32::MAX)
            .min(1440);
        let journal = self.api.last_outgoing(minutes).await;
        let queue = self.api.queue().await;
        let entries: Vec<JournalEntry> = match (journal, queue) {
            (Ok(mut journal), Ok(queue)) => {
                journal.extend(queue);
                journal
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "journal look-up failed; will look again");
                let wait = self.backoff.next_delay();
                self.back_off(now, None, wait, &error.to_string());
                return Ok(Outcome::Wait(wait));
            }
        };
        for entry in candidates(&entries, &card) {
            if !self.store.id_message_taken(&entry.id_message).await? {
                tracing::info!(id_message = %entry.id_message, "uncertain send found in the API's journal");
                let record = SendOutcomeRecord::Reconciled {
                    id_message: entry.id_message.clone(),
                };
                self.store.record_outcome(&card.id, &record, now).await?;
                self.backoff.reset();
                crate::metrics::ended(&self.name, "sent");
                return Ok(Outcome::Progress);
            }
        }
        let lag = duration_ms(self.queue.reconcile_lag);
        if age_ms >= lag {
            tracing::info!(
                "uncertain send not in the API's journal after reconcile_lag; sending again"
            );
            let record = SendOutcomeRecord::Requeue {
                error: "not found in the API's journal after reconcile_lag; sending again".into(),
                http_status: None,
            };
            self.store.record_outcome(&card.id, &record, now).await?;
            return Ok(Outcome::Progress);
        }
        let remaining = Duration::from_millis((lag - age_ms) as u64);
        Ok(Outcome::Wait(
            remaining.min(LOOK_AGAIN).max(Duration::from_millis(1100)),
        ))
    }
}

/// Journal entries that may be this card, the earliest first.
pub(super) fn candidates<'a>(
    entries: &'a [JournalEntry],
    card: &UncertainCard,
) -> Vec<&'a JournalEntry> {
    let started_s = card.attempt_started_at.div_euclid(1000);
    let mut found: Vec<&JournalEntry> = entries
        .iter()
        .filter(|e| e.chat_id == card.chat_id)
        .filter(|e| e.phone.is_some_and(|p| p as i64 == card.phone))
        .filter(|e| e.timestamp.is_none_or(|t| t >= started_s))
        .collect();
    found.sort_by_key(|e| e.timestamp.unwrap_or(i64::MAX));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, chat: &str, phone: u64, ts: Option<i64>) -> JournalEntry {
        JournalEntry {
            id_message: id.into(),
            chat_id: chat.into(),
            phone: Some(phone),
            timestamp: ts,
        }
    }

    #[test]
    fn matches_chat_phone_and_time_truncated_to_the_second() {
        let card = UncertainCard {
            id: "m".into(),
            chat_id: "11001234567@c.us".into(),
            phone: 79001234568,
            attempt_started_at: 1_700_000_000_900,
        };
        let entries = vec![
            entry("late", "11001234567@c.us", 79001234568, Some(1_700_000_005)),
            entry(
                "same-second",
                "11001234567@c.us",
                79001234568,
                Some(1_700_000_000),
            ),
            entry(
                "before",
                "11001234567@c.us",
                79001234568,
                Some(1_699_999_999),
            ),
            entry(
                "other-chat",
                "11001234568@c.us",
                79001234568,
                Some(1_700_000_001),
            ),
            entry(
                "other-phone",
                "11001234567@c.us",
                79001234569,
                Some(1_700_000_001),
            ),
            entry("queued", "11001234567@c.us", 79001234568, None),
        ];
        let ids: Vec<&str> = candidates(&entries, &card)
            .iter()
            .map(|e| e.id_message.as_str())
            .collect();
        assert_eq!(ids, ["same-second", "late", "queued"]);
    }
}
