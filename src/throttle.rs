//! Failed-auth throttling on the public port: how many requests each client address has had
//! refused in the current window, and whether its next refused request gets `429`.
//!
//! Only refusals are counted and only refusals are throttled. The gate judges every request
//! first, and one with the valid key and activation code is served whatever its address did:
//! checking a key costs under a microsecond, and throttling it would let any neighbour behind
//! the same address (a NAT, a proxy) lock the real client out. What a throttled address loses
//! is the cheap guess: each further refusal is a `429` that closes the connection, so every
//! guess costs a new TLS handshake as well, and the window caps guesses per address.
//!
//! An IPv4 client counts by its address, an IPv6 client by its /64 (one subscriber's usual
//! allocation: counting single IPv6 addresses would give an attacker 2^64 fresh counters).
//! Memory is a table of at most `max_addresses` entries: when it is full, windows that have
//! ended are dropped first, then the address refused least recently, so however many
//! addresses try, the table stays the same size; the addresses still hammering are the ones
//! kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::locks;

/// Limits, from `api` in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    /// Refused requests an address may have per window before the next ones get 429.
    pub max_refusals: u32,
    pub window: Duration,
    /// Addresses remembered at most.
    pub max_addresses: usize,
}

/// What to answer a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The refusal's own status (400 or 401).
    Refuse,
    /// 429, and when the window ends (whole seconds, at least 1).
    Throttle { retry_after_secs: u64 },
}

/// A client as the throttle (and the per-address connection cap) counts it: an IPv4
/// address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6Prefix(prefix)
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_started: Instant,
    refusals: u32,
    last_refusal: Instant,
}

pub struct Throttle {
    settings: ThrottleSettings,
    table: Mutex<HashMap<Source, Entry>>,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Self {
        let capacity = settings.max_addresses.min(4096);
        Self { settings, table: Mutex::new(HashMap::with_capacity(capacity)) }
    }

    /// Counts one refused request from `ip` at `now` and says how to answer it.
    pub fn refused(&self, ip: IpAddr, now: Instant) -> Verdict {
        // Entries are plain values written whole: see `locks`.
        let mut table = locks::lock(&self.table);
        let source = Source::of(ip);
        if !table.contains_key(&source) && table.len() >= self.settings.max_addresses {
            self.make_room(&mut table, now);
        }
        let window = self.settings.window;
        let entry = table.entry(source).or_insert(Entry {
            window_started: now,
            refusals: 0,
            last_refusal: now,
        });
        if now.saturating_duration_since(entry.window_started) >= window {
            *entry = Entry { window_started: now, refusals: 0, last_refusal: now };
        }
        entry.refusals = entry.refusals.saturating_add(1);
        entry.last_refusal = now;
        if entry.refusals <= self.settings.max_refusals {
            return Verdict::Refuse;
        }
        let left = (entry.window_started + window).saturating_duration_since(now);
        Verdict::Throttle { retry_after_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0) }
            .at_least_one_second()
    }

    /// Drops ended windows; if none had ended, the address refused least recently.
    fn make_room(&self, table: &mut HashMap<Source, Entry>, now: Instant) {
        let window = self.settings.window;
        table.retain(|_, e| now.saturating_duration_since(e.window_started) < window);
        if table.len() < self.settings.max_addresses {
            return;
        }
        let oldest = table.iter().min_by_key(|(_, e)| e.last_refusal).map(|(source, _)| *source);
        if let Some(source) = oldest {
            table.remove(&source);
        }
    }

    /// Addresses remembered now (for tests and the memory bound).
    pub fn tracked(&self) -> usize {
        self.table.lock().map_or(0, |t| t.len())
    }
}

impl Verdict {
    fn at_least_one_second(self) -> Self {
        match self {
            Self::Throttle { retry_after_secs } => {
                Self::Throttle { retry_after_secs: retry_after_secs.max(1) }
            }
            Self::Refuse => Self::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn throttle(max_refusals: u32, window_secs: u64, max_addresses: usize) -> Throttle {
        Throttle::new(ThrottleSettings {
            max_refusals,
            window: Duration::from_secs(window_secs),
            max_addresses,
        })
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn the_refusal_after_the_limit_is_throttled_until_the_window_ends() {
        let t = throttle(3, 60, 16);
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(t.refused(v4(1), start + Duration::from_secs(i)), Verdict::Refuse);
        }
        let at = start + Duration::from_millis(10_500);
        assert_eq!(t.refused(v4(1), at), Verdict::Throttle { retry_after_secs: 50 });
        // Another address is not affected.
        assert_eq!(t.refused(v4(2), at), Verdict::Refuse);
        // A new window starts afresh.
        let later = start + Duration::from_secs(60);
        assert_eq!(t.refused(v4(1), later), Verdict::Refuse);
    }

    #[test]
    fn retry_after_is_never_zero() {
        let t = throttle(1, 1, 16);
        let start = Instant::now();
        t.refused(v4(1), start);
        let almost = start + Duration::from_millis(999);
        assert_eq!(t.refused(v4(1), almost), Verdict::Throttle { retry_after_secs: 1 });
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let t = throttle(1, 60, 16);
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(t.refused(a, now), Verdict::Refuse);
        assert!(matches!(t.refused(b, now), Verdict::Throttle { .. }), "same /64");
        assert_eq!(t.refused(other, now), Verdict::Refuse, "another /64");
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(t.refused(v4(7), now), Verdict::Refuse);
        assert!(matches!(t.refused(mapped, now), Verdict::Throttle { .. }));
        assert_eq!(Source::of(IpAddr::V6(Ipv6Addr::LOCALHOST)), Source::V6Prefix([0; 8]));
    }

    #[test]
    fn memory_is_bounded_however_many_addresses_try() {
        let t = throttle(2, 60, 64);
        let now = Instant::now();
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            t.refused(ip, now + Duration::from_micros(u64::from(i)));
            assert!(t.tracked() <= 64);
        }
        assert_eq!(t.tracked(), 64);
    }

    #[test]
    fn a_full_table_keeps_the_addresses_still_hammering() {
        let t = throttle(2, 60, 8);
        let start = Instant::now();
        let hammer = v4(200);
        for _ in 0..3 {
            t.refused(hammer, start);
        }
        // A crowd of one-off addresses passes through, the hammering one keeps going.
        for i in 0..50u8 {
            let at = start + Duration::from_millis(u64::from(i) + 1);
            t.refused(v4(i), at);
            if i % 4 == 0 {
                assert!(matches!(t.refused(hammer, at), Verdict::Throttle { .. }), "at {i}");
            }
        }
    }

    #[test]
    fn ended_windows_make_room_first() {
        let t = throttle(1, 10, 2);
        let start = Instant::now();
        t.refused(v4(1), start);
        t.refused(v4(2), start + Duration::from_secs(9));
        t.refused(v4(2), start + Duration::from_secs(9));
        // v4(1)'s window has ended: it goes, and v4(2), refused earlier than now but still in
        // its window, stays throttled.
        t.refused(v4(3), start + Duration::from_secs(11));
        let verdict = t.refused(v4(2), start + Duration::from_secs(11));
        assert!(matches!(verdict, Verdict::Throttle { .. }));
    }
}
