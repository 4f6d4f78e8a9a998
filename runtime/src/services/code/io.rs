//! The host ends of one driver's pipes and one step of reading them.
//!
//! Everything runs on the thread that called `run` (no thread per
//! context): it polls the driver's stdout, stderr and message pipes, the
//! request pipe while a request is still being written, and the context's
//! waker (an interrupt from another thread).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::protocol::{Decoded, Decoder, ProtocolError};

/// One read's worth; also the unit of output delivered to callbacks.
const READ_CHUNK: usize = 64 << 10;
/// Reads of one output pipe per drain: a background process writing
/// without pause cannot hold the loop in a drain for ever.
const DRAIN_READS: usize = 64;

pub(crate) enum Event<'a> {
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
    Message(Decoded),
    /// The driver closed its message pipe: it exited (or user code closed
    /// the pipe, which leaves it unusable all the same).
    MessagesClosed,
    /// Another thread asked for attention (interrupt, removal).
    Woken,
}

pub(crate) struct Pipes {
    pub requests: File,
    pub messages: File,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    messages_open: bool,
    decoder: Decoder,
    buf: Vec<u8>,
}

pub(crate) fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl Pipes {
    pub fn new(
        requests: OwnedFd,
        messages: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<Pipes> {
        for fd in [&requests, &messages, &stdout, &stderr] {
            set_nonblocking(fd)?;
        }
        Ok(Pipes {
            requests: File::from(requests),
            messages: File::from(messages),
            stdout: Some(File::from(stdout)),
            stderr: Some(File::from(stderr)),
            messages_open: true,
            decoder: Decoder::new(),
            buf: vec![0; READ_CHUNK],
        })
    }

    /// Reads what the output pipes hold now, without waiting.
    pub fn drain_output(&mut self, sink: &mut dyn FnMut(Event<'_>)) {
        for which in [Stream::Stdout, Stream::Stderr] {
            self.read_output(which, DRAIN_READS, sink);
        }
    }

    fn read_output(&mut self, which: Stream, reads: usize, sink: &mut dyn FnMut(Event<'_>)) {
        let slot = match which {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        for _ in 0..reads {
            let Some(file) = slot.as_mut() else { return };
            match file.read(&mut self.buf) {
                Ok(0) => {
                    *slot = None;
                    return;
                }
                Ok(n) => match which {
                    Stream::Stdout => sink(Event::Stdout(&self.buf[..n])),
                    Stream::Stderr => sink(Event::Stderr(&self.buf[..n])),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // EAGAIN: nothing more now
            }
        }
    }

    /// Waits until something happens or `until` passes, then handles what
    /// is ready. `pending` is the part of a request still to write.
    pub fn step(
        &mut self,
        waker: &File,
        pending: &mut Vec<u8>,
        until: Option<Instant>,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                // Round up so a deadline is never polled for 0 ms in a loop.
                PollTimeout::try_from((ms + 1).min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let input = PollFlags::POLLIN;
        let mut fds = Vec::with_capacity(5);
        fds.push(PollFd::new(waker.as_fd(), input));
        let messages_at = self.messages_open.then(|| {
            fds.push(PollFd::new(self.messages.as_fd(), input));
            fds.len() - 1
        });
        let stdout_at = self.stdout.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), input));
            fds.len() - 1
        });
        let stderr_at = self.stderr.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), input));
            fds.len() - 1
        });
        let requests_at = (!pending.is_empty()).then(|| {
            fds.push(PollFd::new(self.requests.as_fd(), PollFlags::POLLOUT));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // EINTR; nothing else can fail on these few descriptors, and the
            // caller's deadlines still apply.
            Err(_) => return Ok(()),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (woken, messages, stdout, stderr, requests) = (
            ready(Some(0)),
            ready(messages_at),
            ready(stdout_at),
            ready(stderr_at),
            ready(requests_at),
        );
        drop(fds);
        if requests {
            self.write_pending(pending);
        }
        if stdout {
            self.read_output(Stream::Stdout, 1, sink);
        }
        if stderr {
            self.read_output(Stream::Stderr, 1, sink);
        }
        if messages {
            self.read_messages(sink)?;
        }
        if woken {
            let mut scratch = [0u8; 64];
            let _ = (&*waker).read(&mut scratch);
            sink(Event::Woken);
        }
        Ok(())
    }

    fn write_pending(&mut self, pending: &mut Vec<u8>) {
        // EAGAIN: later. EPIPE: the driver is gone, which its message pipe
        // will say.
        if let Ok(n) = self.requests.write(pending) {
            pending.drain(..n);
        }
    }

    fn read_messages(&mut self, sink: &mut dyn FnMut(Event<'_>)) -> Result<(), ProtocolError> {
        // Output the driver wrote before this message is in its pipes now:
        // deliver it first, so prints come before the display or the end
        // of cell that follows them.
        self.drain_output(sink);
        match self.messages.read(&mut self.buf) {
            Ok(0) => {
                self.messages_open = false;
                self.drain_output(sink);
                sink(Event::MessagesClosed);
            }
            Ok(n) => {
                for decoded in self.decoder.push(&self.buf[..n])? {
                    sink(Event::Message(decoded));
                }
            }
            Err(_) => {}
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}
