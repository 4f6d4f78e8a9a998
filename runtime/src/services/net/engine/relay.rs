//! One proxied connection: the sandbox's end (`client`), the far end
//! (`upstream`), and a pipe per direction that `splice` moves bytes
//! through without copying them into user space.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{splice, OFlag, SpliceFFlags};

use super::slab::Key;
use super::Destination;
use crate::services::net::bucket::Bucket;
use crate::services::net::rules::Policy;

/// A pipe's default capacity (16 pages): where every flow starts.
pub const PIPE_CAPACITY: usize = 64 * 1024;

/// Where a bulk flow's pipe grows to (`fs.pipe-max-size`'s default; above
/// it the kernel refuses without CAP_SYS_RESOURCE). One stream through
/// the proxy, measured interleaved on our 2-core VM: 64 KiB pipes 653-1067
/// MiB/s at 0.60-0.86 s of loop CPU per GiB; 1 MiB pipes 822-1339 MiB/s
/// at 0.40-0.48 s (BENCHMARKS.md, "Network").
pub const BULK_PIPE_CAPACITY: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a lookup thread to resolve the name.
    Resolving,
    /// Non-blocking connect in flight.
    Connecting,
    /// Bytes flow.
    Relaying,
}

/// One direction: source socket → pipe → destination socket.
#[derive(Default)]
pub struct Flow {
    pipe: Option<(OwnedFd, OwnedFd)>,
    capacity: usize,
    buffered: usize,
    /// The source said end-of-stream.
    pub eof: bool,
    /// The destination got our shutdown(WR).
    shut: bool,
    /// The pipe was grown for bulk data (or that was refused).
    grown: bool,
}

impl Flow {
    pub fn done(&self) -> bool {
        self.eof && self.buffered == 0 && self.shut
    }
}

/// Readiness, as edge-triggered epoll last reported it and as calls
/// since then left it.
#[derive(Default, Clone, Copy)]
pub struct Ready {
    pub read: bool,
    pub write: bool,
}

pub struct Conn {
    pub sb: Key,
    pub client: TcpStream,
    pub upstream: Option<TcpStream>,
    pub stage: Stage,
    /// Where the sandbox wanted to go (for events).
    pub destination: Destination,
    /// Addresses still to try.
    pub targets: VecDeque<SocketAddr>,
    /// The rules this connection was decided under.
    pub policy: Arc<Policy>,
    /// The client's first bytes must be checked (SNI/Host) before any is
    /// forwarded.
    pub inspect: bool,
    /// An exposed-port connection: the client is on the host, the
    /// upstream is the sandbox (counters and buckets swap).
    pub exposed: bool,
    pub client_ready: Ready,
    pub upstream_ready: Ready,
    /// client → upstream and upstream → client.
    pub up: Flow,
    pub down: Flow,
    /// When the current dial gives up.
    pub deadline: Option<Instant>,
    /// When a client that began its first bytes must have finished them
    /// (set once: trickling bytes does not extend it).
    pub inspect_by: Option<Instant>,
    /// Waiting for a bucket refill.
    pub throttled: bool,
    /// Bytes each direction's pipe holds.
    pub pipe_size: usize,
}

/// Result of pumping a connection.
pub struct Pumped {
    pub up_bytes: u64,
    pub down_bytes: u64,
    /// Some direction stopped for want of tokens.
    pub throttled: bool,
    /// Both directions finished, or a socket failed: close.
    pub finished: bool,
}

/// A pipe of the default size.
fn new_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?)
}

/// Grows a flow's pipe to `size` (the kernel rounds up to pages, and may
/// refuse more than `fs.pipe-max-size`: then it stays as it is). Only
/// flows that move bulk data grow: an interactive connection keeps 16
/// slots, a download gets 256 and moves its bytes in a quarter as many
/// system calls and wake-ups.
fn grow_pipe(flow: &mut Flow, size: usize) {
    if let Some((_, w)) = &flow.pipe {
        if let Ok(n) = nix::fcntl::fcntl(w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as i32)) {
            flow.capacity = n as usize;
        }
    }
    // Asked once: a refusal is not retried on every splice.
    flow.grown = true;
}

const SPLICE: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

/// What limits reading a direction's source: a closed gate (first bytes
/// not inspected yet) or the sandbox's bucket.
struct Budget<'a> {
    open: bool,
    pipe_size: usize,
    bucket: Option<&'a mut Bucket>,
    now: Instant,
    /// Set when the bucket ran dry.
    throttled: bool,
}

