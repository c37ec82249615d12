//! A bounded cache of verified JWTs, so a caller's token is verified once rather than on every
//! request (issue 12: the P-256 signature check and the two JSON parses were a quarter of the
//! CPU of an authenticated request).
//!
//! What is cached is exactly what a full validation proved: a token (with the resource it was
//! validated for) maps to the claims its issuer vouched for. An entry is used only while
//! 1. the clock is before the token's `exp` plus the issuer's leeway, the same instant a full
//!    validation would start refusing it (`nbf` needs no check: it was past when the entry was
//!    made and stays past);
//! 2. the issuer's key set is the one it was verified against: any change of the keys (a JWKS
//!    refetch that changed them, a reload of key files) bumps the store's generation and
//!    retires every entry verified before it, so a key removed at the identity provider stops
//!    admitting its tokens as soon as the proxy sees the removal;
//! 3. the route accepts the issuer (checked by the caller on every hit).
//!
//! Entries are keyed by SHA-256 of the token and the resource: the cache never holds a token,
//! and a lookup that collides would need a SHA-256 collision. Refusals are never cached, so a
//! flood of bad tokens costs what it costs without the cache and cannot evict good entries
//! faster than valid tokens can. The map is sharded behind short mutexes: a hit holds one for
//! a hash probe and an `Arc` clone.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::HeaderValue;

use super::identity::Principal;
use super::jwks::KeyStore;
use super::jwt::Claims;

/// Default bound on cached tokens (`auth.token_cache_entries`).
pub const DEFAULT_ENTRIES: usize = 10_000;
/// Shards of the map; a power of two. More than the cores of any machine this runs on, so two
/// requests rarely wait on one lock.
const SHARDS: usize = 16;

/// SHA-256 of the token and resource.
type Key = [u8; 32];

/// A verified token: its claims, and what every request of it needs made from them, once.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The claims, with the organisation and backend subject the issuer vouched for.
    pub claims: Claims,
    /// `<iss>#<sub>` (see [`crate::auth::identity`]).
    pub label: String,
    /// The values of the identity headers sent upstream.
    pub headers: TokenHeaders,
    /// What sessions of this token are bound to when it is not bound to a certificate.
    pub binding: crate::session::PrincipalHash,
}

/// Values of the identity headers of a token (`None`: the claim is absent, or cannot be a
/// header value, and the header is not sent).
#[derive(Debug, Default)]
pub struct TokenHeaders {
    /// `<prefix>issuer`: `iss`.
    pub issuer: Option<HeaderValue>,
    /// `<prefix>subject`: the subject backends are shown.
    pub subject: Option<HeaderValue>,
    /// `<prefix>client-id`.
    pub client_id: Option<HeaderValue>,
    /// `<prefix>scopes`: space-separated.
    pub scopes: Option<HeaderValue>,
}

impl VerifiedToken {
    /// Wraps `claims`, computing the label and header values once.
    pub fn new(claims: Claims) -> Self {
        let label = Principal {
            claims: Some(&claims),
            ..Principal::default()
        }
        .label();
        let value = |v: &str| HeaderValue::from_str(v).ok();
        let scopes: Vec<&str> = claims.scopes.iter().map(String::as_str).collect();
        let headers = TokenHeaders {
            issuer: value(&claims.issuer),
            subject: claims.backend_subject.as_deref().and_then(value),
            client_id: claims.client_id.as_deref().and_then(value),
            scopes: value(&scopes.join(" ")),
        };
        let binding = crate::session::principal_hash(
            Some(&claims.issuer),
            claims.subject.as_deref().or(claims.client_id.as_deref()),
            None,
        );
        VerifiedToken {
            claims,
            label,
            headers,
            binding,
        }
    }
}

struct Entry {
    token: Arc<VerifiedToken>,
    /// Unix seconds after which a full validation would refuse the token (`exp` + leeway).
    valid_until: f64,
    keys: KeyStore,
    /// `keys.generation()` read before the token was verified.
    generation: u64,
}

impl Entry {
    fn usable(&self, now: f64) -> bool {
        now <= self.valid_until && self.keys.generation() == self.generation
    }
}

