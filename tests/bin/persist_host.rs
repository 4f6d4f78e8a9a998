//! A host process for the persistence tests, to be SIGKILLed: builds a
//! persistent runtime on STATE_DIR, creates COUNT sandboxes (metadata
//! `index=<i>`, a file /tmp/index holding `<i>`, an idle `sleep`), prints
//! `<id> <init pid>` for each, then `ready`, and waits to be killed.
//!
//! With `SANDLOT_TEST_EXEC_LOOP` set it then runs `echo ok` in its
//! sandboxes over and over, printing `ran <n>` every 10 commands, until a
//! command fails; then it prints `ended <state> <reason>` of that sandbox
//! and exits 0.
//!
//! usage: `sandlot-test-persist-host DATA_DIR STATE_DIR COUNT [TIMEOUT_MS]`

use std::io::Write;
use std::time::Duration;

use sandlot::{RunOptions, Runtime, SandboxOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sandlot-test-persist-host DATA_DIR STATE_DIR COUNT [TIMEOUT_MS]";
    let data_dir = args.next().expect(usage);
    let state_dir = args.next().expect(usage);
    let count: usize = args.next().expect(usage).parse().expect(usage);
    let timeout = args
        .next()
        .map(|ms| Duration::from_millis(ms.parse().expect(usage)));
    let template = std::env::var("SANDLOT_TEST_TEMPLATE").unwrap_or_else(|_| "base".into());
    let runtime = Runtime::builder()
        .data_dir(data_dir)
        .persistent(state_dir)
        .build()
        .expect("runtime");
    let mut out = std::io::stdout().lock();
    let mut sandboxes = Vec::new();
    for i in 0..count {
        let mut options = SandboxOptions::template(&template).metadata("index", i.to_string());
        if let Some(timeout) = timeout {
            options = options.timeout(timeout);
        }
        let sandbox = runtime.create(options).expect("create");
        sandbox
            .files()
            .write("/tmp/index", i.to_string().as_bytes())
            .expect("write /tmp/index");
        // A command of this process, in flight when it is killed.
        sandbox
            .commands()
            .spawn(["sleep", "1000"], RunOptions::default())
            .expect("spawn sleep");
        let pid = sandbox.info().init_pid.expect("init pid");
        writeln!(out, "{} {pid}", sandbox.id()).unwrap();
        sandboxes.push(sandbox);
    }
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    if std::env::var_os("SANDLOT_TEST_EXEC_LOOP").is_some() {
        let mut n = 0u64;
        loop {
            for sandbox in &sandboxes {
                let ran = sandbox.commands().run("echo ok", RunOptions::default());
                match ran {
                    Ok(out) if out.stdout_str() == "ok\n" => {}
                    _ => {
                        // The command failed as init went; the end itself
                        // is noticed by the io thread a moment later.
                        let deadline = std::time::Instant::now() + Duration::from_secs(5);
                        while sandbox.is_alive() && std::time::Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        let info = sandbox.info();
                        let reason = info.end_reason.map(|r| r.to_string()).unwrap_or_default();
                        writeln!(out, "ended {} {reason}", info.state).unwrap();
                        out.flush().unwrap();
                        std::process::exit(0);
                    }
                }
                n += 1;
                if n.is_multiple_of(10) {
                    writeln!(out, "ran {n}").unwrap();
                    out.flush().unwrap();
                }
            }
        }
    }
    drop(out);
    loop {
        std::thread::park();
    }
}
