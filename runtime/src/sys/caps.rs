//! Capability sets and no_new_privs for the sandbox child.

use crate::kernel::caps::CapPlan;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets passed as two 32-bit words.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` (linux/capability.h).
#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` (linux/capability.h); version 3 takes an
/// array of two, low word first.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `prctl(option, arg2, 0, 0, 0)`, mapping -1 to the errno.
fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> Result<(), i32> {
    // SAFETY: every option passed here (PR_CAPBSET_DROP, PR_CAP_AMBIENT,
    // PR_SET_NO_NEW_PRIVS) takes integer arguments only; no memory is read
    // or written through them.
    let rc = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == -1 {
        Err(super::errno())
    } else {
        Ok(())
    }
}

/// Reduces the calling thread's capability sets to `plan`.
///
/// Steps, in this order:
/// 1. `prctl(PR_CAPBSET_DROP, cap)` for every capability up to the plan's
///    `cap_last_cap` that the plan does not keep. Needs `CAP_SETPCAP` in
///    the effective set, so it comes before step 3 removes it.
/// 2. `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
/// 3. `capset` (version 3): effective = permitted = the kept set,
///    inheritable = the plan's inheritable set (empty by default).
///
/// Async-signal-safe: no allocation, only system calls. Returns the errno of
/// the first failing call.
///
/// See `prctl(2)`, `capset(2)`, `capabilities(7)`.
pub(crate) fn drop_caps(plan: &CapPlan) -> Result<(), i32> {
    for cap in 0..=plan.last_cap() {
        if !plan.keeps(cap) {
            prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap))?;
        }
    }

    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;

    let keep = plan.keep_mask();
    let inheritable = plan.inheritable_mask();
    let mut header = CapUserHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapUserData {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: inheritable as u32,
        },
        CapUserData {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: `header` and `data` are valid `#[repr(C)]` copies of the
    // kernel's structs, live across the call; version 3 reads exactly two
    // data elements. The kernel may write the preferred version into the
    // header (only on a version mismatch), hence the `&mut`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapUserHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(super::errno());
    }
    Ok(())
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: from now on `execve` cannot grant
/// privileges (set-user-ID bits and file capabilities are ignored for that
/// purpose), and the process may install seccomp filters without
/// `CAP_SYS_ADMIN`. Irreversible and inherited by every descendant.
///
/// Async-signal-safe. See `prctl(2)`.
pub(crate) fn set_no_new_privs() -> Result<(), i32> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// Capability drops on the real kernel, in forked children (as real root
/// here, which is the harder case: the sandbox child only holds
/// capabilities of its own user namespace).
#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};

    use super::*;
    use crate::sys::testing::{
        fork_lock, in_child_with_output, private_mount_namespace, require_root,
        try_mount_tmpfs_on_tmp, Outcome,
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
            return Err(super::super::errno());
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
        if drop_caps(plan).is_err() {
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
        let seccomp = crate::kernel::seccomp::SeccompProfile::default()
            .compile_native()
            .unwrap();
        let (outcome, _) = in_child_with_output(|_| {
            if plan.apply().is_err() {
                return 21;
            }
            if crate::kernel::caps::set_no_new_privs().is_err() {
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
}
