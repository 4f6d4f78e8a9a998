//! Host memory of one idle sandbox, and of an idle crun container and an
//! idle bubblewrap sandbox beside it.
//!
//! Per instance: the RSS and PSS of its processes (PSS divides shared pages
//! — sandlot's init memfd, shared libraries — among their users), and the
//! memory its cgroup is charged with, of which the kernel part (slab, page
//! tables, kernel stacks). "host" = PSS + the cgroup's kernel part: user
//! pages counted once, by PSS, plus what the kernel keeps for it. Kernel
//! objects made before the process entered its cgroup (the namespaces
//! clone3 creates, the runtime's mounts) are charged to the creator, not
//! counted here: the density run's MemAvailable per sandbox covers them.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sandlot::{Runtime, SandboxOptions};

use crate::peers::{self, PrivateNs, Workspace};

/// KiB from a `Name:   N kB` line.
fn kib(text: &str, field: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (RSS, PSS) in KiB of one process.
pub fn rss_pss(pid: i32) -> (u64, u64) {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (kib(&rollup, "Rss:"), kib(&rollup, "Pss:"))
}

/// A process and all its descendants.
fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = fs::read_to_string(t.path().join("children")).unwrap_or_default();
                all.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<i32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// (usage, kernel part) in KiB of the memory cgroup `pid` is in, unless
/// it is this process's own (a tool that makes none).
pub fn cgroup_charge(pid: i32) -> Option<(u64, u64)> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    if cgroups == fs::read_to_string("/proc/self/cgroup").ok()? {
        return None;
    }
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            let read = |f: &str| -> Option<u64> {
                fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok()
            };
            return Some((
                read("memory.usage_in_bytes")? / 1024,
                read("memory.kmem.usage_in_bytes").unwrap_or(0) / 1024,
            ));
        }
        if controllers.is_empty() && path != "/" {
            // cgroup v2
            let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            let current: u64 = fs::read_to_string(dir.join("memory.current"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let stat = fs::read_to_string(dir.join("memory.stat")).ok()?;
            let kernel = stat
                .lines()
                .find(|l| l.starts_with("kernel "))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0);
            return Some((current / 1024, kernel / 1024));
        }
    }
    None
}

#[derive(Default, Clone, Copy)]
struct Sample {
    rss: u64,
    pss: u64,
    charged: u64,
    kernel: u64,
}

fn sample(root_pid: i32) -> Sample {
    let mut s = Sample::default();
    for pid in tree(root_pid) {
        let (rss, pss) = rss_pss(pid);
        s.rss += rss;
        s.pss += pss;
    }
    if let Some((charged, kernel)) = cgroup_charge(root_pid) {
        s.charged = charged;
        s.kernel = kernel;
    }
    s
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn row(name: &str, what: &str, samples: &[Sample]) {
    let pick = |f: fn(&Sample) -> u64| median(samples.iter().map(f).collect());
    let (rss, pss, charged, kernel) = (
        pick(|s| s.rss),
        pick(|s| s.pss),
        pick(|s| s.charged),
        pick(|s| s.kernel),
    );
    println!(
        "{name:<22} {:>8} {:>8} {:>10} {:>10} {:>10}   {what}",
        rss,
        pss,
        charged,
        kernel,
        pss + kernel
    );
}

pub fn compare(ws: &Workspace, ns: Option<&Arc<PrivateNs>>, rt: &Runtime) {
    const N: usize = 10;
    println!("idle memory per instance, KiB (median of {N}, each after 1 s idle)");
    println!(
        "{:<22} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "tool", "RSS", "PSS", "cgroup", "of it kern", "host"
    );

    let sandboxes: Vec<_> = (0..N)
        .map(|_| rt.create(SandboxOptions::default()).expect("create"))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let samples: Vec<Sample> = sandboxes
        .iter()
        .map(|s| sample(s.info().init_pid.expect("init pid")))
        .collect();
    row("sandlot", "init only; cgroup = its own", &samples);
    for s in sandboxes {
        let _ = s.kill();
    }

    if let (Some(crun), Some(ns)) = (peers::find("crun"), ns) {
        let bundle = ws.bundle("crun-mem", &["/bin/sleep", "infinity"]);
        let ids: Vec<String> = (0..N)
            .map(|i| format!("sb-mem-{}-{i}", std::process::id()))
            .collect();
        for id in &ids {
            let (crun, bundle, id) = (crun.clone(), bundle.clone(), id.clone());
            if let Err(e) = ns.run(move || {
                peers::run_detached(
                    Command::new(&crun)
                        .args(["run", "--detach", "--bundle"])
                        .arg(&bundle)
                        .arg(&id),
                )
            }) {
                eprintln!("memory: {e}");
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let samples: Vec<Sample> = ids
            .iter()
            .filter_map(|id| peers::container_pid(&crun, id, Some(ns)))
            .map(sample)
            .collect();
        if !samples.is_empty() {
            row("crun (sleep infinity)", "no monitor process", &samples);
        }
        for id in ids {
            let crun = crun.clone();
            ns.run(move || {
                let _ = Command::new(&crun)
                    .args(["delete", "--force", &id])
                    .output();
            });
        }
    }

    if let Some(bwrap) = peers::find("bwrap") {
        let args = ws.bwrap_args(&["/bin/sleep", "infinity"]);
        let mut children: Vec<Child> = (0..N)
            .filter_map(|_| {
                Command::new(&bwrap)
                    .args(&args)
                    .stdin(Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let samples: Vec<Sample> = children.iter().map(|c| sample(c.id() as i32)).collect();
        row(
            "bwrap (sleep infinity)",
            "bwrap, its pid 1, sleep; no cgroup",
            &samples,
        );
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
