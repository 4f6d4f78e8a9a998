//! The lifecycle of a sandbox: its states and their legal transitions, the
//! events every transition emits, and the one reaper thread that owns all
//! deadlines.

mod events;
mod reaper;
mod state;

pub(crate) use events::EventBus;
pub use events::{LifecycleEvent, Reason};
pub(crate) use reaper::{Reaper, ReaperJob};
pub use state::State;