/// The key is already a uniform hash: its first eight bytes are the map's hash, no SipHash over
/// attacker-chosen input needed (choosing colliding keys would mean choosing SHA-256 outputs).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as a length prefix (write_usize) then the bytes.
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn write_usize(&mut self, _: usize) {}
}

type Shard = HashMap<Key, Entry, BuildHasherDefault<DigestHasher>>;

/// Figures for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCacheStatus {
    /// Tokens cached now (some may be past use, dropped when next seen or when room is needed).
    pub entries: usize,
    /// The bound.
    pub capacity: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to verify the token.
    pub misses: u64,
    /// Entries dropped to make room for newer ones.
    pub evictions: u64,
}

/// The cache; shared by every route of one configuration (rebuilt, empty, on reload).
pub struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    capacity: usize,
    // Relaxed counters: figures for metrics, never used to decide anything.
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Where a token's entry lives: computed once per request, used for the lookup and the insert.
#[derive(Clone, Copy)]
pub struct Slot(Key);

impl TokenCache {
    /// A cache of at most `capacity` tokens; `None` when `capacity` is 0 (caching off).
    pub fn new(capacity: usize) -> Option<TokenCache> {
        if capacity == 0 {
            return None;
        }
        let per_shard = capacity.div_ceil(SHARDS);
        Some(TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    /// The slot of `token` validated for `resource`.
    pub fn slot(token: &str, resource: &str) -> Slot {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(token.as_bytes());
        // A separator no token contains, so (token, resource) pairs never run together.
        ctx.update(b" ");
        ctx.update(resource.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        Slot(key)
    }

    fn shard(&self, slot: &Slot) -> MutexGuard<'_, Shard> {
        let i = usize::from(slot.0[31]) & (SHARDS - 1);
        // A panic while holding a shard cannot leave an entry half-written (inserts and removes
        // are single map operations): the map is still sound, so keep using it.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The verified token in `slot`, if it is still usable at `now` (Unix seconds).
    pub fn get(&self, slot: &Slot, now: f64) -> Option<Arc<VerifiedToken>> {
        let mut shard = self.shard(slot);
        let found = match shard.get(&slot.0) {
            Some(e) if e.usable(now) => Some(e.token.clone()),
            Some(_) => {
                shard.remove(&slot.0);
                None
            }
            None => None,
        };
        drop(shard);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Records `token`, verified with `keys` at `generation` (read before verifying), usable
    /// until `valid_until` (Unix seconds).
    pub fn insert(
        &self,
        slot: &Slot,
        token: Arc<VerifiedToken>,
        valid_until: f64,
        keys: &KeyStore,
        generation: u64,
        now: f64,
    ) {
        let entry = Entry {
            token,
            valid_until,
            keys: keys.clone(),
            generation,
        };
        if !entry.usable(now) {
            return;
        }
        let mut shard = self.shard(slot);
        if shard.len() >= self.per_shard && !shard.contains_key(&slot.0) {
            // Full: first drop what is past use; if nothing is, an arbitrary entry (the map's
            // order): the caller it belonged to pays one verification to come back.
            shard.retain(|_, e| e.usable(now));
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        shard.insert(slot.0, entry);
    }

    /// Entry count, bound and counters.
    pub fn status(&self) -> TokenCacheStatus {
        TokenCacheStatus {
            entries: self
                .shards
                .iter()
                .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
                .sum(),
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwks::KeySource;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            issuer: "https://idp.example".into(),
            subject: Some(sub.into()),
            audience: vec!["https://mcp.example/mcp".into()],
            scopes: Default::default(),
            client_id: None,
            cnf_x5t_s256: None,
            expires_at: exp,
            key_id: None,
            algorithm: None,
            raw: Default::default(),
            organisation: None,
            backend_subject: Some(sub.into()),
        }
    }

    async fn store() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, [7u8; 32]).unwrap();
        let keys = KeyStore::new(KeySource::HmacSecretFile(path))
            .await
            .unwrap();
        (dir, keys)
    }

    #[tokio::test]
    async fn hits_until_valid_until_and_only_for_the_same_token_and_resource() {
        let (_dir, keys) = store().await;
        let cache = TokenCache::new(4).unwrap();
        let slot = TokenCache::slot("a.b.c", "https://mcp.example/mcp");
        assert!(cache.get(&slot, 100.0).is_none());
        let t = Arc::new(VerifiedToken::new(claims("alice", 200)));
        assert_eq!(t.label, "https://idp.example#alice");
        cache.insert(&slot, t, 260.0, &keys, keys.generation(), 100.0);
        assert_eq!(
            cache.get(&slot, 150.0).unwrap().claims.subject.as_deref(),
            Some("alice")
        );
        assert!(
            cache.get(&slot, 260.0).is_some(),
            "exp + leeway is still valid"
        );
        assert!(
            cache
                .get(
                    &TokenCache::slot("a.b.c", "https://other.example/mcp"),
                    150.0
                )
                .is_none()
        );
        assert!(
            cache
                .get(&TokenCache::slot("a.b.d", "https://mcp.example/mcp"), 150.0)
                .is_none()
        );
        assert!(cache.get(&slot, 260.5).is_none(), "past exp + leeway");
        assert!(
            cache.get(&slot, 150.0).is_none(),
            "an expired entry is dropped, not kept"
        );
        let s = cache.status();
        assert_eq!((s.hits, s.misses, s.entries, s.capacity), (2, 5, 0, 4));
        // An entry already past use is never stored.
        let t = Arc::new(VerifiedToken::new(claims("bob", 10)));
        cache.insert(&slot, t, 70.0, &keys, keys.generation(), 100.0);
        assert_eq!(cache.status().entries, 0);
    }

    #[tokio::test]
    async fn a_change_of_keys_retires_entries_verified_before_it() {
        let (_dir, keys) = store().await;
        let cache = TokenCache::new(4).unwrap();
        let slot = TokenCache::slot("a.b.c", "r");
        let before = keys.generation();
        let put_verified_at = |generation: u64| {
            let t = Arc::new(VerifiedToken::new(claims("alice", 200)));
            cache.insert(&slot, t, 260.0, &keys, generation, 100.0);
        };
        put_verified_at(before);
        assert!(cache.get(&slot, 100.0).is_some());
        keys.refresh().await.unwrap();
        assert_ne!(keys.generation(), before);
        assert!(cache.get(&slot, 100.0).is_none());
        // Verified while the keys changed (generation read before): stored, never served.
        put_verified_at(before);
        assert!(cache.get(&slot, 100.0).is_none());
    }

    #[tokio::test]
    async fn stays_within_its_bound_dropping_dead_entries_first() {
        let (_dir, keys) = store().await;
        let g = keys.generation();
        let put = |cache: &TokenCache, slot: &Slot, until: f64, now: f64| {
            let t = Arc::new(VerifiedToken::new(claims("x", 400)));
            cache.insert(slot, t, until, &keys, g, now);
        };
        // A bound of one entry per shard, and three tokens that fall in the same shard.
        let cache = TokenCache::new(SHARDS).unwrap();
        let mut same: Vec<Slot> = Vec::new();
        for i in 0.. {
            let slot = TokenCache::slot(&format!("t{i}"), "r");
            if usize::from(slot.0[31]) & (SHARDS - 1) == 0 {
                same.push(slot);
                if same.len() == 3 {
                    break;
                }
            }
        }
        put(&cache, &same[0], 150.0, 100.0);
        // At 200 the first is past use: it makes room, nothing usable is evicted.
        put(&cache, &same[1], 500.0, 200.0);
        assert_eq!(cache.status().evictions, 0);
        assert!(cache.get(&same[1], 200.0).is_some());
        // The shard is full of usable entries: one goes.
        put(&cache, &same[2], 500.0, 200.0);
        assert_eq!(cache.status().evictions, 1);
        assert!(cache.get(&same[2], 200.0).is_some());
        assert!(cache.get(&same[1], 200.0).is_none());
        // Many tokens never take it over its bound.
        for i in 0..2000 {
            put(
                &cache,
                &TokenCache::slot(&format!("u{i}"), "r"),
                500.0,
                200.0,
            );
        }
        let s = cache.status();
        assert!(
            s.entries <= SHARDS,
            "{} entries over a bound of {SHARDS}",
            s.entries
        );
        assert!(TokenCache::new(0).is_none(), "0 turns the cache off");
    }
}
