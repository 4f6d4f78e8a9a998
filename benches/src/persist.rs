//! Persistence (issue 14):
//!
//! - `sandlot-bench persist [--iterations N]`: create → Running with a
//!   state dir vs without (interleaved); reattach (`connect` of a sandbox
//!   another runtime made) in-process; `sandlot exec ID -- true` from a
//!   fresh process vs `crun exec` vs `sandlot run -- true` (interleaved);
//!   the memory of a sandbox's monitor.
//! - `sandlot-bench cycles [--count N] [--persistent]`: create, exec and
//!   destroy N times and print the census before and after (what
//!   `scripts/persist-cycles.sh` runs, 10,000 by default).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandlot::{ListFilter, RunOptions, Runtime, SandboxOptions};

use crate::compare::{interleave, print, Row, Tool};
use crate::peers::{self, time_status, PrivateNs, Workspace};
use crate::stats::Stats;

/// A state dir of the benchmark's own (removed at the end): on /run
/// (tmpfs on most machines, ext4 on ours) unless `SANDLOT_BENCH_STATE_DIR`
/// says where.
fn state_dir(tag: &str) -> PathBuf {
    let base = std::env::var_os("SANDLOT_BENCH_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run"));
    base.join(format!("sandlot-bench-{tag}-{}", std::process::id()))
}

fn persistent(dir: &Path) -> Runtime {
    Runtime::builder()
        .data_dir(crate::data_dir())
        .persistent(dir)
        .build()
        .expect("build a persistent runtime")
}

/// Ends every sandbox of the state dir and removes it.
fn remove_state(dir: &Path) {
    if dir.exists() {
        let rt = persistent(dir);
        for info in rt.list(&ListFilter::all()) {
            if let Ok(sandbox) = rt.connect(&info.id) {
                let _ = sandbox.kill();
            }
        }
        drop(rt);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `Rss`, `Pss` and private dirty memory of a process, in KiB.
fn smaps(pid: i32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("Rss:"),
        field("Pss:"),
        field("Private_Dirty:") + field("Private_Clean:"),
    )
}

/// Pids of `sandlot-monitor` processes watching sandboxes under `dir`.
fn monitors_under(dir: &Path) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        if args.next() == Some(b"sandlot-monitor".as_slice())
            && args
                .next()
                .is_some_and(|d| Path::new(&*String::from_utf8_lossy(d)).starts_with(dir))
        {
            found.push(pid);
        }
    }
    found
}

pub fn run(iterations: usize) {
    println!("{}", crate::machine::describe());
    let dir = state_dir("persist");
    remove_state(&dir);
    let plain = crate::runtime();
    let durable = persistent(&dir);

    // Create → Running, with a state dir and without, interleaved.
    for _ in 0..10 {
        plain
            .create(SandboxOptions::default())
            .unwrap()
            .kill()
            .unwrap();
        durable
            .create(SandboxOptions::default())
            .unwrap()
            .kill()
            .unwrap();
    }
    let (mut without, mut with) = (Stats::new(), Stats::new());
    for i in 0..iterations * 2 {
        let (rt, stats) = if i % 2 == 0 {
            (&plain, &mut without)
        } else {
            (&durable, &mut with)
        };
        let t = Instant::now();
        let sandbox = rt.create(SandboxOptions::default()).unwrap();
        stats.add(t.elapsed());
        sandbox.kill().unwrap();
    }
    println!("{}", without.line("create -> Running, no state dir"));
    println!("{}", with.line("create -> Running, persistent"));
    println!(
        "  persistence adds {:.3} ms (median)\n  state dir {} on {}",
        (with.median().as_secs_f64() - without.median().as_secs_f64()) * 1e3,
        dir.display(),
        fs_type(&dir)
    );

    // Reattach: another runtime (as after a restart) takes a sandbox over.
    let sandbox = durable.create(SandboxOptions::default()).unwrap();
    let id = sandbox.id().to_string();
    drop(sandbox);
    drop(durable);
    let mut reattach = Stats::new();
    for _ in 0..iterations {
        let rt = persistent(&dir);
        let t = Instant::now();
        let sandbox = rt.connect(&id).expect("connect");
        reattach.add(t.elapsed());
        assert!(sandbox.is_alive());
        drop(sandbox);
        drop(rt);
    }
    println!("{}", reattach.line("reattach (connect, another runtime)"));

    // The monitor's memory.
    std::thread::sleep(Duration::from_millis(200));
    for pid in monitors_under(&dir) {
        let (rss, pss, private) = smaps(pid);
        println!(
            "monitor {pid}: Rss {rss} KiB, Pss {pss} KiB, private {private} KiB \
             (its text is the init memfd, shared by every monitor of a runtime)"
        );
    }

    // exec from a fresh process vs crun exec vs a one-shot run.
    exec_from_cli(&dir, &id, iterations);

    remove_state(&dir);
    println!("\nload at the end: {:.2}", crate::machine::load());
}

