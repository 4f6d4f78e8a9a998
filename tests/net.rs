//! The network mechanism and its services against a fake internet
//! (common/fakenet.rs), at the mechanism level: a thread that entered a
//! host-made sandbox namespace plays the sandbox's process. Root, real
//! kernel; no traffic leaves the machine (the world is a namespace one
//! veth away, and the tests check they are inside before sending).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use sandlot::testing::kernel_net::{setup, HostSockets, NetNamespace, SandboxNetns};
use sandlot::testing::net::{
    DeniedBy, Destination, NetEngine, Network, NetworkConfig, NetworkDenied, SandboxNet,
};
use sandlot_tests::fakenet::{self, FakeNet};

/// Where the sandbox's resolv.conf would point: any address works
/// (steering), this one is never routed anywhere real.
const NAMESERVER: &str = "198.51.100.53:53";

struct Sandbox {
    // Drop order: the service, then the kernel side.
    net: SandboxNet,
    ns: SandboxNetns,
    home: NetNamespace,
}

/// An engine and a subscription to what it denies, taken at its start.
struct Engine {
    engine: NetEngine,
    denied: sandlot::Subscription<NetworkDenied>,
}

impl std::ops::Deref for Engine {
    type Target = NetEngine;
    fn deref(&self) -> &NetEngine {
        &self.engine
    }
}

fn engine() -> Engine {
    engine_with(NetworkConfig::default())
}

/// An engine whose sandboxes resolve through the fake internet's DNS.
fn engine_with(config: NetworkConfig) -> Engine {
    sandlot_tests::require_root();
    let engine = NetEngine::start(NetworkConfig {
        upstream_dns: Some(fakenet::DNS),
        ..config
    })
    .expect("start the engine");
    let denied = engine.events();
    Engine { engine, denied }
}

fn sandbox(engine: &NetEngine, network: &Network) -> Sandbox {
    let home = NetNamespace::current().unwrap();
    let (ns, sockets): (SandboxNetns, HostSockets) =
        setup::create(&home).expect("sandbox namespace");
    let net = engine
        .attach("sb-test", &ns.netns, sockets, network, None)
        .expect("attach");
    Sandbox { net, ns, home }
}

impl Sandbox {
    /// Runs `f` on a thread inside the sandbox's namespace.
    fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let _inside = self.ns.netns.enter(&self.home).unwrap();
                assert_eq!(
                    NetNamespace::current().unwrap().inode(),
                    self.ns.netns.inode()
                );
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// `GET path` with `Host: host` to `addr`, from inside.
    fn http_get(&self, addr: SocketAddr, host: &str, path: &str) -> std::io::Result<String> {
        self.inside(|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            if out.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "closed",
                ));
            }
            Ok(out)
        })
    }

    /// An A lookup from inside through the resolver.
    fn lookup(&self, name: &str) -> (ResponseCode, Vec<IpAddr>) {
        self.lookup_at(NAMESERVER, name)
    }

    /// An A lookup sent to `nameserver` (any address reaches the
    /// resolver); the answer must come from that address.
    fn lookup_at(&self, nameserver: &str, name: &str) -> (ResponseCode, Vec<IpAddr>) {
        self.lookup_within(nameserver, name, Duration::from_secs(10))
            .expect("an answer from the resolver")
    }

    /// An A lookup that gives up after `wait`.
    fn lookup_within(
        &self,
        nameserver: &str,
        name: &str,
        wait: Duration,
    ) -> std::io::Result<(ResponseCode, Vec<IpAddr>)> {
        let server: SocketAddr = nameserver.parse().unwrap();
        self.inside(|| {
            let any = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let udp = UdpSocket::bind(any).unwrap();
            udp.connect(server).unwrap();
            udp.set_read_timeout(Some(wait)).unwrap();
            let mut q = Message::new(0x4242, MessageType::Query, OpCode::Query);
            q.metadata.recursion_desired = true;
            q.add_query(Query::query(
                Name::from_ascii(format!("{name}.")).unwrap(),
                RecordType::A,
            ));
            udp.send(&q.to_vec().unwrap()).unwrap();
            let mut buf = [0u8; 4096];
            let n = udp.recv(&mut buf)?;
            let a = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(a.metadata.id, 0x4242);
            let ips = a
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect();
            Ok((a.metadata.response_code, ips))
        })
    }
}

