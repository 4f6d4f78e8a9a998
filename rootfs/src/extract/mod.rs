//! The one tar extractor of sandlot, for archives nobody vouches for: OCI
//! image layers into the layer cache, and `files().import_tar()` into a
//! sandbox. The callers differ only in [`Policy`]; the rules below hold
//! whatever it says.
//!
//! - A member's path is split into names. `..` anywhere is refused; a
//!   leading `/` is refused or stripped (policy); `.` and empty names are
//!   dropped.
//! - Every directory on the way is opened from the destination with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no symlink is ever
//!   followed, whether the archive made it or it was there before, and a
//!   path through one is refused ([`EntryProblem::ThroughSymlink`]).
//! - The final name is made by a call that never follows it: `O_CREAT |
//!   O_EXCL | O_NOFOLLOW`, mkdirat, symlinkat, mknodat, unlinkat, linkat
//!   without `AT_SYMLINK_FOLLOW`.
//! - What was there is replaced as tar does: a non-directory is unlinked;
//!   a directory stays for a directory member, and is otherwise removed —
//!   only if empty, unless the policy replaces full ones.
//! - A hard link's target is a member path under the same rules; it must
//!   exist and be a regular file or a symlink.
//! - New files and directories are private (0600/0700) until they have
//!   their owner, and only then get their mode.
//! - Device nodes and FIFOs are refused or skipped (policy); any other
//!   entry type tar knows is refused. Whiteouts (`.wh.NAME`) become
//!   overlayfs whiteouts only when the policy asks.
//!
//! Errors name the member. Nothing is cleaned up beyond the member being
//! made: what earlier members made stays (the layer cache unpacks into a
//! temporary directory it removes; an import into a sandbox is like `tar
//! -x`).

mod meta;
mod names;
mod tree;
pub(crate) mod whiteout;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tar::EntryType;

use self::meta::Meta;
use self::whiteout::Whiteout;
use crate::error::EntryProblem;
use crate::sys::{self, Resolve};

/// What an archive may do beyond the rules every extraction follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub absolute_names: AbsoluteNames,
    pub owners: Owners,
    pub symlink_targets: SymlinkTargets,
    /// Device nodes and FIFOs.
    pub special_files: SpecialFiles,
    /// `.wh.NAME` and `.wh..wh..opq` become overlayfs whiteouts (a 0:0
    /// character device, the `trusted.overlay.opaque` xattr) instead of
    /// files of that name.
    pub whiteouts: bool,
    /// pax `SCHILY.xattr.*` records are applied (only `user.*` outside
    /// `user.overlay.*`, and POSIX ACLs; never `trusted.*` or
    /// `security.*`).
    pub xattrs: bool,
    /// A non-directory member replaces a directory with all it holds
    /// (`true`), or only an empty one (`false`:
    /// [`EntryProblem::DirectoryNotEmpty`]).
    pub replace_full_directories: bool,
    /// Regular files larger than this are refused before anything is
    /// written ([`EntryProblem::TooLarge`]).
    pub max_file_size: Option<u64>,
}

impl Policy {
    /// An OCI image layer, unpacked into an empty directory of the layer
    /// cache: names are relative, owners are the archive's numeric ids
    /// (what they are inside a sandbox), symlinks may not point above the
    /// layer's root, no device nodes, whiteouts and safe xattrs kept.
    pub fn image_layer() -> Policy {
        Policy {
            absolute_names: AbsoluteNames::Refuse,
            owners: Owners::FromArchive,
            symlink_targets: SymlinkTargets::WithinRoot,
            special_files: SpecialFiles::Refuse,
            whiteouts: true,
            xattrs: true,
            replace_full_directories: true,
            max_file_size: None,
        }
    }
}

/// Member names that start with `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsoluteNames {
    /// [`EntryProblem::Absolute`].
    Refuse,
    /// Taken as relative to the destination, as GNU tar does by default.
    Strip,
}

