//! Unpacking one layer tar into a fresh directory, refusing anything that
//! could reach outside it.
//!
//! Every entry is created relative to a directory fd that was opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and the final component
//! with O_EXCL/O_NOFOLLOW or an *at call that does not follow: no symlink
//! is ever followed, whether the layer made it or not. Symlinks themselves
//! are stored as they are, after a lexical check that their target stays
//! inside the root when resolved from the link's directory (absolute
//! targets are resolved from the root, as they will be in the sandbox).
//! Owners are the numeric ids from the tar (never looked up by name), so
//! files end up owned by what they are inside the sandbox.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, FileTimes, Permissions};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{fchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tar::EntryType;

use super::whiteout::{self, Whiteout};
use crate::error::EntryProblem;
use crate::sys::{self, RESOLVE_STRICT};
use crate::Error;

/// What a layer held, for the store's bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UnpackStats {
    pub entries: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
}

/// Unpacks the tar `stream` of layer `layer` (its digest, for errors) into
/// the existing empty directory `root`.
pub(crate) fn unpack(layer: &str, stream: impl Read, root: &Path) -> Result<UnpackStats, Error> {
    let root_file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)
        .map_err(Error::io("open", root))?;
    let mut unpacker = Unpacker {
        layer,
        root_path: root.to_path_buf(),
        root: root_file.into(),
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(|e| Error::Layer {
        layer: layer.to_string(),
        problem: format!("read tar: {e}"),
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Layer {
            layer: layer.to_string(),
            problem: format!("read tar: {e}"),
        })?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.set_dir_times()?;
    Ok(unpacker.stats)
}

/// The layer and entry an error is about.
struct At<'a> {
    layer: &'a str,
    entry: &'a str,
}

impl At<'_> {
    fn bad(&self, problem: EntryProblem) -> Error {
        Error::Entry {
            layer: self.layer.to_string(),
            entry: self.entry.to_string(),
            problem,
        }
    }

    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::EntryIo {
            layer: self.layer.to_string(),
            entry: self.entry.to_string(),
            action,
            source,
        }
    }

    /// Errors of a no-symlinks walk mean the layer tried something.
    fn resolve(&self, action: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |e| match e.raw_os_error() {
            Some(libc::ELOOP) => self.bad(EntryProblem::ThroughSymlink),
            Some(libc::ENOTDIR) => self.bad(EntryProblem::ParentNotDir),
            Some(libc::EXDEV) => self.bad(EntryProblem::DotDot),
            _ => self.io(action)(e),
        }
    }
}

