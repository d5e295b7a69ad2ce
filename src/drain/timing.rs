//! The drain's side of timing (docs/api.md §11): cards whose `notBefore` comes join
//! the tail of the line, and nothing is sent inside the instance's quiet hours.
//!
//! Both are wall-clock matters (a `notBefore` and a local time of day are wall times),
//! read from the drain's clock so the tests can step it. The loop never sleeps past
//! the next `notBefore` (see [`Drain::cap_wait`]) and never spins on one: a due card
//! is joined in one write and the next one is read afresh.

use std::time::Duration;

use super::{wait_until, Drain, Outcome};
use crate::lines::Hold;
use crate::store::StoreError;

impl Drain {
    /// Joins the cards that came due to the tail of the line. Progress when some
    /// were due (the step starts again), None otherwise.
    pub(super) async fn join_due(&mut self) -> Result<Option<Outcome>, StoreError> {
        if self.line.take_due_changed() {
            self.next_due = None;
        }
        let next = match self.next_due {
            Some(next) => next,
            None => {
                let next = match self.store.next_due(&self.name).await {
                    Ok(next) => next,
                    Err(e) => {
                        self.line.due_changed();
                        return Err(e);
                    }
                };
                self.next_due = Some(next);
                next
            }
        };
        let wall = self.clock.wall_ms();
        match next {
            Some(at) if at <= wall => {
                let joined = self.store.join_due(&self.name, wall).await?;
                tracing::debug!(instance = %self.name, joined, "cards came due (notBefore)");
                self.next_due = None;
                Ok(Some(Outcome::Progress))
            }
            _ => Ok(None),
        }
    }

    /// A wait cut so the loop wakes when the next not-yet-due card comes due.
    pub(super) fn cap_wait(&self, wait: Duration) -> Duration {
        match self.next_due {
            Some(Some(at)) => {
                let left = at.saturating_sub(self.clock.wall_ms()).max(1) as u64;
                wait.min(Duration::from_millis(left))
            }
            _ => wait,
        }
    }

    /// Inside the quiet hours: the hold shown and the wait until they end (`now` is
    /// the monotonic time of the step).
    pub(super) fn quiet_hours(&self, now: i64) -> Option<Outcome> {
        let quiet = self.quiet.as_ref()?;
        let wall = self.clock.wall_ms();
        let until = quiet.end_if_inside(wall)?;
        self.set_hold(Some(Hold::Quiet {
            window: quiet.to_string(),
            until_ms: until,
        }));
        Some(wait_until(now, now.saturating_add(until - wall)))
    }
}
