//! Networking of real sandboxes: `SandboxOptions::network`, a program
//! inside (python3 from the base template's /usr running
//! `common/nettool.py`) against the fake internet of `common/fakenet.rs`
//! (a namespace one veth hop away; nothing leaves the machine). Each test
//! is one behaviour issue 13 names; what the program sees is asserted,
//! and what the world's servers saw, and what the runtime reported.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sandlot::{
    DeniedBy, Destination, Error, Network, NetworkConfig, NetworkDenied, ProcessEvent, RuleError,
    Runtime, Sandbox, Subscription,
};
use sandlot_tests::fakenet::{self, FakeNet};
use sandlot_tests::nettool::{body, failed_with, get, ok, reset, tool, TOOL};

/// A runtime whose sandboxes resolve through the fake internet's DNS, and
/// a subscription to what its networks deny, taken first.
struct Net {
    rt: Runtime,
    denied: Subscription<NetworkDenied>,
}

fn net() -> Net {
    sandlot_tests::require_root();
    let rt = Runtime::builder()
        .data_dir(sandlot_tests::data_dir())
        .network(NetworkConfig {
            upstream_dns: Some(fakenet::DNS),
            ..NetworkConfig::default()
        })
        .build()
        .expect("build a runtime");
    let denied = rt.network_events();
    Net { rt, denied }
}

impl Net {
    fn sandbox(&self, network: Network) -> Sandbox {
        let sb = self
            .rt
            .create(sandlot_tests::options().network(network))
            .expect("create a sandbox");
        sb.files().write("/tmp/nettool.py", TOOL).unwrap();
        sb
    }

    /// What the networks denied since the last call.
    fn denied(&self) -> Vec<NetworkDenied> {
        std::thread::sleep(Duration::from_millis(50));
        self.denied.try_iter().collect()
    }
}

#[test]
fn the_network_is_off_by_default_with_no_route() {
    let _world = FakeNet::shared();
    let net = net();
    let sb = net
        .rt
        .create(sandlot_tests::options())
        .expect("create a sandbox");
    sb.files().write("/tmp/nettool.py", TOOL).unwrap();
    assert_eq!(sb.network(), Network::off());
    let v = get(&sb, "203.0.113.80", 80, "web.test", "/");
    assert!(failed_with(&v, "OSError"), "{v}");
    assert_eq!(v["errno"], libc::ENETUNREACH, "{v}");
    let v = tool(&sb, &["resolve", "web.test"]);
    assert!(failed_with(&v, "gaierror"), "{v}");
    // Only the sandbox's own loopback, and no route at all.
    let routes = sandlot_tests::sh(&sb, "cat /proc/net/route");
    assert_eq!(routes.lines().count(), 1, "{routes}");
    let m = sb.metrics().unwrap();
    assert_eq!(m.network, sandlot::NetworkCounters::default());
    assert!(net.denied().is_empty());
}

#[test]
fn internet_reaches_public_hosts_by_ip_and_by_name() {
    let world = FakeNet::shared();
    let queried = world.dns_count("web.test");
    let net = net();
    let sb = net.sandbox(Network::internet());
    let by_ip = body(&get(&sb, "203.0.113.80", 80, "web.test", "/"));
    assert!(
        by_ip.contains("hello from 203.0.113.80:80 host=web.test"),
        "{by_ip}"
    );
    let v = tool(&sb, &["resolve", "web.test"]);
    assert_eq!(v["addrs"], serde_json::json!(["203.0.113.80"]), "{v}");
    let by_name = body(&get(&sb, "web.test", 80, "web.test", "/"));
    assert!(by_name.contains("hello from 203.0.113.80:80"), "{by_name}");
    assert!(world.dns_count("web.test") > queried, "forwarded upstream");

    let m = sb.metrics().unwrap();
    assert_eq!(m.network.connections_allowed, 2, "{:?}", m.network);
    assert!(
        m.network.bytes_in >= 190 && m.network.bytes_out >= 100,
        "{:?}",
        m.network
    );
    assert!(m.network.dns_queries >= 1, "{:?}", m.network);
    assert_eq!(m.network.connections_denied, 0);
}

