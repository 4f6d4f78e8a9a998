//! Inits of detached sandboxes that are this process's children: a
//! persistent runtime that shut down while the process goes on lets go of
//! its sandboxes, but whichever of their inits it started are still its
//! children, and one that ends (killed by its monitor, by another process)
//! must be reaped here or stay a zombie until the process exits. One
//! thread ("sandlot-orphans"), started with the first such init, reaps
//! them as they end and exits when none is left.

use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::sync::lock;
use crate::sys::process;

/// pidfds waiting for their process to end, and whether the thread runs.
static ORPHANS: Mutex<(Vec<OwnedFd>, bool)> = Mutex::new((Vec::new(), false));

/// How often the thread looks for inits added meanwhile.
const RESCAN: Duration = Duration::from_millis(500);

/// Reaps the process behind `pidfd` once it ends, if it is our child.
pub(crate) fn watch(pidfd: OwnedFd) {
    // Not our child (an adopted sandbox's init): nothing to reap, ever.
    if matches!(
        process::reap_pidfd(pidfd.as_fd(), false),
        Err(nix::errno::Errno::ECHILD)
    ) {
        return;
    }
    let mut orphans = lock(&ORPHANS);
    orphans.0.push(pidfd);
    if !orphans.1 {
        let started = std::thread::Builder::new()
            .name("sandlot-orphans".into())
            .spawn(run)
            .is_ok();
        orphans.1 = started;
    }
}

fn run() {
    let mut mine: Vec<OwnedFd> = Vec::new();
    loop {
        {
            let mut orphans = lock(&ORPHANS);
            mine.append(&mut orphans.0);
            // Reaped now (it ended), or not ours after all: let go.
            mine.retain(|pidfd| matches!(process::reap_pidfd(pidfd.as_fd(), false), Ok(false)));
            if mine.is_empty() {
                orphans.1 = false;
                return;
            }
        }
        let mut fds: Vec<PollFd<'_>> = mine
            .iter()
            .map(|pidfd| PollFd::new(pidfd.as_fd(), PollFlags::POLLIN))
            .collect();
        let timeout = PollTimeout::try_from(RESCAN.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
        let _ = poll(&mut fds, timeout);
    }
}