/// Ownership, permissions, times and xattrs of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: (i64, u32),
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Unpacker<'a> {
    layer: &'a str,
    root_path: PathBuf,
    root: OwnedFd,
    /// Directory mtimes are set last: creating children changes them.
    dir_times: Vec<(Vec<u8>, (i64, u32))>,
    stats: UnpackStats,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Global headers carry defaults for later entries; we read
            // nothing from them, so every entry stands on its own.
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let at = At {
            layer: self.layer,
            entry: &shown,
        };
        self.stats.entries += 1;
        let comps = normalize(&raw).map_err(|p| at.bad(p))?;
        let meta = read_meta(entry, &at)?;

        let Some((&name, parents)) = comps.split_last() else {
            // `./` itself: the layer root's own metadata.
            if !kind.is_dir() {
                return Err(at.bad(EntryProblem::BadName));
            }
            let root = File::from(self.open_dir(b"", &at)?);
            apply_meta(&root, &meta, &at)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        };

        if let Some(whiteout) = whiteout::classify(name) {
            return match whiteout {
                Whiteout::Ignore => Ok(()),
                Whiteout::Opaque => {
                    let dir = self.parent(parents, &at)?;
                    whiteout::make_opaque(dir.as_fd()).map_err(at.io("mark opaque"))
                }
                Whiteout::Remove(hidden) => {
                    if hidden.is_empty() || hidden == b"." || hidden == b".." {
                        return Err(at.bad(EntryProblem::BadName));
                    }
                    let hidden = cstring(hidden, &at)?;
                    let dir = self.parent(parents, &at)?;
                    self.clear(&dir, parents, &hidden, false, &at)?;
                    whiteout::make_whiteout(dir.as_fd(), &hidden).map_err(at.io("create whiteout"))
                }
            };
        }

        let cname = cstring(name, &at)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let dir = self.parent(parents, &at)?;
                self.clear(&dir, parents, &cname, false, &at)?;
                let fd = sys::openat2(
                    dir.as_fd(),
                    &cname,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                    RESOLVE_STRICT,
                )
                .map_err(at.resolve("create"))?;
                let mut file = File::from(fd);
                let written = io::copy(entry, &mut file).map_err(at.io("write"))?;
                self.stats.bytes += written;
                apply_meta(&file, &meta, &at)?;
                file.set_times(file_times(meta.mtime))
                    .map_err(at.io("set times"))
            }
            EntryType::Directory => {
                let dir = self.parent(parents, &at)?;
                if !self.clear(&dir, parents, &cname, true, &at)? {
                    sys::mkdirat(dir.as_fd(), &cname, 0o700).map_err(at.io("mkdir"))?;
                }
                let fd = sys::openat2(
                    dir.as_fd(),
                    &cname,
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                    RESOLVE_STRICT,
                )
                .map_err(at.resolve("open"))?;
                apply_meta(&File::from(fd), &meta, &at)?;
                self.dir_times.push((raw_join(&comps), meta.mtime));
                Ok(())
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.bad(EntryProblem::BadName))?
                    .into_owned();
                if target.is_empty() {
                    return Err(at.bad(EntryProblem::BadName));
                }
                if symlink_escapes(parents, &target) {
                    return Err(at.bad(EntryProblem::SymlinkEscapes {
                        target: String::from_utf8_lossy(&target).into_owned(),
                    }));
                }
                let ctarget = cstring(&target, &at)?;
                let dir = self.parent(parents, &at)?;
                self.clear(&dir, parents, &cname, false, &at)?;
                sys::symlinkat(&ctarget, dir.as_fd(), &cname).map_err(at.io("symlink"))?;
                sys::lchownat(dir.as_fd(), &cname, meta.uid, meta.gid).map_err(at.io("chown"))?;
                // Symlinks carry no mode, and only trusted/security xattrs,
                // which images may not set anyway.
                sys::lutimensat(dir.as_fd(), &cname, meta.mtime.0, meta.mtime.1)
                    .map_err(at.io("set times"))
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.bad(EntryProblem::BadName))?
                    .into_owned();
                self.hardlink(parents, &cname, &target, &at)
            }
            EntryType::Char => Err(at.bad(EntryProblem::Device {
                kind: "character device",
            })),
            EntryType::Block => Err(at.bad(EntryProblem::Device {
                kind: "block device",
            })),
            EntryType::Fifo => Err(at.bad(EntryProblem::Device { kind: "fifo" })),
            other => Err(at.bad(EntryProblem::Unsupported {
                kind: format!("{other:?} ({:?})", other.as_byte() as char),
            })),
        }
    }

    /// A hard link to an earlier entry of this same layer. The link target
    /// is an archive path, so it gets the same checks as entry paths.
    fn hardlink(
        &mut self,
        parents: &[&[u8]],
        name: &CString,
        target: &[u8],
        at: &At<'_>,
    ) -> Result<(), Error> {
        let shown = || String::from_utf8_lossy(target).into_owned();
        let tcomps = normalize(target)
            .map_err(|_| at.bad(EntryProblem::HardlinkEscapes { target: shown() }))?;
        let Some((&tname, tparents)) = tcomps.split_last() else {
            return Err(at.bad(EntryProblem::HardlinkEscapes { target: shown() }));
        };
        let missing = || at.bad(EntryProblem::HardlinkTargetMissing { target: shown() });
        let tdir = match self.open_dir(&raw_join(tparents), at) {
            Ok(fd) => fd,
            Err(Error::EntryIo { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Err(missing())
            }
            Err(Error::Entry { .. }) => {
                return Err(at.bad(EntryProblem::HardlinkEscapes { target: shown() }))
            }
            Err(e) => return Err(e),
        };
        let ctname = cstring(tname, at)?;
        match sys::lstatat(tdir.as_fd(), &ctname) {
            Ok(st) => match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    return Err(at.bad(EntryProblem::Unsupported {
                        kind: "hard link to a directory".into(),
                    }))
                }
                libc::S_IFCHR => {
                    return Err(at.bad(EntryProblem::Unsupported {
                        kind: "hard link to a whiteout".into(),
                    }))
                }
                _ => {}
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(missing()),
            Err(e) => return Err(at.io("stat link target")(e)),
        }
        let dir = self.parent(parents, at)?;
        self.clear(&dir, parents, name, false, at)?;
        sys::linkat(tdir.as_fd(), &ctname, dir.as_fd(), name).map_err(at.io("link"))
    }

    /// Opens an existing directory below the root without following
    /// symlinks (`b""` is the root itself).
    fn open_dir(&self, rel: &[u8], at: &At<'_>) -> Result<OwnedFd, Error> {
        let path = if rel.is_empty() {
            c".".to_owned()
        } else {
            cstring(rel, at)?
        };
        sys::openat2(
            self.root.as_fd(),
            &path,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            RESOLVE_STRICT,
        )
        .map_err(at.resolve("open"))
    }

    /// The directory an entry goes into, created (0755, root-owned, like
    /// other unpackers do) when the tar did not list it first.
    fn parent(&self, comps: &[&[u8]], at: &At<'_>) -> Result<OwnedFd, Error> {
        match self.open_dir(&raw_join(comps), at) {
            Ok(fd) => return Ok(fd),
            Err(Error::EntryIo { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let mut dir = self.open_dir(b"", at)?;
        for comp in comps {
            let name = cstring(comp, at)?;
            let open = |dir: &OwnedFd| {
                sys::openat2(
                    dir.as_fd(),
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                    RESOLVE_STRICT,
                )
            };
            dir = match open(&dir) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    sys::mkdirat(dir.as_fd(), &name, 0o755).map_err(at.io("mkdir"))?;
                    let fd = open(&dir).map_err(at.resolve("open"))?;
                    // mkdir's mode went through the umask.
                    File::from(fd.try_clone().map_err(at.io("dup"))?)
                        .set_permissions(Permissions::from_mode(0o755))
                        .map_err(at.io("chmod"))?;
                    fd
                }
                Err(e) => return Err(at.resolve("open")(e)),
            };
        }
        Ok(dir)
    }

    /// Makes room for `name` in `dir`: a later entry replaces an earlier
    /// one, as tar does. An existing directory is kept when `keep_dir`
    /// (returns true then), otherwise removed with its contents.
    fn clear(
        &self,
        dir: &OwnedFd,
        parents: &[&[u8]],
        name: &CString,
        keep_dir: bool,
        at: &At<'_>,
    ) -> Result<bool, Error> {
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
        // The parents were just opened without following symlinks and this
        // temporary tree is ours alone, so the path names the same
        // directory; remove_dir_all does not follow symlinks inside it.
        let mut path = self.root_path.clone();
        for comp in parents {
            path.push(OsStr::from_bytes(comp));
        }
        path.push(OsStr::from_bytes(name.as_bytes()));
        fs::remove_dir_all(&path).map_err(at.io("replace directory"))?;
        Ok(false)
    }

    fn set_dir_times(&self) -> Result<(), Error> {
        for (rel, mtime) in self.dir_times.iter().rev() {
            let shown = String::from_utf8_lossy(rel).into_owned();
            let at = At {
                layer: self.layer,
                entry: &shown,
            };
            // A directory a later entry replaced is simply gone.
            let Ok(fd) = self.open_dir(rel, &at) else {
                continue;
            };
            File::from(fd)
                .set_times(file_times(*mtime))
                .map_err(at.io("set times"))?;
        }
        Ok(())
    }
}