/// Who owns what is extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The numeric ids in the archive (never looked up by name); parent
    /// directories the archive did not list belong to 0:0.
    FromArchive,
    /// These host ids, for every member and implied parent; the archive's
    /// are ignored, and existing directories keep their owner.
    Fixed { uid: u32, gid: u32 },
}

/// Where symlinks may point. Symlinks are stored, never followed here, so
/// this is about what they mean to whoever reads the tree later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymlinkTargets {
    /// Anywhere (a sandbox resolves every link inside itself anyway).
    Any,
    /// Not above the destination, resolved lexically from the link's
    /// directory (absolute targets from the destination):
    /// [`EntryProblem::SymlinkEscapes`].
    WithinRoot,
}

/// Device nodes and FIFOs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialFiles {
    /// [`EntryProblem::Device`].
    Refuse,
    /// Left out, as an unprivileged `tar -x` would.
    Skip,
}

/// What an extraction made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Members made (directories, files, links, whiteouts).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A member the rules or the policy refuse.
    #[error("entry {entry:?}: {problem}")]
    Refused {
        entry: String,
        problem: EntryProblem,
    },
    /// Making a member failed (no space, a read-only directory, …).
    #[error("entry {entry:?}: {action}: {source}")]
    Io {
        entry: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The archive itself could not be read (a broken header, a stream cut
    /// short); `entry` is the member being read, if any.
    #[error("read archive{}: {source}", entry.as_ref().map(|e| format!(" at {e:?}")).unwrap_or_default())]
    Archive {
        entry: Option<String>,
        #[source]
        source: io::Error,
    },
}

/// Extracts the tar stream `archive` into the directory `dest` (any
/// descriptor of it, `O_PATH` included) under `policy`.
pub fn extract(
    dest: BorrowedFd<'_>,
    archive: impl Read,
    policy: &Policy,
) -> Result<Stats, ExtractError> {
    let root = sys::openat2(
        dest,
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        Resolve::STRICT,
    )
    .map_err(|source| ExtractError::Io {
        entry: String::new(),
        action: "open the destination",
        source,
    })?;
    let mut extractor = Extractor {
        root,
        policy,
        dir_times: Vec::new(),
        stats: Stats::default(),
    };
    let broken = |source| ExtractError::Archive {
        entry: None,
        source,
    };
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(broken)? {
        extractor.member(&mut entry.map_err(broken)?)?;
    }
    extractor.set_dir_times()?;
    Ok(extractor.stats)
}

/// The member an error is about, as text.
pub(crate) struct At {
    entry: String,
}

impl At {
    fn new(raw: &[u8]) -> At {
        At {
            entry: String::from_utf8_lossy(raw).into_owned(),
        }
    }

    fn refused(&self, problem: EntryProblem) -> ExtractError {
        ExtractError::Refused {
            entry: self.entry.clone(),
            problem,
        }
    }

    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> ExtractError + '_ {
        move |source| ExtractError::Io {
            entry: self.entry.clone(),
            action,
            source,
        }
    }

    /// Errors of a no-symlinks walk mean the archive tried something.
    fn resolve(&self, action: &'static str) -> impl FnOnce(io::Error) -> ExtractError + '_ {
        move |e| match e.raw_os_error() {
            Some(libc::ELOOP) => self.refused(EntryProblem::ThroughSymlink),
            Some(libc::ENOTDIR) => self.refused(EntryProblem::ParentNotDir),
            Some(libc::EXDEV) => self.refused(EntryProblem::DotDot),
            _ => self.io(action)(e),
        }
    }
}

struct Extractor<'p> {
    /// The destination, open for reading.
    root: OwnedFd,
    policy: &'p Policy,
    /// Directory mtimes are set last: creating children changes them.
    dir_times: Vec<(Vec<u8>, (i64, u32))>,
    stats: Stats,
}

