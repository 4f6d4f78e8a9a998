//! The proxy engine: one set of threads serving every sandbox's network.
//!
//! - `sandlot-net-N` (a few, [`EngineConfig::loops`]): an epoll loop each.
//!   A sandbox's sockets all live on one loop: its proxy listener, its
//!   resolver's UDP socket and TCP listener, its exposed ports, and every
//!   connection they accept. A connection is decided on accept (rules,
//!   fake address → name, always-denied ranges), dialled non-blocking
//!   from the host, its first client bytes checked for SNI/Host under
//!   domain rules, then copied both ways with `splice` through a pipe per
//!   direction, held to the sandbox's token buckets.
//! - `sandlot-net-lookup-N`: blocking upstream DNS for the resolver and
//!   for dials by name, so a slow upstream never stalls a loop.
//!
//! Everything is bounded: connections per sandbox, pending lookups,
//! buffered bytes (one pipe per direction), the event queue (events past
//! its capacity are dropped and counted).

mod reactor;
mod relay;
mod slab;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::fakeip::FakeIps;
use super::rules::{DeniedBy, Network, Policy, RuleError};
use crate::engine::error::Error;
use crate::kernel::net::{HostSockets, NetNamespace};
use slab::Key;

/// How the engine is sized.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Event-loop threads.
    pub loops: usize,
    /// Threads for blocking upstream DNS.
    pub lookup_threads: usize,
    /// Open proxied connections per sandbox; more are refused (and
    /// reported) until some close.
    pub max_connections: usize,
    /// DNS queries per sandbox waiting for upstream at once.
    pub max_pending_dns: usize,
    /// Denied events kept for a reader; more are dropped and counted.
    pub event_capacity: usize,
    /// Where resolvers forward when a sandbox names no upstream; `None`
    /// reads the host's resolv.conf.
    pub upstream_dns: Option<SocketAddr>,
    /// Bytes buffered per direction of a connection (its pipe's size):
    /// larger moves bulk data in fewer system calls, at up to twice this
    /// in kernel memory per busy connection.
    pub pipe_size: usize,
    /// Under domain rules, how long a client that began sending a TLS
    /// ClientHello or HTTP request head has to complete it.
    pub first_bytes_timeout: std::time::Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            loops: 2,
            lookup_threads: 2,
            max_connections: 512,
            max_pending_dns: 64,
            event_capacity: 1024,
            upstream_dns: None,
            pipe_size: relay::PIPE_CAPACITY,
            first_bytes_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// What was refused, for an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A connection to this address (the one the sandbox asked for).
    Address(SocketAddr),
    /// A connection to this name (through its fake address), and port.
    Name(String, u16),
    /// A DNS lookup of this name.
    Lookup(String),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Address(addr) => write!(f, "{addr}"),
            Destination::Name(name, port) => write!(f, "{name}:{port}"),
            Destination::Lookup(name) => write!(f, "lookup of {name}"),
        }
    }
}

/// A refused connection or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeniedEvent {
    pub sandbox: String,
    pub destination: Destination,
    pub denied_by: DeniedBy,
}

/// A sandbox's traffic so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Bytes from the world (and exposed-port clients) to the sandbox.
    pub bytes_in: u64,
    /// Bytes from the sandbox out.
    pub bytes_out: u64,
    pub connections_allowed: u64,
    pub connections_denied: u64,
    pub dns_queries: u64,
    pub dns_denied: u64,
    /// Denied events nobody read in time.
    pub events_dropped: u64,
}

#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections_allowed: AtomicU64,
    connections_denied: AtomicU64,
    dns_queries: AtomicU64,
    dns_denied: AtomicU64,
    events_dropped: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What every thread knows of one sandbox.
struct Shared {
    id: String,
    policy: RwLock<Arc<Policy>>,
    fakes: Mutex<FakeIps>,
    upstream: Option<SocketAddr>,
    counters: Counters,
    events: Sender<DeniedEvent>,
    /// Why the loop could not take the sandbox's sockets, if it could not
    /// (its connections are then refused).
    failed: std::sync::OnceLock<String>,
}

impl Shared {
    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a refusal and reports it, dropping (and counting) the event
    /// when nobody keeps up with the queue.
    fn denied(&self, destination: Destination, denied_by: DeniedBy) {
        match destination {
            Destination::Lookup(_) => add(&self.counters.dns_denied, 1),
            _ => add(&self.counters.connections_denied, 1),
        }
        let event = DeniedEvent {
            sandbox: self.id.clone(),
            destination,
            denied_by,
        };
        if self.events.try_send(event).is_err() {
            add(&self.counters.events_dropped, 1);
        }
    }
}

