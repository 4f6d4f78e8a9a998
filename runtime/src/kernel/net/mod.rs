//! The kernel side of a sandbox's network: a namespace the host makes and
//! owns, `lo` with a local route for every address, and a BPF sk_lookup
//! program that hands every TCP connection to the host's proxy listener
//! and every DNS packet to the host's resolver. The services that answer
//! on those sockets are in `services::net`.
//!
//! Why this shape (measured, see ARCHITECTURE.md "Network"): no veth per
//! sandbox (moving one into a namespace costs ~17 ms, deleting one ~16
//! ms), no NAT, no nftables; the sandbox cannot touch any of it because
//! the namespace belongs to the host's user namespace.

pub mod factory;
pub mod netlink;
pub mod netns;
pub mod program;
pub mod setup;
pub mod steering;
pub mod sysctl;

pub use factory::NetnsFactory;
pub use netns::{Entered, NetNamespace};
pub use setup::{HostSockets, SandboxNetns};
pub use steering::Steering;

#[cfg(test)]
mod tests;