impl Extractor<'_> {
    fn member<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            // Global records carry defaults for later members; nothing here
            // reads them, so every member stands on its own. (The tar crate
            // folds local records into the member they precede.)
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let at = At::new(&raw);
        let names = names::split(&raw, self.policy.absolute_names).map_err(|p| at.refused(p))?;
        let meta = Meta::read(entry, self.policy, &at)?;

        let Some((&name, parents)) = names.split_last() else {
            // `./` itself: the destination's own metadata.
            if !kind.is_dir() {
                return Err(at.refused(EntryProblem::BadName));
            }
            let root = File::from(self.open_dir(b"", &at)?);
            meta.apply(&root, self.owns_existing(), &at)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        };
        if self.policy.whiteouts {
            if let Some(whiteout) = whiteout::classify(name) {
                return self.whiteout(whiteout, parents, &at);
            }
        }
        let cname = names::cstring(name).map_err(|p| at.refused(p))?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, parents, &cname, &meta, &at)?
            }
            EntryType::Directory => self.directory(&names, &cname, &meta, &at)?,
            EntryType::Symlink => {
                let target = link_target(entry, &at)?;
                if self.policy.symlink_targets == SymlinkTargets::WithinRoot
                    && names::symlink_escapes(parents, &target)
                {
                    return Err(at.refused(EntryProblem::SymlinkEscapes {
                        target: String::from_utf8_lossy(&target).into_owned(),
                    }));
                }
                let ctarget = names::cstring(&target).map_err(|p| at.refused(p))?;
                let dir = self.parent(parents, &at)?;
                self.clear(&dir, &cname, false, &at)?;
                sys::symlinkat(&ctarget, dir.as_fd(), &cname).map_err(at.io("symlink"))?;
                sys::lchownat(dir.as_fd(), &cname, meta.uid, meta.gid).map_err(at.io("chown"))?;
                // Symlinks carry no mode, and no xattrs an archive may set.
                sys::lutimensat(dir.as_fd(), &cname, meta.mtime.0, meta.mtime.1)
                    .map_err(at.io("set times"))?;
            }
            EntryType::Link => {
                let target = link_target(entry, &at)?;
                self.hardlink(parents, &cname, &target, &at)?
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match kind {
                    EntryType::Char => "character device",
                    EntryType::Block => "block device",
                    _ => "fifo",
                };
                return match self.policy.special_files {
                    SpecialFiles::Refuse => Err(at.refused(EntryProblem::Device { kind })),
                    SpecialFiles::Skip => Ok(()),
                };
            }
            other => {
                return Err(at.refused(EntryProblem::Unsupported {
                    kind: format!("{other:?} ({:?})", other.as_byte() as char),
                }))
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Whether existing directories get the archive's owner: only when the
    /// archive's owners are used at all.
    fn owns_existing(&self) -> bool {
        self.policy.owners == Owners::FromArchive
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parents: &[&[u8]],
        name: &std::ffi::CStr,
        meta: &Meta,
        at: &At,
    ) -> Result<(), ExtractError> {
        let size = entry.header().size().map_err(at.io("read header"))?;
        if let Some(max) = self.policy.max_file_size {
            if size > max {
                return Err(at.refused(EntryProblem::TooLarge { size, max }));
            }
        }
        let dir = self.parent(parents, at)?;
        self.clear(&dir, name, false, at)?;
        let fd = sys::openat2(
            dir.as_fd(),
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
            Resolve::STRICT,
        )
        .map_err(at.resolve("create"))?;
        let mut file = File::from(fd);
        let written = meta
            .apply(&file, true, at)
            .and_then(|()| copy(entry, &mut file, at))
            .and_then(|n| {
                file.set_times(meta.times()).map_err(at.io("set times"))?;
                Ok(n)
            });
        match written {
            Ok(n) => {
                self.stats.bytes += n;
                Ok(())
            }
            Err(e) => {
                // No half-written file stays behind under the member's name.
                drop(file);
                let _ = sys::unlinkat(dir.as_fd(), name, false);
                Err(e)
            }
        }
    }

    fn directory(
        &mut self,
        names: &[&[u8]],
        name: &std::ffi::CStr,
        meta: &Meta,
        at: &At,
    ) -> Result<(), ExtractError> {
        let parents = &names[..names.len() - 1];
        let dir = self.parent(parents, at)?;
        let existed = self.clear(&dir, name, true, at)?;
        if !existed {
            // Private until it has its owner.
            sys::mkdirat(dir.as_fd(), name, 0o700).map_err(at.io("mkdir"))?;
        }
        let fd = sys::openat2(
            dir.as_fd(),
            name,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            Resolve::STRICT,
        )
        .map_err(at.resolve("open"))?;
        meta.apply(&File::from(fd), !existed || self.owns_existing(), at)?;
        self.dir_times.push((names::join(names), meta.mtime));
        Ok(())
    }

    /// A hard link to something already under the destination (in an
    /// image layer: an earlier member of the same layer). The target is an
    /// archive path, so it gets the same checks as member paths.
    fn hardlink(
        &mut self,
        parents: &[&[u8]],
        name: &std::ffi::CStr,
        target: &[u8],
        at: &At,
    ) -> Result<(), ExtractError> {
        let shown = || String::from_utf8_lossy(target).into_owned();
        let escapes = || at.refused(EntryProblem::HardlinkEscapes { target: shown() });
        let missing = || at.refused(EntryProblem::HardlinkTargetMissing { target: shown() });
        let tnames = names::split(target, self.policy.absolute_names).map_err(|_| escapes())?;
        let Some((&tname, tparents)) = tnames.split_last() else {
            return Err(escapes());
        };
        let tdir = match self.open_dir(&names::join(tparents), at) {
            Ok(fd) => fd,
            Err(ExtractError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Err(missing())
            }
            Err(ExtractError::Refused { .. }) => return Err(escapes()),
            Err(e) => return Err(e),
        };
        let ctname = names::cstring(tname).map_err(|p| at.refused(p))?;
        match sys::lstatat(tdir.as_fd(), &ctname) {
            Ok(st) => match st.st_mode & libc::S_IFMT {
                libc::S_IFREG | libc::S_IFLNK => {}
                libc::S_IFDIR => {
                    return Err(at.refused(EntryProblem::Unsupported {
                        kind: "hard link to a directory".into(),
                    }))
                }
                _ => {
                    return Err(at.refused(EntryProblem::Unsupported {
                        kind: "hard link to a device, FIFO, socket or whiteout".into(),
                    }))
                }
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(missing()),
            Err(e) => return Err(at.io("stat link target")(e)),
        }
        let dir = self.parent(parents, at)?;
        self.clear(&dir, name, false, at)?;
        sys::linkat(tdir.as_fd(), &ctname, dir.as_fd(), name).map_err(at.io("link"))
    }

    fn whiteout(
        &mut self,
        whiteout: Whiteout<'_>,
        parents: &[&[u8]],
        at: &At,
    ) -> Result<(), ExtractError> {
        match whiteout {
            Whiteout::Ignore => return Ok(()),
            Whiteout::Opaque => {
                let dir = self.parent(parents, at)?;
                whiteout::make_opaque(dir.as_fd()).map_err(at.io("mark opaque"))?;
            }
            Whiteout::Remove(hidden) => {
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(at.refused(EntryProblem::BadName));
                }
                let hidden = names::cstring(hidden).map_err(|p| at.refused(p))?;
                let dir = self.parent(parents, at)?;
                self.clear(&dir, &hidden, false, at)?;
                whiteout::make_whiteout(dir.as_fd(), &hidden).map_err(at.io("create whiteout"))?;
            }
        }
        self.stats.entries += 1;
        Ok(())
    }
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, at: &At) -> Result<Vec<u8>, ExtractError> {
    match entry.link_name_bytes() {
        Some(target) if !target.is_empty() => Ok(target.into_owned()),
        _ => Err(at.refused(EntryProblem::BadName)),
    }
}

/// Copies a member's content into its file: a failing read is the
/// archive's, a failing write the destination's (no space, say).
fn copy(entry: &mut impl Read, file: &mut File, at: &At) -> Result<u64, ExtractError> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ExtractError::Archive {
                    entry: Some(at.entry.clone()),
                    source,
                })
            }
        };
        io::Write::write_all(file, &buf[..n]).map_err(at.io("write"))?;
        total += n as u64;
    }
}
