//! Commands on a terminal (`commands().spawn_pty`), in real sandboxes: the
//! terminal is made inside (the sandbox's devpts), is the command's
//! controlling terminal, follows resizes, turns Ctrl-C into SIGINT for the
//! foreground job, and leaves nothing behind.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use sandlot::{ExitReason, ProcessEvent, PtyHandle, PtySize, RunOptions, Sandbox};
use sandlot_tests::{census, eventually, runtime, sandbox, warmed_runtime};

/// The census test counts the whole process's descriptors: it runs alone,
/// every other test shares.
static FD_CENSUS: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    FD_CENSUS.read().unwrap_or_else(|e| e.into_inner())
}

/// Reads the terminal until `pattern` appears in what it printed so far
/// (which is returned), or fails after 10 s with what came.
fn read_until(pty: &PtyHandle, seen: &mut String, pattern: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(pattern) {
        match pty.events().recv_deadline(deadline) {
            Ok(ProcessEvent::Stdout(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(other) => {
                panic!("waiting for {pattern:?}, got {other:?}; terminal so far: {seen:?}")
            }
            Err(e) => panic!("waiting for {pattern:?}: {e}; terminal so far: {seen:?}"),
        }
    }
}

fn spawn(sandbox: &Sandbox, cmd: &[&str], size: PtySize) -> PtyHandle {
    sandbox
        .commands()
        .spawn_pty(cmd, size, RunOptions::default())
        .unwrap_or_else(|e| panic!("spawn_pty {cmd:?}: {e}"))
}

#[test]
fn stdin_stdout_and_stderr_are_the_commands_controlling_terminal() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let pty = spawn(
        &sb,
        &[
            "sh",
            "-c",
            "for fd in 0 1 2; do test -t $fd && echo tty$fd; done; tty; echo TERM=$TERM; \
             read -r s < /proc/$$/stat; echo \"$s\"",
        ],
        PtySize::default(),
    );
    let pid = pty.pid();
    let result = pty.wait().expect("wait");
    assert!(result.success(), "{result:?}");
    let out = result.stdout_str().replace("\r\n", "\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["tty0", "tty1", "tty2"], "{out:?}");
    assert!(
        lines[3].starts_with("/dev/pts/"),
        "the sandbox's own devpts: {out:?}"
    );
    assert_eq!(lines[4], "TERM=xterm-256color");
    let stat: Vec<&str> = lines[5][lines[5].rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    assert_eq!(stat[3], pid.to_string(), "leads its own session: {stat:?}");
    assert_ne!(stat[4], "0", "has a controlling terminal");
    assert_eq!(stat[5], pid.to_string(), "is the foreground group");
}

#[test]
fn the_terminal_of_an_unprivileged_user_is_the_users() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let pty = sb
        .commands()
        .spawn_pty(
            [
                "sh",
                "-c",
                "stat -c %u \"$(tty)\"; id -u; cat /proc/self/fd/0 < /dev/null; echo reopened",
            ],
            PtySize::default(),
            RunOptions::default().user("1000:1000"),
        )
        .unwrap();
    let result = pty.wait().unwrap();
    assert!(result.success(), "{result:?}");
    assert_eq!(
        result.stdout_str().replace("\r\n", "\n"),
        "1000\n1000\nreopened\n"
    );
}

#[test]
fn stty_size_follows_resize() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let pty = spawn(
        &sb,
        &[
            "sh",
            "-c",
            "trap 'echo winch' WINCH; stty size; read -r line; stty size",
        ],
        PtySize::new(24, 80),
    );
    let mut seen = String::new();
    read_until(&pty, &mut seen, "24 80\r\n");
    pty.resize(PtySize::new(40, 132)).unwrap();
    assert_eq!(pty.size().unwrap(), PtySize::new(40, 132));
    read_until(&pty, &mut seen, "winch");
    pty.write(b"go\r").unwrap();
    read_until(&pty, &mut seen, "40 132\r\n");
    assert!(pty.wait().unwrap().success());
    assert!(matches!(
        pty_err(&sb, PtySize::new(0, 80)),
        sandlot::Error::InvalidOptions {
            option: "pty size",
            ..
        }
    ));
}

fn pty_err(sb: &Sandbox, size: PtySize) -> sandlot::Error {
    sb.commands()
        .spawn_pty("true", size, RunOptions::default())
        .expect_err("a zero-sized terminal")
}

#[test]
fn ctrl_c_interrupts_the_foreground_job_and_exit_ends_the_shell() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let pty = spawn(
        &sb,
        &["bash", "--norc", "--noprofile", "-i"],
        PtySize::default(),
    );
    // The job prints its marker itself, so once it shows, the job is the
    // terminal's foreground process group.
    pty.write(b"sh -c 'echo job-started; exec sleep 100'\r")
        .unwrap();
    let mut seen = String::new();
    // (The echo of the typed line has "job-started;".)
    read_until(&pty, &mut seen, "job-started\r\n");
    pty.write(b"\x03").unwrap();
    pty.write(b"echo status=$?\r").unwrap();
    read_until(&pty, &mut seen, "status=130");
    pty.write(b"exit 7\r").unwrap();
    let result = pty.wait().unwrap();
    assert_eq!(result.exit.code, Some(7), "{seen:?}");
}

