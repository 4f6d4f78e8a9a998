//! A stand-in for a host application: builds a runtime, creates a sandbox,
//! starts `sleep` in it, prints init's pid and the sandbox id, then waits
//! (until the test kills it).

use std::io::Write;

fn main() {
    let data_dir = std::env::args()
        .nth(1)
        .expect("usage: sandlot-test-host DATA_DIR");
    if std::env::var_os("SANDLOT_TEST_DROP_ROOT").is_some() {
        // For the not-root test: become nobody first.
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        match sandlot::Runtime::builder().data_dir(data_dir).build() {
            Ok(_) => std::process::exit(0),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let runtime = sandlot::Runtime::builder()
        .data_dir(data_dir)
        .build()
        .expect("runtime");
    let sandbox = runtime
        .create(sandlot::SandboxOptions::default())
        .expect("sandbox");
    let _sleep = sandbox
        .commands()
        .spawn(["sleep", "1000"], sandlot::RunOptions::default())
        .expect("spawn sleep");
    let info = sandbox.info();
    println!("{} {}", info.init_pid.expect("init pid"), info.id);
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}
