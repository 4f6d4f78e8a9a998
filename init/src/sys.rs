//! The only module with `unsafe`: thin safe wrappers over the libc calls
//! init makes. Each wrapper keeps the kernel's meaning, retries `EINTR` where
//! retrying is the right answer, and reports failures as `io::Error` with the
//! raw errno. The child side of a spawn lives here too, because it runs in a
//! `CLONE_VM` copy of init where only raw syscalls are sound.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

fn cvt(ret: c_int) -> io::Result<c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Runs `f` again for as long as it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The errno of the last failed libc call of this thread. Does not allocate,
/// so the spawn child may use it.
fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

// ---------------------------------------------------------------------------
// Process attributes

pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// `PR_SET_CHILD_SUBREAPER`: orphans below us are reparented to us, as they
/// would be to a PID 1.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only changes a process attribute.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) }).map(drop)
}

/// Names the process for `ps` and `/proc/<pid>/comm`: exec from a memfd
/// would otherwise leave the descriptor number as its name.
pub fn set_name(name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes; `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) }).map(drop)
}

/// `PR_SET_DUMPABLE 0`: nobody without CAP_SYS_PTRACE in our user namespace
/// may ptrace us or open our `/proc/<pid>` memory and descriptors.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only changes a process attribute.
    cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) }).map(drop)
}

pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; the caller chooses the target.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

// ---------------------------------------------------------------------------
// Descriptors

static CONTROL_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the inherited control socket at `fd` after checking it
/// is an open `SOCK_SEQPACKET` socket. Succeeds at most once per process.
pub fn adopt_control_socket(fd: RawFd) -> io::Result<OwnedFd> {
    let mut kind: c_int = 0;
    let mut len = mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`, a live c_int.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut c_int).cast(),
            &mut len,
        )
    })?;
    if kind != libc::SOCK_SEQPACKET {
        return Err(io::Error::from_raw_os_error(libc::ENOTSOCK));
    }
    if CONTROL_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    // SAFETY: the descriptor is open (getsockopt succeeded), it was inherited
    // rather than opened by any code in this process, and the flag above
    // makes sure only one OwnedFd is ever made from it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Marks every descriptor from `first` up close-on-exec
/// (`close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`).
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: with CLOSE_RANGE_CLOEXEC nothing is closed, only flags change.
    cvt(unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int) }).map(drop)
}

pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFD only changes the flags of a descriptor we borrow.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// Clears `O_NONBLOCK`: the protocol's sends are blocking.
pub fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL only reads the status flags of a descriptor we borrow.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: F_SETFL only changes the status flags of a descriptor we borrow.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// A close-on-exec duplicate of `fd` numbered `min` or above
/// (`F_DUPFD_CLOEXEC`).
pub fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only adds a descriptor to our table.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: fcntl returned a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sets `O_NONBLOCK` (the listening socket: accepting must never wait).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL only reads the status flags of a descriptor we borrow.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: F_SETFL only changes the status flags of a descriptor we borrow.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// A close-on-exec, non-blocking pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: read writes at most buf.len() bytes into buf.
        cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
    })
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<usize> {
    retry(|| {
        // SAFETY: poll reads and writes exactly fds.len() pollfd structs.
        cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) })
            .map(|n| n as usize)
    })
}

// ---------------------------------------------------------------------------
// The control socket

/// The number of descriptors a control message may carry.
const MAX_FDS: usize = sandlot_proto::MAX_SPAWN_FDS;

/// One datagram from the control socket.
pub struct Received {
    pub len: usize,
    /// The datagram or its descriptors did not fit (MSG_TRUNC / MSG_CTRUNC).
    pub truncated: bool,
    /// Every descriptor that arrived (close-on-exec), whatever the message.
    pub fds: Vec<OwnedFd>,
}

