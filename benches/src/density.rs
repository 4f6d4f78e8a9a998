//! `sandlot-bench density`: N idle sandboxes live at once. Create time of
//! the last ones against the first ones, descriptors, memory per sandbox.

use std::time::{Duration, Instant};

use sandlot::{Runtime, SandboxOptions};

use crate::machine::{load, mem_available_kib};
use crate::memory;
use crate::stats::{ms, Stats};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn nofile() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

pub fn run(rt: &Runtime, count: usize) {
    println!("{}", crate::machine::describe());
    let (soft, hard) = nofile();
    println!(
        "open files: soft {soft}, hard {hard}; {} open now",
        open_fds()
    );
    // Settle: the first create attaches the template.
    rt.create(SandboxOptions::default())
        .unwrap()
        .kill()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = open_fds();
    let mem_before = mem_available_kib();
    let mut times = Vec::with_capacity(count);
    let mut sandboxes = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        match rt.create(SandboxOptions::default()) {
            Ok(sb) => sandboxes.push(sb),
            Err(e) => {
                println!("create {} failed: {e}", i + 1);
                break;
            }
        }
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let mem_after = mem_available_kib();
    let fds_after = open_fds();
    let n = sandboxes.len();
    let window = (n / 100).clamp(1, 10);
    let first: Stats = stats_of(&times[..window]);
    let last: Stats = stats_of(&times[n - window..]);
    let all = stats_of(&times);
    println!(
        "{n} idle sandboxes live, created in {:.2} s",
        total.as_secs_f64()
    );
    println!("{}", all.line("create (all)"));
    println!("{}", first.line(&format!("create #1..#{window}")));
    println!(
        "{}",
        last.line(&format!("create #{}..#{n}", n - window + 1))
    );
    println!(
        "last / first (medians): {:.2}",
        last.median().as_secs_f64() / first.median().as_secs_f64()
    );
    for part in [0usize, 1, 2, 3] {
        let (a, b) = (part * n / 4, (part + 1) * n / 4);
        println!(
            "  creates {:>4}..{:<4} median {:.3} ms",
            a + 1,
            b,
            ms(stats_of(&times[a..b]).median())
        );
    }
    println!(
        "descriptors: {} for {n} sandboxes ({:.1} each)",
        fds_after - fds_before,
        (fds_after - fds_before) as f64 / n as f64
    );
    let per = (mem_before as f64 - mem_after as f64) / n as f64;
    println!(
        "MemAvailable dropped {} MiB: {per:.0} KiB per sandbox (noisy while other work runs; load {:.2})",
        (mem_before as i64 - mem_after as i64) / 1024,
        load()
    );
    let mut pss = Vec::new();
    let mut kernel = Vec::new();
    for sb in sandboxes.iter().step_by((n / 50).max(1)) {
        if let Some(pid) = sb.info().init_pid {
            pss.push(memory::rss_pss(pid).1);
            kernel.push(memory::cgroup_charge(pid).map_or(0, |c| c.1));
        }
    }
    pss.sort();
    kernel.sort();
    println!(
        "per sandbox (median of {}): init PSS {} KiB + cgroup kernel memory {} KiB",
        pss.len(),
        pss[pss.len() / 2],
        kernel[kernel.len() / 2]
    );
    let t = Instant::now();
    for sb in sandboxes {
        let _ = sb.kill();
    }
    println!("destroyed all in {:.2} s", t.elapsed().as_secs_f64());
}

fn stats_of(times: &[Duration]) -> Stats {
    let mut s = Stats::new();
    for t in times {
        s.add(*t);
    }
    s
}
