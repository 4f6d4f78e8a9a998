//! A process's output on its way from the pipes the host owns to whoever
//! reads it, with back-pressure: the io thread forwards chunks into a
//! bounded queue per process ([`ProcessEvents`]); when the reader lags and
//! the queue is full, the io thread stops reading that pipe (so the writer
//! inside the sandbox blocks on a full pipe) until the reader takes an
//! event, which resumes it. Nothing is buffered on the host beyond
//! [`EVENT_QUEUE`] chunks of at most [`READ_CHUNK`] bytes per process.
//!
//! At a process's exit only what is already in its pipes is forwarded
//! (`FIONREAD` at that moment): a background child that inherited the
//! pipe and keeps writing cannot hold the io thread or delay the `Exit`
//! event, which always comes last and always has room (one slot of the
//! queue is kept for it).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use nix::errno::Errno;

use crate::engine::lifecycle::{OutputStream, ProcessEvent};
use crate::engine::sync::lock;
use crate::sys::fd;

/// Bytes read from a pipe per event before other sources get a turn.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Output chunks a reader may have waiting before the io thread stops
/// reading the process's pipes (the `Exit` event has a slot of its own).
pub(crate) const EVENT_QUEUE: usize = 16;

/// What a terminal may still hold beyond what `FIONREAD` counts on its
/// master at the exit: bytes a writer put through the slave are moved to
/// the master's side by a kernel worker (the tty flip buffers, at most
/// 64 KiB for a pty, plus the line discipline's 4 KiB), so at the moment
/// the exit is reported the last of them may not be counted yet. A read
/// that finds nothing flushes that worker first, so reading until empty
/// (or this much more) gets them all.
const TERMINAL_IN_FLIGHT: usize = (64 + 4) << 10;

/// The sending side of one process's event queue, shared by its output
/// pipes and the engine, which sends the final `Exit`.
#[derive(Clone)]
pub(crate) struct EventSender {
    tx: Sender<ProcessEvent>,
    flow: Arc<Flow>,
}

/// The pipes the io thread stopped reading because the queue was full,
/// and how to wake it once the reader made room.
struct Flow {
    stalled: Mutex<Vec<u64>>,
    any_stalled: AtomicBool,
    /// The reader still holds the stream (once it is dropped, output is
    /// read and discarded: nobody will ever make room).
    reader: AtomicBool,
    resume: Box<dyn Fn(Vec<u64>) + Send + Sync>,
}

/// A new event queue. `resume` is called (from the reader's thread) with
/// the tokens of stalled pipes once the reader has taken an event.
pub(crate) fn event_queue(
    resume: impl Fn(Vec<u64>) + Send + Sync + 'static,
) -> (EventSender, ProcessEvents) {
    let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE + 1);
    let flow = Arc::new(Flow {
        stalled: Mutex::new(Vec::new()),
        any_stalled: AtomicBool::new(false),
        reader: AtomicBool::new(true),
        resume: Box::new(resume),
    });
    (
        EventSender {
            tx,
            flow: flow.clone(),
        },
        ProcessEvents {
            rx,
            flow: flow.clone(),
            _reader: Arc::new(Reader(flow)),
        },
    )
}

impl EventSender {
    /// Sends the final event: there is always room for it.
    pub fn send_exit(&self, event: ProcessEvent) {
        // A reader that went away just means nobody listens.
        let _ = self.tx.try_send(event);
    }

    /// Whether an output chunk may be queued now (one slot stays free for
    /// the exit).
    fn has_room(&self) -> bool {
        self.tx.len() < EVENT_QUEUE
    }

    fn send_output(&self, event: ProcessEvent) -> Result<(), ProcessEvent> {
        if !self.flow.reader.load(Ordering::SeqCst) {
            return Ok(()); // nobody listens: dropped
        }
        if !self.has_room() {
            return Err(event);
        }
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => Ok(()),
            Err(TrySendError::Full(event)) => Err(event),
        }
    }

    /// Records that the pipe `token` waits for room; false if room
    /// appeared meanwhile (the caller retries at once).
    fn stall(&self, token: u64) -> bool {
        lock(&self.flow.stalled).push(token);
        self.flow.any_stalled.store(true, Ordering::SeqCst);
        // The reader may have emptied the queue (or gone away) between our
        // failed send and the flag: look again, so a stall never outlives
        // the reason.
        if self.has_room() || !self.flow.reader.load(Ordering::SeqCst) {
            lock(&self.flow.stalled).retain(|t| *t != token);
            return false;
        }
        true
    }
}

/// The stream of a spawned process: stdout and stderr chunks as they
/// arrive, then [`ProcessEvent::Exit`], always last. Bounded: while it is
/// full the process's pipes are not read, so a writer inside the sandbox
/// blocks instead of the host buffering its output. Clones share the one
/// stream (each event goes to one of them); once every clone is dropped,
/// the rest of the output is read and dropped.
#[derive(Clone)]
pub struct ProcessEvents {
    rx: Receiver<ProcessEvent>,
    flow: Arc<Flow>,
    _reader: Arc<Reader>,
}

