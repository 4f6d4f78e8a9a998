//! `openat2` with `RESOLVE_IN_ROOT`: host-side opens of paths inside a
//! sandbox. Every `..` and every symlink (absolute ones included) resolves
//! as if the sandbox root were `/`, and magic links (`/proc/<pid>/root` and
//! friends) are refused, so no path the sandbox controls leads a host-side
//! operation out — even if it swaps a symlink while we resolve.
//!
//! The syscall itself is made by the one openat2 wrapper of sandlot,
//! `sandlot_rootfs::at::openat2` (shared with the tar extractor).

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, OwnedFd};

use sandlot_rootfs::at::{openat2, Resolve};

use super::{Errno, SysResult};

/// Opens `path` (relative or absolute; either way inside `root`).
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> SysResult<OwnedFd> {
    openat2(
        root,
        path,
        flags,
        mode,
        Resolve::IN_ROOT | Resolve::NO_MAGICLINKS,
    )
    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}
