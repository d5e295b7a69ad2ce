//! Time, from one place: the wall clock (Unix milliseconds) for what is stored and
//! shown, the monotonic clock for every wait (pacing, back-off, holds), and a manual
//! clock for tests that step either one.
//!
//! Why two clocks: the wall clock can be stepped (NTP, an operator, a VM resumed),
//! and a wait measured on it would stall a line when it goes back or cut a wait short
//! when it jumps ahead. The monotonic clock only moves forward at the pace of real
//! time, but means nothing across a restart, so persisted times stay wall times and
//! are clamped when read back (see [`remaining_ms`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};

/// The two clocks a drain and the expiry task read.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time, Unix milliseconds: stored in the database and shown.
    fn wall_ms(&self) -> i64;
    /// Monotonic milliseconds since an arbitrary origin: for every wait.
    fn mono_ms(&self) -> i64;
    /// Milliseconds since boot, counting the time the machine or the process was
    /// suspended (CLOCK_BOOTTIME): for the drain lease's deadline, which must pass
    /// while a VM is paused (docs/api.md §10).
    fn boot_ms(&self) -> i64;
}

/// A clock to share between tasks.
pub type SharedClock = Arc<dyn Clock>;

/// The real clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> i64 {
        now_ms()
    }
    fn mono_ms(&self) -> i64 {
        duration_ms(self.origin.elapsed())
    }
    fn boot_ms(&self) -> i64 {
        boottime_ms()
    }
}

/// CLOCK_BOOTTIME in milliseconds: monotonic, and it goes on counting while the
/// system is suspended (CLOCK_MONOTONIC stops then).
pub fn boottime_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_BOOTTIME is always there on Linux");
    // time_t and c_long are i64 on the 64-bit Linux targets this builds for.
    ts.tv_sec.saturating_mul(1000) + ts.tv_nsec / 1_000_000
}

/// The real clocks, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock {
        origin: Instant::now(),
    })
}

/// A clock that moves only when told to, for tests: `advance` moves every clock as
/// real time passing would; `step_wall` moves the wall clock alone, as NTP or an
/// operator would; `suspend` moves the boot clock alone, as a paused VM would.
#[derive(Debug)]
pub struct ManualClock {
    wall: AtomicI64,
    mono: AtomicI64,
    boot: AtomicI64,
}

impl ManualClock {
    pub fn new(wall_ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            wall: AtomicI64::new(wall_ms),
            mono: AtomicI64::new(0),
            boot: AtomicI64::new(0),
        })
    }
    pub fn advance(&self, d: std::time::Duration) {
        self.wall.fetch_add(duration_ms(d), Ordering::SeqCst);
        self.mono.fetch_add(duration_ms(d), Ordering::SeqCst);
        self.boot.fetch_add(duration_ms(d), Ordering::SeqCst);
    }
    /// Time passes while suspended: the wall and boot clocks move, not the monotonic.
    pub fn suspend(&self, d: std::time::Duration) {
        self.wall.fetch_add(duration_ms(d), Ordering::SeqCst);
        self.boot.fetch_add(duration_ms(d), Ordering::SeqCst);
    }
    pub fn step_wall(&self, delta_ms: i64) {
        self.wall.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> i64 {
        self.wall.load(Ordering::SeqCst)
    }
    fn mono_ms(&self) -> i64 {
        self.mono.load(Ordering::SeqCst)
    }
    fn boot_ms(&self) -> i64 {
        self.boot.load(Ordering::SeqCst)
    }
}

/// "Now" for expiry: the wall clock, but never ahead of the wall time at start plus
/// the real (monotonic) time since. A wall clock stepped forward therefore never
/// expires a card before it has waited `max_age` of real time; one stepped back only
/// makes cards expire later.
#[derive(Debug, Clone)]
pub struct ExpiryClock {
    clock: SharedClock,
    wall_at_start: i64,
    mono_at_start: i64,
}

impl ExpiryClock {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            wall_at_start: clock.wall_ms(),
            mono_at_start: clock.mono_ms(),
            clock,
        }
    }

    pub fn now_ms(&self) -> i64 {
        let real = self
            .wall_at_start
            .saturating_add(self.clock.mono_ms() - self.mono_at_start);
        self.clock.wall_ms().min(real)
    }
}

/// How much of a persisted wall-time deadline is left, as a wait that never exceeds
/// `longest`: a wall clock stepped back since the deadline was written cannot
/// stretch the wait past what it was when it was set.
pub fn remaining_ms(deadline_wall: i64, wall_now: i64, longest: i64) -> i64 {
    deadline_wall
        .saturating_sub(wall_now)
        .clamp(0, longest.max(0))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `2026-11-24T10:00:00.000Z`
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `10:02:11` (UTC), for short human texts such as `waitingFor`.
pub fn format_time_of_day(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%H:%M:%S")
        .to_string()
}

/// A duration as milliseconds, saturating.
pub fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_boot_clock_counts_a_suspension_the_monotonic_clock_does_not() {
        let clock = ManualClock::new(0);
        clock.advance(Duration::from_secs(1));
        clock.suspend(Duration::from_secs(30));
        assert_eq!((clock.mono_ms(), clock.boot_ms()), (1_000, 31_000));
        let a = boottime_ms();
        assert!(a > 0 && boottime_ms() >= a);
    }

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(
            super::format_ms(1_764_064_800_120),
            "2025-11-25T10:00:00.120Z"
        );
        assert_eq!(super::format_time_of_day(1_764_064_931_000), "10:02:11");
    }

    #[test]
    fn expiry_never_runs_ahead_of_real_time_when_the_wall_clock_jumps_forward() {
        let clock = ManualClock::new(1_000_000);
        let expiry = ExpiryClock::new(clock.clone());
        clock.advance(Duration::from_secs(10));
        assert_eq!(expiry.now_ms(), 1_010_000);
        // A day's jump forward: expiry still sees 10 s of real time.
        clock.step_wall(86_400_000);
        assert_eq!(expiry.now_ms(), 1_010_000);
        clock.advance(Duration::from_secs(5));
        assert_eq!(expiry.now_ms(), 1_015_000);
        // A step back is followed: cards only expire later.
        clock.step_wall(-2 * 86_400_000);
        assert_eq!(expiry.now_ms(), 1_015_000 - 86_400_000);
    }

    #[test]
    fn a_persisted_deadline_never_waits_longer_than_it_was_set_for() {
        // Set at wall 1000 for 5 s; the clock then went back an hour.
        assert_eq!(remaining_ms(6_000, 1_000 - 3_600_000, 5_000), 5_000);
        assert_eq!(remaining_ms(6_000, 3_000, 5_000), 3_000);
        // Forward past it: nothing left.
        assert_eq!(remaining_ms(6_000, 9_000_000, 5_000), 0);
    }
}
