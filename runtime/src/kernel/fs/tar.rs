//! Tar streams in and out of a sandbox.
//!
//! Export is a reader that walks the tree as it is read: the `tar` crate
//! encodes each header (long names included) into a small buffer, and file
//! content is copied straight from the open file, so memory stays at one
//! header and one read buffer whatever the tree's size. The walk holds one
//! directory descriptor per level and never follows a name.
//!
//! Import resolves each member's parent with `RESOLVE_BENEATH` from the
//! destination directory — `..` above it and absolute symlinks on the way
//! are refused by the kernel — and creates the member with an `*at` call
//! that does not follow its name.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{futimens, utimensat, FileStat, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};
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

/// A member name as components, refusing `..` (GNU tar strips a leading
/// `/`, so does this).
fn member_components<'n>(
    name: &'n [u8],
    shown: &str,
    within: &str,
) -> Result<Vec<&'n [u8]>, FilesError> {
    let mut parts = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(FilesError::PathEscape {
                    path: shown.to_string(),
                    within: within.to_string(),
                })
            }
            part => parts.push(part),
        }
    }
    Ok(parts)
}

struct Importer<'a> {
    dest: BorrowedFd<'a>,
    dest_path: &'a SbPath,
    owner: Owner,
    max_file_size: u64,
    summary: TarImport,
    /// Directories whose mtime is set at the end (adding members changes
    /// it), deepest last.
    dir_times: Vec<(Vec<u8>, u64)>,
}

pub(crate) fn import(
    dest: BorrowedFd<'_>,
    dest_path: &SbPath,
    reader: impl Read,
    owner: Owner,
    max_file_size: u64,
) -> Result<TarImport, FilesError> {
    let mut importer = Importer {
        dest,
        dest_path,
        owner,
        max_file_size,
        summary: TarImport::default(),
        dir_times: Vec::new(),
    };
    let shown = dest_path.as_str();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| tar_error(shown, e))? {
        let mut entry = entry.map_err(|e| tar_error(shown, e))?;
        importer.member(&mut entry)?;
    }
    // Children first, so setting a parent's time is the last change to it.
    for (member, mtime) in importer.dir_times.iter().rev() {
        let time = TimeSpec::new(*mtime as i64, 0);
        let shown = dest_path.join(&String::from_utf8_lossy(member));
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        if let Ok(fd) = at::open_beneath(dest, member, flags, shown.as_str(), shown.as_str()) {
            let _ = futimens(fd.as_fd(), &time, &time);
        }
    }
    Ok(importer.summary)
}

/// Copies a member's content into the file it becomes; a failing write is
/// the sandbox's (NoSpace), a failing read the archive's.
fn copy_member(entry: &mut dyn Read, file: &mut File, shown: &str) -> Result<u64, FilesError> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(tar_error(shown, e)),
        };
        io::Write::write_all(file, &buf[..n]).map_err(|e| from_io("write", shown, e))?;
        total += n as u64;
    }
}

