//! Small file operations on cgroupfs with errors that name the path.
//!
//! Hot-path operations are relative to an open directory fd (`*at`), so the
//! kernel does not walk `/sys/fs/cgroup/memory/…/sandlot-…/<id>` for every
//! file; the absolute path is only built when an error needs it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::sys::uio::pread;
use nix::unistd::{unlinkat, write, UnlinkatFlags};

use super::error::CgroupError;

/// How long [`rmdir_at`] keeps retrying EBUSY: tasks killed with SIGKILL
/// take a moment to leave their cgroups.
pub(crate) const RMDIR_PATIENCE: Duration = Duration::from_secs(2);

/// Opens a directory (for `*at` calls and `CLONE_INTO_CGROUP`).
pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd, CgroupError> {
    open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| CgroupError::Open {
        path: path.to_owned(),
        errno,
    })
}

/// Opens `rel` below `dir` as a directory.
pub(crate) fn open_dir_at(
    dir: BorrowedFd<'_>,
    rel: &str,
    base: &Path,
) -> Result<OwnedFd, CgroupError> {
    openat(
        dir,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| CgroupError::Open {
        path: base.join(rel),
        errno,
    })
}

/// Opens `rel` below `dir` for reading (kept open by stats and freeze).
pub(crate) fn open_read_at(dir: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    openat(dir, rel, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
}

/// `mkdir <base>/<rel>` relative to `dir`.
pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, rel: &str, base: &Path) -> Result<(), CgroupError> {
    mkdirat(dir, rel, Mode::from_bits_truncate(0o755)).map_err(|errno| CgroupError::Mkdir {
        path: base.join(rel),
        errno,
    })
}

/// Writes `value` to the file `rel` below `dir` in one write(2), as cgroupfs
/// wants it.
pub(crate) fn write_at(
    dir: BorrowedFd<'_>,
    rel: &str,
    value: &str,
    base: &Path,
) -> Result<(), CgroupError> {
    let err = |errno| CgroupError::Write {
        path: base.join(rel),
        value: value.to_owned(),
        errno,
    };
    let fd = openat(dir, rel, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err)?;
    match write(fd.as_fd(), value.as_bytes()) {
        Ok(n) if n == value.len() => Ok(()),
        Ok(_) => Err(err(Errno::EIO)),
        Err(errno) => Err(err(errno)),
    }
}

/// Writes `value` to `path`.
pub(crate) fn write_path(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |errno| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        errno,
    };
    let fd = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err)?;
    match write(fd.as_fd(), value.as_bytes()) {
        Ok(n) if n == value.len() => Ok(()),
        Ok(_) => Err(err(Errno::EIO)),
        Err(errno) => Err(err(errno)),
    }
}

/// Reads a whole (small) file.
pub(crate) fn read_path(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| CgroupError::Read {
        path: path.to_owned(),
        errno: super::error::errno_of(&e),
    })
}

/// Reads the file `rel` below `dir` into `buf` from offset 0; returns the
/// text read. `buf` must be large enough for the whole file.
pub(crate) fn read_at<'b>(
    dir: BorrowedFd<'_>,
    rel: &str,
    buf: &'b mut [u8],
) -> Result<&'b str, Errno> {
    let fd = open_read_at(dir, rel)?;
    pread_all(fd.as_fd(), buf)
}

/// Reads an open cgroup file from offset 0 (cgroupfs regenerates the text
/// on every read at 0, so one fd serves any number of reads).
pub(crate) fn pread_all<'b>(fd: BorrowedFd<'_>, buf: &'b mut [u8]) -> Result<&'b str, Errno> {
    let mut len = 0;
    loop {
        let n = pread(fd, &mut buf[len..], len as i64)?;
        len += n;
        if n == 0 || len == buf.len() {
            break;
        }
    }
    std::str::from_utf8(&buf[..len]).map_err(|_| Errno::EILSEQ)
}

/// Parses `cgroup.procs`.
pub(crate) fn parse_pids(text: &str) -> Vec<i32> {
    text.split_ascii_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Does `rel` exist below `dir`?
pub(crate) fn exists_at(dir: BorrowedFd<'_>, rel: &str) -> bool {
    nix::unistd::faccessat(
        dir,
        rel,
        nix::unistd::AccessFlags::F_OK,
        nix::fcntl::AtFlags::empty(),
    )
    .is_ok()
}

/// `rmdir <base>/<rel>` relative to `dir`, retrying EBUSY for up to
/// [`RMDIR_PATIENCE`] with short, growing sleeps (20 µs … 2 ms): killed
/// tasks leave their cgroup within milliseconds. A missing directory is
/// not an error.
pub(crate) fn rmdir_at(dir: BorrowedFd<'_>, rel: &str, base: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        match unlinkat(dir, rel, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) | Err(Errno::EAGAIN) => {
                let waited = start.elapsed();
                if waited >= RMDIR_PATIENCE {
                    return Err(CgroupError::Busy {
                        path: base.join(rel),
                        waited,
                    });
                }
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
            Err(errno) => {
                return Err(CgroupError::Rmdir {
                    path: base.join(rel),
                    errno,
                })
            }
        }
    }
}

/// `rmdir path` with the same EBUSY patience as [`rmdir_at`].
pub(crate) fn rmdir_path(path: &Path) -> Result<(), CgroupError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(CgroupError::Rmdir {
            path: path.to_owned(),
            errno: Errno::EINVAL,
        });
    };
    let parent_fd = match open_dir(parent) {
        Ok(fd) => fd,
        Err(CgroupError::Open {
            errno: Errno::ENOENT,
            ..
        }) => return Ok(()),
        Err(e) => return Err(e),
    };
    rmdir_at(parent_fd.as_fd(), &name.to_string_lossy(), parent)
}
