//! Costs of the resource API (run on demand, release build, as root):
//!
//!     cargo run --release -p sandlot-bench --example limits [-- --iterations N]
//!
//! Prints medians and p10–p90 of: `metrics()` on an idle and on a busy
//! sandbox (and calls per second from one thread), `pause()` and
//! `resume()` of a sandbox running a CPU spinner, `health()`, and the exec
//! round trip with and without exec limits (the output budget and the
//! concurrency check are on that path).

use std::time::{Duration, Instant};

use sandlot::{ExecLimits, RunOptions, Runtime, SandboxOptions};

fn line(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<34} median {:>9.3} µs   p10 {:>9.3}   p90 {:>9.3}   n={}",
        at(0.5).as_secs_f64() * 1e6,
        at(0.1).as_secs_f64() * 1e6,
        at(0.9).as_secs_f64() * 1e6,
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
    let iterations = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let data_dir = std::env::var("SANDLOT_DATA_DIR").unwrap_or_else(|_| "/var/lib/sandlot".into());
    let rt = Runtime::builder()
        .data_dir(data_dir)
        .build()
        .expect("runtime");

    let idle = rt.create(SandboxOptions::default()).unwrap();
    idle.metrics().unwrap(); // opens the files
    line(
        "metrics(), idle sandbox",
        &mut time(iterations * 10, || {
            idle.metrics().unwrap();
        }),
    );
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        idle.metrics().unwrap();
        calls += 1;
    }
    println!("metrics() calls in one second, one thread: {calls}");

    let busy = rt.create(SandboxOptions::default()).unwrap();
    let _spin = busy
        .commands()
        .spawn("while :; do :; done", RunOptions::default())
        .unwrap();
    busy.metrics().unwrap();
    line(
        "metrics(), spinning sandbox",
        &mut time(iterations * 10, || {
            busy.metrics().unwrap();
        }),
    );

    let (mut pause, mut resume) = (Vec::new(), Vec::new());
    for _ in 0..iterations.min(300) {
        let t = Instant::now();
        busy.pause().unwrap();
        pause.push(t.elapsed());
        let t = Instant::now();
        busy.resume().unwrap();
        resume.push(t.elapsed());
    }
    line("pause(), spinning sandbox", &mut pause);
    line("resume(), spinning sandbox", &mut resume);

    line(
        "health(), idle sandbox",
        &mut time(iterations.min(200), || {
            idle.health();
        }),
    );

    let limited = rt
        .create(SandboxOptions::default().exec_limits(ExecLimits {
            max_time: Some(Duration::from_secs(10)),
            max_output_bytes: Some(1 << 20),
            max_concurrent: Some(4),
        }))
        .unwrap();
    for (name, sb) in [
        ("exec `true`, no exec limits", &idle),
        ("exec `true`, exec limits", &limited),
    ] {
        for _ in 0..20 {
            sb.commands().run(["true"], RunOptions::default()).unwrap();
        }
        line(
            name,
            &mut time(iterations.min(500), || {
                sb.commands().run(["true"], RunOptions::default()).unwrap();
            }),
        );
    }
}
