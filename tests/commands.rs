//! Commands as a user drives them: exit codes, signals, stdin, big and
//! streamed output, timeouts, cwd/env/user, list and kill_all.

use std::time::Duration;

use sandlot::{Cmd, Error, ExitReason, ProcessEvent, RunOptions};
use sandlot_tests::{eventually, runtime, sandbox, sh};

#[test]
fn exit_codes_pass_through() {
    let rt = runtime();
    let sb = sandbox(&rt);
    for code in [0, 1, 42, 255] {
        let out = sb
            .commands()
            .run(format!("exit {code}"), RunOptions::default())
            .unwrap();
        assert_eq!(out.exit_code(), Some(code));
        assert_eq!(out.exit.reason, ExitReason::Exited);
    }
}

#[test]
fn signals_end_commands_and_are_reported() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let out = sb
        .commands()
        .run("kill -TERM $$", RunOptions::default())
        .unwrap();
    assert_eq!(
        (out.exit.code, out.exit.signal),
        (None, Some(sandlot::Signal::TERM))
    );
    assert_eq!(out.exit.reason, ExitReason::Signaled);
    assert_eq!(out.exit.shell_code(), 128 + libc::SIGTERM);

    let sleeper = sb
        .commands()
        .spawn(["sleep", "100"], RunOptions::default())
        .unwrap();
    sleeper.signal(sandlot::Signal::USR1).unwrap();
    let out = sleeper.wait().unwrap();
    assert_eq!(out.exit.signal, Some(sandlot::Signal::USR1));
}

#[test]
fn kill_ends_the_whole_process_group() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let handle = sb
        .commands()
        .spawn("sleep 100 & echo started; wait", RunOptions::default())
        .unwrap();
    // Wait until the background child exists.
    let first = handle
        .events()
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(first, ProcessEvent::Stdout(b"started\n".to_vec()));
    handle.kill().unwrap();
    let out = handle.wait().unwrap();
    assert_eq!(out.exit.signal, Some(sandlot::Signal::KILL));
    assert!(
        eventually(Duration::from_secs(5), || sh(&sb, "pgrep -x sleep || true")
            .is_empty()),
        "the background sleep survived the group kill"
    );
}

#[test]
fn stdin_round_trips() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let out = sb
        .commands()
        .run(
            ["sha256sum"],
            RunOptions::default().stdin(vec![7u8; 1 << 20]),
        )
        .unwrap();
    let expected = {
        let hash = std::process::Command::new("sh")
            .args([
                "-c",
                "head -c 1048576 /dev/zero | tr '\\0' '\\7' | sha256sum",
            ])
            .output()
            .unwrap();
        String::from_utf8(hash.stdout).unwrap()
    };
    assert_eq!(out.stdout_str(), expected);

    let mut cat = sb
        .commands()
        .spawn(["cat"], RunOptions::default().stdin_piped())
        .unwrap();
    cat.write_stdin(b"line one\n").unwrap();
    assert_eq!(
        cat.events().recv_timeout(Duration::from_secs(10)).unwrap(),
        ProcessEvent::Stdout(b"line one\n".to_vec())
    );
    cat.write_stdin(b"line two\n").unwrap();
    cat.close_stdin();
    let rest = cat.wait().unwrap();
    assert_eq!(rest.stdout, b"line two\n");
    assert!(rest.success());
}

#[test]
fn large_output_arrives_intact() {
    let rt = runtime();
    const SIZE: usize = 64 << 20;
    // Above the 16 MiB that `run` collects by default.
    let sb = rt
        .create(
            sandlot_tests::options()
                .exec_limits(sandlot::ExecLimits::default().max_output_bytes(SIZE as u64)),
        )
        .unwrap();
    let out = sb
        .commands()
        .run(
            "head -c 67108864 /dev/zero | tr '\\0' 'x'; head -c 1000 /dev/zero | tr '\\0' 'e' >&2",
            RunOptions::default(),
        )
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), SIZE);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
    assert_eq!(out.stderr, vec![b'e'; 1000]);
}

#[test]
fn output_streams_before_the_command_ends() {
    let rt = runtime();
    let sb = sandbox(&rt);
    // The command only finishes after we have seen its first line and
    // answered: output must be forwarded as it is written.
    let mut handle = sb
        .commands()
        .spawn(
            "echo first; echo warn >&2; read reply; echo \"second $reply\"",
            RunOptions::default().stdin_piped(),
        )
        .unwrap();
    let mut seen_stdout = Vec::new();
    let mut seen_stderr = Vec::new();
    while seen_stdout != b"first\n" || seen_stderr != b"warn\n" {
        match handle
            .events()
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
        {
            ProcessEvent::Stdout(chunk) => seen_stdout.extend(chunk),
            ProcessEvent::Stderr(chunk) => seen_stderr.extend(chunk),
            ProcessEvent::Exit(exit) => panic!("exited before reading stdin: {exit:?}"),
        }
    }
    handle.write_stdin(b"ok\n").unwrap();
    let events: Vec<ProcessEvent> = handle.events().iter().collect();
    assert_eq!(events[0], ProcessEvent::Stdout(b"second ok\n".to_vec()));
    assert!(matches!(events.last(), Some(ProcessEvent::Exit(exit)) if exit.success()));
    assert_eq!(events.len(), 2, "{events:?}");
}