#[test]
fn the_hosts_loopback_private_ranges_and_metadata_stay_unreachable_with_internet() {
    let world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(Network::internet());
    // 127.0.0.1 inside is the sandbox's own: nothing listens there.
    let port = world.host_loopback.port();
    let v = get(&sb, "127.0.0.1", port, "x", "/");
    assert!(failed_with(&v, "ConnectionRefusedError"), "{v}");
    for (addr, range) in [
        ("10.0.0.1", "10.0.0.0/8"),
        ("169.254.169.254", "169.254.0.0/16"),
        ("203.0.113.254", "an address of the host"),
    ] {
        let v = get(&sb, addr, 80, "x", "/");
        assert!(reset(&v), "{addr}: {v}");
        let seen = net.denied();
        assert!(
            seen.iter().any(|e| e.sandbox_id == sb.id()
                && e.destination == Destination::Address(format!("{addr}:80").parse().unwrap())
                && matches!(&e.denied_by, DeniedBy::Reserved(what) if what.contains(range))),
            "{addr}: {seen:?}"
        );
    }
    assert_eq!(world.logs().trap, 0, "the proxy dialled 10.0.0.1");
    assert_eq!(world.logs().host_loopback, 0);
    assert_eq!(sb.metrics().unwrap().network.connections_denied, 3);
}

#[test]
fn domain_rules_allow_names_and_wildcards_and_nothing_else() {
    let world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(
        Network::off()
            .allow_out("web.test")
            .unwrap()
            .allow_out("*.pkg.test")
            .unwrap(),
    );
    for name in ["web.test", "files.pkg.test"] {
        let got = body(&get(&sb, name, 80, name, "/"));
        assert!(got.contains(&format!("host={name}")), "{name}: {got}");
    }
    // (Other tests look up tls.test meanwhile: the log is checked for the
    // names only this test asks for.)
    for name in ["tls.test", "pkg.test", "only.in-domain-rules.test"] {
        let v = tool(&sb, &["resolve", name]);
        assert!(failed_with(&v, "gaierror"), "{name}: {v}");
    }
    let logs = world.logs();
    assert!(
        !logs
            .dns
            .iter()
            .any(|n| n == "pkg.test" || n == "only.in-domain-rules.test"),
        "denied names reached upstream: {:?}",
        logs.dns
    );
    drop(logs);
    let m = sb.metrics().unwrap();
    assert_eq!(m.network.connections_allowed, 2, "{:?}", m.network);
    assert!(m.network.dns_denied >= 3, "{:?}", m.network);
}

#[test]
fn a_denied_name_answers_nxdomain_and_is_never_forwarded() {
    let world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(Network::off().allow_out("web.test").unwrap());
    let secret = "c2VjcmV0.exfil.test";
    let v = tool(&sb, &["resolve", secret]);
    assert!(failed_with(&v, "gaierror"), "{v}");
    assert!(
        !world.logs().dns.iter().any(|n| n.contains("exfil")),
        "{:?}",
        world.logs().dns
    );
    let seen = net.denied();
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
    let net = net();
    let sb = net.sandbox(Network::off().allow_out("web.test").unwrap());
    let v = get(&sb, "203.0.113.80", 80, "literal.web.test", "/");
    assert!(reset(&v), "{v}");
    assert!(!world
        .logs()
        .http_hosts
        .contains(&"literal.web.test".to_string()));
    assert!(
        net.denied()
            .iter()
            .any(|e| e.denied_by == DeniedBy::IpLiteral),
        "no IpLiteral event"
    );
}

#[test]
fn a_spoofed_sni_or_host_naming_a_denied_domain_is_refused() {
    let world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(
        Network::off()
            .allow_out("web.test")
            .unwrap()
            .allow_out("tls.test")
            .unwrap(),
    );
    // Allowed name, Host header naming another.
    let v = get(&sb, "web.test", 80, "evil.test", "/");
    assert!(reset(&v), "{v}");
    // Allowed name, ClientHello naming another.
    let v = tool(&sb, &["tls", "tls.test", "443", "evil.test"]);
    assert!(!ok(&v) || v["handshake"] != "SSLError", "{v}");
    // The honest ClientHello gets through.
    let honest = world.sni_count("tls.test");
    let v = tool(&sb, &["tls", "tls.test", "443", "tls.test"]);
    assert_eq!(
        v["handshake"], "SSLError",
        "the fake server answers in plain text: {v}"
    );
    assert!(
        world.sni_count("tls.test") > honest,
        "{:?}",
        world.logs().sni
    );
    let logs = world.logs();
    assert!(
        !logs.sni.contains(&"evil.test".to_string()),
        "{:?}",
        logs.sni
    );
    assert!(!logs.http_hosts.contains(&"evil.test".to_string()));
    drop(logs);
    let seen = net.denied();
    let server_name = |e: &NetworkDenied| {
        matches!(&e.denied_by, DeniedBy::ServerName(name, why)
            if name == "evil.test" && **why == DeniedBy::NoAllowRule)
    };
    assert_eq!(
        seen.iter().filter(|e| server_name(e)).count(),
        2,
        "{seen:?}"
    );
}

