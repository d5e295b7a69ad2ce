//! Wall-clock time as Unix milliseconds, and its RFC 3339 form for the API.

use chrono::{DateTime, SecondsFormat, Utc};

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
    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(
            super::format_ms(1_764_064_800_120),
            "2025-11-25T10:00:00.120Z"
        );
        assert_eq!(super::format_time_of_day(1_764_064_931_000), "10:02:11");
    }
}
