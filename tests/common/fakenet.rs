//! A fake internet for the network tests: a network namespace ("the
//! world") one veth hop from the host, holding "public" addresses from
//! 203.0.113.0/24 (TEST-NET-3) and a trap on 10.0.0.1, with
//!
//! - an HTTP server on 203.0.113.80:80 and `[2001:db8:113::80]:80` (`/` says who it is and which Host
//!   it was asked for; `/bytes/N` sends N bytes),
//! - a raw listener on 203.0.113.43:443 that reads a TLS ClientHello and
//!   answers `sni=<name>` (and logs it),
//! - a DNS server on 203.0.113.53:53 that logs every query, with records
//!   for `web.test`, `tls.test`, `evil.test` (203.0.113.x), `rebind.test`
//!   (127.0.0.1) and `internal.test` (10.0.0.1); other names NXDOMAIN,
//! - a trap listener on 10.0.0.1:80 that logs any connection (the proxy
//!   must never dial it);
//! - a DNS server that never answers on 203.0.113.53:5353 (an upstream
//!   that is down);
//!
//! plus an HTTP server on the host's loopback. The host reaches the world
//! through routes for 203.0.113.0/24, 2001:db8:113::/64, 10.0.0.1/32 and
//! fd99:113::/64 on its veth end.
//! Everything goes with [`FakeNet`]'s drop: the veth (and its routes) is
//! deleted, the world's threads stop, and the namespace dies with them
//! (it is never bind-mounted, so a killed test leaves nothing either).
//!
//! One world per test process at a time ([`FakeNet::shared`]): the host
//! routes are machine-wide.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

pub const WEB: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 80)), 80);
pub const TLS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 43)), 443);
pub const DNS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 53)), 53);
/// The web server's IPv6 address (2001:db8::/32 is documentation space).
pub const WEB6: SocketAddr = SocketAddr::new(
    IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x80,
    )),
    80,
);
/// Takes queries and never answers.
pub const SILENT_DNS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 53)), 5353);
pub const TRAP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80);
/// The world's end of the veth, its gateway to the host.
const WORLD_GW: &str = "203.0.113.1";
const HOST_END: &str = "203.0.113.254";

/// The DNS server's records.
fn records() -> BTreeMap<&'static str, Ipv4Addr> {
    BTreeMap::from([
        ("web.test", Ipv4Addr::new(203, 0, 113, 80)),
        ("files.pkg.test", Ipv4Addr::new(203, 0, 113, 80)),
        ("bad.pkg.test", Ipv4Addr::new(203, 0, 113, 80)),
        ("tls.test", Ipv4Addr::new(203, 0, 113, 43)),
        ("evil.test", Ipv4Addr::new(203, 0, 113, 80)),
        ("rebind.test", Ipv4Addr::LOCALHOST),
        ("internal.test", Ipv4Addr::new(10, 0, 0, 1)),
    ])
}

/// What the world's servers saw.
#[derive(Default, Debug)]
pub struct Logs {
    /// Names queried at the DNS server.
    pub dns: Vec<String>,
    /// SNI names the TLS listener read.
    pub sni: Vec<String>,
    /// Host headers the HTTP server was asked for.
    pub http_hosts: Vec<String>,
    /// Connections the trap on 10.0.0.1 accepted.
    pub trap: usize,
    /// Connections the host-loopback server accepted.
    pub host_loopback: usize,
}

pub struct FakeNet {
    veth: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    logs: Arc<Mutex<Logs>>,
    /// The host's loopback HTTP server.
    pub host_loopback: SocketAddr,
}