/// What the engine denied since the last call.
fn events(engine: &Engine) -> Vec<NetworkDenied> {
    std::thread::sleep(Duration::from_millis(50));
    engine.denied.try_iter().collect()
}

fn refused(result: std::io::Result<String>) -> bool {
    match result {
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
        ),
        Ok(_) => false,
    }
}

#[test]
fn internet_reaches_public_hosts_by_ip_and_by_name_with_the_original_destination() {
    let world = FakeNet::shared();
    let queried = world.dns_count("web.test");
    let engine = engine();
    let sb = sandbox(&engine, &Network::internet());
    let body = sb
        .http_get(fakenet::WEB, "web.test", "/")
        .expect("GET by IP");
    assert!(
        body.contains("hello from 203.0.113.80:80 host=web.test"),
        "{body}"
    );

    let (code, ips) = sb.lookup("web.test");
    assert_eq!(
        (code, ips.clone()),
        (ResponseCode::NoError, vec![fakenet::WEB.ip()])
    );
    let body = sb
        .http_get(SocketAddr::new(ips[0], 80), "web.test", "/")
        .unwrap();
    assert!(body.contains("hello from 203.0.113.80:80"), "{body}");

    // Two responses of ~100 bytes in, two requests of ~50 out (counted by
    // the loop just after it moved them: wait for it).
    sandlot_tests::eventually(Duration::from_secs(2), || sb.net.counters().bytes_in >= 190);
    let c = sb.net.counters();
    assert_eq!(c.connections_allowed, 2);
    assert!(c.bytes_in >= 190 && c.bytes_out >= 100, "{c:?}");
    assert!(world.dns_count("web.test") > queried, "forwarded upstream");
}

#[test]
fn ipv6_destinations_go_through_the_proxy_too() {
    let world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::internet());
    let body = sb
        .http_get(fakenet::WEB6, "web6.test", "/")
        .expect("GET over IPv6");
    assert!(
        body.contains("hello from [2001:db8:113::80]:80 host=web6.test"),
        "{body}"
    );
    // ::1 inside is the sandbox's own; fc00::/7 is always denied.
    let err = sb.inside(|| TcpStream::connect(("::1", world.host_loopback.port())).unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(refused(sb.http_get(
        "[fd99:113::1]:80".parse().unwrap(),
        "x",
        "/"
    )));
    let seen = events(&engine);
    assert!(
        seen.iter()
            .any(|e| matches!(e.denied_by, DeniedBy::Reserved(w) if w.contains("fc00::/7"))),
        "{seen:?}"
    );
}

#[test]
fn the_hosts_services_and_private_ranges_stay_unreachable_with_internet() {
    let world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::internet());
    // The host's loopback server: inside, 127.0.0.1 is the sandbox's own.
    let port = world.host_loopback.port();
    let err = sb.inside(|| TcpStream::connect(("127.0.0.1", port)).unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The host's own address on its veth: the proxy refuses to dial it.
    assert!(refused(sb.http_get(
        "203.0.113.254:80".parse().unwrap(),
        "x",
        "/"
    )));
    // A private address (routed to the trap in the fake world).
    assert!(refused(sb.http_get(fakenet::TRAP, "x", "/")));
    // Its IPv4-mapped IPv6 form.
    assert!(refused(sb.http_get(
        "[::ffff:10.0.0.1]:80".parse().unwrap(),
        "x",
        "/"
    )));
    assert_eq!(world.logs().trap, 0, "the proxy dialled a private address");
    assert_eq!(world.logs().host_loopback, 0);
    let seen = events(&engine);
    assert!(
        seen.iter()
            .any(|e| e.destination == Destination::Address(fakenet::TRAP)
                && matches!(e.denied_by, DeniedBy::Reserved(what) if what.contains("10.0.0.0/8"))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e.denied_by, DeniedBy::Reserved("an address of the host"))),
        "{seen:?}"
    );
    assert_eq!(sb.net.counters().connections_denied, 3);
}

