//! A command's stdio between this terminal (or pipe) and the sandbox, for
//! `sandlot run` and `sandlot exec`, and its exit code.

use std::io::{Read, Write};
use std::process::ExitCode;

use sandlot::{CommandExit, CommandHandle, Error, ExitReason, ProcessEvent, Reason, Sandbox};

/// Exit status when sandlot itself fails (as docker and crun use it).
pub const EXIT_SANDLOT_ERROR: u8 = 125;
/// Exit status when the program does not exist in the sandbox.
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit status when the sandbox's timeout ended the run (as timeout(1)).
pub const EXIT_TIMED_OUT: u8 = 124;

/// Copies our stdin to the command (if it has a stdin pipe) and its output
/// to our stdout and stderr, as it comes; returns how it ended.
pub fn forward(sandbox: &Sandbox, mut process: CommandHandle) -> Result<CommandExit, Error> {
    if let Some(mut stdin) = process.take_stdin() {
        // Detached: it may block on a terminal that never sends EOF.
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            let mut input = std::io::stdin().lock();
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || stdin.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for event in process.events().iter() {
        match event {
            ProcessEvent::Stdout(chunk) => {
                let _ = stdout.write_all(&chunk).and_then(|()| stdout.flush());
            }
            ProcessEvent::Stderr(chunk) => {
                let _ = stderr.write_all(&chunk).and_then(|()| stderr.flush());
            }
            ProcessEvent::Exit(exit) => return Ok(exit),
        }
    }
    Err(Error::Protocol {
        id: sandbox.id().to_string(),
        reason: "the command ended without an exit report".into(),
    })
}

/// The exit code of a command that ended as `exit`: its own; 128+N for
/// signal N; 124 when its time limit or the sandbox's timeout ended it.
pub fn exit_code(sandbox: &Sandbox, exit: &CommandExit) -> ExitCode {
    let sandbox_timed_out = sandbox.end_reason() == Some(Reason::Timeout);
    if exit.reason == ExitReason::TimedOut
        || (sandbox_timed_out && exit.reason == ExitReason::SandboxDestroyed)
    {
        return ExitCode::from(EXIT_TIMED_OUT);
    }
    ExitCode::from(exit.shell_code().clamp(0, 255) as u8)
}