/// A message to a loop.
enum Msg {
    /// Not answered: a create does not wait for the loop. Messages of one
    /// sandbox are handled in order, so the rest find it attached.
    Attach {
        id: u64,
        shared: Arc<Shared>,
        sockets: HostSockets,
        netns: NetNamespace,
        rate: Option<u64>,
    },
    Detach {
        id: u64,
        reply: Sender<()>,
    },
    Expose {
        id: u64,
        port: u16,
        listener: TcpListener,
        reply: Sender<Result<(), Error>>,
    },
    SetRate {
        id: u64,
        rate: Option<u64>,
    },
    /// A resolver answer to send back.
    DnsDone {
        sb: Key,
        to: worker::ReplyTo,
        bytes: Vec<u8>,
    },
    /// Addresses for a connection dialled by name.
    Resolved {
        conn: Key,
        result: Result<Vec<SocketAddr>, DeniedBy>,
    },
    /// The engine is going away: close everything and end the loop.
    Shutdown,
}

/// A way into one loop.
#[derive(Clone)]
struct LoopHandle {
    inbox: Sender<Msg>,
    wake: Arc<EventFd>,
}

impl LoopHandle {
    fn send(&self, msg: Msg) -> Result<(), Error> {
        self.inbox.send(msg).map_err(|_| Error::RuntimeShutDown)?;
        self.wake
            .write(1)
            .map_err(|e| Error::setup("wake a sandlot-net loop", e))?;
        Ok(())
    }
}

/// The engine; dropping it stops its threads (after every
/// [`SandboxNet`] is gone, as each holds it).
pub struct NetEngine {
    inner: Arc<Inner>,
}

struct Inner {
    loops: Vec<LoopHandle>,
    jobs: Option<Sender<worker::Job>>,
    events: Receiver<DeniedEvent>,
    event_sender: Sender<DeniedEvent>,
    config: EngineConfig,
    default_upstream: Option<SocketAddr>,
    next_loop: std::sync::atomic::AtomicUsize,
    next_id: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Loops end on Shutdown and drop their job senders; the lookup
        // threads end once the job queue has no sender left.
        for handle in &self.loops {
            let _ = handle.send(Msg::Shutdown);
        }
        self.jobs = None;
        for thread in self
            .threads
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = thread.join();
        }
    }
}

