//! Capability drops on the real kernel, in forked children (as real root
//! here, which is the harder case: the sandbox child only holds
//! capabilities of its own user namespace).
//!
//! Run as root: `cargo test -p sandlot --test capabilities`.

#[path = "../src/sys/testing.rs"]
mod forked;

use std::os::fd::{AsRawFd, OwnedFd};

use sandlot::testing::{set_no_new_privs, CapPlan};

use forked::{
    fork_lock, in_child_with_output, private_mount_namespace, require_root, try_mount_tmpfs_on_tmp,
    Outcome,
};

/// Copies `/proc/self/status` into `out` with system calls only.
fn send_status(out: &OwnedFd) -> Result<(), i32> {
    // SAFETY: a valid C string; the fd is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/status".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        // SAFETY: the first `n` bytes of `buf` are initialised.
        unsafe { libc::write(out.as_raw_fd(), buf.as_ptr().cast(), n as usize) };
    }
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    Ok(())
}

/// A hexadecimal or decimal field of `/proc/<pid>/status`.
fn field(status: &str, name: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in status:\n{status}"))
        .trim();
    if name.starts_with("Cap") {
        u64::from_str_radix(line, 16).unwrap()
    } else {
        line.parse().unwrap()
    }
}

/// Child exit codes: 0 = all steps ran; 10+step = a step failed.
fn drop_and_report(plan: &CapPlan, out: &OwnedFd, then_switch_uid: bool) -> i32 {
    // 1. As full root, in a private mount namespace: mounting works.
    if private_mount_namespace().is_err() {
        return 11;
    }
    if try_mount_tmpfs_on_tmp().is_err() {
        return 12;
    }
    // 2. The sandbox's last steps.
    if plan.apply().is_err() {
        return 13;
    }
    if set_no_new_privs().is_err() {
        return 14;
    }
    // 3. CAP_SYS_ADMIN is really gone, without any seccomp filter.
    if try_mount_tmpfs_on_tmp() != Err(libc::EPERM) {
        return 15;
    }
    // 4. A kept capability still works: become an unprivileged user.
    if then_switch_uid {
        // SAFETY: plain integer arguments (and a null list for
        // setgroups with size 0).
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(1000, 1000, 1000) == 0
                && libc::setresuid(1000, 1000, 1000) == 0
        };
        if !ok {
            return 16;
        }
    }
    if send_status(out).is_err() {
        return 17;
    }
    0
}

fn plan() -> CapPlan {
    CapPlan::sandbox_default().expect("plan for this kernel")
}

#[test]
fn drop_caps_leaves_exactly_the_planned_sets() {
    require_root("drop_caps_leaves_exactly_the_planned_sets");
    let _lock = fork_lock();
    let plan = plan();
    let (outcome, status) = in_child_with_output(|out| drop_and_report(&plan, out, false));
    assert_eq!(outcome, Outcome::Exited(0));
    let status = String::from_utf8(status).unwrap();
    assert_eq!(field(&status, "CapBnd"), plan.keep_mask(), "bounding");
    assert_eq!(field(&status, "CapPrm"), plan.keep_mask(), "permitted");
    assert_eq!(field(&status, "CapEff"), plan.keep_mask(), "effective");
    assert_eq!(field(&status, "CapInh"), 0, "inheritable");
    assert_eq!(field(&status, "CapAmb"), 0, "ambient");
    assert_eq!(field(&status, "NoNewPrivs"), 1);
    // Spelled out: the default keeps these eight and nothing else.
    assert_eq!(plan.keep_mask(), 0x4fb);
}

#[test]
fn a_non_root_user_after_the_drop_has_no_capabilities() {
    require_root("a_non_root_user_after_the_drop_has_no_capabilities");
    let _lock = fork_lock();
    let plan = plan();
    let (outcome, status) = in_child_with_output(|out| drop_and_report(&plan, out, true));
    assert_eq!(outcome, Outcome::Exited(0));
    let status = String::from_utf8(status).unwrap();
    assert_eq!(field(&status, "CapPrm"), 0);
    assert_eq!(field(&status, "CapEff"), 0);
    assert_eq!(field(&status, "CapBnd"), plan.keep_mask());
    assert_eq!(field(&status, "NoNewPrivs"), 1);
}

#[test]
fn full_child_sequence_then_exec() {
    // The runtime's order: caps, no_new_privs, seccomp (which needs no
    // CAP_SYS_ADMIN once no_new_privs is set), exec.
    require_root("full_child_sequence_then_exec");
    let _lock = fork_lock();
    let plan = plan();
    let seccomp = sandlot::SeccompProfile::default().compile_native().unwrap();
    let (outcome, _) = in_child_with_output(|_| {
        if plan.apply().is_err() {
            return 21;
        }
        if set_no_new_privs().is_err() {
            return 22;
        }
        if seccomp.install().is_err() {
            return 23;
        }
        let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        // SAFETY: null-terminated arrays of valid C strings.
        unsafe { libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        24
    });
    assert_eq!(outcome, Outcome::Exited(0));
}
