//! The filters on the real kernel, each in a forked child. Every denial is
//! paired with a control: the same call without the filter must not already
//! fail with the errno the filter gives, or the test would prove nothing.
//!
//! Run as root: `cargo test -p sandlot --test seccomp_filter`.

#[path = "../src/sys/testing.rs"]
mod forked;

use std::sync::OnceLock;

use sandlot::testing::{set_no_new_privs, CompiledSeccomp};
use sandlot::SeccompProfile;

use forked::{exit_code, fork_lock, in_child, raw_syscall, require_root, Outcome, PANICKED};

/// Exit codes of a child whose setup failed (above every errno).
const NO_NEW_PRIVS_FAILED: i32 = 200;
const INSTALL_FAILED: i32 = 201;

fn default_filter() -> &'static CompiledSeccomp {
    static COMPILED: OnceLock<CompiledSeccomp> = OnceLock::new();
    COMPILED.get_or_init(|| SeccompProfile::default().compile_native().unwrap())
}

/// Runs `f` in a child, under the default filter if `filtered`.
fn child(filtered: bool, f: impl FnOnce() -> i32) -> Outcome {
    let filter = default_filter(); // compiled before fork
    in_child(|| {
        if filtered {
            if set_no_new_privs().is_err() {
                return NO_NEW_PRIVS_FAILED;
            }
            if filter.install().is_err() {
                return INSTALL_FAILED;
            }
        }
        f()
    })
}

/// The system call's errno (0 on success) without and with the filter.
fn control_and_filtered(nr: libc::c_long, args: [u64; 6]) -> (Outcome, Outcome) {
    let run = || {
        // SAFETY: callers pass integers, null pointers or pointers to
        // live test data, and the call runs in a throwaway child.
        exit_code(unsafe { raw_syscall(nr, args) })
    };
    (child(false, run), child(true, run))
}

fn expect_denied(name: &str, nr: libc::c_long, args: [u64; 6], errno: i32) {
    let (control, filtered) = control_and_filtered(nr, args);
    assert_ne!(
        control,
        Outcome::Exited(errno),
        "{name}: the kernel already answers {errno} without the filter; the test proves nothing"
    );
    assert_eq!(
        filtered,
        Outcome::Exited(errno),
        "{name} under the filter (control {control:?})"
    );
}

#[test]
fn mount_is_eperm() {
    require_root("mount_is_eperm");
    let _lock = fork_lock();
    // A mount point that does not exist: the control fails with ENOENT
    // and mounts nothing.
    let (target, fstype) = (c"/sandlot-no-such-dir", c"tmpfs");
    let args = [
        fstype.as_ptr() as u64,
        target.as_ptr() as u64,
        fstype.as_ptr() as u64,
        0,
        0,
        0,
    ];
    let (control, filtered) = control_and_filtered(libc::SYS_mount, args);
    assert_eq!(control, Outcome::Exited(libc::ENOENT));
    assert_eq!(filtered, Outcome::Exited(libc::EPERM));
}

#[test]
fn unshare_and_clone_into_a_new_user_namespace_are_eperm() {
    require_root("unshare_and_clone_into_a_new_user_namespace_are_eperm");
    let _lock = fork_lock();
    let newuser = libc::CLONE_NEWUSER as u64;
    let (control, filtered) = control_and_filtered(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]);
    assert_eq!(control, Outcome::Exited(0));
    assert_eq!(filtered, Outcome::Exited(libc::EPERM));

    // clone(CLONE_NEWUSER | SIGCHLD) with no new stack behaves like
    // fork: the grandchild exits at once, the child reports.
    let clone_newuser = || {
        let flags = newuser | libc::SIGCHLD as u64;
        // SAFETY: fork-like clone (no CLONE_VM, no new stack): the new
        // process gets a copy of the address space and leaves at once
        // with `_exit`.
        match unsafe { raw_syscall(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]) } {
            // SAFETY: `_exit` is always sound.
            Ok(0) => unsafe { libc::_exit(0) },
            Ok(pid) => {
                forked::wait(pid as libc::pid_t);
                0
            }
            Err(errno) => errno,
        }
    };
    assert_eq!(child(false, clone_newuser), Outcome::Exited(0));
    assert_eq!(child(true, clone_newuser), Outcome::Exited(libc::EPERM));
}

