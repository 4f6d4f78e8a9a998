//! `clone3` with fork semantics: the child continues on a copy of the
//! caller's stack, in new namespaces, optionally already inside a cgroup v2
//! directory, and the parent gets a pidfd.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{check, SysResult};

/// `struct clone_args` from linux/sched.h (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

pub const CLONE_PIDFD: u64 = 0x1000;
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A child started by [`fork_into`]: its pid in the caller's pid namespace
/// and a pidfd that stays valid (and race-free) until it is closed.
pub struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// Creates a child process with `flags` (namespace flags and the like) and
/// runs `child` in it. `exit_signal` is 0: the child sends no SIGCHLD and
/// is invisible to a host that reaps with `waitpid(-1)`; reap it with
/// [`super::process::wait_pidfd`].
///
/// `child` runs in a copy of a possibly multithreaded process: it must only
/// make async-signal-safe calls (no allocation, no locks) and must end with
/// `exec` or `_exit` — its type (`Infallible`) says it cannot return.
pub fn fork_into(
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
    child: impl FnOnce() -> std::convert::Infallible,
) -> SysResult<Child> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: 0,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size we pass; with stack 0
    // the child runs on a private copy of this stack (no CLONE_VM), exactly
    // like fork. The kernel writes the pidfd into `pidfd`, which outlives the
    // call.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;
    if ret == 0 {
        #[allow(unreachable_code)]
        let _never: std::convert::Infallible = child();
    }
    Ok(Child {
        pid: ret as i32,
        // SAFETY: on success the kernel stored a fresh pidfd that nothing
        // else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}
