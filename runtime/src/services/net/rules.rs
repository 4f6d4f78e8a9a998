//! What the rules mean when a sandbox connects or looks a name up: the
//! compiled [`Policy`] the resolver and the proxy consult, and the ranges
//! denied whatever the rules. The option itself (parsing, bounds) is
//! `engine::network`.
//!
//! - Always denied, whatever the rules: loopback, RFC 1918, CGNAT,
//!   link-local (the cloud metadata address), multicast, 0/8, reserved
//!   240/4, and IPv6's loopback, unique-local, link-local, multicast. An
//!   allow rule lying inside such a range (`10.0.0.0/8`, `10.1.2.3`) opens
//!   exactly what it names; a wider rule (`0.0.0.0/0`) opens none of them.
//! - Domain rules match the name the sandbox asked for (DNS) and the TLS
//!   SNI or HTTP Host of a connection; an IP literal never matches one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use crate::engine::lifecycle::DeniedBy;
use crate::engine::network::{Network, Rule, Target};

/// A range denied whatever the rules, unless a rule inside it opens it.
#[derive(Clone, Copy, Debug)]
struct Reserved {
    net: IpNet,
    what: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len) {
        Ok(net) => IpNet::V4(net),
        Err(_) => panic!("bad prefix"),
    }
}

const fn v6(segments: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), len) {
        Ok(net) => IpNet::V6(net),
        Err(_) => panic!("bad prefix"),
    }
}

const RESERVED: &[Reserved] = &[
    Reserved {
        net: v4(0, 0, 0, 0, 8),
        what: "0.0.0.0/8 (this network)",
    },
    Reserved {
        net: v4(10, 0, 0, 0, 8),
        what: "10.0.0.0/8 (private, RFC 1918)",
    },
    Reserved {
        net: v4(100, 64, 0, 0, 10),
        what: "100.64.0.0/10 (carrier-grade NAT)",
    },
    Reserved {
        net: v4(127, 0, 0, 0, 8),
        what: "127.0.0.0/8 (loopback)",
    },
    Reserved {
        net: v4(169, 254, 0, 0, 16),
        what: "169.254.0.0/16 (link-local, cloud metadata)",
    },
    Reserved {
        net: v4(172, 16, 0, 0, 12),
        what: "172.16.0.0/12 (private, RFC 1918)",
    },
    Reserved {
        net: v4(192, 168, 0, 0, 16),
        what: "192.168.0.0/16 (private, RFC 1918)",
    },
    Reserved {
        net: v4(224, 0, 0, 0, 4),
        what: "224.0.0.0/4 (multicast)",
    },
    Reserved {
        net: v4(240, 0, 0, 0, 4),
        what: "240.0.0.0/4 (reserved, broadcast)",
    },
    Reserved {
        net: v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
        what: "::/128 (unspecified)",
    },
    Reserved {
        net: v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        what: "::1 (loopback)",
    },
    Reserved {
        net: v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        what: "fc00::/7 (unique local)",
    },
    Reserved {
        net: v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        what: "fe80::/10 (link-local)",
    },
    Reserved {
        net: v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        what: "fec0::/10 (site-local)",
    },
    Reserved {
        net: v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        what: "ff00::/8 (multicast)",
    },
];

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A decision.
pub type Verdict = Result<(), DeniedBy>;

/// Rules compiled for lookups: the resolver and the proxy read it through
/// an `Arc`, and `set_network` swaps it whole.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    allow_nets: Vec<IpNet>,
    deny_nets: Vec<(IpNet, String)>,
    allow_names: Vec<Target>,
    deny_names: Vec<(Target, String)>,
    /// Any allow rule at all: everything else is denied.
    allow_list: bool,
}

fn name_matches(target: &Target, name: &str) -> bool {
    match target {
        Target::Domain(d) => d == name,
        Target::Below(suffix) => name
            .strip_suffix(suffix.as_str())
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        Target::Net(_) => false,
    }
}

