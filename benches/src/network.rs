//! `sandlot-bench network`: what a sandbox's network costs and how fast it
//! is, with real sandboxes.
//!
//! 1. create → Running with the network off, with `internet`, and with
//!    rules (domain and CIDR), interleaved in one run (off, internet,
//!    rules, off, …) so that load and caches hit the three alike; destroy
//!    too.
//! 2. Connect latency (connect + a 1-byte echo) and one TCP stream's
//!    throughput to a server one veth hop away (a namespace this benchmark
//!    makes, 203.0.113.1; nothing leaves the machine): from the host
//!    directly, and from inside a sandbox through the proxy — the client
//!    is a thread that entered the sandbox's network namespace, so the
//!    path measured is exactly a sandbox program's.
//! 3. N (200) sandboxes with `internet` alive at once: create latency as
//!    they pile up, descriptors, threads and memory per sandbox, a
//!    connection through each, destroying them.
//! 4. The relay's pipe size, side by side (`--parts 4`, not by default).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use sandlot::{Network, NetworkConfig, Runtime, Sandbox, SandboxOptions};

use crate::machine::{describe, load, mem_available_kib};
use crate::stats::{ms, Stats};

const SERVER: &str = "203.0.113.1:5001";

/// The benchmark's world: a veth to a namespace holding 203.0.113.1, whose
/// server echoes each byte it gets, or on `D` sends `bytes` bytes.
struct World {
    veth: String,
}

impl Drop for World {
    fn drop(&mut self) {
        // Deleting one end deletes both; the namespace dies with its
        // thread's process.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn world(bytes: usize) -> World {
    let veth = format!("slnb{}", std::process::id() % 100_000);
    let peer = format!("slnw{}", std::process::id() % 100_000);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        go_rx.recv().unwrap();
        let listener = loop {
            match TcpListener::bind(SERVER) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() {
                    if b[0] == b'D' {
                        let chunk = vec![7u8; 1 << 20];
                        let mut left = bytes;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            if s.write_all(&chunk[..n]).is_err() {
                                return;
                            }
                            left -= n;
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
    let tid = tid_rx.recv().unwrap();
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
        let ok = Command::new("nsenter").args(&full).status().unwrap();
        assert!(ok.success(), "nsenter {full:?}");
    }
    go_tx.send(()).unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    for _ in 0..500 {
        if TcpStream::connect_timeout(&server, Duration::from_millis(100)).is_ok() {
            return world;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the benchmark's world did not come up");
}

/// Runs `f` on a thread inside `sandbox`'s network namespace.
fn inside<T: Send>(sandbox: &Sandbox, f: impl FnOnce() -> T + Send) -> T {
    let pid = sandbox.info().init_pid.expect("a running sandbox");
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open its netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            // This thread ends inside; it never makes a socket elsewhere.
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the sandbox's network namespace");
            f()
        })
        .join()
        .unwrap()
    })
}

fn connect_echo() -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(SERVER).expect("connect");
    s.set_nodelay(true).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    start.elapsed()
}

/// MiB/s of one stream of `bytes`, read in 256 KiB reads.
fn stream(bytes: usize) -> f64 {
    let mut s = TcpStream::connect(SERVER).expect("connect");
    let start = Instant::now();
    s.write_all(b"D").unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0;
    while got < bytes {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "short stream: {got} of {bytes}");
        got += n;
    }
    got as f64 / start.elapsed().as_secs_f64() / (1 << 20) as f64
}

