//! Test support for irreversible process-wide changes (seccomp filters,
//! capability drops, no_new_privs): run them in a forked child and look at
//! how it ended. Tests that fork hold [`FORK_LOCK`] so two children are never
//! in flight at once (their pipes and ptys cannot leak into each other).

#![allow(dead_code)] // each test crate uses a part of it

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

static FORK_LOCK: Mutex<()> = Mutex::new(());

/// Serialises forking tests; a panic in one test does not block the others.
pub(crate) fn fork_lock() -> MutexGuard<'static, ()> {
    FORK_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a forked child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `_exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// Exit code of a child whose closure panicked.
pub(crate) const PANICKED: i32 = 101;

/// Forks; the child runs `f` with the write end of a pipe and `_exit`s with
/// its return value. The parent collects everything written to the pipe and
/// the child's outcome. The closure must stick to system calls: the test
/// harness is multithreaded.
pub(crate) fn in_child_with_output(f: impl FnOnce(&OwnedFd) -> i32) -> (Outcome, Vec<u8>) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: the child only runs `f` (system calls, by contract) and then
    // `_exit`, never returning into the test harness; glibc's fork also
    // leaves malloc usable in the child should `f` allocate after all.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(read_end);
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&write_end)))
            .unwrap_or(PANICKED);
        // SAFETY: `_exit` ends the child at once without running the
        // host's atexit handlers or destructors; always sound.
        unsafe { libc::_exit(code) };
    }
    drop(write_end);
    let mut output = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut output)
        .expect("read from the child's pipe");
    (wait(pid), output)
}

/// [`in_child_with_output`] without the output.
pub(crate) fn in_child(f: impl FnOnce() -> i32) -> Outcome {
    in_child_with_output(|_| f()).0
}

/// Waits for `pid` and decodes its status.
pub(crate) fn wait(pid: libc::pid_t) -> Outcome {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int for waitpid to fill.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::EINTR), "waitpid: {err}");
    }
    if libc::WIFEXITED(status) {
        Outcome::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Outcome::Signaled(libc::WTERMSIG(status))
    } else {
        panic!("unexpected wait status {status:#x}")
    }
}

/// A raw system call with integer arguments; `Ok(return value)` or
/// `Err(errno)`.
///
/// # Safety
///
/// The caller must make sure the call is sound for these arguments: any
/// pointer passed must be valid for what the system call does with it, and
/// the call must not break invariants the Rust runtime relies on (unmapping
/// memory, closing fds owned elsewhere, ...).
pub(crate) unsafe fn raw_syscall(nr: libc::c_long, args: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: forwarded to the caller's contract.
    let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if rc == -1 {
        Err(nix::errno::Errno::last_raw())
    } else {
        Ok(rc)
    }
}

/// Maps a system call result to an exit code: 0 for success, the errno
/// otherwise.
pub(crate) fn exit_code(result: Result<i64, i32>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(errno) => errno,
    }
}

/// Makes the root mount tree of a fresh mount namespace private so that test
/// mounts stay in the child. Returns the errno on failure.
pub(crate) fn private_mount_namespace() -> Result<(), i32> {
    // SAFETY: unshare takes only flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    // SAFETY: the target is a valid C string; source, fstype and data may be
    // null for a propagation change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    Ok(())
}

/// Mounts a tmpfs on `/tmp` (meant to run inside [`private_mount_namespace`])
/// and unmounts it again on success. Returns the errno of the mount.
pub(crate) fn try_mount_tmpfs_on_tmp() -> Result<(), i32> {
    // SAFETY: all pointers are valid C strings or null (no data).
    let rc = unsafe {
        libc::mount(
            c"sandlot-test".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    // SAFETY: a valid C string.
    unsafe { libc::umount2(c"/tmp".as_ptr(), libc::MNT_DETACH) };
    Ok(())
}

/// Fails the calling test loudly unless it runs as root (the design's rule:
/// no silent skips).
pub(crate) fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (CI runs as root); run `sudo -E cargo test -p sandlot --lib`"
    );
}
