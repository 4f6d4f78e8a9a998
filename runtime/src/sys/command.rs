//! Extra descriptors for a `std::process::Command` child.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::fd::{dup_above, dup_to};
use super::SysResult;

/// Arranges for each `(fd, target)` to be open as descriptor `target` in
/// the child of `cmd` (inherited across exec). The sources are first
/// duplicated above every target, so that placing one never overwrites
/// another; the duplicates move into the closure and close, in the parent,
/// when `cmd` is dropped.
pub fn map_fds(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>) -> SysResult<()> {
    let floor = fds.iter().map(|(_, target)| *target).max().unwrap_or(2) + 1;
    let mut moved = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        let high = dup_above(fd.as_raw_fd(), floor)?;
        // SAFETY: dup_above returned a new descriptor that nothing else owns.
        moved.push((
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) },
            target,
        ));
    }
    let plan: Vec<(RawFd, RawFd)> = moved.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls dup3 (async-signal-safe, no allocation: `plan` was built before
    // the fork). `moved` keeps the sources open until the Command drops.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &moved;
            for &(fd, target) in &plan {
                dup_to(fd, target, false).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    Ok(())
}
