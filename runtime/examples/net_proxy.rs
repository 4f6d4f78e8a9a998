//! The proxy against the host directly: connect latency and one stream's
//! throughput to a server one veth hop away (a namespace this example
//! makes, with 203.0.113.1; nothing leaves the machine), from the host and
//! from a sandbox network through the engine; then 200 sandbox networks
//! alive at once (create + attach cost as they pile up, descriptors,
//! memory).
//!
//! ```sh
//! cargo run --release -p sandlot --example net_proxy
//! ```
//! Needs root and iproute2 (`ip`, for the example's own veth only).
//! `PIPE_SIZE=262144` tries another per-direction buffer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sandlot::testing::kernel_net::{setup, NetNamespace, SandboxNetns};
use sandlot::testing::net::{NetEngine, Network, NetworkConfig, SandboxNet};

const SERVER: &str = "203.0.113.1:5001";
const BYTES: usize = 512 << 20;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct World {
    veth: String,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}

/// A namespace with 203.0.113.1 serving: each connection gets one byte
/// echoed, then (if it asks with b'D') BYTES bytes.
fn world() -> World {
    let veth = format!("slbh{}", std::process::id() % 100_000);
    let peer = format!("slbw{}", std::process::id() % 100_000);
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tx.send(nix::unistd::gettid().as_raw()).unwrap();
        go_rx.recv().unwrap();
        let listener = loop {
            if let Ok(l) = TcpListener::bind(SERVER) {
                break l;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() {
                    if b[0] == b'D' {
                        let chunk = vec![7u8; 1 << 20];
                        for _ in 0..BYTES / chunk.len() {
                            if s.write_all(&chunk).is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    if s.write_all(&b).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let tid = rx.recv().unwrap();
    let world = World { veth: veth.clone() };
    ip(&[
        "link",
        "add",
        &veth,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        &tid.to_string(),
    ]);
    ip(&["addr", "add", "203.0.113.254/24", "dev", &veth]);
    ip(&["link", "set", &veth, "up"]);
    let ns = format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id());
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", "203.0.113.1/24", "dev", &peer],
        vec!["link", "set", &peer, "up"],
    ] {
        let mut full = vec![ns.as_str(), "ip"];
        full.extend(args);
        assert!(Command::new("nsenter")
            .args(&full)
            .status()
            .unwrap()
            .success());
    }
    go_tx.send(()).unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    for _ in 0..500 {
        if TcpStream::connect_timeout(&server, Duration::from_millis(100)).is_ok() {
            return world;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the example's world did not come up");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn connect_rtt() -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(SERVER).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    start.elapsed()
}

fn throughput() -> f64 {
    let mut s = TcpStream::connect(SERVER).unwrap();
    let start = Instant::now();
    s.write_all(b"D").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < BYTES {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "short stream");
        got += n;
    }
    got as f64 / start.elapsed().as_secs_f64() / (1 << 20) as f64
}

struct Sandbox {
    _net: SandboxNet,
    ns: SandboxNetns,
}

fn inside<T: Send>(home: &NetNamespace, sb: &Sandbox, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _in = sb.ns.netns.enter(home).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn main() -> Result<(), sandlot::Error> {
    let _world = world();
    let home = NetNamespace::current()?;
    let engine = NetEngine::start(NetworkConfig {
        upstream_dns: Some("203.0.113.1:53".parse().unwrap()),
        max_connections: 4096,
        pipe_size: std::env::var("PIPE_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(NetworkConfig::default().pipe_size),
        ..NetworkConfig::default()
    })?;
    let network = Network::internet().allow_out("203.0.113.0/24").unwrap();
    let made = |engine: &NetEngine| {
        let (ns, sockets) = setup::create(&home).unwrap();
        let net = engine
            .attach("bench", &ns.netns, sockets, &network, None)
            .unwrap();
        Sandbox { _net: net, ns }
    };
    let sb = made(&engine);

    let direct = median((0..500).map(|_| connect_rtt()).collect());
    let proxied = inside(&home, &sb, || {
        median((0..500).map(|_| connect_rtt()).collect::<Vec<_>>())
    });
    println!(
        "connect + 1-byte round trip   direct {direct:>9.1?}   through the proxy {proxied:>9.1?}"
    );

    let direct: Vec<f64> = (0..3).map(|_| throughput()).collect();
    let proxied: Vec<f64> = (0..3).map(|_| inside(&home, &sb, throughput)).collect();
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "one stream, {} MiB, best of 3   direct {:>7.0} MiB/s   through the proxy {:>7.0} MiB/s ({:.0}%)",
        BYTES >> 20,
        best(&direct),
        best(&proxied),
        100.0 * best(&proxied) / best(&direct)
    );
    drop(sb);

    // 200 at once.
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let mem_available = || {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap()
    };
    let (fds_before, mem_before) = (fds(), mem_available());
    let mut alive = Vec::new();
    let mut times = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        alive.push(made(&engine));
        times.push(start.elapsed());
    }
    let first = median(times[..20].to_vec());
    let last = median(times[180..].to_vec());
    println!(
        "200 alive: create+attach median of the first 20 {first:.1?}, of the last 20 {last:.1?}; {} descriptors and {} KiB of MemAvailable per sandbox",
        (fds() - fds_before) / 200,
        mem_before.saturating_sub(mem_available()) / 200
    );
    let start = Instant::now();
    let ok = alive
        .iter()
        .filter(|sb| inside(&home, sb, || connect_rtt() < Duration::from_secs(1)))
        .count();
    println!(
        "a connection through each of the 200: {ok} ok in {:.1?}",
        start.elapsed()
    );
    let start = Instant::now();
    drop(alive);
    println!("destroying the 200: {:.1?}", start.elapsed());
    Ok(())
}
