//! Thin, async-signal-safe wrappers around the system calls that need
//! `unsafe`. This module is the only place in the crate where unsafe code is
//! allowed (`#![deny(unsafe_code)]` at the crate root); every unsafe block
//! says why it is sound.
//!
//! Everything here may run in the child of a multithreaded host between
//! `clone` and `execve`: no allocation, no locks, no panics. Failures come
//! back as the raw errno (`Err(i32)`) so the child can report a fixed-size
//! `(step, errno)` frame.

pub(crate) mod caps;
pub(crate) mod seccomp;

#[cfg(test)]
pub(crate) mod testing;

/// The calling thread's `errno`.
fn errno() -> i32 {
    // SAFETY: `__errno_location` has no preconditions and returns a valid,
    // aligned pointer to the calling thread's errno, live for the thread's
    // whole life; reading it is async-signal-safe.
    unsafe { *libc::__errno_location() }
}
