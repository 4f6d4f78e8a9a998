//! Warm pools against the real kernel: what acquire hands out is alive,
//! warmed and fresh; what the pool holds dies with `shutdown`. No timing
//! assertions. The census test counts the whole process, so the tests of
//! this binary take turns (`ONE_AT_A_TIME`).

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sandlot::{
    Acquire, ListFilter, Pool, PoolConfig, RunOptions, Runtime, Sandbox, SandboxOptions,
    POOL_METADATA_KEY,
};
use sandlot_tests::{census, eventually, process_exists, runtime, sh, warmed_runtime, Census};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const FILL: Duration = Duration::from_secs(30);

fn pool(rt: &Runtime, config: PoolConfig) -> Pool {
    let pool = Pool::new(rt, config).expect("start a pool");
    assert!(
        pool.wait_ready(FILL),
        "the pool did not fill: {:?}",
        pool.stats()
    );
    pool
}

/// Ids of the sandboxes waiting in the pool named `name`.
fn pooled_ids(rt: &Runtime, name: &str) -> Vec<String> {
    rt.list(&ListFilter::all().metadata(POOL_METADATA_KEY, name))
        .into_iter()
        .map(|info| info.id)
        .collect()
}

/// The census of this process, cgroups limited to this process's runtimes
/// (other processes on the machine may run sandlot too).
fn own_census() -> Census {
    let mut census = census();
    let mine = format!("sandlot-{}-", std::process::id());
    census
        .cgroup_dirs
        .retain(|d| d.to_string_lossy().contains(&mine));
    census
}

#[test]
fn acquire_returns_a_live_sandbox_with_fresh_deadline_and_metadata() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let options = SandboxOptions::default()
        .metadata("team", "a")
        .timeout(Duration::from_secs(120));
    let pool = pool(
        &rt,
        PoolConfig::new(options)
            .name("live")
            .warm(2)
            .idle_timeout(Duration::from_secs(3600)),
    );
    let sandbox = pool
        .acquire_with(Acquire::default().metadata("user_id", "u1"))
        .unwrap();
    assert!(sandbox.is_alive());
    assert_eq!(sh(&sandbox, "echo hi"), "hi\n");
    let metadata = sandbox.metadata();
    assert_eq!(metadata.get("user_id").map(String::as_str), Some("u1"));
    assert_eq!(metadata.get("team").map(String::as_str), Some("a"));
    assert!(
        !metadata.contains_key(POOL_METADATA_KEY),
        "an acquired sandbox still carries the pool marker: {metadata:?}"
    );
    // The pool's hour of idle lifetime was replaced by the options' 2 min.
    let left = sandbox
        .end_at()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left <= Duration::from_secs(120),
        "deadline not reset: {left:?}"
    );
    assert!(!pooled_ids(&rt, "live").contains(&sandbox.id().to_string()));
    let stats = pool.stats();
    assert_eq!(stats.hits, 1, "{stats:?}");
    sandbox.kill().unwrap();
    pool.shutdown();
}

#[test]
fn a_sandbox_killed_while_pooled_is_never_handed_out() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let pool = pool(&rt, PoolConfig::default().name("killed").warm(3).max(3));
    let victims = pooled_ids(&rt, "killed");
    assert_eq!(victims.len(), 3);
    // Kill every pooled init from outside, as an OOM kill or a crash
    // would, and acquire at once: the reactor may not have noticed yet.
    for id in &victims {
        let pid = rt.connect(id).unwrap().info().init_pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert!(eventually(Duration::from_secs(5), || !process_exists(pid)));
    }
    let mut acquired = Vec::new();
    for _ in 0..3 {
        let sandbox = pool.acquire().unwrap();
        assert!(
            !victims.contains(&sandbox.id().to_string()),
            "a killed sandbox was handed out"
        );
        assert!(sandbox.is_alive());
        assert_eq!(sh(&sandbox, "echo ok"), "ok\n");
        acquired.push(sandbox);
    }
    for sandbox in acquired {
        sandbox.kill().unwrap();
    }
    pool.shutdown();
}