/// Receives one datagram and its `SCM_RIGHTS` descriptors without blocking.
/// `Ok(None)` means nothing was queued after all.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // Room for MAX_FDS descriptors, aligned for cmsghdr.
    // SAFETY: CMSG_SPACE is a pure size computation.
    const SPACE: usize =
        unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<c_int>()) as u32) } as usize;
    let mut control = [0u64; SPACE.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data for which all-zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = SPACE as _;
    let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
    // SAFETY: msg points at `iov` (covering `buf`) and at `control`, all live
    // and writable for the sizes given.
    let len = match retry(|| cvt_size(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) }))
    {
        Ok(len) => len,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut fds = Vec::new();
    // SAFETY: after recvmsg, msg describes `control` with the length the
    // kernel filled in; CMSG_FIRSTHDR/NXTHDR stay inside it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and points inside `control` (see above).
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure size computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = (hdr.cmsg_len as usize).saturating_sub(header) / mem::size_of::<c_int>();
            // SAFETY: the data of an SCM_RIGHTS header holds `n` ints, inside `control`.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<c_int>();
            for i in 0..n {
                // SAFETY: i < n (see above); the data may be unaligned.
                let fd = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel just installed this descriptor for us;
                // nothing else in the process knows its number.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: msg and cmsg are valid as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok(Some(Received {
        len,
        truncated,
        fds,
    }))
}

/// Whether the peer of a connected socket has shut down or gone away;
/// distinguishes an empty datagram from end of file.
pub fn peer_gone(sock: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    match poll(&mut fds, 0) {
        Ok(_) => fds[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0,
        Err(_) => true,
    }
}

/// Sends one datagram, with a descriptor attached (`SCM_RIGHTS`) when
/// `fd` is given. Blocking: until the kernel takes it (`Ok(true)`). With
/// `wait` false, `Ok(false)` when the socket's buffer is full (a persistent
/// sandbox queues the event rather than let one slow connection stall the
/// others). An error means the peer is gone.
pub fn send(
    sock: BorrowedFd<'_>,
    buf: &[u8],
    fd: Option<BorrowedFd<'_>>,
    wait: bool,
) -> io::Result<bool> {
    // SAFETY: CMSG_SPACE is a pure size computation.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(mem::size_of::<c_int>() as u32) } as usize;
    let mut control = [0u64; SPACE.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data for which all-zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = SPACE as _;
        // SAFETY: msg_control covers SPACE aligned bytes, room for one
        // header and one int, so the first header and its data lie inside
        // `control`.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(mem::size_of::<c_int>() as u32) as _;
            libc::CMSG_DATA(hdr)
                .cast::<c_int>()
                .write_unaligned(fd.as_raw_fd());
        }
    }
    let flags = libc::MSG_NOSIGNAL | if wait { 0 } else { libc::MSG_DONTWAIT };
    let sent = retry(|| {
        // SAFETY: msg points at `iov` (covering `buf`, only read) and, with
        // a descriptor, at `control`, all alive across the call.
        // MSG_NOSIGNAL: a gone peer is an error, not a SIGPIPE.
        cvt_size(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) })
    });
    match sent {
        Ok(_) => Ok(true),
        Err(e) if !wait && e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// Terminals

/// A new pseudo-terminal of the devpts mounted at /dev/pts (the sandbox's
/// own instance): (master, slave), both close-on-exec, neither our
/// controlling terminal. The slave is taken from the master
/// (`TIOCGPTPEER`), never looked up by path.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
    let fd = cvt(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open returned a fresh descriptor owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, a live local.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new
    // descriptor for the slave.
    let fd = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: the ioctl returned a fresh descriptor owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((master, slave))
}

/// Sets a terminal's size (`TIOCSWINSZ`).
pub fn set_window_size(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, a live local.
    cvt(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) }).map(drop)
}

/// Gives a file to `uid` (the group stays): a terminal's slave to the user
/// whose session it is, as login does.
pub fn fchown_user(fd: BorrowedFd<'_>, uid: u32) -> io::Result<()> {
    // SAFETY: fchown changes the owner of a file we hold open; -1 keeps
    // the group.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, u32::MAX) }).map(drop)
}

