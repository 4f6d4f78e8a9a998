//! Code contexts and terminals in sandboxes (`sandlot-bench code`):
//!
//! - the first cell (`1+1`, bash `:`) in a fresh sandbox, the context's
//!   start included, next to the interpreter alone run as a command in the
//!   same kind of sandbox (`python3 -c pass`) and on the host;
//! - a warm cell round trip in a running context (Python standard-library
//!   driver, IPython, bash, node);
//! - a terminal's echo round trip: one byte through `cat` on a raw
//!   terminal and back.
//!
//! The sandbox's own create and destroy are outside every timing.

use std::process::Command;
use std::time::{Duration, Instant};

use sandlot::code::{CellOptions, CodeContextOptions, Language};
use sandlot::{ProcessEvent, PtySize, RunOptions, Runtime, SandboxOptions};

use crate::machine;
use crate::stats::Stats;

fn first_cell(rt: &Runtime, n: usize, options: &CodeContextOptions, code: &str) -> Stats {
    let mut stats = Stats::new();
    for _ in 0..n {
        let sb = rt.create(SandboxOptions::default()).unwrap();
        let t = Instant::now();
        let ctx = sb.code().create_context(options.clone()).unwrap();
        let out = sb.code().run(&ctx, code, CellOptions::default()).unwrap();
        stats.add(t.elapsed());
        assert!(out.error.is_none(), "{:?}", out.error);
        sb.kill().unwrap();
    }
    stats
}

fn command_in_sandbox(rt: &Runtime, n: usize, argv: &[&str]) -> Stats {
    let mut stats = Stats::new();
    for _ in 0..n {
        let sb = rt.create(SandboxOptions::default()).unwrap();
        let t = Instant::now();
        let out = sb.commands().run(argv, RunOptions::default()).unwrap();
        stats.add(t.elapsed());
        assert!(out.success(), "{argv:?}: {}", out.stderr_str());
        sb.kill().unwrap();
    }
    stats
}

fn on_host(n: usize, argv: &[&str]) -> Stats {
    let mut stats = Stats::new();
    for _ in 0..n {
        let t = Instant::now();
        let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
        stats.add(t.elapsed());
        assert!(status.success());
    }
    stats
}

fn warm_cell(rt: &Runtime, n: usize, options: CodeContextOptions, code: &str) -> Stats {
    let sb = rt.create(SandboxOptions::default()).unwrap();
    let ctx = sb.code().create_context(options).unwrap();
    for _ in 0..20 {
        sb.code().run(&ctx, code, CellOptions::default()).unwrap();
    }
    let mut stats = Stats::new();
    for _ in 0..n {
        let t = Instant::now();
        let out = sb.code().run(&ctx, code, CellOptions::default()).unwrap();
        stats.add(t.elapsed());
        assert!(out.error.is_none());
    }
    sb.kill().unwrap();
    stats
}

fn pty_echo(rt: &Runtime, n: usize) -> Stats {
    let sb = rt.create(SandboxOptions::default()).unwrap();
    let pty = sb
        .commands()
        .spawn_pty(
            ["sh", "-c", "stty raw -echo; echo ready; exec cat"],
            PtySize::default(),
            RunOptions::default(),
        )
        .unwrap();
    let mut seen = Vec::new();
    // Raw: no output processing, so no \r before the newline.
    while !seen.ends_with(b"ready\n") {
        match pty.events().recv_timeout(Duration::from_secs(10)).unwrap() {
            ProcessEvent::Stdout(chunk) => seen.extend(chunk),
            other => panic!("{other:?}"),
        }
    }
    let mut stats = Stats::new();
    for i in 0..n + 50 {
        let byte = b'a' + (i % 26) as u8;
        let t = Instant::now();
        pty.write(&[byte]).unwrap();
        match pty.events().recv_timeout(Duration::from_secs(10)).unwrap() {
            ProcessEvent::Stdout(chunk) => assert_eq!(chunk, [byte]),
            other => panic!("{other:?}"),
        }
        if i >= 50 {
            stats.add(t.elapsed());
        }
    }
    pty.kill().unwrap();
    sb.kill().unwrap();
    stats
}

pub fn run(rt: &Runtime, iterations: usize) {
    println!("{}", machine::describe());
    // Warm-up: template layers attached, interpreters in the page cache.
    for _ in 0..5 {
        let sb = rt.create(SandboxOptions::default()).unwrap();
        sb.run_code("1+1").unwrap();
        sb.kill().unwrap();
    }
    let n = iterations;
    let python = CodeContextOptions::new(Language::Python).ipython(false);
    let python_s = CodeContextOptions::new(Language::Python).command(["python3", "-S"]);
    let ipython = CodeContextOptions::new(Language::Python);
    let bash = CodeContextOptions::new(Language::Bash);
    let node = CodeContextOptions::new(Language::JavaScript);

    println!("-- first cell in a fresh sandbox (context start included)");
    for (name, stats) in [
        (
            "python3 -c pass, on the host",
            on_host(n, &["/usr/bin/python3", "-c", "pass"]),
        ),
        (
            "python3 -c pass, sandbox command",
            command_in_sandbox(rt, n, &["python3", "-c", "pass"]),
        ),
        ("1+1, stdlib driver", first_cell(rt, n, &python, "1+1")),
        (
            "1+1, stdlib driver, python3 -S",
            first_cell(rt, n, &python_s, "1+1"),
        ),
        (
            "1+1, IPython driver",
            first_cell(rt, n.min(20), &ipython, "1+1"),
        ),
        (
            "bash -c :, sandbox command",
            command_in_sandbox(rt, n, &["bash", "-c", ":"]),
        ),
        ("bash :, bash driver", first_cell(rt, n, &bash, ":")),
        (
            "node 1+1, node driver",
            first_cell(rt, n.min(20), &node, "1+1"),
        ),
    ] {
        println!("{}", stats.line(name));
    }

    println!("-- warm cell round trip in a running context");
    let warm = n * 10;
    for (name, stats) in [
        (
            "python 1+1, stdlib driver",
            warm_cell(rt, warm, python, "1+1"),
        ),
        (
            "python 1+1, IPython driver",
            warm_cell(rt, warm, ipython, "1+1"),
        ),
        ("bash :", warm_cell(rt, warm, bash, ":")),
        ("node 1+1", warm_cell(rt, warm, node, "1+1")),
    ] {
        println!("{}", stats.line(name));
    }

    println!("-- terminal");
    println!(
        "{}",
        pty_echo(rt, warm).line("pty echo round trip (1 byte, cat)")
    );
}
