//! The services behind a sandbox's network: the rules, the resolver, the
//! proxy engine and port exposure. The kernel pieces they answer on are
//! in `kernel::net`.

pub mod bucket;
pub mod dns;
pub mod fakeip;
pub mod rules;
pub mod sniff;

pub use rules::{parse_rate, DeniedBy, Network, Policy, Rule, RuleError, Target};
pub mod engine;

pub use engine::{DeniedEvent, Destination, EngineConfig, NetCounters, NetEngine, SandboxNet};