/// Splits an archive path into components, dropping `.` and empty ones.
fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>, EntryProblem> {
    if raw.first() == Some(&b'/') {
        return Err(EntryProblem::Absolute);
    }
    let mut comps = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(EntryProblem::DotDot),
            comp => comps.push(comp),
        }
    }
    Ok(comps)
}

fn raw_join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// Whether a symlink in directory `dir` (components below the root)
/// pointing at `target` leaves the root when resolved lexically: `..` may
/// not climb above the root, whether the target is relative (from the
/// link's directory) or absolute (from the root).
fn symlink_escapes(dir: &[&[u8]], target: &[u8]) -> bool {
    let mut depth = if target.first() == Some(&b'/') {
        0
    } else {
        dir.len()
    };
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

fn cstring(bytes: &[u8], at: &At<'_>) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| at.bad(EntryProblem::BadName))
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, at: &At<'_>) -> Result<Meta, Error> {
    let header = entry.header();
    let id = |value: io::Result<u64>, what: &'static str| -> Result<u32, Error> {
        let value = value.map_err(at.io("read header"))?;
        u32::try_from(value).map_err(|_| {
            at.bad(EntryProblem::Unsupported {
                kind: format!("{what} {value} out of range"),
            })
        })
    };
    let uid = id(header.uid(), "uid")?;
    let gid = id(header.gid(), "gid")?;
    let mode = header.mode().map_err(at.io("read header"))? & 0o7777;
    let mtime = header.mtime().map_err(at.io("read header"))?;
    let mut meta = Meta {
        uid,
        gid,
        mode,
        mtime: (i64::try_from(mtime).unwrap_or(i64::MAX), 0),
        xattrs: Vec::new(),
    };
    if let Some(extensions) = entry.pax_extensions().map_err(at.io("read pax header"))? {
        for ext in extensions {
            let ext = ext.map_err(at.io("read pax header"))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                if let Some(t) = parse_pax_time(ext.value_bytes()) {
                    meta.mtime = t;
                }
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if xattr_allowed(name) {
                    meta.xattrs
                        .push((cstring(name, at)?, ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(meta)
}

/// Which xattrs an image may set. `trusted.*` would let a layer make
/// overlayfs metadata (opaque dirs, redirects) and `security.*` file
/// capabilities or LSM labels; `user.overlay.*` is the same overlay
/// metadata when a runtime mounts with `userxattr`. Plain user xattrs and
/// POSIX ACLs are data and kept.
fn xattr_allowed(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// A pax time, `secs[.fraction]`, possibly negative.
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if text.starts_with('-') && nanos > 0 {
        Some((secs - 1, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

fn file_times((secs, nanos): (i64, u32)) -> FileTimes {
    let time = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    };
    let time: SystemTime = time;
    FileTimes::new().set_accessed(time).set_modified(time)
}

/// Owner first: chown clears setuid/setgid bits, so the mode comes after.
fn apply_meta(file: &File, meta: &Meta, at: &At<'_>) -> Result<(), Error> {
    fchown(file, Some(meta.uid), Some(meta.gid)).map_err(at.io("chown"))?;
    file.set_permissions(Permissions::from_mode(meta.mode))
        .map_err(at.io("chmod"))?;
    for (name, value) in &meta.xattrs {
        sys::fsetxattr(file.as_fd(), name, value).map_err(at.io("set xattr"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_archive_paths() {
        assert_eq!(normalize(b"./usr//bin/").unwrap(), [&b"usr"[..], b"bin"]);
        assert!(normalize(b"./").unwrap().is_empty());
        assert_eq!(normalize(b"a/../b"), Err(EntryProblem::DotDot));
        assert_eq!(normalize(b"../../etc/x"), Err(EntryProblem::DotDot));
        assert_eq!(normalize(b"/etc/x"), Err(EntryProblem::Absolute));
    }

    #[test]
    fn symlink_targets_must_stay_in_the_root() {
        let usr_bin: &[&[u8]] = &[b"usr", b"bin"];
        assert!(!symlink_escapes(usr_bin, b"python3.11"));
        assert!(!symlink_escapes(usr_bin, b"../lib/x"));
        assert!(!symlink_escapes(usr_bin, b"../../etc/x"));
        assert!(symlink_escapes(usr_bin, b"../../../etc/shadow"));
        assert!(!symlink_escapes(&[b"etc"], b"/usr/bin/mawk"));
        assert!(!symlink_escapes(&[], b"/"));
        assert!(symlink_escapes(&[b"etc"], b"/../etc/shadow"));
        assert!(symlink_escapes(&[], b".."));
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn image_xattrs_are_filtered() {
        assert!(xattr_allowed(b"user.mime_type"));
        assert!(xattr_allowed(b"system.posix_acl_access"));
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"user.overlay.redirect"));
        assert!(!xattr_allowed(b"security.capability"));
        assert!(!xattr_allowed(b"system.other"));
    }
}
