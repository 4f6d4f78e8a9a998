//! What a sandbox may reach: the `Network` option, its rules, and the
//! compiled [`Policy`] the resolver and the proxy consult.
//!
//! - Off (the default): loopback only, no steering, no proxy.
//! - On with no allow rule ("internet"): every public address.
//! - Any allow rule: only what an allow rule names. Deny rules always win.
//! - Always denied, whatever the rules: loopback, RFC 1918, CGNAT,
//!   link-local (the cloud metadata address), multicast, 0/8, reserved
//!   240/4, and IPv6's loopback, unique-local, link-local, multicast. An
//!   allow rule lying inside such a range (`10.0.0.0/8`, `10.1.2.3`) opens
//!   exactly what it names; a wider rule (`0.0.0.0/0`) opens none of them.
//! - Domain rules match the name the sandbox asked for (DNS) and the TLS
//!   SNI or HTTP Host of a connection; an IP literal never matches one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Most allow rules, and most deny rules, one network option may carry.
pub const MAX_RULES: usize = 256;
/// Longest domain name (RFC 1035).
const MAX_NAME: usize = 253;

/// What a rule names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An address range; a bare IP is a /32 or /128.
    Net(IpNet),
    /// One name, lowercase, without a trailing dot.
    Domain(String),
    /// `*.example.org`: every name below `example.org` (at any depth), not
    /// `example.org` itself. Holds the suffix, `example.org`.
    Below(String),
}

/// One `--allow-out` / `--deny-out` rule, as written and as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    text: String,
    target: Target,
}

impl Rule {
    pub fn target(&self) -> &Target {
        &self.target
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A rule that does not parse, or too many of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("network rule {rule:?}: {reason}")]
    Invalid { rule: String, reason: &'static str },
    #[error("network rule {rule:?}: host bits are set; did you mean {suggestion}?")]
    HostBits { rule: String, suggestion: String },
    #[error("too many {kind} rules ({count}, at most {MAX_RULES})")]
    TooMany { kind: &'static str, count: usize },
    #[error("bandwidth {0:?}: expected bytes per second, e.g. 500K, 1M, 2G (K/M/G = KiB/MiB/GiB)")]
    Rate(String),
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Rule, RuleError> {
        let invalid = |reason| RuleError::Invalid {
            rule: text.into(),
            reason,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Rule {
                text: s.into(),
                target: Target::Net(IpNet::from(ip)),
            });
        }
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| invalid("not an address range (CIDR such as 203.0.113.0/24)"))?;
            if net.trunc() != net {
                return Err(RuleError::HostBits {
                    rule: s.into(),
                    suggestion: net.trunc().to_string(),
                });
            }
            return Ok(Rule {
                text: s.into(),
                target: Target::Net(net),
            });
        }
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let (below, name) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, name),
        };
        check_name(&name).map_err(invalid)?;
        if !name.contains('.') && below {
            return Err(invalid("a wildcard needs at least two labels after `*.`"));
        }
        Ok(Rule {
            text: s.into(),
            target: if below {
                Target::Below(name)
            } else {
                Target::Domain(name)
            },
        })
    }
}

/// A DNS name as rules use it: lowercase letters, digits, `-` and `_`,
/// labels of 1 to 63 bytes, at most 253 in all.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err("a domain name is 1 to 253 characters");
    }
    if name.contains('*') {
        return Err("`*` is allowed only as the whole first label (`*.example.org`)");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label of a domain name is 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("not an IP address, a CIDR range or a domain name");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of a domain name cannot start or end with `-`");
        }
    }
    Ok(())
}

