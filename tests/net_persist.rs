//! A persistent sandbox's network across processes (issues 13 and 14):
//! served by its creator, closed while nobody serves it, served again by
//! the process that takes it over, never by two at once. Its own test
//! binary: persistent runtimes start monitor processes, whose spawn copies
//! this process's descriptor table for a moment — an exposed port closed
//! meanwhile would still accept in `net_sandbox`'s port test.

use sandlot::{Error, Network, NetworkConfig, Runtime};
use sandlot_tests::fakenet::{self, FakeNet};
use sandlot_tests::nettool::{get, ok, tool, TOOL};

/// A persistent runtime on `state` whose sandboxes resolve through the
/// fake internet's DNS.
fn persistent(state: &sandlot_tests::persist::StateDir) -> Runtime {
    Runtime::builder()
        .data_dir(sandlot_tests::data_dir())
        .persistent(&state.path)
        .network(NetworkConfig {
            upstream_dns: Some(fakenet::DNS),
            ..NetworkConfig::default()
        })
        .build()
        .expect("build a persistent runtime")
}

#[test]
fn a_persistent_sandbox_keeps_its_rules_and_is_served_again_by_the_process_that_takes_it_over() {
    let _world = FakeNet::shared();
    let state = sandlot_tests::persist::StateDir::new("net-rejoin");
    let first = persistent(&state);
    let sb = first
        .create(sandlot_tests::options().network(Network::off().allow_out("web.test").unwrap()))
        .expect("create a sandbox");
    sb.files().write("/tmp/nettool.py", TOOL).unwrap();
    let id = sb.id().to_string();
    assert!(ok(&get(&sb, "web.test", 80, "web.test", "/")));
    // Replaced at runtime: what a later process serves.
    let wider = Network::off()
        .allow_out("web.test")
        .unwrap()
        .allow_out("tls.test")
        .unwrap();
    sb.set_network(wider.clone()).unwrap();
    drop(sb);
    drop(first);

    // Nobody serves it now: closed, not open.
    let attach_only = Runtime::builder()
        .data_dir(sandlot_tests::data_dir())
        .persistent(&state.path)
        .attach_only()
        .build()
        .unwrap();
    let unserved = attach_only.connect(&id).expect("take it over");
    assert!(!ok(&get(&unserved, "web.test", 80, "web.test", "/")));
    assert!(!ok(&tool(&unserved, &["resolve", "web.test"])));
    drop(unserved);
    drop(attach_only);

    // A process that stays takes it over and serves it again, with the
    // rules as last set.
    let second = persistent(&state);
    let sb = second.connect(&id).expect("take it over");
    assert_eq!(sb.network(), wider);
    assert!(ok(&get(&sb, "web.test", 80, "web.test", "/")));
    assert!(ok(&tool(&sb, &["tls", "tls.test", "443", "tls.test"])));
    assert!(!ok(&tool(&sb, &["resolve", "other.test"])));
    // One server at a time: a third process sees it served elsewhere.
    let third = persistent(&state);
    let other = third.connect(&id).expect("take it over too");
    assert!(matches!(
        other.set_network(Network::internet()),
        Err(Error::Unsupported { .. })
    ));
    assert!(ok(&get(&other, "web.test", 80, "web.test", "/")));
    sb.kill().unwrap();
}
