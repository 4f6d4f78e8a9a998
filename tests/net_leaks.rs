//! 500 sandbox networks made, used and destroyed leave nothing behind: no
//! descriptor or thread in this process, no sk_lookup program or netns
//! link in the kernel, and no network namespace (the kernel frees those
//! asynchronously, so the count is watched until it settles).

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use sandlot::testing::kernel_net::{setup, steering, NetNamespace};
use sandlot::testing::net::{NetEngine, Network, NetworkConfig};

const CYCLES: usize = 500;

#[derive(Debug, PartialEq, Eq)]
struct Census {
    fds: usize,
    threads: usize,
    /// sk_lookup programs and netns links in the whole system.
    bpf: (usize, usize),
}

fn census() -> Census {
    Census {
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        threads: std::fs::read_dir("/proc/self/task").unwrap().count(),
        bpf: steering::census().unwrap(),
    }
}

/// Network namespaces alive in the kernel (its `net_namespace` slab).
fn namespaces() -> usize {
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap();
    let line = slabinfo
        .lines()
        .find(|l| l.starts_with("net_namespace "))
        .expect("net_namespace in /proc/slabinfo");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One sandbox network's life, with a little traffic: a refused
/// connection and a refused lookup (neither leaves the namespace).
fn cycle(engine: &NetEngine, home: &NetNamespace, traffic: bool) {
    let (ns, sockets) = setup::create(home).expect("create");
    let net = engine
        .attach(
            "leak-test",
            &ns.netns,
            sockets,
            &Network::off().allow_out("web.test").unwrap(),
            None,
        )
        .expect("attach");
    if traffic {
        std::thread::scope(|s| {
            s.spawn(|| {
                let _inside = ns.netns.enter(home).unwrap();
                assert_eq!(NetNamespace::current().unwrap().inode(), ns.netns.inode());
                if let Ok(mut c) = TcpStream::connect_timeout(&"203.0.113.80:80".parse().unwrap(), Duration::from_secs(2)) {
                    // Refused (an IP literal under domain rules): the reset
                    // (or end) comes once the engine decided.
                    let _ = c.write_all(b"GET / HTTP/1.1\r\n\r\n");
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let _ = c.read(&mut [0u8; 16]);
                }
                let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
                // A query for a denied name: NXDOMAIN from the resolver.
                let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05other\x04test\x00\x00\x01\x00\x01";
                udp.send_to(query, "198.51.100.53:53").unwrap();
                udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = udp.recv(&mut [0u8; 512]);
            });
        });
    }
    let denied = net.counters();
    drop(net);
    drop(ns);
    if traffic {
        assert_eq!((denied.connections_denied, denied.dns_denied), (1, 1));
    }
}

#[test]
fn five_hundred_sandbox_networks_leave_nothing_behind() {
    sandlot_tests::require_root();
    let engine = NetEngine::start(NetworkConfig {
        upstream_dns: Some("203.0.113.53:53".parse().unwrap()),
        ..NetworkConfig::default()
    })
    .unwrap();
    let home = NetNamespace::current().unwrap();
    // Once first: lazily made state (thread-local buffers, caches).
    cycle(&engine, &home, true);
    let namespaces_before = namespaces();
    let before = census();
    for i in 0..CYCLES {
        cycle(&engine, &home, i % 10 == 0);
    }
    // The kernel may free the last links and programs a moment later.
    let clean = |c: &Census| {
        c.fds == before.fds
            && c.threads == before.threads
            && c.bpf.0 <= before.bpf.0
            && c.bpf.1 <= before.bpf.1
    };
    sandlot_tests::eventually(Duration::from_secs(5), || clean(&census()));
    let after = census();
    assert!(
        clean(&after),
        "a sandbox network left something behind: {after:?}, before {before:?}"
    );
    // Other processes on the machine make namespaces too: allow some noise,
    // far below one per cycle.
    let settled = sandlot_tests::eventually(Duration::from_secs(60), || {
        namespaces() <= namespaces_before + CYCLES / 10
    });
    assert!(
        settled,
        "network namespaces: {} before, {} after {CYCLES} cycles",
        namespaces_before,
        namespaces()
    );
    drop(engine);
}
