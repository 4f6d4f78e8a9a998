//! One `sandlot-net-N` loop: edge-triggered epoll over the sockets of the
//! sandboxes it serves, a timer heap (connect and inspection deadlines,
//! bucket refills) and an inbox woken through an eventfd.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::io::{ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, SockaddrStorage,
};

use super::relay::{Conn, Flow, Ready, Stage};
use super::slab::{Key, Slab};
use super::worker::{Job, ReplyTo};
use super::{add, Destination, Msg, NetworkConfig, Shared};
use crate::engine::error::Error;
use crate::engine::sync::lock;
use crate::kernel::net::{HostSockets, NetNamespace};
use crate::services::net::bucket::Bucket;
use crate::services::net::dns::{self, Plan};
use crate::services::net::fakeip::is_fake;
use crate::services::net::rules::{canonical, DeniedBy, Policy};
use crate::services::net::sniff::{sniff, Sniffed, MAX_PEEK};

const SOURCE: u64 = 0;
const CLIENT: u64 = 1;
const UPSTREAM: u64 = 2;

/// How long a dial may take per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// DNS-over-TCP connections per sandbox, and the largest message.
const MAX_DNS_TCP: usize = 16;
const MAX_DNS_MESSAGE: usize = 65535;
/// Work done per readiness event before letting others run.
const BATCH: usize = 64;

enum Source {
    Wake,
    Proxy(Key),
    DnsUdp(Key),
    DnsTcpListener(Key),
    DnsTcp(DnsTcp),
    Expose {
        sb: Key,
        port: u16,
        listener: TcpListener,
    },
}

struct DnsTcp {
    sb: Key,
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    pending: usize,
    eof: bool,
}

/// What a loop keeps of one sandbox.
struct Sb {
    shared: Arc<Shared>,
    /// `None` when only exposed ports are served (the network is off).
    sockets: Option<HostSockets>,
    netns: NetNamespace,
    sources: Vec<Key>,
    conns: HashSet<Key>,
    /// Token buckets for the sandbox's outgoing and incoming bytes.
    out: Option<Bucket>,
    inn: Option<Bucket>,
    throttled: Vec<Key>,
    refill_armed: bool,
    /// Jobs of this sandbox on the lookup threads now, and those waiting
    /// for one of its turns (the per-sandbox lookup budget).
    lookups: usize,
    waiting: VecDeque<Job>,
    dns_tcp: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Refill(u32, u32),
    Deadline(u32, u32),
}

pub struct Reactor {
    index: usize,
    epoll: Epoll,
    wake: Arc<EventFd>,
    inbox: Receiver<Msg>,
    jobs: Sender<Job>,
    config: NetworkConfig,
    home: NetNamespace,
    sandboxes: Slab<Sb>,
    /// The handles' ids of the sandboxes.
    ids: std::collections::HashMap<u64, Key>,
    sources: Slab<Source>,
    conns: Slab<Conn>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Sources that had more work than one batch: run again before
    /// waiting (edge-triggered epoll will not report them again).
    again: Vec<Key>,
    scratch: Vec<u8>,
    /// The host's own addresses (its services listen there too), and when
    /// they were read.
    host_addrs: (HashSet<IpAddr>, Option<Instant>),
}

fn interest() -> EpollFlags {
    EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET
}

fn key_of(t: (u32, u32)) -> Key {
    Key {
        index: t.0,
        gen: t.1,
    }
}

