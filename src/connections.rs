//! Open API-port connections per client address, against `api.max_connections_per_address`.
//!
//! The connection cap (`api.max_connections`) protects the server; this protects the other
//! clients: without it, one address could hold every slot with connections that each look
//! legitimate (a handshake done, a keep-alive between requests), and the eviction at the cap
//! would then mostly evict its neighbours. Addresses are grouped as the failed-auth throttle
//! groups them (an IPv6 client by its /64, see [`crate::throttle`]), so one subscriber cannot
//! spread over 2^64 addresses. The table holds an entry per address with a connection open,
//! so it never outgrows the connection cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::locks;
use crate::throttle::Source;

pub struct PerAddress {
    /// A reload may change it; connections over a lowered limit stay until they close.
    limit: AtomicUsize,
    open: Mutex<HashMap<Source, usize>>,
}

impl PerAddress {
    pub fn new(limit: usize) -> Self {
        Self { limit: AtomicUsize::new(limit), open: Mutex::new(HashMap::new()) }
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Takes a slot for a new connection from `ip`: `false` when its address (or /64) already
    /// holds the limit, and then nothing is taken.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let mut open = locks::lock(&self.open);
        let count = open.entry(Source::of(ip)).or_insert(0);
        if *count >= self.limit.load(Ordering::Relaxed) {
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back the slot of a closed connection from `ip`.
    pub fn release(&self, ip: IpAddr) {
        let mut open = locks::lock(&self.open);
        let source = Source::of(ip);
        if let Some(count) = open.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&source);
            }
        }
    }

    /// Addresses with a connection open (for tests and the curious).
    pub fn addresses(&self) -> usize {
        locks::lock(&self.open).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_limit_and_ipv6_counts_by_its_slash_64() {
        let limit = PerAddress::new(2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        assert!(limit.admit(a) && limit.admit(a));
        assert!(!limit.admit(a), "the third from one address");
        assert!(limit.admit(b), "another address is unaffected");
        limit.release(a);
        assert!(limit.admit(a), "a closed connection gives its slot back");
        let (v6a, v6b): (IpAddr, IpAddr) =
            ("2001:db8:1:2::1".parse().unwrap(), "2001:db8:1:2::ffff".parse().unwrap());
        assert!(limit.admit(v6a) && limit.admit(v6b));
        assert!(!limit.admit("2001:db8:1:2:abcd::9".parse().unwrap()), "same /64");
        assert!(limit.admit("2001:db8:1:3::1".parse().unwrap()), "another /64");
        for ip in [a, a, b, v6a, v6b, "2001:db8:1:3::1".parse().unwrap()] {
            limit.release(ip);
        }
        assert_eq!(limit.addresses(), 0, "the table empties as connections close");
    }
}
