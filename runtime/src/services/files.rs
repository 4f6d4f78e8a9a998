//! The files of a running sandbox, from the host: `sandbox.files()`.
//!
//! Every operation runs on the host's thread against the sandbox's root
//! descriptor (see [`at`] for how a path can never lead out), through the
//! sandbox's own mounts: writes land in its overlay's upper layer and count
//! against its disk limit, read-only binds stay read-only.
//!
//! Ownership: the host acts as root, and a file host root creates belongs
//! to host uid 0 — an id the sandbox cannot map. So everything the API
//! creates is created private and then handed to the sandbox's user (the
//! template's user, root unless the image says otherwise; `Files::user`
//! picks another) through the sandbox's id range: root inside is host
//! 100000. Existing files keep their owner when overwritten. Permission
//! bits are not checked: the API has the power of root inside the sandbox.

use std::cell::OnceCell;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::SystemTime;

use nix::fcntl::{renameat2, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

pub(crate) use crate::kernel::fs::at::MAX_DEPTH;
pub use crate::kernel::fs::error::FilesError;
pub use crate::kernel::fs::tar::{TarExport, TarImport};

use crate::engine::error::{Error, Result};
use crate::engine::sandbox::SandboxShared;
use crate::kernel::fs::at::{self, c_component, Owner};
use crate::kernel::fs::error::from_io;
use crate::kernel::fs::path::SbPath;
use crate::kernel::fs::tar;
use crate::services::users::{self, User};
use crate::services::watch::{self, Watch};

/// The largest file `read`, `write` and `import_tar` accept unless told
/// otherwise ([`Files::max_file_size`]): as large as the default disk.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;

/// Symlinks followed by `write` before giving up (the kernel's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn of(mode: u32) -> FileKind {
        match at::kind_of(mode) {
            SFlag::S_IFDIR => FileKind::Dir,
            SFlag::S_IFLNK => FileKind::Symlink,
            SFlag::S_IFIFO => FileKind::Fifo,
            SFlag::S_IFSOCK => FileKind::Socket,
            SFlag::S_IFCHR => FileKind::CharDevice,
            SFlag::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::File,
        }
    }
}

/// One file, directory or link as the sandbox sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The last component of `path`.
    pub name: String,
    /// Absolute, inside the sandbox (non-UTF-8 bytes shown lossily).
    pub path: String,
    pub kind: FileKind,
    /// Bytes (for a symlink, the length of its target).
    pub size: u64,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner and group as ids inside the sandbox (65534 when unmapped).
    pub uid: u32,
    pub gid: u32,
    pub modified: SystemTime,
    /// Where a symlink points, as stored in it.
    pub symlink_target: Option<String>,
}

impl EntryInfo {
    fn new(files: &Files<'_>, path: &SbPath, st: &FileStat, target: Option<Vec<u8>>) -> Self {
        let range = &files.sandbox.ctx.range;
        EntryInfo {
            name: path.file_name().unwrap_or("/").to_string(),
            path: path.to_string(),
            kind: FileKind::of(st.st_mode),
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: at::id_inside(range, st.st_uid),
            gid: at::id_inside(range, st.st_gid),
            modified: at::mtime_of(st),
            symlink_target: target.map(|t| String::from_utf8_lossy(&t).into_owned()),
        }
    }
}

/// A file of the sandbox, open for reading ([`Files::open`]). Reads past
/// the maximum size (a file growing while it is read) fail with
/// [`FilesError::FileTooLarge`] inside the `io::Error`.
#[derive(Debug)]
pub struct FileReader {
    file: File,
    len: u64,
    read: u64,
    max: u64,
    path: String,
}

impl FileReader {
    /// The file's size when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(FilesError::FileTooLarge {
                path: self.path.clone(),
                max: self.max,
            }
            .into());
        }
        Ok(n)
    }
}

/// The files of one sandbox (`sandbox.files()`); cheap, make one per call.
pub struct Files<'a> {
    sandbox: &'a Arc<SandboxShared>,
    user: Option<String>,
    max_file_size: u64,
    resolved: OnceCell<User>,
}

