//! The health of one upstream endpoint: its circuit breaker (which is also its passive outlier
//! ejection), the verdict of its active health check, and the counters the snapshot shows.
//!
//! Passive ejection and the breaker are one state machine, so there is one answer to "may a
//! request go there":
//!
//! ```text
//!            N consecutive failures                 open period over
//!   Closed ─────────────────────────▶ Open ──────────────────────────▶ HalfOpen
//!     ▲                               ▲  (ejected: round-robin skips it,   │ │
//!     │                               │   pinned sessions get 404)         │ │
//!     │                               └────── a probe request fails ───────┘ │
//!     └─────────────────────────── a probe request succeeds ─────────────────┘
//! ```
//!
//! A failure is a connect failure, a response-head timeout, an answer that is not HTTP, a 5xx
//! head, or a body that died (reported after the head by [`EndpointHealth::report_body_failure`]).
//! Every opening without a close in between doubles the open period, up to `max_open_for`.
//! Half-open lets `half_open_requests` real requests through at once; the first result decides.
//!
//! Everything on the request path is an atomic: no lock is taken per request. Transitions are
//! decided by compare-and-swap, so exactly one request logs each of them.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Settings of the circuit breaker of every endpoint of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit; `0` turns the breaker (and ejection) off.
    pub failures: u32,
    /// First open period; each reopening without a close in between doubles it.
    pub open_for: Duration,
    /// Longest open period.
    pub max_open_for: Duration,
    /// Requests let through at once while half-open.
    pub half_open_requests: u32,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failures: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_requests: 1,
        }
    }
}

/// State of an endpoint's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// Ejected: no request goes there until the open period ends.
    Open,
    /// A bounded number of probe requests go there; the first result closes or reopens it.
    HalfOpen,
}

impl CircuitState {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What went wrong with a request to an endpoint, for the transition log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// TCP connect or TLS handshake failed.
    Connect,
    /// No response head in time.
    Timeout,
    /// The connection failed after the request was sent, or the answer was not HTTP.
    Broken,
    /// The upstream answered with a 5xx status.
    Status(u16),
    /// The answer's body died after its head.
    Body,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect => f.write_str("connect failed"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Broken => f.write_str("connection broken or answer not HTTP"),
            Failure::Status(s) => write!(f, "answered {s}"),
            Failure::Body => f.write_str("answer body failed"),
        }
    }
}

/// Milliseconds since the first call in this process: a monotonic clock an atomic can hold.
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Health of one endpoint, shared by every route and every gateway snapshot that names its URL
/// (see [`super::registry`]): it survives config reloads.
#[derive(Debug)]
pub struct EndpointHealth {
    /// The endpoint's URL, for log lines (never for client-facing bodies).
    uri: String,
    state: AtomicU8,
    /// Consecutive failures since the last success.
    failures: AtomicU32,
    /// Consecutive answers that failed in their body since the last one that ended well. Kept
    /// apart from `failures` because every such answer first had a good head, which resets
    /// that count: a backend that always dies mid-answer would otherwise never be ejected.
    body_failures: AtomicU32,
    /// End of the open period, in [`now_ms`] time.
    open_until: AtomicU64,
    /// Openings since the last close: drives the doubling of the open period.
    reopens: AtomicU32,
    /// Half-open probe requests in flight.
    probes: AtomicU32,
    /// Openings since start.
    ejections: AtomicU64,
    /// Verdict of the active health check (`true` while checks are off).
    healthy: AtomicBool,
    check_passes: AtomicU32,
    check_fails: AtomicU32,
    /// Retries made after a safe failure here.
    pub(crate) retries: AtomicU64,
    /// Retries refused by the route's retry budget after a failure here.
    pub(crate) budget_exhausted: AtomicU64,
}

/// A read-only view of one endpoint's health, for metrics and `/readyz` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSnapshot {
    /// The endpoint's URL.
    pub uri: String,
    /// Verdict of the active health check (`true` when checks are off).
    pub healthy: bool,
    /// Whether sessionless traffic avoids it now (unhealthy, or circuit open).
    pub ejected: bool,
    /// Circuit state.
    pub circuit: CircuitState,
    /// Consecutive failures since the last success.
    pub consecutive_failures: u32,
    /// Times the circuit opened since start.
    pub ejections: u64,
    /// Retries made after a safe failure here.
    pub retries: u64,
    /// Retries refused by the retry budget after a failure here.
    pub retry_budget_exhausted: u64,
}

impl EndpointHealth {
    /// A fresh, healthy endpoint with a closed circuit.
    pub fn new(uri: &http::Uri) -> Self {
        EndpointHealth {
            uri: uri.to_string(),
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            body_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            reopens: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            check_passes: AtomicU32::new(0),
            check_fails: AtomicU32::new(0),
            retries: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
        }
    }

