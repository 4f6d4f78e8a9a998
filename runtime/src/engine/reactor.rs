//! One I/O thread per runtime ("sandlot-io"): an epoll loop over every
//! sandbox's control socket and init pidfd and every running command's
//! stdout and stderr pipes, plus the per-command deadlines.
//!
//! It never blocks on a sandbox: control sends from here are non-blocking,
//! and work that can take time (tearing a sandbox down) goes to the reaper.
//! Output is forwarded as it arrives, in order, up to the command's output
//! limit (past it, output is still read, so the writer never blocks, but
//! discarded); a command's `Exit` event is sent only after its pipes were
//! drained, so it always comes last. It also waits on each sandbox's OOM
//! notifier (see `oom.rs`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crossbeam_channel::Sender;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::engine::control::{self, Incoming};
use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::Reason;
use crate::engine::oom::OomWatch;
use crate::engine::reaper::ReaperJob;
use crate::engine::sandbox::SandboxShared;
use crate::services::commands::{OutputStream, ProcessEvent};

/// Bytes read from a pipe per event before other sources get a turn.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
const READS_PER_WAKE: usize = 4;

pub(crate) type Token = u64;

enum Source {
    Wake,
    Control(Weak<SandboxShared>),
    InitExit(Weak<SandboxShared>),
    Output(Output),
    Oom(Weak<SandboxShared>, Arc<OomWatch>),
}

pub(crate) struct Output {
    pub sandbox: Weak<SandboxShared>,
    pub command: u64,
    pub stream: OutputStream,
    pub events: Sender<ProcessEvent>,
    pub fd: OwnedFd,
    /// Bytes that may still be forwarded (`u64::MAX`: no limit).
    pub budget: u64,
    /// Set when output was discarded because the budget ran out.
    pub truncated: Arc<AtomicBool>,
}

struct Timer {
    sandbox: Weak<SandboxShared>,
    kind: TimerKind,
}

enum TimerKind {
    /// A command's deadline.
    Command(u64),
    /// Look at the OOM count again (the v1 notification comes before the
    /// kill); the number of the attempt.
    OomRecheck(u32),
}

/// Command deadlines: a min-heap of (when, key) and the timers by key.
#[derive(Default)]
struct Timers {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    by_key: HashMap<u64, Timer>,
}

pub(crate) struct Reactor {
    epoll: Epoll,
    wake: EventFd,
    sources: Mutex<HashMap<Token, Source>>,
    next_token: AtomicU64,
    timers: Mutex<Timers>,
    stopping: AtomicBool,
}

const WAKE: Token = 0;