#[test]
fn domain_rules_allow_names_and_wildcards_and_nothing_else() {
    let world = FakeNet::shared();
    let engine = engine();
    let network = Network::off()
        .allow_out("web.test")
        .unwrap()
        .allow_out("*.pkg.test")
        .unwrap()
        .deny_out("bad.pkg.test")
        .unwrap();
    let sb = sandbox(&engine, &network);
    for name in ["web.test", "files.pkg.test"] {
        let (code, ips) = sb.lookup(name);
        assert_eq!(code, ResponseCode::NoError);
        assert!(
            ips[0].to_string().starts_with("198.18."),
            "{name}: a fake address, got {ips:?}"
        );
        let body = sb
            .http_get(SocketAddr::new(ips[0], 80), name, "/")
            .expect(name);
        assert!(body.contains(&format!("host={name}")), "{body}");
    }
    assert_eq!(sb.lookup("tls.test").0, ResponseCode::NXDomain);
    assert_eq!(sb.lookup("bad.pkg.test").0, ResponseCode::NXDomain);
    let logs = world.logs();
    assert!(
        !logs.dns.contains(&"tls.test".into()) && !logs.dns.contains(&"bad.pkg.test".into()),
        "denied names were forwarded upstream: {:?}",
        logs.dns
    );
}

#[test]
fn a_denied_name_answers_nxdomain_and_never_reaches_upstream() {
    let world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::off().allow_out("web.test").unwrap());
    let secret = "c2VjcmV0LWRhdGE.exfil.test";
    assert_eq!(sb.lookup(secret), (ResponseCode::NXDomain, vec![]));
    assert!(
        !world.logs().dns.iter().any(|n| n.contains("exfil")),
        "{:?}",
        world.logs().dns
    );
    let seen = events(&engine);
    assert!(
        seen.iter().any(
            |e| e.destination == Destination::Lookup(secret.to_lowercase())
                && e.denied_by == DeniedBy::NoAllowRule
        ),
        "{seen:?}"
    );
}

#[test]
fn an_ip_literal_is_refused_under_domain_rules() {
    let world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::off().allow_out("web.test").unwrap());
    // (Other tests use the server meanwhile: look for this request only.)
    assert!(refused(sb.http_get(fakenet::WEB, "literal.web.test", "/")));
    let dialled = world
        .logs()
        .http_hosts
        .contains(&"literal.web.test".to_string());
    assert!(!dialled, "the IP literal was dialled");
    let seen = events(&engine);
    assert!(
        seen.iter().any(|e| e.denied_by == DeniedBy::IpLiteral),
        "{seen:?}"
    );
    // /etc/hosts inside would give the same literal: nothing changes.
}