fn run(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

static SHARED: Mutex<Weak<FakeNet>> = Mutex::new(Weak::new());
/// Held while a world is torn down.
static TEARDOWN: Mutex<()> = Mutex::new(());

impl FakeNet {
    /// The test process's world, made on first use and removed when the
    /// last test holding it drops it.
    pub fn shared() -> Arc<FakeNet> {
        crate::require_root();
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(net) = slot.upgrade() {
            return net;
        }
        let net = Arc::new(FakeNet::start());
        *slot = Arc::downgrade(&net);
        net
    }

    fn start() -> FakeNet {
        drop(TEARDOWN.lock().unwrap_or_else(|p| p.into_inner()));
        let veth = format!("slfk{}", std::process::id() % 100_000);
        let world_end = format!("slfw{}", std::process::id() % 100_000);
        let stop = Arc::new(AtomicBool::new(false));
        let logs = Arc::new(Mutex::new(Logs::default()));
        let mut threads = Vec::new();

        // The world: a thread that moves into a new namespace and starts
        // the servers from there (threads inherit its namespace).
        let (ready, world_tid) = std::sync::mpsc::channel();
        let (configured, go) = std::sync::mpsc::channel::<()>();
        {
            let stop = stop.clone();
            let logs = logs.clone();
            threads.push(std::thread::spawn(move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("unshare the world");
                ready.send(nix::unistd::gettid().as_raw()).unwrap();
                // Wait for the host to configure the veth (or give up).
                loop {
                    match go.recv_timeout(Duration::from_millis(50)) {
                        Ok(()) => break,
                        Err(_) if stop.load(Ordering::SeqCst) => return,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(_) => {}
                    }
                }
                let servers = vec![
                    spawn_server(stop.clone(), logs.clone(), serve_http, WEB),
                    spawn_server(stop.clone(), logs.clone(), serve_http, WEB6),
                    spawn_server(stop.clone(), logs.clone(), serve_tls, TLS),
                    spawn_server(stop.clone(), logs.clone(), serve_trap, TRAP),
                    spawn_dns(stop.clone(), logs.clone()),
                    spawn_silent_dns(stop.clone()),
                ];
                for s in servers {
                    let _ = s.join();
                }
            }));
        }
        let tid = world_tid.recv().expect("the world thread started");
        let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        // From here on a failed step unwinds through this guard's drop,
        // which removes the veth and stops the threads.
        let mut net = FakeNet {
            veth: veth.clone(),
            stop,
            threads,
            logs,
            host_loopback: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        run(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            &world_end,
            "netns",
            &tid.to_string(),
        ]);
        run(&["addr", "add", &format!("{HOST_END}/24"), "dev", &veth]);
        run(&[
            "-6",
            "addr",
            "add",
            "2001:db8:113::fe/64",
            "dev",
            &veth,
            "nodad",
        ]);
        run(&["link", "set", &veth, "up"]);
        run(&["route", "add", "10.0.0.1/32", "via", WORLD_GW, "dev", &veth]);
        // A unique-local range the tests use as a denied destination: should
        // the proxy ever dial it, the packets go to the world, not the LAN.
        run(&["-6", "route", "add", "fd99:113::/64", "dev", &veth]);
        let world = |args: &[&str]| {
            let net = format!("--net={ns}");
            let mut full = vec![net.as_str(), "ip"];
            full.extend_from_slice(args);
            let out = Command::new("nsenter")
                .args(&full)
                .output()
                .expect("nsenter");
            assert!(
                out.status.success(),
                "{full:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        world(&["link", "set", "lo", "up"]);
        for addr in [WORLD_GW, "203.0.113.80", "203.0.113.43", "203.0.113.53"] {
            let cidr = if addr == WORLD_GW {
                format!("{addr}/24")
            } else {
                format!("{addr}/32")
            };
            world(&["addr", "add", &cidr, "dev", &world_end]);
        }
        world(&["addr", "add", "10.0.0.1/32", "dev", "lo"]);
        world(&[
            "-6",
            "addr",
            "add",
            "2001:db8:113::80/64",
            "dev",
            &world_end,
            "nodad",
        ]);
        world(&["link", "set", &world_end, "up"]);
        world(&["route", "add", "default", "via", HOST_END]);
        world(&["-6", "route", "add", "default", "via", "2001:db8:113::fe"]);
        configured.send(()).unwrap();

        let host_server = TcpListener::bind("127.0.0.1:0").expect("host loopback server");
        net.host_loopback = host_server.local_addr().unwrap();
        net.threads.push(spawn_on(
            net.stop.clone(),
            net.logs.clone(),
            host_server,
            |_, logs, mut s| {
                lock(logs).host_loopback += 1;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nthe host's loopback\n");
            },
        ));

        // The servers are up once the host reaches one.
        assert!(
            crate::eventually(Duration::from_secs(5), || TcpStream::connect_timeout(
                &WEB,
                Duration::from_millis(200)
            )
            .is_ok()),
            "the fake internet did not come up"
        );
        lock(&net.logs).http_hosts.clear();
        net
    }

    /// A snapshot of what the servers saw.
    pub fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many queries for `name` the DNS server has logged (the world is
    /// shared by a test binary's tests: compare counts, not presence).
    pub fn dns_count(&self, name: &str) -> usize {
        self.logs().dns.iter().filter(|n| *n == name).count()
    }

    /// How many ClientHellos naming `name` the TLS listener has read.
    pub fn sni_count(&self, name: &str) -> usize {
        self.logs().sni.iter().filter(|n| *n == name).count()
    }
}

impl Drop for FakeNet {
    fn drop(&mut self) {
        // The next world reuses these names and routes: it waits for this
        // one to be gone.
        let _gone = TEARDOWN.lock().unwrap_or_else(|p| p.into_inner());
        self.stop.store(true, Ordering::SeqCst);
        // Deleting one end deletes both, and the routes through it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The logs, also after a test panicked while holding them.
fn lock(logs: &Mutex<Logs>) -> std::sync::MutexGuard<'_, Logs> {
    logs.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls a listener until `stop`, handing each connection to `serve` on
/// the same thread (the servers are for tests: one client at a time is
/// enough, except for long downloads, which get a thread).
fn spawn_on(
    stop: Arc<AtomicBool>,
    logs: Arc<Mutex<Logs>>,
    listener: TcpListener,
    serve: fn(SocketAddr, &Mutex<Logs>, TcpStream),
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let local = listener.local_addr().unwrap();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let logs = logs.clone();
                    std::thread::spawn(move || serve(local, &logs, stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

fn spawn_server(
    stop: Arc<AtomicBool>,
    logs: Arc<Mutex<Logs>>,
    serve: fn(SocketAddr, &Mutex<Logs>, TcpStream),
    addr: SocketAddr,
) -> JoinHandle<()> {
    // The addresses appear a moment after `ip addr add`.
    let listener = (0..100)
        .find_map(|_| {
            TcpListener::bind(addr).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(20));
                None
            })
        })
        .unwrap_or_else(|| panic!("bind {addr} in the world"));
    spawn_on(stop, logs, listener, serve)
}

/// Reads a request head (up to the blank line).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn serve_http(local: SocketAddr, logs: &Mutex<Logs>, mut s: TcpStream) {
    let head = read_head(&mut s);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let host = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Host: ")
                .or_else(|| l.strip_prefix("host: "))
        })
        .unwrap_or("")
        .to_string();
    lock(logs).http_hosts.push(host.clone());
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
        );
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            if s.write_all(&chunk[..k]).is_err() {
                return;
            }
            left -= k;
        }
        return;
    }
    let body = format!("hello from {local} host={host}\n");
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve_tls(_: SocketAddr, logs: &Mutex<Logs>, mut s: TcpStream) {
    let mut buf = vec![0u8; 17 * 1024];
    let mut n = 0;
    let name = loop {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
        match sandlot::testing::net::sniff::sniff(&buf[..n], n == buf.len()) {
            sandlot::testing::net::sniff::Sniffed::NeedMore => continue,
            sandlot::testing::net::sniff::Sniffed::Tls(name) => break name.unwrap_or_default(),
            _ => return,
        }
    };
    lock(logs).sni.push(name.clone());
    let _ = writeln!(s, "sni={name}");
}

