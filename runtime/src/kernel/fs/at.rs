//! The host side of every files operation, on the sandbox's root
//! descriptor (`/proc/<init>/root`, `O_PATH`).
//!
//! Two rules keep every operation inside the sandbox, even while the
//! sandbox renames and swaps symlinks underneath:
//! - a path is only ever resolved by `openat2(root, path,
//!   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (tar members: by the
//!   extractor, `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from the
//!   destination): `..` and symlinks, absolute ones included, cannot climb
//!   above the sandbox root, and magic links (`/proc/<pid>/root`,
//!   `/proc/<pid>/fd/N`) are refused;
//! - anything that creates, removes, renames or changes an entry opens its
//!   parent that way and then uses an `*at` call with one final name that
//!   is never followed (`O_NOFOLLOW`, `O_EXCL`, `AT_SYMLINK_NOFOLLOW`, or
//!   calls that never follow: mkdirat, unlinkat, renameat2, symlinkat,
//!   linkat without `AT_SYMLINK_FOLLOW`).
//!
//! Content is opened in two steps: an `O_PATH` descriptor (opening it has
//! no side effect, whatever it is), its type checked with fstat, then the
//! very same inode reopened through `/proc/self/fd/N`. So a path that
//! names /dev/tty or a FIFO never opens the host's terminal or blocks.
//!
//! The host acts as root here, with more privilege than the sandbox's own
//! root: kernel pseudo filesystems (/proc and the like) answer the host
//! with host-privileged data, so content and changes there are refused
//! ([`DENIED_FILESYSTEMS`]).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};

use super::error::FilesError;
use super::path::SbPath;
use crate::kernel::userns::IdRange;

/// How deep the walks (list, remove, export, import, recursive watch) go.
/// Each level holds one descriptor, and a sandbox can build a tree as deep
/// as it likes: the bound keeps a hostile tree from exhausting the host's
/// descriptors (the common soft limit is 1024).
pub const MAX_DEPTH: usize = 256;

/// Kernel pseudo filesystems whose files the API neither reads nor
/// changes: what they answer depends on the reader's privilege, and the
/// host reads as host root (e.g. /proc/kallsyms shows real addresses to
/// host root and zeros to the sandbox). `f_type` from linux/magic.h.
pub const DENIED_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstore"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6e73_6673, "nsfs"),
];

/// Host ids that files created by the API get: the sandbox user's ids
/// mapped through the sandbox's id range. Never host root, which the
/// sandbox's user namespace cannot map (the file would show as 65534
/// inside and its root could not chown it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub fn inside(range: &IdRange, uid: u32, gid: u32) -> Option<Owner> {
        Some(Owner {
            uid: range.to_host(uid)?,
            gid: range.to_host(gid)?,
        })
    }
}

/// The id a host id shows as inside: mapped, or the overflow id 65534.
pub(crate) fn id_inside(range: &IdRange, host: u32) -> u32 {
    if host >= range.base && host - range.base < range.count {
        host - range.base
    } else {
        65534
    }
}

/// The kind of a file from its `st_mode`.
pub(crate) fn kind_of(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits())
}

pub(crate) fn kind_name(mode: u32) -> &'static str {
    match kind_of(mode) {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFIFO => "fifo",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "unknown file type",
    }
}

pub(crate) fn mtime_of(st: &FileStat) -> SystemTime {
    let since = Duration::new(st.st_mtime.unsigned_abs(), st.st_mtime_nsec as u32);
    if st.st_mtime >= 0 {
        UNIX_EPOCH + since
    } else {
        UNIX_EPOCH - since
    }
}

fn c_name(name: &[u8], path: &str) -> Result<CString, FilesError> {
    CString::new(name).map_err(|_| FilesError::InvalidPath {
        path: path.to_string(),
        reason: "contains a NUL byte",
    })
}

/// A single path component as a C string (callers guarantee no '/').
pub(crate) fn c_component(name: &str, path: &SbPath) -> Result<CString, FilesError> {
    c_name(name.as_bytes(), path.as_str())
}

