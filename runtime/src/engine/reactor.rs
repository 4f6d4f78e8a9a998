//! One I/O thread per runtime ("sandlot-io"): an epoll loop over every
//! sandbox's control socket and init pidfd, every running process's output
//! pipes and every OOM notifier, plus timers (command deadlines, OOM
//! rechecks).
//!
//! It reaches a sandbox only through the [`Handler`] trait, and it never
//! blocks: control sends from here are non-blocking, output goes into
//! bounded queues (a full one stops the pipe being read, see `output.rs`),
//! at a process's exit only what is already in its pipes is read, and
//! slow work (tearing a sandbox down) is the handler's to hand off. A
//! panic while one source is handled fails that sandbox only
//! ([`Handler::failed`]); the loop goes on serving the rest.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::engine::error::{Error, Result};
use crate::engine::oom::OomWatch;
use crate::engine::output::{event_queue, EventSender, Output, ProcessEvents, Turn, READ_CHUNK};
use crate::engine::sync::lock;
use crate::sys::fd;

const READS_PER_WAKE: usize = 4;

pub(crate) type Token = u64;

/// How the io thread reaches a sandbox. Every method is called on the io
/// thread and must not block.
pub(crate) trait Handler: Send + Sync {
    /// Events from init wait on the control socket: handle them all;
    /// false when the socket closed or broke (init is gone).
    fn control_readable(&self, reactor: &Reactor, buf: &mut [u8]) -> bool;
    /// init is gone (its pidfd became readable, or its socket closed).
    fn init_gone(&self);
    /// The output pipe `token` of process `exec` was closed.
    fn output_closed(&self, exec: u64, token: Token);
    /// Process `exec`'s time limit passed.
    fn deadline_passed(&self, exec: u64);
    /// The OOM notifier fired (`attempt` None) or a recheck came due.
    fn check_oom(&self, reactor: &Reactor, attempt: Option<u32>);
    /// Handling one of this sandbox's sources panicked: fail the sandbox
    /// (the runtime keeps serving the others).
    fn failed(&self, what: String);
}

enum Source {
    Wake,
    Control(Weak<dyn Handler>),
    InitExit(Weak<dyn Handler>),
    Output(Weak<dyn Handler>, Output),
    Oom(Weak<dyn Handler>, Arc<OomWatch>),
}