#[test]
fn clone3_is_enosys_and_fork_and_posix_spawn_still_work() {
    require_root("clone3_is_enosys_and_fork_and_posix_spawn_still_work");
    let _lock = fork_lock();
    // clone3(NULL, 0): EINVAL from the kernel (size too small).
    expect_denied("clone3", libc::SYS_clone3, [0; 6], libc::ENOSYS);

    let outcome = child(true, || {
        // glibc's fork uses clone(2).
        // SAFETY: the grandchild only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: `_exit` is always sound.
            unsafe { libc::_exit(7) };
        }
        if pid < 0 || forked::wait(pid) != Outcome::Exited(7) {
            return 1;
        }
        // glibc's posix_spawn tries clone3 first and falls back to clone
        // on ENOSYS.
        let path = c"/bin/true";
        let argv = [path.as_ptr().cast_mut(), std::ptr::null_mut()];
        let envp = [std::ptr::null_mut()];
        let mut pid = 0;
        // SAFETY: argv and envp are null-terminated arrays of valid C
        // strings; null file actions and attributes are allowed.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return 2;
        }
        if forked::wait(pid) != Outcome::Exited(0) {
            return 3;
        }
        0
    });
    assert_eq!(outcome, Outcome::Exited(0));
}

#[test]
fn kernel_interfaces_are_eperm() {
    require_root("kernel_interfaces_are_eperm");
    let _lock = fork_lock();
    // Arguments chosen so that the unfiltered kernel rejects the call
    // without doing anything (EINVAL, EFAULT, EBADF, EOPNOTSUPP, ...).
    let cases: &[(&str, libc::c_long, [u64; 6])] = &[
        ("keyctl", libc::SYS_keyctl, [9999, 0, 0, 0, 0, 0]),
        ("bpf", libc::SYS_bpf, [9999, 0, 0, 0, 0, 0]),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            [0, 0, u64::MAX, u64::MAX, 0, 0],
        ),
        (
            "userfaultfd",
            libc::SYS_userfaultfd,
            [u64::from(u32::MAX), 0, 0, 0, 0, 0],
        ),
        ("io_uring_setup", libc::SYS_io_uring_setup, [0; 6]),
        ("ptrace", libc::SYS_ptrace, [9999, 0, 0, 0, 0, 0]),
        ("setns", libc::SYS_setns, [u64::MAX, 0, 0, 0, 0, 0]),
        (
            "pidfd_getfd",
            libc::SYS_pidfd_getfd,
            [u64::MAX, 0, 0, 0, 0, 0],
        ),
        (
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            [u64::MAX, 0, 0, 0, 0, 0],
        ),
        ("fsopen", libc::SYS_fsopen, [0; 6]),
        ("syslog", libc::SYS_syslog, [9999, 0, 0, 0, 0, 0]),
    ];
    for (name, nr, args) in cases {
        expect_denied(name, *nr, *args, libc::EPERM);
    }
}