/// Whether `fd` is a listening `SOCK_SEQPACKET` socket (what
/// `Request::Persist` must carry).
pub fn is_listening_seqpacket(fd: BorrowedFd<'_>) -> bool {
    let option = |name: c_int| -> Option<c_int> {
        let mut value: c_int = 0;
        let mut len = mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, a live c_int.
        let ret = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut c_int).cast(),
                &mut len,
            )
        };
        (ret == 0).then_some(value)
    };
    option(libc::SO_TYPE) == Some(libc::SOCK_SEQPACKET) && option(libc::SO_ACCEPTCONN) == Some(1)
}

/// Accepts one pending connection without blocking (close-on-exec);
/// `Ok(None)` when none is pending.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let accepted = retry(|| {
        // SAFETY: no peer address is requested (both pointers null).
        cvt(unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                ptr::null_mut(),
                ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        })
    });
    match accepted {
        // SAFETY: accept4 returned a new descriptor nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Clears the parent-death signal the runtime's child armed: a persistent
/// sandbox outlives the process that created it.
pub fn clear_parent_death_signal() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only changes a process attribute.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong) }).map(drop)
}

// ---------------------------------------------------------------------------
// Signals

pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn empty() -> SigSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the whole set.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            SigSet(set.assume_init())
        }
    }

    pub fn full() -> SigSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises the whole set.
        unsafe {
            libc::sigfillset(set.as_mut_ptr());
            SigSet(set.assume_init())
        }
    }

    pub fn add(&mut self, signal: c_int) -> io::Result<()> {
        // SAFETY: the set is initialised; invalid numbers give EINVAL.
        cvt(unsafe { libc::sigaddset(&mut self.0, signal) }).map(drop)
    }
}

/// `sigprocmask(SIG_BLOCK, set)`, returning the previous mask.
pub fn block_signals(set: &SigSet) -> io::Result<SigSet> {
    sigprocmask(libc::SIG_BLOCK, set)
}

/// `sigprocmask(SIG_SETMASK, set)`, returning the previous mask.
pub fn set_signal_mask(set: &SigSet) -> io::Result<SigSet> {
    sigprocmask(libc::SIG_SETMASK, set)
}

fn sigprocmask(how: c_int, set: &SigSet) -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    // SAFETY: both sets are initialised sigset_t values we own or borrow.
    cvt(unsafe { libc::sigprocmask(how, &set.0, &mut old.0) })?;
    Ok(old)
}

