//! Capabilities inside a sandbox, and no_new_privs.
//!
//! The sandbox child is root in its own user namespace and starts with every
//! capability *of that namespace*. Before it execs init it keeps only the
//! few that a root user of a code sandbox needs ([`SANDBOX_CAPS`]):
//!
//! | set | after the drop |
//! |---|---|
//! | bounding | the kept set (every other capability up to `cap_last_cap` dropped) |
//! | permitted, effective | the kept set |
//! | inheritable | empty |
//! | ambient | empty (cleared) |
//!
//! Root inside keeps the kept set across `execve` through the bounding set
//! ("root is special": a uid-0 exec gets the bounding set as permitted), so
//! inheritable does not need to hold anything. An empty inheritable set also
//! closes CVE-2022-24769 (moby/runc started containers with a non-empty
//! inheritable set, so a program with inheritable *file* capabilities run by
//! a non-root user gained them). When init switches a command to another uid,
//! the kernel clears that process's permitted and effective sets (no
//! `SECBIT_KEEP_CAPS`), so non-root commands run with no capabilities at all.
//!
//! # Kept and dropped
//!
//! Docker's default 14 are the reference; this table says why each one is
//! kept or dropped. Everything outside Docker's 14 (`CAP_SYS_ADMIN`,
//! `CAP_NET_ADMIN`, `CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`, `CAP_BPF`, ...)
//! is dropped as well.
//!
//! | capability | | why |
//! |---|---|---|
//! | `CAP_CHOWN` | kept | root inside edits template files and unpacks archives (`tar`, `pip`, `npm`) that set owners |
//! | `CAP_DAC_OVERRIDE` | kept | root inside is expected to read and write every file of its sandbox, whatever its mode |
//! | `CAP_FOWNER` | kept | `chmod`/`utime`/`setxattr` on files owned by other uids inside (template files, files of the unprivileged user) |
//! | `CAP_FSETID` | kept | `cp -p`, `tar`, `install` keep set-group-ID bits on files and directories they do not own; harmless here because no_new_privs makes set-ID bits ineffective on exec |
//! | `CAP_SETUID` | kept | init runs commands as another user (`setresuid`) |
//! | `CAP_SETGID` | kept | init runs commands with other groups (`setresgid`, `setgroups`) |
//! | `CAP_KILL` | kept | init signals and kills processes of other uids (timeouts, `kill_all`) |
//! | `CAP_NET_BIND_SERVICE` | kept | a server inside may listen on a port below 1024 (`:80`); the sandbox has its own network namespace, so no host port is involved |
//! | `CAP_MKNOD` | dropped | useless: the kernel refuses device nodes to a user namespace anyway (`vfs_mknod` checks `CAP_MKNOD` in the initial namespace); FIFOs and sockets need no capability |
//! | `CAP_NET_RAW` | dropped | raw and packet sockets are a long-running source of kernel bugs (CVE-2017-7308, CVE-2020-14386); `ping` works without it through ICMP datagram sockets where the network namespace's `ping_group_range` allows |
//! | `CAP_SETFCAP` | dropped | writing file capabilities: no_new_privs makes them useless for gaining privilege, and no sandbox workload needs `setcap` |
//! | `CAP_SETPCAP` | dropped | only needed to change capability sets further; after this drop there is nothing left to give |
//! | `CAP_SYS_CHROOT` | dropped | a code sandbox has no use for `chroot` (its root was pivoted by the runtime), and a chroot inside is the first step of classic chroot escapes and set-ID confusion tricks |
//! | `CAP_AUDIT_WRITE` | dropped | the audit log is host-wide and only reachable from the initial network namespace; PAM tools tolerate its absence |
//!
//! # When, in the child
//!
//! The drop comes after every setup step that needs `CAP_SYS_ADMIN` (mounts,
//! `pivot_root`, hostname, masks) and before no_new_privs and seccomp:
//!
//! 1. [`CapPlan::apply`] (bounding drop needs `CAP_SETPCAP`, so it runs
//!    before `capset` removes it);
//! 2. [`set_no_new_privs`];
//! 3. [`crate::kernel::seccomp::CompiledSeccomp::install`];
//! 4. `execveat` init.
//!
//! The child already called `setresuid(0)`/`setresgid(0)` in its user
//! namespace before this step; no uid change follows inside the child, so
//! `SECBIT_KEEP_CAPS` is not needed. Everything the child runs is computed
//! here in the parent ([`CapPlan`]): the child only makes system calls.

use std::path::{Path, PathBuf};

pub use ::caps::Capability;