#[test]
fn tiocsti_is_eperm_even_with_high_bits() {
    require_root("tiocsti_is_eperm_even_with_high_bits");
    let _lock = fork_lock();
    for request in [libc::TIOCSTI, 0x1_0000_0000 | libc::TIOCSTI] {
        let inject = || {
            let (mut master, mut slave) = (-1, -1);
            // SAFETY: valid out-pointers; null name, termios and winsize.
            let rc = unsafe {
                libc::openpty(
                    &mut master,
                    &mut slave,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return PANICKED;
            }
            let byte = b'x';
            // SAFETY: `slave` is our own fresh pty; the argument points
            // to one readable byte, injected into that pty only.
            exit_code(unsafe {
                raw_syscall(
                    libc::SYS_ioctl,
                    [slave as u64, request, &byte as *const u8 as u64, 0, 0, 0],
                )
            })
        };
        assert_eq!(
            child(false, inject),
            Outcome::Exited(0),
            "control, request {request:#x}"
        );
        assert_eq!(
            child(true, inject),
            Outcome::Exited(libc::EPERM),
            "request {request:#x}"
        );
    }
}

#[test]
fn socket_families() {
    require_root("socket_families");
    let _lock = fork_lock();
    let vsock = [libc::AF_VSOCK as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
    expect_denied("socket(AF_VSOCK)", libc::SYS_socket, vsock, libc::EPERM);
    let (control, filtered) = control_and_filtered(libc::SYS_socket, vsock);
    assert_eq!(
        control,
        Outcome::Exited(0),
        "AF_VSOCK is reachable on this machine"
    );
    assert_eq!(filtered, Outcome::Exited(libc::EPERM));
    for family in [libc::AF_INET, libc::AF_INET6, libc::AF_UNIX] {
        let args = [family as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
        let (_, filtered) = control_and_filtered(libc::SYS_socket, args);
        assert_eq!(filtered, Outcome::Exited(0), "socket({family})");
    }
}

#[test]
fn realtime_scheduling_is_eperm() {
    require_root("realtime_scheduling_is_eperm");
    let _lock = fork_lock();
    // Priority 0 is invalid for SCHED_FIFO: the control gets EINVAL and
    // nothing becomes real-time.
    let param = libc::sched_param { sched_priority: 0 };
    let param = &param as *const libc::sched_param as u64;
    let fifo = [0, libc::SCHED_FIFO as u64, param, 0, 0, 0];
    let (control, filtered) = control_and_filtered(libc::SYS_sched_setscheduler, fifo);
    assert_eq!(control, Outcome::Exited(libc::EINVAL));
    assert_eq!(filtered, Outcome::Exited(libc::EPERM));
    let other = [0, libc::SCHED_OTHER as u64, param, 0, 0, 0];
    let (_, filtered) = control_and_filtered(libc::SYS_sched_setscheduler, other);
    assert_eq!(filtered, Outcome::Exited(0));
}

#[test]
fn personality() {
    let _lock = fork_lock();
    let query = [0xffff_ffff, 0, 0, 0, 0, 0];
    assert_eq!(
        control_and_filtered(libc::SYS_personality, query).1,
        Outcome::Exited(0)
    );
    let no_aslr = [libc::ADDR_NO_RANDOMIZE as u64, 0, 0, 0, 0, 0];
    expect_denied(
        "personality(ADDR_NO_RANDOMIZE)",
        libc::SYS_personality,
        no_aslr,
        libc::EPERM,
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn i386_int80_is_killed_with_sigsys() {
    let _lock = fork_lock();
    let getpid_via_int80 = || {
        // __NR_getpid on i386.
        let mut eax: u32 = 20;
        // SAFETY: `int 0x80` enters the kernel's i386 ABI; getpid takes
        // no arguments and only writes eax. Kernels before 4.17 zeroed
        // r8-r11 on that path, so they are marked clobbered.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inout("eax") eax,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack)
            );
        }
        // SAFETY: getpid has no preconditions.
        if eax as i32 == unsafe { libc::getpid() } {
            0
        } else {
            1
        }
    };
    assert_eq!(
        child(false, getpid_via_int80),
        Outcome::Exited(0),
        "int 0x80 works here"
    );
    assert_eq!(
        child(true, getpid_via_int80),
        Outcome::Signaled(libc::SIGSYS)
    );
}

#[test]
fn programs_still_exec_and_fork_under_the_filter() {
    let _lock = fork_lock();
    let exec = |path: &std::ffi::CStr, script: Option<&std::ffi::CStr>| {
        let argv = [
            path.as_ptr(),
            script.map_or(std::ptr::null(), |_| c"-c".as_ptr()),
            script.map_or(std::ptr::null(), std::ffi::CStr::as_ptr),
            std::ptr::null(),
        ];
        let envp = [c"PATH=/usr/bin:/bin".as_ptr(), std::ptr::null()];
        // SAFETY: argv and envp are null-terminated arrays of valid C
        // strings that outlive the call; on success it does not return.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        PANICKED
    };
    assert_eq!(child(true, || exec(c"/bin/true", None)), Outcome::Exited(0));
    // A shell forks and execs under the filter, and inherits it.
    let script = c"/bin/true && exec /bin/sh -c 'exit 3'";
    assert_eq!(
        child(true, || exec(c"/bin/sh", Some(script))),
        Outcome::Exited(3)
    );
}