impl Reactor {
    pub fn new() -> Result<Arc<Reactor>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::setup("epoll_create", e))?;
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::setup("eventfd", e))?;
        epoll
            .add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
            .map_err(|e| Error::setup("epoll_ctl", e))?;
        let mut sources = HashMap::new();
        sources.insert(WAKE, Source::Wake);
        Ok(Arc::new(Reactor {
            epoll,
            wake,
            sources: Mutex::new(sources),
            next_token: AtomicU64::new(WAKE + 1),
            timers: Mutex::new(Timers::default()),
            stopping: AtomicBool::new(false),
        }))
    }

    fn add(&self, fd: BorrowedFd<'_>, source: Source) -> Result<Token, Errno> {
        self.add_with(fd, source, EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP)
    }

    fn add_with(
        &self,
        fd: BorrowedFd<'_>,
        source: Source,
        flags: EpollFlags,
    ) -> Result<Token, Errno> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.sources.lock().unwrap().insert(token, source);
        if let Err(e) = self.epoll.add(fd, EpollEvent::new(flags, token)) {
            self.sources.lock().unwrap().remove(&token);
            return Err(e);
        }
        Ok(token)
    }

    /// Watches a sandbox's control socket and init pidfd.
    pub fn watch_sandbox(
        &self,
        sandbox: &Arc<SandboxShared>,
        control: BorrowedFd<'_>,
        pidfd: BorrowedFd<'_>,
    ) -> Result<[Token; 2], Errno> {
        let control_token = self.add(control, Source::Control(Arc::downgrade(sandbox)))?;
        match self.add(pidfd, Source::InitExit(Arc::downgrade(sandbox))) {
            Ok(exit_token) => Ok([control_token, exit_token]),
            Err(e) => {
                self.remove_watch(control_token, control);
                Err(e)
            }
        }
    }

    /// Stops watching a descriptor the caller still holds open.
    pub fn remove_watch(&self, token: Token, fd: BorrowedFd<'_>) {
        let _ = self.epoll.delete(fd);
        self.sources.lock().unwrap().remove(&token);
    }

    /// Forwards a command's output pipe; the reactor owns it from here.
    pub fn watch_output(&self, output: Output) -> Result<Token, Errno> {
        let raw = output.fd.as_raw_fd();
        // The descriptor moves into the table; borrow its number for the
        // registration (it stays open while the entry exists).
        self.add(crate::sys::fd::borrow(raw), Source::Output(output))
    }

    /// Waits on a sandbox's OOM notifier (kernfs files signal a change with
    /// `EPOLLPRI` only: `EPOLLIN` would always be ready).
    pub fn watch_oom(
        &self,
        sandbox: &Arc<SandboxShared>,
        watch: Arc<OomWatch>,
    ) -> Result<Token, Errno> {
        let (fd, priority) = watch.wait_fd();
        let flags = if priority {
            EpollFlags::EPOLLPRI
        } else {
            EpollFlags::EPOLLIN
        };
        // The source keeps the watch, and so the descriptor, alive.
        let raw = fd.as_raw_fd();
        self.add_with(
            crate::sys::fd::borrow(raw),
            Source::Oom(Arc::downgrade(sandbox), watch),
            flags,
        )
    }

    /// Stops waiting on an OOM notifier.
    pub fn unwatch_oom(&self, token: Token) {
        let source = self.sources.lock().unwrap().remove(&token);
        if let Some(Source::Oom(_, watch)) = source {
            let _ = self.epoll.delete(watch.wait_fd().0);
        }
    }

    /// Closes an output pipe without draining it.
    pub fn drop_output(&self, token: Token) {
        if let Some(Source::Output(out)) = self.take(token) {
            drop(out);
        }
    }

    fn take(&self, token: Token) -> Option<Source> {
        let source = self.sources.lock().unwrap().remove(&token)?;
        if let Source::Output(out) = &source {
            let _ = self.epoll.delete(out.fd.as_fd());
        }
        Some(source)
    }

    /// Reads what is left in an output pipe (the command exited, so nothing
    /// more will come from it — only, perhaps, from a background child that
    /// inherited it) and closes it.
    /// `buf` is the caller's scratch space (the io thread's own buffer on
    /// the exit path: no allocation per command).
    pub fn drain_output(&self, token: Token, buf: &mut [u8]) {
        if let Some(Source::Output(mut out)) = self.take(token) {
            while let ReadOutcome::Data = forward(&mut out, buf) {}
        }
    }

    /// Arms a command deadline.
    pub fn add_timer(&self, at: Instant, sandbox: Weak<SandboxShared>, command: u64) {
        self.add_timer_kind(at, sandbox, TimerKind::Command(command));
    }

    /// Looks at a sandbox's OOM count again at `at` (attempt `attempt`).
    pub fn add_oom_recheck(&self, at: Instant, sandbox: Weak<SandboxShared>, attempt: u32) {
        self.add_timer_kind(at, sandbox, TimerKind::OomRecheck(attempt));
    }

    fn add_timer_kind(&self, at: Instant, sandbox: Weak<SandboxShared>, kind: TimerKind) {
        let mut timers = self.timers.lock().unwrap();
        let key = self.next_token.fetch_add(1, Ordering::Relaxed);
        timers.due.push(Reverse((at, key)));
        timers.by_key.insert(key, Timer { sandbox, kind });
        drop(timers);
        self.wake();
    }

    fn wake(&self) {
        let _ = self.wake.write(1);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// The loop of the sandlot-io thread.
    pub fn run(self: Arc<Self>, reaper: Sender<ReaperJob>) {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut buf = vec![0u8; READ_CHUNK.max(sandlot_proto::MAX_MESSAGE)];
        while !self.stopping.load(Ordering::SeqCst) {
            let timeout = self.fire_timers();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            for event in &events[..n] {
                self.dispatch(event.data(), &mut buf, &reaper);
            }
        }
    }

    /// Fires due command deadlines; returns how long epoll may sleep.
    fn fire_timers(&self) -> EpollTimeout {
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut timers = self.timers.lock().unwrap();
            while let Some(Reverse((at, key))) = timers.due.peek().copied() {
                if at > now {
                    break;
                }
                timers.due.pop();
                if let Some(timer) = timers.by_key.remove(&key) {
                    due.push(timer);
                }
            }
            timers.due.peek().map(|Reverse((at, _))| *at)
        };
        for timer in due {
            if let Some(sandbox) = timer.sandbox.upgrade() {
                match timer.kind {
                    TimerKind::Command(command) => sandbox.command_timed_out(command),
                    TimerKind::OomRecheck(attempt) => sandbox.check_oom(self, Some(attempt)),
                }
            }
        }
        match next {
            None => EpollTimeout::NONE,
            Some(at) => {
                let millis = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                EpollTimeout::try_from(millis.min(60_000) as i32).unwrap_or(EpollTimeout::NONE)
            }
        }
    }

    fn dispatch(&self, token: Token, buf: &mut [u8], reaper: &Sender<ReaperJob>) {
        enum Action {
            Wake,
            Control(Weak<SandboxShared>),
            InitExit(Weak<SandboxShared>),
            Output,
            Oom(Weak<SandboxShared>, Arc<OomWatch>),
        }
        let action = match self.sources.lock().unwrap().get(&token) {
            None => return, // removed while the event was queued
            Some(Source::Wake) => Action::Wake,
            Some(Source::Control(sb)) => Action::Control(sb.clone()),
            Some(Source::InitExit(sb)) => Action::InitExit(sb.clone()),
            Some(Source::Output(_)) => Action::Output,
            Some(Source::Oom(sb, watch)) => Action::Oom(sb.clone(), watch.clone()),
        };
        match action {
            Action::Wake => {
                let _ = self.wake.read();
            }
            Action::Control(sandbox) => {
                let Some(sandbox) = sandbox.upgrade() else {
                    return;
                };
                if !self.read_control(&sandbox, buf) {
                    // init is gone: stop watching, let the reaper tear down.
                    sandbox.unwatch_control(self);
                    let _ = reaper.send(ReaperJob::Destroy(sandbox, Reason::InitDied));
                }
            }
            Action::InitExit(sandbox) => {
                let Some(sandbox) = sandbox.upgrade() else {
                    return;
                };
                sandbox.unwatch_init(self);
                let _ = reaper.send(ReaperJob::Destroy(sandbox, Reason::InitDied));
            }
            Action::Output => self.read_output(token, buf),
            Action::Oom(sandbox, watch) => {
                watch.acknowledge();
                match sandbox.upgrade() {
                    Some(sandbox) => sandbox.check_oom(self, None),
                    // A stale registration: nobody is left to tell.
                    None => self.unwatch_oom(token),
                }
            }
        }
    }

    /// Handles every queued event; false when the socket closed or broke.
    fn read_control(&self, sandbox: &Arc<SandboxShared>, buf: &mut [u8]) -> bool {
        let Some(control) = sandbox.control() else {
            return false;
        };
        loop {
            match control::recv(control.as_fd(), buf, true) {
                Ok(Incoming::Event(event)) => sandbox.on_event(self, event, buf),
                Ok(Incoming::Empty) => return true,
                Ok(Incoming::Closed) | Err(_) => return false,
            }
        }
    }

    fn read_output(&self, token: Token, buf: &mut [u8]) {
        for _ in 0..READS_PER_WAKE {
            let outcome = {
                let mut sources = self.sources.lock().unwrap();
                let Some(Source::Output(out)) = sources.get_mut(&token) else {
                    return;
                };
                forward(out, buf)
            };
            match outcome {
                ReadOutcome::Data => continue,
                ReadOutcome::Empty => return,
                ReadOutcome::Closed => {
                    if let Some(Source::Output(out)) = self.take(token) {
                        if let Some(sandbox) = out.sandbox.upgrade() {
                            sandbox.output_closed(out.command, token);
                        }
                    }
                    return;
                }
            }
        }
    }
}

enum ReadOutcome {
    Data,
    Empty,
    Closed,
}

/// One non-blocking read from an output pipe, forwarded as an event as far
/// as the output budget allows; the rest is dropped and flagged.
fn forward(out: &mut Output, buf: &mut [u8]) -> ReadOutcome {
    match nix::unistd::read(out.fd.as_fd(), buf) {
        Ok(0) => ReadOutcome::Closed,
        Ok(n) => {
            let keep = n.min(usize::try_from(out.budget).unwrap_or(usize::MAX));
            if keep < n {
                out.truncated.store(true, Ordering::Relaxed);
            }
            if keep == 0 {
                return ReadOutcome::Data;
            }
            out.budget -= keep as u64;
            let chunk = buf[..keep].to_vec();
            let event = match out.stream {
                OutputStream::Stdout => ProcessEvent::Stdout(chunk),
                OutputStream::Stderr => ProcessEvent::Stderr(chunk),
            };
            // A receiver that went away just means nobody listens.
            let _ = out.events.send(event);
            ReadOutcome::Data
        }
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => ReadOutcome::Empty,
        Err(_) => ReadOutcome::Closed,
    }
}