impl Source {
    fn handler(&self) -> Option<Arc<dyn Handler>> {
        match self {
            Source::Wake => None,
            Source::Control(h) | Source::InitExit(h) | Source::Output(h, _) | Source::Oom(h, _) => {
                h.upgrade()
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerKind {
    /// A process's deadline.
    Deadline(u64),
    /// Look at the OOM count again (the v1 notification comes before the
    /// kill); the number of the attempt.
    OomRecheck(u32),
}

struct Timer {
    handler: Weak<dyn Handler>,
    kind: TimerKind,
}

/// Deadlines: a min-heap of (when, key) and the live timers by key; a
/// cancelled timer's heap entry is skipped when it comes due.
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
    /// Output pipes whose reader made room again.
    resumed: Mutex<Vec<Token>>,
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
            resumed: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        }))
    }

    fn add(&self, fd: BorrowedFd<'_>, source: Source, flags: EpollFlags) -> Result<Token, Errno> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&self.sources).insert(token, source);
        if let Err(e) = self.epoll.add(fd, EpollEvent::new(flags, token)) {
            lock(&self.sources).remove(&token);
            return Err(e);
        }
        Ok(token)
    }

    fn readable() -> EpollFlags {
        EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP
    }

    /// Watches a sandbox's control socket and init pidfd.
    pub fn watch_sandbox(
        &self,
        handler: Weak<dyn Handler>,
        control: BorrowedFd<'_>,
        pidfd: BorrowedFd<'_>,
    ) -> Result<[Token; 2], Errno> {
        let control_token =
            self.add(control, Source::Control(handler.clone()), Self::readable())?;
        match self.add(pidfd, Source::InitExit(handler), Self::readable()) {
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
        lock(&self.sources).remove(&token);
    }

    /// A bounded event queue for one process, wired to resume its pipes
    /// through this reactor.
    pub fn event_queue(self: &Arc<Self>) -> (EventSender, ProcessEvents) {
        let reactor = Arc::downgrade(self);
        event_queue(move |tokens| {
            if let Some(reactor) = reactor.upgrade() {
                lock(&reactor.resumed).extend(tokens);
                reactor.wake();
            }
        })
    }

    /// Forwards a process's output pipe; the reactor owns it from here.
    pub fn watch_output(&self, handler: Weak<dyn Handler>, output: Output) -> Result<Token, Errno> {
        // The descriptor moves into the table; borrow its number for the
        // registration (it stays open while the entry exists).
        let raw = output.fd.as_raw_fd();
        self.add(
            fd::borrow(raw),
            Source::Output(handler, output),
            Self::readable(),
        )
    }

    /// Waits on a sandbox's OOM notifier (kernfs files signal a change with
    /// `EPOLLPRI` only: `EPOLLIN` would always be ready).
    pub fn watch_oom(
        &self,
        handler: Weak<dyn Handler>,
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
        self.add(fd::borrow(raw), Source::Oom(handler, watch), flags)
    }

    /// Stops waiting on an OOM notifier.
    pub fn unwatch_oom(&self, token: Token) {
        let source = lock(&self.sources).remove(&token);
        if let Some(Source::Oom(_, watch)) = source {
            let _ = self.epoll.delete(watch.wait_fd().0);
        }
    }

    fn take_output(&self, token: Token) -> Option<Output> {
        let source = lock(&self.sources).remove(&token)?;
        match source {
            Source::Output(_, out) => {
                let _ = self.epoll.delete(out.fd.as_fd());
                Some(out)
            }
            other => {
                // Not an output: put it back.
                lock(&self.sources).insert(token, other);
                None
            }
        }
    }

    /// Closes an output pipe without reading it.
    pub fn drop_output(&self, token: Token) {
        drop(self.take_output(token));
    }

    /// The process of these pipes exited: from now on read only what is in
    /// them at this moment, then close them (each closing calls
    /// [`Handler::output_closed`]).
    pub fn finish_outputs(&self, tokens: &[Token]) {
        {
            let mut sources = lock(&self.sources);
            for token in tokens {
                if let Some(Source::Output(_, out)) = sources.get_mut(token) {
                    out.finish();
                }
            }
        }
        // Reading them may take a few turns: the loop does it.
        lock(&self.resumed).extend_from_slice(tokens);
        self.wake();
    }

    /// Takes a pipe from the io thread and forwards what is in it without
    /// waiting (the sandbox is being torn down).
    pub fn flush_output(&self, token: Token, buf: &mut [u8]) {
        if let Some(out) = self.take_output(token) {
            out.flush(buf);
        }
    }

    /// Arms a timer; the returned key cancels it.
    pub fn add_timer(&self, at: Instant, handler: Weak<dyn Handler>, kind: TimerKind) -> u64 {
        let key = self.next_token.fetch_add(1, Ordering::Relaxed);
        {
            let mut timers = lock(&self.timers);
            timers.due.push(Reverse((at, key)));
            timers.by_key.insert(key, Timer { handler, kind });
        }
        self.wake();
        key
    }

    /// Cancels a timer (its heap entry is skipped when it comes due).
    pub fn cancel_timer(&self, key: u64) {
        let mut timers = lock(&self.timers);
        timers.by_key.remove(&key);
        if timers.by_key.is_empty() {
            // Nothing live: drop the stale entries at once.
            timers.due.clear();
        }
    }

    fn wake(&self) {
        let _ = self.wake.write(1);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// The loop of the sandlot-io thread.
    pub fn run(self: Arc<Self>) {
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
                self.guarded(event.data(), |reactor| {
                    reactor.dispatch(event.data(), &mut buf)
                });
            }
            let resumed = std::mem::take(&mut *lock(&self.resumed));
            for token in resumed {
                self.guarded(token, |reactor| reactor.read_output(token, &mut buf, true));
            }
        }
    }

    /// Runs `f` for the source `token`; a panic fails that source's
    /// sandbox and removes the source, and the loop goes on.
    fn guarded(&self, token: Token, f: impl FnOnce(&Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_ok() {
            return;
        }
        let source = lock(&self.sources).remove(&token);
        if let Some(source) = source {
            if let Source::Output(_, out) = &source {
                let _ = self.epoll.delete(out.fd.as_fd());
            }
            if let Some(handler) = source.handler() {
                handler.failed(format!("the io thread panicked handling source {token}"));
            }
        }
    }

    /// Fires due timers; returns how long epoll may sleep.
    fn fire_timers(&self) -> EpollTimeout {
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut timers = lock(&self.timers);
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
            let Some(handler) = timer.handler.upgrade() else {
                continue;
            };
            let fired = catch_unwind(AssertUnwindSafe(|| match timer.kind {
                TimerKind::Deadline(exec) => handler.deadline_passed(exec),
                TimerKind::OomRecheck(attempt) => handler.check_oom(self, Some(attempt)),
            }));
            if fired.is_err() {
                handler.failed(format!(
                    "the io thread panicked on a timer ({:?})",
                    timer.kind
                ));
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

    fn dispatch(&self, token: Token, buf: &mut [u8]) {
        enum Action {
            Wake,
            Control(Weak<dyn Handler>),
            InitExit(Weak<dyn Handler>),
            Output,
            Oom(Weak<dyn Handler>, Arc<OomWatch>),
        }
        let action = match lock(&self.sources).get(&token) {
            None => return, // removed while the event was queued
            Some(Source::Wake) => Action::Wake,
            Some(Source::Control(h)) => Action::Control(h.clone()),
            Some(Source::InitExit(h)) => Action::InitExit(h.clone()),
            Some(Source::Output(..)) => Action::Output,
            Some(Source::Oom(h, watch)) => Action::Oom(h.clone(), watch.clone()),
        };
        match action {
            Action::Wake => {
                let _ = self.wake.read();
            }
            Action::Control(handler) => {
                let Some(handler) = handler.upgrade() else {
                    return;
                };
                if !handler.control_readable(self, buf) {
                    handler.init_gone();
                }
            }
            Action::InitExit(handler) => {
                if let Some(handler) = handler.upgrade() {
                    handler.init_gone();
                }
            }
            Action::Output => self.read_output(token, buf, false),
            Action::Oom(handler, watch) => {
                watch.acknowledge();
                match handler.upgrade() {
                    Some(handler) => handler.check_oom(self, None),
                    // A stale registration: nobody is left to tell.
                    None => self.unwatch_oom(token),
                }
            }
        }
    }

    /// A few turns of reading one output pipe. `resumed`: the pipe was
    /// stalled (not in the epoll set) or is finishing, and gets a turn
    /// because its reader made room or its process exited.
    fn read_output(&self, token: Token, buf: &mut [u8], resumed: bool) {
        for _ in 0..READS_PER_WAKE {
            let turn = {
                let mut sources = lock(&self.sources);
                let Some(Source::Output(_, out)) = sources.get_mut(&token) else {
                    return;
                };
                let turn = out.turn(token, buf);
                if resumed && turn != Turn::Stalled && out.pending.is_none() {
                    // Watch it again (a no-op if it was never taken out).
                    let _ = self.epoll.modify(
                        out.fd.as_fd(),
                        &mut EpollEvent::new(Self::readable(), token),
                    );
                }
                if turn == Turn::Stalled {
                    // Out of the epoll set until the reader makes room.
                    let _ = self.epoll.modify(
                        out.fd.as_fd(),
                        &mut EpollEvent::new(EpollFlags::empty(), token),
                    );
                }
                turn
            };
            match turn {
                Turn::More => continue,
                Turn::Empty | Turn::Stalled => return,
                Turn::Done => {
                    if let Some(Source::Output(handler, out)) = {
                        let source = lock(&self.sources).remove(&token);
                        source
                    } {
                        let _ = self.epoll.delete(out.fd.as_fd());
                        let exec = out.exec;
                        drop(out);
                        if let Some(handler) = handler.upgrade() {
                            handler.output_closed(exec, token);
                        }
                    }
                    return;
                }
            }
        }
        // More may be waiting: let the other sources have their turn and
        // come back (a finishing pipe gets no new epoll event).
        let finishing = matches!(
            lock(&self.sources).get(&token),
            Some(Source::Output(_, out)) if out.finishing.is_some()
        );
        if finishing {
            lock(&self.resumed).push(token);
            self.wake();
        }
    }
}