impl Importer<'_> {
    fn member<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), FilesError> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let within = self.dest_path.as_str();
        let path = self.dest_path.join(&String::from_utf8_lossy(&raw));
        let shown = path.as_str();
        let parts = member_components(&raw, shown, within)?;
        let mode = entry.header().mode().map_err(|e| tar_error(shown, e))? & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0);
        let Some((name, parent_parts)) = parts.split_last() else {
            // "./": the destination itself.
            if kind.is_dir() {
                at::chmod_fd(self.dest, mode, shown).ok();
            }
            return Ok(());
        };
        let parent_member = parent_parts.join(&b'/');
        let parent = self.parent(&parent_member, shown)?;
        let name = CString::new(*name).map_err(|_| FilesError::InvalidPath {
            path: shown.to_string(),
            reason: "contains a NUL byte",
        })?;
        let member = parts.join(&b'/');
        match kind {
            EntryType::Directory => {
                let dir = match at::make_child_dir(parent.as_fd(), &name, mode, self.owner, shown)?
                {
                    Some(dir) => dir,
                    None => {
                        // Already there: keep a directory, replace anything else.
                        match at::open_child(
                            parent.as_fd(),
                            &name,
                            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                            shown,
                        ) {
                            Ok(dir) => {
                                at::chmod_fd(dir.as_fd(), mode, shown)?;
                                dir
                            }
                            Err(_) => {
                                self.clear(parent.as_fd(), &name, shown)?;
                                at::make_child_dir(parent.as_fd(), &name, mode, self.owner, shown)?
                                    .ok_or_else(|| FilesError::AlreadyExists {
                                        path: shown.to_string(),
                                    })?
                            }
                        }
                    }
                };
                drop(dir);
                self.dir_times.push((member, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.header().size().map_err(|e| tar_error(shown, e))?;
                if size > self.max_file_size {
                    return Err(FilesError::FileTooLarge {
                        path: shown.to_string(),
                        max: self.max_file_size,
                    });
                }
                self.clear(parent.as_fd(), &name, shown)?;
                let mut file =
                    at::create_child_file(parent.as_fd(), &name, mode, self.owner, shown)?;
                let copied = match copy_member(&mut (&mut *entry).take(size), &mut file, shown) {
                    Ok(n) => n,
                    Err(e) => {
                        drop(file);
                        let _ =
                            unlinkat(parent.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir);
                        return Err(e);
                    }
                };
                let time = TimeSpec::new(mtime as i64, 0);
                futimens(file.as_fd(), &time, &time)
                    .map_err(|errno| FilesError::from_errno("set times", shown, errno))?;
                self.summary.bytes += copied;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| tar_error(shown, io::Error::other("symlink without a target")))?
                    .into_owned();
                let target = CString::new(target).map_err(|_| FilesError::InvalidPath {
                    path: shown.to_string(),
                    reason: "link target contains a NUL byte",
                })?;
                self.clear(parent.as_fd(), &name, shown)?;
                symlinkat(target.as_c_str(), parent.as_fd(), name.as_c_str())
                    .map_err(|errno| FilesError::from_errno("symlink", shown, errno))?;
                at::chown_child(parent.as_fd(), &name, self.owner, shown)?;
                let time = TimeSpec::new(mtime as i64, 0);
                let _ = utimensat(
                    parent.as_fd(),
                    name.as_c_str(),
                    &time,
                    &time,
                    UtimensatFlags::NoFollowSymlink,
                );
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        tar_error(shown, io::Error::other("hard link without a target"))
                    })?
                    .into_owned();
                let target_shown = self.dest_path.join(&String::from_utf8_lossy(&target));
                let target_parts = member_components(&target, target_shown.as_str(), within)?;
                let Some((target_name, target_parent)) = target_parts.split_last() else {
                    return Err(FilesError::InvalidPath {
                        path: shown.to_string(),
                        reason: "hard link to the destination itself",
                    });
                };
                let target_dir = at::open_beneath(
                    self.dest,
                    &target_parent.join(&b'/'),
                    OFlag::O_PATH | OFlag::O_DIRECTORY,
                    target_shown.as_str(),
                    within,
                )?;
                let target_name =
                    CString::new(*target_name).map_err(|_| FilesError::InvalidPath {
                        path: target_shown.to_string(),
                        reason: "contains a NUL byte",
                    })?;
                self.clear(parent.as_fd(), &name, shown)?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the
                // symlink itself, never what it points to.
                linkat(
                    target_dir.as_fd(),
                    target_name.as_c_str(),
                    parent.as_fd(),
                    name.as_c_str(),
                    AtFlags::empty(),
                )
                .map_err(|errno| FilesError::from_errno("link", shown, errno))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(FilesError::Tar {
                    path: shown.to_string(),
                    reason: "device nodes and FIFOs are not imported".into(),
                });
            }
            // GNU long names and pax records are consumed by the tar crate;
            // anything else unknown is skipped, as GNU tar does.
            _ => return Ok(()),
        }
        self.summary.entries += 1;
        Ok(())
    }

    /// The directory a member goes in, created (for the user) if the archive
    /// did not list it first.
    fn parent(&self, member: &[u8], shown: &str) -> Result<OwnedFd, FilesError> {
        let within = self.dest_path.as_str();
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        match at::open_beneath(self.dest, member, flags, shown, within) {
            Err(FilesError::NotFound { .. }) => {}
            other => return other,
        }
        let mut current = at::open_beneath(self.dest, b".", flags, shown, within)?;
        let mut so_far: Vec<u8> = Vec::new();
        for part in member.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            so_far = join_member(&so_far, part);
            current = match at::open_beneath(self.dest, &so_far, flags, shown, within) {
                Ok(fd) => fd,
                Err(FilesError::NotFound { .. }) => {
                    let name = CString::new(part).map_err(|_| FilesError::InvalidPath {
                        path: shown.to_string(),
                        reason: "contains a NUL byte",
                    })?;
                    at::make_child_dir(current.as_fd(), &name, 0o755, self.owner, shown)?
                        .ok_or_else(|| FilesError::NotFound {
                            path: shown.to_string(),
                        })?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(current)
    }

    /// Removes whatever non-directory is at `name` so a member can take its
    /// place (what tar does by default).
    fn clear(&self, dir: BorrowedFd<'_>, name: &CStr, shown: &str) -> Result<(), FilesError> {
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(nix::errno::Errno::EISDIR) => {
                // An empty directory may go; a full one is the caller's call.
                unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(|errno| match errno {
                    nix::errno::Errno::ENOTEMPTY | nix::errno::Errno::EEXIST => {
                        FilesError::IsADirectory {
                            path: shown.to_string(),
                        }
                    }
                    errno => FilesError::from_errno("remove", shown, errno),
                })
            }
            Err(errno) => Err(FilesError::from_errno("remove", shown, errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_never_climb() {
        assert_eq!(
            member_components(b"./a//b/", "x", "/d").unwrap(),
            vec![&b"a"[..], &b"b"[..]]
        );
        assert_eq!(
            member_components(b"/etc/passwd", "x", "/d").unwrap(),
            vec![&b"etc"[..], &b"passwd"[..]]
        );
        assert!(matches!(
            member_components(b"a/../../etc", "/d/a/../../etc", "/d"),
            Err(FilesError::PathEscape { .. })
        ));
        assert!(member_components(b"./", "x", "/d").unwrap().is_empty());
    }
}
