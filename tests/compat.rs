//! Ordinary programs inside a sandbox, doing what shell scripts and tools
//! do on any Linux machine: each test is a difference from a plain
//! machine that users ran into, and fails if it comes back.
//!
//! Root and the real kernel.

use sandlot::RunOptions;
use sandlot_tests::{runtime, sandbox};

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