/// A non-blocking, close-on-exec signalfd for `set` (which must be blocked).
pub fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: signalfd only reads the set.
    let fd = cvt(unsafe { libc::signalfd(-1, &set.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: signalfd(-1, ..) returned a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads and discards every queued `signalfd_siginfo` of a non-blocking
/// signalfd. Standard signals coalesce, so their content tells us nothing the
/// reap loop does not.
pub fn drain_signalfd(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut buf = [0u8; 8 * mem::size_of::<libc::signalfd_siginfo>()];
    loop {
        match read(fd, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The kernel's `struct sigaction` (not glibc's, which is laid out
/// differently and refuses the signals glibc reserves, 32 and 33). This is
/// its layout on the architectures with `SA_RESTORER`.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("KernelSigaction: check the kernel's struct sigaction for this architecture");
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

impl KernelSigaction {
    const DEFAULT: KernelSigaction = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
}

/// `rt_sigaction(signal, act, old)` straight to the kernel; 0 or -1.
///
/// # Safety
/// `act` must be null or point to a valid action whose handler is SIG_DFL
/// or SIG_IGN; `old` must be null or writable.
unsafe fn rt_sigaction(
    signal: c_int,
    act: *const KernelSigaction,
    old: *mut KernelSigaction,
) -> libc::c_long {
    // SAFETY: per this function's contract; the kernel reads/writes one
    // struct through each non-null pointer. The last argument is the size
    // of the kernel's sigset_t (64 signals).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            act,
            old,
            mem::size_of::<u64>(),
        )
    }
}

/// The signals (bit `n - 1` for signal `n`) whose disposition is not
/// `SIG_DFL` right now. A command must start with default dispositions, and
/// `SIG_IGN` survives exec: the Rust runtime ignores SIGPIPE, and whatever
/// started us may have ignored others (even glibc's reserved 32 and 33).
pub fn non_default_dispositions() -> u64 {
    let mut mask = 0u64;
    for signal in 1..=64 {
        let mut old = KernelSigaction::DEFAULT;
        // SAFETY: a null action only reads the current one into `old`.
        if unsafe { rt_sigaction(signal, ptr::null(), &mut old) } == 0
            && old.handler != libc::SIG_DFL
        {
            mask |= 1 << (signal - 1);
        }
    }
    mask
}

// ---------------------------------------------------------------------------
// Children

/// One child collected by `wait4`.
pub struct Reaped {
    pub pid: i32,
    /// The raw wait status (decode with `libc::WIFEXITED` and friends).
    pub status: c_int,
    pub usage: libc::rusage,
}

/// `wait4(pid, flags)`. `Ok(None)`: `WNOHANG` and nobody has changed state.
pub fn wait4(pid: i32, flags: c_int) -> io::Result<Option<Reaped>> {
    let mut status: c_int = 0;
    // SAFETY: rusage is plain data for which all-zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: wait4 writes one c_int and one rusage into our locals.
    let got = retry(|| cvt(unsafe { libc::wait4(pid, &mut status, flags, &mut usage) }))?;
    Ok((got != 0).then_some(Reaped {
        pid: got,
        status,
        usage,
    }))
}

/// What the child of [`clone_exec`] does, prepared by the parent so that the
/// child only has to make system calls.
pub struct ExecSpec<'a> {
    /// Full paths to `execve`, in order (the `PATH` search, done ahead).
    pub candidates: &'a [CString],
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub cwd: &'a CStr,
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
    /// Descriptors for stdin, stdout, stderr; `None` keeps init's own
    /// descriptor at that number (`/dev/null`, opened by the runtime).
    pub stdio: [Option<BorrowedFd<'a>>; 3],
    /// Make stdin (a terminal's slave) the controlling terminal of the new
    /// session.
    pub controlling_tty: bool,
    /// More descriptors, each placed at its number (above 2): (source,
    /// target). Every source and `report` must be numbered above every
    /// target, so that placing one never overwrites another.
    pub extra: &'a [(BorrowedFd<'a>, c_int)],
    /// Write end of a close-on-exec pipe: the child writes its errno there
    /// if a step fails, then exits.
    pub report: BorrowedFd<'a>,
    /// Signals to reset to `SIG_DFL` (see [`non_default_dispositions`]).
    pub reset_signals: u64,
}

/// The child's stack. 64 KiB is far more than the child's few frames need;
/// only the pages it touches cost memory. A guard page sits below it.
const CHILD_STACK: usize = 64 * 1024;
const GUARD: usize = 4096;

struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = CHILD_STACK + GUARD;
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing aliases nothing.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the first page lies inside the mapping we just made.
        cvt(unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) })?;
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // SAFETY: base + len is one past the end of our mapping.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no child runs on
        // it any more (CLONE_VFORK returned only after exec or exit).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What `child_main` reads: raw pointers into memory the parent keeps alive
/// and unchanged while the child runs (the parent is suspended by CLONE_VFORK
/// until the child has exec'd or exited).
struct ChildCtx {
    candidates: *const *const c_char,
    ncandidates: usize,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    uid: u32,
    gid: u32,
    groups: *const libc::gid_t,
    ngroups: usize,
    stdio: [c_int; 3],
    controlling_tty: bool,
    extra: *const (c_int, c_int),
    nextra: usize,
    report: c_int,
    reset_signals: u64,
}

