//! Bad input gets a typed error naming what was wrong, and failures leave
//! nothing behind.

use std::time::Duration;

use sandlot::{Cmd, Error, Limits, RunOptions, SandboxOptions, State};
use sandlot_tests::{runtime, sandbox};

#[test]
fn bad_options_are_refused_before_anything_is_built() {
    let rt = runtime();
    let events = rt.events();
    let cases: Vec<(SandboxOptions, &str)> = vec![
        (SandboxOptions::default().timeout(Duration::ZERO), "timeout"),
        (
            SandboxOptions::default().timeout(Duration::from_secs(365 * 24 * 3600)),
            "timeout",
        ),
        (SandboxOptions::default().metadata("", "value"), "metadata"),
        (SandboxOptions::default().env("BAD=NAME", "x"), "env"),
        (
            SandboxOptions::default().hostname("no spaces allowed"),
            "hostname",
        ),
    ];
    for (options, option) in cases {
        match rt.create(options) {
            Err(Error::InvalidOptions {
                option: got,
                reason,
            }) => {
                assert_eq!(got, option, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{option}: expected InvalidOptions, got {other:?}"),
        }
    }
    match rt.create(SandboxOptions::default().limits(Limits {
        memory: 0,
        ..Limits::default()
    })) {
        Err(Error::Limits(e)) => assert_eq!(e.field(), "memory"),
        other => panic!("expected a limits error, got {other:?}"),
    }
    match rt.create(SandboxOptions::template("no-such-template")) {
        Err(Error::TemplateNotFound(name)) => assert_eq!(name, "no-such-template"),
        other => panic!("expected TemplateNotFound, got {other:?}"),
    }
    assert!(
        events.try_iter().next().is_none(),
        "a refused create emitted events"
    );
    assert!(rt.list(&sandlot::ListFilter::all()).is_empty());
}

#[test]
fn bad_commands_are_refused_with_the_reason() {
    let rt = runtime();
    let sb = sandbox(&rt);
    assert!(matches!(
        sb.commands().run(Cmd::Argv(vec![]), RunOptions::default()),
        Err(Error::EmptyCommand)
    ));
    assert!(matches!(
        sb.commands()
            .run(Cmd::Argv(vec![String::new()]), RunOptions::default()),
        Err(Error::EmptyCommand)
    ));
    let nul = sb.commands().run("echo \0", RunOptions::default());
    assert!(
        matches!(
            nul,
            Err(Error::InvalidOptions {
                option: "command",
                ..
            })
        ),
        "{nul:?}"
    );
    let user = sb
        .commands()
        .run("true", RunOptions::default().user("nobody-here"));
    assert!(
        matches!(user, Err(Error::InvalidOptions { option: "user", .. })),
        "{user:?}"
    );
    let unmapped = sb
        .commands()
        .run("true", RunOptions::default().user("70000"));
    assert!(
        matches!(unmapped, Err(Error::InvalidOptions { option: "user", .. })),
        "{unmapped:?}"
    );
    let env = sb
        .commands()
        .run("true", RunOptions::default().env("A=B", "c"));
    assert!(
        matches!(env, Err(Error::InvalidOptions { option: "env", .. })),
        "{env:?}"
    );
    let timeout = sb
        .commands()
        .run("true", RunOptions::default().timeout(Duration::ZERO));
    assert!(
        matches!(
            timeout,
            Err(Error::InvalidOptions {
                option: "timeout",
                ..
            })
        ),
        "{timeout:?}"
    );
    let huge = "x".repeat(300 * 1024);
    let too_long = sb
        .commands()
        .run(Cmd::Argv(vec!["echo".into(), huge]), RunOptions::default());
    assert!(
        matches!(
            too_long,
            Err(Error::InvalidOptions {
                option: "command",
                ..
            })
        ),
        "{too_long:?}"
    );
    // A cwd that does not exist fails to start, with the errno.
    let cwd = sb
        .commands()
        .run("true", RunOptions::default().cwd("/no/such/dir"));
    assert!(
        matches!(
            cwd,
            Err(Error::CommandNotFound { .. }) | Err(Error::Spawn { .. })
        ),
        "{cwd:?}"
    );
    // None of it hurt the sandbox.
    assert_eq!(sb.state(), State::Running);
    assert_eq!(sandlot_tests::sh(&sb, "echo fine").trim(), "fine");
}

/// Not root: the error says so (checked in a forked child that gives up
/// root before building a runtime).
#[test]
fn not_root_is_a_clear_error() {
    sandlot_tests::require_root();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandlot-test-host"))
        .arg(sandlot_tests::data_dir())
        .env("SANDLOT_TEST_DROP_ROOT", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("sandlot must run as root"), "{stderr}");
}
