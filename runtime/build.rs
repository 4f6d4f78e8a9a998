//! Builds `sandlot-init` as a static binary and hands its path to the
//! library, which embeds it (`include_bytes!`) and loads it into a sealed
//! memfd at run time. A newcomer runs one `cargo build`, not two.
//!
//! The nested cargo uses its own target directory (the outer one is locked
//! while this script runs) and passes `+crt-static` only to the init crate's
//! target, never to build scripts. `SANDLOT_INIT_BINARY` points at a
//! prebuilt init instead (for packagers and cross builds).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SANDLOT_INIT_BINARY");
    if let Ok(prebuilt) = env::var("SANDLOT_INIT_BINARY") {
        println!("cargo:rustc-env=SANDLOT_INIT_PATH={prebuilt}");
        return;
    }

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    for watched in [
        "init/src",
        "init/Cargo.toml",
        "init/proto/src",
        "init/proto/Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target = env::var("TARGET").unwrap();
    let target_dir = out_dir.join("init-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--package",
            "sandlot-init",
            "--profile",
            "init",
            "--target",
        ])
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags of the outer build describe the outer build; start clean.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");

    let status = cmd.status().expect("run cargo to build sandlot-init");
    assert!(status.success(), "building sandlot-init failed: {status}");

    let binary = target_dir.join(&target).join("init").join("sandlot-init");
    assert!(
        Path::new(&binary).exists(),
        "{} was not built",
        binary.display()
    );
    println!("cargo:rustc-env=SANDLOT_INIT_PATH={}", binary.display());
}
