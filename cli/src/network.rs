//! The network flags, shared by every command that creates a sandbox
//! (`run` now; `create` flattens the same struct): what the sandbox may
//! reach, its resolver, its bandwidth, and the ports published on the
//! host. The flags are an interface: their names and syntax follow issue
//! 13 and the README.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Args;
use sandlot::{Error, Network, Rule, Sandbox};

#[derive(Args, Debug, Clone, Default)]
pub struct NetworkArgs {
    /// Let the sandbox reach the internet: outbound TCP to public
    /// addresses, DNS through sandlot's resolver. Loopback, private,
    /// link-local (cloud metadata) and multicast ranges stay unreachable,
    /// and so do the host's own addresses.
    #[arg(long, help_heading = "Network")]
    pub internet: bool,
    /// Allow what RULE names, and nothing else (repeatable): a CIDR range
    /// (203.0.113.0/24), an IP, a domain (api.example.com) or every name
    /// below one (*.example.org). Domain rules apply to the name looked up
    /// and to the TLS SNI / HTTP Host of the connection; an IP literal
    /// matches no domain rule. Turns the network on.
    #[arg(long = "allow-out", value_name = "RULE", value_parser = parse_rule, help_heading = "Network")]
    pub allow_out: Vec<Rule>,
    /// Deny what RULE names (repeatable; same syntax); deny wins over
    /// allow. Turns the network on (the rest of the internet stays
    /// reachable unless an allow rule says otherwise).
    #[arg(long = "deny-out", value_name = "RULE", value_parser = parse_rule, help_heading = "Network")]
    pub deny_out: Vec<Rule>,
    /// Where sandlot's resolver forwards allowed names: IP or IP:PORT
    /// (default: the host's resolv.conf). Ignored while the network is off.
    #[arg(long, value_name = "ADDR", value_parser = parse_upstream, help_heading = "Network")]
    pub upstream_dns: Option<SocketAddr>,
    /// Hold each direction of the sandbox's traffic to RATE bytes per
    /// second: 500K, 1M, 2G (binary: 1M = 1 MiB/s).
    #[arg(long, value_name = "RATE", value_parser = parse_bandwidth, help_heading = "Network")]
    pub bandwidth: Option<u64>,
    /// Forward host address HOST:HOSTPORT (HOST default 127.0.0.1, not
    /// every interface) to PORT inside the sandbox (repeatable); HOSTPORT
    /// 0 lets the kernel pick, printed on stderr. Works with the network
    /// off too.
    #[arg(long, value_name = "[HOST:]HOSTPORT:PORT", value_parser = parse_publish, help_heading = "Network")]
    pub publish: Vec<Publish>,
}

/// One `--publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub host: SocketAddr,
    pub port: u16,
}

impl NetworkArgs {
    /// The sandbox's [`Network`] option.
    pub fn network(&self) -> Network {
        let mut network = if self.internet {
            Network::internet()
        } else {
            Network::off()
        };
        for rule in &self.allow_out {
            network = network
                .allow_out(rule.as_str())
                .expect("parsed by clap already");
        }
        for rule in &self.deny_out {
            network = network
                .deny_out(rule.as_str())
                .expect("parsed by clap already");
        }
        if let Some(upstream) = self.upstream_dns {
            network = network.upstream_dns(upstream);
        }
        if let Some(rate) = self.bandwidth {
            network = network.bandwidth(rate);
        }
        network
    }

    /// Publishes the ports; says on stderr where the kernel chose.
    pub fn publish(&self, sandbox: &Sandbox) -> Result<(), Error> {
        for publish in &self.publish {
            let at = sandbox.expose_port_on(publish.port, publish.host)?;
            if publish.host.port() == 0 {
                eprintln!("sandlot: published {at} -> {}", publish.port);
            }
        }
        Ok(())
    }
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    text.parse::<Rule>().map_err(|e| e.to_string())
}

fn parse_bandwidth(text: &str) -> Result<u64, String> {
    sandlot::parse_rate(text).map_err(|e| e.to_string())
}

/// `IP` (port 53) or `IP:PORT` (`[v6]:PORT`).
fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("{text:?} is not an IP or IP:PORT (e.g. 1.1.1.1, [2606:4700::1111]:53)")
    })
}

fn parse_port(text: &str, what: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("{what} {text:?} is not a port (0-65535)"))
}

/// `HOSTPORT:PORT`, `HOST:HOSTPORT:PORT` or `[V6]:HOSTPORT:PORT`.
fn parse_publish(text: &str) -> Result<Publish, String> {
    let bad = || {
        format!(
            "{text:?}: expected [HOST:]HOSTPORT:PORT, e.g. 8080:80, 0.0.0.0:8080:80, [::1]:0:80"
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port = parse_port(port, "PORT")?;
    if port == 0 {
        return Err(format!("{text:?}: PORT 0 cannot be published"));
    }
    let host = if host.contains(':') {
        host.parse::<SocketAddr>().map_err(|_| bad())?
    } else {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            parse_port(host, "HOSTPORT")?,
        )
    };
    Ok(Publish { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_an_optional_host() {
        let p = |s: &str| parse_publish(s).unwrap();
        assert_eq!(p("8080:80").host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(p("8080:80").port, 80);
        assert_eq!(p("0.0.0.0:0:80").host, "0.0.0.0:0".parse().unwrap());
        assert_eq!(p("[::1]:9000:22").host, "[::1]:9000".parse().unwrap());
        for bad in [
            "",
            "80",
            "a:80",
            "8080:0",
            "8080:70000",
            "::1:80:80",
            "1.2.3.4:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_defaults_to_port_53() {
        assert_eq!(parse_upstream("1.1.1.1"), Ok("1.1.1.1:53".parse().unwrap()));
        assert_eq!(
            parse_upstream("[::1]:5353"),
            Ok("[::1]:5353".parse().unwrap())
        );
        assert!(parse_upstream("dns.example").is_err());
    }

    #[test]
    fn flags_build_the_network_option() {
        let args = NetworkArgs {
            allow_out: vec![parse_rule("*.example.org").unwrap()],
            deny_out: vec![parse_rule("203.0.113.7").unwrap()],
            bandwidth: Some(parse_bandwidth("1M").unwrap()),
            ..NetworkArgs::default()
        };
        let expected = Network::off()
            .allow_out("*.example.org")
            .unwrap()
            .deny_out("203.0.113.7")
            .unwrap()
            .bandwidth(1 << 20);
        assert_eq!(args.network(), expected);
        assert_eq!(NetworkArgs::default().network(), Network::off());
        // --upstream-dns alone does not turn the network on.
        let upstream = NetworkArgs {
            upstream_dns: Some("1.1.1.1:53".parse().unwrap()),
            ..NetworkArgs::default()
        };
        assert!(!upstream.network().is_on());
        assert!(parse_rule("10.0.0.1/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn no_input_panics(text in "\\PC{0,32}") {
            let _ = parse_publish(&text);
            let _ = parse_upstream(&text);
            let _ = parse_rule(&text);
            let _ = parse_bandwidth(&text);
        }
    }
}