/// A regular file opened for writing by [`Files::write`], and where: the
/// name it was created under, if this call created it (removed again when
/// the write fails).
struct WriteTarget {
    file: File,
    path: SbPath,
    created: Option<(OwnedFd, CString)>,
}

impl WriteTarget {
    fn discard(self) {
        if let Some((parent, name)) = self.created {
            let _ = unlinkat(parent.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

impl<'a> Files<'a> {
    pub(crate) fn new(sandbox: &'a Arc<SandboxShared>) -> Files<'a> {
        Files {
            sandbox,
            user: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            resolved: OnceCell::new(),
        }
    }

    /// Files and directories this `Files` creates belong to `user` (a name
    /// from the sandbox's /etc/passwd or `uid[:gid]`), and relative paths
    /// start at its home. Default: the template's user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.resolved = OnceCell::new();
        self
    }

    /// The largest file read, written or imported, in bytes (default
    /// [`DEFAULT_MAX_FILE_SIZE`]); beyond it, [`FilesError::FileTooLarge`].
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The sandbox's root; a use of the API counts as activity.
    fn root(&self) -> Result<Arc<OwnedFd>> {
        let live = self
            .sandbox
            .live()
            .ok_or_else(|| self.sandbox.not_running())?;
        self.sandbox.touch();
        Ok(live.root.clone())
    }

    fn resolved_user(&self) -> Result<&User> {
        if let Some(user) = self.resolved.get() {
            return Ok(user);
        }
        let user = users::resolve(self.sandbox, self.user.as_deref())?;
        Ok(self.resolved.get_or_init(|| user))
    }

    fn owner(&self) -> Result<Owner> {
        let user = self.resolved_user()?;
        Owner::inside(&self.sandbox.ctx.range, user.uid, user.gid).ok_or_else(|| {
            Error::invalid(
                "user",
                format!("{}:{} is outside the sandbox's ids", user.uid, user.gid),
            )
        })
    }

    /// `input` made absolute (relative paths start at the user's home).
    fn path(&self, input: &str) -> Result<SbPath> {
        let mut home_error = None;
        let path = SbPath::parse(input, || match self.resolved_user() {
            Ok(user) => SbPath::parse(&user.home, || Ok(SbPath::root())),
            Err(e) => {
                home_error = Some(e);
                Ok(SbPath::root())
            }
        })?;
        match home_error {
            Some(e) => Err(e),
            None => Ok(path),
        }
    }

    fn too_large(&self, path: &SbPath) -> Error {
        FilesError::FileTooLarge {
            path: path.to_string(),
            max: self.max_file_size,
        }
        .into()
    }

    // ---- reading ----

    /// Opens a regular file for streaming. Symlinks are followed inside the
    /// sandbox.
    pub fn open(&self, path: &str) -> Result<FileReader> {
        let root = self.root()?;
        let path = self.path(path)?;
        let shown = path.as_str();
        let fd = at::open_in_root(root.as_fd(), &path, OFlag::O_PATH)?;
        let st = at::stat_fd(fd.as_fd(), shown)?;
        match at::kind_of(st.st_mode) {
            SFlag::S_IFREG => {}
            SFlag::S_IFDIR => {
                return Err(FilesError::IsADirectory {
                    path: path.to_string(),
                }
                .into())
            }
            _ => {
                return Err(FilesError::NotAFile {
                    path: path.to_string(),
                    kind: at::kind_name(st.st_mode),
                }
                .into())
            }
        }
        at::check_filesystem(fd.as_fd(), shown)?;
        if st.st_size as u64 > self.max_file_size {
            return Err(self.too_large(&path));
        }
        Ok(FileReader {
            file: at::reopen(fd.as_fd(), false, shown)?,
            len: st.st_size as u64,
            read: 0,
            max: self.max_file_size,
            path: path.to_string(),
        })
    }

    /// The whole content of a regular file.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut reader = self.open(path)?;
        let mut data = Vec::with_capacity(reader.len() as usize);
        reader
            .read_to_end(&mut data)
            .map_err(|e| from_io("read", &reader.path, e))?;
        Ok(data)
    }

    /// The whole content of a regular file, as UTF-8 text.
    pub fn read_to_string(&self, path: &str) -> Result<String> {
        let data = self.read(path)?;
        String::from_utf8(data).map_err(|_| {
            FilesError::NotUtf8 {
                path: self.path(path).map(|p| p.to_string()).unwrap_or_default(),
            }
            .into()
        })
    }

    // ---- writing ----

    /// Writes `data` to `path`, replacing its content (the file keeps its
    /// inode, owner and mode) or creating it (mode 0644, the user's) with
    /// any missing parent directories (0755, the user's). A symlink at
    /// `path` is followed inside the sandbox.
    pub fn write(&self, path: &str, data: impl AsRef<[u8]>) -> Result<EntryInfo> {
        let data = data.as_ref();
        self.write_stream(path, &mut &data[..], Some(data.len() as u64))
    }

    /// [`Files::write`] with the content streamed from `reader`. If the
    /// stream fails or passes the size limit, a file this call created is
    /// removed; an existing file is left with what was written.
    pub fn write_from(&self, path: &str, mut reader: impl Read) -> Result<EntryInfo> {
        self.write_stream(path, &mut reader, None)
    }

    /// Writes several files, in order; stops at the first failure (whose
    /// error names the path).
    pub fn write_many<I, P, D>(&self, files: I) -> Result<Vec<EntryInfo>>
    where
        I: IntoIterator<Item = (P, D)>,
        P: AsRef<str>,
        D: AsRef<[u8]>,
    {
        files
            .into_iter()
            .map(|(path, data)| self.write(path.as_ref(), data))
            .collect()
    }

    fn write_stream(
        &self,
        path: &str,
        reader: &mut dyn Read,
        len: Option<u64>,
    ) -> Result<EntryInfo> {
        let root = self.root()?;
        let path = self.path(path)?;
        if len.is_some_and(|len| len > self.max_file_size) {
            return Err(self.too_large(&path));
        }
        let owner = self.owner()?;
        let mut target = self.open_for_write(root.as_fd(), path, owner)?;
        match copy_limited(reader, &mut target.file, self.max_file_size, &target.path) {
            Ok(()) => {
                let st = at::stat_fd(target.file.as_fd(), target.path.as_str())?;
                Ok(EntryInfo::new(self, &target.path, &st, None))
            }
            Err(e) => {
                target.discard();
                Err(e)
            }
        }
    }

    /// Opens (creating if needed) the regular file `path` names, following
    /// a final symlink by hand: its target is resolved again from the root.
    fn open_for_write(
        &self,
        root: BorrowedFd<'_>,
        mut path: SbPath,
        owner: Owner,
    ) -> Result<WriteTarget> {
        for _ in 0..MAX_SYMLINK_HOPS {
            let (parent_path, name) = path.split()?;
            let shown = path.as_str();
            let name = c_component(name, &path)?;
            let parent = at::make_dirs(root, &parent_path, owner)?;
            at::check_filesystem(parent.as_fd(), shown)?;
            match at::create_child_file(parent.as_fd(), &name, 0o644, owner, shown) {
                Ok(file) => {
                    return Ok(WriteTarget {
                        file,
                        created: Some((parent, name)),
                        path,
                    })
                }
                Err(FilesError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // It exists: a file to truncate, a link to follow, or neither.
            // O_PATH | O_NOFOLLOW opens a symlink itself, never its target.
            let fd = match at::open_child(parent.as_fd(), &name, OFlag::O_PATH, shown) {
                Ok(fd) => fd,
                Err(FilesError::NotFound { .. }) => continue, // raced a removal
                Err(e) => return Err(e.into()),
            };
            let st = at::stat_fd(fd.as_fd(), shown)?;
            return match at::kind_of(st.st_mode) {
                SFlag::S_IFLNK => {
                    let target = at::read_link(fd.as_fd(), c"", shown)?;
                    path = path.follow(&String::from_utf8_lossy(&target));
                    continue;
                }
                SFlag::S_IFREG => Ok(WriteTarget {
                    file: at::reopen(fd.as_fd(), true, shown)?,
                    created: None,
                    path,
                }),
                SFlag::S_IFDIR => Err(FilesError::IsADirectory {
                    path: path.to_string(),
                }
                .into()),
                _ => Err(FilesError::NotAFile {
                    path: path.to_string(),
                    kind: at::kind_name(st.st_mode),
                }
                .into()),
            };
        }
        Err(FilesError::Os {
            op: "open",
            path: path.to_string(),
            errno: nix::errno::Errno::ELOOP,
        }
        .into())
    }

    // ---- directories and metadata ----

    /// Creates a directory and its missing parents (0755, the user's).
    /// `Ok(false)` when it already was a directory.
    pub fn make_dir(&self, path: &str) -> Result<bool> {
        let root = self.root()?;
        let path = self.path(path)?;
        match at::open_in_root(root.as_fd(), &path, OFlag::O_PATH) {
            Ok(fd) => {
                let st = at::stat_fd(fd.as_fd(), path.as_str())?;
                if at::kind_of(st.st_mode) == SFlag::S_IFDIR {
                    return Ok(false);
                }
                return Err(FilesError::AlreadyExists {
                    path: path.to_string(),
                }
                .into());
            }
            Err(FilesError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let owner = self.owner()?;
        let dir = at::make_dirs(root.as_fd(), &path, owner)?;
        at::check_filesystem(dir.as_fd(), path.as_str())?;
        Ok(true)
    }

    /// The entry `path` names itself: a final symlink is described, not
    /// followed.
    pub fn stat(&self, path: &str) -> Result<EntryInfo> {
        let root = self.root()?;
        let path = self.path(path)?;
        self.stat_at(root.as_fd(), &path)
    }

    fn stat_at(&self, root: BorrowedFd<'_>, path: &SbPath) -> Result<EntryInfo> {
        if path.is_root() {
            let st = at::stat_fd(root, "/")?;
            return Ok(EntryInfo::new(self, path, &st, None));
        }
        let (parent_path, name) = path.split()?;
        let shown = path.as_str();
        let name = c_component(name, path)?;
        let parent = at::open_in_root(root, &parent_path, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| rename_path(e, path))?;
        let st = at::stat_child(parent.as_fd(), &name, shown)?;
        let target = if at::kind_of(st.st_mode) == SFlag::S_IFLNK {
            Some(at::read_link(parent.as_fd(), &name, shown)?)
        } else {
            None
        };
        Ok(EntryInfo::new(self, path, &st, target))
    }

    /// Whether `path` names an entry (a dangling symlink counts).
    pub fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(Error::Files(FilesError::NotFound { .. }))
            | Err(Error::Files(FilesError::NotADirectory { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entries below directory `path`, `depth` levels deep (1: its
    /// children), sorted by name, each directory followed by its own
    /// entries. Symlinks to directories are listed, not entered; kernel
    /// pseudo filesystems (/proc) are listed but not entered.
    pub fn list(&self, path: &str, depth: usize) -> Result<Vec<EntryInfo>> {
        if depth == 0 {
            return Err(Error::invalid("depth", "must be at least 1"));
        }
        if depth > MAX_DEPTH {
            return Err(Error::invalid(
                "depth",
                format!("at most {MAX_DEPTH} levels"),
            ));
        }
        let root = self.root()?;
        let path = self.path(path)?;
        let dir = at::open_in_root(root.as_fd(), &path, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let mut out = Vec::new();
        self.list_into(dir.as_fd(), &path, depth, &mut out)?;
        Ok(out)
    }

    fn list_into(
        &self,
        dir: BorrowedFd<'_>,
        path: &SbPath,
        depth: usize,
        out: &mut Vec<EntryInfo>,
    ) -> Result<()> {
        for name in at::read_names(dir, path.as_str())? {
            let child = path.join(&at::show_name(&name));
            let shown = child.as_str();
            let st = match at::stat_child(dir, &name, shown) {
                Ok(st) => st,
                Err(FilesError::NotFound { .. }) => continue, // removed meanwhile
                Err(e) => return Err(e.into()),
            };
            let kind = at::kind_of(st.st_mode);
            let target = if kind == SFlag::S_IFLNK {
                at::read_link(dir, &name, shown).ok()
            } else {
                None
            };
            out.push(EntryInfo::new(self, &child, &st, target));
            if kind == SFlag::S_IFDIR && depth > 1 {
                let sub =
                    match at::open_child(dir, &name, OFlag::O_PATH | OFlag::O_DIRECTORY, shown) {
                        Ok(sub) => sub,
                        Err(FilesError::NotFound { .. })
                        | Err(FilesError::NotADirectory { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    };
                if !at::is_denied_filesystem(sub.as_fd()) {
                    self.list_into(sub.as_fd(), &child, depth - 1, out)?;
                }
            }
        }
        Ok(())
    }

    /// Renames (moves) `from` to `to`, replacing `to` if it is a file or an
    /// empty directory, like rename(2). Neither name is followed; missing
    /// parents of `to` are not created.
    pub fn rename(&self, from: &str, to: &str) -> Result<EntryInfo> {
        let root = self.root()?;
        let (from, to) = (self.path(from)?, self.path(to)?);
        let (from_parent, from_name) = from.split()?;
        let (to_parent, to_name) = to.split()?;
        let dir = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let from_dir =
            at::open_in_root(root.as_fd(), &from_parent, dir).map_err(|e| rename_path(e, &from))?;
        let to_dir =
            at::open_in_root(root.as_fd(), &to_parent, dir).map_err(|e| rename_path(e, &to))?;
        at::check_filesystem(from_dir.as_fd(), from.as_str())?;
        at::check_filesystem(to_dir.as_fd(), to.as_str())?;
        renameat2(
            from_dir.as_fd(),
            c_component(from_name, &from)?.as_c_str(),
            to_dir.as_fd(),
            c_component(to_name, &to)?.as_c_str(),
            RenameFlags::empty(),
        )
        .map_err(|errno| match errno {
            // Which of the two: the target's problems name the target.
            nix::errno::Errno::EEXIST
            | nix::errno::Errno::ENOTEMPTY
            | nix::errno::Errno::EISDIR => FilesError::from_errno("rename", to.as_str(), errno),
            errno => FilesError::from_errno("rename", from.as_str(), errno),
        })?;
        self.stat_at(root.as_fd(), &to)
    }

    /// Removes a file, a symlink (not what it points to) or a directory
    /// with everything in it.
    pub fn remove(&self, path: &str) -> Result<()> {
        let root = self.root()?;
        let path = self.path(path)?;
        let (parent_path, name) = path.split()?;
        let shown = path.as_str();
        let name = c_component(name, &path)?;
        let parent = at::open_in_root(
            root.as_fd(),
            &parent_path,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )
        .map_err(|e| rename_path(e, &path))?;
        at::check_filesystem(parent.as_fd(), shown)?;
        let st = at::stat_child(parent.as_fd(), &name, shown)?;
        if at::kind_of(st.st_mode) == SFlag::S_IFDIR {
            let dir = at::open_child(
                parent.as_fd(),
                &name,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                shown,
            )?;
            at::check_filesystem(dir.as_fd(), shown)?;
            empty_dir(dir.as_fd(), &path, 1)?;
            unlinkat(parent.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir)
        } else {
            unlinkat(parent.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir)
        }
        .map_err(|errno| FilesError::from_errno("remove", shown, errno))?;
        Ok(())
    }

    // ---- archives and events ----

    /// A tar stream of `path` and, for a directory, everything below it,
    /// produced as it is read (nothing is buffered beyond one block of a
    /// file). Members are named from `path`'s last component (`out/…` for
    /// `/work/out`), or relative to the root for `/`; modes, owners (inside
    /// ids), mtimes, symlinks, hard links and empty directories are kept.
    /// Kernel pseudo filesystems are not entered.
    pub fn export_tar(&self, path: &str) -> Result<TarExport> {
        let root = self.root()?;
        let path = self.path(path)?;
        Ok(tar::export(root, path, self.sandbox.ctx.range)?)
    }

    /// Unpacks a tar stream into directory `path` (created if missing, like
    /// `tar -C path -x`). Modes, mtimes, symlinks, hard links and empty
    /// directories are kept; everything belongs to the user (archive owners
    /// are not applied). A member that would land outside `path` or go
    /// through a symlink (`..`, any symlink on the way, the archive's own
    /// or one already there) fails with [`FilesError::PathEscape`]; device
    /// nodes and FIFOs are refused, and so is a member in the place of a
    /// directory that is not empty ([`FilesError::IsADirectory`]).
    pub fn import_tar(&self, path: &str, reader: impl Read) -> Result<TarImport> {
        let root = self.root()?;
        let path = self.path(path)?;
        let owner = self.owner()?;
        let dest = at::make_dirs(root.as_fd(), &path, owner)?;
        at::check_filesystem(dest.as_fd(), path.as_str())?;
        Ok(tar::import(
            dest.as_fd(),
            &path,
            reader,
            owner,
            self.max_file_size,
        )?)
    }

    /// Watches `path` (a directory, and with `recursive` every directory
    /// below it, including ones created later; or a single file) for
    /// changes made by anyone, inside or through this API. See
    /// [`Watch`](crate::Watch).
    pub fn watch(&self, path: &str, recursive: bool) -> Result<Watch> {
        let root = self.root()?;
        let path = self.path(path)?;
        watch::start(self.sandbox, root, path, recursive)
    }
}

/// A failure to open the parent of `path` is reported as about `path`.
fn rename_path(e: FilesError, path: &SbPath) -> FilesError {
    match e {
        FilesError::NotFound { .. } => FilesError::NotFound {
            path: path.to_string(),
        },
        FilesError::NotADirectory { .. } => FilesError::NotADirectory {
            path: path.to_string(),
        },
        e => e,
    }
}

/// Empties a directory, depth first, never following a name.
fn empty_dir(dir: BorrowedFd<'_>, path: &SbPath, level: usize) -> Result<(), FilesError> {
    if level > MAX_DEPTH {
        return Err(FilesError::TooDeep {
            path: path.to_string(),
            max: MAX_DEPTH,
        });
    }
    for name in at::read_names(dir, path.as_str())? {
        let child = path.join(&at::show_name(&name));
        let shown = child.as_str();
        let st = match at::stat_child(dir, &name, shown) {
            Ok(st) => st,
            Err(FilesError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let flags = if at::kind_of(st.st_mode) == SFlag::S_IFDIR {
            let sub = at::open_child(dir, &name, OFlag::O_PATH | OFlag::O_DIRECTORY, shown)?;
            at::check_filesystem(sub.as_fd(), shown)?;
            empty_dir(sub.as_fd(), &child, level + 1)?;
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        match unlinkat(dir, name.as_c_str(), flags) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(errno) => return Err(FilesError::from_errno("remove", shown, errno)),
        }
    }
    Ok(())
}

/// Copies `reader` into `file`, failing past `max` bytes. A failing reader
/// is the caller's error; a failing write is the sandbox's (NoSpace).
fn copy_limited(reader: &mut dyn Read, file: &mut File, max: u64, path: &SbPath) -> Result<()> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("read the data for {path}"), e)),
        };
        total += n as u64;
        if total > max {
            return Err(FilesError::FileTooLarge {
                path: path.to_string(),
                max,
            }
            .into());
        }
        file.write_all(&buf[..n])
            .map_err(|e| from_io("write", path.as_str(), e))?;
    }
}
