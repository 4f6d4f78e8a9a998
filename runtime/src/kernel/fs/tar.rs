//! Tar streams in and out of a sandbox.
//!
//! Export is a reader that walks the tree as it is read: the `tar` crate
//! encodes each header (long names included) into a small buffer, and file
//! content is copied straight from the open file, so memory stays at one
//! header and one read buffer whatever the tree's size. The walk holds one
//! directory descriptor per level and never follows a name.
//!
//! Import is sandlot's one tar extractor (`sandlot_rootfs::extract`, which
//! also unpacks image layers) with the files API's policy: it opens every
//! directory on a member's way from the destination without following any
//! symlink and creates the member with an `*at` call that does not follow
//! its name.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, SFlag};
use sandlot_rootfs::extract::{
    self, AbsoluteNames, ExtractError, Owners, Policy, SpecialFiles, SymlinkTargets,
};
use sandlot_rootfs::EntryProblem;
use tar::{EntryType, Header};

use super::at::{self, Owner, MAX_DEPTH};
use super::error::{from_io, FilesError};
use super::path::SbPath;
use crate::kernel::userns::IdRange;

// ---- export ----

/// One directory being walked: its descriptor, the names still to visit,
/// and its member name in the archive.
struct Level {
    dir: OwnedFd,
    names: std::vec::IntoIter<CString>,
    member: Vec<u8>,
    path: SbPath,
}

/// File content being copied into the stream.
struct Body {
    file: File,
    remaining: u64,
    pad: usize,
    path: String,
}

/// A tar stream of a sandbox tree ([`Files::export_tar`](crate::Files::export_tar)); read it
/// to the end. Errors name the path inside the sandbox (as
/// [`FilesError`] inside the `io::Error`).
pub struct TarExport {
    /// Keeps the sandbox's mounts reachable while the stream is read.
    _root: Arc<OwnedFd>,
    range: IdRange,
    /// The exported entry itself, until its header is written.
    top: Option<(OwnedFd, CString, Vec<u8>, SbPath)>,
    stack: Vec<Level>,
    /// Encodes headers into its buffer; drained by `read`.
    builder: tar::Builder<Vec<u8>>,
    pos: usize,
    body: Option<Body>,
    /// (dev, ino) of files with several links → their first member name.
    links: HashMap<(u64, u64), Vec<u8>>,
    finished: bool,
}

impl std::fmt::Debug for TarExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarExport")
            .field("depth", &self.stack.len())
            .field("finished", &self.finished)
            .finish()
    }
}

pub(crate) fn export(
    root: Arc<OwnedFd>,
    path: SbPath,
    range: IdRange,
) -> Result<TarExport, FilesError> {
    let mut export = TarExport {
        _root: root.clone(),
        range,
        top: None,
        stack: Vec::new(),
        builder: tar::Builder::new(Vec::new()),
        pos: 0,
        body: None,
        links: HashMap::new(),
        finished: false,
    };
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    if path.is_root() {
        // Members are named relative to the root; the root has no entry.
        let dir = at::open_in_root(root.as_fd(), &path, dir_flags)?;
        let names = at::read_names(dir.as_fd(), "/")?;
        export.stack.push(Level {
            dir,
            names: names.into_iter(),
            member: Vec::new(),
            path,
        });
    } else {
        let (parent_path, name) = path.split()?;
        let parent = at::open_in_root(root.as_fd(), &parent_path, dir_flags)?;
        let c_name = at::c_component(name, &path)?;
        // Fail now, not at the first read, if there is nothing to export.
        at::stat_child(parent.as_fd(), &c_name, path.as_str())?;
        at::check_filesystem(parent.as_fd(), path.as_str())?;
        let member = name.as_bytes().to_vec();
        export.top = Some((parent, c_name, member, path));
    }
    Ok(export)
}

fn header_for(st: &FileStat, range: &IdRange, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(u64::from(at::id_inside(range, st.st_uid)));
    header.set_gid(u64::from(at::id_inside(range, st.st_gid)));
    header.set_mtime(st.st_mtime.max(0) as u64);
    header.set_size(0);
    header
}

fn join_member(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

fn member_path(member: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(member))
}

fn tar_error(path: &str, e: io::Error) -> FilesError {
    FilesError::Tar {
        path: path.to_string(),
        reason: e.to_string(),
    }
}

