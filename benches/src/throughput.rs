//! `sandlot-bench throughput`: create + destroy cycles on every core, in
//! windows, to see whether the rate creeps down over time (the kernel
//! tears network namespaces down asynchronously; a backlog would show as
//! a growing count of live `net_namespace` objects and a falling rate).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandlot::{Runtime, SandboxOptions};

use crate::machine::{load, mem_available_kib};
use crate::stats::Stats;

/// Active `net_namespace` objects in the slab, if readable.
fn net_namespaces() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("net_namespace "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

pub fn run(rt: &Runtime, cycles: usize, threads: usize) {
    println!("{}", crate::machine::describe());
    let window = (cycles / 10).max(1);
    println!("{cycles} create+destroy cycles on {threads} threads, windows of {window}");
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>14} {:>8}",
        "window", "cycles/s", "median ms", "p99 ms", "net_namespace", "MemAvail MiB"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let started = Instant::now();
    let mut window_start = Instant::now();
    let mut done_windows = 0;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (rt, next, samples) = (rt.clone(), next.clone(), samples.clone());
            std::thread::spawn(move || loop {
                if next.fetch_add(1, Ordering::SeqCst) >= cycles {
                    return;
                }
                let t = Instant::now();
                let sb = rt.create(SandboxOptions::default()).expect("create");
                sb.kill().expect("destroy");
                samples.lock().unwrap().push(t.elapsed());
            })
        })
        .collect();
    let mut first_rate = None;
    let mut last_rate = 0.0;
    while done_windows < cycles / window {
        std::thread::sleep(Duration::from_millis(20));
        let batch: Option<Vec<Duration>> = {
            let mut s = samples.lock().unwrap();
            (s.len() >= window).then(|| s.drain(..window).collect())
        };
        let Some(batch) = batch else { continue };
        let rate = window as f64 / window_start.elapsed().as_secs_f64();
        window_start = Instant::now();
        first_rate.get_or_insert(rate);
        last_rate = rate;
        let mut st = Stats::new();
        for d in batch {
            st.add(d);
        }
        done_windows += 1;
        println!(
            "{:>6} {:>10.0} {:>12.3} {:>12.3} {:>14} {:>8}",
            done_windows,
            rate,
            st.median().as_secs_f64() * 1e3,
            st.percentile(0.99).as_secs_f64() * 1e3,
            net_namespaces().map_or("-".into(), |n| n.to_string()),
            mem_available_kib() / 1024
        );
    }
    for w in workers {
        let _ = w.join();
    }
    let total = started.elapsed().as_secs_f64();
    println!(
        "{cycles} cycles in {total:.1} s: {:.0} cycles/s overall; last window / first: {:.2}; load {:.2}",
        cycles as f64 / total,
        last_rate / first_rate.unwrap_or(last_rate),
        load()
    );
}
