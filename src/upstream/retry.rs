//! Safe retries: which failures may be retried, on which endpoint, after how long, and the
//! budget that keeps retries from multiplying load.
//!
//! A request is retried only when the backend cannot have seen it:
//! - the connection failed before any request byte was written (TCP connect refused or
//!   timed out, TLS handshake failed: hyper-util's `Error::is_connect`), for any method;
//! - a GET that opens a stream failed before its response head (a GET carries no call).
//!
//! Never a POST that may have reached the backend (a reset after sending, a timeout, a 5xx):
//! a `tools/call` must not run twice. Pinned requests (those naming a session) are never
//! retried elsewhere: the session lives on its endpoint. A retry goes to another available
//! endpoint, after a jittered backoff, if the route's [`RetryBudget`] allows.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Retry settings of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Most retries of one request (each on another endpoint); `0` turns retries off.
    pub max_retries: u32,
    /// Retries allowed as a share of requests over the budget window, in percent.
    pub budget_percent: u32,
    /// Retries allowed per second whatever the request count (so a quiet route can retry).
    pub min_per_second: u32,
    /// Base of the exponential backoff before a retry (full jitter).
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 2,
            budget_percent: 20,
            min_per_second: 3,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
        }
    }
}

/// Length of the budget's sliding window, in one-second slots.
const WINDOW: usize = 10;

/// Requests and retries of a route over the last [`WINDOW`] seconds. Each slot packs the
/// second it counts (high 32 bits) and its count (low 32 bits) in one atomic, so counting is a
/// lock-free compare-and-swap; a slot from an older second is restarted by whoever writes it.
#[derive(Debug, Default)]
pub struct RetryBudget {
    requests: [AtomicU64; WINDOW],
    retries: [AtomicU64; WINDOW],
}

/// Seconds since the first call in this process, starting at 1 so that a zeroed slot is
/// never mistaken for a current one.
fn now_secs() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_secs() + 1
}

fn bump(slots: &[AtomicU64; WINDOW], now: u64) {
    let slot = &slots[(now % WINDOW as u64) as usize];
    let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(if v >> 32 == now {
            v.saturating_add(1)
        } else {
            (now << 32) | 1
        })
    });
}

fn sum(slots: &[AtomicU64; WINDOW], now: u64) -> u64 {
    slots
        .iter()
        .map(|s| s.load(Ordering::Acquire))
        .filter(|v| now.saturating_sub(v >> 32) < WINDOW as u64)
        .map(|v| v & 0xffff_ffff)
        .sum()
}

impl RetryBudget {
    /// Counts one request (not its retries) toward the share retries may take.
    pub fn record_request(&self) {
        bump(&self.requests, now_secs());
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_withdraw(&self, s: &RetrySettings) -> bool {
        let now = now_secs();
        let allowed = u64::from(s.min_per_second) * WINDOW as u64
            + sum(&self.requests, now) * u64::from(s.budget_percent) / 100;
        // Check and count are two steps: concurrent retries may overdraw by a few, which is
        // the price of not locking.
        if sum(&self.retries, now) >= allowed {
            return false;
        }
        bump(&self.retries, now);
        true
    }
}

/// The wait before retry number `attempt` (0 for the first): uniformly random up to
/// `backoff * 2^attempt`, capped, so retries of many clients do not arrive together.
pub fn backoff(s: &RetrySettings, attempt: u32) -> Duration {
    let cap = s
        .backoff
        .checked_mul(1u32 << attempt.min(16))
        .unwrap_or(s.max_backoff)
        .min(s.max_backoff);
    let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    if cap_us == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::random_range(0..=cap_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_the_minimum_then_a_share_of_requests() {
        let s = RetrySettings {
            min_per_second: 1,
            budget_percent: 20,
            ..RetrySettings::default()
        };
        let b = RetryBudget::default();
        // 1 per second over a 10 s window.
        for _ in 0..10 {
            assert!(b.try_withdraw(&s));
        }
        assert!(!b.try_withdraw(&s), "minimum used up");
        for _ in 0..50 {
            b.record_request();
        }
        // 20 % of 50 requests: 10 more.
        for _ in 0..10 {
            assert!(b.try_withdraw(&s));
        }
        assert!(!b.try_withdraw(&s), "share used up");
    }

    #[test]
    fn backoff_is_capped() {
        let s = RetrySettings::default();
        for attempt in 0..40 {
            assert!(backoff(&s, attempt) <= s.max_backoff);
        }
        let none = RetrySettings {
            backoff: Duration::ZERO,
            ..s
        };
        assert_eq!(backoff(&none, 3), Duration::ZERO);
    }
}
