//! `sandbox.metrics()`: what a sandbox uses now, read host-side without
//! entering it.
//!
//! | field | source |
//! |---|---|
//! | CPU, memory, processes, OOM kills | the sandbox's cgroup (`cgroups::stats`: files opened once, re-read with pread) |
//! | disk | `fstatfs` of the writable tmpfs (`Live::rw`) |
//! | network interfaces | `/proc/<init pid>/net/dev`: the sandbox's own network namespace, opened once, re-read with pread |
//! | network traffic and decisions | the proxy engine's counters (`services::net`), for a sandbox with a network or exposed ports |
//! | uptime, last activity, active executions | the host's own records |
//!
//! A call re-reads seven open files and calls fstatfs once, and starts no
//! process: a median of 16.5 µs on our 2-core development VM, about 53,000
//! calls a second from one thread (`cargo run --release -p sandlot-bench
//! --example limits`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::engine::error::{Error, Result};
use crate::engine::extensions::Extension;
use crate::engine::sandbox::SandboxShared;
use crate::engine::sync::lock;

/// A snapshot of a sandbox's resource usage.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub timestamp: SystemTime,
    /// CPU time used by every process of the sandbox since it started.
    pub cpu_usage_ns: u64,
    /// CPU used since the previous sample, as a percentage of the
    /// sandbox's CPU limit (100 = the whole `cpu_count`). For
    /// [`Sandbox::metrics`](crate::Sandbox::metrics) the previous sample is the previous call (the
    /// sandbox's start for the first); a
    /// [`ResourceMonitor`](crate::ResourceMonitor) keeps its own.
    pub cpu_percent: f64,
    /// The CPU limit, in CPUs (`Limits::cpus`).
    pub cpu_count: f64,
    /// Memory charged to the sandbox's cgroup now (page cache included).
    pub memory_used: u64,
    pub memory_limit: u64,
    /// The most memory ever charged (where the kernel lacks a peak
    /// counter, `memory_used`).
    pub memory_peak: u64,
    /// Page cache (file-backed memory) within `memory_used`.
    pub memory_cache: u64,
    /// Bytes used on the writable layer (overlay upper, /tmp, /dev/shm).
    pub disk_used: u64,
    /// Its size (`Limits::disk`, as the tmpfs reports it).
    pub disk_total: u64,
    /// Counters of every interface in the sandbox's network namespace,
    /// loopback included.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_packets: u64,
    /// What went through sandlot's proxy and resolver: bytes in and out,
    /// connections allowed and denied, lookups answered and denied (zero
    /// for a sandbox without a network or exposed ports).
    pub network: crate::services::net::NetworkCounters,
    /// Processes and threads alive, init included.
    pub processes: u64,
    pub max_processes: u64,
    /// Processes the OOM killer has killed in the sandbox.
    pub oom_kills: u64,
    pub uptime: Duration,
    /// When a command last started or ended (creation before the first).
    pub last_activity: SystemTime,
    /// Commands in flight.
    pub active_executions: usize,
}

impl Metrics {
    /// Fraction of the memory limit in use (0.0 to 1.0).
    pub fn memory_fraction(&self) -> f64 {
        fraction(self.memory_used, self.memory_limit)
    }

    /// Fraction of the writable layer in use.
    pub fn disk_fraction(&self) -> f64 {
        fraction(self.disk_used, self.disk_total)
    }

    /// Fraction of the process limit in use.
    pub fn processes_fraction(&self) -> f64 {
        fraction(self.processes, self.max_processes)
    }
}

fn fraction(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 / total as f64
    }
}

/// Network counters summed over a namespace's interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// Sums `/proc/net/dev`: two header lines, then `iface: rx_bytes
/// rx_packets errs drop fifo frame compressed multicast tx_bytes
/// tx_packets …`.
pub(crate) fn parse_net_dev(text: &str) -> NetCounters {
    let mut sum = NetCounters::default();
    for line in text.lines() {
        let Some((_, fields)) = line.split_once(':') else {
            continue;
        };
        let mut n = fields
            .split_ascii_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        let v: [u64; 10] = std::array::from_fn(|_| n.next().unwrap_or(0));
        sum.rx_bytes += v[0];
        sum.rx_packets += v[1];
        sum.tx_bytes += v[8];
        sum.tx_packets += v[9];
    }
    sum
}

/// CPU used between two samples, as a percentage of `cpus` CPUs.
pub(crate) fn cpu_percent(
    (then, then_ns): (Instant, u64),
    (now, now_ns): (Instant, u64),
    cpus: f64,
) -> f64 {
    let wall = now.saturating_duration_since(then).as_nanos() as f64;
    if wall <= 0.0 || cpus <= 0.0 {
        return 0.0;
    }
    now_ns.saturating_sub(then_ns) as f64 / wall / cpus * 100.0
}

/// A sample before the CPU percentage (which depends on who asks).
pub(crate) struct Sample {
    pub at: Instant,
    pub metrics: Metrics,
}

