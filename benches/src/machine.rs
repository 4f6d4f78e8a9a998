//! What the numbers were measured on, printed above every table.

use std::fs;

fn first_match(path: &str, prefix: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `MemAvailable` in KiB.
pub fn mem_available_kib() -> u64 {
    first_match("/proc/meminfo", "MemAvailable")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The 1-minute load average.
pub fn load() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn describe() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = first_match("/proc/cpuinfo", "model name").unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = first_match("/proc/meminfo", "MemTotal").unwrap_or_default();
    format!(
        "machine: {cpus} cpus ({model}), {mem} memory, kernel {}, load {:.2}",
        kernel.trim(),
        load()
    )
}
