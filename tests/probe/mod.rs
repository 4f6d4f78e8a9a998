//! The escape tests' probe: `probe.c`, compiled once per test binary with
//! `cc -static`, copied into a sandbox, run with one subcommand; it prints
//! `ok <value>` or `err <ERRNO>` and the test judges.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sandlot::{CommandResult, RunOptions, Sandbox};

/// Where the probe lives inside a sandbox.
pub const PATH: &str = "/sandlot-probe";

/// Sandbox root's host uid (the default id range's base).
pub const SANDBOX_ROOT_UID: u32 = 100_000;

/// The compiled probe on the host.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe/probe.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("sandlot-probe");
        // A private name first: test binaries may compile it concurrently.
        let partial = dir.join(format!("sandlot-probe.{}", std::process::id()));
        let status = Command::new("cc")
            .args(["-static", "-O1", "-Wall", "-o"])
            .arg(&partial)
            .arg(&source)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "the escape tests compile {}: cc: {e} (install gcc and libc6-dev)",
                    source.display()
                )
            });
        assert!(
            status.success(),
            "cc -static {} failed (static glibc comes with libc6-dev)",
            source.display()
        );
        fs::rename(&partial, &out).unwrap();
        out
    })
}

/// Copies the probe into the sandbox's root through `/proc/<init>/root`,
/// owned by sandbox root, mode 0755.
pub fn install(sb: &Sandbox) {
    install_as(sb, PATH, 0o755);
}

/// Copies the probe to `path` inside the sandbox with `mode`, owned by
/// sandbox root.
pub fn install_as(sb: &Sandbox, path: &str, mode: u32) {
    let target = host_path(sb, path);
    // By a child process: a descriptor open for writing in this process
    // would be inherited by whatever another test thread forks meanwhile,
    // and exec of the probe would then fail with ETXTBSY.
    let status = Command::new("cp")
        .arg(binary())
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "copy the probe to {target:?}");
    chown(&target, Some(SANDBOX_ROOT_UID), Some(SANDBOX_ROOT_UID)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
}

/// `path` inside the sandbox, seen from the host.
pub fn host_path(sb: &Sandbox, path: &str) -> PathBuf {
    let pid = sb.info().init_pid.expect("init runs");
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// Runs `probe ARGS...` as root inside.
pub fn run(sb: &Sandbox, args: &[&str]) -> CommandResult {
    run_with(sb, args, RunOptions::default())
}

/// Runs `probe ARGS...` with `options`.
pub fn run_with(sb: &Sandbox, args: &[&str], options: RunOptions) -> CommandResult {
    let argv: Vec<String> = std::iter::once(PATH)
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    sb.commands()
        .run(argv, options)
        .unwrap_or_else(|e| panic!("run the probe {args:?}: {e}"))
}

/// The probe's answer (`ok 0`, `err EPERM`, ...); the probe must have exited
/// normally.
pub fn answer(sb: &Sandbox, args: &[&str]) -> String {
    answer_of(args, &run(sb, args))
}

/// The answer in `result`, checking the probe exited normally.
pub fn answer_of(args: &[&str], result: &CommandResult) -> String {
    assert!(
        result.success(),
        "probe {args:?} did not exit normally: {:?}\nstdout: {}\nstderr: {}",
        result.exit,
        result.stdout_str(),
        result.stderr_str()
    );
    result.stdout_str().trim().to_string()
}

/// Asserts the probe's answer for `args` is `expected`.
pub fn expect(sb: &Sandbox, args: &[&str], expected: &str) {
    let got = answer(sb, args);
    assert_eq!(got, expected, "probe {args:?}");
}

/// Asserts the attempt failed, whatever the errno.
pub fn expect_err(sb: &Sandbox, args: &[&str]) -> String {
    let got = answer(sb, args);
    assert!(got.starts_with("err "), "probe {args:?} succeeded: {got}");
    got
}
