//! File operations of the state dir: whole-file replacement, the record
//! lock, reading what another process may be replacing.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::error::{Error, Result};
use crate::sys::fd;

/// Replaces `dir/name` whole: written to a temporary name in the same
/// directory, then renamed over it, so that a reader sees the old file or
/// the new one and never a part of one.
///
/// No fsync: the state dir describes processes, which do not survive a
/// reboot either. The page cache is shared, so every process sees the
/// rename at once; a power loss can leave an empty file, which describes
/// a sandbox that is gone anyway and is removed as such. (On our ext4
/// `/run` an fsync doubled the cost of a replacement, 0.39 → 0.76 ms;
/// ARCHITECTURE.md, "Persistence".)
pub(crate) fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes));
    let renamed = written.and_then(|()| fs::rename(&tmp, dir.join(name)));
    renamed.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("write {}", dir.join(name).display()), e)
    })
}

/// Opens a file of a sandbox's directory that is only ever locked or
/// touched. Never creates it: they are made with the directory, and one
/// that is missing means the sandbox is gone (creating it again would put
/// a file back into a directory its remover is emptying).
pub(crate) fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Makes an empty file (in a sandbox's directory being built).
pub(crate) fn create_empty(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(drop)
        .map_err(|e| Error::io(format!("make {}", path.display()), e))
}

/// Removes a sandbox's directory: the record first — whoever takes the
/// lock afterwards finds it gone and leaves — then the rest.
pub(crate) fn remove_sandbox_dir(dir: &Path) {
    let _ = fs::remove_file(dir.join(sandlot_proto::monitor::RECORD));
    let _ = fs::remove_dir_all(dir);
}

/// An exclusive `flock` on a sandbox's `lock` file, released on drop:
/// held while its record or lifecycle is replaced and while it is ended.
/// Whoever takes it must check the sandbox still exists (another holder
/// may have ended it and removed the file meanwhile).
pub(crate) struct RecordLock(#[allow(dead_code)] File);

impl RecordLock {
    pub fn take(path: &Path) -> Result<RecordLock> {
        let file = open_rw(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        fd::flock(file.as_fd(), libc::LOCK_EX)
            .map_err(|e| Error::setup("flock the sandbox's record", e))?;
        Ok(RecordLock(file))
    }

    /// `None` when someone else holds it now.
    pub fn try_take(path: &Path) -> Result<Option<RecordLock>> {
        let file = open_rw(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let got = fd::flock(file.as_fd(), libc::LOCK_EX | libc::LOCK_NB)
            .map_err(|e| Error::setup("flock the sandbox's record", e))?;
        Ok(got.then_some(RecordLock(file)))
    }
}

/// What identifies one version of a file that is replaced whole: a new
/// version is a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Version {
    ino: u64,
    ctime_ns: i64,
}

impl Version {
    pub fn of(path: &Path) -> Option<Version> {
        let meta = fs::metadata(path).ok()?;
        Some(Version {
            ino: meta.ino(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        })
    }
}