/// Parses a bandwidth: bytes per second with an optional K, M or G
/// suffix (binary: 1M = 1 MiB/s), e.g. `500K`, `1M`, `1.5M`, `1048576`.
pub fn parse_rate(text: &str) -> Result<u64, RuleError> {
    let bad = || RuleError::Rate(text.into());
    let s = text.trim();
    let (number, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let scale: f64 = match unit {
        'B' => 1.0,
        'K' => 1024.0,
        'M' => 1024.0 * 1024.0,
        'G' => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    let rate = value * scale;
    if !rate.is_finite() || rate < 1.0 || rate > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(rate as u64)
}

/// A sandbox's network option.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    on: bool,
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    upstream_dns: Option<std::net::SocketAddr>,
    bandwidth: Option<u64>,
}

impl Network {
    /// Loopback only (the default).
    pub fn off() -> Network {
        Network::default()
    }

    /// Every public destination, over TCP, and DNS through sandlot's
    /// resolver.
    pub fn internet() -> Network {
        Network {
            on: true,
            ..Network::default()
        }
    }

    /// Allows what `rule` names; the first allow rule turns the network
    /// on and denies everything no allow rule names.
    pub fn allow_out(mut self, rule: &str) -> Result<Network, RuleError> {
        self.allow.push(rule.parse()?);
        self.on = true;
        Ok(self)
    }

    /// Denies what `rule` names, whatever allows it; turns the network on
    /// (everything else public stays reachable unless an allow rule says
    /// otherwise).
    pub fn deny_out(mut self, rule: &str) -> Result<Network, RuleError> {
        self.deny.push(rule.parse()?);
        self.on = true;
        Ok(self)
    }

    /// Where the resolver forwards allowed names (default: the host's
    /// resolv.conf). Ignored while the network is off.
    pub fn upstream_dns(mut self, server: std::net::SocketAddr) -> Network {
        self.upstream_dns = Some(server);
        self
    }

    /// Bytes per second, for each direction of the sandbox's traffic.
    pub fn bandwidth(mut self, bytes_per_second: u64) -> Network {
        self.bandwidth = Some(bytes_per_second);
        self
    }

    pub fn is_on(&self) -> bool {
        self.on
    }
    pub fn allow_rules(&self) -> &[Rule] {
        &self.allow
    }
    pub fn deny_rules(&self) -> &[Rule] {
        &self.deny
    }
    pub fn upstream(&self) -> Option<std::net::SocketAddr> {
        self.upstream_dns
    }
    pub fn rate(&self) -> Option<u64> {
        self.bandwidth
    }

    /// Checks the bounds (rule counts, a non-zero bandwidth).
    pub fn validate(&self) -> Result<(), RuleError> {
        for (kind, rules) in [("allow", &self.allow), ("deny", &self.deny)] {
            if rules.len() > MAX_RULES {
                return Err(RuleError::TooMany {
                    kind,
                    count: rules.len(),
                });
            }
        }
        if self.bandwidth == Some(0) {
            return Err(RuleError::Rate("0".into()));
        }
        Ok(())
    }

    /// The rules compiled for the resolver and the proxy.
    pub fn policy(&self) -> Policy {
        Policy::new(&self.allow, &self.deny)
    }
}

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

/// The always-denied range `ip` is in, if any. IPv4-mapped IPv6 addresses
/// are judged as the IPv4 address they carry.
pub fn reserved_range(ip: IpAddr) -> Option<&'static str> {
    let ip = canonical(ip);
    RESERVED
        .iter()
        .find(|r| r.net.contains(&ip))
        .map(|r| r.what)
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why something was refused, naming the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeniedBy {
    /// A `--deny-out` rule, as written.
    Rule(String),
    /// Allow rules exist and none names this destination.
    NoAllowRule,
    /// An always-denied range (loopback, private, metadata, ...).
    Reserved(&'static str),
    /// An IP literal while only domain rules allow anything.
    IpLiteral,
    /// The name resolved only to denied addresses (DNS rebinding).
    Rebinding(String),
    /// The TLS SNI or HTTP Host names a domain the rules deny.
    ServerName(String, Box<DeniedBy>),
    /// The first bytes look like TLS or HTTP but name no server that can
    /// be read (fragmented or malformed ClientHello, two Host headers, a
    /// head that did not complete in time): refused under domain rules.
    UnreadableServerName,
    /// The name does not exist upstream or could not be resolved.
    Unresolvable(String),
    /// Too many connections or queries at once for this sandbox.
    Busy(&'static str),
}

impl fmt::Display for DeniedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeniedBy::Rule(rule) => write!(f, "deny rule {rule}"),
            DeniedBy::NoAllowRule => f.write_str("no allow rule names it"),
            DeniedBy::Reserved(what) => write!(f, "always denied: {what}"),
            DeniedBy::IpLiteral => {
                f.write_str("an IP address matches no domain rule (connect by name)")
            }
            DeniedBy::Rebinding(addrs) => {
                write!(f, "resolves only to denied addresses ({addrs})")
            }
            DeniedBy::ServerName(name, why) => write!(f, "server name {name}: {why}"),
            DeniedBy::UnreadableServerName => {
                f.write_str("the TLS or HTTP server name could not be read")
            }
            DeniedBy::Unresolvable(why) => write!(f, "cannot resolve: {why}"),
            DeniedBy::Busy(what) => write!(f, "too many {what}"),
        }
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
    pub fn new(allow: &[Rule], deny: &[Rule]) -> Policy {
        let mut policy = Policy {
            allow_list: !allow.is_empty(),
            ..Policy::default()
        };
        for rule in allow {
            match &rule.target {
                Target::Net(net) => policy.allow_nets.push(*net),
                name => policy.allow_names.push(name.clone()),
            }
        }
        for rule in deny {
            match &rule.target {
                Target::Net(net) => policy.deny_nets.push((*net, rule.text.clone())),
                name => policy.deny_names.push((name.clone(), rule.text.clone())),
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
        n.policy()
    }

    #[test]
    fn rules_parse_and_bad_ones_name_themselves() {
        assert_eq!(
            "203.0.113.0/24".parse::<Rule>().unwrap().target,
            Target::Net("203.0.113.0/24".parse().unwrap())
        );
        assert_eq!(
            "2001:db8::1".parse::<Rule>().unwrap().target,
            Target::Net("2001:db8::1/128".parse().unwrap())
        );
        assert_eq!(
            "API.Example.com.".parse::<Rule>().unwrap().target,
            Target::Domain("api.example.com".into())
        );
        assert_eq!(
            "*.example.org".parse::<Rule>().unwrap().target,
            Target::Below("example.org".into())
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "exa mple.com",
            "a.*.com",
            "*.com",
            "-a.com",
            "a..b",
        ] {
            let err = bad.parse::<Rule>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(
            "10.0.0.1/8".parse::<Rule>().unwrap_err(),
            RuleError::HostBits {
                rule: "10.0.0.1/8".into(),
                suggestion: "10.0.0.0/8".into()
            }
        );
    }

    #[test]
    fn rule_counts_are_bounded() {
        let mut n = Network::internet();
        for i in 0..=MAX_RULES {
            n = n
                .deny_out(&format!("198.51.{}.{}", i / 256, i % 256))
                .unwrap();
        }
        assert_eq!(
            n.validate(),
            Err(RuleError::TooMany {
                kind: "deny",
                count: MAX_RULES + 1
            })
        );
    }

    #[test]
    fn rates_are_bytes_per_second_with_binary_suffixes() {
        assert_eq!(parse_rate("1M"), Ok(1 << 20));
        assert_eq!(parse_rate("4m"), Ok(4 << 20));
        assert_eq!(parse_rate("500K"), Ok(500 << 10));
        assert_eq!(parse_rate("1.5G"), Ok(3 << 29));
        assert_eq!(parse_rate("1000"), Ok(1000));
        for bad in ["", "0", "-1M", "1X", "M", "1e400"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
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