impl Reactor {
    pub fn new(
        index: usize,
        wake: Arc<EventFd>,
        inbox: Receiver<Msg>,
        jobs: Sender<Job>,
        config: NetworkConfig,
    ) -> Result<Reactor, Error> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::setup("epoll for a sandlot-net loop", e))?;
        let mut sources = Slab::default();
        let key = sources.insert(Source::Wake);
        epoll
            .add(
                wake.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, key.token(SOURCE)),
            )
            .map_err(|e| Error::setup("watch a sandlot-net loop's eventfd", e))?;
        Ok(Reactor {
            index,
            epoll,
            wake,
            inbox,
            jobs,
            config,
            home: NetNamespace::current()?,
            sandboxes: Slab::default(),
            ids: std::collections::HashMap::new(),
            sources,
            conns: Slab::default(),
            timers: BinaryHeap::new(),
            again: Vec::new(),
            scratch: vec![0; MAX_PEEK],
            host_addrs: (HashSet::new(), None),
        })
    }

    pub fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let now = Instant::now();
            let timeout = match self.timers.peek() {
                _ if !self.again.is_empty() => EpollTimeout::ZERO,
                Some(Reverse((at, _))) => {
                    let ms = at.saturating_duration_since(now).as_millis() + 1;
                    EpollTimeout::try_from(ms.min(60_000) as u64).unwrap_or(EpollTimeout::MAX)
                }
                None => EpollTimeout::NONE,
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    // Nothing more can be served: every sandbox of this
                    // loop is told, none is left waiting silently.
                    self.end(&format!("sandlot-net-{}: epoll_wait: {e}", self.index));
                    return;
                }
            };
            for event in &events[..n] {
                let (token, flags) = (event.data(), event.events());
                let blame = self.blame(token);
                if !self.guarded(blame, |r| r.dispatch(token, flags)) {
                    return;
                }
            }
            for key in std::mem::take(&mut self.again) {
                let blame = self.blame(key.token(SOURCE));
                if !self.guarded(blame, |r| r.on_source(key)) {
                    return;
                }
            }
            let now = Instant::now();
            while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                let blame = match timer {
                    Timer::Refill(i, g) => Some(key_of((i, g))),
                    Timer::Deadline(i, g) => self.conns.get(key_of((i, g))).map(|c| c.sb),
                };
                if !self.guarded(blame, |r| {
                    r.fire(timer, now);
                    true
                }) {
                    return;
                }
            }
        }
    }

    /// Runs `f`; a panic in it fails the sandbox it was serving (`blame`)
    /// and the loop goes on, or, when no one sandbox can be blamed, ends
    /// the loop after failing all of them. False when the loop must end.
    fn guarded(&mut self, blame: Option<Key>, f: impl FnOnce(&mut Self) -> bool) -> bool {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *self))) {
            Ok(true) => true,
            Ok(false) => {
                self.close_all();
                false
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                let why = format!("sandlot-net-{} panicked: {what}", self.index);
                match blame.filter(|sb| self.sandboxes.get(*sb).is_some()) {
                    Some(sb) => {
                        self.fail_sandbox(sb, &why);
                        true
                    }
                    None => {
                        self.end(&why);
                        false
                    }
                }
            }
        }
    }

    /// The sandbox whose socket `token` names, if any.
    fn blame(&self, token: u64) -> Option<Key> {
        let (key, tag) = Key::from_token(token);
        match tag {
            CLIENT | UPSTREAM => self.conns.get(key).map(|c| c.sb),
            SOURCE => match self.sources.get(key)? {
                Source::Wake => None,
                Source::Proxy(sb) | Source::DnsUdp(sb) | Source::DnsTcpListener(sb) => Some(*sb),
                Source::DnsTcp(c) => Some(c.sb),
                Source::Expose { sb, .. } => Some(*sb),
            },
            _ => None,
        }
    }

    /// Stops serving one sandbox and says why (its hook fails it).
    fn fail_sandbox(&mut self, sb: Key, why: &str) {
        if let Some(s) = self.sandboxes.get(sb) {
            s.shared.fail(why.to_string());
        }
        self.ids.retain(|_, key| *key != sb);
        self.detach(sb);
    }

    /// The loop ends for good: every sandbox it serves, and every one
    /// still on its way in, is failed; callers waiting on it get answers.
    fn end(&mut self, why: &str) {
        for sb in self.sandboxes.keys() {
            self.fail_sandbox(sb, why);
        }
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                Msg::Attach { shared, .. } => shared.fail(why.to_string()),
                Msg::Detach { reply, .. } => {
                    let _ = reply.send(());
                }
                Msg::Expose { reply, .. } => {
                    let _ = reply.send(Err(Error::NetworkSetup {
                        step: "expose a port",
                        errno: None,
                        detail: why.to_string(),
                    }));
                }
                _ => {}
            }
        }
    }

    /// Handles one readiness event; false when the engine shuts down.
    fn dispatch(&mut self, token: u64, flags: EpollFlags) -> bool {
        let (key, tag) = Key::from_token(token);
        match tag {
            SOURCE => return self.on_source(key),
            CLIENT | UPSTREAM => {
                let readable = flags.intersects(
                    EpollFlags::EPOLLIN
                        | EpollFlags::EPOLLRDHUP
                        | EpollFlags::EPOLLHUP
                        | EpollFlags::EPOLLERR,
                );
                let writable = flags
                    .intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP);
                let Some(conn) = self.conns.get_mut(key) else {
                    return true;
                };
                let ready = if tag == CLIENT {
                    &mut conn.client_ready
                } else {
                    &mut conn.upstream_ready
                };
                ready.read |= readable;
                ready.write |= writable;
                if tag == UPSTREAM && conn.stage == Stage::Connecting && writable {
                    self.connected(key);
                }
                self.progress(key);
            }
            _ => {}
        }
        true
    }

    fn on_source(&mut self, key: Key) -> bool {
        let Some(source) = self.sources.get(key) else {
            return true;
        };
        match source {
            Source::Wake => {
                let _ = self.wake.read();
                while let Ok(msg) = self.inbox.try_recv() {
                    if !self.on_msg(msg) {
                        return false;
                    }
                }
            }
            Source::Proxy(sb) => {
                let sb = *sb;
                self.accept_proxy(sb, key);
            }
            Source::DnsUdp(sb) => {
                let sb = *sb;
                self.dns_udp(sb, key);
            }
            Source::DnsTcpListener(sb) => {
                let sb = *sb;
                self.accept_dns_tcp(sb, key);
            }
            Source::DnsTcp(_) => self.dns_tcp(key),
            Source::Expose { .. } => self.accept_exposed(key),
        }
        true
    }

    fn on_msg(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Attach {
                id,
                shared,
                sockets,
                netns,
                rate,
            } => match self.attach(shared.clone(), sockets, netns, rate) {
                Ok(sb) => {
                    self.ids.insert(id, sb);
                }
                Err(e) => {
                    let _ = shared.failed.set(e.to_string());
                }
            },
            Msg::Detach { id, reply } => {
                if let Some(sb) = self.ids.remove(&id) {
                    self.detach(sb);
                }
                let _ = reply.send(());
            }
            Msg::Expose {
                id,
                port,
                listener,
                reply,
            } => {
                let result = match self.ids.get(&id) {
                    Some(&sb) => self.expose(sb, port, listener),
                    None => Err(Error::invalid(
                        "network",
                        "the engine is not serving this sandbox",
                    )),
                };
                let _ = reply.send(result);
            }
            Msg::SetRate { id, rate } => {
                let Some(&sb) = self.ids.get(&id) else {
                    return true;
                };
                if let Some(s) = self.sandboxes.get_mut(sb) {
                    let now = Instant::now();
                    s.out = rate.map(|r| Bucket::new(r, now));
                    s.inn = rate.map(|r| Bucket::new(r, now));
                }
                self.refill(sb);
            }
            Msg::DnsDone { sb, to, bytes } => self.dns_done(sb, to, bytes),
            Msg::Resolved { sb, conn, result } => {
                self.lookup_done(sb);
                self.resolved(conn, result);
            }
            Msg::Shutdown => return false,
        }
        true
    }

    // ---- sandboxes ---------------------------------------------------

    /// Adds a source and watches `fd` for it (the sandbox's own socket,
    /// or the one the source holds).
    fn register(&mut self, source: Source) -> Result<Key, Error> {
        let key = self.sources.insert(source);
        let fd = match self.sources.get(key) {
            Some(Source::Proxy(sb)) => self.host_sockets(*sb).map(|s| s.proxy.as_fd()),
            Some(Source::DnsUdp(sb)) => self.host_sockets(*sb).map(|s| s.dns_udp.as_fd()),
            Some(Source::DnsTcpListener(sb)) => self.host_sockets(*sb).map(|s| s.dns_tcp.as_fd()),
            Some(Source::DnsTcp(c)) => Some(c.stream.as_fd()),
            Some(Source::Expose { listener, .. }) => Some(listener.as_fd()),
            Some(Source::Wake) | None => None,
        };
        let watched = match fd {
            Some(fd) => self
                .epoll
                .add(fd, EpollEvent::new(interest(), key.token(SOURCE)))
                .map_err(|e| Error::setup("watch a sandbox's socket", e)),
            None => Err(Error::setup("watch a sandbox's socket", Errno::EBADF)),
        };
        if let Err(e) = watched {
            self.sources.remove(key);
            return Err(e);
        }
        Ok(key)
    }

    /// The host's sockets in a sandbox's namespace, if it has them.
    fn host_sockets(&self, sb: Key) -> Option<&HostSockets> {
        self.sandboxes.get(sb).and_then(|s| s.sockets.as_ref())
    }

    fn attach(
        &mut self,
        shared: Arc<Shared>,
        sockets: Option<HostSockets>,
        netns: NetNamespace,
        rate: Option<u64>,
    ) -> Result<Key, Error> {
        let steered = sockets.is_some();
        let now = Instant::now();
        let sb = self.sandboxes.insert(Sb {
            shared,
            sockets,
            netns,
            sources: Vec::new(),
            conns: HashSet::new(),
            out: rate.map(|r| Bucket::new(r, now)),
            inn: rate.map(|r| Bucket::new(r, now)),
            throttled: Vec::new(),
            refill_armed: false,
            lookups: 0,
            waiting: VecDeque::new(),
            dns_tcp: 0,
        });
        let sources = if steered {
            vec![
                Source::Proxy(sb),
                Source::DnsUdp(sb),
                Source::DnsTcpListener(sb),
            ]
        } else {
            Vec::new()
        };
        for source in sources {
            match self.register(source) {
                Ok(key) => {
                    if let Some(s) = self.sandboxes.get_mut(sb) {
                        s.sources.push(key);
                    }
                    // Connections or queries may have queued already.
                    self.again.push(key);
                }
                Err(e) => {
                    self.detach(sb);
                    return Err(e);
                }
            }
        }
        Ok(sb)
    }

    fn detach(&mut self, sb: Key) {
        let Some(s) = self.sandboxes.remove(sb) else {
            return;
        };
        for conn in s.conns {
            self.conns.remove(conn);
        }
        for key in s.sources {
            self.unwatch(key);
        }
        if let Some(sockets) = &s.sockets {
            let _ = self.epoll.delete(sockets.proxy.as_fd());
            let _ = self.epoll.delete(sockets.dns_udp.as_fd());
            let _ = self.epoll.delete(sockets.dns_tcp.as_fd());
        }
        // The sockets, buckets and namespace descriptor close as `s`
        // drops here.
    }

    fn unwatch(&mut self, key: Key) {
        match self.sources.remove(key) {
            Some(Source::DnsTcp(c)) => {
                let _ = self.epoll.delete(c.stream.as_fd());
            }
            Some(Source::Expose { listener, .. }) => {
                let _ = self.epoll.delete(listener.as_fd());
            }
            _ => {}
        }
    }

    fn close_all(&mut self) {
        self.ids.clear();
        for sb in self.sandboxes.keys() {
            self.detach(sb);
        }
    }

    fn expose(&mut self, sb: Key, port: u16, listener: TcpListener) -> Result<(), Error> {
        if self.sandboxes.get(sb).is_none() {
            return Err(Error::RuntimeShutDown);
        }
        let key = self.register(Source::Expose { sb, port, listener })?;
        if let Some(s) = self.sandboxes.get_mut(sb) {
            s.sources.push(key);
        }
        Ok(())
    }

    // ---- connections ------------------------------------------------

    fn deny(&self, sb: Key, destination: Destination, why: DeniedBy) {
        if let Some(s) = self.sandboxes.get(sb) {
            s.shared.denied(destination, why);
        }
    }

    /// Whether `ip` is an address of the host itself: the proxy dials from
    /// the host, so such a connection would reach the host's services
    /// (those bound to the any-address included). Re-read at most once a
    /// second.
    fn host_local(&mut self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let stale = self
            .host_addrs
            .1
            .is_none_or(|at| now.duration_since(at) > Duration::from_secs(1));
        if stale {
            if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
                self.host_addrs.0 = addrs
                    .filter_map(|a| a.address.and_then(|a| to_socket_addr(&a)))
                    .map(|a| canonical(a.ip()))
                    .collect();
                self.host_addrs.1 = Some(now);
            }
        }
        self.host_addrs.0.contains(&canonical(ip))
    }

    fn accept_proxy(&mut self, sb: Key, source: Key) {
        for _ in 0..BATCH {
            let Some(sockets) = self.host_sockets(sb) else {
                return;
            };
            match sockets.proxy.accept() {
                Ok((stream, _)) => self.admit(sb, stream),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
        self.again.push(source);
    }

    /// Decides a new connection from the sandbox: where it wanted to go,
    /// whether the rules let it, and how to get there.
    fn admit(&mut self, sb: Key, client: TcpStream) {
        let Some(s) = self.sandboxes.get(sb) else {
            return;
        };
        let shared = s.shared.clone();
        #[cfg(feature = "testing")]
        if shared
            .panic_on_connect
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("injected by a test");
        }
        let conns = s.conns.len();
        let Ok(local) = client.local_addr() else {
            return;
        };
        let dest = SocketAddr::new(canonical(local.ip()), local.port());
        if conns >= self.config.max_connections {
            shared.denied(Destination::Address(dest), DeniedBy::Busy("connections"));
            reset(client);
            return;
        }
        let policy = shared.policy();
        let now = Instant::now();
        let (destination, targets, resolve) = if is_fake(dest.ip()) {
            let found = lock(&shared.fakes).lookup(dest.ip(), now);
            let Some((name, cached)) = found else {
                shared.denied(
                    Destination::Address(dest),
                    DeniedBy::Unresolvable("an address no lookup gave out".into()),
                );
                reset(client);
                return;
            };
            let destination = Destination::Name(name.clone(), dest.port());
            if let Err(why) = policy.check_name(&name) {
                shared.denied(destination, why);
                reset(client);
                return;
            }
            match cached {
                Some(addrs) => {
                    // Checked again now: the rules may have changed.
                    let allowed: VecDeque<SocketAddr> = addrs
                        .iter()
                        .filter(|ip| policy.check_resolved(**ip).is_ok())
                        .filter(|ip| !self.host_local(**ip))
                        .map(|ip| SocketAddr::new(*ip, dest.port()))
                        .collect();
                    if allowed.is_empty() {
                        let all: Vec<String> = addrs.iter().map(|ip| ip.to_string()).collect();
                        shared.denied(destination, DeniedBy::Rebinding(all.join(", ")));
                        reset(client);
                        return;
                    }
                    (destination, allowed, None)
                }
                None => (destination, VecDeque::new(), Some(name)),
            }
        } else {
            let destination = Destination::Address(dest);
            let verdict = policy.check_ip(dest.ip()).and_then(|()| {
                if self.host_local(dest.ip()) {
                    Err(DeniedBy::Reserved("an address of the host"))
                } else {
                    Ok(())
                }
            });
            if let Err(why) = verdict {
                shared.denied(destination, why);
                reset(client);
                return;
            }
            (destination, VecDeque::from([dest]), None)
        };
        let _ = client.set_nodelay(true);
        let inspect = policy.has_domain_rules();
        let Some(conn) = self.insert_conn(sb, client, destination, targets, policy, inspect, false)
        else {
            return;
        };
        add(&shared.counters.connections_allowed, 1);
        match resolve {
            Some(name) => {
                let job = Job::Resolve {
                    loop_index: self.index,
                    sb,
                    conn,
                    shared: shared.clone(),
                    name,
                    port: dest.port(),
                };
                self.submit_lookup(sb, job);
            }
            None => self.dial(conn),
        }
        // Bytes may already be waiting.
        self.progress(conn);
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_conn(
        &mut self,
        sb: Key,
        client: TcpStream,
        destination: Destination,
        targets: VecDeque<SocketAddr>,
        policy: Arc<Policy>,
        inspect: bool,
        exposed: bool,
    ) -> Option<Key> {
        if client.set_nonblocking(true).is_err() {
            return None;
        }
        let stage = if targets.is_empty() {
            Stage::Resolving
        } else {
            Stage::Connecting
        };
        let key = self.conns.insert(Conn {
            sb,
            client,
            upstream: None,
            stage,
            destination,
            targets,
            policy,
            inspect,
            exposed,
            client_ready: Ready::default(),
            upstream_ready: Ready::default(),
            up: Flow::default(),
            down: Flow::default(),
            deadline: None,
            inspect_by: None,
            throttled: false,
            pipe_size: self.config.pipe_size,
        });
        let conn = self.conns.get(key).expect("just inserted");
        if self
            .epoll
            .add(
                conn.client.as_fd(),
                EpollEvent::new(interest(), key.token(CLIENT)),
            )
            .is_err()
        {
            self.conns.remove(key);
            return None;
        }
        if let Some(s) = self.sandboxes.get_mut(sb) {
            s.conns.insert(key);
        }
        Some(key)
    }

    /// Starts a non-blocking connect to the next target.
    fn dial(&mut self, key: Key) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let Some(target) = conn.targets.pop_front() else {
                // Every address failed: the sandbox sees a reset.
                self.close(key, true);
                return;
            };
            // A connection to an exposed port is made inside the sandbox's
            // namespace, never from the host's (its targets are loopback
            // addresses: the host's own there).
            let socket = if conn.exposed {
                match self
                    .sandboxes
                    .get(conn.sb)
                    .map(|s| s.netns.enter(&self.home))
                {
                    Some(Ok(_inside)) => stream_socket(target),
                    _ => Err(Errno::EIO),
                }
            } else {
                stream_socket(target)
            };
            let Ok(socket) = socket else { continue };
            let addr = SockaddrStorage::from(target);
            match socket::connect(socket.as_raw_fd(), &addr) {
                Ok(()) | Err(Errno::EINPROGRESS) => {}
                Err(_) => continue,
            }
            let stream = TcpStream::from(socket);
            let _ = stream.set_nodelay(true);
            if self
                .epoll
                .add(
                    stream.as_fd(),
                    EpollEvent::new(interest(), key.token(UPSTREAM)),
                )
                .is_err()
            {
                continue;
            }
            let conn = self.conns.get_mut(key).expect("checked above");
            conn.upstream = Some(stream);
            conn.upstream_ready = Ready::default();
            conn.stage = Stage::Connecting;
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            conn.deadline = Some(deadline);
            self.timers
                .push(Reverse((deadline, Timer::Deadline(key.index, key.gen))));
            return;
        }
    }

    /// The upstream socket became writable: connected, or failed.
    fn connected(&mut self, key: Key) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(upstream) = conn.upstream.as_ref() else {
            return;
        };
        match socket::getsockopt(upstream, sockopt::SocketError) {
            Ok(0) => {
                conn.stage = Stage::Relaying;
                conn.deadline = None;
            }
            _ => {
                if let Some(old) = conn.upstream.take() {
                    let _ = self.epoll.delete(old.as_fd());
                }
                self.dial(key);
            }
        }
    }

    fn resolved(&mut self, key: Key, result: Result<Vec<SocketAddr>, DeniedBy>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let _ = conn;
        let result = result.and_then(|addrs| {
            let targets: VecDeque<SocketAddr> = addrs
                .into_iter()
                .filter(|a| !self.host_local(a.ip()))
                .collect();
            if targets.is_empty() {
                Err(DeniedBy::Reserved("an address of the host"))
            } else {
                Ok(targets)
            }
        });
        match result {
            Ok(targets) => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.targets = targets;
                }
                self.dial(key);
                self.progress(key);
            }
            Err(why) => self.fail(key, Some(why)),
        }
    }

    /// Ends a connection that the rules (or limits) refused.
    fn fail(&mut self, key: Key, why: Option<DeniedBy>) {
        if let (Some(why), Some(conn)) = (why, self.conns.get(key)) {
            self.deny(conn.sb, conn.destination.clone(), why);
        }
        self.close(key, true);
    }

    fn close(&mut self, key: Key, reset_client: bool) {
        let Some(conn) = self.conns.remove(key) else {
            return;
        };
        if let Some(s) = self.sandboxes.get_mut(conn.sb) {
            s.conns.remove(&key);
        }
        let _ = self.epoll.delete(conn.client.as_fd());
        if let Some(upstream) = &conn.upstream {
            let _ = self.epoll.delete(upstream.as_fd());
        }
        if reset_client {
            reset(conn.client);
        }
    }

    /// Inspects and pumps a connection after any change.
    fn progress(&mut self, key: Key) {
        if !self.inspect(key) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(s) = self.sandboxes.get_mut(conn.sb) else {
            return;
        };
        let now = Instant::now();
        let (up, down) = if conn.exposed {
            (s.inn.as_mut(), s.out.as_mut())
        } else {
            (s.out.as_mut(), s.inn.as_mut())
        };
        let pumped = conn.pump(up, down, now);
        let counters = &s.shared.counters;
        let (out_bytes, in_bytes) = if conn.exposed {
            (pumped.down_bytes, pumped.up_bytes)
        } else {
            (pumped.up_bytes, pumped.down_bytes)
        };
        add(&counters.bytes_out, out_bytes);
        add(&counters.bytes_in, in_bytes);
        if pumped.finished {
            self.close(key, false);
            return;
        }
        if pumped.throttled && !conn.throttled {
            conn.throttled = true;
            s.throttled.push(key);
        }
        if pumped.throttled && !s.refill_armed {
            s.refill_armed = true;
            let at = [s.out.as_ref(), s.inn.as_ref()]
                .into_iter()
                .flatten()
                .map(|b| b.ready_at(now))
                .filter(|at| *at > now)
                .min()
                .unwrap_or(now + Duration::from_millis(1));
            let sb = conn.sb;
            self.timers
                .push(Reverse((at, Timer::Refill(sb.index, sb.gen))));
        }
    }

    /// Checks the client's first bytes under domain rules; false if the
    /// connection was closed.
    fn inspect(&mut self, key: Key) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if !conn.inspect || !conn.client_ready.read {
            return true;
        }
        let n = match socket::recv(
            conn.client.as_raw_fd(),
            &mut self.scratch,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => {
                conn.client_ready.read = false;
                return true;
            }
            Err(_) => {
                self.close(key, false);
                return false;
            }
        };
        let verdict = match sniff(&self.scratch[..n], n == 0 || n >= MAX_PEEK) {
            Sniffed::NeedMore => {
                // Edge-triggered: more bytes bring a new event.
                conn.client_ready.read = false;
                if conn.inspect_by.is_none() {
                    let by = Instant::now() + self.config.first_bytes_timeout;
                    conn.inspect_by = Some(by);
                    self.timers
                        .push(Reverse((by, Timer::Deadline(key.index, key.gen))));
                }
                return true;
            }
            Sniffed::Tls(Some(name)) | Sniffed::Http(Some(name)) => {
                conn.policy.check_server_name(&name)
            }
            Sniffed::Unreadable => Err(DeniedBy::UnreadableServerName),
            Sniffed::Tls(None) | Sniffed::Http(None) | Sniffed::Other => Ok(()),
        };
        match verdict {
            Ok(()) => {
                conn.inspect = false;
                conn.inspect_by = None;
                true
            }
            Err(why) => {
                self.fail(key, Some(why));
                false
            }
        }
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Refill(i, g) => {
                let sb = key_of((i, g));
                if let Some(s) = self.sandboxes.get_mut(sb) {
                    s.refill_armed = false;
                }
                self.refill(sb);
            }
            Timer::Deadline(i, g) => {
                let key = key_of((i, g));
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                let inspect_due = conn.inspect && conn.inspect_by.is_some_and(|by| by <= now);
                let connect_due =
                    conn.stage == Stage::Connecting && conn.deadline.is_some_and(|by| by <= now);
                if inspect_due {
                    self.fail(key, Some(DeniedBy::UnreadableServerName));
                } else if connect_due {
                    conn.deadline = None;
                    if let Some(old) = conn.upstream.take() {
                        let _ = self.epoll.delete(old.as_fd());
                    }
                    self.dial(key);
                }
            }
        }
    }

    /// Pumps every connection of `sb` that waited for tokens.
    fn refill(&mut self, sb: Key) {
        let Some(s) = self.sandboxes.get_mut(sb) else {
            return;
        };
        let waiting = std::mem::take(&mut s.throttled);
        for key in waiting {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.throttled = false;
            }
            self.progress(key);
        }
    }

    // ---- exposed ports ------------------------------------------------

    fn accept_exposed(&mut self, key: Key) {
        let mut accepted = 0;
        loop {
            accepted += 1;
            if accepted > BATCH {
                self.again.push(key);
                return;
            }
            let Some(Source::Expose { sb, port, listener }) = self.sources.get(key) else {
                return;
            };
            let (sb, port) = (*sb, *port);
            let client = match listener.accept() {
                Ok((client, _)) => client,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let Some(s) = self.sandboxes.get(sb) else {
                return;
            };
            if s.conns.len() >= self.config.max_connections {
                reset(client);
                continue;
            }
            let _ = client.set_nodelay(true);
            let targets = VecDeque::from([
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            ]);
            let destination = Destination::Address(targets[0]);
            let policy = Arc::new(Policy::default());
            if let Some(conn) =
                self.insert_conn(sb, client, destination, targets, policy, false, true)
            {
                self.dial(conn);
                self.progress(conn);
            }
        }
    }

    // ---- the resolver -------------------------------------------------

    fn dns_udp(&mut self, sb: Key, source: Key) {
        for _ in 0..BATCH {
            let Some(sockets) = self.host_sockets(sb) else {
                return;
            };
            let fd = sockets.dns_udp.as_raw_fd();
            let mut iov = [IoSliceMut::new(&mut self.scratch)];
            let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
            let (n, client, local) = match socket::recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => {
                    let local = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|c| match c {
                            ControlMessageOwned::Ipv6PacketInfo(info) => {
                                Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)))
                            }
                            ControlMessageOwned::Ipv4PacketInfo(info) => Some(IpAddr::V4(
                                Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)),
                            )),
                            _ => None,
                        })
                    });
                    let client = msg.address.and_then(|a| to_socket_addr(&a));
                    (msg.bytes, client, local)
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let (Some(client), Some(local)) = (client, local) else {
                continue;
            };
            let bytes = self.scratch[..n].to_vec();
            self.dns_query(sb, bytes, ReplyTo::Udp { client, local });
        }
        self.again.push(source);
    }

    fn dns_query(&mut self, sb: Key, query: Vec<u8>, to: ReplyTo) {
        let Some(s) = self.sandboxes.get_mut(sb) else {
            return;
        };
        let shared = s.shared.clone();
        add(&shared.counters.dns_queries, 1);
        let policy = shared.policy();
        let plan = {
            let fakes = lock(&shared.fakes);
            dns::plan(&policy, &fakes, &query, Instant::now())
        };
        match plan {
            Plan::Ignore => {}
            Plan::Answer(bytes, denied) => {
                if let Some((name, why)) = denied {
                    shared.denied(Destination::Lookup(name), why);
                }
                self.dns_done_inner(sb, to, bytes, false);
            }
            Plan::Forward(question) => {
                // A DNS-over-TCP client stays open until every query it
                // sent is answered (or refused).
                if let ReplyTo::Tcp(key) = &to {
                    if let Some(Source::DnsTcp(c)) = self.sources.get_mut(*key) {
                        c.pending += 1;
                    }
                }
                let job = Job::Dns {
                    loop_index: self.index,
                    sb,
                    shared,
                    question,
                    to,
                };
                self.submit_lookup(sb, job);
            }
        }
    }

    /// Hands `job` to a lookup thread if the sandbox has a turn free (at
    /// most `lookups_per_sandbox` of its jobs run at once, so one sandbox
    /// whose upstream never answers cannot hold every thread); else it
    /// waits in the sandbox's own queue, and past `max_pending_dns` there
    /// it is refused.
    fn submit_lookup(&mut self, sb: Key, job: Job) {
        let Some(s) = self.sandboxes.get_mut(sb) else {
            return;
        };
        if s.lookups < self.config.lookups_per_sandbox {
            match self.jobs.try_send(job) {
                Ok(()) => s.lookups += 1,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    self.refuse_lookup(sb, job)
                }
            }
        } else if s.waiting.len() < self.config.max_pending_dns {
            s.waiting.push_back(job);
        } else {
            self.refuse_lookup(sb, job);
        }
    }

    /// One of `sb`'s lookups finished: its turn goes to the next waiting.
    fn lookup_done(&mut self, sb: Key) {
        let Some(s) = self.sandboxes.get_mut(sb) else {
            return;
        };
        s.lookups = s.lookups.saturating_sub(1);
        if let Some(job) = s.waiting.pop_front() {
            self.submit_lookup(sb, job);
        }
    }

    /// Too many lookups at once: a query answers SERVFAIL, a connection
    /// by name is refused.
    fn refuse_lookup(&mut self, sb: Key, job: Job) {
        match job {
            Job::Dns { question, to, .. } => {
                self.dns_done_inner(sb, to, dns::servfail(&question), true)
            }
            Job::Resolve { conn, .. } => self.fail(conn, Some(DeniedBy::Busy("lookups"))),
        }
    }

    fn dns_done(&mut self, sb: Key, to: ReplyTo, bytes: Vec<u8>) {
        self.lookup_done(sb);
        self.dns_done_inner(sb, to, bytes, true);
    }

    fn dns_done_inner(&mut self, sb: Key, to: ReplyTo, bytes: Vec<u8>, was_pending: bool) {
        match to {
            ReplyTo::Udp { client, local } => {
                let Some(sockets) = self.host_sockets(sb) else {
                    return;
                };
                send_from(sockets.dns_udp.as_raw_fd(), &bytes, client, local);
            }
            ReplyTo::Tcp(key) => {
                let Some(Source::DnsTcp(c)) = self.sources.get_mut(key) else {
                    return;
                };
                if was_pending {
                    c.pending = c.pending.saturating_sub(1);
                }
                c.output
                    .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                c.output.extend_from_slice(&bytes);
                self.dns_tcp(key);
            }
        }
    }

    fn accept_dns_tcp(&mut self, sb: Key, source: Key) {
        let mut accepted = 0;
        loop {
            accepted += 1;
            if accepted > BATCH {
                self.again.push(source);
                return;
            }
            let Some(s) = self.sandboxes.get(sb) else {
                return;
            };
            let Some(sockets) = s.sockets.as_ref() else {
                return;
            };
            let stream = match sockets.dns_tcp.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if s.dns_tcp >= MAX_DNS_TCP || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let dns = Source::DnsTcp(DnsTcp {
                sb,
                stream,
                input: Vec::new(),
                output: Vec::new(),
                pending: 0,
                eof: false,
            });
            let Ok(key) = self.register(dns) else {
                continue;
            };
            if let Some(s) = self.sandboxes.get_mut(sb) {
                s.dns_tcp += 1;
                s.sources.push(key);
            }
            self.dns_tcp(key);
        }
    }

    /// Reads queries from, and writes answers to, a DNS-over-TCP client.
    fn dns_tcp(&mut self, key: Key) {
        let mut queries = Vec::new();
        let mut close = false;
        let sb;
        {
            let Some(Source::DnsTcp(c)) = self.sources.get_mut(key) else {
                return;
            };
            sb = c.sb;
            while !c.output.is_empty() {
                match c.stream.write(&c.output) {
                    Ok(n) => {
                        c.output.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            let mut buf = [0u8; 4096];
            while !close && !c.eof {
                match c.stream.read(&mut buf) {
                    Ok(0) => c.eof = true,
                    Ok(n) => {
                        c.input.extend_from_slice(&buf[..n]);
                        if c.input.len() > MAX_DNS_MESSAGE + 2 + 4096 {
                            close = true;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => close = true,
                }
            }
            while c.input.len() >= 2 {
                let len = u16::from_be_bytes([c.input[0], c.input[1]]) as usize;
                if c.input.len() < 2 + len {
                    break;
                }
                queries.push(c.input[2..2 + len].to_vec());
                c.input.drain(..2 + len);
            }
            if c.eof && c.pending == 0 && c.output.is_empty() && queries.is_empty() {
                close = true;
            }
        }
        if close {
            self.unwatch(key);
            if let Some(s) = self.sandboxes.get_mut(sb) {
                s.dns_tcp = s.dns_tcp.saturating_sub(1);
                s.sources.retain(|k| *k != key);
            }
            return;
        }
        for query in queries {
            self.dns_query(sb, query, ReplyTo::Tcp(key));
        }
    }
}

/// Closes `stream` with a reset (SO_LINGER 0): the sandbox's program sees
/// "connection reset", not a clean end, for a refused connection.
fn reset(stream: TcpStream) {
    let _ = socket::setsockopt(
        &stream,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// A non-blocking TCP socket of `target`'s family, in the calling
/// thread's network namespace.
fn stream_socket(target: SocketAddr) -> Result<OwnedFd, Errno> {
    let family = if target.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// Sends a DNS answer to `client` from `local`, the address the query
/// was sent to (any address in the sandbox's namespace is local there).
fn send_from(fd: std::os::fd::RawFd, bytes: &[u8], client: SocketAddr, local: IpAddr) {
    let iov = [IoSlice::new(bytes)];
    let dest = SockaddrStorage::from(client);
    let sent = match (client, local) {
        (SocketAddr::V4(_), IpAddr::V4(local)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(local).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            socket::sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::MSG_DONTWAIT,
                Some(&dest),
            )
        }
        (_, local) => {
            let v6 = match local {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                ipi6_ifindex: 0,
            };
            socket::sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::MSG_DONTWAIT,
                Some(&dest),
            )
        }
    };
    // A full socket buffer drops the answer; the client retries.
    let _ = sent;
}
