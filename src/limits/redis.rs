//! Rate buckets in Redis, shared by every instance that uses the same server and key prefix.
//!
//! Each check is one Lua script run atomically by Redis: GCRA over all the buckets a request
//! draws from, all or nothing, on Redis's own clock (instances' clocks may disagree). Keys
//! are a hash of route, bucket and caller, so no subject or address is stored in Redis, and
//! expire when their bucket is full again.
//!
//! A check that fails or takes longer than `limits.redis_timeout` marks the store down: one
//! log line, and checks go to the `on_store_failure` fallback without touching Redis until a
//! background probe gets an answer again (one more log line).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    Ask, BucketRef, LimitRefusal, LimitsError, OnStoreFailure, RedisSettings, StoreStatus,
};

/// GCRA over `KEYS`, with `ARGV` holding each key's interval (µs) and burst. Either every
/// bucket has a token and all are taken, or none is and the answer is the longest wait and
/// the (1-based) index of the bucket that needs it. A key listed twice takes two tokens.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local wait, which = 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tats[key] or tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local allow_at = tat + interval - interval * burst
  if allow_at > now and allow_at - now > wait then
    wait, which = allow_at - now, i
  end
  tats[key] = tat + interval
end
if which > 0 then return {0, math.ceil(wait), which} end
for key, tat in pairs(tats) do
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return {1, 0, 0}
"#;

/// A Redis store with its connections and health.
pub(crate) struct RedisStore {
    settings: RedisSettings,
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    script: redis::Script,
    /// Whether checks go to Redis; cleared on a failure, set again by the probe.
    up: AtomicBool,
    fallbacks: AtomicU64,
    transitions: AtomicU64,
}

impl RedisStore {
    /// Connections to `settings.url`, opened lazily: the proxy starts (on its fallback) even
    /// when Redis is down.
    pub(crate) fn new(settings: RedisSettings) -> Result<RedisStore, LimitsError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| LimitsError::Redis(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.timeout))
            // Reconnecting is the probe's job; a check never waits for it.
            .set_number_of_retries(0);
        let pool = (0..settings.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LimitsError::Redis(e.to_string()))?;
        Ok(RedisStore {
            settings,
            pool,
            next: AtomicUsize::new(0),
            script: redis::Script::new(GCRA),
            up: AtomicBool::new(true),
            fallbacks: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        })
    }

    /// The settings it was made from.
    pub(crate) fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Takes one token from each bucket in Redis. `None`: the store is down and the caller's
    /// fallback decides.
    pub(crate) async fn check(
        self: &Arc<Self>,
        ask: Ask<'_>,
        buckets: &[BucketRef<'_>],
    ) -> Option<Result<(), LimitRefusal>> {
        if !self.up.load(Ordering::Acquire) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut invocation = self.script.prepare_invoke();
        for b in buckets {
            let interval = u64::try_from(b.rate.interval().as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            invocation
                .key(self.key(ask, b))
                .arg(interval)
                .arg(b.rate.burst);
        }
        let mut conn = self.connection();
        let answer = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<(u8, u64, usize)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((1, _, _))) => Some(Ok(())),
            Ok(Ok((_, wait_us, which))) => {
                let b = buckets.get(which.saturating_sub(1)).or(buckets.first())?;
                Some(Err(super::local::refused(
                    b,
                    std::time::Duration::from_micros(wait_us),
                )))
            }
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down("no answer within limits.redis_timeout");
                None
            }
        }
    }

    /// The store's state.
    pub(crate) fn status(&self, on_failure: OnStoreFailure) -> StoreStatus {
        StoreStatus {
            up: self.up.load(Ordering::Acquire),
            on_failure,
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
        }
    }

    /// A connection, round-robin.
    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len().max(1);
        self.pool[i].clone()
    }

    /// The Redis key of `b` for the caller: a hash, so neither subjects nor addresses reach
    /// Redis, of a fixed size whatever the label.
    fn key(&self, ask: Ask<'_>, b: &BucketRef<'_>) -> Vec<u8> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(ask.route.as_bytes());
        ctx.update(&[0]);
        match b.pattern {
            None => ctx.update(b"requests"),
            Some(pattern) => {
                ctx.update(b"tool:");
                ctx.update(pattern.as_bytes());
            }
        }
        ctx.update(&[0]);
        ctx.update(ask.key.as_bytes());
        let digest = ctx.finish();
        let mut key = Vec::with_capacity(self.settings.key_prefix.len() + 3 + 32);
        key.extend_from_slice(self.settings.key_prefix.as_bytes());
        key.extend_from_slice(b"rl:");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for byte in &digest.as_ref()[..16] {
            key.push(HEX[usize::from(byte >> 4)]);
            key.push(HEX[usize::from(byte & 0xf)]);
        }
        key
    }

    /// Marks the store down (once per outage) and starts the probe that brings it back.
    fn mark_down(self: &Arc<Self>, why: &str) {
        if self
            .up
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.transitions.fetch_add(1, Ordering::Relaxed);
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason = %why,
            "rate-limit store unreachable; limits.on_store_failure applies until it answers"
        );
        tokio::spawn(probe(Arc::downgrade(self)));
    }
}

/// Pings the store every `probe_interval` until it answers, then sends checks back to it.
/// Ends early when the store is dropped (a reload replaced it).
async fn probe(store: Weak<RedisStore>) {
    loop {
        let Some(s) = store.upgrade() else { return };
        let interval = s.settings.probe_interval;
        drop(s);
        tokio::time::sleep(interval).await;
        let Some(s) = store.upgrade() else { return };
        let mut conn = s.connection();
        let ping = tokio::time::timeout(
            s.settings.connect_timeout + s.settings.timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        if matches!(ping, Ok(Ok(_))) {
            s.up.store(true, Ordering::Release);
            s.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::info!("rate-limit store answers again; limits are shared again");
            return;
        }
    }
}
