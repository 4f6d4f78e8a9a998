//! Member names and link targets: split into components, checked
//! lexically before anything touches the filesystem.

use std::ffi::CString;

use super::AbsoluteNames;
use crate::error::EntryProblem;

/// Splits an archive path into names, dropping `.` and empty ones. `..`
/// anywhere is refused; a leading `/` as `absolute` says.
pub(super) fn split(raw: &[u8], absolute: AbsoluteNames) -> Result<Vec<&[u8]>, EntryProblem> {
    if raw.first() == Some(&b'/') && absolute == AbsoluteNames::Refuse {
        return Err(EntryProblem::Absolute);
    }
    let mut names = Vec::new();
    for name in raw.split(|b| *b == b'/') {
        match name {
            b"" | b"." => {}
            b".." => return Err(EntryProblem::DotDot),
            name => names.push(name),
        }
    }
    Ok(names)
}

pub(super) fn join(names: &[&[u8]]) -> Vec<u8> {
    names.join(&b'/')
}

/// Whether a symlink in directory `dir` (names below the root) pointing
/// at `target` leaves the root when resolved lexically: `..` may not climb
/// above the root, whether the target is relative (from the link's
/// directory) or absolute (from the root, as it resolves in a sandbox).
pub(super) fn symlink_escapes(dir: &[&[u8]], target: &[u8]) -> bool {
    let mut depth = if target.first() == Some(&b'/') {
        0
    } else {
        dir.len()
    };
    for name in target.split(|b| *b == b'/') {
        match name {
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

/// A name or link target as a C string; one with a NUL byte is refused.
pub(super) fn cstring(bytes: &[u8]) -> Result<CString, EntryProblem> {
    CString::new(bytes).map_err(|_| EntryProblem::BadName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_climb() {
        let refuse = AbsoluteNames::Refuse;
        assert_eq!(
            split(b"./usr//bin/", refuse).unwrap(),
            [&b"usr"[..], b"bin"]
        );
        assert!(split(b"./", refuse).unwrap().is_empty());
        assert_eq!(split(b"a/../b", refuse), Err(EntryProblem::DotDot));
        assert_eq!(split(b"../../etc/x", refuse), Err(EntryProblem::DotDot));
        assert_eq!(split(b"/etc/x", refuse), Err(EntryProblem::Absolute));
        let strip = AbsoluteNames::Strip;
        assert_eq!(
            split(b"/etc/passwd", strip).unwrap(),
            [&b"etc"[..], b"passwd"]
        );
        assert_eq!(split(b"/../etc", strip), Err(EntryProblem::DotDot));
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
}