#[test]
fn shutdown_leaves_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = warmed_runtime();
    let before = own_census();
    let pool = pool(
        &rt,
        PoolConfig::default()
            .name("census")
            .warm(4)
            .max(6)
            .refill_threads(2)
            .warmup("true"),
    );
    let taken = pool.acquire().unwrap();
    // Refills run while we shut down.
    let _ = pool.acquire().unwrap().kill();
    pool.shutdown();
    assert!(pooled_ids(&rt, "census").is_empty());
    // An acquired sandbox belongs to its caller, not to the pool.
    assert!(taken.is_alive());
    taken.kill().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || own_census() == before),
        "resources left after shutdown: before {before:?}, after {:?}",
        own_census()
    );
    assert!(rt.list(&ListFilter::all()).is_empty());
    assert!(pool.acquire().is_err(), "a shut-down pool still hands out");
}

#[test]
fn concurrent_acquires_get_distinct_sandboxes() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    // Fewer ready than acquirers: some acquires hit, the rest create.
    let pool = Arc::new(pool(
        &rt,
        PoolConfig::default()
            .name("concurrent")
            .warm(4)
            .max(8)
            .refill_threads(2),
    ));
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<thread::JoinHandle<Sandbox>> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                pool.acquire().unwrap()
            })
        })
        .collect();
    let sandboxes: Vec<Sandbox> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: BTreeSet<String> = sandboxes.iter().map(|s| s.id().to_string()).collect();
    assert_eq!(ids.len(), 8, "two acquirers got the same sandbox");
    for sandbox in &sandboxes {
        assert!(sandbox.is_alive());
    }
    let stats = pool.stats();
    assert_eq!(stats.hits + stats.misses, 8, "{stats:?}");
    for sandbox in sandboxes {
        sandbox.kill().unwrap();
    }
    pool.shutdown();
}

#[test]
fn warmup_ran_in_acquired_sandboxes() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let warmup = "echo warmed > /tmp/warmup && echo $SANDLOT_SANDBOX_ID >> /tmp/warmup";
    let pool = pool(
        &rt,
        PoolConfig::default()
            .name("warm")
            .warm(1)
            .max(1)
            .warmup(warmup),
    );
    let hit = pool.acquire().unwrap();
    let miss = pool.acquire().unwrap(); // before a refill: made on this thread
    for sandbox in [&hit, &miss] {
        let out = sh(sandbox, "cat /tmp/warmup");
        assert_eq!(out, format!("warmed\n{}\n", sandbox.id()));
    }
    let stats = pool.stats();
    assert!(stats.hits >= 1, "{stats:?}");
    hit.kill().unwrap();
    miss.kill().unwrap();
    pool.shutdown();

    // A warmup that fails never yields a sandbox.
    let failing = Pool::new(
        &rt,
        PoolConfig::default().name("bad").warm(1).warmup("exit 3"),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || failing
        .stats()
        .refill_failures
        > 0));
    assert!(failing.acquire().is_err());
    assert_eq!(failing.stats().ready, 0);
    failing.shutdown();
    // (One may be mid-warmup when shutdown starts; shutdown waits for it.)
    assert!(pooled_ids(&rt, "bad").is_empty());
}

#[test]
fn expired_sandboxes_are_replaced() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let idle = Duration::from_millis(1500);
    let pool = pool(
        &rt,
        PoolConfig::default()
            .name("expiring")
            .warm(2)
            .max(2)
            .idle_timeout(idle),
    );
    let first: BTreeSet<String> = pooled_ids(&rt, "expiring").into_iter().collect();
    assert_eq!(first.len(), 2);
    // Past the point where less than MIN_REMAINING is left of the idle
    // lifetime: these may no longer be handed out.
    thread::sleep(idle - sandlot::MIN_REMAINING + Duration::from_millis(100));
    let started = Instant::now();
    let sandbox = pool.acquire().unwrap();
    assert!(
        !first.contains(sandbox.id()),
        "a stale sandbox was handed out ({:?} after pooling)",
        started.elapsed()
    );
    assert!(sandbox.is_alive());
    // It now lives by the options' timeout, not the pool's idle one.
    thread::sleep(idle);
    assert!(
        sandbox.is_alive(),
        "the acquired sandbox kept its pool deadline"
    );
    assert_eq!(
        sandbox
            .commands()
            .run(["true"], RunOptions::default())
            .unwrap()
            .exit
            .code,
        Some(0)
    );
    assert!(pool.stats().replaced >= 1, "{:?}", pool.stats());
    sandbox.kill().unwrap();
    pool.shutdown();
}
