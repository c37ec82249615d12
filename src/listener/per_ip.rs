//! Caps how many connections one client address may hold open, so a single host cannot take
//! every slot of `listener.max_connections`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open-connection counts by client address. One short critical section per accept and one
/// per close: the map only holds addresses with at least one open connection (at most
/// `max_connections` entries), and an entry is removed when its count drops to zero.
#[derive(Debug)]
pub struct PerIpLimit {
    limit: usize,
    // SipHash (the std default) on purpose: IPv6 keys are chosen by the peer, and a weaker
    // hash would let it aim for collisions.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted against its address; releases the count when dropped, on
/// every path (handshake failure, timeouts, normal close).
#[derive(Debug)]
pub struct PerIpPermit {
    owner: Arc<PerIpLimit>,
    key: IpAddr,
}

impl PerIpLimit {
    /// A limit of `limit` open connections per client address.
    pub fn new(limit: usize) -> Self {
        PerIpLimit {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`, or returns `None` when that address is at the cap.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpPermit> {
        let key = crate::limits::client_address_key(ip);
        let mut open = self.lock();
        // A rejection never inserts, so only addresses holding connections have entries.
        match open.entry(key) {
            Entry::Occupied(mut held) => {
                if *held.get() >= self.limit {
                    return None;
                }
                *held.get_mut() += 1;
            }
            Entry::Vacant(_) if self.limit == 0 => return None,
            Entry::Vacant(free) => {
                free.insert(1);
            }
        }
        drop(open);
        Some(PerIpPermit {
            owner: self.clone(),
            key,
        })
    }

    /// Open connections counted for `ip` (for tests and diagnostics).
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.lock()
            .get(&crate::limits::client_address_key(ip))
            .copied()
            .unwrap_or(0)
    }

    /// How many addresses currently hold at least one connection.
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The critical sections cannot panic, but a poisoned map is still a correct map.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for PerIpPermit {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_each_address_and_releases_on_drop() {
        let limit = Arc::new(PerIpLimit::new(2));
        let a1 = limit.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = limit.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(
            limit.try_acquire(ip("192.0.2.1")).is_none(),
            "third is over the cap"
        );
        let _b = limit.try_acquire(ip("192.0.2.2")).unwrap();
        drop(a1);
        assert_eq!(limit.open_from(ip("192.0.2.1")), 1);
        assert!(
            limit.try_acquire(ip("192.0.2.1")).is_some(),
            "a slot came free"
        );
    }

    #[test]
    fn entries_are_removed_at_zero() {
        let limit = Arc::new(PerIpLimit::new(3));
        let permits: Vec<_> = (0..50u8)
            .filter_map(|i| limit.try_acquire(IpAddr::from([10, 0, 0, i])))
            .collect();
        assert_eq!(limit.addresses(), 50);
        drop(permits);
        assert_eq!(
            limit.addresses(),
            0,
            "the map does not keep closed addresses"
        );
        // A rejected attempt leaves nothing behind either.
        let one = Arc::new(PerIpLimit::new(1));
        let p = one.try_acquire(ip("10.0.0.1")).unwrap();
        assert!(one.try_acquire(ip("10.0.0.1")).is_none());
        drop(p);
        assert_eq!(one.addresses(), 0);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let limit = Arc::new(PerIpLimit::new(1));
        let _v4 = limit.try_acquire(ip("192.0.2.7")).unwrap();
        assert!(limit.try_acquire(ip("::ffff:192.0.2.7")).is_none());
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let limit = Arc::new(PerIpLimit::new(1));
        let _a = limit.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(
            limit.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none(),
            "same /64"
        );
        assert!(
            limit.try_acquire(ip("2001:db8:1:3::1")).is_some(),
            "another /64"
        );
    }
}