#[test]
fn everything_printed_before_the_exit_arrives() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    // Output written just before the exit is still in the terminal's
    // buffers when init reports the exit.
    for _ in 0..5 {
        let pty = spawn(&sb, &["seq", "1", "30000"], PtySize::default());
        let result = pty.wait().unwrap();
        assert!(result.success());
        let out = result.stdout_str();
        let last = out.trim_end().rsplit("\r\n").next().unwrap();
        assert_eq!(last, "30000");
        assert_eq!(out.matches("\r\n").count(), 30000);
    }
}

#[test]
fn a_killed_terminal_command_reports_its_signal_and_input_after_the_end_fails() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let pty = spawn(&sb, &["sleep", "100"], PtySize::default());
    pty.kill().unwrap();
    let mut pty = pty;
    let exit = pty
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("ended");
    assert_eq!(exit.signal, Some(sandlot::Signal::KILL));
    assert_eq!(exit.reason, ExitReason::Signaled);
    assert!(pty.write(b"hello\r").is_err());
}

#[test]
fn terminals_and_their_sandboxes_leave_nothing_behind() {
    let _alone = FD_CENSUS.write().unwrap_or_else(|e| e.into_inner());
    let rt = warmed_runtime();
    let before = census();
    let sb = sandbox(&rt);
    // One that ends by itself, one killed with its sandbox while it runs
    // (holding a background child on the terminal).
    let done = spawn(&sb, &["echo", "hi"], PtySize::default());
    assert!(done.wait().unwrap().success());
    let running = spawn(
        &sb,
        &["sh", "-c", "sleep 100 & sleep 100"],
        PtySize::default(),
    );
    let mut seen = String::new();
    running.write(b"x").unwrap();
    read_until(&running, &mut seen, "x");
    sb.kill().unwrap();
    let mut running = running;
    let exit = running
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("ended with the sandbox");
    assert_eq!(exit.reason, ExitReason::SandboxDestroyed);
    drop(running);
    assert!(
        eventually(Duration::from_secs(5), || census() == before),
        "left behind: before {before:?}, after {:?}",
        census()
    );
}

#[test]
fn input_cannot_be_injected_into_the_commands_own_terminal() {
    // SECURITY.md S11 on the terminal spawn_pty made: the kernel lets a
    // process push input into its controlling terminal; seccomp does not.
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let pty = spawn(
        &sb,
        &[
            "python3",
            "-c",
            "import fcntl, termios\n\
             try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x')\n    print('injected')\n\
             except PermissionError:\n    print('refused')",
        ],
        PtySize::default(),
    );
    let result = pty.wait().unwrap();
    assert_eq!(result.stdout_str().trim(), "refused");
}
