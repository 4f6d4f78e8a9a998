//! Drives the real `sandlot-init` binary over a real SEQPACKET socket pair,
//! the way the runtime does: requests encoded with sandlot-proto, stdio
//! passed with SCM_RIGHTS. Every wait has a deadline so that a broken init
//! fails a test instead of hanging it, and every init is shut down (and its
//! processes with it) when its guard drops, failed test or not.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod persist;

use std::ffi::c_int;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

use sandlot_proto::{
    Event, Request, Spawn, Status, StdioMask, Usage, CONTROL_FD, MAX_MESSAGE, PROTOCOL_VERSION,
};

pub const INIT: &str = env!("CARGO_BIN_EXE_sandlot-init");

/// The binary under test: `SANDLOT_INIT` names another build (say, the
/// static one from the `init` profile), else the one cargo built for tests.
pub fn init_binary() -> String {
    std::env::var("SANDLOT_INIT").unwrap_or_else(|_| INIT.to_owned())
}

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn check(ret: c_int) -> io::Result<c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A running init and the host end of its control socket.
pub struct Init {
    child: Child,
    sock: Option<OwnedFd>,
    exited: Option<ExitStatus>,
}

impl Init {
    /// Starts init as a plain child process (a subreaper, not PID 1) and
    /// waits for its `Ready`.
    pub fn start() -> Init {
        let mut init = Init::launch(Command::new(init_binary()));
        init.expect_ready();
        init
    }

    /// Starts init as PID 1 of a new pid namespace (`unshare --fork`
    /// makes the namespace; `--kill-child` ties init's life to unshare's).
    pub fn start_as_pid1() -> Init {
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", &init_binary()]);
        let mut init = Init::launch(cmd);
        init.expect_ready();
        init
    }

    /// Starts `cmd` with our socket's other end at fd 3, fds 0-2 on
    /// /dev/null and an empty environment, like the runtime does. Stray
    /// inherited descriptors (this machine has some) are left open on purpose:
    /// init must keep them from its commands.
    pub fn launch(cmd: Command) -> Init {
        Init::launch_with(cmd, false)
    }

