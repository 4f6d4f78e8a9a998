//! The crate's layers hold: `scripts/check-layers.py` passes on the real
//! tree and fails on a copy with one upward import or one cycle added.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(src: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo().join("scripts/check-layers.py"))
        .arg(src)
        .output()
        .expect("run python3 scripts/check-layers.py (python3 must be installed)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A copy of runtime/src to break.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

struct TempTree(PathBuf);

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn broken_copy(name: &str, file: &str, line: &str) -> TempTree {
    let dir = std::env::temp_dir().join(format!("sandlot-layers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&repo().join("runtime/src"), &dir);
    let path = dir.join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(line);
    std::fs::write(&path, text).unwrap();
    TempTree(dir)
}

#[test]
fn the_checker_checks_itself() {
    let out = Command::new("python3")
        .arg(repo().join("scripts/check-layers.py"))
        .arg("--self-test")
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_runtime_crate_imports_only_downwards_and_has_no_cycle() {
    let (ok, text) = check(&repo().join("runtime/src"));
    assert!(ok, "{text}");
    assert!(text.contains("no upward import, no cycle"), "{text}");
}

#[test]
fn an_upward_import_is_caught() {
    let tree = broken_copy(
        "upward",
        "kernel/userns.rs",
        "\n#[allow(unused_imports)]\nuse crate::api::runtime::Runtime;\n",
    );
    let (ok, text) = check(&tree.0);
    assert!(!ok, "an upward import passed:\n{text}");
    assert!(
        text.contains(
            "upward import: kernel/userns.rs (layer kernel) uses crate::api::runtime::Runtime"
        ),
        "{text}"
    );
}

#[test]
fn a_cycle_within_a_layer_is_caught() {
    // The reactor uses engine/sync.rs; sync.rs naming the reactor closes a
    // loop inside one layer.
    let tree = broken_copy(
        "cycle",
        "engine/sync.rs",
        "\n#[allow(dead_code)]\nfn reactor_token() -> crate::engine::reactor::Token { 0 }\n",
    );
    let (ok, text) = check(&tree.0);
    assert!(!ok, "a cycle passed:\n{text}");
    assert!(text.contains("import cycle between files:"), "{text}");
    assert!(text.contains("engine/sync.rs"), "{text}");
}