#[test]
fn a_command_timeout_kills_its_process_group_and_says_so() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let out = sb
        .commands()
        .run(
            "sleep 100 & echo started; sleep 100",
            RunOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(out.timed_out(), "{:?}", out.exit);
    assert_eq!(out.exit.signal, Some(sandlot::Signal::KILL));
    assert_eq!(out.stdout_str(), "started\n");
    assert!(
        eventually(Duration::from_secs(5), || sh(&sb, "pgrep -x sleep || true")
            .is_empty()),
        "a process of the timed-out group survived"
    );
    // The sandbox itself is fine.
    assert_eq!(sh(&sb, "echo alive").trim(), "alive");
}

#[test]
fn cwd_env_and_user_apply_per_command() {
    let rt = runtime();
    let sb = rt
        .create(
            sandlot::SandboxOptions::default()
                .env("FROM_SANDBOX", "s")
                .env("BOTH", "sandbox"),
        )
        .unwrap();
    let out = sb
        .commands()
        .run(
            "pwd; id -u; id -g; echo $HOME $USER $FROM_SANDBOX $FROM_CMD $BOTH",
            RunOptions::default()
                .cwd("/tmp")
                .user("user")
                .env("FROM_CMD", "c")
                .env("BOTH", "command"),
        )
        .unwrap();
    assert_eq!(
        out.stdout_str(),
        "/tmp\n1000\n1000\n/home/user user s c command\n"
    );
    // Defaults: root in its home, the sandbox id in the environment.
    assert_eq!(
        sh(&sb, "pwd; id -un; echo $SANDLOT_SANDBOX_ID"),
        format!("/root\nroot\n{}\n", sb.id())
    );
    // A numeric user that /etc/passwd does not know.
    let out = sb
        .commands()
        .run(
            "id -u; id -g",
            RunOptions::default().user("4242:4343").cwd("/"),
        )
        .unwrap();
    assert_eq!(out.stdout_str(), "4242\n4343\n");
}

#[test]
fn commands_can_be_listed_and_killed_all_at_once() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let a = sb
        .commands()
        .spawn(["sleep", "100"], RunOptions::default())
        .unwrap();
    let b = sb
        .commands()
        .spawn(Cmd::Shell("sleep 200".into()), RunOptions::default())
        .unwrap();
    let listed = sb.commands().list();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].argv, vec!["sleep", "100"]);
    assert_eq!(listed[0].pid, Some(a.pid()));
    assert_eq!(listed[1].pid, Some(b.pid()));
    assert_eq!(sb.state(), sandlot::State::Active);
    sb.commands().kill_all().unwrap();
    assert_eq!(a.wait().unwrap().exit.signal, Some(sandlot::Signal::KILL));
    assert_eq!(b.wait().unwrap().exit.signal, Some(sandlot::Signal::KILL));
    assert!(sb.commands().list().is_empty());
    assert_eq!(sb.state(), sandlot::State::Running);
    // init survived kill_all.
    assert_eq!(sh(&sb, "echo still here").trim(), "still here");
}

#[test]
fn a_missing_program_is_an_error_not_a_hang() {
    let rt = runtime();
    let sb = sandbox(&rt);
    match sb
        .commands()
        .run(["no-such-program"], RunOptions::default())
    {
        Err(Error::CommandNotFound { program }) => assert_eq!(program, "no-such-program"),
        other => panic!("expected CommandNotFound, got {other:?}"),
    }
    match sb.commands().run(["/etc/passwd"], RunOptions::default()) {
        Err(Error::Spawn { errno, .. }) => assert_eq!(errno, nix::errno::Errno::EACCES),
        other => panic!("expected a spawn error, got {other:?}"),
    }
    // Through the shell it is the shell's 127, as in a terminal.
    let out = sb
        .commands()
        .run("no-such-program", RunOptions::default())
        .unwrap();
    assert_eq!(out.exit_code(), Some(127));
    assert!(sb.commands().list().is_empty());
    assert_eq!(sb.state(), sandlot::State::Running);
}

#[test]
fn commands_report_their_cost() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let out = sb
        .commands()
        .run(
            [
                "python3",
                "-c",
                "x = bytearray(64 << 20); sum(range(3_000_000))",
            ],
            RunOptions::default(),
        )
        .unwrap();
    assert!(out.success(), "{}", out.stderr_str());
    assert!(out.exit.cpu_user > Duration::ZERO);
    assert!(out.exit.peak_rss_bytes >= 64 << 20, "{:?}", out.exit);
    assert!(out.exit.duration >= out.exit.cpu_user / 2);
}
