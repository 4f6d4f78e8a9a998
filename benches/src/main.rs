//! Whole-operation benchmarks of sandlot (release build, root):
//!
//!     cargo run --release -p sandlot-bench -- core [--iterations N] [--gap-ms N]
//!     cargo run --release -p sandlot-bench -- startup [--iterations N]
//!     cargo run --release -p sandlot-bench -- peers [--rounds N]
//!     cargo run --release -p sandlot-bench -- density [--count N]
//!     cargo run --release -p sandlot-bench -- throughput [--cycles N] [--threads N]
//!     cargo run --release -p sandlot-bench -- code [--iterations N]
//!     cargo run --release -p sandlot-bench -- network [--iterations N] [--count N] [--mib N] [--parts 123]
//!     cargo run --release -p sandlot-bench -- persist [--iterations N]
//!     cargo run --release -p sandlot-bench -- cycles [--count N] [--persistent]
//!
//! `core`: medians and p10–p90 of create → Running, run `true` in a running
//! sandbox (exec round trip), destroy, the whole create → run → destroy
//! cycle, pool acquire; then the memory of one idle sandbox.
//! `peers`: the side-by-side table with bubblewrap, nsjail, crun, runc,
//! unshare and a bare spawn (install them with scripts/install-peers.sh;
//! `peers` needs the sandlot CLI built beside it:
//! `cargo build --release -p sandlot-cli -p sandlot-bench`).
//! `density`: N idle sandboxes at once. `throughput`: create + destroy
//! cycles on every core, in windows, to show any creeping cost. `code`:
//! code contexts and terminals in sandboxes (`code.rs`).
//! `network`: create with the network off / internet / rules interleaved,
//! connect latency and one stream's throughput through the proxy against
//! the host directly, N networked sandboxes at once (needs iproute2 for
//! its own veth to a namespace it makes).
//! `persist`: create with a state dir vs without, reattach, `sandlot exec`
//! from a fresh process vs `crun exec`, a monitor's memory. `cycles`:
//! create/exec/destroy N times with the census before and after
//! (`scripts/persist-cycles.sh`).
//! Micro benchmarks: `cargo bench -p sandlot-bench` (criterion).

mod code;
mod compare;
mod density;
mod machine;
mod memory;
mod network;
mod peers;
mod persist;
mod pool;
mod startup;
mod stats;
mod throughput;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sandlot::{RunOptions, Runtime, SandboxOptions};

use stats::Stats;

fn data_dir() -> PathBuf {
    std::env::var_os("SANDLOT_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/sandlot"))
}

fn runtime() -> Runtime {
    Runtime::builder()
        .data_dir(data_dir())
        .build()
        .expect("build a runtime (root, and a data dir with the base template)")
}

fn status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `gap`: idle time before each create. On a hybrid cgroup layout, the
/// first v1 `cgroup.procs` write after an idle spell waits for an RCU grace
/// period (see BENCHMARKS.md); back-to-back creates never see it.
fn core(iterations: usize, gap: Duration) {
    println!("{}", machine::describe());
    if !gap.is_zero() {
        println!("{gap:?} idle before each create");
    }
    let rt = runtime();
    // Warm-up: template layers attached, caches filled.
    for _ in 0..20 {
        let sb = rt.create(SandboxOptions::default()).unwrap();
        sb.commands().run(["true"], RunOptions::default()).unwrap();
        sb.kill().unwrap();
    }

    let (mut create, mut exec, mut destroy, mut cycle) =
        (Stats::new(), Stats::new(), Stats::new(), Stats::new());
    for _ in 0..iterations {
        std::thread::sleep(gap);
        let t0 = Instant::now();
        let sb = rt.create(SandboxOptions::default()).unwrap();
        let t1 = Instant::now();
        let out = sb.commands().run(["true"], RunOptions::default()).unwrap();
        assert!(out.success());
        let t2 = Instant::now();
        sb.kill().unwrap();
        let t3 = Instant::now();
        create.add(t1 - t0);
        destroy.add(t3 - t2);
        cycle.add(t3 - t0);
    }
    let sb = rt.create(SandboxOptions::default()).unwrap();
    for _ in 0..iterations {
        let t = Instant::now();
        let out = sb.commands().run(["true"], RunOptions::default()).unwrap();
        exec.add(t.elapsed());
        assert!(out.success());
    }
    println!("{}", create.line("create -> Running"));
    println!("{}", exec.line("exec round trip (run `true`)"));
    println!("{}", destroy.line("destroy"));
    println!("{}", cycle.line("create + run true + destroy"));
    let acquire = pool::acquire_while_refilling(&rt, iterations.max(200));
    println!("{}", acquire.line("pool acquire (while refilling)"));

    std::thread::sleep(Duration::from_millis(200));
    let pid = sb.info().init_pid.unwrap();
    println!(
        "idle init: VmRSS {} KiB (RssAnon {} KiB, RssFile {} KiB, RssShmem {} KiB)",
        status_kib(pid, "VmRSS:"),
        status_kib(pid, "RssAnon:"),
        status_kib(pid, "RssFile:"),
        status_kib(pid, "RssShmem:"),
    );
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("core") | None => core(
            arg(&args, "--iterations", 300),
            Duration::from_millis(arg(&args, "--gap-ms", 0) as u64),
        ),
        Some("peers") => compare::run(compare::Options {
            rounds: arg(&args, "--rounds", 100),
            data_dir: data_dir(),
        }),
        Some("startup") => startup::run(arg(&args, "--iterations", 100)),
        Some("density") => density::run(&runtime(), arg(&args, "--count", 1000)),
        Some("throughput") => throughput::run(
            &runtime(),
            arg(&args, "--cycles", 10_000),
            arg(&args, "--threads", 2),
        ),
        Some("code") => code::run(&runtime(), arg(&args, "--iterations", 50)),
        Some("network") => network::run(
            arg(&args, "--iterations", 200),
            arg(&args, "--count", 200),
            arg(&args, "--mib", 512),
            args.iter()
                .position(|a| a == "--parts")
                .and_then(|i| args.get(i + 1))
                .map_or("123", String::as_str),
        ),
        Some("persist") => persist::run(arg(&args, "--iterations", 200)),
        Some("cycles") => persist::cycles(
            arg(&args, "--count", 10_000),
            args.iter().any(|a| a == "--persistent"),
        ),
        Some(other) => {
            eprintln!(
                "unknown benchmark {other:?}; try: core [--iterations N] [--gap-ms N] | startup [--iterations N] | peers [--rounds N] | \
                 density [--count N] | throughput [--cycles N] [--threads N] | code [--iterations N] | \
                 network [--iterations N] [--count N] [--mib N] [--parts 123] | \
                 persist [--iterations N] | cycles [--count N] [--persistent]"
            );
            std::process::exit(2);
        }
    }
}
