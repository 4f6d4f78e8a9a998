//! Micro benchmarks (criterion) of the library's operations on one
//! sandbox: create, pool acquire, exec round trip, destroy. Root, real
//! kernel; `SANDLOT_DATA_DIR` (default /var/lib/sandlot) holds the base
//! template.
//!
//! Files read/write and metrics are not benchmarked yet: their APIs are
//! being built on other branches (add `files` and `metrics` groups here
//! when they land).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sandlot::{Pool, PoolConfig, RunOptions, Runtime, SandboxOptions};

fn runtime() -> Runtime {
    let data_dir =
        std::env::var_os("SANDLOT_DATA_DIR").unwrap_or_else(|| "/var/lib/sandlot".into());
    Runtime::builder()
        .data_dir(data_dir)
        .build()
        .expect("a runtime (root, and a data dir with the base template)")
}

fn sandbox_ops(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("sandbox");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(5));

    // create -> Running; destroy is outside the timed part.
    group.bench_function("create", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let sb = rt.create(SandboxOptions::default()).unwrap();
                total += t.elapsed();
                sb.kill().unwrap();
            }
            total
        })
    });

    group.bench_function("destroy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let sb = rt.create(SandboxOptions::default()).unwrap();
                let t = Instant::now();
                sb.kill().unwrap();
                total += t.elapsed();
            }
            total
        })
    });

    let sb = rt.create(SandboxOptions::default()).unwrap();
    group.bench_function("exec_round_trip", |b| {
        b.iter(|| {
            let out = sb.commands().run(["true"], RunOptions::default()).unwrap();
            assert!(out.success());
        })
    });
    sb.kill().unwrap();

    // Acquire with the pool refilling behind it; acquired sandboxes are
    // destroyed outside the timed part.
    let pool = Pool::new(
        &rt,
        PoolConfig::new(SandboxOptions::default())
            .warm(8)
            .max(16)
            .refill_threads(1),
    )
    .unwrap();
    assert!(pool.wait_ready(Duration::from_secs(60)));
    group.bench_function("pool_acquire", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let sb = pool.acquire().unwrap();
                total += t.elapsed();
                sb.kill().unwrap();
                // Let one refill land, as between real requests.
                std::thread::sleep(Duration::from_millis(3));
            }
            total
        })
    });
    pool.shutdown();
    group.finish();
}

criterion_group!(benches, sandbox_ops);
criterion_main!(benches);
