//! A host process for the persistence tests, to be SIGKILLed: builds a
//! persistent runtime on STATE_DIR, creates COUNT sandboxes (metadata
//! `index=<i>`, a file /tmp/index holding `<i>`, an idle `sleep`), prints
//! `<id> <init pid>` for each, then `ready`, and waits to be killed.
//!
//! usage: sandlot-test-persist-host DATA_DIR STATE_DIR COUNT [TIMEOUT_MS]

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
    }
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    drop(out);
    loop {
        std::thread::park();
    }
}
