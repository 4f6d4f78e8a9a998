//! Pool acquire latency while the pool refills behind it.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use sandlot::{Pool, PoolConfig, Runtime, Sandbox, SandboxOptions};

use crate::stats::Stats;

/// `n` acquires, one every 4 ms — a bit slower than one refill thread
/// creates, so the pool is always refilling yet rarely empty; acquired
/// sandboxes are destroyed on another thread, as a caller would after use.
pub fn acquire_while_refilling(rt: &Runtime, n: usize) -> Stats {
    let pool = Pool::new(
        rt,
        PoolConfig::new(SandboxOptions::default())
            .name("bench")
            .warm(8)
            .max(16)
            .refill_threads(1),
    )
    .expect("pool");
    assert!(
        pool.wait_ready(Duration::from_secs(60)),
        "pool did not fill"
    );
    let (done_tx, done_rx) = mpsc::channel::<Sandbox>();
    let reaper = std::thread::spawn(move || {
        for sandbox in done_rx {
            let _ = sandbox.kill();
        }
    });
    let mut stats = Stats::new();
    for _ in 0..n {
        let started = Instant::now();
        let sandbox = pool.acquire().expect("acquire");
        stats.add(started.elapsed());
        done_tx.send(sandbox).unwrap();
        std::thread::sleep(Duration::from_millis(4));
    }
    drop(done_tx);
    let _ = reaper.join();
    let s = pool.stats();
    eprintln!(
        "pool: {} hits, {} misses, {} replaced; refill median {:.2} ms, p99 {:.2} ms",
        s.hits,
        s.misses,
        s.replaced,
        s.refill_median.as_secs_f64() * 1e3,
        s.refill_p99.as_secs_f64() * 1e3
    );
    pool.shutdown();
    stats
}