/// Moves what it can of one direction; returns bytes read from `src`.
fn pump_flow(
    flow: &mut Flow,
    (src, src_ready): (&TcpStream, &mut Ready),
    (dst, dst_ready): (&TcpStream, &mut Ready),
    budget: &mut Budget<'_>,
) -> std::io::Result<u64> {
    let gate_open = budget.open;
    let now = budget.now;
    if flow.pipe.is_none() {
        let pipe = new_pipe()?;
        flow.capacity = nix::fcntl::fcntl(&pipe.1, nix::fcntl::FcntlArg::F_GETPIPE_SZ)
            .map(|n| n as usize)
            .unwrap_or(PIPE_CAPACITY);
        flow.pipe = Some(pipe);
    }
    let mut moved = 0u64;
    loop {
        let mut progress = false;
        // Source → pipe.
        if gate_open && src_ready.read && !flow.eof && flow.buffered < flow.capacity {
            let mut want = flow.capacity - flow.buffered;
            if let Some(b) = budget.bucket.as_deref_mut() {
                want = b.available(want, now);
                if want == 0 {
                    budget.throttled = true;
                }
            }
            if want > 0 {
                let (_, pipe_w) = flow.pipe.as_ref().expect("pipe made above");
                match splice(src.as_fd(), None, pipe_w.as_fd(), None, want, SPLICE) {
                    Ok(0) => {
                        flow.eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        flow.buffered += n;
                        moved += n as u64;
                        if let Some(b) = budget.bucket.as_deref_mut() {
                            b.spend(n);
                        }
                        progress = true;
                        // Half the pipe in one go: bulk data.
                        if !flow.grown && n * 2 >= flow.capacity && flow.capacity < budget.pipe_size
                        {
                            grow_pipe(flow, budget.pipe_size);
                        }
                    }
                    // With bytes in the pipe, EAGAIN may mean a full pipe
                    // (partial pages fill its slots early), not an empty
                    // socket: keep the readiness and retry after draining.
                    Err(Errno::EAGAIN) if flow.buffered > 0 => {}
                    Err(Errno::EAGAIN) => src_ready.read = false,
                    Err(Errno::EINTR) => progress = true,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Pipe → destination.
        if dst_ready.write && flow.buffered > 0 {
            let (pipe_r, _) = flow.pipe.as_ref().expect("pipe made above");
            match splice(
                pipe_r.as_fd(),
                None,
                dst.as_fd(),
                None,
                flow.buffered,
                SPLICE,
            ) {
                Ok(n) => {
                    flow.buffered -= n;
                    progress = n > 0 || progress;
                }
                Err(Errno::EAGAIN) => dst_ready.write = false,
                Err(Errno::EINTR) => progress = true,
                Err(e) => return Err(e.into()),
            }
        }
        if flow.eof && flow.buffered == 0 && !flow.shut {
            flow.shut = true;
            match dst.shutdown(Shutdown::Write) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
        }
        if !progress {
            return Ok(moved);
        }
    }
}

impl Conn {
    /// Moves bytes both ways as far as readiness, pipes and buckets allow.
    /// `up` and `down` are the sandbox's buckets for the two directions.
    pub fn pump(
        &mut self,
        up: Option<&mut Bucket>,
        down: Option<&mut Bucket>,
        now: Instant,
    ) -> Pumped {
        let mut out = Pumped {
            up_bytes: 0,
            down_bytes: 0,
            throttled: false,
            finished: false,
        };
        let Some(upstream) = self.upstream.as_ref() else {
            return out;
        };
        if self.stage != Stage::Relaying {
            return out;
        }
        let mut up_budget = Budget {
            open: !self.inspect,
            pipe_size: self.pipe_size,
            bucket: up,
            now,
            throttled: false,
        };
        let mut down_budget = Budget {
            open: true,
            pipe_size: self.pipe_size,
            bucket: down,
            now,
            throttled: false,
        };
        let result = pump_flow(
            &mut self.up,
            (&self.client, &mut self.client_ready),
            (upstream, &mut self.upstream_ready),
            &mut up_budget,
        )
        .and_then(|n| {
            out.up_bytes = n;
            pump_flow(
                &mut self.down,
                (upstream, &mut self.upstream_ready),
                (&self.client, &mut self.client_ready),
                &mut down_budget,
            )
        });
        match result {
            Ok(n) => out.down_bytes = n,
            Err(_) => out.finished = true,
        }
        let throttled = up_budget.throttled || down_budget.throttled;
        out.throttled = throttled;
        if self.up.done() && self.down.done() {
            out.finished = true;
        }
        out
    }
}
