//! The lifecycle of a sandbox: its states and their legal transitions, and
//! the events every transition emits, the other events a runtime
//! publishes, and what a process run in a sandbox reports. Plain data: this
//! module imports nothing else of the engine.

mod events;
mod info;
mod net;
mod process;
mod state;

pub(crate) use events::EventBus;
pub use events::{
    AlertKind, LifecycleEvent, OomEvent, Reason, ResourceAlert, ResourceEvent, ResourceKind,
    Subscription, SUBSCRIPTION_CAPACITY,
};
pub use info::SandboxInfo;
pub use net::{DeniedBy, Destination, NetworkDenied};
pub use process::{CommandExit, ExitReason, OutputStream, ProcessEvent, Signal};
pub use state::State;
