//! Leak census of persistent sandboxes, in a test binary of its own: it
//! counts the descriptors of the whole test process, which another test's
//! runtime running at the same time would disturb.

use std::time::Duration;

use sandlot::{ListFilter, Reason, State};
use sandlot_tests::persist::{PersistHost, StateDir};
use sandlot_tests::{cgroup_dirs_containing, eventually, process_exists, sh};

const HOST: &str = env!("CARGO_BIN_EXE_sandlot-test-persist-host");

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn sandboxes_outlive_a_killed_creator_and_another_process_adopts_them() {
    let state = StateDir::new("outlive");
    let host = PersistHost::start(HOST, &state, 3, None);
    let made = host.sandboxes.clone();
    host.kill();
    for (id, pid) in &made {
        assert!(process_exists(*pid), "init of {id} died with its creator");
    }
    assert_eq!(state.monitors().len(), 3, "one monitor per sandbox");

    // The init binary's memfd stays loaded for the process's life: load it
    // before counting.
    drop(state.runtime());
    let fds_before = open_fds();
    let rt = state.runtime();
    let mut listed: Vec<String> = rt
        .list(&ListFilter::all())
        .into_iter()
        .map(|i| i.id)
        .collect();
    listed.sort();
    let mut ids: Vec<String> = made.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(
        listed, ids,
        "list shows every live sandbox of the state dir"
    );
    for (index, (id, pid)) in made.iter().enumerate() {
        let sandbox = rt.connect(id).expect("adopt");
        assert_eq!(sandbox.info().init_pid, Some(*pid));
        assert_eq!(sandbox.metadata()["index"], index.to_string());
        assert_eq!(sh(&sandbox, "cat /tmp/index"), index.to_string());
        assert_eq!(
            sandbox.files().read("/tmp/index").unwrap(),
            index.to_string().as_bytes()
        );
        // The creator's command still runs in it.
        assert!(sh(&sandbox, "ps -eo comm").contains("sleep"));
        sandbox.kill().expect("kill");
        assert_eq!(sandbox.end_reason(), Some(Reason::Killed));
        assert!(
            eventually(Duration::from_secs(5), || !process_exists(*pid)),
            "init {pid} outlived kill"
        );
        assert!(
            cgroup_dirs_containing(id).is_empty(),
            "cgroups of {id} left"
        );
    }
    assert!(
        state.sandbox_dirs().is_empty(),
        "state files left: {:?}",
        state.sandbox_dirs()
    );
    assert!(
        eventually(Duration::from_secs(5), || state.monitors().is_empty()),
        "monitors left"
    );
    let info = rt.inspect(&made[0].0).expect("a tombstone");
    assert_eq!(info.state, State::Destroyed);
    assert_eq!(info.end_reason, Some(Reason::Killed));
    drop(rt);
    assert_eq!(
        open_fds(),
        fds_before,
        "descriptors of the test process leaked"
    );
}