#[test]
fn names_resolving_to_denied_addresses_are_refused() {
    let world = FakeNet::shared();
    let net = net();
    for network in [
        Network::internet(),
        Network::off()
            .allow_out("rebind.test")
            .unwrap()
            .allow_out("internal.test")
            .unwrap(),
    ] {
        let sb = net.sandbox(network.clone());
        for name in ["rebind.test", "internal.test"] {
            let v = tool(&sb, &["resolve", name]);
            assert!(failed_with(&v, "gaierror"), "{network:?} {name}: {v}");
            let v = get(&sb, name, 80, name, "/");
            assert!(!ok(&v), "{network:?} {name}: {v}");
        }
        let seen = net.denied();
        assert!(
            seen.iter().any(|e| matches!(&e.denied_by,
                DeniedBy::Rebinding(addrs) if addrs.contains("127.0.0.1"))),
            "{network:?}: {seen:?}"
        );
    }
    assert_eq!(world.logs().trap, 0, "the proxy dialled 10.0.0.1");
    assert_eq!(world.logs().host_loopback, 0);
}

#[test]
fn editing_etc_hosts_inside_reaches_nothing_denied() {
    let world = FakeNet::shared();
    let net = net();
    // Under domain rules: a name mapped in /etc/hosts is an IP literal.
    let sb = net.sandbox(Network::off().allow_out("web.test").unwrap());
    sb.files()
        .write(
            "/etc/hosts",
            "127.0.0.1 localhost\n203.0.113.80 evil.test web.test\n",
        )
        .unwrap();
    let v = tool(&sb, &["resolve", "evil.test"]);
    assert_eq!(v["addrs"], serde_json::json!(["203.0.113.80"]), "{v}");
    for name in ["evil.test", "web.test"] {
        let v = get(&sb, name, 80, name, "/");
        assert!(reset(&v), "{name}: {v}");
    }
    // With the internet and a deny rule by name: the Host header still
    // names the denied domain.
    let sb = net.sandbox(Network::internet().deny_out("evil.test").unwrap());
    sb.files()
        .write("/etc/hosts", "203.0.113.80 evil.test\n")
        .unwrap();
    let v = get(&sb, "evil.test", 80, "evil.test", "/");
    assert!(reset(&v), "{v}");
    assert!(!world.logs().http_hosts.contains(&"evil.test".to_string()));
    let seen = net.denied();
    assert!(
        seen.iter().any(|e| matches!(&e.denied_by,
            DeniedBy::ServerName(name, why) if name == "evil.test"
                && **why == DeniedBy::Rule("evil.test".into()))),
        "{seen:?}"
    );
}

#[test]
fn a_cidr_deny_wins_and_other_hosts_stay_reachable() {
    let _world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(Network::internet().deny_out("203.0.113.80/32").unwrap());
    let v = get(&sb, "203.0.113.80", 80, "web.test", "/");
    assert!(reset(&v), "{v}");
    let v = tool(&sb, &["tls", "203.0.113.43", "443", "tls.test"]);
    assert!(ok(&v), "{v}");
    assert!(
        net.denied()
            .iter()
            .any(|e| e.denied_by == DeniedBy::Rule("203.0.113.80/32".into())),
        "no event naming the rule"
    );
}

#[test]
fn udp_is_refused_under_rules_and_dns_still_works() {
    let _world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(
        Network::off()
            .allow_out("web.test")
            .unwrap()
            .allow_out("203.0.113.0/24")
            .unwrap(),
    );
    let v = tool(&sb, &["udp", "203.0.113.80", "443"]);
    assert!(failed_with(&v, "ConnectionRefusedError"), "{v}");
    let v = tool(&sb, &["resolve", "web.test"]);
    assert!(ok(&v), "{v}");
}

