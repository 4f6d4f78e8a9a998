//! The id range a sandbox's user namespace maps to, and the long-lived
//! "idmap" user namespace that idmapped mounts borrow their mapping from.
//!
//! All sandboxes of a runtime share one range (inside 0..count ↔ host
//! base..base+count). That is safe because nothing else is shared between
//! them: each has its own pid namespace (no pid of another sandbox can be
//! named, so none can be signalled or ptraced), its own mount namespace and
//! writable layer (no file of another sandbox is reachable), and its own
//! network namespace (no abstract socket is shared). See SECURITY.md.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::unistd::pipe2;

use crate::kernel::error::{KernelError, KernelResult};
use crate::sys::{clone, process};

/// Host ids `base..base + count` seen as `0..count` inside every sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub base: u32,
    pub count: u32,
}

impl Default for IdRange {
    fn default() -> Self {
        IdRange {
            base: 100_000,
            count: 65_536,
        }
    }
}

impl IdRange {
    /// The line for `/proc/<pid>/uid_map` and `gid_map`.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.base, self.count)
    }

    /// The host id of `inside`, if the range maps it.
    pub fn to_host(&self, inside: u32) -> Option<u32> {
        (inside < self.count).then(|| self.base + inside)
    }

    pub(crate) fn validate(&self) -> KernelResult<()> {
        if self.base == 0 {
            return Err(KernelError::invalid(
                "id_range",
                "base 0 would make sandbox root host root",
            ));
        }
        if self.count < 65_536 {
            return Err(KernelError::invalid(
                "id_range",
                format!(
                    "{} ids are too few: templates use ids up to 65534 (nobody)",
                    self.count
                ),
            ));
        }
        if self.base.checked_add(self.count).is_none() {
            return Err(KernelError::invalid(
                "id_range",
                "base + count overflows a 32-bit id",
            ));
        }
        Ok(())
    }
}

/// Writes the id maps of a process that just entered a new user namespace.
pub fn write_maps(pid: i32, range: &IdRange) -> KernelResult<()> {
    let line = range.map_line();
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &line).map_err(|e| KernelError::setup_io("write id map", path, &e))?;
    }
    Ok(())
}

/// A user namespace with `range`'s mapping, kept alive by its descriptor
/// (for `MOUNT_ATTR_IDMAP`). A short-lived child enters a new user
/// namespace and waits for one byte on a pipe while we write its maps and
/// open its namespace. The byte, not end-of-file, releases it: children
/// other threads clone at the same time hold copies of the write end.
pub fn idmap_namespace(range: &IdRange) -> KernelResult<OwnedFd> {
    let (wait_end, release_end) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| KernelError::setup("create idmap pipe", e))?;
    let release_raw = release_end.as_raw_fd();
    let child = clone::fork_into(
        libc::CLONE_NEWUSER as u64,
        None,
        || -> std::convert::Infallible {
            // Never outlive the thread that waits for us.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            let _ = nix::unistd::close(release_raw);
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&wait_end, &mut byte);
            process::exit_now(0)
        },
    )
    .map_err(userns_error)?;
    drop(wait_end);
    let result = write_maps(child.pid, range).and_then(|()| {
        let path = format!("/proc/{}/ns/user", child.pid);
        fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| KernelError::io(format!("open {path}"), e))
    });
    let _ = nix::unistd::write(&release_end, &[1u8]);
    drop(release_end);
    let _ = process::reap_pidfd(child.pidfd.as_fd(), true);
    result
}

/// What a failed `clone(CLONE_NEWUSER)` means and how to fix it. Without a
/// user namespace there is no sandbox: sandlot never runs sandbox root as
/// host root instead.
pub(crate) fn userns_error(errno: nix::errno::Errno) -> KernelError {
    use nix::errno::Errno;
    let reason = match errno {
        // The per-user-namespace count limit (user.max_user_namespaces),
        // which 0 switches off.
        Errno::ENOSPC => format!(
            "clone(CLONE_NEWUSER) failed with {errno}: user.max_user_namespaces is 0 or used up \
             (now {}); raise it, e.g. `sysctl -w user.max_user_namespaces=15000`",
            fs::read_to_string("/proc/sys/user/max_user_namespaces")
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|_| "unreadable".into())
        ),
        Errno::EPERM | Errno::EACCES => format!(
            "clone(CLONE_NEWUSER) failed with {errno}: a security module or sysctl refuses user \
             namespaces to this process (AppArmor's kernel.apparmor_restrict_unprivileged_userns \
             with a profile that confines it, SELinux's user_namespace class, \
             kernel.unprivileged_userns_clone=0 when not root, or a seccomp filter of a \
             container around sandlot); allow user namespaces for this program"
        ),
        Errno::EINVAL => format!(
            "clone(CLONE_NEWUSER) failed with {errno}: the kernel was built without \
             CONFIG_USER_NS"
        ),
        _ => return KernelError::setup("clone the idmap helper", errno),
    };
    KernelError::Unsupported {
        feature: "user namespaces",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_user_namespace_says_why_and_how_to_fix_it() {
        use nix::errno::Errno;
        let text = |errno| userns_error(errno).to_string();
        assert!(text(Errno::ENOSPC).contains("user.max_user_namespaces"));
        assert!(text(Errno::ENOSPC).contains("sysctl -w"));
        assert!(text(Errno::EPERM).contains("apparmor_restrict_unprivileged_userns"));
        assert!(text(Errno::EINVAL).contains("CONFIG_USER_NS"));
        for errno in [Errno::ENOSPC, Errno::EPERM, Errno::EACCES, Errno::EINVAL] {
            assert!(matches!(
                userns_error(errno),
                KernelError::Unsupported {
                    feature: "user namespaces",
                    ..
                }
            ));
        }
        // Anything else is a setup failure naming the step.
        assert!(text(Errno::ENOMEM).starts_with("clone the idmap helper"));
    }

    #[test]
    fn default_range_maps_root_to_an_unprivileged_id() {
        let range = IdRange::default();
        assert_eq!(range.map_line(), "0 100000 65536\n");
        assert_eq!(range.to_host(0), Some(100_000));
        assert_eq!(range.to_host(65_535), Some(165_535));
        assert_eq!(range.to_host(65_536), None);
        range.validate().unwrap();
    }

    #[test]
    fn ranges_that_would_leak_host_ids_are_rejected() {
        assert!(IdRange {
            base: 0,
            count: 65_536
        }
        .validate()
        .is_err());
        assert!(IdRange {
            base: 100_000,
            count: 1000
        }
        .validate()
        .is_err());
        assert!(IdRange {
            base: u32::MAX - 10,
            count: 65_536
        }
        .validate()
        .is_err());
    }
}