/// A name as rules compare it: lowercase, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Policy {
    /// The rules of `network`, compiled.
    pub fn of(network: &Network) -> Policy {
        Policy::new(network.allow_rules(), network.deny_rules())
    }

    pub fn new(allow: &[Rule], deny: &[Rule]) -> Policy {
        let mut policy = Policy {
            allow_list: !allow.is_empty(),
            ..Policy::default()
        };
        for rule in allow {
            match rule.target() {
                Target::Net(net) => policy.allow_nets.push(*net),
                name => policy.allow_names.push(name.clone()),
            }
        }
        for rule in deny {
            match rule.target() {
                Target::Net(net) => policy.deny_nets.push((*net, rule.as_str().to_string())),
                name => policy
                    .deny_names
                    .push((name.clone(), rule.as_str().to_string())),
            }
        }
        policy
    }

    /// Whether any rule names a domain: then names get fake addresses and
    /// the first bytes of connections are read for SNI and Host.
    pub fn has_domain_rules(&self) -> bool {
        !self.allow_names.is_empty() || !self.deny_names.is_empty()
    }

    /// A name the sandbox looks up or connects to.
    pub fn check_name(&self, name: &str) -> Verdict {
        let name = normalize(name);
        if let Some((_, rule)) = self.deny_names.iter().find(|(t, _)| name_matches(t, &name)) {
            return Err(DeniedBy::Rule(rule.clone()));
        }
        if self.allow_list && !self.allow_names.iter().any(|t| name_matches(t, &name)) {
            return Err(DeniedBy::NoAllowRule);
        }
        Ok(())
    }

    /// An address reached through an allowed name: deny rules and the
    /// always-denied ranges apply; no allow rule is needed (the name's
    /// sufficed).
    pub fn check_resolved(&self, ip: IpAddr) -> Verdict {
        let ip = canonical(ip);
        if let Some((_, rule)) = self.deny_nets.iter().find(|(net, _)| net.contains(&ip)) {
            return Err(DeniedBy::Rule(rule.clone()));
        }
        if let Some(reserved) = RESERVED.iter().find(|r| r.net.contains(&ip)) {
            // Opened only by an allow rule lying inside that range.
            let opened = self
                .allow_nets
                .iter()
                .any(|net| net.contains(&ip) && reserved.net.contains(net));
            if !opened {
                return Err(DeniedBy::Reserved(reserved.what));
            }
        }
        Ok(())
    }

    /// An IP literal the sandbox connects to.
    pub fn check_ip(&self, ip: IpAddr) -> Verdict {
        self.check_resolved(ip)?;
        let ip = canonical(ip);
        if self.allow_list && !self.allow_nets.iter().any(|net| net.contains(&ip)) {
            return Err(if self.allow_nets.is_empty() {
                DeniedBy::IpLiteral
            } else {
                DeniedBy::NoAllowRule
            });
        }
        Ok(())
    }

    /// The TLS SNI or HTTP Host of a connection, under domain rules: an
    /// IP literal there tells nothing (the address was checked already).
    pub fn check_server_name(&self, name: &str) -> Verdict {
        if !self.has_domain_rules() || name.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        self.check_name(name)
            .map_err(|why| DeniedBy::ServerName(normalize(name), Box::new(why)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        let mut n = Network::internet();
        for r in allow {
            n = n.allow_out(r).unwrap();
        }
        for r in deny {
            n = n.deny_out(r).unwrap();
        }
        Policy::of(&n)
    }

    #[test]
    fn internet_reaches_public_addresses_and_never_the_reserved_ranges() {
        let p = policy(&[], &[]);
        assert_eq!(p.check_ip(ip("203.0.113.5")), Ok(()));
        assert_eq!(p.check_ip(ip("2001:db8::5")), Ok(()));
        for denied in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.5",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "0.1.2.3",
            "255.255.255.255",
            "::1",
            "fd00::2",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                matches!(p.check_ip(ip(denied)), Err(DeniedBy::Reserved(_))),
                "{denied}"
            );
        }
    }

    #[test]
    fn a_rule_inside_a_reserved_range_opens_exactly_that() {
        let p = policy(&["10.1.2.3", "0.0.0.0/0"], &[]);
        assert_eq!(p.check_ip(ip("10.1.2.3")), Ok(()));
        assert!(matches!(
            p.check_ip(ip("10.1.2.4")),
            Err(DeniedBy::Reserved(_))
        ));
        assert!(matches!(
            p.check_ip(ip("127.0.0.1")),
            Err(DeniedBy::Reserved(_))
        ));
        assert_eq!(p.check_ip(ip("203.0.113.1")), Ok(()));
        let p = policy(&["169.254.0.0/16"], &[]);
        assert_eq!(p.check_ip(ip("169.254.169.254")), Ok(()));
    }

    #[test]
    fn any_allow_denies_the_rest_and_deny_wins() {
        let p = policy(&["203.0.113.0/24"], &["203.0.113.7"]);
        assert_eq!(p.check_ip(ip("203.0.113.8")), Ok(()));
        assert_eq!(
            p.check_ip(ip("203.0.113.7")),
            Err(DeniedBy::Rule("203.0.113.7".into()))
        );
        assert_eq!(p.check_ip(ip("198.51.100.1")), Err(DeniedBy::NoAllowRule));
        // Deny-only rules keep the rest of the internet.
        let p = policy(&[], &["198.51.100.0/24", "*.evil.test"]);
        assert_eq!(p.check_ip(ip("203.0.113.1")), Ok(()));
        assert!(p.check_ip(ip("198.51.100.9")).is_err());
        assert_eq!(p.check_name("good.test"), Ok(()));
        assert_eq!(
            p.check_name("a.b.evil.test"),
            Err(DeniedBy::Rule("*.evil.test".into()))
        );
    }

    #[test]
    fn domain_rules_match_names_and_wildcards_but_never_ip_literals() {
        let p = policy(&["api.example.com", "*.pkg.test"], &["bad.pkg.test"]);
        assert_eq!(p.check_name("API.example.com."), Ok(()));
        assert_eq!(p.check_name("files.pkg.test"), Ok(()));
        assert_eq!(p.check_name("a.b.pkg.test"), Ok(()));
        assert_eq!(p.check_name("pkg.test"), Err(DeniedBy::NoAllowRule));
        assert_eq!(p.check_name("xpkg.test"), Err(DeniedBy::NoAllowRule));
        assert_eq!(p.check_name("example.com"), Err(DeniedBy::NoAllowRule));
        assert_eq!(
            p.check_name("bad.pkg.test"),
            Err(DeniedBy::Rule("bad.pkg.test".into()))
        );
        assert_eq!(p.check_ip(ip("203.0.113.5")), Err(DeniedBy::IpLiteral));
        // An allowed name's addresses need no allow rule, but reserved
        // ranges still apply (rebinding).
        assert_eq!(p.check_resolved(ip("203.0.113.5")), Ok(()));
        assert!(p.check_resolved(ip("127.0.0.1")).is_err());
        assert!(p.check_resolved(ip("10.0.0.1")).is_err());
    }

    #[test]
    fn server_names_are_checked_only_under_domain_rules() {
        let p = policy(&["203.0.113.0/24"], &[]);
        assert_eq!(p.check_server_name("anything.test"), Ok(()));
        let p = policy(&["203.0.113.0/24", "ok.test"], &[]);
        assert_eq!(p.check_server_name("ok.test"), Ok(()));
        assert_eq!(p.check_server_name("203.0.113.9"), Ok(()));
        assert!(matches!(
            p.check_server_name("evil.test"),
            Err(DeniedBy::ServerName(name, _)) if name == "evil.test"
        ));
    }
}
