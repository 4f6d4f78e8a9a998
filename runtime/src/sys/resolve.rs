//! `openat2` with `RESOLVE_IN_ROOT`: host-side opens of paths inside a
//! sandbox. Every `..` and every symlink (absolute ones included) resolves
//! as if the sandbox root were `/`, and magic links (`/proc/<pid>/root` and
//! friends) are refused, so no path the sandbox controls leads a host-side
//! operation out — even if it swaps a symlink while we resolve.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{check, SysResult};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct open_how` from linux/openat2.h.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` (relative or absolute; either way inside `root`).
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> SysResult<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: `how` is a valid open_how of the size passed; `path` is
        // NUL-terminated; the result is a new descriptor nobody else owns.
        let ret = check(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        });
        match ret {
            // SAFETY: see above.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            // The kernel asks to retry when a rename raced the lookup.
            Err(super::Errno::EAGAIN) | Err(super::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
