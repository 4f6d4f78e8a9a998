//! The control protocol between the sandlot runtime (host side) and
//! `sandlot-init` (PID 1 inside every sandbox). One definition, used by both.
//!
//! Transport: one `SOCK_SEQPACKET` unix socket pair per sandbox. Every
//! message is one datagram, so framing is free and a short read is an error.
//! The host passes the stdio file descriptors of a command alongside its
//! [`Spawn`] request with `SCM_RIGHTS` (and any more descriptors the command
//! gets at fixed numbers, [`Spawn::extra_fds`]); output therefore never flows
//! through init. For a command on a terminal ([`Spawn::pty`]) init allocates
//! the pseudo-terminal inside the sandbox and hands its master end back with
//! [`Event::SpawnedPty`], the one event that carries a descriptor. In the
//! sandbox the control socket is always file descriptor [`CONTROL_FD`].
//!
//! Encoding: a one-byte tag, then fixed-width little-endian fields; byte
//! strings are a `u32` length followed by the bytes; lists are a `u32` count
//! followed by the items. Decoders reject trailing bytes, unknown tags,
//! lengths and counts that run past the message, and values no encoder
//! writes, so every message has exactly one encoding and decoding never
//! allocates more than a small multiple of the message's own size
//! (`tests/props.rs` checks all of this on arbitrary bytes).
//!
//! A persistent sandbox ([`Request::Persist`]) also accepts connections on
//! a listening socket the host hands to init; every connection speaks this
//! same protocol (without `Go` and `Persist`). What a persistent sandbox's
//! monitor and the runtime share is in [`monitor`].

#![forbid(unsafe_code)]

pub mod monitor;

use std::fmt;

/// Bumped whenever a message changes shape; init reports it in [`Event::Ready`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The descriptor number of the control socket inside the sandbox.
pub const CONTROL_FD: i32 = 3;

/// The largest datagram either side sends or accepts. A spawn request
/// (argv + env + cwd) must fit; the runtime rejects bigger ones up front.
/// Below the default unix socket send buffer (208 KiB), so that a maximal
/// message never fails with EMSGSIZE.
pub const MAX_MESSAGE: usize = 128 * 1024;

/// Number of stdio descriptors a [`Spawn`] may carry.
pub const STDIO_FDS: usize = 3;

/// Most descriptors a [`Spawn`] may carry beyond its stdio
/// ([`Spawn::extra_fds`]).
pub const MAX_EXTRA_FDS: usize = 5;

/// Most output read ends a [`Spawn`] carries for init to keep
/// ([`StdioMask::KEEP_OUTPUT`]).
pub const MAX_KEPT_FDS: usize = 2;

/// Most descriptors one [`Spawn`] carries in all.
pub const MAX_SPAWN_FDS: usize = STDIO_FDS + MAX_EXTRA_FDS + MAX_KEPT_FDS;

/// The numbers an extra descriptor may be placed at: above stdio, and
/// within any sandbox's open-files limit.
pub const EXTRA_FD_NUMBERS: std::ops::RangeInclusive<i32> = 3..=255;

/// A message from the host to the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Setup sync point: the host has written the id maps and placed the
    /// child in its cgroups; the child may continue towards exec of init.
    /// Encoded as exactly one byte so that the child can check it without
    /// allocating.
    Go,
    /// Start a command.
    Spawn(Spawn),
    /// Deliver a signal to a command started by [`Request::Spawn`].
    Signal {
        id: u64,
        signal: i32,
        /// Signal the command's whole process group, not just its leader.
        group: bool,
    },
    /// Deliver a signal to every process in the sandbox except init.
    SignalAll { signal: i32 },
    /// Outlive the host: carries one descriptor, a listening `SOCK_SEQPACKET`
    /// unix socket. init stops dying with its creator (it clears its
    /// parent-death signal), accepts further control connections on the
    /// socket, and from then on the end of a connection ends only that
    /// connection. Each connection has command ids of its own; a command's
    /// events go to the connection that spawned it. Answered with
    /// [`Event::Persisted`].
    Persist,
}