/// A null-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// Starts a child with `clone(CLONE_VM | CLONE_VFORK)` that applies `spec`
/// and execs. Returns its pid once the child has exec'd past the point of no
/// return, or has failed: then its errno is in the report pipe already (the
/// kernel releases a vfork parent only at exec's mm switch or at exit).
///
/// The child shares our memory until exec, like `vfork`, so starting it
/// costs no page-table copy; unlike a bare `vfork` call it runs a separate
/// function on its own stack, so the compiler never sees a function return
/// twice. This is how glibc and musl implement `posix_spawn`.
pub fn clone_exec(spec: &ExecSpec<'_>) -> io::Result<i32> {
    let candidates: Vec<*const c_char> = spec.candidates.iter().map(|c| c.as_ptr()).collect();
    let argv = pointers(spec.argv);
    let envp = pointers(spec.envp);
    let extra: Vec<(c_int, c_int)> = spec
        .extra
        .iter()
        .map(|(fd, target)| (fd.as_raw_fd(), *target))
        .collect();
    let ctx = ChildCtx {
        candidates: candidates.as_ptr(),
        ncandidates: candidates.len(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: spec.cwd.as_ptr(),
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.as_ptr(),
        ngroups: spec.groups.len(),
        stdio: spec.stdio.map(|fd| fd.map_or(-1, |fd| fd.as_raw_fd())),
        controlling_tty: spec.controlling_tty,
        extra: extra.as_ptr(),
        nextra: extra.len(),
        report: spec.report.as_raw_fd(),
        reset_signals: spec.reset_signals,
    };
    let stack = Stack::new()?;
    // Block every signal across clone: until the child has reset its
    // dispositions, a handler of ours must never run on the shared memory.
    let old = set_signal_mask(&SigSet::full())?;
    // SAFETY: child_main runs on its own mapped stack and only reads `ctx`
    // and the arrays it points to, which outlive the call; CLONE_VFORK keeps
    // us suspended until the child has exec'd or exited, so nothing changes
    // under it, and it never returns into our frames.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&ctx as *const ChildCtx).cast_mut().cast(),
        )
    };
    let result = cvt(pid);
    // Cannot fail (valid `how`, valid set); ignoring it keeps the pid of a
    // started child from being lost.
    let _ = set_signal_mask(&old);
    drop(stack);
    result
}

/// Entry point of the spawn child. Reports the errno of the failing step and
/// exits 127 if anything fails; never returns.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the &ChildCtx that clone_exec passed; it stays valid
    // and unchanged while we run (see ChildCtx).
    let ctx = unsafe { &*arg.cast::<ChildCtx>() };
    let err = child_run(ctx).to_ne_bytes();
    // SAFETY: write reads 4 bytes from a local array; a pipe write of 4
    // bytes is atomic. _exit leaves without atexit handlers or unwinding.
    unsafe {
        libc::write(ctx.report, err.as_ptr().cast(), err.len());
        libc::_exit(127)
    }
}

