//! The system calls only the monitor makes, as thin safe wrappers (the
//! monitor's counterpart of `crate::sys`).

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `fork()`: `Ok(0)` in the child, the child's pid in the parent. The
/// monitor is single-threaded when it forks.
pub fn fork() -> io::Result<i32> {
    // SAFETY: fork in a single-threaded process; the child only continues
    // the monitor's own code.
    cvt(unsafe { libc::fork() } as libc::c_long).map(|pid| pid as i32)
}

/// Ends the process at once (the parent half of the fork has nothing to
/// clean up).
pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// A session of our own: no terminal, no signals meant for the creator's
/// process group.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    cvt(unsafe { libc::setsid() } as libc::c_long).map(drop)
}

/// Closes every descriptor from `first` up (those the creator left open).
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: closing descriptors nothing in this process uses yet.
    cvt(unsafe { libc::close_range(first, u32::MAX, 0) } as libc::c_long).map(drop)
}

/// A pidfd for `pid` (not our child: we only watch it and signal it).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer-only syscall.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}

pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: c_int) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor; a null siginfo is allowed.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    })
    .map(drop)
}

/// `flock(fd, how)`, retried on EINTR; `Ok(false)` when a non-blocking
/// request would have to wait.
pub fn flock(fd: BorrowedFd<'_>, how: c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we borrow.
        match cvt(unsafe { libc::flock(fd.as_raw_fd(), how) } as libc::c_long) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// An inotify instance (non-blocking, close-on-exec) watching `dir` for
/// files renamed into it.
pub fn watch_renames_into(dir: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: integer-only syscall.
    let fd =
        cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) } as libc::c_long)?;
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as c_int) };
    // SAFETY: `dir` is NUL-terminated and outlives the call.
    cvt(unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            dir.as_ptr(),
            libc::IN_MOVED_TO | libc::IN_DELETE_SELF | libc::IN_ONLYDIR,
        )
    } as libc::c_long)?;
    Ok(fd)
}

/// Reads (and forgets) whatever is queued on a non-blocking descriptor;
/// `Ok(false)` at end of file.
pub fn drain(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: read writes at most buf.len() bytes into buf.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match cvt(n as libc::c_long) {
            Ok(0) => return Ok(false),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
