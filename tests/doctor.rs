//! `sandlot doctor` on this machine: every feature sandlot relies on is
//! found, and each check names what it looked at.

use sandlot::doctor::{self, Status};
use sandlot_tests::{data_dir, require_root};

#[test]
fn doctor_finds_every_required_feature_on_a_supported_machine() {
    require_root();
    let report = doctor::check(&data_dir());
    assert!(report.ok(), "{report}");
    for name in [
        "root",
        "kernel",
        "user namespaces",
        "namespaces",
        "cgroups",
        "cgroup delegation",
        "overlayfs",
        "idmapped mounts",
        "base template",
        "clone3 and pidfds",
        "seccomp",
        "openat2",
        "memfd exec",
        "sandbox networks",
    ] {
        let check = report
            .get(name)
            .unwrap_or_else(|| panic!("no {name} check:\n{report}"));
        assert_ne!(check.status, Status::Fail, "{report}");
        assert!(!check.detail.is_empty(), "{name} says nothing");
    }
    // The cgroup check shows which version serves each controller.
    let cgroups = &report.get("cgroups").unwrap().detail;
    for controller in ["memory", "pids", "cpu", "freezer"] {
        assert!(cgroups.contains(&format!("{controller}: v")), "{cgroups}");
    }
    // The cgroups it made to check delegation are gone again.
    let ours = format!("sandlot-{}-", std::process::id());
    let left: Vec<_> = sandlot_tests::census()
        .cgroup_dirs
        .into_iter()
        .filter(|d| d.to_string_lossy().contains(&ours))
        .collect();
    assert!(left.is_empty(), "doctor left cgroups behind: {left:?}");
}