/// Maps an openat2 failure; `EXDEV` is the kernel saying the path would
/// leave the directory it must stay beneath.
fn open_error(path: &str, within: &str, errno: Errno) -> FilesError {
    match errno {
        Errno::EXDEV => FilesError::PathEscape {
            path: path.to_string(),
            within: within.to_string(),
        },
        errno => FilesError::from_errno("open", path, errno),
    }
}

/// Opens `path` inside the sandbox root. Symlinks, the last one included,
/// are followed inside the root (pass `O_NOFOLLOW` to stop at a final
/// symlink; with `O_PATH` that gives the link itself).
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &SbPath,
    flags: OFlag,
) -> Result<OwnedFd, FilesError> {
    crate::sys::resolve::open_in_root(root, &path.c_relative(), flags.bits(), 0)
        .map_err(|errno| open_error(path.as_str(), "the sandbox", errno))
}

/// Opens one name in `dir`, never following it.
pub(crate) fn open_child(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: OFlag,
    shown: &str,
) -> Result<OwnedFd, FilesError> {
    openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(|errno| FilesError::from_errno("open", shown, errno))
}

/// Refuses descriptors on a kernel pseudo filesystem.
pub(crate) fn check_filesystem(fd: BorrowedFd<'_>, shown: &str) -> Result<(), FilesError> {
    let fs = nix::sys::statfs::fstatfs(fd)
        .map_err(|errno| FilesError::from_errno("statfs", shown, errno))?;
    let magic = fs.filesystem_type().0 as i64;
    match DENIED_FILESYSTEMS.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => Err(FilesError::SpecialFilesystem {
            path: shown.to_string(),
            filesystem: name,
        }),
        None => Ok(()),
    }
}

pub(crate) fn is_denied_filesystem(fd: BorrowedFd<'_>) -> bool {
    check_filesystem(fd, "").is_err()
}

pub(crate) fn stat_fd(fd: BorrowedFd<'_>, shown: &str) -> Result<FileStat, FilesError> {
    fstat(fd).map_err(|errno| FilesError::from_errno("stat", shown, errno))
}

/// lstat of one name in `dir`.
pub(crate) fn stat_child(
    dir: BorrowedFd<'_>,
    name: &CStr,
    shown: &str,
) -> Result<FileStat, FilesError> {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|errno| FilesError::from_errno("stat", shown, errno))
}

pub(crate) fn read_link(
    dir: BorrowedFd<'_>,
    name: &CStr,
    shown: &str,
) -> Result<Vec<u8>, FilesError> {
    readlinkat(dir, name)
        .map(std::os::unix::ffi::OsStringExt::into_vec)
        .map_err(|errno| FilesError::from_errno("readlink", shown, errno))
}

/// Reopens the inode an `O_PATH` descriptor holds, for I/O. Goes through
/// the host's /proc/thread-self/fd (the calling thread's own table, which
/// need not be the process's; the kernel's documented way): the inode is
/// pinned by the descriptor, so nothing the sandbox renames meanwhile
/// changes what is opened.
pub(crate) fn reopen(fd: BorrowedFd<'_>, write: bool, shown: &str) -> Result<File, FilesError> {
    let mut options = File::options();
    if write {
        options.write(true).truncate(true);
    } else {
        options.read(true);
    }
    options
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| super::error::from_io("open", shown, e))
}

/// Gives `fd` to `owner` (works on `O_PATH` descriptors too).
pub(crate) fn chown_fd(fd: BorrowedFd<'_>, owner: Owner, shown: &str) -> Result<(), FilesError> {
    fchownat(
        fd,
        "",
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|errno| FilesError::from_errno("chown", shown, errno))
}

/// Sets the exact mode: creation modes pass through the host process's
/// umask, which is none of the sandbox's business.
pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32, shown: &str) -> Result<(), FilesError> {
    fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))
        .map_err(|errno| FilesError::from_errno("chmod", shown, errno))
}

/// Creates directory `name` in `dir` for `owner` with `mode` and returns it
/// open (`O_RDONLY | O_DIRECTORY`). `Ok(None)` when the name already exists.
pub(crate) fn make_child_dir(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    owner: Owner,
    shown: &str,
) -> Result<Option<OwnedFd>, FilesError> {
    // Created private, then handed over: until the chown it belongs to an
    // id the sandbox cannot map, and nobody inside may enter it.
    match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(None),
        Err(errno) => return Err(FilesError::from_errno("mkdir", shown, errno)),
    }
    let fd = open_child(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, shown)?;
    chown_fd(fd.as_fd(), owner, shown)?;
    chmod_fd(fd.as_fd(), mode, shown)?;
    Ok(Some(fd))
}

