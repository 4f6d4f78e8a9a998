//! Layer 2, the engine: what every sandbox of a runtime shares — the public
//! error, lifecycle states and events, the sandbox table and each
//! sandbox's shared state, the io thread (`reactor`), the control channel
//! to init, the reaper and teardowns. Services reach a sandbox through
//! [`sandbox::SandboxShared`]; the reactor reaches it only through the
//! handler trait it defines.

pub(crate) mod control;
pub mod error;
pub mod lifecycle;
pub(crate) mod oom;
pub mod options;
pub(crate) mod reactor;
pub(crate) mod reaper;
pub(crate) mod resources;
pub(crate) mod sandbox;
