//! OCI whiteouts, stored the way overlayfs reads them from a lower layer.
//!
//! An image layer says "delete NAME from the layers below" with an empty
//! file `.wh.NAME`, and "hide everything below in this directory" with
//! `.wh..wh..opq`. overlayfs expresses the same with a character device 0:0
//! named NAME, and with the xattr `trusted.overlay.opaque=y` on the
//! directory. Converting at unpack time lets the layer dirs be stacked as
//! they are.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys;

pub(crate) const PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Other `.wh..wh.` names are aufs bookkeeping (`.wh..wh.plnk`,
/// `.wh..wh.aufs`) that means nothing to overlayfs.
const META_PREFIX: &[u8] = b".wh..wh.";

/// The xattr overlayfs reads (when mounted by real root, without
/// `userxattr`) to treat a lower directory as opaque.
pub(crate) const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// The directory holding the marker is opaque.
    Opaque,
    /// NAME is deleted.
    Remove(&'a [u8]),
    /// aufs metadata: skipped.
    Ignore,
}

/// Whether the last component of an entry's path is a whiteout.
pub(crate) fn classify(name: &[u8]) -> Option<Whiteout<'_>> {
    if name == OPAQUE_MARKER {
        Some(Whiteout::Opaque)
    } else if name.starts_with(META_PREFIX) {
        Some(Whiteout::Ignore)
    } else {
        name.strip_prefix(PREFIX).map(Whiteout::Remove)
    }
}

/// Marks the directory open as `dir` (not O_PATH: xattrs need a real fd)
/// opaque.
pub(crate) fn make_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    sys::fsetxattr(dir, OPAQUE_XATTR, b"y")
}

/// Creates the 0:0 character device that hides `name` in lower layers.
/// It is owned by 0:0 with mode 0: overlayfs only looks at the type and
/// device number, and nobody should ever open it.
pub(crate) fn make_whiteout(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    sys::mknod_whiteout(dir, name)?;
    sys::lchownat(dir, name, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_whiteout_names() {
        assert_eq!(classify(b".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(classify(b".wh.passwd"), Some(Whiteout::Remove(b"passwd")));
        assert_eq!(classify(b".wh..wh.plnk"), Some(Whiteout::Ignore));
        assert_eq!(classify(b".wh."), Some(Whiteout::Remove(b"")));
        assert_eq!(classify(b"passwd"), None);
        assert_eq!(classify(b"x.wh.y"), None);
    }
}