/// What metrics keeps per sandbox: `metrics()`'s previous sample, and
/// `/proc/<init>/net/dev`, opened on the first call and closed at teardown
/// (it holds a reference to the network namespace).
struct MetricsState {
    /// (when, CPU ns) of the previous `metrics()`.
    cpu_baseline: Mutex<(Instant, u64)>,
    net_dev: Mutex<Option<File>>,
}

impl Extension for MetricsState {
    fn release(&self) {
        *lock(&self.net_dev) = None;
    }
}

fn state(sandbox: &SandboxShared) -> std::sync::Arc<MetricsState> {
    sandbox.ext.get_or_insert_with(|| MetricsState {
        cpu_baseline: Mutex::new((sandbox.started, 0)),
        net_dev: Mutex::new(None),
    })
}

/// Reads every counter once. Fails with `SandboxNotRunning` once the
/// sandbox is gone.
pub(crate) fn sample(sandbox: &SandboxShared) -> Result<Sample> {
    let live = sandbox.live().ok_or_else(|| sandbox.not_running())?;
    let stats = live.cgroup.stats()?;
    let fs = nix::sys::statfs::fstatfs(&live.rw)
        .map_err(|e| Error::setup("fstatfs the writable layer", e))?;
    let net = net_counters(sandbox, live.pid)?;
    drop(live);
    let at = Instant::now();
    sandbox.observe_oom_count(stats.oom_kills);
    let block = fs.block_size() as u64;
    let blocks = fs.blocks() as u64;
    let free = fs.blocks_free() as u64;
    Ok(Sample {
        at,
        metrics: Metrics {
            timestamp: SystemTime::now(),
            cpu_usage_ns: stats.cpu_usage_ns,
            cpu_percent: 0.0,
            cpu_count: sandbox.limits.cpus,
            memory_used: stats.memory_current,
            memory_limit: stats.memory_limit,
            memory_peak: stats.memory_peak.unwrap_or(stats.memory_current),
            memory_cache: stats.memory_cache,
            disk_used: blocks.saturating_sub(free).saturating_mul(block),
            disk_total: blocks.saturating_mul(block),
            net_rx_bytes: net.rx_bytes,
            net_tx_bytes: net.tx_bytes,
            net_rx_packets: net.rx_packets,
            net_tx_packets: net.tx_packets,
            network: crate::services::net::service::counters(sandbox),
            processes: stats.pids_current,
            max_processes: stats.pids_max,
            oom_kills: stats.oom_kills,
            uptime: at.saturating_duration_since(sandbox.started),
            last_activity: sandbox.last_activity(),
            active_executions: lock(&sandbox.execs).commands(),
        },
    })
}

/// The sandbox's network counters, through an fd opened once.
fn net_counters(sandbox: &SandboxShared, init_pid: i32) -> Result<NetCounters> {
    let state = state(sandbox);
    let mut slot = lock(&state.net_dev);
    if slot.is_none() {
        let path = format!("/proc/{init_pid}/net/dev");
        *slot = Some(File::open(&path).map_err(|e| Error::io(format!("open {path}"), e))?);
    }
    let file = slot.as_ref().expect("opened above");
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(Error::io("read the sandbox's /proc/net/dev", e)),
        }
    }
    // A namespace with more interfaces than fit is summed over those
    // that do (a sandbox has loopback and at most a few more).
    let text = String::from_utf8_lossy(&buf[..len]);
    Ok(parse_net_dev(&text))
}

/// What the sandbox uses now. `cpu_percent` covers the time since the
/// previous call.
pub(crate) fn metrics(sandbox: &SandboxShared) -> Result<Metrics> {
    let mut sample = sample(sandbox)?;
    let state = state(sandbox);
    let mut baseline = lock(&state.cpu_baseline);
    let now = (sample.at, sample.metrics.cpu_usage_ns);
    sample.metrics.cpu_percent = cpu_percent(*baseline, now, sample.metrics.cpu_count);
    *baseline = now;
    Ok(sample.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_is_summed_over_interfaces() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
                    eth0: 5000 7 0 0 0 0 0 0 300 3 0 0 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(text),
            NetCounters {
                rx_bytes: 6000,
                rx_packets: 17,
                tx_bytes: 1300,
                tx_packets: 13,
            }
        );
        assert_eq!(parse_net_dev(""), NetCounters::default());
    }

    #[test]
    fn cpu_percent_is_of_the_limit() {
        let t = Instant::now();
        let later = t + Duration::from_secs(2);
        // one CPU-second in two seconds under a 0.5 CPU limit: the limit
        assert!((cpu_percent((t, 0), (later, 1_000_000_000), 0.5) - 100.0).abs() < 1e-9);
        assert!((cpu_percent((t, 0), (later, 1_000_000_000), 1.0) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent((t, 5), (t, 10), 1.0), 0.0);
        assert_eq!(cpu_percent((t, 10), (later, 5), 1.0), 0.0);
    }
}
