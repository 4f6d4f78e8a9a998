//! Descriptor plumbing: passing stdio descriptors to init with SCM_RIGHTS,
//! closing everything a child inherited, and duplicating to fixed numbers.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{check, Errno, SysResult};

/// Most descriptors one control message carries (a command's stdio and
/// the descriptors it gets at fixed numbers).
pub const MAX_FDS: usize = sandlot_proto::MAX_SPAWN_FDS;

/// Control-message buffer for up to [`MAX_FDS`] descriptors, aligned for
/// `cmsghdr` (CMSG_SPACE(8 * 4) = 48 bytes on 64-bit).
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

const _: () = assert!(16 + 4 * MAX_FDS <= 64, "CmsgBuf holds MAX_FDS descriptors");

/// Sends one datagram carrying `fds` (may be empty) on a SEQPACKET socket.
/// Retries EINTR; never blocks forever when `nonblocking` is set (then a
/// full socket buffer is `EAGAIN`).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> SysResult<()> {
    if fds.len() > MAX_FDS {
        return Err(Errno::EINVAL);
    }
    let mut cmsg = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = (fds.len() * std::mem::size_of::<RawFd>()) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `space` (<= 64) aligned bytes, so
        // the first header and its data area lie inside `cmsg`.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: `msg` and everything it points to live across the call.
        let ret = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
        match check(ret as libc::c_long) {
            Ok(n) if n as usize == data.len() => return Ok(()),
            Ok(_) => return Err(Errno::EMSGSIZE),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one datagram with room for at most one descriptor, for the one
/// event of init's that carries one (a terminal's master end). The caller
/// decides whether to keep it; more descriptors than one are discarded by
/// the kernel, never installed. Returns `Ok((0, None))` at end of stream;
/// a datagram longer than `buf` is an error (`EMSGSIZE`).
pub fn recv_datagram_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> SysResult<(usize, Option<OwnedFd>)> {
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cmsg = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = space;
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let n = loop {
        // SAFETY: `msg` points at `iov` (valid for `buf.len()` bytes) and at
        // `cmsg` (`space` <= 64 aligned bytes), both alive across the call.
        let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        match check(ret as libc::c_long) {
            Ok(n) => break n as usize,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let mut fd = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `cmsg`; the CMSG
    // macros walk only within them.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
                let len = (*hdr).cmsg_len - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    // SAFETY (inner): SCM_RIGHTS installed a fresh descriptor
                    // in our table for each entry; we own it (and close it
                    // if there were ever more than the one room was made for).
                    let received = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    if fd.is_none() {
                        fd = Some(received);
                    }
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(Errno::EMSGSIZE);
    }
    Ok((n, fd))
}

/// `close_range(first, u32::MAX, 0)`: closes every descriptor from `first`.
pub fn close_from(first: u32) -> SysResult<()> {
    // SAFETY: closing descriptors has no memory-safety impact on this
    // process: it runs in a child that owns nothing that refers to them.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) })?;
    Ok(())
}

/// `dup3(old, new, flags)`, for placing a descriptor at a fixed number in
/// the child. The child is about to exec, so the duplicate's ownership is
/// handed to the next program.
pub fn dup_to(old: RawFd, new: RawFd, cloexec: bool) -> SysResult<()> {
    if old == new {
        // dup3 refuses equal numbers; only the flag needs setting.
        let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
        // SAFETY: F_SETFD on a descriptor number only changes its flags.
        check(unsafe { libc::fcntl(old, libc::F_SETFD, flags) } as libc::c_long)?;
        return Ok(());
    }
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 only manipulates the descriptor table.
    check(unsafe { libc::dup3(old, new, flags) } as libc::c_long)?;
    Ok(())
}

/// A close-on-exec duplicate of `fd` numbered at least `min`.
pub fn dup_above(fd: RawFd, min: RawFd) -> SysResult<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC only manipulates the descriptor table.
    Ok(check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) } as libc::c_long)? as RawFd)
}

/// `open(path, flags)` for the child, which must not allocate.
pub fn open(path: &std::ffi::CStr, flags: libc::c_int) -> SysResult<RawFd> {
    // SAFETY: `path` is NUL-terminated and valid for the call.
    Ok(
        check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)?
            as RawFd,
    )
}

/// Borrows a descriptor number for as long as the process keeps it open.
/// For the child, whose few descriptors stay open until exec or exit, and
/// for numbers the caller owns by construction.
pub fn borrow(raw: RawFd) -> BorrowedFd<'static> {
    // SAFETY: callers only pass descriptors that stay open for the rest of
    // the (child) process's life or of the borrow's use.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// Receives one datagram and the descriptors attached to it (at most
/// [`MAX_FDS`], made close-on-exec), from a trusted peer only: the
/// runtime's own spawner thread. Control data that is not SCM_RIGHTS, or
/// cut short, is an error (`EPROTO`), and the descriptors already
/// received are closed.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<(usize, Vec<OwnedFd>)> {
    let mut cmsg = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len();
    let n = loop {
        // SAFETY: `msg` points at `iov` (valid for `buf.len()` bytes) and at
        // `cmsg` (64 aligned bytes), both alive across the call.
        let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match check(ret as libc::c_long) {
            Ok(n) => break n as usize,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let mut fds = Vec::new();
    let mut bad = msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0;
    // SAFETY: the kernel filled `msg_controllen` bytes of `cmsg`; the CMSG
    // macros walk only within them.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
                let len = (*hdr).cmsg_len - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    // SAFETY (inner): SCM_RIGHTS installed a fresh
                    // descriptor in our table for each entry; we own it.
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            } else {
                bad = true;
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    if bad || fds.len() > MAX_FDS {
        return Err(Errno::EPROTO);
    }
    Ok((n, fds))
}

/// Closes every descriptor of the calling thread's table except `keep`
/// (with `close_range` around them). For a thread that just unshared its
/// table and must not hold the rest of the process's descriptors open.
pub fn close_all_except(keep: &[RawFd]) -> SysResult<()> {
    let mut keep: Vec<u32> = keep.iter().map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 0u32;
    for fd in keep.into_iter().chain([u32::MAX]) {
        if fd > first {
            // SAFETY: the caller's thread owns this table and keeps no
            // reference to the descriptors closed here.
            check(unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0u32) })?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// Bytes ready to be read from a pipe or socket now (`FIONREAD`), without
/// reading them. See `ioctl_pipe(2)`.
pub fn readable_bytes(fd: BorrowedFd<'_>) -> SysResult<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points to
    // a live local of that type.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    check(rc as libc::c_long)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `flock(fd, how)` (`LOCK_SH`, `LOCK_EX`, `LOCK_UN`, with `LOCK_NB`),
/// retried on EINTR. `Ok(false)`: a `LOCK_NB` request would have waited.
/// See `flock(2)`: the lock belongs to the open file description, so each
/// process (each open) holds its own.
pub fn flock(fd: BorrowedFd<'_>, how: libc::c_int) -> SysResult<bool> {
    loop {
        // SAFETY: flock only changes the lock state of a descriptor we borrow.
        match check(unsafe { libc::flock(fd.as_raw_fd(), how) } as libc::c_long) {
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EWOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}