#[test]
fn bandwidth_holds_a_download_to_its_rate() {
    let _world = FakeNet::shared();
    let net = net();
    let four_mib = (4 << 20).to_string();
    let path = format!("/bytes/{four_mib}");
    let seconds = |rate: u64| {
        let sb = net.sandbox(Network::internet().bandwidth(rate));
        let v = get(&sb, "203.0.113.80", 80, "web.test", &path);
        assert!(ok(&v), "{v}");
        assert!(v["bytes"].as_u64().unwrap() > 4 << 20, "{v}");
        v["seconds"].as_f64().unwrap()
    };
    let one = seconds(1 << 20);
    assert!(one >= 3.5, "4 MiB at 1M took {one:.2} s");
    let four = seconds(4 << 20);
    // A quarter of the time, give or take the bucket's initial burst and
    // a loaded machine.
    assert!(
        four >= 0.85 && four * 2.0 < one,
        "4 MiB at 4M took {four:.2} s, at 1M {one:.2} s"
    );
}

#[test]
fn rules_replaced_at_runtime_apply_to_new_connections() {
    let _world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(Network::off().allow_out("web.test").unwrap());
    assert!(ok(&get(&sb, "web.test", 80, "web.test", "/")));
    assert!(!ok(&tool(&sb, &["resolve", "tls.test"])));
    // The agent needed tls.test after all.
    let wider = Network::off()
        .allow_out("web.test")
        .unwrap()
        .allow_out("tls.test")
        .unwrap();
    sb.set_network(wider.clone()).unwrap();
    assert_eq!(sb.network(), wider);
    assert!(ok(&tool(&sb, &["tls", "tls.test", "443", "tls.test"])));
    // And no longer may reach web.test.
    sb.set_network(Network::off().allow_out("tls.test").unwrap())
        .unwrap();
    assert!(!ok(&get(&sb, "web.test", 80, "web.test", "/")));
    // Bad rules are refused by name; the network cannot be switched off.
    match Network::internet().allow_out("10.0.0.1/8") {
        Err(RuleError::HostBits { rule, .. }) => assert_eq!(rule, "10.0.0.1/8"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sb.set_network(Network::off()),
        Err(Error::InvalidOptions {
            option: "network",
            ..
        })
    ));
}

#[test]
fn rules_cannot_be_set_on_a_sandbox_created_without_a_network() {
    let net = net();
    let sb = net
        .rt
        .create(sandlot_tests::options())
        .expect("create a sandbox");
    let err = sb.set_network(Network::internet()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOptions { option: "network", reason } if reason.contains(sb.id())),
        "{err}"
    );
    let mut too_many = Network::internet();
    for i in 0..=sandlot::MAX_RULES {
        too_many = too_many
            .deny_out(&format!("198.51.{}.{}", i / 256, i % 256))
            .unwrap();
    }
    let err = net
        .rt
        .create(sandlot_tests::options().network(too_many))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NetworkRule(RuleError::TooMany { kind: "deny", .. })
        ),
        "{err}"
    );
}

/// Starts nettool's echo server inside on `addr`:`port`; returns once it
/// listens.
fn serve(sb: &Sandbox, addr: &str, port: u16) -> sandlot::CommandHandle {
    let server = sb
        .command("python3")
        .args(["/tmp/nettool.py", "serve", addr, &port.to_string()])
        .spawn()
        .unwrap();
    match server.events().recv_timeout(Duration::from_secs(20)) {
        Ok(ProcessEvent::Stdout(line)) => assert_eq!(line.as_slice(), b"listening\n"),
        other => panic!("the server inside did not start: {other:?}"),
    }
    server
}

