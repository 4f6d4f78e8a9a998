//! The lifecycle of a sandbox: its states and their legal transitions, and
//! the events every transition emits.

mod events;
mod state;

pub(crate) use events::EventBus;
pub use events::{LifecycleEvent, Reason};
pub use state::State;
