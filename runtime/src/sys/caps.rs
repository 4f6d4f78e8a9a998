//! Capability sets and no_new_privs for the sandbox child.

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

/// Reduces the calling thread's capability sets to `keep` (a mask of
/// capability numbers), walking the bounding set up to `last_cap`, with
/// `inheritable` as the inheritable set.
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
pub(crate) fn drop_caps(keep: u64, inheritable: u64, last_cap: u32) -> Result<(), i32> {
    for cap in 0..=last_cap {
        if cap > 63 || keep & (1 << cap) == 0 {
            prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap))?;
        }
    }

    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;

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