impl TarExport {
    /// Writes the next member's header (and sets up its body); `false` at
    /// the end of the walk.
    fn next_member(&mut self) -> Result<bool, FilesError> {
        if let Some((parent, name, member, path)) = self.top.take() {
            self.emit(parent.as_fd(), &name, member, path, 1)?;
            return Ok(true);
        }
        loop {
            // The level is taken out for the call (emit may push the level
            // below it) and put back in its place.
            let Some(mut level) = self.stack.pop() else {
                return Ok(false);
            };
            let Some(name) = level.names.next() else {
                continue;
            };
            let member = join_member(&level.member, name.to_bytes());
            let path = level.path.join(&at::show_name(&name));
            let at = self.stack.len();
            let emitted = self.emit(level.dir.as_fd(), &name, member, path, at + 2);
            self.stack.insert(at, level);
            if emitted? {
                return Ok(true);
            }
        }
    }

    /// Writes one member; `false` if it vanished meanwhile or is a socket.
    fn emit(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        member: Vec<u8>,
        path: SbPath,
        depth: usize,
    ) -> Result<bool, FilesError> {
        let shown = path.as_str();
        let st = match at::stat_child(dir, name, shown) {
            Ok(st) => st,
            Err(FilesError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let range = self.range;
        let written = match at::kind_of(st.st_mode) {
            SFlag::S_IFDIR => {
                let mut header = header_for(&st, &range, EntryType::Directory);
                self.builder
                    .append_data(&mut header, member_path(&member), io::empty())
                    .map_err(|e| tar_error(shown, e))?;
                let sub = at::open_child(dir, name, OFlag::O_PATH | OFlag::O_DIRECTORY, shown)?;
                if !at::is_denied_filesystem(sub.as_fd()) {
                    if depth > MAX_DEPTH {
                        return Err(FilesError::TooDeep {
                            path: path.to_string(),
                            max: MAX_DEPTH,
                        });
                    }
                    let names = at::read_names(sub.as_fd(), shown)?;
                    self.stack.push(Level {
                        dir: sub,
                        names: names.into_iter(),
                        member,
                        path,
                    });
                }
                true
            }
            SFlag::S_IFREG => self.emit_file(dir, name, member, &path, &st)?,
            SFlag::S_IFLNK => {
                let target = at::read_link(dir, name, shown)?;
                let mut header = header_for(&st, &range, EntryType::Symlink);
                self.builder
                    .append_link(&mut header, member_path(&member), member_path(&target))
                    .map_err(|e| tar_error(shown, e))?;
                true
            }
            kind @ (SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK) => {
                let entry_type = match kind {
                    SFlag::S_IFIFO => EntryType::Fifo,
                    SFlag::S_IFCHR => EntryType::Char,
                    _ => EntryType::Block,
                };
                let mut header = header_for(&st, &range, entry_type);
                let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                header
                    .set_device_major(major)
                    .and_then(|()| header.set_device_minor(minor))
                    .map_err(|e| tar_error(shown, e))?;
                self.builder
                    .append_data(&mut header, member_path(&member), io::empty())
                    .map_err(|e| tar_error(shown, e))?;
                true
            }
            // Sockets have no tar form (GNU tar skips them too).
            _ => false,
        };
        Ok(written)
    }

    fn emit_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        member: Vec<u8>,
        path: &SbPath,
        st: &FileStat,
    ) -> Result<bool, FilesError> {
        let shown = path.as_str();
        let range = self.range;
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let mut header = header_for(st, &range, EntryType::Link);
                let first = first.clone();
                self.builder
                    .append_link(&mut header, member_path(&member), member_path(&first))
                    .map_err(|e| tar_error(shown, e))?;
                return Ok(true);
            }
            self.links.insert(key, member.clone());
        }
        // O_NONBLOCK: if it was swapped for a FIFO since the stat, opening
        // does not wait for a writer (and the fstat below skips it).
        let fd = match at::open_child(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, shown) {
            Ok(fd) => fd,
            Err(FilesError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let st = at::stat_fd(fd.as_fd(), shown)?;
        if at::kind_of(st.st_mode) != SFlag::S_IFREG {
            return Ok(false);
        }
        let size = st.st_size as u64;
        let mut header = header_for(&st, &range, EntryType::Regular);
        header.set_size(size);
        // The header says `size`; the body below supplies exactly that.
        self.builder
            .append_data(&mut header, member_path(&member), io::empty())
            .map_err(|e| tar_error(shown, e))?;
        if size == 0 {
            return Ok(true);
        }
        self.body = Some(Body {
            file: File::from(fd),
            remaining: size,
            pad: ((512 - size % 512) % 512) as usize,
            path: path.to_string(),
        });
        Ok(true)
    }

    /// Copies the current file into `buf`. A file that shrank while being
    /// read is padded with zeros and one that grew is cut: the header's
    /// size is what the archive promised.
    fn read_body(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let body = self.body.as_mut().expect("a body is being copied");
        let want = buf
            .len()
            .min(body.remaining.min(usize::MAX as u64) as usize);
        let mut n = loop {
            match body.file.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(from_io("read", &body.path, e).into()),
            }
        };
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        body.remaining -= n as u64;
        if body.remaining == 0 {
            let pad = body.pad;
            self.body = None;
            self.builder.get_mut().extend(std::iter::repeat_n(0u8, pad));
        }
        Ok(n)
    }
}