/// The child's steps, top to bottom. Only system calls: this runs in a
/// `CLONE_VM` copy of init, so no allocation, locks or thread-locals (errno
/// aside, which the suspended parent does not read meanwhile). Returns the
/// errno of the step that failed; a successful exec does not return.
fn child_run(ctx: &ChildCtx) -> c_int {
    // 1. Default dispositions and an empty mask: ignored signals survive
    //    exec, and a blocked mask would be inherited by the command.
    let default = KernelSigaction::DEFAULT;
    for signal in 1..=64 {
        if ctx.reset_signals & (1 << (signal - 1)) != 0 {
            // SAFETY: installs SIG_DFL from a valid action on our stack.
            if unsafe { rt_sigaction(signal, &default, ptr::null_mut()) } != 0 {
                return errno();
            }
        }
    }
    let empty = SigSet::empty();
    // SAFETY: sets the mask from an initialised set on our stack.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty.0, ptr::null_mut()) } != 0 {
        return errno();
    }

    // 2. Its own session and process group: group signals reach all it
    //    starts, and it can never share a controlling terminal.
    // SAFETY: no preconditions; fails only if we already lead a group.
    if unsafe { libc::setsid() } == -1 {
        return errno();
    }

    // 3. Credentials: groups, then gid, then uid (which drops the right to
    //    change the other two). Raw syscalls: glibc's wrappers would try to
    //    broadcast the change to other threads, and these apply to this task
    //    alone.
    // SAFETY: the kernel reads `ngroups` gid_t values from `groups`.
    if unsafe { libc::syscall(libc::SYS_setgroups, ctx.ngroups, ctx.groups) } == -1 {
        let err = errno();
        // A user namespace whose setgroups is "deny" refuses even an empty
        // list; that is fine if there are no supplementary groups to drop.
        // SAFETY: getgroups(0, NULL) only counts the groups.
        let have = unsafe { libc::syscall(libc::SYS_getgroups, 0, ptr::null_mut::<libc::gid_t>()) };
        if !(err == libc::EPERM && ctx.ngroups == 0 && have == 0) {
            return err;
        }
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::syscall(libc::SYS_setresgid, ctx.gid, ctx.gid, ctx.gid) } == -1 {
        return errno();
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::syscall(libc::SYS_setresuid, ctx.uid, ctx.uid, ctx.uid) } == -1 {
        return errno();
    }

    // 4. The working directory, entered as the command's user.
    // SAFETY: cwd is a NUL-terminated string kept alive by the parent.
    if unsafe { libc::chdir(ctx.cwd) } == -1 {
        return errno();
    }

    // 5. stdio onto 0, 1, 2. The received descriptors are all >= 3 (0-2
    //    are always open in init), so no dup2 clobbers a later source.
    for (target, &fd) in ctx.stdio.iter().enumerate() {
        let target = target as c_int;
        if fd < 0 {
            continue;
        }
        let ret = if fd == target {
            // SAFETY: clears the close-on-exec flag of a descriptor we hold.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
        } else {
            // SAFETY: dup2 onto 0-2 replaces only our copies of init's /dev/null.
            unsafe { libc::dup2(fd, target) }
        };
        if ret == -1 {
            return errno();
        }
    }

    // 5b. A terminal on 0-2 becomes the controlling terminal of the session
    //     made at step 2 (which has none, so no privilege is needed).
    // SAFETY: TIOCSCTTY takes an int by value (0: steal nothing).
    if ctx.controlling_tty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
        return errno();
    }

    // 6. Nothing but 0, 1, 2 survives exec: the control socket, the signalfd,
    //    the received originals and anything inherited are close-on-exec.
    // SAFETY: only sets flags.
    if unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int) } == -1 {
        return errno();
    }

    // 6b. ...except the extra descriptors, placed now at their numbers
    //     (dup2 leaves the copy open across exec). Every source and the
    //     report pipe lie above every target, so nothing placed here
    //     overwrites what a later step uses.
    for i in 0..ctx.nextra {
        // SAFETY: i < nextra; the array is kept alive by the parent.
        let (fd, target) = unsafe { *ctx.extra.add(i) };
        // SAFETY: dup2 replaces only the target number in our own table.
        if unsafe { libc::dup2(fd, target) } == -1 {
            return errno();
        }
    }

    // 7. exec, execvpe-style over the candidates: skip entries that do not
    //    exist, remember a permission error, stop at any other error.
    let mut last = libc::ENOENT;
    let mut denied = false;
    for i in 0..ctx.ncandidates {
        // SAFETY: i < ncandidates; every pointer is a NUL-terminated string
        // and argv/envp are null-terminated arrays, all kept alive by the parent.
        unsafe { libc::execve(*ctx.candidates.add(i), ctx.argv, ctx.envp) };
        match errno() {
            libc::EACCES => denied = true,
            e @ (libc::ENOENT | libc::ENOTDIR) => last = e,
            e => return e,
        }
    }
    if denied {
        libc::EACCES
    } else {
        last
    }
}
