//! Ordinary programs inside a sandbox, doing what shell scripts and tools
//! do on any Linux machine: each test is a difference from a plain
//! machine that users ran into, and fails if it comes back.
//!
//! Root and the real kernel.

// The escape suite's probe; this file uses only part of its helpers.
#[allow(dead_code)]
#[path = "probe/mod.rs"]
mod probe;

use sandlot::{RunOptions, Sandbox};
use sandlot_tests::oci::{layout, Layer, TempDir, TemplateGuard};
use sandlot_tests::{runtime, sandbox, sh};

/// Reopens each standard stream by name, the way `echo x > /dev/stderr`,
/// `tee /dev/stderr`, `cat /dev/stdin` and programs that reopen
/// `/proc/self/fd/N` do.
const REOPEN_STDIO: &str = "set -e
dd if=/proc/self/fd/0 bs=1 count=3 2>/dev/null
cat /dev/stdin
echo out > /dev/stdout
echo fd1 > /proc/self/fd/1
echo err > /dev/stderr
echo fd2 > /proc/self/fd/2
printf tee | tee /dev/stderr > /dev/null";

#[test]
fn stdio_can_be_reopened_by_name_by_every_user() {
    let rt = runtime();
    let sb = sandbox(&rt);
    // Root, the template's user, and a uid no /etc/passwd knows.
    for user in [None, Some("1000:1000"), Some("4242:4343")] {
        let mut options = RunOptions::default().stdin(b"abcdef".to_vec());
        if let Some(user) = user {
            options = options.user(user);
        }
        let result = sb.commands().run(REOPEN_STDIO, options).unwrap();
        assert!(
            result.success(),
            "as {user:?}: {:?}\nstdout: {}\nstderr: {}",
            result.exit,
            result.stdout_str(),
            result.stderr_str()
        );
        assert_eq!(result.stdout_str(), "abcdefout\nfd1\n", "as {user:?}");
        assert_eq!(result.stderr_str(), "err\nfd2\ntee", "as {user:?}");
    }
    // A command's pipes are its user's alone: another user inside cannot
    // reopen them through /proc (that also needs ptrace access, which
    // the other user lacks, whatever the pipe's owner).
    let spy = sb
        .commands()
        .spawn("sleep 30", RunOptions::default().user("1000:1000"))
        .unwrap();
    let pid = spy.pid();
    let peek = sb
        .commands()
        .run(
            format!("echo x > /proc/{pid}/fd/1"),
            RunOptions::default().user("4242:4343"),
        )
        .unwrap();
    assert!(
        !peek.success(),
        "another user wrote into a command's stdout"
    );
    spy.kill().unwrap();
}

/// Walks `/` inside with the probe: readdir's d_ino against lstat's
/// st_ino, and every st_dev against the root's, for every entry of the
/// sandbox's root filesystem. Returns the number of entries checked.
fn inodes_agree(sb: &Sandbox) -> u64 {
    probe::install(sb);
    let result = probe::run(sb, &["inodes", "/"]);
    let out = probe::answer_of(&["inodes", "/"], &result);
    let (problems, last) = out.rsplit_once('\n').unwrap_or(("", &out));
    assert!(
        problems.is_empty(),
        "readdir and stat disagree:\n{problems}"
    );
    last.strip_prefix("checked ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("probe said {out:?}"))
}

/// Entries in the lower layer only, in the upper layer only, and in
/// directories merged from both (copied up by a change).
const SPREAD_OVER_THE_LAYERS: &str = "set -e
mkdir -p /root/made/sub /tmp/t /etc/new.d /home/extra
touch /root/file /root/made/sub/deep /tmp/t/x /etc/new.d/conf
ln /root/file /root/hardlink
echo changed >> /etc/hostname
rm -f /etc/motd";

#[test]
fn readdir_and_stat_agree_on_inode_numbers_everywhere() {
    // The base template: one lower layer on the data dir's filesystem,
    // the upper on the sandbox's tmpfs.
    let rt = runtime();
    let sb = sandbox(&rt);
    sh(&sb, SPREAD_OVER_THE_LAYERS);
    let checked = inodes_agree(&sb);
    assert!(checked >= 20, "only {checked} entries checked");

    // An image of two layers (two lower directories) under the upper.
    let dir = TempDir::new("compat-inodes");
    let one = Layer::default()
        .busybox()
        .dir("etc")
        .file("etc/hostname", "one")
        .file("etc/motd", "hello")
        .dir("root")
        .dir("home")
        .dir("opt")
        .file("opt/one", "1");
    let two = Layer::default()
        .dir("etc")
        .file("etc/two", "2")
        .dir("opt")
        .file("opt/two", "2");
    let image = layout(&dir.0, &[one, two], serde_json::json!({}));
    let name = format!("compat-inodes-{}", std::process::id());
    let guard = TemplateGuard {
        runtime: runtime(),
        name: name.clone(),
    };
    guard.runtime.templates().import_oci(&name, image).unwrap();
    let sb = guard
        .runtime
        .create(sandlot::SandboxOptions::template(&name))
        .unwrap();
    sh(&sb, SPREAD_OVER_THE_LAYERS);
    let checked = inodes_agree(&sb);
    assert!(checked >= 20, "only {checked} entries checked");
}