/// Which standard streams of a [`Spawn`] come as descriptors with the
/// message; the others are connected to `/dev/null` inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StdioMask(pub u8);

impl StdioMask {
    pub const STDIN: u8 = 1;
    pub const STDOUT: u8 = 2;
    pub const STDERR: u8 = 4;
    pub const ALL: StdioMask = StdioMask(7);
    /// Not a stream: after every other descriptor, a read end of each
    /// output pipe the mask names (stdout, then stderr). init keeps them
    /// and, once the connection that started the command is gone, reads
    /// and discards what the command writes until end of file — a command
    /// of a persistent sandbox then neither dies of a pipe nobody reads
    /// nor blocks on a full one. Closed when the command ends.
    pub const KEEP_OUTPUT: u8 = 8;
    /// Every bit a mask may have.
    pub const VALID: u8 = 15;

    pub fn has(self, stream: u8) -> bool {
        self.0 & stream != 0
    }

    /// How many stdio descriptors travel with the message.
    pub fn count(self) -> usize {
        (self.0 & 7).count_ones() as usize
    }

    /// How many kept read ends travel with the message (after the stdio
    /// and extra descriptors).
    pub fn kept(self) -> usize {
        if self.has(Self::KEEP_OUTPUT) {
            (self.0 & (Self::STDOUT | Self::STDERR)).count_ones() as usize
        } else {
            0
        }
    }
}

/// Everything init needs to start one command. init looks `argv[0]` up in
/// the `PATH` of `env` when it has no slash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spawn {
    /// The host's identifier of this command; echoed in every event about it.
    pub id: u64,
    pub argv: Vec<Vec<u8>>,
    /// `KEY=VALUE` entries, the complete environment of the command.
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Which stdio descriptors are attached, in order stdin, stdout, stderr.
    pub stdio: StdioMask,
    /// More descriptors for the command, attached after the stdio ones, in
    /// this order: each is placed at the number given here (distinct, in
    /// [`EXTRA_FD_NUMBERS`]), open across exec.
    pub extra_fds: Vec<i32>,
    /// Run the command on a new pseudo-terminal of this size, allocated by
    /// init inside the sandbox: the terminal's slave end is the command's
    /// stdin, stdout, stderr and controlling terminal (so no stdio
    /// descriptor may be attached), and the master end comes back with
    /// [`Event::SpawnedPty`].
    pub pty: Option<PtySize>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

impl Spawn {
    /// The size of `Request::Spawn(self).encode()`, computed without
    /// encoding (the host checks it against [`MAX_MESSAGE`] before it
    /// commits to a command).
    pub fn encoded_len(&self) -> usize {
        let list = |items: &[Vec<u8>]| 4 + items.iter().map(|i| 4 + i.len()).sum::<usize>();
        1 + 8
            + list(&self.argv)
            + list(&self.env)
            + 4
            + self.cwd.len()
            + 4
            + 4
            + 4
            + 4 * self.groups.len()
            + 1
            + self.trailer_len()
    }

    /// Whether the optional part after `stdio` is sent at all (only when it
    /// says something: a message has one encoding).
    fn has_trailer(&self) -> bool {
        !self.extra_fds.is_empty() || self.pty.is_some()
    }

    fn trailer_len(&self) -> usize {
        if !self.has_trailer() {
            return 0;
        }
        1 + 4 * self.extra_fds.len() + 1 + if self.pty.is_some() { 4 } else { 0 }
    }

    /// How many descriptors travel with the message.
    pub fn fd_count(&self) -> usize {
        self.stdio.count() + self.extra_fds.len() + self.stdio.kept()
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
}

/// Resource usage of a finished command (from `wait4`): the command and
/// every descendant it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub user_micros: u64,
    pub system_micros: u64,
    pub max_rss_kib: u64,
}