    /// The endpoint's URL.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Circuit state as last decided (an open period that has ended still reads `Open` until
    /// a request asks for admission).
    pub fn circuit(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            OPEN => CircuitState::Open,
            HALF_OPEN => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    /// Verdict of the active health check.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Time left in the open period, if the circuit is open and the period has not ended.
    fn open_left(&self) -> Option<Duration> {
        if self.circuit() != CircuitState::Open {
            return None;
        }
        let left = self
            .open_until
            .load(Ordering::Acquire)
            .saturating_sub(now_ms());
        (left > 0).then(|| Duration::from_millis(left))
    }

    /// Whether round-robin may choose it for a new, sessionless request.
    pub fn available(&self, s: &CircuitSettings) -> bool {
        self.healthy()
            && match self.circuit() {
                CircuitState::Closed => true,
                CircuitState::Open => self.open_left().is_none(),
                CircuitState::HalfOpen => {
                    self.probes.load(Ordering::Acquire) < s.half_open_requests.max(1)
                }
            }
    }

    /// Whether a session pinned here is still served: not when the endpoint is ejected (the
    /// client is told the session is gone, and starts a new one elsewhere).
    pub fn serves_sessions(&self) -> bool {
        self.healthy() && self.open_left().is_none()
    }

    /// Asks to send one request; `Err` carries how long the client should wait.
    pub fn admit(self: &Arc<Self>, s: &CircuitSettings) -> Result<Permit, Duration> {
        loop {
            match self.state.load(Ordering::Acquire) {
                OPEN => {
                    if let Some(left) = self.open_left() {
                        return Err(left);
                    }
                    if self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        tracing::info!(upstream = %self.uri, "circuit half-open: letting probe requests through");
                    }
                }
                HALF_OPEN => {
                    let before = self.probes.fetch_add(1, Ordering::AcqRel);
                    if before >= s.half_open_requests.max(1) {
                        self.release_probe();
                        // Another probe decides soon; a short wait is the honest hint.
                        return Err(Duration::from_secs(1));
                    }
                    return Ok(Permit::new(self.clone(), true));
                }
                _ => return Ok(Permit::new(self.clone(), false)),
            }
        }
    }

    fn release_probe(&self) {
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    fn on_success(&self) {
        self.failures.store(0, Ordering::Release);
        // Only a half-open circuit closes: a late success of a request admitted before the
        // circuit opened says nothing about the endpoint now.
        if self
            .state
            .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.reopens.store(0, Ordering::Release);
            tracing::info!(upstream = %self.uri, "circuit closed: endpoint back in rotation");
        }
    }

    fn on_failure(&self, s: &CircuitSettings, failure: Failure) {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        self.trip(s, failure, n);
    }

    /// Opens the circuit when `n` consecutive failures reach the threshold (or a half-open
    /// probe failed).
    fn trip(&self, s: &CircuitSettings, failure: Failure, n: u32) {
        if s.failures == 0 {
            return;
        }
        let from = match self.state.load(Ordering::Acquire) {
            HALF_OPEN => HALF_OPEN,
            CLOSED if n >= s.failures => CLOSED,
            _ => return,
        };
        // The end of the period is written before the state so no reader of `Open` sees the
        // previous period's end and half-opens at once.
        let k = self.reopens.load(Ordering::Acquire).min(16);
        let period = s
            .open_for
            .checked_mul(1u32 << k)
            .unwrap_or(s.max_open_for)
            .min(s.max_open_for);
        let until = now_ms().saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        self.open_until.store(until, Ordering::Release);
        self.probes.store(0, Ordering::Release);
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.reopens.fetch_add(1, Ordering::AcqRel);
            self.ejections.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(upstream = %self.uri, cause = %failure, consecutive_failures = n, open_for = ?period, "circuit opened: endpoint ejected");
        }
    }

    /// Reports that an answer whose head was fine failed in its body (a stream that died):
    /// counts as one failure toward the circuit.
    pub fn report_body_failure(&self, s: &CircuitSettings) {
        let n = self
            .body_failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let heads = self.failures.load(Ordering::Acquire);
        self.trip(s, Failure::Body, n.max(heads));
    }

    /// Reports that an answer's body ended well: the run of body failures is over.
    pub fn report_body_success(&self) {
        self.body_failures.store(0, Ordering::Release);
    }

    /// Records one active health-check result against the check's thresholds.
    pub(crate) fn record_check(&self, pass: bool, healthy_after: u32, unhealthy_after: u32) {
        if pass {
            self.check_fails.store(0, Ordering::Release);
            let n = self.check_passes.fetch_add(1, Ordering::AcqRel) + 1;
            if n >= healthy_after
                && self
                    .healthy
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                tracing::info!(upstream = %self.uri, passes = n, "health check passing: endpoint marked healthy");
            }
        } else {
            self.check_passes.store(0, Ordering::Release);
            let n = self.check_fails.fetch_add(1, Ordering::AcqRel) + 1;
            if n >= unhealthy_after
                && self
                    .healthy
                    .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                tracing::warn!(upstream = %self.uri, failures = n, "health check failing: endpoint marked unhealthy");
            }
        }
    }

    /// Forgets an active-check verdict (checks were turned off for it).
    pub(crate) fn clear_check(&self) {
        self.check_passes.store(0, Ordering::Release);
        self.check_fails.store(0, Ordering::Release);
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(upstream = %self.uri, "health check removed: endpoint marked healthy");
        }
    }

    /// The read-only view of this endpoint.
    pub fn snapshot(&self) -> EndpointSnapshot {
        EndpointSnapshot {
            uri: self.uri.clone(),
            healthy: self.healthy(),
            ejected: !self.serves_sessions(),
            circuit: self.circuit(),
            consecutive_failures: self.failures.load(Ordering::Acquire),
            ejections: self.ejections.load(Ordering::Acquire),
            retries: self.retries.load(Ordering::Acquire),
            retry_budget_exhausted: self.budget_exhausted.load(Ordering::Acquire),
        }
    }
}