/// The capabilities a sandbox keeps, with the reason for each (see the
/// module docs for the dropped ones).
pub const SANDBOX_CAPS: &[(Capability, &str)] = &[
    (
        Capability::CAP_CHOWN,
        "root inside edits template files and unpacks archives that set owners",
    ),
    (
        Capability::CAP_DAC_OVERRIDE,
        "root inside reads and writes every file of its sandbox, whatever its mode",
    ),
    (
        Capability::CAP_FOWNER,
        "chmod/utime/setxattr on files owned by other uids inside",
    ),
    (
        Capability::CAP_FSETID,
        "cp -p, tar, install keep set-group-ID bits; set-ID bits are inert under no_new_privs",
    ),
    (
        Capability::CAP_SETUID,
        "init runs commands as another user (setresuid)",
    ),
    (
        Capability::CAP_SETGID,
        "init runs commands with other groups (setresgid, setgroups)",
    ),
    (
        Capability::CAP_KILL,
        "init signals and kills processes of other uids",
    ),
    (
        Capability::CAP_NET_BIND_SERVICE,
        "servers inside may listen below port 1024 in the sandbox's own network namespace",
    ),
];

/// Docker's default capabilities that a sandbox drops, with the reason:
/// reviewed data, checked against the kept set by the tests.
#[cfg_attr(not(test), allow(dead_code))]
pub const DROPPED_DOCKER_CAPS: &[(Capability, &str)] = &[
    (
        Capability::CAP_MKNOD,
        "device nodes are refused to a user namespace anyway; FIFOs need no capability",
    ),
    (
        Capability::CAP_NET_RAW,
        "raw and packet sockets: a long-running source of kernel bugs; ping uses ICMP datagram sockets",
    ),
    (
        Capability::CAP_SETFCAP,
        "file capabilities are inert under no_new_privs; no workload needs setcap",
    ),
    (
        Capability::CAP_SETPCAP,
        "nothing left to hand out once the sets are reduced",
    ),
    (
        Capability::CAP_SYS_CHROOT,
        "the root is pivoted by the runtime; chroot inside only serves escape tricks",
    ),
    (
        Capability::CAP_AUDIT_WRITE,
        "the audit log is host-wide and unreachable from a non-initial network namespace",
    ),
];

/// Where the kernel publishes the highest capability number it knows.
pub const CAP_LAST_CAP_PATH: &str = "/proc/sys/kernel/cap_last_cap";

/// Capability numbers fit in 64 bits (two 32-bit capset words).
const MAX_CAP: u32 = 63;

/// Errors while planning capabilities (parent side).
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// `cap_last_cap` could not be read.
    #[error("reading {path}: {source}")]
    ReadLastCap {
        /// The file read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `cap_last_cap` did not hold a capability number.
    #[error("{path}: expected a capability number up to 63, found {found:?}")]
    ParseLastCap {
        /// The file read.
        path: PathBuf,
        /// What it held.
        found: String,
    },
    /// A capability to keep is unknown to the running kernel.
    #[error("cannot keep {cap}: the kernel's last capability is {last_cap}")]
    UnsupportedCap {
        /// The capability.
        cap: Capability,
        /// The kernel's `cap_last_cap`.
        last_cap: u32,
    },
}

/// The capability sets of a sandbox, computed in the parent and applied in
/// the child with system calls only ([`CapPlan::apply`]).
///
/// Cheap to copy; compute it once per runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CapPlan {
    keep: u64,
    inheritable: u64,
    last_cap: u32,
}

impl CapPlan {
    /// The default plan ([`SANDBOX_CAPS`]) for the running kernel, reading
    /// its last capability number from [`CAP_LAST_CAP_PATH`].
    pub fn sandbox_default() -> Result<Self, CapsError> {
        Self::new(
            Self::default_caps(),
            read_last_cap(Path::new(CAP_LAST_CAP_PATH))?,
        )
    }

    /// The capabilities of the default plan.
    pub fn default_caps() -> impl Iterator<Item = Capability> {
        SANDBOX_CAPS.iter().map(|(cap, _)| *cap)
    }

    /// A plan keeping exactly `keep` (in bounding, permitted and effective;
    /// inheritable and ambient empty) on a kernel whose last capability
    /// number is `last_cap`.
    pub fn new(
        keep: impl IntoIterator<Item = Capability>,
        last_cap: u32,
    ) -> Result<Self, CapsError> {
        let last_cap = last_cap.min(MAX_CAP);
        let mut mask = 0u64;
        for cap in keep {
            if u32::from(cap.index()) > last_cap {
                return Err(CapsError::UnsupportedCap { cap, last_cap });
            }
            mask |= cap.bitmask();
        }
        Ok(Self {
            keep: mask,
            inheritable: 0,
            last_cap,
        })
    }

    /// Bounding, permitted and effective sets after the drop.
    pub const fn keep_mask(&self) -> u64 {
        self.keep
    }

    /// Inheritable set after the drop (empty).
    pub const fn inheritable_mask(&self) -> u64 {
        self.inheritable
    }

    /// Ambient set after the drop (always empty).
    #[cfg(test)]
    pub const fn ambient_mask(&self) -> u64 {
        0
    }

    /// The highest capability number the plan walks when dropping the
    /// bounding set.
    pub const fn last_cap(&self) -> u32 {
        self.last_cap
    }

