//! `seccomp(2)` filter installation for the sandbox child.

use seccompiler::sock_filter;

// The programs come from seccompiler, whose `sock_filter` is its own
// `#[repr(C)]` copy of the kernel's `struct sock_filter` (it adds `Debug` and
// `PartialEq`); the kernel reads them through libc's definition. Same fields,
// same order, same types: check size and alignment once, at compile time.
const _: () = {
    assert!(std::mem::size_of::<sock_filter>() == std::mem::size_of::<libc::sock_filter>());
    assert!(std::mem::align_of::<sock_filter>() == std::mem::align_of::<libc::sock_filter>());
};

/// Installs each BPF program in order with
/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)`.
///
/// Async-signal-safe: no allocation, one system call per program. The
/// caller must already have set no_new_privs (or hold `CAP_SYS_ADMIN` in its
/// user namespace), otherwise the kernel answers `EACCES`.
///
/// No `SECCOMP_FILTER_FLAG_TSYNC`: the sandbox child is the only thread of
/// its process (clone copies only the calling thread of the multithreaded
/// host), so there is no other thread to synchronise, and filters are
/// inherited by every process it later forks or execs. No other flag either:
/// not `SPEC_ALLOW` (keep the kernel's speculative-store-bypass default for
/// filtered tasks), not `NEW_LISTENER` (no supervisor), not `LOG`.
///
/// The kernel runs every installed filter on each system call and keeps the
/// most severe action; between two `SECCOMP_RET_ERRNO` results the filter
/// installed last wins, which is why the order of `programs` matters.
///
/// Returns the errno of the first program that fails (`EINVAL` for an empty
/// program or one longer than `u16::MAX` instructions, which the kernel
/// would reject anyway); programs before it stay installed.
///
/// See `seccomp(2)`.
pub(crate) fn install_seccomp<P: AsRef<[sock_filter]>>(programs: &[P]) -> Result<(), i32> {
    for program in programs {
        let program = program.as_ref();
        let len = match u16::try_from(program.len()) {
            Ok(len) if len > 0 => len,
            _ => return Err(libc::EINVAL),
        };
        let fprog = libc::sock_fprog {
            len,
            // The kernel only reads through this pointer (copy_from_user).
            filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: `fprog` points to `len` initialised instructions whose
        // layout matches `struct sock_filter` (checked above); both live
        // until the call returns, and the kernel copies the program before
        // returning and never writes through the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(super::errno());
        }
    }
    Ok(())
}
