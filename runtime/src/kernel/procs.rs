//! Processes named across process lifetimes: a pid alone may be recycled,
//! a pid with its start time (field 22 of `/proc/<pid>/stat`, clock ticks
//! since boot) names one process for good. Records in a state dir keep
//! both, and a record whose process's start time differs — or that is a
//! zombie — describes a process that is gone.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use crate::sys::process;

/// One process, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcId {
    /// `pid` as it is now, if it runs (not a zombie).
    pub fn of(pid: i32) -> Option<ProcId> {
        live_start_time(pid).map(|start_time| ProcId { pid, start_time })
    }

    /// This process.
    pub fn current() -> ProcId {
        let pid = std::process::id() as i32;
        ProcId::of(pid).unwrap_or(ProcId { pid, start_time: 0 })
    }

    /// Whether this very process still runs.
    pub fn is_alive(&self) -> bool {
        live_start_time(self.pid) == Some(self.start_time)
    }

    /// A pidfd of this very process: opened first, then the start time
    /// checked — had the pid been recycled before the open, the start time
    /// would differ now. `None` when it is gone.
    pub fn pidfd(&self) -> Option<OwnedFd> {
        let pidfd = process::pidfd_open(self.pid).ok()?;
        self.is_alive().then_some(pidfd)
    }
}

/// The start time of `pid`, `None` when there is no such process or it is
/// a zombie (dead, not yet reaped).
pub fn live_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// From the text of `/proc/<pid>/stat`: `pid (comm) state ppid …`; comm may
/// hold spaces and parentheses, so fields count from the last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    // state is field 3 of the whole line; starttime is field 22.
    fields.get(19)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_and_zombies_are_gone() {
        let line =
            "123 (a (b) c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 100";
        assert_eq!(parse_stat(line), Some(98765));
        let zombie = line.replace(") S ", ") Z ");
        assert_eq!(parse_stat(&zombie), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcId::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        assert!(me.pidfd().is_some());
        let other = ProcId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
        assert!(other.pidfd().is_none());
    }
}
