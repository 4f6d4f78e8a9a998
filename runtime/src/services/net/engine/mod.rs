//! The proxy engine: one set of threads serving every sandbox's network.
//!
//! - `sandlot-net-N` (a few, [`NetworkConfig::loops`]): an epoll loop each.
//!   A sandbox's sockets all live on one loop: its proxy listener, its
//!   resolver's UDP socket and TCP listener, its exposed ports, and every
//!   connection they accept. A connection is decided on accept (rules,
//!   fake address → name, always-denied ranges), dialled non-blocking
//!   from the host, its first client bytes checked for SNI/Host under
//!   domain rules, then copied both ways with `splice` through a pipe per
//!   direction, held to the sandbox's token buckets.
//! - `sandlot-net-lookup-N`: blocking upstream DNS for the resolver and
//!   for dials by name, so a slow upstream never stalls a loop. A sandbox
//!   has at most [`NetworkConfig::lookups_per_sandbox`] of them busy at
//!   once (its other queries wait in its own queue), so one sandbox whose
//!   upstream does not answer cannot hold every lookup thread.
//!
//! Everything is bounded: connections per sandbox, lookups in flight and
//! waiting, buffered bytes (one pipe per direction), the event bus (a
//! subscriber that does not keep up misses events, counted).
//!
//! A loop that fails (its `epoll_wait` errs) or panics while serving a
//! sandbox does not end silently: each sandbox it drops is reported to
//! the failure hook given at attach (the runtime then fails the sandbox,
//! like its io thread does), and [`SandboxNet::failure`] says why.

mod reactor;
mod relay;
mod slab;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::fakeip::FakeIps;
use super::rules::{DeniedBy, Policy};
use crate::engine::error::Error;
use crate::engine::lifecycle::{Destination, EventBus, NetworkDenied, Subscription};
use crate::engine::network::Network;
use crate::kernel::net::{HostSockets, NetNamespace};
use slab::Key;

/// How a runtime serves its sandboxes' networks: the proxy engine's
/// threads and bounds, the default upstream resolver, the namespaces kept
/// ready, where exposed ports listen. Nothing starts until the first
/// sandbox with a network (or an exposed port) needs it.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Event-loop threads.
    pub loops: usize,
    /// Threads for blocking upstream DNS.
    pub lookup_threads: usize,
    /// Lookup threads one sandbox may keep busy at once; its other
    /// queries and dials by name wait their turn (at most
    /// `max_pending_dns` of them), then answer SERVFAIL or are refused.
    pub lookups_per_sandbox: usize,
    /// Open proxied connections per sandbox; more are refused (and
    /// reported) until some close.
    pub max_connections: usize,
    /// DNS queries and dials by name per sandbox waiting for a lookup
    /// thread.
    pub max_pending_dns: usize,
    /// Where resolvers forward when a sandbox names no upstream; `None`
    /// reads the host's resolv.conf.
    pub upstream_dns: Option<SocketAddr>,
    /// Most bytes buffered per direction of a connection (its pipe's
    /// size). Every connection starts with 64 KiB; one that moves bulk
    /// data grows to this, moving it in fewer system calls, at up to twice
    /// this in kernel memory (references to socket pages) per busy
    /// connection.
    pub pipe_size: usize,
    /// Under domain rules, how long a client that began sending a TLS
    /// ClientHello or HTTP request head has to complete it.
    pub first_bytes_timeout: std::time::Duration,
    /// Network namespaces a background thread (`sandlot-netns`) keeps
    /// made, set up and ready, so that a create takes one instead of
    /// making it (0.5-1 ms); with none ready a create makes its own.
    pub warm_namespaces: usize,
    /// Where [`Sandbox::expose_port`](crate::Sandbox::expose_port)
    /// listens (with a port the kernel picks).
    pub expose_address: std::net::IpAddr,
}

impl Default for NetworkConfig {
    fn default() -> NetworkConfig {
        NetworkConfig {
            loops: 2,
            lookup_threads: 4,
            lookups_per_sandbox: 2,
            max_connections: 512,
            max_pending_dns: 64,
            upstream_dns: None,
            pipe_size: relay::BULK_PIPE_CAPACITY,
            first_bytes_timeout: std::time::Duration::from_secs(30),
            warm_namespaces: 4,
            expose_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }
}

/// A sandbox's traffic so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkCounters {
    /// Bytes from the world (and exposed-port clients) to the sandbox.
    pub bytes_in: u64,
    /// Bytes from the sandbox out.
    pub bytes_out: u64,
    pub connections_allowed: u64,
    pub connections_denied: u64,
    pub dns_queries: u64,
    pub dns_denied: u64,
}

#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections_allowed: AtomicU64,
    connections_denied: AtomicU64,
    dns_queries: AtomicU64,
    dns_denied: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Called (once, from a loop thread, never blocking) when the engine
/// stops serving a sandbox it was attached to: its loop failed, or
/// panicked while handling one of its sockets.
pub type FailureHook = Box<dyn Fn(&str) + Send + Sync>;

