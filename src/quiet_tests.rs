//! The window arithmetic of quiet hours, on a manual clock: across midnight, across
//! both DST changes, and the `eta` that skips windows.

use std::time::Duration;

use super::*;
use crate::clock::{Clock, ManualClock};

/// Unix ms of a UTC time written as RFC 3339.
fn utc(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

#[test]
fn a_window_across_midnight_holds_from_its_start_to_the_next_mornings_end() {
    // Moscow is UTC+3 all year.
    let quiet = QuietHours::parse("22:00-08:00", "Europe/Moscow").unwrap();
    let clock = ManualClock::new(utc("2026-01-10T18:59:00Z")); // 21:59 in Moscow
    assert_eq!(quiet.end_if_inside(clock.wall_ms()), None);
    clock.advance(Duration::from_secs(60)); // 22:00
    assert_eq!(
        quiet.end_if_inside(clock.wall_ms()),
        Some(utc("2026-01-11T05:00:00Z"))
    );
    clock.advance(Duration::from_secs(5 * 3600)); // 03:00, after midnight
    assert_eq!(
        quiet.end_if_inside(clock.wall_ms()),
        Some(utc("2026-01-11T05:00:00Z"))
    );
    clock.advance(Duration::from_secs(5 * 3600 - 1)); // 07:59:59
    assert_eq!(
        quiet.end_if_inside(clock.wall_ms()),
        Some(utc("2026-01-11T05:00:00Z"))
    );
    clock.advance(Duration::from_secs(1)); // 08:00: over
    assert_eq!(quiet.end_if_inside(clock.wall_ms()), None);
}

#[test]
fn a_window_within_one_day_holds_only_inside_it() {
    let quiet = QuietHours::parse("13:00-14:30", "UTC").unwrap();
    assert_eq!(quiet.end_if_inside(utc("2026-05-01T12:59:59Z")), None);
    assert_eq!(
        quiet.end_if_inside(utc("2026-05-01T13:00:00Z")),
        Some(utc("2026-05-01T14:30:00Z"))
    );
    assert_eq!(quiet.end_if_inside(utc("2026-05-01T14:30:00Z")), None);
}

#[test]
fn the_night_dst_starts_is_an_hour_shorter() {
    // Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST.
    let quiet = QuietHours::parse("22:00-08:00", "Europe/Berlin").unwrap();
    let clock = ManualClock::new(utc("2026-03-28T21:00:00Z")); // 22:00 CET
    let end = quiet.end_if_inside(clock.wall_ms()).unwrap();
    assert_eq!(end, utc("2026-03-29T06:00:00Z"), "08:00 CEST");
    assert_eq!(end - clock.wall_ms(), 9 * 3_600_000, "nine hours, not ten");
    clock.advance(Duration::from_secs(9 * 3600));
    assert_eq!(quiet.end_if_inside(clock.wall_ms()), None);
}

#[test]
fn a_window_that_ends_in_the_skipped_hour_ends_when_the_gap_does() {
    // 02:30 does not exist in Berlin on 2026-03-29: the window ends at 03:00 CEST.
    let quiet = QuietHours::parse("01:30-02:30", "Europe/Berlin").unwrap();
    let clock = ManualClock::new(utc("2026-03-29T00:45:00Z")); // 01:45 CET
    assert_eq!(
        quiet.end_if_inside(clock.wall_ms()),
        Some(utc("2026-03-29T01:00:00Z"))
    );
    clock.advance(Duration::from_secs(15 * 60)); // 03:00 CEST
    assert_eq!(quiet.end_if_inside(clock.wall_ms()), None);
}

#[test]
fn the_repeated_hour_when_dst_ends_uses_the_first_pass() {
    // Berlin: 2026-10-25 03:00 CEST goes back to 02:00 CET; 02:15-02:45 happens twice.
    let quiet = QuietHours::parse("02:15-02:45", "Europe/Berlin").unwrap();
    let clock = ManualClock::new(utc("2026-10-25T00:20:00Z")); // 02:20 CEST
    assert_eq!(
        quiet.end_if_inside(clock.wall_ms()),
        Some(utc("2026-10-25T00:45:00Z"))
    );
    // The second pass of 02:20 (CET): the window's end is behind, so the moment is
    // outside it, not a window that ends a millisecond from now (the drain would spin
    // through the whole repeated half hour).
    clock.advance(Duration::from_secs(3600));
    assert_eq!(clock.wall_ms(), utc("2026-10-25T01:20:00Z"));
    assert_eq!(quiet.end_if_inside(clock.wall_ms()), None);
    // The night after the change: 22:00-08:00 is eleven hours long.
    let night = QuietHours::parse("22:00-08:00", "Europe/Berlin").unwrap();
    let start = utc("2026-10-24T20:00:00Z"); // 22:00 CEST
    assert_eq!(
        night.end_if_inside(start),
        Some(utc("2026-10-25T07:00:00Z"))
    );
}

#[test]
fn eta_skips_every_window_on_the_way() {
    let quiet = QuietHours::parse("22:00-08:00", "UTC").unwrap();
    // Outside any window and short: unchanged.
    let start = utc("2026-05-01T10:00:00Z");
    assert_eq!(quiet.eta(start, 3_600_000), start + 3_600_000);
    // Two hours of sends from 21:00: one before the window, one after it.
    let start = utc("2026-05-01T21:00:00Z");
    assert_eq!(quiet.eta(start, 2 * 3_600_000), utc("2026-05-02T09:00:00Z"));
    // Starting inside a window: from its end.
    assert_eq!(
        quiet.eta(utc("2026-05-01T23:00:00Z"), 0),
        utc("2026-05-02T08:00:00Z")
    );
    // 48 h of sends at 14 h a day cross three windows: 48 h + 3 × 10 h.
    let start = utc("2026-05-01T08:00:00Z");
    assert_eq!(
        quiet.eta(start, 48 * 3_600_000),
        utc("2026-05-04T14:00:00Z")
    );
}

#[test]
fn bad_windows_and_zones_are_refused_and_named() {
    for window in [
        "22:00",
        "25:00-08:00",
        "22:00-08:60",
        "08:00-08:00",
        "ten-eight",
    ] {
        assert_eq!(
            QuietHours::parse(window, "UTC"),
            Err(QuietError::Window(window.to_string())),
            "{window}"
        );
    }
    assert_eq!(
        QuietHours::parse("22:00-08:00", "Mars/Olympus"),
        Err(QuietError::Zone("Mars/Olympus".to_string()))
    );
    let ok = QuietHours::parse(" 22:00-08:00 ", "Europe/Moscow").unwrap();
    assert_eq!(ok.to_string(), "22:00-08:00 Europe/Moscow");
}
