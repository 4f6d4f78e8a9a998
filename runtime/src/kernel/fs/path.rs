//! Paths inside a sandbox, as the files API handles them: absolute,
//! lexically tidied (no empty or `.` components, no trailing slash), `..`
//! left for the kernel to resolve inside the root. Splitting into a parent
//! and one final name is what every create/remove/rename needs: the parent
//! is opened with openat2 inside the root, the name is used with an `*at`
//! call that never follows it.

use std::ffi::CString;

use super::error::FilesError;

/// An absolute path inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SbPath(String);

impl SbPath {
    /// The sandbox root.
    pub fn root() -> SbPath {
        SbPath("/".into())
    }

    /// Tidies `input`; a relative path is taken relative to `base` (called
    /// only then: it may have to look the user's home up).
    pub fn parse(
        input: &str,
        base: impl FnOnce() -> Result<SbPath, FilesError>,
    ) -> Result<SbPath, FilesError> {
        if input.is_empty() {
            return Err(FilesError::InvalidPath {
                path: input.into(),
                reason: "empty path",
            });
        }
        if input.contains('\0') {
            return Err(FilesError::InvalidPath {
                path: input.replace('\0', "\\0"),
                reason: "contains a NUL byte",
            });
        }
        let mut path = if input.starts_with('/') {
            SbPath::root()
        } else {
            base()?
        };
        for component in input.split('/') {
            path = path.join(component);
        }
        Ok(path)
    }

    /// `self/name`, skipping empty and `.` components.
    pub fn join(&self, name: &str) -> SbPath {
        let mut out = self.clone();
        for component in name.split('/') {
            if component.is_empty() || component == "." {
                continue;
            }
            if !out.0.ends_with('/') {
                out.0.push('/');
            }
            out.0.push_str(component);
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The last component, `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        (!self.is_root()).then(|| self.0.rsplit('/').next().unwrap_or(""))
    }

    /// The parent and the final name. The root has neither, and a final
    /// `..` names a directory only the kernel can tell: both are refused.
    pub fn split(&self) -> Result<(SbPath, &str), FilesError> {
        let Some((parent, name)) = self.0.rsplit_once('/') else {
            unreachable!("an SbPath is absolute");
        };
        if name.is_empty() {
            return Err(FilesError::InvalidPath {
                path: self.0.clone(),
                reason: "the sandbox root has no parent",
            });
        }
        if name == ".." {
            return Err(FilesError::InvalidPath {
                path: self.0.clone(),
                reason: "must not end in ..",
            });
        }
        let parent = if parent.is_empty() { "/" } else { parent };
        Ok((SbPath(parent.to_string()), name))
    }

    /// Where a symlink found at `self` with `target` points: an absolute
    /// target from the sandbox root, a relative one from the link's
    /// directory.
    pub fn follow(&self, target: &str) -> SbPath {
        if target.starts_with('/') {
            SbPath::root().join(target)
        } else {
            let parent = self.split().map(|(parent, _)| parent).unwrap_or_default();
            parent.join(target)
        }
    }

    /// For openat2: relative to the root fd (openat2 with `RESOLVE_IN_ROOT`
    /// treats an absolute path the same; a relative one reads clearer).
    pub fn c_relative(&self) -> CString {
        let relative = self.0.trim_start_matches('/');
        CString::new(if relative.is_empty() { "." } else { relative })
            .expect("NUL bytes are refused by parse")
    }
}

impl Default for SbPath {
    fn default() -> Self {
        SbPath::root()
    }
}

impl std::fmt::Display for SbPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<SbPath, FilesError> {
        SbPath::parse(input, || Ok(SbPath::root().join("home/user")))
    }

    #[test]
    fn paths_are_tidied_and_made_absolute() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/tmp/", "/tmp"),
            ("/tmp/./a//b/", "/tmp/a/b"),
            ("notes.txt", "/home/user/notes.txt"),
            ("./a/../b", "/home/user/a/../b"),
            ("/a/..", "/a/.."),
        ] {
            assert_eq!(parse(input).unwrap().as_str(), want, "{input}");
        }
        assert!(matches!(parse(""), Err(FilesError::InvalidPath { .. })));
        assert!(matches!(
            parse("/a\0b"),
            Err(FilesError::InvalidPath { .. })
        ));
    }

    #[test]
    fn split_gives_parent_and_one_name() {
        let p = parse("/tmp/a/b").unwrap();
        let (parent, name) = p.split().unwrap();
        assert_eq!((parent.as_str(), name), ("/tmp/a", "b"));
        let p = parse("/top").unwrap();
        assert_eq!(p.split().unwrap().0.as_str(), "/");
        assert!(SbPath::root().split().is_err());
        assert!(parse("/a/..").unwrap().split().is_err());
        assert_eq!(p.file_name(), Some("top"));
        assert_eq!(SbPath::root().file_name(), None);
    }

    #[test]
    fn links_are_followed_from_the_right_place() {
        let link = parse("/etc/alternatives/tool").unwrap();
        assert_eq!(link.follow("/usr/bin/tool").as_str(), "/usr/bin/tool");
        assert_eq!(
            link.follow("../../usr/bin/tool").as_str(),
            "/etc/alternatives/../../usr/bin/tool"
        );
        assert_eq!(SbPath::root().c_relative().to_str().unwrap(), ".");
        assert_eq!(link.c_relative().to_str().unwrap(), "etc/alternatives/tool");
    }
}
