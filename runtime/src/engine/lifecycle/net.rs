//! What the network refused, as the runtime reports it: every connection
//! or name a sandbox's rules (or the always-denied ranges) refused is a
//! [`NetworkDenied`] on [`Runtime::network_events`](crate::Runtime::network_events),
//! naming the destination and what denied it. Plain data; the decisions are
//! `services::net`'s.

use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

/// What a sandbox tried to reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A connection to this address (the one the sandbox asked for).
    Address(SocketAddr),
    /// A connection to this name (through its fake address), and port.
    Name(String, u16),
    /// A DNS lookup of this name.
    Lookup(String),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Address(addr) => write!(f, "{addr}"),
            Destination::Name(name, port) => write!(f, "{name}:{port}"),
            Destination::Lookup(name) => write!(f, "lookup of {name}"),
        }
    }
}

/// A refused connection or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkDenied {
    pub sandbox_id: String,
    pub destination: Destination,
    pub denied_by: DeniedBy,
    pub at: SystemTime,
}

impl fmt::Display for NetworkDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sandbox {}: {} denied: {}",
            self.sandbox_id, self.destination, self.denied_by
        )
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
