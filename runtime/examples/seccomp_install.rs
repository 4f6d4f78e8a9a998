//! Measures the cost of installing the default seccomp profile (the kernel
//! verifies, JITs and emulates it for its allow-cache at install):
//!     cargo run --release -p sandlot --features testing --example seccomp_install
use std::time::Instant;

fn main() {
    let compiled = sandlot::SeccompProfile::default().compile_native().unwrap();
    println!(
        "instructions per program: {:?}",
        compiled.instruction_counts()
    );
    let mut samples = Vec::new();
    for _ in 0..300 {
        let (r, w) = nix::unistd::pipe().unwrap();
        // The child only installs, reports the elapsed time and exits.
        match unsafe_fork() {
            0 => {
                drop(r);
                sandlot::testing::set_no_new_privs().unwrap();
                let t = Instant::now();
                compiled.install().unwrap();
                let ns = t.elapsed().as_nanos() as u64;
                nix::unistd::write(&w, &ns.to_le_bytes()).unwrap();
                std::process::exit(0);
            }
            pid => {
                drop(w);
                let mut buf = [0u8; 8];
                nix::unistd::read(&r, &mut buf).unwrap();
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
                samples.push(u64::from_le_bytes(buf));
            }
        }
    }
    samples.sort();
    println!(
        "install: median {:.1} µs, p90 {:.1} µs",
        samples[150] as f64 / 1e3,
        samples[270] as f64 / 1e3
    );
}

fn unsafe_fork() -> i32 {
    #[allow(unsafe_code)]
    // SAFETY: the example has one thread; the child only makes syscalls.
    unsafe {
        libc::fork()
    }
}
