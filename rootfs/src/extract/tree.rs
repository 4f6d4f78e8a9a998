//! The directories members go into: opened without following anything,
//! created when the archive did not list them, cleared for a replacement.

use std::ffi::{CStr, OsStr};
use std::fs::{self, File, Permissions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{fchown, PermissionsExt};
use std::path::PathBuf;

use super::{meta, names, At, ExtractError, Extractor, Owners};
use crate::error::EntryProblem;
use crate::sys::{self, Resolve};

impl Extractor<'_> {
    /// Opens an existing directory below the destination without
    /// following symlinks (`b""` is the destination itself).
    pub(super) fn open_dir(&self, rel: &[u8], at: &At) -> Result<OwnedFd, ExtractError> {
        let path = if rel.is_empty() {
            c".".to_owned()
        } else {
            names::cstring(rel).map_err(|p| at.refused(p))?
        };
        sys::openat2(
            self.root.as_fd(),
            &path,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            Resolve::STRICT,
        )
        .map_err(at.resolve("open"))
    }

    /// The directory a member goes into. Levels the archive did not list
    /// are made 0755 for the policy's owner (root for image layers, as
    /// other unpackers do).
    pub(super) fn parent(&self, names: &[&[u8]], at: &At) -> Result<OwnedFd, ExtractError> {
        match self.open_dir(&names::join(names), at) {
            Ok(fd) => return Ok(fd),
            Err(ExtractError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            }
            Err(e) => return Err(e),
        }
        let (uid, gid) = match self.policy.owners {
            Owners::FromArchive => (0, 0),
            Owners::Fixed { uid, gid } => (uid, gid),
        };
        let mut dir = self.open_dir(b"", at)?;
        for name in names {
            let name = names::cstring(name).map_err(|p| at.refused(p))?;
            let open = |dir: &OwnedFd| {
                sys::openat2(
                    dir.as_fd(),
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                    Resolve::STRICT,
                )
            };
            dir = match open(&dir) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    sys::mkdirat(dir.as_fd(), &name, 0o700).map_err(at.io("mkdir"))?;
                    let fd = open(&dir).map_err(at.resolve("open"))?;
                    let made = File::from(fd.try_clone().map_err(at.io("dup"))?);
                    fchown(&made, Some(uid), Some(gid)).map_err(at.io("chown"))?;
                    made.set_permissions(Permissions::from_mode(0o755))
                        .map_err(at.io("chmod"))?;
                    fd
                }
                Err(e) => return Err(at.resolve("open")(e)),
            };
        }
        Ok(dir)
    }

    /// Makes room for `name` in `dir`: a later member replaces an earlier
    /// one (or what was there), as tar does. An existing directory is kept
    /// when `keep_dir` (returns true then); otherwise it goes — with its
    /// contents only if the policy says so.
    pub(super) fn clear(
        &self,
        dir: &OwnedFd,
        name: &CStr,
        keep_dir: bool,
        at: &At,
    ) -> Result<bool, ExtractError> {
        let st = match sys::lstatat(dir.as_fd(), name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(at.io("stat")(e)),
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            sys::unlinkat(dir.as_fd(), name, false).map_err(at.io("replace"))?;
            return Ok(false);
        }
        if keep_dir {
            return Ok(true);
        }
        match sys::unlinkat(dir.as_fd(), name, true) {
            Ok(()) => Ok(false),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                if !self.policy.replace_full_directories {
                    return Err(at.refused(EntryProblem::DirectoryNotEmpty));
                }
                remove_tree(dir, name).map_err(at.io("replace directory"))?;
                Ok(false)
            }
            Err(e) => Err(at.io("replace directory")(e)),
        }
    }

    pub(super) fn set_dir_times(&self) -> Result<(), ExtractError> {
        for (rel, mtime) in self.dir_times.iter().rev() {
            let at = At::new(rel);
            // A directory a later member replaced is simply gone.
            let Ok(fd) = self.open_dir(rel, &at) else {
                continue;
            };
            File::from(fd)
                .set_times(meta::file_times(*mtime))
                .map_err(at.io("set times"))?;
        }
        Ok(())
    }
}

/// Removes directory `name` in `dir` and everything in it. std's
/// remove_dir_all walks by descriptor and never follows a symlink (it
/// opens each level `O_NOFOLLOW`); it is handed the directory through this
/// thread's descriptor table, so no path outside is ever named.
fn remove_tree(dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    let mut path = PathBuf::from(format!("/proc/thread-self/fd/{}", dir.as_raw_fd()));
    path.push(OsStr::from_bytes(name.to_bytes()));
    fs::remove_dir_all(path)
}