    /// [`Init::launch`], optionally with init's end of the socket in
    /// non-blocking mode (init must cope with whatever it is handed).
    pub fn launch_with(mut cmd: Command, nonblocking: bool) -> Init {
        let (ours, theirs) = socketpair();
        if nonblocking {
            // SAFETY: F_SETFL on a descriptor we own.
            check(unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })
                .expect("O_NONBLOCK");
        }
        let fd = theirs.as_raw_fd();
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only makes async-signal-safe calls (dup2,
        // fcntl) on descriptors that exist in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                if fd == CONTROL_FD {
                    check(libc::fcntl(fd, libc::F_SETFD, 0))?;
                } else {
                    check(libc::dup2(fd, CONTROL_FD))?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start sandlot-init");
        drop(theirs);
        Init {
            child,
            sock: Some(ours),
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_ref().expect("host end already closed").as_fd()
    }

    pub fn expect_ready(&mut self) {
        assert_eq!(
            self.event(),
            Event::Ready {
                version: PROTOCOL_VERSION
            }
        );
    }

    pub fn send(&self, request: &Request, fds: &[BorrowedFd<'_>]) {
        self.send_raw(&request.encode(), fds);
    }

    pub fn send_raw(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        send_with_fds(self.sock(), bytes, fds).expect("send to init");
    }

    /// The next event, or a panic after [`DEADLINE`].
    pub fn event(&self) -> Event {
        self.event_within(DEADLINE)
            .expect("no event from init within the deadline")
    }

    /// The next event if one arrives within `timeout`.
    pub fn event_within(&self, timeout: Duration) -> Option<Event> {
        if !wait_readable(self.sock(), timeout) {
            return None;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                self.sock().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert!(n > 0, "control socket: {}", io::Error::last_os_error());
        Some(Event::decode(&buf[..n as usize]).expect("init sent an undecodable event"))
    }

    /// The next event and the descriptors that came with it (the host
    /// normally receives without a control buffer; this is the one place
    /// that looks at what init attaches).
    pub fn event_with_fds(&self) -> (Event, Vec<OwnedFd>) {
        assert!(
            wait_readable(self.sock(), DEADLINE),
            "no event from init within the deadline"
        );
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zeroes is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        // SAFETY: msg points at live buffers of the sizes given.
        let n = unsafe {
            libc::recvmsg(
                self.sock().as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        assert!(n > 0, "control socket: {}", io::Error::last_os_error());
        let mut fds = Vec::new();
        // SAFETY: the kernel filled msg_controllen bytes of `control`; the
        // CMSG macros stay inside them, and each SCM_RIGHTS entry is a
        // descriptor just installed for us.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / mem::size_of::<c_int>();
                    let data = libc::CMSG_DATA(cmsg).cast::<c_int>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let event = Event::decode(&buf[..n as usize]).expect("init sent an undecodable event");
        (event, fds)
    }

    /// Asserts nothing more arrives for a little while.
    pub fn expect_quiet(&self) {
        if let Some(event) = self.event_within(Duration::from_millis(200)) {
            panic!("unexpected event {event:?}");
        }
    }

    /// Sends a spawn with its stdio and expects `Spawned` for it; the pid.
    pub fn spawn(&self, spawn: Spawn, fds: &[BorrowedFd<'_>]) -> i32 {
        let id = spawn.id;
        self.send(&Request::Spawn(spawn), fds);
        match self.event() {
            Event::Spawned { id: got, pid } if got == id => pid,
            other => panic!("expected Spawned for {id}, got {other:?}"),
        }
    }

    /// Expects `Exited` for `id`.
    pub fn exited(&self, id: u64) -> (i32, Status, Usage) {
        match self.event() {
            Event::Exited {
                id: got,
                pid,
                status,
                usage,
            } if got == id => (pid, status, usage),
            other => panic!("expected Exited for {id}, got {other:?}"),
        }
    }

    /// Runs a command to completion with pipes on the streams it asks for
    /// (`stdin` given: a stdin pipe fed with it; stdout and stderr always).
    pub fn run(&self, mut spawn: Spawn, stdin: Option<&[u8]>) -> Output {
        let id = spawn.id;
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let mut fds = Vec::new();
        let mut feed = None;
        let mut mask = StdioMask::STDOUT | StdioMask::STDERR;
        if stdin.is_some() {
            let (in_r, in_w) = pipe();
            mask |= StdioMask::STDIN;
            fds.push(in_r);
            feed = Some(in_w);
        }
        fds.push(out_w);
        fds.push(err_w);
        spawn.stdio = StdioMask(mask);
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        let pid = self.spawn(spawn, &borrowed);
        drop(fds);
        if let (Some(feed), Some(data)) = (feed, stdin) {
            write_all(feed.as_fd(), data);
        }
        let stdout = read_to_end(out_r.as_fd(), DEADLINE).expect("stdout did not reach EOF");
        let stderr = read_to_end(err_r.as_fd(), DEADLINE).expect("stderr did not reach EOF");
        let (exited_pid, status, usage) = self.exited(id);
        assert_eq!(exited_pid, pid, "Exited names another pid than Spawned");
        Output {
            pid,
            status,
            usage,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Closes the host end, as a host that dies would.
    pub fn close_host(&mut self) {
        self.sock = None;
    }

    /// SIGKILLs init itself (not what it started) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exited = Some(status);
        }
    }

    /// Waits for init itself to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Init {
    /// Closing the host end makes init kill everything it started and exit;
    /// if that does not happen, kill init itself.
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.close_host();
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct Output {
    pub pid: i32,
    pub status: Status,
    pub usage: Usage,
    pub stdout: String,
    pub stderr: String,
}

/// A spawn of `argv` as root in `/` with a short PATH and no stdio.
pub fn command(id: u64, argv: &[&str]) -> Spawn {
    Spawn {
        id,
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![b"PATH=/usr/bin:/bin".to_vec()],
        cwd: b"/".to_vec(),
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        stdio: StdioMask(0),
        extra_fds: Vec::new(),
        pty: None,
    }
}

pub fn sh(id: u64, script: &str) -> Spawn {
    command(id, &["sh", "-c", script])
}

pub fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as c_int; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })
    .expect("socketpair");
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A close-on-exec pipe (read end, write end): never leaks into another
/// test's init, which runs concurrently in this process.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }).expect("pipe2");
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// sendmsg of one datagram with `fds` as SCM_RIGHTS.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let data_len = mem::size_of_val(raw.as_slice()) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zeroes is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` writable bytes, enough for
        // one header and the descriptors.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
            ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                data_len as usize,
            );
        }
    }
    // SAFETY: msg points at live iov/control buffers; sendmsg only reads
    // them (iov_base is never written through).
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: poll reads and writes one pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as c_int) };
        if n > 0 {
            return true;
        }
        if n == 0 || Instant::now() >= deadline {
            return false;
        }
    }
}

fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    // SAFETY: read writes at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "read: {}", io::Error::last_os_error());
    n as usize
}

/// Everything up to end of file, or `None` if that takes longer than `timeout`
/// (some process still holds a write end).
pub fn read_to_end(fd: BorrowedFd<'_>, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if !wait_readable(fd, deadline.saturating_duration_since(Instant::now())) {
            return None;
        }
        match read_some(fd, &mut buf) {
            0 => return Some(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One line (without its newline), read byte by byte so nothing after it is
/// consumed.
pub fn read_line(fd: BorrowedFd<'_>) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        assert!(wait_readable(fd, DEADLINE), "no line within the deadline");
        assert_eq!(read_some(fd, &mut byte), 1, "EOF before end of line");
        if byte[0] == b'\n' {
            return String::from_utf8(line).expect("utf-8 line");
        }
        line.push(byte[0]);
    }
}

pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: write reads at most data.len() bytes from data.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        assert!(n > 0, "write: {}", io::Error::last_os_error());
        data = &data[n as usize..];
    }
}

/// Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp,
/// session, tty_nr, ... (`fields[0]` is the state).
pub fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Start time (in clock ticks since boot) of `pid`, to recognise it again.
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid)?.get(19)?.parse().ok()
}

/// Waits until the process `pid` that started at `started` no longer exists
/// (not even as a zombie).
pub fn wait_gone(pid: i32, started: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if start_time(pid) != Some(started) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
