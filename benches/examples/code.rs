//! Costs of code contexts on the host (phase 1: the host launcher, no
//! sandbox), release build:
//!
//!     cargo run --release -p sandlot-bench --example code [-- --iterations N]
//!
//! Prints medians and p10–p90 of, for Python (standard-library driver,
//! `/usr/bin/python3 -S`, and IPython) and bash:
//! - the first cell `1+1` including the context's start (create + run +
//!   remove);
//! - the interpreter alone, `python3 -S -c pass` / `bash -c :`, for scale;
//! - a warm cell round trip (`1+1` / `:`) in a running context.
//!
//! Node is measured too when `node` is on PATH.

use std::process::Command;
use std::time::{Duration, Instant};

use sandlot::code::{CellOptions, CodeContextOptions, CodeContexts, HostLauncher, Language};

fn line(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<44} median {:>9.3} ms   p10 {:>9.3}   p90 {:>9.3}   n={}",
        at(0.5).as_secs_f64() * 1e3,
        at(0.1).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn time(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut iterations = 50;
    while let Some(arg) = args.next() {
        if arg == "--iterations" {
            iterations = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--iterations N");
        }
    }
    let warm_iterations = iterations * 20;
    let contexts = CodeContexts::new(HostLauncher);
    let cases: Vec<(&str, CodeContextOptions, &str, Vec<&str>)> = vec![
        (
            "python stdlib driver (python3 -S)",
            CodeContextOptions::new(Language::Python).command(["/usr/bin/python3", "-S"]),
            "1+1",
            vec!["/usr/bin/python3", "-S", "-c", "pass"],
        ),
        (
            "python stdlib driver (python3)",
            CodeContextOptions::new(Language::Python)
                .command(["/usr/bin/python3"])
                .ipython(false),
            "1+1",
            vec!["/usr/bin/python3", "-c", "pass"],
        ),
        (
            "python IPython driver",
            CodeContextOptions::new(Language::Python).command(["/usr/bin/python3"]),
            "1+1",
            vec!["/usr/bin/python3", "-c", "import IPython"],
        ),
        (
            "bash driver",
            CodeContextOptions::new(Language::Bash),
            ":",
            vec!["bash", "-c", ":"],
        ),
        (
            "node driver",
            CodeContextOptions::new(Language::JavaScript),
            "1+1",
            vec!["node", "-e", "0"],
        ),
    ];
    for (name, options, cell, bare) in cases {
        let slow = name.contains("IPython") || name.contains("node");
        let n = if slow { iterations.min(20) } else { iterations };
        let mut bare_samples = time(n, || {
            let status = Command::new(bare[0])
                .args(&bare[1..])
                .status()
                .expect("run interpreter");
            assert!(status.success());
        });
        line(
            &format!("{}: bare `{}`", name, bare.join(" ")),
            &mut bare_samples,
        );
        let mut first = time(n, || {
            let ctx = contexts.create_context(options.clone()).expect("create");
            let e = contexts
                .run(&ctx, cell, CellOptions::default())
                .expect("run");
            assert!(e.error.is_none());
            contexts.remove(&ctx).unwrap();
        });
        line(&format!("{name}: first cell incl. start"), &mut first);
        let ctx = contexts.create_context(options.clone()).expect("create");
        let mut warm = time(warm_iterations, || {
            let e = contexts
                .run(&ctx, cell, CellOptions::default())
                .expect("run");
            assert!(e.error.is_none());
        });
        line(&format!("{name}: warm cell round trip"), &mut warm);
        contexts.remove(&ctx).unwrap();
    }
}