impl Read for TarExport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let pending = self.builder.get_ref().len() - self.pos;
            if pending > 0 {
                let n = pending.min(buf.len());
                buf[..n].copy_from_slice(&self.builder.get_ref()[self.pos..self.pos + n]);
                self.pos += n;
                if self.pos == self.builder.get_ref().len() {
                    self.builder.get_mut().clear();
                    self.pos = 0;
                }
                return Ok(n);
            }
            if self.body.is_some() {
                // A body always has bytes left (empty files get none), so
                // this never returns 0, which would read as the end.
                return self.read_body(buf);
            }
            if self.finished {
                return Ok(0);
            }
            if !self.next_member()? {
                // The two zero blocks that end an archive.
                self.builder.get_mut().extend([0u8; 1024]);
                self.finished = true;
            }
        }
    }
}

// ---- import ----

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarImport {
    /// Members created (directories, files, links).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Extracts `reader` into `dest` (the directory `dest_path` inside the
/// sandbox) with sandlot's one extractor (`sandlot_rootfs::extract`): no
/// `..`, no symlink followed on the way, hard links only to what is under
/// `dest`, no device nodes or FIFOs; a leading `/` is stripped as GNU tar
/// does; everything belongs to `owner`; a member in the place of a
/// directory that is not empty is refused, not allowed to delete it.
pub(crate) fn import(
    dest: BorrowedFd<'_>,
    dest_path: &SbPath,
    reader: impl Read,
    owner: Owner,
    max_file_size: u64,
) -> Result<TarImport, FilesError> {
    let policy = Policy {
        absolute_names: AbsoluteNames::Strip,
        owners: Owners::Fixed {
            uid: owner.uid,
            gid: owner.gid,
        },
        // Stored as they are: a sandbox resolves every link inside itself.
        symlink_targets: SymlinkTargets::Any,
        special_files: SpecialFiles::Refuse,
        whiteouts: false,
        xattrs: false,
        replace_full_directories: false,
        max_file_size: Some(max_file_size),
    };
    let stats = extract::extract(dest, reader, &policy).map_err(|e| import_error(e, dest_path))?;
    Ok(TarImport {
        entries: stats.entries,
        bytes: stats.bytes,
    })
}

/// The extractor's refusals as the files API's errors, about the member's
/// path inside the sandbox.
fn import_error(e: ExtractError, dest: &SbPath) -> FilesError {
    let shown = |entry: &str| dest.join(entry).to_string();
    match e {
        ExtractError::Refused { entry, problem } => {
            let path = shown(&entry);
            match problem {
                EntryProblem::DotDot
                | EntryProblem::Absolute
                | EntryProblem::ThroughSymlink
                | EntryProblem::SymlinkEscapes { .. }
                | EntryProblem::HardlinkEscapes { .. } => FilesError::PathEscape {
                    path,
                    within: dest.to_string(),
                },
                EntryProblem::ParentNotDir => FilesError::NotADirectory { path },
                EntryProblem::HardlinkTargetMissing { target } => FilesError::NotFound {
                    path: shown(&target),
                },
                EntryProblem::TooLarge { max, .. } => FilesError::FileTooLarge { path, max },
                EntryProblem::DirectoryNotEmpty => FilesError::IsADirectory { path },
                EntryProblem::BadName => FilesError::InvalidPath {
                    path,
                    reason: "not a usable name (empty, or with a NUL byte)",
                },
                EntryProblem::Device { .. } => FilesError::Tar {
                    path,
                    reason: "device nodes and FIFOs are not imported".into(),
                },
                other => FilesError::Tar {
                    path,
                    reason: other.to_string(),
                },
            }
        }
        ExtractError::Io {
            entry,
            action,
            source,
        } => from_io(action, &shown(&entry), source),
        ExtractError::Archive { entry, source } => {
            tar_error(&shown(entry.as_deref().unwrap_or("")), source)
        }
    }
}
