//! The real API's per-instance request limits, one `governor` limiter per
//! (instance, method): `sendContact` 50 per second; `getStateInstance`, `getSettings`,
//! `lastOutgoingMessages`, `showMessagesQueue` 1 per second each.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Requests per second a method allows per instance; `None` = unlimited here.
fn per_second(method: &str) -> Option<NonZeroU32> {
    let n = match method {
        "sendContact" => 50,
        "getStateInstance" | "getSettings" | "lastOutgoingMessages" | "showMessagesQueue" => 1,
        _ => return None,
    };
    NonZeroU32::new(n)
}

/// The limiters, created on first use.
#[derive(Default)]
pub struct Limits {
    limiters: HashMap<(String, String), DefaultDirectRateLimiter>,
}

impl Limits {
    /// `Ok` if the request may go ahead, else how long until it would.
    pub fn check(&mut self, instance: &str, method: &str) -> Result<(), Duration> {
        let Some(rate) = per_second(method) else {
            return Ok(());
        };
        let limiter = self
            .limiters
            .entry((instance.to_owned(), method.to_owned()))
            .or_insert_with(|| RateLimiter::direct(Quota::per_second(rate)));
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