    /// Whether capability number `cap` is kept.
    #[cfg(test)]
    pub const fn keeps(&self, cap: u32) -> bool {
        cap <= MAX_CAP && self.keep & (1 << cap) != 0
    }

    /// The kept capabilities, for display and checks.
    #[cfg(test)]
    pub fn kept(&self) -> Vec<Capability> {
        let mut kept: Vec<_> = ::caps::all()
            .into_iter()
            .filter(|cap| self.keeps(u32::from(cap.index())))
            .collect();
        kept.sort_by_key(Capability::index);
        kept
    }

    /// Child side: reduces the calling thread's capability sets to this
    /// plan (bounding drop, ambient clear, `capset`). Async-signal-safe: no
    /// allocation. Returns the raw errno of the first failing call.
    ///
    /// Must run after every step that needs `CAP_SYS_ADMIN` and before
    /// [`set_no_new_privs`] and the seccomp filters.
    pub fn apply(&self) -> Result<(), i32> {
        crate::sys::caps::drop_caps(self.keep_mask(), self.inheritable_mask(), self.last_cap())
    }
}

/// Child side: `prctl(PR_SET_NO_NEW_PRIVS, 1)`. Async-signal-safe; returns
/// the raw errno on failure. Comes after [`CapPlan::apply`] and before the
/// seccomp filters (which it allows to be installed without
/// `CAP_SYS_ADMIN`).
pub fn set_no_new_privs() -> Result<(), i32> {
    crate::sys::caps::set_no_new_privs()
}

/// Reads a `cap_last_cap` file.
pub fn read_last_cap(path: &Path) -> Result<u32, CapsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CapsError::ReadLastCap {
        path: path.to_owned(),
        source,
    })?;
    match text.trim().parse::<u32>() {
        Ok(n) if n <= MAX_CAP => Ok(n),
        _ => Err(CapsError::ParseLastCap {
            path: path.to_owned(),
            found: text.trim().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_and_dropped_cover_dockers_default_fourteen() {
        let docker = [
            Capability::CAP_CHOWN,
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_FSETID,
            Capability::CAP_FOWNER,
            Capability::CAP_MKNOD,
            Capability::CAP_NET_RAW,
            Capability::CAP_SETGID,
            Capability::CAP_SETUID,
            Capability::CAP_SETFCAP,
            Capability::CAP_SETPCAP,
            Capability::CAP_NET_BIND_SERVICE,
            Capability::CAP_SYS_CHROOT,
            Capability::CAP_KILL,
            Capability::CAP_AUDIT_WRITE,
        ];
        let kept: Vec<_> = SANDBOX_CAPS.iter().map(|(c, _)| *c).collect();
        let dropped: Vec<_> = DROPPED_DOCKER_CAPS.iter().map(|(c, _)| *c).collect();
        for cap in docker {
            assert!(
                kept.contains(&cap) ^ dropped.contains(&cap),
                "{cap} must be either kept or dropped, with a reason"
            );
        }
        assert_eq!(kept.len() + dropped.len(), docker.len());
        // Nothing outside Docker's set is kept.
        assert!(kept.iter().all(|cap| docker.contains(cap)));
    }

    #[test]
    fn default_plan_masks() {
        let plan = CapPlan::new(CapPlan::default_caps(), 40).unwrap();
        // CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6,
        // SETUID 7, NET_BIND_SERVICE 10.
        assert_eq!(plan.keep_mask(), 0b100_1111_1011);
        assert_eq!(plan.inheritable_mask(), 0);
        assert_eq!(plan.ambient_mask(), 0);
        assert!(plan.keeps(Capability::CAP_KILL.index().into()));
        assert!(!plan.keeps(Capability::CAP_SYS_ADMIN.index().into()));
        assert!(!plan.keeps(64));
        assert_eq!(plan.kept().len(), SANDBOX_CAPS.len());
    }

    #[test]
    fn keeping_a_cap_the_kernel_lacks_is_an_error() {
        let err = CapPlan::new([Capability::CAP_CHECKPOINT_RESTORE], 37).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot keep CAP_CHECKPOINT_RESTORE: the kernel's last capability is 37"
        );
    }

    #[test]
    fn reads_cap_last_cap() {
        let dir = std::env::temp_dir().join(format!("sandlot-caps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "40\n").unwrap();
        assert_eq!(read_last_cap(&good).unwrap(), 40);
        let bad = dir.join("bad");
        std::fs::write(&bad, "many\n").unwrap();
        let err = read_last_cap(&bad).unwrap_err().to_string();
        assert!(err.contains("found \"many\""), "{err}");
        let missing = read_last_cap(&dir.join("missing")).unwrap_err().to_string();
        assert!(missing.starts_with("reading "), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
        // The running kernel's value parses too.
        assert!(read_last_cap(Path::new(CAP_LAST_CAP_PATH)).unwrap() >= 40);
    }
}