/// Leave to send one request to an endpoint; its result is reported through it. A permit
/// dropped unreported (the client went away) frees its half-open slot and changes nothing.
#[derive(Debug)]
pub struct Permit {
    health: Arc<EndpointHealth>,
    probe: bool,
}

impl Permit {
    fn new(health: Arc<EndpointHealth>, probe: bool) -> Self {
        Permit { health, probe }
    }

    /// The upstream answered usably.
    pub fn success(self) {
        self.health.on_success();
    }

    /// The request failed in a way that counts toward the circuit.
    pub fn failure(self, s: &CircuitSettings, failure: Failure) {
        self.health.on_failure(s, failure);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe {
            self.health.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failures: 2,
            open_for: Duration::from_millis(30),
            max_open_for: Duration::from_millis(50),
            half_open_requests: 1,
        }
    }

    fn endpoint() -> Arc<EndpointHealth> {
        Arc::new(EndpointHealth::new(
            &"http://127.0.0.1:9/mcp".parse().unwrap(),
        ))
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let s = settings();
        let e = endpoint();
        e.admit(&s).unwrap().failure(&s, Failure::Connect);
        e.admit(&s).unwrap().success();
        e.admit(&s).unwrap().failure(&s, Failure::Status(500));
        assert_eq!(e.circuit(), CircuitState::Closed);
        e.admit(&s).unwrap().failure(&s, Failure::Timeout);
        assert_eq!(e.circuit(), CircuitState::Open);
        assert!(e.admit(&s).is_err(), "open circuit admits nothing");
        assert!(!e.available(&s) && !e.serves_sessions());
        assert_eq!(e.snapshot().ejections, 1);
    }

    #[test]
    fn half_open_takes_one_probe_and_closes_on_its_success() {
        let s = settings();
        let e = endpoint();
        for _ in 0..2 {
            e.admit(&s).unwrap().failure(&s, Failure::Broken);
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(e.available(&s));
        let probe = e.admit(&s).expect("probe admitted after the open period");
        assert_eq!(e.circuit(), CircuitState::HalfOpen);
        assert!(e.admit(&s).is_err(), "only one probe at a time");
        probe.success();
        assert_eq!(e.circuit(), CircuitState::Closed);
        assert!(e.admit(&s).is_ok());
    }

    #[test]
    fn a_failed_probe_reopens_and_a_dropped_one_frees_its_slot() {
        let s = settings();
        let e = endpoint();
        for _ in 0..2 {
            e.admit(&s).unwrap().failure(&s, Failure::Connect);
        }
        std::thread::sleep(Duration::from_millis(40));
        drop(e.admit(&s).expect("probe"));
        let probe = e.admit(&s).expect("slot freed by the dropped permit");
        probe.failure(&s, Failure::Connect);
        assert_eq!(e.circuit(), CircuitState::Open);
        assert_eq!(e.snapshot().ejections, 2);
    }

    #[test]
    fn zero_failures_turns_the_breaker_off() {
        let s = CircuitSettings {
            failures: 0,
            ..settings()
        };
        let e = endpoint();
        for _ in 0..10 {
            e.admit(&s).unwrap().failure(&s, Failure::Connect);
        }
        assert_eq!(e.circuit(), CircuitState::Closed);
        assert_eq!(e.snapshot().consecutive_failures, 10);
    }

    #[test]
    fn health_checks_need_their_thresholds() {
        let e = endpoint();
        e.record_check(false, 2, 2);
        assert!(e.healthy());
        e.record_check(false, 2, 2);
        assert!(!e.healthy() && !e.serves_sessions());
        e.record_check(true, 2, 2);
        assert!(!e.healthy());
        e.record_check(true, 2, 2);
        assert!(e.healthy());
    }
}
