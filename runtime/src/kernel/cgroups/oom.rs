//! Noticing OOM kills in a sandbox's memory cgroup without polling.
//!
//! - v2: `memory.events` itself is the notifier: kernfs signals POLLPRI
//!   whenever the file changes (any of low, high, max, oom, oom_kill), and
//!   reading it re-arms. Its `oom_kill` line is the count.
//! - v1: an eventfd registered for `memory.oom_control` through
//!   `cgroup.event_control` becomes readable when the cgroup runs out of
//!   memory. The kernel signals it *before* the OOM killer picks a victim,
//!   so a reader may find `oom_kill` not yet raised and should look again
//!   a moment later. It is also signalled when the cgroup is removed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::error::CgroupError;
use super::files;
use super::layout::Version;
use super::stats::keyed;

/// The descriptors that tell of OOM kills in one sandbox.
#[derive(Debug)]
pub struct OomNotifier {
    /// `memory.events` (v2) or `memory.oom_control` (v1): holds the
    /// `oom_kill` count.
    counter: OwnedFd,
    /// v1 only: the eventfd the kernel signals; v2 waits on `counter`.
    eventfd: Option<OwnedFd>,
}

impl OomNotifier {
    /// Registers for OOM notifications of the memory cgroup `<base>/<id>`
    /// (opened as `dir`).
    pub(crate) fn open(
        version: Version,
        dir: BorrowedFd<'_>,
        base: &std::path::Path,
        id: &str,
    ) -> Result<OomNotifier, CgroupError> {
        let open = |file: &str| {
            let rel = format!("{id}/{file}");
            files::open_read_at(dir, &rel).map_err(|errno| CgroupError::Open {
                path: base.join(&rel),
                errno,
            })
        };
        match version {
            Version::V2 => Ok(OomNotifier {
                counter: open("memory.events")?,
                eventfd: None,
            }),
            Version::V1 => {
                let counter = open("memory.oom_control")?;
                let eventfd: OwnedFd =
                    EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                        .map_err(|errno| CgroupError::Open {
                            path: "eventfd".into(),
                            errno,
                        })?
                        .into();
                let line = format!("{} {}", eventfd.as_raw_fd(), counter.as_raw_fd());
                files::write_at(dir, &format!("{id}/cgroup.event_control"), &line, base)?;
                Ok(OomNotifier {
                    counter,
                    eventfd: Some(eventfd),
                })
            }
        }
    }

    /// The descriptor to wait on, and whether it signals with `EPOLLPRI`
    /// (v2 kernfs notification) rather than `EPOLLIN` (v1 eventfd).
    pub fn wait_fd(&self) -> (BorrowedFd<'_>, bool) {
        match &self.eventfd {
            Some(fd) => (fd.as_fd(), false),
            None => (self.counter.as_fd(), true),
        }
    }

    /// Consumes a notification (empties the v1 eventfd; v2 re-arms on the
    /// next [`OomNotifier::kills`]).
    pub fn acknowledge(&self) {
        if let Some(fd) = &self.eventfd {
            let mut buf = [0u8; 8];
            let _ = nix::unistd::read(fd.as_fd(), &mut buf);
        }
    }

    /// How many processes the OOM killer has killed in the cgroup so far.
    pub fn kills(&self) -> Result<u64, Errno> {
        let mut buf = [0u8; 512];
        let text = files::pread_all(self.counter.as_fd(), &mut buf)?;
        Ok(keyed(text, "oom_kill").unwrap_or(0))
    }
}
