//! Sandboxes with networks leave nothing behind, on success or failure:
//! 500 created, used and destroyed, and creates that fail after the clone,
//! leave no descriptor, thread, mount, cgroup or child process in this
//! process, no sk_lookup program or netns link in the kernel, and no
//! network namespace (the kernel frees those asynchronously: the count is
//! watched until it settles). Its own process: the census counts the whole
//! process and the whole machine's BPF objects; the tests take turns.

use std::sync::Mutex;
use std::time::Duration;

use sandlot::testing::kernel_net::steering;
use sandlot::{Error, Network, NetworkConfig, Runtime, SandboxOptions};
use sandlot_tests::fakenet::{self, FakeNet};

const CYCLES: usize = 500;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, PartialEq, Eq)]
struct Census {
    process: sandlot_tests::Census,
    threads: usize,
    /// sk_lookup programs and netns links in the whole system.
    bpf: (usize, usize),
}

fn census() -> Census {
    Census {
        process: sandlot_tests::census(),
        threads: std::fs::read_dir("/proc/self/task").unwrap().count(),
        bpf: steering::census().unwrap(),
    }
}

/// Network namespaces alive in the kernel (its `net_namespace` slab).
fn namespaces() -> usize {
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap();
    let line = slabinfo
        .lines()
        .find(|l| l.starts_with("net_namespace "))
        .expect("net_namespace in /proc/slabinfo");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn runtime() -> Runtime {
    sandlot_tests::require_root();
    Runtime::builder()
        .data_dir(sandlot_tests::data_dir())
        .network(NetworkConfig {
            upstream_dns: Some(fakenet::DNS),
            ..NetworkConfig::default()
        })
        .build()
        .expect("build a runtime")
}

/// The census once the factory has refilled its ready namespaces (it
/// does so in the background after each create) and the kernel has let
/// go of the last links: equal to `before`, or the last reading.
fn settled(before: &Census) -> Census {
    let mut last = census();
    sandlot_tests::eventually(Duration::from_secs(10), || {
        last = census();
        last == *before
    });
    last
}

#[test]
fn five_hundred_networked_sandboxes_leave_nothing_behind() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _world = FakeNet::shared();
    let rt = runtime();
    let networks = [
        Network::internet(),
        Network::off().allow_out("web.test").unwrap(),
    ];
    // Once first: the engine, the factory and the template's layers start
    // with the first networked sandbox; that is not a leak.
    rt.create(sandlot_tests::options().network(networks[0].clone()))
        .unwrap()
        .kill()
        .unwrap();
    let namespaces_before = namespaces();
    let before = settled(&census());
    // Handles outlive their sandboxes here, as they may in a program: what
    // a sandbox holds must go at its destroy, not with its last handle.
    let mut handles = Vec::with_capacity(CYCLES);
    for i in 0..CYCLES {
        let network = networks[i % 2].clone();
        let sb = rt
            .create(sandlot_tests::options().network(network))
            .unwrap();
        if i % 25 == 0 {
            // Traffic through the proxy and the resolver, an exposed port
            // and a refused connection, all open when the sandbox dies.
            let out = sandlot_tests::sh(
                &sb,
                "python3 -c \"import socket,urllib.request; \
                 print(urllib.request.urlopen('http://web.test/').read().decode()); \
                 s=socket.socket(); s.connect(('web.test',80)); \
                 socket.socket().connect_ex(('10.0.0.1',80))\"",
            );
            assert!(out.contains("hello from 203.0.113.80:80"), "{out}");
            sb.expose_port(8000).unwrap();
            let _held = sb
                .command("python3")
                .args([
                    "-c",
                    "import socket,time; socket.create_connection(('web.test',80)); time.sleep(60)",
                ])
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        sb.kill().unwrap();
        handles.push(sb);
    }
    let after = settled(&before);
    assert_eq!(
        after, before,
        "{CYCLES} networked sandboxes left something behind"
    );
    // Other processes on the machine make namespaces too: allow some noise,
    // far below one per cycle.
    let gone = sandlot_tests::eventually(Duration::from_secs(60), || {
        namespaces() <= namespaces_before + CYCLES / 10
    });
    assert!(
        gone,
        "network namespaces: {namespaces_before} before, {} after {CYCLES} cycles",
        namespaces()
    );
}

/// A create that fails after the clone (the child's /proc mount, in a
/// template whose /proc is a file) with a network attached leaves nothing:
/// the namespace, its steering and the engine's sockets go with it.
#[test]
fn a_networked_create_that_fails_leaves_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let dir = sandlot_tests::data_dir().join("../broken-proc-net-rootfs");
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["etc", "bin", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("proc"), b"not a directory").unwrap();
    struct Cleanup<'a>(&'a Runtime, std::path::PathBuf);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.templates().remove("broken-proc-net");
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _cleanup = Cleanup(&rt, dir.clone());
    rt.templates().import_dir("broken-proc-net", &dir).unwrap();
    let options = || SandboxOptions::template("broken-proc-net").network(Network::internet());
    // The engine, the factory and the template's layers, once.
    let _ = rt.create(options());
    let before = settled(&census());
    for _ in 0..20 {
        // (A failed create returns no handle; its state is dropped with
        // the table entry, so forget() must release it.)
        match rt.create(options()) {
            Err(Error::Setup { step, .. }) => assert_eq!(step, "mount /proc"),
            other => panic!("expected the proc mount to fail, got {other:?}"),
        }
    }
    assert!(rt.list(&sandlot::ListFilter::all()).is_empty());
    assert_eq!(
        settled(&before),
        before,
        "failed creates left something behind"
    );
}
