//! Quiet hours (docs/api.md §11): a daily window of local time, in an IANA time zone,
//! during which an instance's line sends nothing. This module owns the window's
//! parsing and its arithmetic (is a moment inside, when does it end, when does a line
//! of sends finish once the windows are skipped), on Unix milliseconds handed in, so
//! the drain, `eta` and `status` agree and the unit tests step a manual clock.
//!
//! Local times that do not exist (the hour skipped when DST starts) are read as the
//! first moment after the gap; ambiguous ones (the hour repeated when it ends) as the
//! earlier of the two.

use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// `quiet_hours = "22:00-08:00"` with `timezone = "Europe/Moscow"`.
#[derive(Clone, PartialEq)]
pub struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
    zone: Tz,
}

/// What is wrong with a window or a zone, to be named with its key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuietError {
    #[error("'{0}' is not a window like \"22:00-08:00\" (HH:MM-HH:MM, start and end different)")]
    Window(String),
    #[error("'{0}' is not an IANA time zone like \"Europe/Moscow\"")]
    Zone(String),
}

impl QuietHours {
    /// Parses `"HH:MM-HH:MM"` and an IANA zone name.
    pub fn parse(window: &str, zone: &str) -> Result<QuietHours, QuietError> {
        let bad = || QuietError::Window(window.to_string());
        let (start, end) = window.trim().split_once('-').ok_or_else(bad)?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| bad());
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(bad());
        }
        let zone: Tz = zone
            .trim()
            .parse()
            .map_err(|_| QuietError::Zone(zone.to_string()))?;
        Ok(QuietHours { start, end, zone })
    }

    /// If `at` (Unix ms) is inside a window, when that window ends (Unix ms).
    pub fn end_if_inside(&self, at: i64) -> Option<i64> {
        let local = self.local(at)?;
        let (date, time) = (local.date_naive(), local.time());
        let end_date = if self.start < self.end {
            if time < self.start || time >= self.end {
                return None;
            }
            date
        } else if time >= self.start {
            date.succ_opt()?
        } else if time < self.end {
            date
        } else {
            return None;
        };
        // In the second pass of an hour repeated by a DST change, the window's end (its
        // first pass, docs/api.md §11) is already behind: the moment is outside.
        self.instant(end_date, self.end).filter(|&end| end > at)
    }

    /// The first moment at or after `at` (outside a window) at which a window starts.
    fn next_start(&self, at: i64) -> Option<i64> {
        let local = self.local(at)?;
        let date = local.date_naive();
        let date = if local.time() < self.start {
            date
        } else {
            date.succ_opt()?
        };
        self.instant(date, self.start)
    }

    /// When a line that starts sending at `start` and needs `work` ms of sending time
    /// (the cards ahead times `send_delay`) reaches its card, skipping every window on
    /// the way: the `eta` with quiet hours.
    pub fn eta(&self, start: i64, work: i64) -> i64 {
        let mut t = start;
        let mut left = work.max(0);
        // One turn per window crossed; a line years long is not worth more precision.
        for _ in 0..1000 {
            if let Some(end) = self.end_if_inside(t) {
                t = end;
            }
            let Some(next) = self.next_start(t) else {
                break;
            };
            if t.saturating_add(left) < next {
                break;
            }
            left -= next - t;
            t = next;
        }
        t.saturating_add(left)
    }

    fn local(&self, at: i64) -> Option<DateTime<Tz>> {
        DateTime::from_timestamp_millis(at).map(|utc| utc.with_timezone(&self.zone))
    }

    /// The instant of a local date and time: the earlier of two, or the first moment
    /// after a gap.
    fn instant(&self, date: NaiveDate, time: NaiveTime) -> Option<i64> {
        let mut naive = NaiveDateTime::new(date, time);
        // DST gaps are an hour at most anywhere (30 minutes in a few zones).
        for _ in 0..=8 * 60 {
            if let Some(t) = self.zone.from_local_datetime(&naive).earliest() {
                return Some(t.timestamp_millis());
            }
            naive += Duration::minutes(1);
            naive = naive.with_second(0)?;
        }
        None
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{} {}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M"),
            self.zone.name()
        )
    }
}

impl fmt::Debug for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QuietHours({self})")
    }
}

#[cfg(test)]
#[path = "quiet_tests.rs"]
mod tests;