fn fs_type(dir: &Path) -> String {
    let Ok(out) = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
    else {
        return "?".into();
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn exec_from_cli(dir: &Path, id: &str, rounds: usize) {
    let Some(cli) = peers::sandlot_cli() else {
        eprintln!(
            "exec: no sandlot CLI beside this binary; `cargo build --release -p sandlot-cli` \
             (or set SANDLOT_BIN)"
        );
        return;
    };
    let data_dir = crate::data_dir();
    let mut tools: Vec<Tool> = Vec::new();
    {
        let (cli, data_dir, dir, id) = (
            cli.clone(),
            data_dir.clone(),
            dir.to_owned(),
            id.to_string(),
        );
        tools.push(Tool {
            name: "sandlot exec ID -- true".into(),
            run: Box::new(move || {
                time_status(
                    Command::new(&cli)
                        .arg("--data-dir")
                        .arg(&data_dir)
                        .arg("--state-dir")
                        .arg(&dir)
                        .args(["exec", &id, "--", "/bin/true"]),
                )
            }),
        });
    }
    let ws = Workspace::new();
    let ns = match PrivateNs::start() {
        Ok(ns) => Some(Arc::new(ns)),
        Err(e) => {
            eprintln!("crun skipped: no private mount namespace for it: {e}");
            None
        }
    };
    let mut container = None;
    if let (Some(crun), Some(ns)) = (peers::find("crun"), ns.as_ref()) {
        let bundle = ws.bundle("crun-persist", &["/bin/sleep", "infinity"]);
        let cid = format!("sb-persist-{}", std::process::id());
        let started = {
            let (crun, cid) = (crun.clone(), cid.clone());
            ns.run(move || {
                peers::run_detached(
                    Command::new(&crun)
                        .args(["run", "--detach", "--bundle"])
                        .arg(&bundle)
                        .arg(&cid),
                )
            })
        };
        match started {
            Ok(()) => {
                container = Some((crun.clone(), cid.clone()));
                let ns = ns.clone();
                tools.push(Tool {
                    name: "crun exec".into(),
                    run: Box::new(move || {
                        let (crun, cid) = (crun.clone(), cid.clone());
                        ns.run(move || {
                            time_status(Command::new(&crun).args(["exec", &cid, "/bin/true"]))
                        })
                    }),
                });
            }
            Err(e) => eprintln!("crun run --detach failed: {e}"),
        }
    } else {
        eprintln!("crun exec skipped: no crun (scripts/install-peers.sh)");
    }
    tools.push(Tool {
        name: "sandlot run -- true".into(),
        run: Box::new(move || {
            time_status(Command::new(&cli).arg("--data-dir").arg(&data_dir).args([
                "run",
                "--",
                "/bin/true",
            ]))
        }),
    });
    let rows: Vec<Row> = interleave("`true` from a fresh process", tools, rounds);
    print(&rows);
    if let (Some((crun, cid)), Some(ns)) = (container, ns) {
        ns.run(move || {
            let _ = Command::new(&crun)
                .args(["delete", "--force", &cid])
                .output();
        });
    }
}

/// What a long run could leak, from this process and its state dir.
#[derive(Debug, PartialEq, Eq)]
struct Census {
    fds: usize,
    threads: usize,
    children: usize,
    /// Lines of this process's mountinfo and of its spawner threads'.
    mounts: usize,
    /// cgroup dirs of sandboxes (and runtimes) this process made.
    cgroup_dirs: usize,
    /// Sandbox directories and monitors of the state dir.
    records: usize,
    monitors: usize,
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map_or(0, |d| d.count())
}

/// `cgroup_marks`: name fragments of this process's runtime dirs;
/// `ours`: ids of the persistent sandboxes it made (their dirs are
/// `sandlot-persistent-<id>`, whoever else's live on the machine).
fn census(dir: &Path, cgroup_marks: &[String], ours: &HashSet<String>) -> Census {
    let mut children = 0;
    let mut mounts = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let kids = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children += kids.split_whitespace().count();
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "sandlot-spawner" {
            mounts += std::fs::read_to_string(task.path().join("mountinfo"))
                .map_or(0, |m| m.lines().count());
        }
    }
    mounts += std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |m| m.lines().count());
    let mut cgroup_dirs = 0;
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    let mut depth = 0;
    while !stack.is_empty() && depth < 8 {
        let mut next = Vec::new();
        for d in stack {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let persistent_ours = name
                    .strip_prefix("sandlot-persistent-")
                    .is_some_and(|id| ours.contains(id));
                if persistent_ours || cgroup_marks.iter().any(|m| name.contains(m.as_str())) {
                    cgroup_dirs += 1;
                }
                next.push(e.path());
            }
        }
        stack = next;
        depth += 1;
    }
    Census {
        fds: count_dir("/proc/self/fd"),
        threads: count_dir("/proc/self/task"),
        children,
        mounts,
        cgroup_dirs,
        records: count_dir(&dir.join("sandboxes").to_string_lossy()),
        monitors: monitors_under(dir).len(),
    }
}

