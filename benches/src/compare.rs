//! `sandlot-bench peers`: whole-process comparison with the peers, cases
//! interleaved round by round (A B C …, then B C … A) so that load from
//! other work on the machine spreads over every tool alike.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sandlot::{RunOptions, Runtime, SandboxOptions};

use crate::memory;
use crate::peers::{self, time_status, PrivateNs, Workspace};
use crate::stats::{ms, Stats};

pub type Runner = Box<dyn FnMut() -> Result<Duration, String>>;

pub struct Tool {
    pub name: String,
    pub run: Runner,
}

/// One printed row.
pub struct Row {
    pub case: &'static str,
    pub tool: String,
    pub stats: Stats,
    /// The row this one is compared with (sandlot's, in the same case).
    pub base: bool,
}

pub struct Options {
    pub rounds: usize,
    pub data_dir: PathBuf,
}

pub fn interleave(case: &'static str, mut tools: Vec<Tool>, rounds: usize) -> Vec<Row> {
    let warmup = 5.min(rounds);
    let mut stats: Vec<Stats> = tools.iter().map(|_| Stats::new()).collect();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    let n = tools.len();
    for round in 0..rounds + warmup {
        for k in 0..n {
            let i = (round + k) % n;
            if failed.contains_key(&i) {
                continue;
            }
            match (tools[i].run)() {
                Ok(d) if round >= warmup => stats[i].add(d),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{case}: {} failed, dropped: {e}", tools[i].name);
                    failed.insert(i, e);
                }
            }
        }
    }
    tools
        .into_iter()
        .zip(stats)
        .enumerate()
        .filter(|(_, (_, s))| !s.is_empty())
        .map(|(i, (tool, stats))| Row {
            case,
            tool: tool.name,
            stats,
            base: i == 0,
        })
        .collect()
}