/// A message from the sandbox to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Sent by the runtime's own child before init runs: setup step `step`
    /// failed with `errno`. The child exits right after.
    SetupFailed { step: u32, errno: i32 },
    /// init is up and serving requests.
    Ready { version: u32 },
    /// A command started; `pid` is its pid inside the sandbox.
    Spawned { id: u64, pid: i32 },
    /// A command asked for with [`Spawn::pty`] started; the master end of
    /// its terminal is attached (exactly one descriptor). Answers only such
    /// a request, in place of [`Event::Spawned`].
    SpawnedPty { id: u64, pid: i32 },
    /// A command could not start (`errno` of the failing step, usually
    /// `execve`).
    SpawnFailed { id: u64, errno: i32 },
    /// A command's leader ended.
    Exited {
        id: u64,
        pid: i32,
        status: Status,
        usage: Usage,
    },
    /// The answer to [`Request::Persist`]: 0 when init now outlives its
    /// creator and listens, else the errno of the step that failed (init
    /// then stays tied to its creator).
    Persisted { errno: i32 },
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnknownTag(u8),
    Truncated,
    TrailingBytes(usize),
    TooLong(usize),
    /// A field holds a value no encoder writes (a flag other than 0 or 1,
    /// an exit code above 255, a pid below 1, …): each value has exactly
    /// one encoding, and what the host reads was checked once, here.
    Invalid {
        field: &'static str,
        value: i64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty control message"),
            DecodeError::UnknownTag(tag) => write!(f, "unknown control message tag {tag}"),
            DecodeError::Truncated => write!(f, "truncated control message"),
            DecodeError::TrailingBytes(n) => {
                write!(f, "{n} unexpected bytes after control message")
            }
            DecodeError::TooLong(n) => {
                write!(f, "control message of {n} bytes exceeds {MAX_MESSAGE}")
            }
            DecodeError::Invalid { field, value } => {
                write!(f, "control message field {field} holds {value}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

mod tag {
    pub const GO: u8 = 0x01;
    pub const SPAWN: u8 = 0x02;
    pub const SIGNAL: u8 = 0x03;
    pub const SIGNAL_ALL: u8 = 0x04;
    pub const PERSIST: u8 = 0x05;

    pub const SETUP_FAILED: u8 = 0x81;
    pub const READY: u8 = 0x82;
    pub const SPAWNED: u8 = 0x83;
    pub const SPAWN_FAILED: u8 = 0x84;
    pub const EXITED: u8 = 0x85;
    pub const SPAWNED_PTY: u8 = 0x86;
    pub const PERSISTED: u8 = 0x87;
}

/// The encoded form of [`Request::Go`], for the child that must not allocate.
pub const GO_BYTES: [u8; 1] = [tag::GO];

/// Length of an encoded [`Event::SetupFailed`].
pub const SETUP_FAILED_LEN: usize = 9;

/// Encode [`Event::SetupFailed`] without allocating (the child of a
/// multithreaded host may only make async-signal-safe calls).
pub fn encode_setup_failed(step: u32, errno: i32) -> [u8; SETUP_FAILED_LEN] {
    let mut out = [0u8; SETUP_FAILED_LEN];
    out[0] = tag::SETUP_FAILED;
    out[1..5].copy_from_slice(&step.to_le_bytes());
    out[5..9].copy_from_slice(&errno.to_le_bytes());
    out
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8) -> Self {
        Writer(vec![tag])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn list(&mut self, items: &[Vec<u8>]) {
        self.u32(items.len() as u32);
        for item in items {
            self.bytes(item);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A flag: 0 or 1, nothing else.
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(field, other)),
        }
    }
    /// An i32 that must lie in `range`.
    fn i32_in(
        &mut self,
        field: &'static str,
        range: std::ops::RangeInclusive<i32>,
    ) -> Result<i32, DecodeError> {
        let value = self.i32()?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(invalid(field, value))
        }
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
    /// A count of items, each at least `min_item` bytes long: checked against
    /// what is left so that a hostile count cannot make us reserve memory.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    fn list(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.bytes()).collect()
    }
    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

fn invalid(field: &'static str, value: impl Into<i64>) -> DecodeError {
    DecodeError::Invalid {
        field,
        value: value.into(),
    }
}

/// Exit codes as `WEXITSTATUS` gives them.
const EXIT_CODES: std::ops::RangeInclusive<i32> = 0..=255;

/// Signal numbers as `WTERMSIG` gives them (7 bits; Linux's own stop at 64
/// on most architectures, 127 on MIPS).
const SIGNALS: std::ops::RangeInclusive<i32> = 1..=127;

/// Pids of processes that exist.
const PIDS: std::ops::RangeInclusive<i32> = 1..=i32::MAX;

fn split_tag(buf: &[u8]) -> Result<(u8, Reader<'_>), DecodeError> {
    if buf.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong(buf.len()));
    }
    let (&tag, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
    Ok((tag, Reader { buf: rest }))
}

/// The id of a spawn request that may be truncated or corrupt (its id
/// directly follows the tag), so that init can still answer it with
/// `SpawnFailed`. `None` for anything else.
pub fn spawn_id(buf: &[u8]) -> Option<u64> {
    if buf.first() != Some(&tag::SPAWN) {
        return None;
    }
    let id = buf.get(1..9)?.try_into().ok()?;
    Some(u64::from_le_bytes(id))
}

/// The optional part of a spawn request after `stdio`: the extra
/// descriptors' numbers and the terminal. Sent only when it says
/// something, so an empty one is refused (one encoding per message).
fn decode_trailer(
    r: &mut Reader<'_>,
    stdio: StdioMask,
) -> Result<(Vec<i32>, Option<PtySize>), DecodeError> {
    let n = r.u8()?;
    if usize::from(n) > MAX_EXTRA_FDS {
        return Err(invalid("extra_fds", n));
    }
    let mut extra_fds = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let fd = r.i32_in("extra_fds", EXTRA_FD_NUMBERS)?;
        if extra_fds.contains(&fd) {
            return Err(invalid("extra_fds", fd));
        }
        extra_fds.push(fd);
    }
    let pty = match r.u8()? {
        0 => None,
        1 => Some(PtySize {
            rows: r.u16()?,
            cols: r.u16()?,
        }),
        other => return Err(invalid("pty", other)),
    };
    if extra_fds.is_empty() && pty.is_none() {
        return Err(invalid("extra_fds", 0));
    }
    // The terminal is the command's stdio: nothing else may claim 0-2.
    if pty.is_some() && stdio.0 != 0 {
        return Err(invalid("stdio", stdio.0));
    }
    Ok((extra_fds, pty))
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Go => GO_BYTES.to_vec(),
            Request::Spawn(s) => {
                let mut w = Writer::new(tag::SPAWN);
                w.u64(s.id);
                w.list(&s.argv);
                w.list(&s.env);
                w.bytes(&s.cwd);
                w.u32(s.uid);
                w.u32(s.gid);
                w.u32(s.groups.len() as u32);
                for g in &s.groups {
                    w.u32(*g);
                }
                w.u8(s.stdio.0);
                if s.has_trailer() {
                    w.u8(s.extra_fds.len() as u8);
                    for fd in &s.extra_fds {
                        w.i32(*fd);
                    }
                    match s.pty {
                        None => w.u8(0),
                        Some(size) => {
                            w.u8(1);
                            w.u16(size.rows);
                            w.u16(size.cols);
                        }
                    }
                }
                w.0
            }
            Request::Signal { id, signal, group } => {
                let mut w = Writer::new(tag::SIGNAL);
                w.u64(*id);
                w.i32(*signal);
                w.u8(u8::from(*group));
                w.0
            }
            Request::SignalAll { signal } => {
                let mut w = Writer::new(tag::SIGNAL_ALL);
                w.i32(*signal);
                w.0
            }
            Request::Persist => vec![tag::PERSIST],
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Request, DecodeError> {
        let (tag, mut r) = split_tag(buf)?;
        let req = match tag {
            tag::GO => Request::Go,
            tag::SPAWN => {
                let id = r.u64()?;
                let argv = r.list()?;
                let env = r.list()?;
                let cwd = r.bytes()?;
                let uid = r.u32()?;
                let gid = r.u32()?;
                let n = r.count(4)?;
                let groups = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
                let stdio = match r.u8()? {
                    // Keeping output needs an output to keep.
                    mask if mask & !StdioMask::VALID != 0
                        || (StdioMask(mask).has(StdioMask::KEEP_OUTPUT)
                            && StdioMask(mask).kept() == 0) =>
                    {
                        return Err(invalid("stdio", mask))
                    }
                    mask => StdioMask(mask),
                };
                let (extra_fds, pty) = if r.buf.is_empty() {
                    (Vec::new(), None)
                } else {
                    decode_trailer(&mut r, stdio)?
                };
                Request::Spawn(Spawn {
                    id,
                    argv,
                    env,
                    cwd,
                    uid,
                    gid,
                    groups,
                    stdio,
                    extra_fds,
                    pty,
                })
            }
            tag::SIGNAL => Request::Signal {
                id: r.u64()?,
                signal: r.i32()?,
                group: r.bool("group")?,
            },
            tag::SIGNAL_ALL => Request::SignalAll { signal: r.i32()? },
            tag::PERSIST => Request::Persist,
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Event::SetupFailed { step, errno } => encode_setup_failed(*step, *errno).to_vec(),
            Event::Ready { version } => {
                let mut w = Writer::new(tag::READY);
                w.u32(*version);
                w.0
            }
            Event::Spawned { id, pid } => {
                let mut w = Writer::new(tag::SPAWNED);
                w.u64(*id);
                w.i32(*pid);
                w.0
            }
            Event::SpawnedPty { id, pid } => {
                let mut w = Writer::new(tag::SPAWNED_PTY);
                w.u64(*id);
                w.i32(*pid);
                w.0
            }
            Event::SpawnFailed { id, errno } => {
                let mut w = Writer::new(tag::SPAWN_FAILED);
                w.u64(*id);
                w.i32(*errno);
                w.0
            }
            Event::Exited {
                id,
                pid,
                status,
                usage,
            } => {
                let mut w = Writer::new(tag::EXITED);
                w.u64(*id);
                w.i32(*pid);
                match status {
                    Status::Exited(code) => {
                        w.u8(0);
                        w.i32(*code);
                    }
                    Status::Signaled {
                        signal,
                        core_dumped,
                    } => {
                        w.u8(if *core_dumped { 2 } else { 1 });
                        w.i32(*signal);
                    }
                }
                w.u64(usage.user_micros);
                w.u64(usage.system_micros);
                w.u64(usage.max_rss_kib);
                w.0
            }
            Event::Persisted { errno } => {
                let mut w = Writer::new(tag::PERSISTED);
                w.i32(*errno);
                w.0
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
        let (tag, mut r) = split_tag(buf)?;
        let event = match tag {
            tag::SETUP_FAILED => Event::SetupFailed {
                step: r.u32()?,
                errno: r.i32()?,
            },
            tag::READY => Event::Ready { version: r.u32()? },
            tag::SPAWNED => Event::Spawned {
                id: r.u64()?,
                pid: r.i32_in("pid", PIDS)?,
            },
            tag::SPAWNED_PTY => Event::SpawnedPty {
                id: r.u64()?,
                pid: r.i32_in("pid", PIDS)?,
            },
            tag::SPAWN_FAILED => Event::SpawnFailed {
                id: r.u64()?,
                errno: r.i32()?,
            },
            tag::EXITED => {
                let id = r.u64()?;
                let pid = r.i32_in("pid", PIDS)?;
                let status = match r.u8()? {
                    0 => Status::Exited(r.i32_in("exit code", EXIT_CODES)?),
                    kind @ (1 | 2) => Status::Signaled {
                        signal: r.i32_in("signal", SIGNALS)?,
                        core_dumped: kind == 2,
                    },
                    other => return Err(invalid("status", other)),
                };
                let usage = Usage {
                    user_micros: r.u64()?,
                    system_micros: r.u64()?,
                    max_rss_kib: r.u64()?,
                };
                Event::Exited {
                    id,
                    pid,
                    status,
                    usage,
                }
            }
            tag::PERSISTED => Event::Persisted { errno: r.i32()? },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish()?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_spawn() -> Spawn {
        Spawn {
            id: 42,
            argv: vec![b"/bin/sh".to_vec(), b"-c".to_vec(), b"echo hi".to_vec()],
            env: vec![b"PATH=/usr/bin".to_vec(), b"EMPTY=".to_vec()],
            cwd: b"/root".to_vec(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
            stdio: StdioMask::ALL,
            extra_fds: Vec::new(),
            pty: None,
        }
    }

    fn code_context_spawn() -> Spawn {
        Spawn {
            stdio: StdioMask(StdioMask::STDOUT | StdioMask::STDERR),
            extra_fds: vec![3, 4],
            ..sample_spawn()
        }
    }

    fn terminal_spawn() -> Spawn {
        Spawn {
            stdio: StdioMask(0),
            pty: Some(PtySize { rows: 24, cols: 80 }),
            ..sample_spawn()
        }
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Go,
            Request::Spawn(sample_spawn()),
            Request::Spawn(code_context_spawn()),
            Request::Spawn(terminal_spawn()),
            Request::Signal {
                id: 7,
                signal: 15,
                group: true,
            },
            Request::SignalAll { signal: 9 },
            Request::Persist,
        ];
        for req in requests {
            assert_eq!(Request::decode(&req.encode()), Ok(req));
        }
    }

    #[test]
    fn events_round_trip() {
        let events = [
            Event::SetupFailed { step: 3, errno: 22 },
            Event::Ready {
                version: PROTOCOL_VERSION,
            },
            Event::Spawned { id: 1, pid: 2 },
            Event::SpawnedPty { id: 3, pid: 4 },
            Event::SpawnFailed { id: 1, errno: 2 },
            Event::Exited {
                id: 9,
                pid: 12,
                status: Status::Exited(3),
                usage: Usage {
                    user_micros: 10,
                    system_micros: 20,
                    max_rss_kib: 30,
                },
            },
            Event::Exited {
                id: 9,
                pid: 12,
                status: Status::Signaled {
                    signal: 9,
                    core_dumped: true,
                },
                usage: Usage::default(),
            },
            Event::Persisted { errno: 0 },
            Event::Persisted { errno: 1 },
        ];
        for event in events {
            assert_eq!(Event::decode(&event.encode()), Ok(event));
        }
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        let mut spawn = sample_spawn();
        assert_eq!(
            spawn.encoded_len(),
            Request::Spawn(spawn.clone()).encode().len()
        );
        spawn.groups.clear();
        spawn.env.clear();
        assert_eq!(
            spawn.encoded_len(),
            Request::Spawn(spawn.clone()).encode().len()
        );
        for spawn in [code_context_spawn(), terminal_spawn()] {
            assert_eq!(
                spawn.encoded_len(),
                Request::Spawn(spawn.clone()).encode().len()
            );
        }
    }

    #[test]
    fn a_spawn_without_extras_is_encoded_as_before() {
        // Additive: the optional part is absent unless it says something,
        // so a host that never asks for extras speaks the old message.
        let plain = Request::Spawn(sample_spawn()).encode();
        assert_eq!(*plain.last().unwrap(), StdioMask::ALL.0);
        assert_eq!(code_context_spawn().fd_count(), 4);
        assert_eq!(terminal_spawn().fd_count(), 0);
    }

    #[test]
    fn kept_output_read_ends_are_counted_and_need_an_output() {
        let mut keep = sample_spawn();
        keep.stdio = StdioMask(StdioMask::ALL.0 | StdioMask::KEEP_OUTPUT);
        assert_eq!(keep.stdio.kept(), 2);
        assert_eq!(keep.fd_count(), 5);
        let request = Request::Spawn(keep);
        assert_eq!(Request::decode(&request.encode()), Ok(request));
        // Keeping with no output to keep, or an unknown bit: refused.
        for mask in [StdioMask::STDIN | StdioMask::KEEP_OUTPUT, 16] {
            let mut spawn = sample_spawn();
            spawn.stdio = StdioMask(mask);
            assert!(
                Request::decode(&Request::Spawn(spawn).encode()).is_err(),
                "{mask}"
            );
        }
    }

    #[test]
    fn extras_that_no_encoder_writes_are_rejected() {
        let base = Request::Spawn(sample_spawn()).encode();
        let with = |trailer: &[u8]| {
            let mut buf = base.clone();
            buf.extend_from_slice(trailer);
            Request::decode(&buf)
        };
        let extras = |fds: &[i32]| {
            let mut out = vec![fds.len() as u8];
            for fd in fds {
                out.extend_from_slice(&fd.to_le_bytes());
            }
            out.push(0);
            out
        };
        // An empty trailer: the message without one says the same.
        assert!(with(&[0, 0]).is_err());
        // Numbers below 3 or above the range, twice the same, too many.
        assert!(with(&extras(&[2])).is_err());
        assert!(with(&extras(&[256])).is_err());
        assert!(with(&extras(&[3, 3])).is_err());
        assert!(with(&extras(&[3, 4, 5, 6, 7, 8])).is_err());
        assert!(with(&extras(&[3, 4, 5, 6, 7])).is_ok());
        // A terminal together with stdio descriptors.
        assert!(with(&[0u8, 1, 24, 0, 80, 0]).is_err());
        assert!(with(&[0u8, 2]).is_err());
        // What an encoder writes is accepted.
        let mut no_stdio = sample_spawn();
        no_stdio.stdio = StdioMask(0);
        let mut buf = Request::Spawn(no_stdio).encode();
        buf.extend_from_slice(&[0u8, 1, 24, 0, 80, 0]);
        assert_eq!(
            Request::decode(&buf).map(|r| match r {
                Request::Spawn(s) => s.pty,
                _ => None,
            }),
            Ok(Some(PtySize { rows: 24, cols: 80 }))
        );
    }

    #[test]
    fn a_cut_spawn_still_names_its_id() {
        let spawn = Request::Spawn(sample_spawn()).encode();
        assert_eq!(spawn_id(&spawn), Some(42));
        assert_eq!(spawn_id(&spawn[..9]), Some(42));
        assert_eq!(spawn_id(&spawn[..8]), None);
        assert_eq!(spawn_id(&Request::SignalAll { signal: 9 }.encode()), None);
        assert_eq!(spawn_id(&[]), None);
    }

    #[test]
    fn go_is_one_byte_and_setup_failed_needs_no_allocation() {
        assert_eq!(Request::Go.encode(), GO_BYTES);
        assert_eq!(
            Event::decode(&encode_setup_failed(5, 1)),
            Ok(Event::SetupFailed { step: 5, errno: 1 })
        );
    }

    #[test]
    fn malformed_messages_are_rejected() {
        assert_eq!(Request::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Request::decode(&[0x7f]), Err(DecodeError::UnknownTag(0x7f)));
        let mut spawn = Request::Spawn(sample_spawn()).encode();
        // A byte after stdio starts the optional part, cut short here.
        spawn.push(0);
        assert_eq!(Request::decode(&spawn), Err(DecodeError::Truncated));
        let mut spawn = Request::Spawn(code_context_spawn()).encode();
        spawn.push(0);
        assert_eq!(Request::decode(&spawn), Err(DecodeError::TrailingBytes(1)));
        let full = Request::Spawn(sample_spawn()).encode();
        for cut in 1..full.len() {
            assert!(
                Request::decode(&full[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        // A count claiming four billion items must not allocate or panic.
        let mut hostile = vec![tag::SPAWN];
        hostile.extend_from_slice(&1u64.to_le_bytes());
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Request::decode(&hostile), Err(DecodeError::Truncated));
        assert!(matches!(
            Event::decode(&vec![0u8; MAX_MESSAGE + 1]),
            Err(DecodeError::TooLong(_))
        ));
    }
}