pub fn cycles(count: usize, persistent_mode: bool) {
    println!("{}", crate::machine::describe());
    let dir = state_dir("cycles");
    remove_state(&dir);
    let rt = if persistent_mode {
        persistent(&dir)
    } else {
        crate::runtime()
    };
    // One warm-up cycle: the template's layers and the init memfd stay.
    rt.create(SandboxOptions::default())
        .unwrap()
        .kill()
        .unwrap();
    let marks = vec![format!("sandlot-{}-", std::process::id())];
    let mut ours = HashSet::new();
    let before = census(&dir, &marks, &ours);
    println!(
        "{count} create/exec/destroy cycles ({})",
        if persistent_mode {
            "persistent"
        } else {
            "no state dir"
        }
    );
    println!("census before: {before:?}");
    let window = (count / 10).max(1);
    let mut stats = Stats::new();
    let started = Instant::now();
    for i in 1..=count {
        let t = Instant::now();
        let sandbox = rt.create(SandboxOptions::default()).expect("create");
        ours.insert(sandbox.id().to_string());
        let out = sandbox
            .commands()
            .run(["/bin/true"], RunOptions::default())
            .expect("exec");
        assert!(out.success());
        sandbox.kill().expect("destroy");
        stats.add(t.elapsed());
        if i % window == 0 {
            println!("{}", stats.line(&format!("cycles {}..{i}", i + 1 - window)));
            stats = Stats::new();
        }
    }
    println!("{count} cycles in {:.1} s", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_millis(500));
    let after = census(&dir, &marks, &ours);
    println!("census after:  {after:?}");
    drop(rt);
    remove_state(&dir);
    if before == after {
        println!("census: unchanged");
    } else {
        println!("census: CHANGED");
        std::process::exit(1);
    }
}