impl NetEngine {
    /// Starts the loops and lookup threads.
    pub fn start(config: EngineConfig) -> Result<NetEngine, Error> {
        if config.loops == 0 || config.lookup_threads == 0 || config.max_connections == 0 {
            return Err(Error::invalid(
                "network engine",
                "loops, lookup threads and max connections must be at least 1",
            ));
        }
        let (event_sender, events) = bounded(config.event_capacity.max(1));
        let (jobs, job_queue) = bounded::<worker::Job>(config.max_pending_dns.max(16) * 4);
        let mut threads = Vec::new();
        let mut loops = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..config.loops {
            let (inbox, incoming) = crossbeam_channel::unbounded();
            let wake = Arc::new(
                EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(|e| Error::setup("eventfd for a sandlot-net loop", e))?,
            );
            loops.push(LoopHandle { inbox, wake });
            inboxes.push(incoming);
        }
        for (index, incoming) in inboxes.into_iter().enumerate() {
            let reactor = reactor::Reactor::new(
                index,
                loops[index].wake.clone(),
                incoming,
                jobs.clone(),
                config.clone(),
            )?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sandlot-net-{index}"))
                    .spawn(move || reactor.run())
                    .map_err(|e| Error::io("start a sandlot-net thread", e))?,
            );
        }
        for index in 0..config.lookup_threads {
            let queue = job_queue.clone();
            let loops = loops.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sandlot-net-lookup-{index}"))
                    .spawn(move || worker::run(queue, loops))
                    .map_err(|e| Error::io("start a sandlot-net-lookup thread", e))?,
            );
        }
        let default_upstream = config.upstream_dns.or_else(super::dns::system_upstream);
        Ok(NetEngine {
            inner: Arc::new(Inner {
                loops,
                jobs: Some(jobs),
                events,
                event_sender,
                config,
                default_upstream,
                next_loop: Default::default(),
                next_id: AtomicU64::new(1),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Denied connections and names of every sandbox, as they happen.
    pub fn events(&self) -> Receiver<DeniedEvent> {
        self.inner.events.clone()
    }

    /// Starts serving a sandbox's network: its sockets inside `netns`
    /// (from [`crate::kernel::net::setup::create`]), under `network`'s
    /// rules. The sandbox's traffic flows until the handle drops.
    pub fn attach(
        &self,
        id: &str,
        netns: &NetNamespace,
        sockets: HostSockets,
        network: &Network,
    ) -> Result<SandboxNet, Error> {
        network.validate().map_err(rule_error)?;
        if !network.is_on() {
            return Err(Error::invalid(
                "network",
                "the network is off: nothing to serve",
            ));
        }
        let shared = Arc::new(Shared {
            id: id.to_string(),
            policy: RwLock::new(Arc::new(network.policy())),
            fakes: Mutex::new(FakeIps::default()),
            upstream: network.upstream().or(self.inner.default_upstream),
            counters: Counters::default(),
            events: self.inner.event_sender.clone(),
            failed: std::sync::OnceLock::new(),
        });
        let index = self.inner.next_loop.fetch_add(1, Ordering::Relaxed) % self.inner.loops.len();
        let handle = self.inner.loops[index].clone();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        handle.send(Msg::Attach {
            id,
            shared: shared.clone(),
            sockets,
            netns: netns.try_clone()?,
            rate: network.rate(),
        })?;
        Ok(SandboxNet {
            engine: self.inner.clone(),
            handle,
            id,
            shared,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }
}

fn rule_error(e: RuleError) -> Error {
    Error::invalid("network", e.to_string())
}

/// One sandbox's network service. Dropping it closes everything of the
/// sandbox in the engine: listeners, resolver sockets, exposed ports and
/// every open connection (synchronously: when drop returns, they are
/// closed).
pub struct SandboxNet {
    engine: Arc<Inner>,
    handle: LoopHandle,
    id: u64,
    shared: Arc<Shared>,
}

impl SandboxNet {
    /// Replaces the rules (and bandwidth); new connections and lookups
    /// follow them, open connections keep going.
    pub fn set_network(&self, network: &Network) -> Result<(), Error> {
        network.validate().map_err(rule_error)?;
        if !network.is_on() {
            return Err(Error::invalid(
                "network",
                "a running sandbox's network cannot be turned off; deny everything instead",
            ));
        }
        *self
            .shared
            .policy
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(network.policy());
        self.handle.send(Msg::SetRate {
            id: self.id,
            rate: network.rate(),
        })
    }

    /// Serves TCP on a host address (`bind`, default 127.0.0.1 with a
    /// kernel-chosen port), forwarding each connection to the sandbox's
    /// `127.0.0.1:port` (or `[::1]:port`), where a server listening on
    /// loopback or the any-address answers. Returns the host address.
    pub fn expose_port(&self, port: u16, bind: Option<SocketAddr>) -> Result<SocketAddr, Error> {
        if port == 0 {
            return Err(Error::invalid("port", "port 0 cannot be exposed"));
        }
        let bind = bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener =
            TcpListener::bind(bind).map_err(|e| Error::io(format!("listen on {bind}"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("non-blocking listener", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("listener address", e))?;
        let (reply, answer) = bounded(1);
        self.handle.send(Msg::Expose {
            id: self.id,
            port,
            listener,
            reply,
        })?;
        answer.recv().map_err(|_| Error::RuntimeShutDown)??;
        Ok(local)
    }

    /// Why the engine could not serve this sandbox (its loop failed to
    /// watch the sockets; its connections are refused), if it could not.
    pub fn failure(&self) -> Option<&str> {
        self.shared.failed.get().map(String::as_str)
    }

    /// The sandbox's traffic so far.
    pub fn counters(&self) -> NetCounters {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetCounters {
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            connections_allowed: get(&c.connections_allowed),
            connections_denied: get(&c.connections_denied),
            dns_queries: get(&c.dns_queries),
            dns_denied: get(&c.dns_denied),
            events_dropped: get(&c.events_dropped),
        }
    }
}

impl Drop for SandboxNet {
    fn drop(&mut self) {
        let (reply, done) = bounded(1);
        if self.handle.send(Msg::Detach { id: self.id, reply }).is_ok() {
            let _ = done.recv();
        }
        let _ = &self.engine;
    }
}