/// Dropped with the last clone of a stream.
struct Reader(Arc<Flow>);

impl Drop for Reader {
    fn drop(&mut self) {
        let flow = &self.0;
        // From now on output is read and dropped; wake what waits for room.
        flow.reader.store(false, Ordering::SeqCst);
        let tokens = std::mem::take(&mut *lock(&flow.stalled));
        flow.any_stalled.store(false, Ordering::SeqCst);
        if !tokens.is_empty() {
            (flow.resume)(tokens);
        }
    }
}

impl std::fmt::Debug for ProcessEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessEvents")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl ProcessEvents {
    fn took(&self) {
        if self.flow.any_stalled.load(Ordering::SeqCst) {
            let tokens = std::mem::take(&mut *lock(&self.flow.stalled));
            self.flow.any_stalled.store(false, Ordering::SeqCst);
            if !tokens.is_empty() {
                (self.flow.resume)(tokens);
            }
        }
    }

    fn seen<E>(&self, result: Result<ProcessEvent, E>) -> Result<ProcessEvent, E> {
        if result.is_ok() {
            self.took();
        }
        result
    }

    /// Waits for the next event; `Err` once the stream ended.
    pub fn recv(&self) -> Result<ProcessEvent, crossbeam_channel::RecvError> {
        self.seen(self.rx.recv())
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Result<ProcessEvent, TryRecvError> {
        self.seen(self.rx.try_recv())
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ProcessEvent, RecvTimeoutError> {
        self.seen(self.rx.recv_timeout(timeout))
    }

    /// Waits until `deadline` for the next event.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<ProcessEvent, RecvTimeoutError> {
        self.seen(self.rx.recv_deadline(deadline))
    }

    /// Every event until the stream ends (blocking).
    pub fn iter(&self) -> impl Iterator<Item = ProcessEvent> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// The events waiting now.
    pub fn try_iter(&self) -> impl Iterator<Item = ProcessEvent> + '_ {
        std::iter::from_fn(move || self.try_recv().ok())
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The underlying receiver, for `select!` over several streams. Taking
    /// events through it directly does not resume a stalled process: call
    /// [`ProcessEvents::resume`] after each.
    pub fn receiver(&self) -> &Receiver<ProcessEvent> {
        &self.rx
    }

    /// Lets the io thread read the process's pipes again if it stopped for
    /// lack of room (after taking events through [`ProcessEvents::receiver`]).
    pub fn resume(&self) {
        self.took();
    }
}

/// One output pipe of a running process, owned by the io thread.
pub(crate) struct Output {
    pub exec: u64,
    pub stream: OutputStream,
    pub events: EventSender,
    pub fd: OwnedFd,
    /// Bytes that may still be forwarded (`u64::MAX`: no limit); past it
    /// output is read and discarded, and `truncated` set.
    pub budget: u64,
    pub truncated: Arc<AtomicBool>,
    /// After the process exited: bytes still to read before the pipe is
    /// closed (what was in it at the exit).
    pub finishing: Option<usize>,
    /// A chunk read but not yet queued (the queue was full).
    pub pending: Option<ProcessEvent>,
    /// A terminal's master end rather than a pipe (see
    /// [`TERMINAL_IN_FLIGHT`]); its end is EIO, not end-of-file.
    pub terminal: bool,
}

/// What one turn of reading a pipe did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Read and forwarded; there may be more.
    More,
    /// Nothing to read now.
    Empty,
    /// The queue is full: stop watching the pipe until the reader makes
    /// room.
    Stalled,
    /// End of file, an error, or (after the exit) everything that was
    /// there is read: close the pipe.
    Done,
}

impl Output {
    pub fn new(
        exec: u64,
        stream: OutputStream,
        events: EventSender,
        fd: OwnedFd,
        budget: u64,
        truncated: Arc<AtomicBool>,
    ) -> Output {
        Output {
            exec,
            stream,
            events,
            fd,
            budget,
            truncated,
            finishing: None,
            pending: None,
            terminal: false,
        }
    }

    /// This output is a terminal's master end.
    pub fn on_terminal(mut self) -> Output {
        self.terminal = true;
        self
    }

    /// The process exited: read what is in the pipe now, then stop (at the
    /// first read that finds it empty).
    pub fn finish(&mut self) {
        if self.finishing.is_none() {
            let ready = fd::readable_bytes(self.fd.as_fd()).unwrap_or(0);
            let in_flight = if self.terminal { TERMINAL_IN_FLIGHT } else { 0 };
            self.finishing = Some(ready + in_flight);
        }
    }

