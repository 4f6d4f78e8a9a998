//! The crate's only unsafe code: thin wrappers over the *at syscalls the
//! extractor needs (std has no fd-relative file creation) and a few others.
//! Each wrapper takes borrowed fds and C strings, so the only thing to
//! uphold is the pointer validity the kernel expects for the call's duration.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cpath(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// How openat2(2) may resolve a path (`RESOLVE_*` of linux/openat2.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolve(u64);

impl Resolve {
    /// `..` and absolute symlinks may not leave the starting directory
    /// (`EXDEV`).
    pub const BENEATH: Resolve = Resolve(libc::RESOLVE_BENEATH);
    /// The starting directory is `/` for the whole walk: `..` and every
    /// symlink, absolute ones included, stay below it.
    pub const IN_ROOT: Resolve = Resolve(libc::RESOLVE_IN_ROOT);
    /// No symlink is followed anywhere on the path (`ELOOP`).
    pub const NO_SYMLINKS: Resolve = Resolve(libc::RESOLVE_NO_SYMLINKS);
    /// No magic link (`/proc/<pid>/root`, `/proc/<pid>/fd/N`) is followed
    /// (`ELOOP`).
    pub const NO_MAGICLINKS: Resolve = Resolve(libc::RESOLVE_NO_MAGICLINKS);
    /// Never follow a symlink anywhere on the path, never leave the
    /// starting directory: what an extractor walking its own tree needs.
    pub const STRICT: Resolve = Resolve(libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS);
}

impl std::ops::BitOr for Resolve {
    type Output = Resolve;
    fn bitor(self, other: Resolve) -> Resolve {
        Resolve(self.0 | other.0)
    }
}

/// How often openat2 is retried when the kernel asks for it (`EAGAIN`: a
/// rename raced a `RESOLVE_*` walk). Bounded, so that a sandbox renaming
/// in a loop cannot keep a host thread spinning.
const OPENAT2_RETRIES: u32 = 128;

/// openat2(2): opens `path` from `dir` as `resolve` allows. `flags` gets
/// `O_CLOEXEC` added; `mode` applies with `O_CREAT` (or `O_TMPFILE`).
/// Retries `EINTR`, and `EAGAIN` a bounded number of times.
///
/// The one openat2 wrapper of sandlot: the tar extractor here and the
/// runtime's host-side access to sandbox files both use it.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: Resolve,
) -> io::Result<OwnedFd> {
    let mut how: libc::open_how = unsafe_zeroed_open_how();
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    // The kernel refuses a mode without a flag that creates (O_TMPFILE
    // includes O_DIRECTORY's bit, hence the comparison).
    let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    how.mode = if creates { u64::from(mode) } else { 0 };
    how.resolve = resolve.0;
    let mut retries = 0;
    loop {
        // SAFETY: `path` is a valid NUL-terminated string and `how` a valid
        // open_how whose size we pass; both outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if retries < OPENAT2_RETRIES => retries += 1,
            _ => return Err(err),
        }
    }
}

fn unsafe_zeroed_open_how() -> libc::open_how {
    let how = MaybeUninit::<libc::open_how>::zeroed();
    // SAFETY: open_how is three u64 fields (in whatever libc version
    // exposes it); all-zero is a valid value.
    unsafe { how.assume_init() }
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and valid for the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// An overlayfs whiteout: a character device with device number 0:0.
pub fn mknod_whiteout(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and valid for the call.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), libc::S_IFCHR, 0) })
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and valid for the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// linkat(2) without AT_SYMLINK_FOLLOW: a link to a symlink links the
/// symlink itself, as tar means it.
pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and valid for the call.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is NUL-terminated and valid for the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// fstatat(2) with AT_SYMLINK_NOFOLLOW.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated; `st` has room for a struct stat,
    // which the kernel fills completely on success.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

/// Owner of the entry itself, never of what a symlink points to.
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and valid for the call.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Access and modification time of the entry itself (symlinks included).
pub fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, secs: i64, nanos: u32) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: `name` is NUL-terminated; `times` is an array of two
    // timespecs as utimensat expects; both outlive the call.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated, `value` is valid for `value.len()`
    // bytes; both outlive the call.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// lgetxattr(2); `None` when the attribute is absent.
#[cfg(test)]
pub fn lgetxattr(path: &Path, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let path = cpath(path)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated; `buf` is valid for writes of
    // `buf.len()` bytes.
    let ret = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(err),
        };
    }
    buf.truncate(ret as usize);
    Ok(Some(buf))
}

/// rename(2) that fails with EEXIST/ENOTEMPTY instead of replacing.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (cpath(from)?, cpath(to)?);
    // SAFETY: both strings are NUL-terminated and valid for the call.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
}

/// Blocks until this process holds an exclusive flock(2) on `fd`; closing
/// the fd releases it.
pub fn flock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        // SAFETY: flock takes no pointers.
        match check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Whether a process with this pid exists (in our pid namespace).
pub fn process_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
