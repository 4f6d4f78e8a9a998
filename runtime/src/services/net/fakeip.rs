//! Per-sandbox fake addresses for names under domain rules: the resolver
//! answers an allowed name with an address from 198.18.0.0/15 (the
//! benchmarking range, never routed), and a connection to it tells the
//! proxy which name the sandbox meant. The proxy then dials the name
//! itself, from the host, and re-checks the real address it gets. Each
//! sandbox has its own table (its own namespace), bounded; the oldest
//! entry makes room for a new one.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// First address of the range (198.18.0.0/15).
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Addresses in the range.
const SIZE: u32 = 1 << 17;
/// Most names one sandbox holds at once.
pub const MAX_NAMES: usize = 16 * 1024;

/// Whether `ip` lies in the fake range.
pub fn is_fake(ip: IpAddr) -> bool {
    match super::rules::canonical(ip) {
        IpAddr::V4(v4) => u32::from(v4).wrapping_sub(BASE) < SIZE,
        IpAddr::V6(_) => false,
    }
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// Real addresses from the last lookup, and until when they hold.
    addrs: Vec<IpAddr>,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct FakeIps {
    by_name: HashMap<String, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, Entry>,
    order: VecDeque<Ipv4Addr>,
    next: u32,
}

impl FakeIps {
    /// The fake address of `name` (already normalized), made if new, with
    /// the real addresses just resolved for it and their lifetime.
    pub fn assign(
        &mut self,
        name: &str,
        addrs: Vec<IpAddr>,
        ttl: Duration,
        now: Instant,
    ) -> Ipv4Addr {
        if let Some(&ip) = self.by_name.get(name) {
            if let Some(entry) = self.by_ip.get_mut(&ip) {
                entry.addrs = addrs;
                entry.expires = now + ttl;
            }
            return ip;
        }
        if self.by_ip.len() >= MAX_NAMES {
            if let Some(old) = self.order.pop_front() {
                if let Some(entry) = self.by_ip.remove(&old) {
                    self.by_name.remove(&entry.name);
                }
            }
        }
        // Skip .0 of the range and any address still held (the table is
        // far smaller than the range, so this ends quickly).
        let ip = loop {
            self.next = (self.next + 1) % SIZE;
            let candidate = Ipv4Addr::from(BASE + self.next);
            if self.next != 0 && !self.by_ip.contains_key(&candidate) {
                break candidate;
            }
        };
        self.by_name.insert(name.to_string(), ip);
        self.by_ip.insert(
            ip,
            Entry {
                name: name.to_string(),
                addrs,
                expires: now + ttl,
            },
        );
        self.order.push_back(ip);
        ip
    }

    /// The name behind a fake address, and its real addresses if they are
    /// still fresh.
    pub fn lookup(&self, ip: IpAddr, now: Instant) -> Option<(String, Option<Vec<IpAddr>>)> {
        let IpAddr::V4(v4) = super::rules::canonical(ip) else {
            return None;
        };
        self.by_ip.get(&v4).map(|e| {
            let fresh = (now < e.expires && !e.addrs.is_empty()).then(|| e.addrs.clone());
            (e.name.clone(), fresh)
        })
    }

    /// A fresh fake answer for `name`, if one is held.
    pub fn cached(&self, name: &str, now: Instant) -> Option<Ipv4Addr> {
        let ip = self.by_name.get(name)?;
        let entry = self.by_ip.get(ip)?;
        (now < entry.expires).then_some(*ip)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_stable_fake_addresses_and_back() {
        let now = Instant::now();
        let mut t = FakeIps::default();
        let real: Vec<IpAddr> = vec!["203.0.113.5".parse().unwrap()];
        let a = t.assign("a.test", real.clone(), Duration::from_secs(60), now);
        let b = t.assign("b.test", vec![], Duration::from_secs(60), now);
        assert_ne!(a, b);
        assert!(is_fake(a.into()) && is_fake(b.into()));
        assert!(!is_fake("203.0.113.5".parse().unwrap()));
        assert_eq!(
            t.assign("a.test", real.clone(), Duration::from_secs(60), now),
            a
        );
        assert_eq!(t.lookup(a.into(), now), Some(("a.test".into(), Some(real))));
        assert_eq!(t.lookup(b.into(), now), Some(("b.test".into(), None)));
        let later = now + Duration::from_secs(61);
        assert_eq!(t.lookup(a.into(), later).unwrap().1, None);
        assert_eq!(t.cached("a.test", later), None);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let now = Instant::now();
        let mut t = FakeIps::default();
        let first = t.assign("n0.test", vec![], Duration::from_secs(60), now);
        for i in 1..=MAX_NAMES {
            t.assign(&format!("n{i}.test"), vec![], Duration::from_secs(60), now);
        }
        assert_eq!(t.len(), MAX_NAMES);
        assert_eq!(t.lookup(first.into(), now), None);
    }
}
