//! The only place in the runtime with `unsafe` code: thin wrappers over
//! syscalls that neither std nor nix expose the way sandlot needs them.
//!
//! Everything here may run in the child of a multithreaded host between
//! `clone` and `execve`: no allocation, no locks, no panics. Each unsafe
//! block says why it is sound.

pub mod bpf;
pub(crate) mod caps;
pub mod clone;
pub mod command;
pub mod fd;
pub mod mount;
pub mod process;
pub mod pty;
pub mod resolve;
pub(crate) mod seccomp;

/// Forked-child helpers for tests of irreversible calls; the integration
/// tests include this file too (`#[path]`).
#[cfg(test)]
pub(crate) mod testing;

pub use nix::errno::Errno;

/// Result of a raw syscall wrapper.
pub type SysResult<T> = Result<T, Errno>;

/// Turns the `-1 + errno` convention of libc calls into a `Result`.
fn check(ret: libc::c_long) -> SysResult<libc::c_long> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// The calling thread's `errno`, raw (for wrappers that report `Err(i32)`).
fn errno() -> i32 {
    Errno::last_raw()
}