/// CPU time (user + system, in clock ticks) of this process's threads,
/// by thread name.
fn cpu_by_thread() -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        *by_name.entry(name).or_insert(0) += ticks;
    }
    by_name
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// `parts`: which of 1, 2, 3 (above) to run, e.g. "123" or "2".
pub fn run(iterations: usize, count: usize, mib: usize, parts: &str) {
    println!("{}", describe());
    let bytes = mib << 20;
    let _world = world(bytes);
    let rt = Runtime::builder()
        .data_dir(crate::data_dir())
        .network(NetworkConfig {
            max_connections: 4096,
            pipe_size: std::env::var("PIPE_SIZE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(NetworkConfig::default().pipe_size),
            ..NetworkConfig::default()
        })
        .build()
        .expect("build a runtime (root, and a data dir with the base template)");
    let rules = Network::off()
        .allow_out("203.0.113.0/24")
        .unwrap()
        .allow_out("*.example.org")
        .unwrap()
        .deny_out("203.0.113.7")
        .unwrap();
    let variants = [
        ("off", Network::off()),
        ("internet", Network::internet()),
        ("rules", rules),
    ];

    if parts.contains('1') {
        creates(&rt, &variants, iterations);
    }
    if parts.contains('2') {
        proxy_against_direct(&rt, bytes, mib);
    }
    if parts.contains('3') {
        many(&rt, count);
    }
    if parts.contains('4') {
        relay_settings(bytes, mib);
    }
}

/// Part 4: the relay's pipe size side by side, interleaved in one process
/// so that the machine's load hits the settings alike: every flow's pipe
/// stays at 64 KiB (phase 1), or bulk flows grow theirs to 256 KiB or
/// 1 MiB (the default).
fn relay_settings(bytes: usize, mib: usize) {
    let settings = [
        ("pipes stay at 64 KiB", 64 << 10),
        ("bulk pipes grow to 256 KiB", 256 << 10),
        ("bulk pipes grow to 1 MiB", 1 << 20),
    ];
    let runtimes: Vec<(Runtime, Sandbox)> = settings
        .iter()
        .map(|(_, size)| {
            let rt = Runtime::builder()
                .data_dir(crate::data_dir())
                .network(NetworkConfig {
                    pipe_size: *size,
                    loops: 1,
                    ..NetworkConfig::default()
                })
                .build()
                .unwrap();
            let sb = rt
                .create(SandboxOptions::default().network(Network::internet()))
                .unwrap();
            (rt, sb)
        })
        .collect();
    let mut speed: Vec<Vec<f64>> = settings.iter().map(|_| Vec::new()).collect();
    let mut cpu: Vec<Vec<f64>> = settings.iter().map(|_| Vec::new()).collect();
    let mut direct = Vec::new();
    let load_before = load();
    for _ in 0..9 {
        direct.push(stream(bytes));
        for (i, (_, sb)) in runtimes.iter().enumerate() {
            let before = cpu_by_thread();
            speed[i].push(inside(sb, || stream(bytes)));
            let after = cpu_by_thread();
            let ticks: u64 = after
                .iter()
                .filter(|(name, _)| name.starts_with("sandlot-net-") && !name.contains("lookup"))
                .map(|(name, t)| t - before.get(name).copied().unwrap_or(0))
                .sum();
            cpu[i].push(ticks as f64 / ticks_per_second() * (1u64 << 30) as f64 / bytes as f64);
        }
    }
    println!(
        "\nrelay settings, {mib} MiB streams, 9 interleaved rounds (load {load_before:.2} -> {:.2}); direct median {:.0} MiB/s",
        load(),
        median(direct)
    );
    for (i, (name, _)) in settings.iter().enumerate() {
        println!(
            "  {name:<26} median {:>6.0} MiB/s   loop CPU {:.3} s/GiB",
            median(speed[i].clone()),
            median(cpu[i].clone())
        );
    }
}

/// Part 1: create -> Running, interleaved.
fn creates(rt: &Runtime, variants: &[(&str, Network)], iterations: usize) {
    for (_, network) in variants {
        for _ in 0..10 {
            let sb = rt
                .create(SandboxOptions::default().network(network.clone()))
                .unwrap();
            sb.kill().unwrap();
        }
    }
    let mut create: Vec<Stats> = variants.iter().map(|_| Stats::new()).collect();
    let mut destroy: Vec<Stats> = variants.iter().map(|_| Stats::new()).collect();
    let load_before = load();
    for _ in 0..iterations {
        for (i, (_, network)) in variants.iter().enumerate() {
            let t0 = Instant::now();
            let sb = rt
                .create(SandboxOptions::default().network(network.clone()))
                .unwrap();
            let t1 = Instant::now();
            sb.kill().unwrap();
            create[i].add(t1 - t0);
            destroy[i].add(t1.elapsed());
        }
    }
    println!(
        "\ncreate -> Running, interleaved (load {load_before:.2} -> {:.2})",
        load()
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        println!("{}", create[i].line(&format!("create, network {name}")));
    }
    for (i, (name, _)) in variants.iter().enumerate().skip(1) {
        println!(
            "  added by {name:<9} median {:+.3} ms",
            ms(create[i].median()) - ms(create[0].median())
        );
    }
    for (i, (name, _)) in variants.iter().enumerate() {
        println!("{}", destroy[i].line(&format!("destroy, network {name}")));
    }
}

/// Part 2: the proxy against the host directly.
fn proxy_against_direct(rt: &Runtime, bytes: usize, mib: usize) {
    let sb = rt
        .create(SandboxOptions::default().network(Network::internet()))
        .unwrap();
    for _ in 0..50 {
        connect_echo();
        inside(&sb, connect_echo);
    }
    let (mut direct, mut proxied) = (Stats::new(), Stats::new());
    for _ in 0..10 {
        for _ in 0..50 {
            direct.add(connect_echo());
        }
        inside(&sb, || {
            for _ in 0..50 {
                proxied.add(connect_echo());
            }
        });
    }
    println!("\nconnect + 1-byte echo to {SERVER} (one veth hop), interleaved");
    println!("{}", direct.line("direct from the host"));
    println!("{}", proxied.line("from a sandbox, through the proxy"));
    let (mut d, mut p, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let load_before = load();
    for _ in 0..7 {
        let direct = stream(bytes);
        let proxied = inside(&sb, || stream(bytes));
        d.push(direct);
        p.push(proxied);
        ratios.push(proxied / direct);
    }
    let (d, p, ratio) = (median(d), median(p), median(ratios));
    // CPU the proxy's loop threads spend per GiB relayed: the cost of the
    // relay itself, which the machine's load does not change much (the
    // throughput ratio above it does: the proxy needs a third core).
    let mut per_gib = Vec::new();
    for _ in 0..5 {
        let before = cpu_by_thread();
        inside(&sb, || stream(bytes));
        let after = cpu_by_thread();
        let loop_ticks: u64 = after
            .iter()
            .filter(|(name, _)| name.starts_with("sandlot-net-") && !name.contains("lookup"))
            .map(|(name, t)| t - before.get(name).copied().unwrap_or(0))
            .sum();
        per_gib.push(loop_ticks as f64 / ticks_per_second() * (1u64 << 30) as f64 / bytes as f64);
    }
    println!(
        "one TCP stream of {mib} MiB, 7 interleaved pairs (load {load_before:.2} -> {:.2}):\n  \
         median direct {d:>7.0} MiB/s   through the proxy {p:>7.0} MiB/s   \
         median of the pairs' ratios {:.0}%\n  \
         the proxy's loop thread: {:.3} s of CPU per GiB relayed (median of 5)",
        load(),
        100.0 * ratio,
        median(per_gib)
    );
    sb.kill().unwrap();
}

/// Part 3: N at once.
fn many(rt: &Runtime, count: usize) {
    // For reference: the same burst with the network off, destroyed again.
    std::thread::sleep(Duration::from_millis(500));
    let mut off = Stats::new();
    let burst: Vec<Sandbox> = (0..count)
        .map(|_| {
            let t = Instant::now();
            let sb = rt.create(SandboxOptions::default()).unwrap();
            off.add(t.elapsed());
            sb
        })
        .collect();
    for sb in &burst {
        sb.kill().unwrap();
    }
    drop(burst);
    println!("\n{count} sandboxes with the network off, back to back (for reference)");
    println!("{}", off.line("create -> Running, all"));
    std::thread::sleep(Duration::from_millis(500));
    let (fds_before, threads_before, mem_before) = (fds(), threads(), mem_available_kib());
    let mut alive = Vec::with_capacity(count);
    let mut times = Stats::new();
    let mut first = Stats::new();
    let mut last = Stats::new();
    for i in 0..count {
        let t = Instant::now();
        let sb = rt
            .create(SandboxOptions::default().network(Network::internet()))
            .unwrap_or_else(|e| panic!("create {} of {count}: {e}", i + 1));
        let took = t.elapsed();
        times.add(took);
        if i < 20 {
            first.add(took);
        }
        if i >= count.saturating_sub(20) {
            last.add(took);
        }
        alive.push(sb);
    }
    std::thread::sleep(Duration::from_millis(500));
    println!("{count} sandboxes with internet alive at once, back to back");
    println!("{}", times.line("create -> Running, all"));
    println!("{}", first.line("  the first 20"));
    println!("{}", last.line("  the last 20"));
    println!(
        "  per sandbox: {:.1} descriptors, {:.0} KiB of MemAvailable; threads {} -> {}",
        (fds() - fds_before) as f64 / count as f64,
        mem_before.saturating_sub(mem_available_kib()) as f64 / count as f64,
        threads_before,
        threads()
    );
    let start = Instant::now();
    let reached = alive
        .iter()
        .filter(|sb| inside(sb, || connect_echo() < Duration::from_secs(1)))
        .count();
    println!(
        "  a connection from each: {reached} of {count} ok, {:.1} ms in all",
        ms(start.elapsed())
    );
    let start = Instant::now();
    for sb in &alive {
        sb.kill().unwrap();
    }
    println!("  destroying them: {:.1} ms in all", ms(start.elapsed()));
}
