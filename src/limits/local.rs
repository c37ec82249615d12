//! Limits kept in this process: token buckets per route and caller (governor's keyed GCRA),
//! and counters of requests and streams in flight.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::{Ask, BucketRef, LimitKind, LimitRefusal, Rate, RouteLimits};

/// Checks between two looks at a bucket's size (`len` visits every shard).
const SWEEP_EVERY: u64 = 1024;

/// One keyed bucket with its quota, so a reload can tell whether it may be kept.
struct Bucket {
    rate: Rate,
    limiter: DefaultKeyedRateLimiter<String>,
    /// Checks since start; every [`SWEEP_EVERY`]th looks at the number of keys.
    checks: AtomicU64,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        // Validation keeps rates positive and finite and bursts at least 1.
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Bucket {
            rate,
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes a token for `key`, or says how long until one is back.
    fn take(&self, key: &String, max_keys: usize) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(max_keys);
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets callers whose bucket is full again (they look exactly like new ones), when
    /// more than `max_keys` are tracked.
    fn sweep(&self, max_keys: usize) {
        if self.limiter.len() <= max_keys {
            return;
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let left = self.limiter.len();
        if left > max_keys {
            tracing::warn!(
                tracked = left,
                max = max_keys,
                "more callers are being rate limited than limits.max_tracked_keys; memory grows with them"
            );
        }
    }
}

/// The local buckets of one route: its request rate and each tool rate.
#[derive(Default)]
struct RouteBuckets {
    requests: Option<Arc<Bucket>>,
    /// In the order of the route's tool rates, with the pattern that names each bucket.
    tools: Vec<(String, Arc<Bucket>)>,
}

/// The local buckets of every route, in the order of [`super::Limits`]'s routes.
#[derive(Default)]
pub(crate) struct LocalBuckets {
    routes: Vec<(Arc<str>, RouteBuckets)>,
    max_keys: usize,
}

impl LocalBuckets {
    /// Buckets for `routes`, reusing those of `previous` with the same route and quota.
    pub(crate) fn build(
        routes: &[(Arc<str>, RouteLimits)],
        max_keys: usize,
        previous: Option<&LocalBuckets>,
    ) -> LocalBuckets {
        // A bucket is kept by route and pattern (not position: a reload may reorder the
        // tools) when its quota is unchanged.
        let reuse = |path: &str, tool: Option<&str>, rate: Rate| -> Arc<Bucket> {
            let old = previous
                .and_then(|p| p.routes.iter().find(|(p, _)| &**p == path))
                .and_then(|(_, b)| match tool {
                    None => b.requests.clone(),
                    Some(pattern) => b
                        .tools
                        .iter()
                        .find(|(p, _)| p == pattern)
                        .map(|(_, b)| b.clone()),
                });
            match old {
                Some(b) if b.rate == rate => b,
                _ => Arc::new(Bucket::new(rate)),
            }
        };
        let routes = routes
            .iter()
            .map(|(path, l)| {
                let buckets = RouteBuckets {
                    requests: l.requests.map(|r| reuse(path, None, r)),
                    tools: l
                        .tools
                        .iter()
                        .map(|t| {
                            let pattern = t.pattern.as_str();
                            (pattern.to_owned(), reuse(path, Some(pattern), t.rate))
                        })
                        .collect(),
                };
                (path.clone(), buckets)
            })
            .collect();
        LocalBuckets { routes, max_keys }
    }

    /// Takes one token from each of `buckets` for the caller, or refuses with the longest
    /// wait among those that are empty.
    pub(crate) fn check(
        &self,
        ask: Ask<'_>,
        buckets: &[BucketRef<'_>],
    ) -> Result<(), LimitRefusal> {
        let Some((_, route)) = self.routes.iter().find(|(p, _)| **p == **ask.route) else {
            return Ok(());
        };
        let key = ask.key.to_owned();
        let mut refusal: Option<LimitRefusal> = None;
        for b in buckets {
            let bucket = match b.tool {
                None => route.requests.as_ref(),
                Some(i) => route.tools.get(i).map(|(_, b)| b),
            };
            let Some(bucket) = bucket else { continue };
            if let Err(wait) = bucket.take(&key, self.max_keys)
                && refusal.as_ref().is_none_or(|r| r.retry_after < wait)
            {
                refusal = Some(refused(b, wait));
            }
        }
        refusal.map_or(Ok(()), Err)
    }
}

/// The refusal for an empty bucket.
pub(crate) fn refused(b: &BucketRef<'_>, wait: Duration) -> LimitRefusal {
    LimitRefusal {
        kind: if b.tool.is_some() {
            LimitKind::ToolRate
        } else {
            LimitKind::Rate
        },
        retry_after: wait,
        tool: b.tool_name.map(str::to_owned),
    }
}

/// In-flight requests and open streams per route and caller. An entry lives while its caller
/// has something in flight, so the map is as large as the set of busy callers.
#[derive(Default)]
pub(crate) struct Counters {
    slots: DashMap<(Arc<str>, String), Slot>,
}

#[derive(Default, Clone, Copy)]
struct Slot {
    requests: usize,
    streams: usize,
}

impl Counters {
    /// Counts the request (and its stream), or refuses it when the caller is at a cap.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        ask: Ask<'_>,
        limits: &RouteLimits,
    ) -> Result<Permits, LimitRefusal> {
        let counts_stream = ask.stream && limits.max_open_streams.is_some();
        if limits.max_concurrent_requests.is_none() && !counts_stream {
            return Ok(Permits::default());
        }
        let key = (ask.route.clone(), ask.key.to_owned());
        let mut slot = self.slots.entry(key.clone()).or_default();
        if limits
            .max_concurrent_requests
            .is_some_and(|max| slot.requests >= max)
        {
            return Err(busy(LimitKind::Concurrency, slot, &self.slots, &key));
        }
        if counts_stream
            && limits
                .max_open_streams
                .is_some_and(|max| slot.streams >= max)
        {
            return Err(busy(LimitKind::Streams, slot, &self.slots, &key));
        }
        slot.requests += 1;
        slot.streams += usize::from(counts_stream);
        drop(slot);
        Ok(Permits {
            held: Some(Held {
                counters: self.clone(),
                key,
                stream: counts_stream,
            }),
        })
    }

    /// Callers with something in flight (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// The refusal of a caller at a cap; its entry is removed if it was only just made.
fn busy(
    kind: LimitKind,
    slot: dashmap::mapref::one::RefMut<'_, (Arc<str>, String), Slot>,
    slots: &DashMap<(Arc<str>, String), Slot>,
    key: &(Arc<str>, String),
) -> LimitRefusal {
    let empty = slot.requests == 0 && slot.streams == 0;
    drop(slot);
    if empty {
        slots.remove_if(key, |_, s| s.requests == 0 && s.streams == 0);
    }
    LimitRefusal {
        kind,
        // A slot frees when a request ends; a second is a fair guess that stops tight loops.
        retry_after: Duration::from_secs(1),
        tool: None,
    }
}

/// The slots a request holds; given back when dropped (when its answer has ended).
#[derive(Default)]
pub struct Permits {
    held: Option<Held>,
}

struct Held {
    counters: Arc<Counters>,
    key: (Arc<str>, String),
    stream: bool,
}

impl Permits {
    /// Whether it holds no slot (nothing to give back).
    pub fn is_empty(&self) -> bool {
        self.held.is_none()
    }
}

impl std::fmt::Debug for Permits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permits")
            .field("held", &self.held.is_some())
            .finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let remove = match self.counters.slots.get_mut(&self.key) {
            Some(mut slot) => {
                slot.requests = slot.requests.saturating_sub(1);
                if self.stream {
                    slot.streams = slot.streams.saturating_sub(1);
                }
                slot.requests == 0 && slot.streams == 0
            }
            None => false,
        };
        if remove {
            self.counters
                .slots
                .remove_if(&self.key, |_, s| s.requests == 0 && s.streams == 0);
        }
    }
}
