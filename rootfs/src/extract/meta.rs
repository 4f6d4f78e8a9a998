//! What a member says about itself besides its content: owner, mode,
//! times and extended attributes, read from its header and pax records.

use std::ffi::CString;
use std::fs::{File, FileTimes, Permissions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{fchown, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{At, ExtractError, Owners, Policy};
use crate::error::EntryProblem;
use crate::sys;

/// Ownership, permissions, times and xattrs of a member.
pub(super) struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// Seconds and nanoseconds since the epoch (pax times are precise).
    pub mtime: (i64, u32),
    pub xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    pub fn read<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        policy: &Policy,
        at: &At,
    ) -> Result<Meta, ExtractError> {
        let header = entry.header();
        let id = |value: io::Result<u64>, what: &'static str| -> Result<u32, ExtractError> {
            let value = value.map_err(at.io("read header"))?;
            u32::try_from(value).map_err(|_| {
                at.refused(EntryProblem::Unsupported {
                    kind: format!("{what} {value} out of range"),
                })
            })
        };
        let (uid, gid) = match policy.owners {
            Owners::FromArchive => (id(header.uid(), "uid")?, id(header.gid(), "gid")?),
            Owners::Fixed { uid, gid } => (uid, gid),
        };
        let mode = header.mode().map_err(at.io("read header"))? & 0o7777;
        let mtime = header.mtime().map_err(at.io("read header"))?;
        let mut meta = Meta {
            uid,
            gid,
            mode,
            mtime: (i64::try_from(mtime).unwrap_or(i64::MAX), 0),
            xattrs: Vec::new(),
        };
        let Some(records) = entry.pax_extensions().map_err(at.io("read pax header"))? else {
            return Ok(meta);
        };
        for record in records {
            let record = record.map_err(at.io("read pax header"))?;
            let key = record.key_bytes();
            if key == b"mtime" {
                if let Some(t) = parse_pax_time(record.value_bytes()) {
                    meta.mtime = t;
                }
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if policy.xattrs && xattr_allowed(name) {
                    let name = super::names::cstring(name).map_err(|p| at.refused(p))?;
                    meta.xattrs.push((name, record.value_bytes().to_vec()));
                }
            }
        }
        Ok(meta)
    }

    /// Gives `file` its owner, then its mode (chown clears set-id bits),
    /// then its xattrs.
    pub fn apply(&self, file: &File, owner: bool, at: &At) -> Result<(), ExtractError> {
        if owner {
            fchown(file, Some(self.uid), Some(self.gid)).map_err(at.io("chown"))?;
        }
        file.set_permissions(Permissions::from_mode(self.mode))
            .map_err(at.io("chmod"))?;
        for (name, value) in &self.xattrs {
            sys::fsetxattr(file.as_fd(), name, value).map_err(at.io("set xattr"))?;
        }
        Ok(())
    }

    pub fn times(&self) -> FileTimes {
        file_times(self.mtime)
    }
}

/// Which xattrs an archive may set. `trusted.*` would let a layer make
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
        Some((secs.checked_sub(1)?, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

pub(super) fn file_times((secs, nanos): (i64, u32)) -> FileTimes {
    // SystemTime cannot hold every i64 of seconds: clamp to what it can.
    let time = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(nanos.into())))
    };
    let time: SystemTime = time.unwrap_or(UNIX_EPOCH);
    FileTimes::new().set_accessed(time).set_modified(time)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            parse_pax_time(format!("{}.5", i64::MIN).as_bytes()),
            None,
            "no overflow"
        );
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let _ = file_times((i64::MAX, 999_999_999));
        let _ = file_times((i64::MIN, 999_999_999));
    }

    #[test]
    fn archive_xattrs_are_filtered() {
        assert!(xattr_allowed(b"user.mime_type"));
        assert!(xattr_allowed(b"system.posix_acl_access"));
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"user.overlay.redirect"));
        assert!(!xattr_allowed(b"security.capability"));
        assert!(!xattr_allowed(b"system.other"));
    }
}
