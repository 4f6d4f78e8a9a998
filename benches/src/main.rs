//! Whole-operation benchmarks of sandlot (run on demand, release build):
//!
//!     cargo run --release -p sandlot-bench -- core [--iterations N]
//!
//! Prints medians and p10–p90 of: create → Running, run `true` in a running
//! sandbox (exec round trip), destroy, and the whole create → run → destroy
//! cycle; then the memory of one idle sandbox.

use std::time::{Duration, Instant};

use sandlot::{RunOptions, Runtime, SandboxOptions};

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            samples: Vec::new(),
        }
    }
    fn add(&mut self, d: Duration) {
        self.samples.push(d);
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i]
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<34} median {:>9.3} ms   p10 {:>8.3}   p90 {:>8.3}   n={}",
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.1).as_secs_f64() * 1e3,
            self.percentile(0.9).as_secs_f64() * 1e3,
            self.samples.len()
        )
    }
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

fn core(iterations: usize) {
    let data_dir = std::env::var("SANDLOT_DATA_DIR").unwrap_or_else(|_| "/var/lib/sandlot".into());
    let rt = Runtime::builder()
        .data_dir(data_dir)
        .build()
        .expect("runtime");
    // Warm-up: template layers attached, caches filled.
    for _ in 0..20 {
        let sb = rt.create(SandboxOptions::default()).unwrap();
        sb.commands().run(["true"], RunOptions::default()).unwrap();
        sb.kill().unwrap();
    }

    let (mut create, mut exec, mut destroy, mut cycle) =
        (Stats::new(), Stats::new(), Stats::new(), Stats::new());
    for _ in 0..iterations {
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    match args.get(1).map(String::as_str) {
        Some("core") | None => core(iterations),
        Some(other) => {
            eprintln!("unknown benchmark {other:?}; try: core [--iterations N]");
            std::process::exit(2);
        }
    }
}
