//! Layer 1, kernel-facing: the mechanisms a sandbox is built from, each
//! over the raw calls of `sys/` — cgroups, the seccomp profile, capability
//! sets, the user namespace and its id maps, mounts, the clone sequence
//! (`spawn/`), the embedded init, limits, and file operations resolved
//! inside a sandbox's root (`fs/`). Nothing here knows what a sandbox's
//! lifecycle is; everything returns [`KernelError`] or its own error type.

pub mod caps;
// Its whole API is driven by its own integration tests (the `testing`
// feature); the runtime uses a part of it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub mod cgroups;
pub(crate) mod error;
pub mod fs;
pub mod init_binary;
pub mod limits;
pub(crate) mod monitor;
pub(crate) mod mounts;
// Also driven by its own integration tests and benchmarks (the `testing`
// feature), which reach parts the runtime does not use.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub mod net;
pub(crate) mod procs;
pub mod seccomp;
pub(crate) mod spawn;
pub mod userns;
pub(crate) mod version;

pub use error::KernelError;