/// What every thread knows of one sandbox.
struct Shared {
    id: String,
    policy: RwLock<Arc<Policy>>,
    fakes: Mutex<FakeIps>,
    upstream: Option<SocketAddr>,
    counters: Counters,
    events: Arc<EventBus<NetworkDenied>>,
    /// Why the engine stopped serving the sandbox, if it did (its
    /// connections are then refused).
    failed: std::sync::OnceLock<String>,
    on_failure: Option<FailureHook>,
    /// Fault injection for tests: the loop panics on the sandbox's next
    /// connection.
    #[cfg(feature = "testing")]
    panic_on_connect: std::sync::atomic::AtomicBool,
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
        self.events.publish(NetworkDenied {
            sandbox_id: self.id.clone(),
            destination,
            denied_by,
            at: std::time::SystemTime::now(),
        });
    }

    /// The engine stopped serving this sandbox: say why, once.
    fn fail(&self, why: String) {
        if self.failed.set(why.clone()).is_ok() {
            if let Some(hook) = &self.on_failure {
                hook(&why);
            }
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
        /// `None`: only exposed ports are served (the network is off).
        sockets: Option<HostSockets>,
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
        sb: Key,
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
        self.try_send(msg).map_err(|_| Error::NetworkSetup {
            step: "reach a sandlot-net loop",
            errno: None,
            detail: "the loop has ended".into(),
        })
    }

    /// Sends `msg`, or gives it back when the loop has ended.
    fn try_send(&self, msg: Msg) -> Result<(), Msg> {
        self.inbox.send(msg).map_err(|e| e.into_inner())?;
        // An eventfd write fails only when its counter would overflow, and
        // then the loop has a wake-up pending anyway.
        let _ = self.wake.write(1);
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
    events: Arc<EventBus<NetworkDenied>>,
    config: NetworkConfig,
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
    /// Starts the loops and lookup threads, with a bus of its own for
    /// denied connections and names ([`NetEngine::events`]).
    pub fn start(config: NetworkConfig) -> Result<NetEngine, Error> {
        NetEngine::start_with(config, Arc::default())
    }

    /// Starts the engine publishing what it denies on `events` (the
    /// runtime's bus).
    pub(crate) fn start_with(
        config: NetworkConfig,
        events: Arc<EventBus<NetworkDenied>>,
    ) -> Result<NetEngine, Error> {
        if config.loops == 0
            || config.lookup_threads == 0
            || config.lookups_per_sandbox == 0
            || config.max_connections == 0
        {
            return Err(Error::invalid(
                "network engine",
                "loops, lookup threads, lookups per sandbox and max connections must be at least 1",
            ));
        }
        // Every sandbox's lookups in flight fit, whatever the mix.
        let (jobs, job_queue) = bounded::<worker::Job>(config.lookup_threads * 64);
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
                config,
                default_upstream,
                next_loop: Default::default(),
                next_id: AtomicU64::new(1),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Denied connections and names of every sandbox, from now on
    /// (bounded: see [`Subscription`]).
    pub fn events(&self) -> Subscription<NetworkDenied> {
        self.inner.events.subscribe()
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
        on_failure: Option<FailureHook>,
    ) -> Result<SandboxNet, Error> {
        network.validate()?;
        if !network.is_on() {
            return Err(Error::invalid(
                "network",
                "the network is off: nothing to serve",
            ));
        }
        self.serve(id, netns, Some(sockets), network, on_failure)
    }

    /// Serves only exposed ports of a sandbox whose network is off (its
    /// own namespace, `lo` only): nothing is steered, nothing leaves.
    /// `network` gives the bandwidth, if any.
    pub fn attach_ports_only(
        &self,
        id: &str,
        netns: &NetNamespace,
        network: &Network,
        on_failure: Option<FailureHook>,
    ) -> Result<SandboxNet, Error> {
        network.validate()?;
        self.serve(id, netns, None, network, on_failure)
    }

    fn serve(
        &self,
        id: &str,
        netns: &NetNamespace,
        sockets: Option<HostSockets>,
        network: &Network,
        on_failure: Option<FailureHook>,
    ) -> Result<SandboxNet, Error> {
        let shared = Arc::new(Shared {
            id: id.to_string(),
            policy: RwLock::new(Arc::new(Policy::of(network))),
            fakes: Mutex::new(FakeIps::default()),
            upstream: network.upstream().or(self.inner.default_upstream),
            counters: Counters::default(),
            events: self.inner.events.clone(),
            failed: std::sync::OnceLock::new(),
            on_failure,
            #[cfg(feature = "testing")]
            panic_on_connect: Default::default(),
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = Msg::Attach {
            id,
            shared: shared.clone(),
            sockets,
            netns: netns.try_clone()?,
            rate: network.rate(),
        };
        // Round robin over the loops; a loop that ended (failed) is
        // skipped.
        let loops = &self.inner.loops;
        let first = self.inner.next_loop.fetch_add(1, Ordering::Relaxed);
        for i in 0..loops.len() {
            let handle = &loops[(first + i) % loops.len()];
            match handle.try_send(msg) {
                Ok(()) => {
                    return Ok(SandboxNet {
                        engine: self.inner.clone(),
                        handle: handle.clone(),
                        id,
                        shared,
                    })
                }
                Err(back) => msg = back,
            }
        }
        Err(Error::NetworkSetup {
            step: "hand the sandbox to a sandlot-net loop",
            errno: None,
            detail: "every loop has ended".into(),
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.inner.config
    }
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
        network.validate()?;
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
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(Policy::of(network));
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

    /// Tests only: the loop serving this sandbox panics while it handles
    /// the sandbox's next connection.
    #[cfg(feature = "testing")]
    pub fn panic_on_next_connection(&self) {
        self.shared.panic_on_connect.store(true, Ordering::SeqCst);
    }

    /// The sandbox's traffic so far.
    pub fn counters(&self) -> NetworkCounters {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetworkCounters {
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            connections_allowed: get(&c.connections_allowed),
            connections_denied: get(&c.connections_denied),
            dns_queries: get(&c.dns_queries),
            dns_denied: get(&c.dns_denied),
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