#[test]
fn sni_or_host_naming_a_denied_domain_on_an_allowed_ip_is_refused() {
    let world = FakeNet::shared();
    let engine = engine();
    let network = Network::off()
        .allow_out("203.0.113.0/24")
        .unwrap()
        .allow_out("tls.test")
        .unwrap()
        .allow_out("web.test")
        .unwrap()
        .deny_out("evil.test")
        .unwrap();
    let sb = sandbox(&engine, &network);
    let hello = |name: &str| {
        let bytes = client_hello(name);
        sb.inside(move || {
            let mut s = TcpStream::connect_timeout(&fakenet::TLS, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(&bytes)?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok::<_, std::io::Error>(out)
        })
    };
    assert_eq!(hello("tls.test").unwrap(), "sni=tls.test\n");
    let spoofed = hello("evil.test");
    assert!(
        spoofed.as_ref().map_or(true, |s| s.is_empty()),
        "{spoofed:?}"
    );
    assert!(!world.logs().sni.contains(&"evil.test".to_string()));
    assert!(refused(sb.http_get(fakenet::WEB, "evil.test", "/")));
    assert!(!world.logs().http_hosts.contains(&"evil.test".to_string()));
    assert!(sb.http_get(fakenet::WEB, "web.test", "/").is_ok());
    let seen = events(&engine);
    assert!(
        seen.iter()
            .filter(|e| matches!(&e.denied_by, DeniedBy::ServerName(n, _) if n == "evil.test"))
            .count()
            >= 2,
        "{seen:?}"
    );
}

#[test]
fn a_request_head_that_never_completes_is_refused_under_domain_rules() {
    let world = FakeNet::shared();
    sandlot_tests::require_root();
    let engine = engine_with(NetworkConfig {
        first_bytes_timeout: Duration::from_millis(300),
        ..NetworkConfig::default()
    });
    let network = Network::off()
        .allow_out("203.0.113.0/24")
        .unwrap()
        .deny_out("evil.test")
        .unwrap();
    let sb = sandbox(&engine, &network);
    let start = Instant::now();
    let read = sb.inside(|| {
        let mut s = TcpStream::connect_timeout(&fakenet::WEB, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Trickle the head, never finishing it (a server would wait);
        // the reset may come while trickling.
        for part in [&b"GET / HTTP/1.1\r\n"[..], b"Ho", b"st: ev"] {
            let _ = s.write_all(part);
            std::thread::sleep(Duration::from_millis(150));
        }
        s.read(&mut [0u8; 64])
    });
    let ended = match &read {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    // Ended by the engine's 300 ms, not by this read's 10 s timeout.
    assert!(
        ended && start.elapsed() < Duration::from_secs(3),
        "{read:?} after {:?}",
        start.elapsed()
    );
    assert!(!world.logs().http_hosts.iter().any(|h| h.starts_with("ev")));
    let seen = events(&engine);
    assert!(
        seen.iter()
            .any(|e| e.denied_by == DeniedBy::UnreadableServerName),
        "{seen:?}"
    );
}

#[test]
fn names_resolving_to_denied_addresses_are_refused() {
    let world = FakeNet::shared();
    let engine = engine();
    let by_name = Network::off()
        .allow_out("rebind.test")
        .unwrap()
        .allow_out("internal.test")
        .unwrap();
    for network in [Network::internet(), by_name] {
        let sb = sandbox(&engine, &network);
        assert_eq!(sb.lookup("rebind.test"), (ResponseCode::Refused, vec![]));
        assert_eq!(sb.lookup("internal.test"), (ResponseCode::Refused, vec![]));
    }
    assert_eq!(world.logs().trap, 0);
    let seen = events(&engine);
    assert!(
        seen.iter()
            .any(|e| matches!(&e.denied_by, DeniedBy::Rebinding(a) if a.contains("10.0.0.1"))),
        "{seen:?}"
    );
}

#[test]
fn a_cidr_deny_wins_and_other_hosts_stay_reachable() {
    let _world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(
        &engine,
        &Network::internet().deny_out("203.0.113.80").unwrap(),
    );
    assert!(refused(sb.http_get(fakenet::WEB, "web.test", "/")));
    let seen = events(&engine);
    assert!(
        seen.iter()
            .any(|e| e.denied_by == DeniedBy::Rule("203.0.113.80".into())),
        "{seen:?}"
    );
    // The TLS listener is another address: reachable.
    let reply = sb.inside(|| {
        let mut s = TcpStream::connect_timeout(&fakenet::TLS, Duration::from_secs(5)).unwrap();
        s.write_all(&client_hello("tls.test")).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert_eq!(reply, "sni=tls.test\n");
}

#[test]
fn udp_other_than_dns_is_refused_and_dns_to_any_address_works() {
    let _world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::off().allow_out("web.test").unwrap());
    let err = sb.inside(|| {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.connect("203.0.113.53:443").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        udp.send(b"quic initial").unwrap();
        udp.recv(&mut [0u8; 16]).unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(sb.lookup("web.test").0, ResponseCode::NoError);
}

/// Downloads `n` bytes from the web server inside; returns how long it
/// took from connect to the last byte.
fn download(sb: &Sandbox, n: usize) -> Duration {
    let start = Instant::now();
    let body = sb
        .http_get(fakenet::WEB, "web.test", &format!("/bytes/{n}"))
        .expect("download");
    let took = start.elapsed();
    assert!(body.len() > n, "short download: {}", body.len());
    took
}

#[test]
fn bandwidth_holds_each_direction_to_its_rate() {
    let _world = FakeNet::shared();
    let engine = engine();
    let slow = sandbox(&engine, &Network::internet().bandwidth(1 << 20));
    let t1 = download(&slow, 4 << 20);
    assert!(
        t1 >= Duration::from_millis(3500),
        "4 MiB at 1 MiB/s took {t1:?}"
    );
    let fast = sandbox(&engine, &Network::internet().bandwidth(4 << 20));
    let t4 = download(&fast, 4 << 20);
    assert!(
        t4 >= Duration::from_millis(850),
        "4 MiB at 4 MiB/s took {t4:?}"
    );
    assert!(
        t4 * 2 < t1,
        "4M ({t4:?}) should take about a quarter of 1M ({t1:?})"
    );
}

#[test]
fn rules_replaced_at_runtime_apply_to_new_connections() {
    let _world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::internet());
    assert!(sb.http_get(fakenet::WEB, "web.test", "/").is_ok());
    sb.net
        .set_network(&Network::internet().deny_out("203.0.113.0/24").unwrap())
        .unwrap();
    assert!(refused(sb.http_get(fakenet::WEB, "web.test", "/")));
    sb.net.set_network(&Network::internet()).unwrap();
    assert!(sb.http_get(fakenet::WEB, "web.test", "/").is_ok());
    assert!(sb.net.set_network(&Network::off()).is_err());
}

#[test]
fn an_exposed_port_reaches_a_server_inside_and_closes_with_the_sandbox() {
    let engine = engine();
    let sb = sandbox(&engine, &Network::internet());
    for bind in ["127.0.0.1:7000", "0.0.0.0:7001"] {
        let server = sb.inside(|| TcpListener::bind(bind).unwrap());
        let port = server.local_addr().unwrap().port();
        let host = sb.net.expose_port(port, None).unwrap();
        assert!(host.ip().is_loopback());
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let mut client = TcpStream::connect(host).unwrap();
        client.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        echo.join().unwrap();
    }
    let host = sb.net.expose_port(9, None).unwrap();
    drop(sb);
    assert_eq!(
        TcpStream::connect(host).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

/// A minimal TLS ClientHello naming `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let n = sni.len() as u16;
    let mut ext = vec![0x00, 0x00];
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(sni.as_bytes());
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[test]
fn the_resolver_answers_at_any_address_loopback_and_ipv6_included() {
    let _world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::internet());
    for nameserver in [
        "127.0.0.53:53",
        "[2001:db8::53]:53",
        "[::1]:53",
        "8.8.8.8:53",
    ] {
        // A connected UDP socket only accepts answers from its peer.
        let (code, ips) = sb.lookup_at(nameserver, "web.test");
        assert_eq!(
            (code, ips),
            (ResponseCode::NoError, vec![fakenet::WEB.ip()]),
            "{nameserver}"
        );
    }
}

#[test]
fn dns_over_tcp_is_answered_by_the_resolver_too() {
    let world = FakeNet::shared();
    let engine = engine();
    let sb = sandbox(&engine, &Network::off().allow_out("web.test").unwrap());
    let ask = |name: &str| {
        let name = name.to_string();
        sb.inside(move || {
            let mut s =
                TcpStream::connect_timeout(&NAMESERVER.parse().unwrap(), Duration::from_secs(5))
                    .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut q = Message::new(7, MessageType::Query, OpCode::Query);
            q.add_query(Query::query(
                Name::from_ascii(format!("{name}.")).unwrap(),
                RecordType::A,
            ));
            let bytes = q.to_vec().unwrap();
            s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
            s.write_all(&bytes).unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut answer).unwrap();
            let a = Message::from_vec(&answer).unwrap();
            (a.metadata.response_code, a.answers.len())
        })
    };
    assert_eq!(ask("web.test"), (ResponseCode::NoError, 1));
    assert_eq!(ask("tcp-exfil.test"), (ResponseCode::NXDomain, 0));
    assert!(!world.logs().dns.iter().any(|n| n.contains("tcp-exfil")));
}

#[test]
fn connections_past_the_limit_are_refused_and_reported() {
    let _world = FakeNet::shared();
    sandlot_tests::require_root();
    let engine = engine_with(NetworkConfig {
        max_connections: 2,
        ..NetworkConfig::default()
    });
    let sb = sandbox(&engine, &Network::internet());
    // Two connections the web server holds open (it waits for a request).
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            sb.inside(|| TcpStream::connect_timeout(&fakenet::WEB, Duration::from_secs(5)).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(refused(sb.http_get(fakenet::WEB, "web.test", "/")));
    let seen = events(&engine);
    assert!(
        seen.iter()
            .any(|e| e.denied_by == DeniedBy::Busy("connections")),
        "{seen:?}"
    );
    drop(held);
    assert!(sandlot_tests::eventually(Duration::from_secs(5), || sb
        .http_get(fakenet::WEB, "web.test", "/")
        .is_ok()));
}

#[test]
fn every_denied_lookup_is_counted_and_reported_with_its_name() {
    let engine = engine();
    let sb = sandbox(&engine, &Network::off().allow_out("web.test").unwrap());
    for i in 0..3 {
        assert_eq!(
            sb.lookup(&format!("n{i}.denied.test")).0,
            ResponseCode::NXDomain
        );
    }
    assert_eq!(sb.net.counters().dns_denied, 3);
    let seen = events(&engine);
    for i in 0..3 {
        assert!(
            seen.iter().any(|e| e.sandbox_id == "sb-test"
                && e.destination == Destination::Lookup(format!("n{i}.denied.test"))
                && e.denied_by == DeniedBy::NoAllowRule),
            "{seen:?}"
        );
    }
}

/// One sandbox whose upstream resolver never answers keeps at most its
/// share of the lookup threads busy: another sandbox's lookups are
/// answered meanwhile, long before the stuck ones give up (2 s a try).
#[test]
fn a_sandbox_whose_upstream_never_answers_cannot_starve_the_others() {
    let _world = FakeNet::shared();
    let engine = engine_with(NetworkConfig {
        lookup_threads: 2,
        lookups_per_sandbox: 1,
        ..NetworkConfig::default()
    });
    let stuck = sandbox(
        &engine,
        &Network::internet().upstream_dns(fakenet::SILENT_DNS),
    );
    let healthy = sandbox(&engine, &Network::internet());
    stuck.inside(|| {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..8 {
            let mut q = Message::new(i, MessageType::Query, OpCode::Query);
            q.add_query(Query::query(
                Name::from_ascii(format!("n{i}.web.test.")).unwrap(),
                RecordType::A,
            ));
            udp.send_to(&q.to_vec().unwrap(), NAMESERVER).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let answer = healthy.lookup_within(NAMESERVER, "web.test", Duration::from_millis(1500));
    assert_eq!(
        answer.expect("the healthy sandbox was answered"),
        (ResponseCode::NoError, vec![fakenet::WEB.ip()])
    );
}

/// A sandbox namespace whose serving process is gone (its host sockets
/// and steering link closed) lets nothing out: every address is local and
/// nothing listens.
#[test]
fn a_namespace_whose_server_is_gone_fails_closed() {
    let world = FakeNet::shared();
    let home = NetNamespace::current().unwrap();
    let (ns, sockets): (SandboxNetns, HostSockets) = setup::create(&home).unwrap();
    let SandboxNetns { steering, netns } = ns;
    drop(sockets);
    drop(steering);
    let trap_before = world.logs().trap;
    std::thread::scope(|s| {
        s.spawn(|| {
            let _inside = netns.enter(&home).unwrap();
            for addr in [fakenet::WEB, fakenet::TRAP] {
                let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{addr}");
            }
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            udp.connect(fakenet::DNS).unwrap();
            udp.send(b"query").unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let err = udp.recv(&mut [0u8; 64]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        })
        .join()
        .unwrap()
    });
    assert_eq!(world.logs().trap, trap_before);
}