    /// One non-blocking read, forwarded as far as the output budget and the
    /// queue allow. `token` names this pipe for a stall.
    pub fn turn(&mut self, token: u64, buf: &mut [u8]) -> Turn {
        if let Some(event) = self.pending.take() {
            if let Err(event) = self.events.send_output(event) {
                self.pending = Some(event);
                return if self.events.stall(token) {
                    Turn::Stalled
                } else {
                    Turn::More
                };
            }
        }
        let want = match self.finishing {
            Some(0) => return Turn::Done,
            Some(left) => left.min(buf.len()),
            None => buf.len(),
        };
        let n = match nix::unistd::read(self.fd.as_fd(), &mut buf[..want]) {
            Ok(0) => return Turn::Done,
            Ok(n) => n,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                return if self.finishing.is_some() {
                    Turn::Done
                } else {
                    Turn::Empty
                }
            }
            Err(_) => return Turn::Done,
        };
        if let Some(left) = self.finishing.as_mut() {
            *left -= n;
        }
        let keep = n.min(usize::try_from(self.budget).unwrap_or(usize::MAX));
        if keep < n {
            self.truncated.store(true, Ordering::Relaxed);
        }
        if keep == 0 {
            return Turn::More;
        }
        self.budget -= keep as u64;
        let chunk = buf[..keep].to_vec();
        let event = match self.stream {
            OutputStream::Stdout => ProcessEvent::Stdout(chunk),
            OutputStream::Stderr => ProcessEvent::Stderr(chunk),
        };
        if let Err(event) = self.events.send_output(event) {
            self.pending = Some(event);
            if self.events.stall(token) {
                return Turn::Stalled;
            }
        }
        Turn::More
    }

    /// Forwards what can be forwarded without waiting (the sandbox is being
    /// torn down): the pending chunk and what is in the pipe, as far as the
    /// queue has room; the rest is dropped and flagged as truncated.
    pub fn flush(mut self, buf: &mut [u8]) {
        self.finish();
        loop {
            match self.turn(u64::MAX, buf) {
                Turn::More => continue,
                Turn::Stalled => {
                    self.truncated.store(true, Ordering::Relaxed);
                    return;
                }
                Turn::Empty | Turn::Done => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .unwrap();
        (r, w)
    }

    #[test]
    fn a_full_queue_stalls_and_the_reader_resumes_it() {
        let resumed = Arc::new(AtomicUsize::new(0));
        let seen = resumed.clone();
        let (tx, events) = event_queue(move |tokens| {
            assert_eq!(tokens, vec![7]);
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let (r, w) = pipe();
        let mut out = Output::new(
            1,
            OutputStream::Stdout,
            tx.clone(),
            r,
            u64::MAX,
            Arc::default(),
        );
        let mut buf = vec![0u8; 4];
        for _ in 0..EVENT_QUEUE + 1 {
            nix::unistd::write(&w, b"abcd").unwrap();
        }
        for _ in 0..EVENT_QUEUE {
            assert_eq!(out.turn(7, &mut buf), Turn::More);
        }
        // The queue holds EVENT_QUEUE chunks: the next one waits.
        assert_eq!(out.turn(7, &mut buf), Turn::Stalled);
        assert_eq!(events.len(), EVENT_QUEUE);
        // The exit still has its slot.
        tx.send_exit(ProcessEvent::Stdout(b"exit".to_vec()));
        assert_eq!(events.len(), EVENT_QUEUE + 1);
        assert_eq!(
            events.recv().unwrap(),
            ProcessEvent::Stdout(b"abcd".to_vec())
        );
        assert_eq!(resumed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn finishing_reads_only_what_was_there_at_the_exit() {
        let (tx, events) = event_queue(|_| {});
        let (r, w) = pipe();
        let mut out = Output::new(1, OutputStream::Stderr, tx, r, u64::MAX, Arc::default());
        nix::unistd::write(&w, b"before").unwrap();
        out.finish();
        // A background writer adds more after the exit.
        nix::unistd::write(&w, b"after").unwrap();
        let mut buf = vec![0u8; 64];
        assert_eq!(out.turn(1, &mut buf), Turn::More);
        assert_eq!(out.turn(1, &mut buf), Turn::Done);
        assert_eq!(
            events.try_recv().unwrap(),
            ProcessEvent::Stderr(b"before".to_vec())
        );
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn past_the_budget_output_is_dropped_and_flagged() {
        let (tx, events) = event_queue(|_| {});
        let (r, w) = pipe();
        let truncated = Arc::new(AtomicBool::new(false));
        let mut out = Output::new(1, OutputStream::Stdout, tx, r, 3, truncated.clone());
        nix::unistd::write(&w, b"12345").unwrap();
        let mut buf = vec![0u8; 64];
        assert_eq!(out.turn(1, &mut buf), Turn::More);
        assert!(truncated.load(Ordering::Relaxed));
        assert_eq!(
            events.try_recv().unwrap(),
            ProcessEvent::Stdout(b"123".to_vec())
        );
    }
}
