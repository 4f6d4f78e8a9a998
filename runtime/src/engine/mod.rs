//! Layer 2, the engine: what every sandbox of a runtime shares — the public
//! error, lifecycle states and events, the sandbox table and each
//! sandbox's shared state, the io thread (`reactor`) and the output path,
//! the control channel to init, the reaper and the teardown threads.
//! Services reach a sandbox through [`sandbox::SandboxShared`]; the io
//! thread and the reaper reach it only through the traits they define
//! (`reactor::Handler`, `reaper::Expiring`).

pub(crate) mod control;
pub mod error;
pub(crate) mod exec;
pub(crate) mod extensions;
pub mod lifecycle;
pub mod network;
pub(crate) mod oom;
pub mod options;
pub(crate) mod orphans;
pub mod output;
pub(crate) mod persist;
pub(crate) mod reactor;
pub(crate) mod reaper;
pub(crate) mod sandbox;
pub(crate) mod sync;
