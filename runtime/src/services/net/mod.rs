//! The services behind a sandbox's network: the rules ([`rules`]), the
//! resolver ([`dns`], [`fakeip`]), the proxy engine ([`engine`], with
//! [`sniff`] and [`bucket`]) and port exposure. The kernel pieces they
//! answer on are in `kernel::net`.
//!
//! # How a sandbox's traffic flows
//!
//! The sandbox's network namespace is the host's (made by
//! `kernel::net::setup`): `lo`, a local route for every address, and a
//! steering program. Inside, every destination is local, so:
//!
//! - **TCP** to anything but loopback is handed to the host's proxy
//!   listener in the namespace; the engine accepts it, reads the
//!   destination the sandbox asked for (`getsockname`), decides, dials it
//!   from the host (the host's routes, addresses and firewall apply), and
//!   copies both ways. A refused connection is reset right after it was
//!   accepted: programs see "connection reset by peer" (the handshake had
//!   completed inside the namespace), and the operator sees a
//!   [`NetworkDenied`] event.
//! - **DNS** (UDP or TCP port 53, any address, loopback included) goes to
//!   the host's resolver socket; answers leave from the address the query
//!   was sent to, so any `nameserver` line works (a template's 127.0.0.53
//!   too). The sandbox cannot run a DNS server of its own on port 53.
//! - **Loopback** stays the sandbox's own: its servers on 127.0.0.1 and
//!   ::1 work as on any machine, and the host's loopback is unreachable.
//! - **Other UDP** finds no socket: the kernel answers "port unreachable"
//!   at once (`ECONNREFUSED` on a connected socket), whatever the rules.
//!   QUIC and HTTP/3 therefore fail fast and clients that can (browsers,
//!   curl) fall back to TCP; UDP-only protocols (NTP, WireGuard, games)
//!   do not work. This holds with `--internet` too: sandlot relays TCP and
//!   DNS only.
//! - **ICMP**: root inside cannot open raw sockets (no `CAP_NET_RAW` over a
//!   host-owned namespace) and ICMP datagram sockets are off
//!   (`ping_group_range` is empty in a new namespace): `ping` fails with
//!   "operation not permitted".
//!
//! # Rules
//!
//! See [`rules`]. With domain rules the resolver answers allowed names
//! with per-sandbox fake addresses (198.18.0.0/15) and the proxy dials the
//! name itself, re-checking the address it resolves against the always-
//! denied ranges at connect time; IP literals match no domain rule; the
//! TLS SNI or HTTP Host of the first bytes must pass the domain rules too
//! (only the first request of a kept-alive HTTP/1 connection is read;
//! with ECH only the outer, public name is visible). Names not allowed
//! answer NXDOMAIN and are never forwarded upstream. `/etc/hosts` inside
//! changes nothing: a name mapped there is an IP literal to the proxy.
//!
//! The proxy never dials an address of the host itself (the host's
//! services listening on the any-address would answer); no rule opens
//! that.

pub mod bucket;
pub mod dns;
pub mod engine;
pub mod fakeip;
pub mod rules;
pub(crate) mod service;
pub mod sniff;

pub use crate::engine::lifecycle::{DeniedBy, Destination, NetworkDenied};
pub use crate::engine::network::{parse_rate, Network, Rule, RuleError, Target};
pub use engine::{FailureHook, NetEngine, NetworkConfig, NetworkCounters, SandboxNet};
pub use rules::Policy;