fn command(program: &std::path::Path, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// One-shot `true` in a fresh sandbox, whole process, per tool.
fn one_shot(ws: &Workspace, ns: Option<&Arc<PrivateNs>>, opts: &Options) -> Vec<Row> {
    let mut tools: Vec<Tool> = Vec::new();
    match peers::sandlot_cli() {
        Some(cli) => {
            let data_dir = opts.data_dir.clone();
            tools.push(Tool {
                name: "sandlot run (CLI)".into(),
                run: Box::new(move || {
                    time_status(Command::new(&cli).arg("--data-dir").arg(&data_dir).args([
                        "run",
                        "--",
                        "/bin/true",
                    ]))
                }),
            });
        }
        None => eprintln!(
            "one-shot: no sandlot CLI beside this binary; `cargo build --release -p sandlot-cli` \
             (or set SANDLOT_BIN)"
        ),
    }
    if let Some(bwrap) = peers::find("bwrap") {
        let args = ws.bwrap_args(&["/bin/true"]);
        tools.push(Tool {
            name: "bwrap".into(),
            run: Box::new(move || time_status(&mut command(&bwrap, &args))),
        });
    }
    if let Some(nsjail) = peers::find("nsjail") {
        ws.nsjail_cgroup_parents();
        let args = ws.nsjail_args(&["/bin/true"]);
        tools.push(Tool {
            name: "nsjail -Mo".into(),
            run: Box::new(move || time_status(&mut command(&nsjail, &args))),
        });
    }
    if let (Some(crun), Some(ns)) = (peers::find("crun"), ns) {
        let bundle = ws.bundle("crun-true", &["/bin/true"]);
        let ns = ns.clone();
        let mut n = 0u64;
        tools.push(Tool {
            name: "crun run".into(),
            run: Box::new(move || {
                n += 1;
                let (crun, bundle) = (crun.clone(), bundle.clone());
                let id = format!("sb-true-{}-{n}", std::process::id());
                ns.run(move || {
                    time_status(
                        Command::new(&crun)
                            .arg("run")
                            .arg("--bundle")
                            .arg(&bundle)
                            .arg(&id),
                    )
                })
            }),
        });
    }
    if let Some(runc) = peers::find("runc") {
        let bundle = ws.bundle("runc-true", &["/bin/true"]);
        let mut n = 0u64;
        tools.push(Tool {
            name: "runc run".into(),
            run: Box::new(move || {
                n += 1;
                let id = format!("sb-true-{}-{n}", std::process::id());
                time_status(
                    Command::new(&runc)
                        .arg("run")
                        .arg("--bundle")
                        .arg(&bundle)
                        .arg(&id),
                )
            }),
        });
    }
    if let Some(unshare) = peers::find("unshare") {
        tools.push(Tool {
            name: "unshare (6 namespaces)".into(),
            run: Box::new(move || {
                time_status(Command::new(&unshare).args([
                    "--user",
                    "--map-root-user",
                    "--pid",
                    "--fork",
                    "--mount",
                    "--net",
                    "--uts",
                    "--ipc",
                    "/bin/true",
                ]))
            }),
        });
    }
    tools.push(Tool {
        name: "spawn /bin/true (no isolation)".into(),
        run: Box::new(|| time_status(&mut Command::new("/bin/true"))),
    });
    interleave("one-shot `true`", tools, opts.rounds)
}

/// `true` in an already running sandbox or container.
fn exec(ws: &Workspace, ns: Option<&Arc<PrivateNs>>, rt: &Runtime, opts: &Options) -> Vec<Row> {
    let mut tools: Vec<Tool> = Vec::new();
    let sandbox = rt.create(SandboxOptions::default()).expect("create");
    {
        let sandbox = sandbox.clone();
        tools.push(Tool {
            name: "sandlot run(\"true\") (library)".into(),
            run: Box::new(move || {
                let started = std::time::Instant::now();
                let out = sandbox
                    .commands()
                    .run(["true"], RunOptions::default())
                    .map_err(|e| e.to_string())?;
                let took = started.elapsed();
                out.success()
                    .then_some(took)
                    .ok_or_else(|| format!("{:?}", out.exit))
            }),
        });
    }
    let mut container: Option<(PathBuf, String)> = None;
    if let (Some(crun), Some(ns)) = (peers::find("crun"), ns) {
        let bundle = ws.bundle("crun-idle", &["/bin/sleep", "infinity"]);
        let id = format!("sb-idle-{}", std::process::id());
        let started = {
            let (crun, id) = (crun.clone(), id.clone());
            ns.run(move || {
                peers::run_detached(
                    Command::new(&crun)
                        .args(["run", "--detach", "--bundle"])
                        .arg(&bundle)
                        .arg(&id),
                )
            })
        };
        match started {
            Ok(_) => {
                container = Some((crun.clone(), id.clone()));
                let pid = peers::container_pid(&crun, &id, Some(ns));
                let ns = ns.clone();
                {
                    let (crun, id) = (crun.clone(), id.clone());
                    tools.push(Tool {
                        name: "crun exec".into(),
                        run: Box::new(move || {
                            let (crun, id) = (crun.clone(), id.clone());
                            ns.run(move || {
                                time_status(Command::new(&crun).args(["exec", &id, "/bin/true"]))
                            })
                        }),
                    });
                }
                if let (Some(nsenter), Some(pid)) = (peers::find("nsenter"), pid) {
                    tools.push(Tool {
                        name: "nsenter -a (namespaces only)".into(),
                        run: Box::new(move || {
                            time_status(Command::new(&nsenter).args([
                                "-t",
                                &pid.to_string(),
                                "-a",
                                "/bin/true",
                            ]))
                        }),
                    });
                }
            }
            Err(e) => eprintln!("exec: crun run --detach failed: {e}"),
        }
    }
    let rows = interleave("exec `true` in a running one", tools, opts.rounds);
    if let (Some((crun, id)), Some(ns)) = (container, ns) {
        ns.run(move || {
            let _ = Command::new(&crun)
                .args(["delete", "--force", &id])
                .output();
        });
    }
    let _ = sandbox.kill();
    rows
}

/// sandlot-only rows: the library's create, destroy and cycle.
fn library(rt: &Runtime, opts: &Options) -> Vec<Row> {
    let (mut create, mut destroy, mut cycle) = (Stats::new(), Stats::new(), Stats::new());
    for i in 0..opts.rounds + 5 {
        let t0 = std::time::Instant::now();
        let sb = rt.create(SandboxOptions::default()).expect("create");
        let t1 = std::time::Instant::now();
        let out = sb.commands().run(["true"], RunOptions::default()).unwrap();
        assert!(out.success());
        let t2 = std::time::Instant::now();
        sb.kill().unwrap();
        let t3 = std::time::Instant::now();
        if i >= 5 {
            create.add(t1 - t0);
            destroy.add(t3 - t2);
            cycle.add(t3 - t0);
        }
    }
    let acquire = crate::pool::acquire_while_refilling(rt, opts.rounds.max(200));
    vec![
        Row {
            case: "library",
            tool: "create -> Running".into(),
            stats: create,
            base: false,
        },
        Row {
            case: "library",
            tool: "create + run true + destroy".into(),
            stats: cycle,
            base: false,
        },
        Row {
            case: "library",
            tool: "destroy".into(),
            stats: destroy,
            base: false,
        },
        Row {
            case: "library",
            tool: "pool acquire (while refilling)".into(),
            stats: acquire,
            base: false,
        },
    ]
}

pub fn print(rows: &[Row]) {
    println!(
        "{:<30} {:<32} {:>10} {:>21} {:>12}",
        "case", "tool", "median ms", "p10–p90 ms", "sandlot/it"
    );
    let mut base: Option<Duration> = None;
    let mut last_case = "";
    for row in rows {
        if row.case != last_case {
            base = None;
            last_case = row.case;
        }
        if row.base {
            base = Some(row.stats.median());
        }
        let ratio = match (row.base, base) {
            (true, _) => "1.00".to_string(),
            (false, Some(b)) if row.case != "library" => {
                format!("{:.2}", b.as_secs_f64() / row.stats.median().as_secs_f64())
            }
            _ => String::new(),
        };
        println!(
            "{:<30} {:<32} {:>10.3} {:>10.3} – {:>8.3} {:>12}",
            row.case,
            row.tool,
            ms(row.stats.median()),
            ms(row.stats.percentile(0.1)),
            ms(row.stats.percentile(0.9)),
            ratio
        );
    }
}

pub fn run(opts: Options) {
    println!("{}", crate::machine::describe());
    println!(
        "rounds: {} per case, interleaved; ratio = sandlot's median / the tool's \
         (below 1: sandlot is faster)\n",
        opts.rounds
    );
    let ws = Workspace::new();
    let ns = match PrivateNs::start() {
        Ok(ns) => Some(Arc::new(ns)),
        Err(e) => {
            eprintln!("crun skipped: no private mount namespace for it: {e}");
            None
        }
    };
    let rt = Runtime::builder()
        .data_dir(&opts.data_dir)
        .build()
        .expect("runtime");
    let mut rows = one_shot(&ws, ns.as_ref(), &opts);
    rows.extend(exec(&ws, ns.as_ref(), &rt, &opts));
    rows.extend(library(&rt, &opts));
    print(&rows);
    println!();
    memory::compare(&ws, ns.as_ref(), &rt);
    println!("\nload at the end: {:.2}", crate::machine::load());
    drop(rt);
    drop(ns);
    drop(ws);
}
