//! Starting one command: everything that can be prepared is prepared before
//! the child exists ([`Plan`]); the child itself (in `sys`) only makes
//! system calls; the parent learns the outcome from a close-on-exec pipe.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use sandlot_proto::{PtySize, Spawn, StdioMask};

use crate::sys;

/// `PATH` when the request's environment has none (glibc's and the usual
/// distribution default for root).
const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A spawn request turned into exactly what `execve` and friends take.
pub struct Plan {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    /// Where the extra descriptors go, in the order they arrived.
    extra_fds: Vec<i32>,
    pty: Option<PtySize>,
}

/// A command that started.
pub struct Started {
    pub pid: i32,
    /// The master end of its terminal, for the host (a [`Spawn::pty`]
    /// request).
    pub pty_master: Option<OwnedFd>,
}

impl Plan {
    /// Fails with `EINVAL` for an empty argv or a string with a NUL byte.
    pub fn new(spawn: Spawn) -> Result<Plan, i32> {
        let file = spawn.argv.first().ok_or(libc::EINVAL)?;
        let candidates = candidates(file, &spawn.env)?;
        // An empty cwd means "where init is": the sandbox's root.
        let cwd = if spawn.cwd.is_empty() {
            b"/".to_vec()
        } else {
            spawn.cwd
        };
        Ok(Plan {
            candidates,
            argv: cstrings(spawn.argv)?,
            envp: cstrings(spawn.env)?,
            cwd: cstring(cwd)?,
            uid: spawn.uid,
            gid: spawn.gid,
            groups: spawn.groups,
            extra_fds: spawn.extra_fds,
            pty: spawn.pty,
        })
    }
}

fn cstring(bytes: Vec<u8>) -> Result<CString, i32> {
    CString::new(bytes).map_err(|_| libc::EINVAL)
}

fn cstrings(list: Vec<Vec<u8>>) -> Result<Vec<CString>, i32> {
    list.into_iter().map(cstring).collect()
}

