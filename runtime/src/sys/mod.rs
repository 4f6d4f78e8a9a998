//! The only place in the runtime with `unsafe` code: thin wrappers over
//! syscalls that neither std nor nix expose the way sandlot needs them.
//!
//! Wrappers return `nix::errno::Errno` and never allocate, so the child of a
//! multithreaded host may call them between clone and exec (see
//! `spawn::child`). Each unsafe block says why it is sound.

pub mod clone;
pub mod fd;
pub mod mount;
pub mod process;
pub mod resolve;

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
