//! The `Network` option of a sandbox: whether it reaches anything beyond
//! its own loopback, the `--allow-out` / `--deny-out` rules, the upstream
//! resolver and the bandwidth. Parsed and bounded here, with errors that
//! name the rule; what the rules mean at connect and lookup time (the
//! compiled policy, the always-denied ranges) is `services::net::rules`.
//!
//! - Off (the default): loopback only, no steering, no proxy.
//! - On with no allow rule ("internet"): every public address.
//! - Any allow rule: only what an allow rule names. Deny rules always win.
//! - Domain rules match the name the sandbox asked for (DNS) and the TLS
//!   SNI or HTTP Host of a connection; an IP literal never matches one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
