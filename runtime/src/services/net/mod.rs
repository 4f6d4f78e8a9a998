//! The services behind a sandbox's network: the rules, the resolver, the
//! proxy engine and port exposure. The kernel pieces they answer on are
//! in `kernel::net`.

pub mod rules;

pub use rules::{parse_rate, DeniedBy, Network, Policy, Rule, RuleError, Target};
