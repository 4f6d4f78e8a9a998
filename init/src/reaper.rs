//! The process tree below init: which pids are commands, collecting every
//! child that ends, and signalling everything at once.

use std::io;
use std::os::fd::OwnedFd;

use sandlot_proto::{Event, Status, Usage};

use crate::sys;

/// Which control connection a command belongs to: its events go there,
/// and its id is unique only within it. The creator's connection is
/// [`PRIMARY`]; a persistent sandbox numbers each accepted one after it.
pub type ConnKey = u32;

/// The connection the sandbox was created over.
pub const PRIMARY: ConnKey = 0;

/// The commands whose leader has not been reaped yet. A pid stays ours until
/// we reap it, so signalling a pid (or its process group) found here can
/// never hit a recycled pid.
#[derive(Default)]
pub struct Commands {
    running: Vec<Command>,
}

struct Command {
    conn: ConnKey,
    id: u64,
    pid: i32,
    /// Read ends of its output pipes kept for its connection's end
    /// (`StdioMask::KEEP_OUTPUT`); closed when it is reaped.
    kept: Vec<OwnedFd>,
}

impl Commands {
    pub fn insert(&mut self, conn: ConnKey, id: u64, pid: i32, kept: Vec<OwnedFd>) {
        self.running.push(Command {
            conn,
            id,
            pid,
            kept,
        });
    }

    pub fn pid_of(&self, conn: ConnKey, id: u64) -> Option<i32> {
        self.running
            .iter()
            .find(|c| c.conn == conn && c.id == id)
            .map(|c| c.pid)
    }

    /// The kept read ends of every command of connection `conn`, which is
    /// gone: now someone must read them.
    pub fn take_kept(&mut self, conn: ConnKey) -> Vec<OwnedFd> {
        self.running
            .iter_mut()
            .filter(|c| c.conn == conn)
            .flat_map(|c| std::mem::take(&mut c.kept))
            .collect()
    }

    fn take(&mut self, pid: i32) -> Option<(ConnKey, u64)> {
        let at = self.running.iter().position(|c| c.pid == pid)?;
        let command = self.running.swap_remove(at);
        Some((command.conn, command.id))
    }
}

/// Reaps every child that has ended. Commands are reported to `send` as
/// `Exited` with the connection that started them; orphans that were
/// reparented to us go silently. Returns the first send error (the host is
/// gone).
pub fn reap(
    commands: &mut Commands,
    mut send: impl FnMut(ConnKey, &Event) -> io::Result<()>,
) -> io::Result<()> {
    // __WALL: also children whose exit signal is not SIGCHLD.
    while let Ok(Some(child)) = sys::wait4(-1, libc::WNOHANG | libc::__WALL) {
        if let Some((conn, id)) = commands.take(child.pid) {
            send(
                conn,
                &Event::Exited {
                    id,
                    pid: child.pid,
                    status: status(child.status),
                    usage: usage(&child.usage),
                },
            )?;
        }
    }
    Ok(())
}

fn status(raw: i32) -> Status {
    if libc::WIFSIGNALED(raw) {
        Status::Signaled {
            signal: libc::WTERMSIG(raw),
            core_dumped: libc::WCOREDUMP(raw),
        }
    } else {
        Status::Exited(libc::WEXITSTATUS(raw))
    }
}

fn usage(ru: &libc::rusage) -> Usage {
    // Saturating: init must not abort on any number the kernel gives it.
    let micros = |tv: libc::timeval| {
        (tv.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000)
            .saturating_add(tv.tv_usec.max(0) as u64)
    };
    Usage {
        user_micros: micros(ru.ru_utime),
        system_micros: micros(ru.ru_stime),
        // Linux reports ru_maxrss in KiB already.
        max_rss_kib: ru.ru_maxrss.max(0) as u64,
    }
}

/// Who "everything but init" is.
#[derive(Clone, Copy)]
pub enum Scope {
    /// We are PID 1 of our pid namespace: `kill(-1)` reaches exactly every
    /// other process in it.
    Namespace,
    /// We are not PID 1 (tests): `kill(-1)` would reach the whole machine,
    /// so walk our descendants in /proc instead. Racy against pids being
    /// recycled, which is acceptable outside a sandbox only.
    Descendants,
}

impl Scope {
    pub fn of_pid(pid: i32) -> Scope {
        if pid == 1 {
            Scope::Namespace
        } else {
            Scope::Descendants
        }
    }
}

/// Sends `signal` to every process but init.
pub fn signal_all(scope: Scope, signal: i32) {
    match scope {
        Scope::Namespace => {
            let _ = sys::kill(-1, signal);
        }
        Scope::Descendants => {
            for pid in descendants(sys::getpid()) {
                let _ = sys::kill(pid, signal);
            }
        }
    }
}

/// Every descendant of `root`, from `/proc/<pid>/task/<tid>/children`.
fn descendants(root: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = task.path().join("children");
            let Ok(list) = std::fs::read_to_string(children) else {
                continue;
            };
            for child in list.split_whitespace().filter_map(|p| p.parse().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    todo.push(child);
                }
            }
        }
    }
    found
}

/// The host is gone: kill everything and collect it all. Killing again after
/// each reap catches processes that were forking while the previous kill ran,
/// and (outside a pid namespace) orphans that were just reparented to us.
pub fn kill_all_and_reap(scope: Scope) {
    loop {
        signal_all(scope, libc::SIGKILL);
        match sys::wait4(-1, libc::__WALL) {
            Ok(_) => continue,
            Err(_) => return, // ECHILD: nobody left.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_decode() {
        assert_eq!(status(3 << 8), Status::Exited(3));
        assert_eq!(
            status(libc::SIGKILL),
            Status::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false
            }
        );
        assert_eq!(
            status(libc::SIGSEGV | 0x80),
            Status::Signaled {
                signal: libc::SIGSEGV,
                core_dumped: true
            }
        );
    }

    #[test]
    fn commands_are_found_by_id_and_taken_by_pid() {
        let mut commands = Commands::default();
        let kept = || {
            let (read_end, _write_end) = std::io::pipe().unwrap();
            vec![OwnedFd::from(read_end)]
        };
        commands.insert(PRIMARY, 7, 100, Vec::new());
        commands.insert(PRIMARY, 8, 101, kept());
        // Another connection's id 7 is another command.
        commands.insert(3, 7, 102, kept());
        assert_eq!(commands.pid_of(PRIMARY, 8), Some(101));
        assert_eq!(commands.pid_of(3, 7), Some(102));
        assert_eq!(commands.take(100), Some((PRIMARY, 7)));
        assert_eq!(commands.take(100), None);
        assert_eq!(commands.pid_of(PRIMARY, 7), None);
        assert_eq!(commands.pid_of(3, 7), Some(102));
        // A connection's end hands over its commands' kept read ends, once;
        // the commands stay until reaped.
        assert_eq!(commands.take_kept(3).len(), 1);
        assert!(commands.take_kept(3).is_empty());
        assert_eq!(commands.pid_of(3, 7), Some(102));
        assert_eq!(commands.take_kept(PRIMARY).len(), 1);
    }
}
