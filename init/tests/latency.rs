//! Not a test: a measurement, run by hand (never timed in CI).
//!
//! ```text
//! cargo test -p sandlot-init --release --test latency -- --ignored --nocapture
//! SANDLOT_INIT=target/x86_64-unknown-linux-gnu/init/sandlot-init cargo test ...
//! ```
//!
//! Starts `/bin/true` N times (SANDLOT_LATENCY_N, default 500) one after the
//! other and prints the distribution of Spawn → Spawned and Spawn → Exited,
//! and init's memory while idle before and after.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandlot_proto::{Event, Request, Status};

fn status_kib(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| {
            ["VmRSS", "RssAnon", "RssFile", "RssShmem"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: median {:?}, p10 {:?}, p90 {:?}, min {:?}, max {:?} (n = {})",
        percentile(&samples, 50),
        percentile(&samples, 10),
        percentile(&samples, 90),
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
}

#[test]
#[ignore = "a measurement, run by hand"]
fn spawn_latency_of_true() {
    let n: u64 = std::env::var("SANDLOT_LATENCY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let init = Init::start();
    println!("binary: {}", init_binary());
    println!("idle init after Ready: {}", status_kib(init.pid()));
    let (mut spawned, mut exited) = (Vec::new(), Vec::new());
    for id in 0..n + 20 {
        let t0 = Instant::now();
        init.send(&Request::Spawn(command(id, &["/bin/true"])), &[]);
        assert!(matches!(init.event(), Event::Spawned { .. }));
        let t1 = Instant::now();
        assert_eq!(init.exited(id).1, Status::Exited(0));
        let t2 = Instant::now();
        // The first few warm caches up.
        if id >= 20 {
            spawned.push(t1 - t0);
            exited.push(t2 - t0);
        }
    }
    report("Spawn -> Spawned", spawned);
    report("Spawn -> Exited ", exited);
    // The floor: the test process itself starting /bin/true and waiting
    // (std uses posix_spawn, i.e. clone(CLONE_VM|CLONE_VFORK) in glibc).
    let direct = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let status = std::process::Command::new("/bin/true").status().unwrap();
            assert!(status.success());
            t0.elapsed()
        })
        .collect();
    report("direct spawn+wait (floor)", direct);
    println!("idle init after {n} spawns: {}", status_kib(init.pid()));
}