fn ask(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn an_exposed_port_reaches_a_server_inside_and_closes_with_the_sandbox() {
    let net = net();
    for network in [Network::internet(), Network::off()] {
        let sb = net.sandbox(network.clone());
        let _loopback = serve(&sb, "127.0.0.1", 8000);
        let _any = serve(&sb, "::", 8001);
        let a = sb.expose_port(8000).unwrap();
        assert!(a.ip().is_loopback() && a.port() != 0, "{a}");
        assert_eq!(ask(a, "one").unwrap(), "inside:one", "{network:?}");
        // The others on a loopback address no other test binds, so that a
        // port closed with the sandbox cannot be taken again by another
        // test's listener before the check below.
        let own: SocketAddr = "127.77.0.1:0".parse().unwrap();
        let b = sb.expose_port_on(8001, own).unwrap();
        assert_eq!(ask(b, "two").unwrap(), "inside:two", "{network:?}");
        // Nothing listens on 8002 inside: the host's client is reset.
        let c = sb.expose_port_on(8002, own).unwrap();
        assert!(ask(c, "three").map_or(true, |s| s.is_empty()));
        let m = sb.metrics().unwrap();
        assert!(
            m.network.bytes_in >= 6 && m.network.bytes_out >= 12,
            "{:?}",
            m.network
        );
        sb.kill().unwrap();
        for addr in [b, c] {
            let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{addr}");
        }
        assert!(matches!(
            sb.expose_port(8000),
            Err(Error::SandboxNotRunning { .. })
        ));
    }
}

/// A proxy loop that panics while serving one sandbox fails that sandbox
/// visibly (Error, then Destroyed, with the reason) and goes on serving
/// the others.
#[test]
fn a_loop_failing_under_a_sandbox_fails_it_visibly_and_serves_the_others() {
    let _world = FakeNet::shared();
    sandlot_tests::require_root();
    let rt = Runtime::builder()
        .data_dir(sandlot_tests::data_dir())
        .network(NetworkConfig {
            upstream_dns: Some(fakenet::DNS),
            // Both sandboxes on the one loop.
            loops: 1,
            ..NetworkConfig::default()
        })
        .build()
        .unwrap();
    let events = rt.events();
    let create = || {
        let sb = rt
            .create(sandlot_tests::options().network(Network::internet()))
            .unwrap();
        sb.files().write("/tmp/nettool.py", TOOL).unwrap();
        sb
    };
    let doomed = create();
    let other = create();
    sandlot::testing::panic_on_next_connection(&doomed);
    // The sandbox ends while the program waits for its answer.
    let _ = doomed
        .command("python3")
        .args([
            "/tmp/nettool.py",
            "get",
            "203.0.113.80",
            "80",
            "web.test",
            "/",
        ])
        .output();
    assert!(
        sandlot_tests::eventually(Duration::from_secs(5), || doomed.state()
            == sandlot::State::Destroyed),
        "state {:?}",
        doomed.state()
    );
    match doomed.end_reason() {
        Some(sandlot::Reason::Internal(why)) => {
            assert!(why.contains("network") && why.contains("panicked"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&sandlot::State::Destroyed) {
        match events.recv_timeout(Duration::from_secs(5)) {
            Ok(e) if e.sandbox_id == doomed.id() => seen.push(e.to),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(
        seen.ends_with(&[sandlot::State::Error, sandlot::State::Destroyed]),
        "{seen:?}"
    );
    let body = body(&get(&other, "203.0.113.80", 80, "web.test", "/"));
    assert!(body.contains("hello from 203.0.113.80:80"), "{body}");
}

/// SECURITY.md S30: root inside a sandbox with a network cannot change
/// it: the namespace belongs to the host's user namespace, so `lo`, the
/// routes and the steering stay as the host made them, and raw and ICMP
/// sockets cannot be opened. Traffic still goes through the proxy after.
#[test]
fn s30_root_inside_cannot_reconfigure_its_network() {
    let _world = FakeNet::shared();
    let net = net();
    let sb = net.sandbox(Network::off().allow_out("web.test").unwrap());
    for line in [
        "ip link set lo down",
        "ip route del local 0.0.0.0/0 dev lo table local",
        "ip route add 203.0.113.0/24 dev lo",
        "ip addr add 10.9.9.9/32 dev lo",
    ] {
        let out = sb
            .commands()
            .run(line, sandlot::RunOptions::default())
            .unwrap();
        assert!(!out.success(), "{line} succeeded");
        assert!(
            out.stderr_str().contains("Operation not permitted"),
            "{line}: {}",
            out.stderr_str()
        );
    }
    let probe = "import socket\n\
                 for kind in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),\n\
                              (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),\n\
                              (socket.AF_PACKET, socket.SOCK_RAW, 0)]:\n\
                 \x20   try:\n\
                 \x20       socket.socket(*kind); print('opened', kind)\n\
                 \x20   except OSError as e:\n\
                 \x20       print('refused', e.errno)\n";
    let out = sb.command("python3").args(["-c", probe]).output().unwrap();
    let text = out.stdout_str();
    assert!(!text.contains("opened"), "{text}");
    assert_eq!(
        text.matches("refused").count(),
        3,
        "{text} {}",
        out.stderr_str()
    );
    // The rules still hold.
    assert!(ok(&get(&sb, "web.test", 80, "web.test", "/")));
    assert!(reset(&get(&sb, "203.0.113.80", 80, "x", "/")));
}
