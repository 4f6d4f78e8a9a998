//! `sandlot-bench startup`: the parts of a one-shot run in-process, as
//! the CLI does them: build a runtime, create (the first create also
//! attaches the template), run `true`, destroy, shut the runtime down.

use std::time::Instant;

use sandlot::{RunOptions, Runtime, SandboxOptions};

use crate::stats::Stats;

pub fn run(iterations: usize) {
    println!("{}", crate::machine::describe());
    let names = [
        "Runtime::build",
        "first create",
        "run true",
        "destroy",
        "runtime shutdown",
        "total",
    ];
    let mut stats: Vec<Stats> = names.iter().map(|_| Stats::new()).collect();
    for _ in 0..iterations {
        let t0 = Instant::now();
        let rt = Runtime::builder()
            .data_dir(crate::data_dir())
            .build()
            .expect("runtime");
        let t1 = Instant::now();
        let sb = rt.create(SandboxOptions::default()).expect("create");
        let t2 = Instant::now();
        let out = sb
            .commands()
            .run(["/bin/true"], RunOptions::default())
            .unwrap();
        assert!(out.success());
        let t3 = Instant::now();
        sb.kill().unwrap();
        let t4 = Instant::now();
        drop(sb);
        rt.shutdown();
        drop(rt);
        let t5 = Instant::now();
        for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0]
            .into_iter()
            .enumerate()
        {
            stats[i].add(d);
        }
    }
    for (name, s) in names.iter().zip(&stats) {
        println!("{}", s.line(name));
    }
}