fn serve_trap(_: SocketAddr, logs: &Mutex<Logs>, _s: TcpStream) {
    lock(logs).trap += 1;
}

fn spawn_dns(stop: Arc<AtomicBool>, logs: Arc<Mutex<Logs>>) -> JoinHandle<()> {
    let socket = (0..100)
        .find_map(|_| {
            UdpSocket::bind(DNS).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(20));
                None
            })
        })
        .expect("bind the DNS server");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let records = records();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = query.queries.first() else {
                continue;
            };
            let name = q
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            lock(&logs).dns.push(name.clone());
            let mut answer = Message::new(
                query.metadata.id,
                MessageType::Response,
                query.metadata.op_code,
            );
            answer.metadata.recursion_desired = query.metadata.recursion_desired;
            answer.metadata.recursion_available = true;
            answer.add_queries(query.queries.iter().cloned());
            match records.get(name.as_str()) {
                Some(ip) if q.query_type() == RecordType::A => {
                    answer.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(*ip))));
                }
                Some(_) => {}
                None => answer.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), peer);
        }
    })
}

fn spawn_silent_dns(stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let socket = (0..100)
        .find_map(|_| {
            UdpSocket::bind(SILENT_DNS).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(20));
                None
            })
        })
        .expect("bind the silent DNS server");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let _ = socket.recv_from(&mut buf);
        }
    })
}