/// The paths to try, in order, with `execvpe` semantics: a name with a `/`
/// is used as is; otherwise each `PATH` entry of the command's environment
/// is tried, an empty entry meaning the working directory.
fn candidates(file: &[u8], env: &[Vec<u8>]) -> Result<Vec<CString>, i32> {
    if file.is_empty() {
        return Ok(Vec::new());
    }
    if file.contains(&b'/') {
        return Ok(vec![cstring(file.to_vec())?]);
    }
    let path = env
        .iter()
        .find_map(|entry| entry.strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(|&b| b == b':')
        .map(|dir| {
            let mut full = Vec::with_capacity(dir.len() + 1 + file.len());
            if !dir.is_empty() {
                full.extend_from_slice(dir);
                full.push(b'/');
            }
            full.extend_from_slice(file);
            cstring(full)
        })
        .collect()
}

/// Starts the command and returns its pid once it has exec'd, or the errno
/// of the step that failed (the failed child is reaped here, so nobody ever
/// hears of it). `fds` are the stdio descriptors of `mask`, in order, then
/// the extra ones; they are closed when this returns, the child having its
/// own copies. A terminal request gets a new pseudo-terminal whose master
/// end is returned.
pub fn start(
    plan: &Plan,
    mask: StdioMask,
    fds: Vec<OwnedFd>,
    reset_signals: u64,
) -> Result<Started, i32> {
    let mut fds = fds.into_iter();
    let mut stdio: [Option<OwnedFd>; 3] = [None, None, None];
    for (slot, stream) in
        stdio
            .iter_mut()
            .zip([StdioMask::STDIN, StdioMask::STDOUT, StdioMask::STDERR])
    {
        if mask.has(stream) {
            *slot = fds.next();
        }
    }
    // Every source the child still reads after placing the extras (the
    // extras themselves and the report pipe) must lie above every target.
    let floor = plan.extra_fds.iter().max().map_or(3, |&top| top + 1);
    let above = |fd: OwnedFd| -> Result<OwnedFd, i32> {
        if fd.as_raw_fd() >= floor {
            Ok(fd)
        } else {
            sys::dup_above(fd.as_fd(), floor).map_err(errno)
        }
    };
    let extra: Vec<(OwnedFd, i32)> = fds
        .zip(plan.extra_fds.iter().copied())
        .map(|(fd, target)| Ok((above(fd)?, target)))
        .collect::<Result<_, i32>>()?;
    let terminal = match plan.pty {
        Some(size) => Some(open_terminal(size, plan.uid).map_err(errno)?),
        None => None,
    };
    let (report_read, report_write) = sys::pipe().map_err(errno)?;
    let report_write = above(report_write)?;
    let extra_borrowed: Vec<(BorrowedFd<'_>, i32)> =
        extra.iter().map(|(fd, t)| (fd.as_fd(), *t)).collect();
    let stdio_fds: [Option<BorrowedFd<'_>>; 3] = match &terminal {
        Some((_, slave)) => [Some(slave.as_fd()); 3],
        None => [0, 1, 2].map(|i| stdio[i].as_ref().map(|fd| fd.as_fd())),
    };
    let spec = sys::ExecSpec {
        candidates: &plan.candidates,
        argv: &plan.argv,
        envp: &plan.envp,
        cwd: &plan.cwd,
        uid: plan.uid,
        gid: plan.gid,
        groups: &plan.groups,
        stdio: stdio_fds,
        controlling_tty: terminal.is_some(),
        extra: &extra_borrowed,
        report: report_write.as_fd(),
        reset_signals,
    };
    let pid = sys::clone_exec(&spec).map_err(errno)?;
    // The stdio, the extras and the terminal's slave belong to the command
    // now.
    drop(extra_borrowed);
    drop(report_write);
    drop((stdio, extra));
    let pty_master = terminal.map(|(master, _slave)| master);

    // clone_exec returns only once the child has exec'd past the point of
    // no return, or has written its errno and exited: whatever it reported
    // is in the pipe already. So an empty pipe (EAGAIN) means success, and
    // nothing waits for the new program to close its copy of the write end
    // (which, with both cores busy, can take as long as the program runs).
    let mut report = [0u8; 4];
    match sys::read(report_read.as_fd(), &mut report) {
        Ok(0) => Ok(Started { pid, pty_master }),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Started { pid, pty_master }),
        Ok(4) => {
            reap_failed(pid);
            Err(i32::from_ne_bytes(report))
        }
        // A 4-byte pipe write is atomic, so this cannot happen; if it does,
        // the child's state is unknown and it must not run.
        _ => {
            let _ = sys::kill(pid, libc::SIGKILL);
            reap_failed(pid);
            Err(libc::EIO)
        }
    }
}

/// A new terminal of `size` for a command running as `uid`: (master,
/// slave). The slave belongs to the user, as login makes it (group tty and
/// mode 0620 come from the devpts mount), so that reopening it through
/// /proc/self/fd or `tty` works for the user too.
fn open_terminal(size: PtySize, uid: u32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (master, slave) = sys::open_pty()?;
    sys::set_window_size(master.as_fd(), size.rows, size.cols)?;
    if uid != 0 {
        sys::fchown_user(slave.as_fd(), uid)?;
    }
    Ok((master, slave))
}

/// Collects a child that failed before exec (it is exiting right now), so
/// that the reap loop never sees it and no `Exited` follows `SpawnFailed`.
fn reap_failed(pid: i32) {
    let _ = sys::wait4(pid, libc::__WALL);
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[CString]) -> Vec<&str> {
        list.iter().map(|c| c.to_str().unwrap()).collect()
    }

    #[test]
    fn a_name_with_a_slash_is_not_searched() {
        let got = candidates(b"./run", &[b"PATH=/a".to_vec()]).unwrap();
        assert_eq!(names(&got), ["./run"]);
    }

    #[test]
    fn path_of_the_request_is_searched_in_order_and_empty_means_cwd() {
        let env = [b"HOME=/".to_vec(), b"PATH=/a::/b/".to_vec()];
        let got = candidates(b"ls", &env).unwrap();
        assert_eq!(names(&got), ["/a/ls", "ls", "/b//ls"]);
    }

    #[test]
    fn default_path_without_one_in_env() {
        let got = candidates(b"sh", &[]).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(names(&got)[0], "/usr/local/sbin/sh");
        assert_eq!(names(&got)[5], "/bin/sh");
    }

    #[test]
    fn empty_name_has_no_candidates_and_nul_is_invalid() {
        assert!(candidates(b"", &[]).unwrap().is_empty());
        assert_eq!(candidates(b"a\0b", &[]).err(), Some(libc::EINVAL));
    }

    #[test]
    fn plan_rejects_empty_argv_and_nul_bytes() {
        let spawn = Spawn {
            id: 1,
            argv: Vec::new(),
            env: Vec::new(),
            cwd: Vec::new(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            stdio: StdioMask(0),
            extra_fds: Vec::new(),
            pty: None,
        };
        assert_eq!(Plan::new(spawn.clone()).err(), Some(libc::EINVAL));
        let nul_env = Spawn {
            argv: vec![b"true".to_vec()],
            env: vec![b"A=\0".to_vec()],
            ..spawn
        };
        assert_eq!(Plan::new(nul_env).err(), Some(libc::EINVAL));
    }
}
