//! Process-level calls the child and the lifecycle code need: exec from a
//! memfd, pidfd signalling and reaping, the loopback interface, and ids.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::{check, Errno, SysResult};

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: runs the program in the
/// memfd `fd`. `argv` and `envp` are NULL-terminated pointer arrays built
/// before the fork. Returns only on failure.
pub fn exec_fd(fd: RawFd, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    if argv.last() != Some(&std::ptr::null()) || envp.last() != Some(&std::ptr::null()) {
        return Errno::EINVAL;
    }
    let empty = c"";
    // SAFETY: both arrays are NULL-terminated (checked above) and point at
    // NUL-terminated strings the caller keeps alive; the path is "".
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Errno::last()
}

/// Ends the calling process at once, without running atexit handlers or
/// destructors of the (copied) host state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Sends `signal` through a pidfd: no pid-reuse race.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: i32) -> SysResult<()> {
    // SAFETY: plain syscall on a descriptor; a null siginfo is allowed.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    })?;
    Ok(())
}

/// SIGKILLs the child behind `pidfd` and reaps it: the one way sandlot
/// ends a child it started (a failed setup, a helper, a sandbox's init
/// where no `cgroup.kill` exists). Errors of the kill (it already exited)
/// are not errors; the reap's are returned.
pub fn kill_and_reap(pidfd: BorrowedFd<'_>) -> SysResult<()> {
    let _ = pidfd_signal(pidfd, libc::SIGKILL);
    reap_pidfd(pidfd, true).map(|_| ())
}

/// Reaps the child behind `pidfd` (started with exit signal 0, hence
/// `__WALL`). `block = false` returns `Ok(false)` if it still runs.
pub fn reap_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> SysResult<bool> {
    // SAFETY: an all-zero siginfo_t is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut flags = libc::WEXITED | libc::__WALL;
    if !block {
        flags |= libc::WNOHANG;
    }
    loop {
        // SAFETY: `info` is a valid out-parameter for the call.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        match check(ret as libc::c_long) {
            // SAFETY: waitid filled `info`; si_pid is 0 when nothing exited yet.
            Ok(_) => return Ok(unsafe { info.si_pid() } != 0),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> SysResult<()> {
    // SAFETY: socket() only creates a descriptor, closed below.
    let sock =
        check(
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
                as libc::c_long,
        )? as RawFd;
    // SAFETY: an all-zero ifreq is valid; the name fits in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    let ret = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) };
    let result = check(ret as libc::c_long).map(drop);
    // SAFETY: `sock` was created above and is not used after this.
    unsafe { libc::close(sock) };
    result
}

/// 8 random bytes as 16 lowercase hex digits (sandbox and context ids).
pub fn random_id() -> SysResult<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 8];
    random_bytes(&mut bytes)?;
    let mut id = String::with_capacity(2 * bytes.len());
    for b in bytes {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 0xf)] as char);
    }
    Ok(id)
}

/// Fills `buf` from the kernel's random pool (for sandbox ids).
pub fn random_bytes(buf: &mut [u8]) -> SysResult<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        match check(n as libc::c_long) {
            Ok(n) => done += n as usize,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `sethostname` from a pre-built string (nix's takes `OsStr` and is fine
/// too, but this keeps the child's calls in one style).
pub fn set_hostname(name: &CStr) -> SysResult<()> {
    let bytes = name.to_bytes();
    // SAFETY: the pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) } as libc::c_long)?;
    Ok(())
}

/// The events of `fd` that are ready right now (a zero-timeout poll).
fn ready_now(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::c_short {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
    if ret > 0 {
        pfd.revents
    } else {
        0
    }
}

/// Whether the peer of a connected socket is gone.
pub fn peer_hung_up(sock: BorrowedFd<'_>) -> bool {
    ready_now(sock, libc::POLLRDHUP) & (libc::POLLHUP | libc::POLLRDHUP) != 0
}

/// `prlimit(0, resource, {soft, hard})`.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> SysResult<()> {
    let limit = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is valid for the call; no old value is requested.
    check(unsafe { libc::prlimit64(0, resource, &limit, std::ptr::null_mut()) } as libc::c_long)?;
    Ok(())
}

/// Whether the process behind `pidfd` has exited (its pidfd polls readable).
pub fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    ready_now(pidfd, libc::POLLIN) & libc::POLLIN != 0
}

/// Becomes uid 0 / gid 0 of the current user namespace with no
/// supplementary groups, through raw syscalls.
///
/// Not glibc's setresuid & co.: in a multithreaded process those broadcast
/// the change to every thread, taking glibc-internal locks first. The child
/// of a raw clone is single-threaded but glibc does not know it, so a lock
/// another thread held at clone time would never be released there — the
/// child would hang (it did, under parallel tests). The raw calls change
/// only the calling thread, which is the whole child.
pub fn become_namespace_root() -> SysResult<()> {
    // SAFETY: integer-only syscalls; a zero-length group list needs no
    // pointer.
    unsafe {
        check(libc::syscall(
            libc::SYS_setgroups,
            0usize,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        check(libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32))?;
        check(libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32))?;
    }
    Ok(())
}

/// Writes `data` to the file at `path` in one `write` (for the child, which
/// must not allocate: cgroup and proc files take a value per write).
pub fn write_file(path: &CStr, data: &[u8]) -> SysResult<()> {
    let fd = super::fd::open(path, libc::O_WRONLY)?;
    // SAFETY: `data` is valid for reads of its length; `fd` was just opened
    // and is closed right after.
    let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let result = check(written as libc::c_long);
    // SAFETY: `fd` is ours and not used after this.
    unsafe { libc::close(fd) };
    match result {
        Ok(n) if n as usize == data.len() => Ok(()),
        Ok(_) => Err(Errno::EIO),
        Err(e) => Err(e),
    }
}

/// `pidfd_open(pid, 0)`: a pidfd for a process that need not be our child
/// (it can be waited on with poll and signalled, not reaped).
pub fn pidfd_open(pid: i32) -> SysResult<std::os::fd::OwnedFd> {
    // SAFETY: integer-only syscall.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Waits until the process behind `pidfd` has exited (its pidfd polls
/// readable), for at most `timeout`: the end of a process that is not our
/// child, which we cannot reap. `ETIMEDOUT` if it still runs.
pub fn wait_pidfd_exited(pidfd: BorrowedFd<'_>, timeout: std::time::Duration) -> SysResult<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        match check(ret as libc::c_long) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) => return Err(Errno::ETIMEDOUT),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