/// Creates a new regular file `name` in `dir` (never an existing one, never
/// through a symlink) for `owner` with `mode`, open for writing. An
/// existing name is [`FilesError::AlreadyExists`].
pub(crate) fn create_child_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    owner: Owner,
    shown: &str,
) -> Result<File, FilesError> {
    // Private until handed over, as in make_child_dir.
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|errno| FilesError::from_errno("create", shown, errno))?;
    let handed_over =
        chown_fd(fd.as_fd(), owner, shown).and_then(|()| chmod_fd(fd.as_fd(), mode, shown));
    if let Err(e) = handed_over {
        let _ = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok(File::from(fd))
}

/// Opens directory `path` inside the root, creating it and its missing
/// parents (mode 0755, for `owner`) — `mkdir -p`. Returns an `O_PATH`
/// descriptor of it or a descriptor open for reading.
pub(crate) fn make_dirs(
    root: BorrowedFd<'_>,
    path: &SbPath,
    owner: Owner,
) -> Result<OwnedFd, FilesError> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    match open_in_root(root, path, flags) {
        Err(FilesError::NotFound { .. }) => {}
        other => return other,
    }
    // Walk down from the root: each level is opened afresh from the root
    // (symlinks along the way resolve inside it), each missing one is made
    // with mkdirat in the level above.
    let mut current = open_in_root(root, &SbPath::root(), flags)?;
    let mut at = SbPath::root();
    for component in path.as_str().split('/').filter(|c| !c.is_empty()) {
        let next = at.join(component);
        let mut tries = 0;
        current = loop {
            match open_in_root(root, &next, flags) {
                Ok(fd) => break fd,
                Err(FilesError::NotFound { .. }) if component != ".." && tries < 3 => {
                    tries += 1;
                    let name = c_component(component, &next)?;
                    if let Some(made) =
                        make_child_dir(current.as_fd(), &name, 0o755, owner, next.as_str())?
                    {
                        break made;
                    }
                    // It exists yet does not resolve: a dangling symlink
                    // (or a race); the next round tells which.
                }
                Err(e) => return Err(e),
            }
        };
        at = next;
    }
    Ok(current)
}

/// The names in a directory (without `.` and `..`), sorted for stable
/// output. `dir` must be open for reading.
pub(crate) fn read_names(dir: BorrowedFd<'_>, shown: &str) -> Result<Vec<CString>, FilesError> {
    let fd = open_child(dir, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, shown)?;
    let mut dir =
        Dir::from_fd(fd).map_err(|errno| FilesError::from_errno("opendir", shown, errno))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|errno| FilesError::from_errno("readdir", shown, errno))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// A name as text for paths shown to callers (lossy for non-UTF-8 names).
pub(crate) fn show_name(name: &CStr) -> std::borrow::Cow<'_, str> {
    OsStr::from_bytes(name.to_bytes()).to_string_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_inside_or_overflow() {
        let range = IdRange::default();
        assert_eq!(id_inside(&range, 100_000), 0);
        assert_eq!(id_inside(&range, 101_000), 1000);
        assert_eq!(id_inside(&range, 0), 65534);
        assert_eq!(id_inside(&range, 165_536), 65534);
        assert_eq!(
            Owner::inside(&range, 1000, 100),
            Some(Owner {
                uid: 101_000,
                gid: 100_100
            })
        );
        assert_eq!(Owner::inside(&range, 70_000, 0), None);
    }

    #[test]
    fn proc_is_denied_and_tmp_is_not() {
        let proc = File::open("/proc/self/status").unwrap();
        assert!(matches!(
            check_filesystem(proc.as_fd(), "/proc/self/status"),
            Err(FilesError::SpecialFilesystem {
                filesystem: "proc",
                ..
            })
        ));
        let tmp = File::open(std::env::temp_dir()).unwrap();
        assert!(check_filesystem(tmp.as_fd(), "/tmp").is_ok());
    }
}
