//! Directory templates: an existing root filesystem (a debootstrap or
//! `tar x` result, say) used in place as the template's only lower layer.
//! It is not copied, so it must keep looking like a root filesystem and
//! must not change while sandboxes use it (overlayfs forbids changing a
//! lower layer under a mount).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// Checks that `path` is a directory that looks like a root filesystem and
/// returns its canonical form, which is what the template records.
pub(crate) fn validate(path: &Path) -> Result<PathBuf, Error> {
    let not = |reason: &str| Error::NotARootfs {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let canonical = fs::canonicalize(path).map_err(Error::io("resolve", path))?;
    let meta = fs::metadata(&canonical).map_err(Error::io("stat", &canonical))?;
    if !meta.is_dir() {
        return Err(not("not a directory"));
    }
    if canonical == Path::new("/") {
        // The host's own root, /etc/shadow and all, under sandbox root.
        return Err(not("it is the host's root directory"));
    }
    // Inside the root, not followed: an absolute symlink such as
    // `bin -> /usr/bin` would otherwise be judged by the host's files.
    let has = |rel: &str| fs::symlink_metadata(canonical.join(rel)).is_ok();
    let is_dir = |rel: &str| fs::symlink_metadata(canonical.join(rel)).is_ok_and(|m| m.is_dir());
    if !is_dir("etc") {
        return Err(not("no etc/ directory"));
    }
    if !(has("bin") || is_dir("usr") && has("usr/bin")) {
        return Err(not("neither bin nor usr/bin exists"));
    }
    Ok(canonical)
}

/// Bytes of regular-file content below `root`, without following symlinks
/// or crossing into other filesystems.
pub(crate) fn content_size(root: &Path) -> u64 {
    let Ok(top) = fs::symlink_metadata(root) else {
        return 0;
    };
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() && meta.dev() == top.dev() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_rootfs() {
        assert!(matches!(
            validate(Path::new("/")),
            Err(Error::NotARootfs { .. })
        ));
        assert!(matches!(
            validate(Path::new("/etc/hostname-that-does-not-exist")),
            Err(Error::Io { .. })
        ));
        assert!(matches!(
            validate(Path::new("/proc/self/status")),
            Err(Error::NotARootfs { .. })
        ));
    }
}
