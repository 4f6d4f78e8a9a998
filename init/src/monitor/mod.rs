//! `sandlot-monitor`: the init binary started under another name, outside
//! the sandbox, one per persistent sandbox — what conmon and containerd's
//! shims are to their runtimes. It makes a persistent sandbox's deadline
//! and idle timeout hold while no process of sandlot runs, and cleans up
//! what only the host can remove when the sandbox ends on its own.
//!
//! Started by the runtime as
//! `sandlot-monitor <sandbox dir> <init pid> <init start time> <cgroup dir>…`
//! (see `sandlot_proto::monitor` for the files of the sandbox dir). It
//!
//! 1. forks into a new session and lets the first process exit at once,
//!    so the creator only reaps that one and no signal of the creator's
//!    terminal or process group reaches the monitor;
//! 2. holds `monitor.lock` for its whole life (a second monitor of the same
//!    sandbox exits at once; a runtime that finds the lock free starts one);
//! 3. opens a pidfd of init, after checking its start time (a recycled pid
//!    is never taken for init);
//! 4. waits on init's pidfd, an inotify watch of the sandbox dir (the
//!    lifecycle file is replaced whenever a runtime moves the deadline,
//!    pauses or resumes) and a timeout at the next deadline;
//! 5. at the deadline: destroys the sandbox, or pauses it when its
//!    lifecycle says so; when idle longer than the idle timeout (the
//!    activity file's mtime, and no shared lock on it: commands in flight):
//!    destroys it; when init dies: cleans up.
//!
//! Ending a sandbox, under the record's lock, is: the tombstone (the
//! record and the reason), `cgroup.kill` (or SIGKILL to init), a thaw, the
//! wait for init's exit, the cgroup dirs, the sandbox's directory. A
//! runtime ending it meanwhile holds the same lock; whoever comes second
//! finds the record gone and leaves.

#[allow(unsafe_code)]
mod sys;

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sandlot_proto::monitor::{
    self as contract, reason, Lifecycle, OnTimeout, Phase, ACTIVITY, LIFECYCLE, LOCK,
    MONITOR_ARGV0, MONITOR_LOCK, RECORD, TOMBSTONES,
};

/// Whether this process was started as a monitor.
pub fn invoked() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|argv0| argv0 == MONITOR_ARGV0)
}

/// The longest the monitor sleeps without looking at the clock again (a
/// wall clock that jumps is noticed within this).
const MAX_SLEEP_MS: u64 = 60_000;

/// While commands are in flight, how often the idle timeout looks again.
const BUSY_RECHECK_MS: u64 = 1_000;

/// How long init may take to die after the kill.
const DEATH_WAIT: Duration = Duration::from_secs(10);

/// How long a cgroup dir may stay busy (tasks still leaving) after the kill.
const RMDIR_WAIT: Duration = Duration::from_secs(2);

struct Args {
    /// `<state dir>/sandboxes/<id>`.
    dir: PathBuf,
    id: String,
    /// `<state dir>/tombstones`.
    tombstones: PathBuf,
    pid: i32,
    start_time: u64,
    cgroups: Vec<PathBuf>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Args, String> {
        let usage = "usage: sandlot-monitor SANDBOX_DIR INIT_PID INIT_START_TIME CGROUP_DIR...";
        args.next();
        let dir = PathBuf::from(args.next().ok_or(usage)?);
        let number = |arg: Option<OsString>| -> Result<u64, String> {
            arg.ok_or(usage)?
                .to_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| usage.to_string())
        };
        let pid = i32::try_from(number(args.next())?).map_err(|_| usage)?;
        let start_time = number(args.next())?;
        let cgroups: Vec<PathBuf> = args.map(PathBuf::from).collect();
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or(usage)?
            .to_string();
        let state_dir = dir
            .parent()
            .and_then(Path::parent)
            .ok_or("the sandbox dir must be <state dir>/sandboxes/<id>")?;
        if !dir.is_absolute() || cgroups.iter().any(|c| !c.is_absolute()) {
            return Err("paths must be absolute".into());
        }
        Ok(Args {
            tombstones: state_dir.join(TOMBSTONES),
            dir,
            id,
            pid,
            start_time,
            cgroups,
        })
    }
}

pub fn main() -> ExitCode {
    let args = match Args::parse(std::env::args_os()) {
        Ok(args) => args,
        Err(e) => {
            let _ = writeln!(io::stderr(), "sandlot-monitor: {e}");
            return ExitCode::from(2);
        }
    };
    // 1. Leave the creator: whatever it left open goes, the first process
    //    exits (the creator reaps it at once), the second leads a session.
    let _ = sys::close_from(3);
    match sys::fork() {
        Ok(0) => {}
        Ok(_) => sys::exit_now(0),
        Err(_) => return ExitCode::FAILURE,
    }
    let _ = sys::setsid();
    let _ = crate::sys::set_name(c"sandlot-monitor");

    // 2. One monitor per sandbox, for as long as it lives.
    let Ok(lifetime) = open_rw(&args.dir.join(MONITOR_LOCK)) else {
        return ExitCode::SUCCESS; // the sandbox is gone already
    };
    if !sys::flock(lifetime.as_fd(), libc::LOCK_EX | libc::LOCK_NB).unwrap_or(false) {
        return ExitCode::SUCCESS; // another monitor watches it
    }

    // 3-4. init, the lifecycle file, stdin.
    let mut monitor = match Monitor::new(args) {
        Ok(monitor) => monitor,
        Err(args) => {
            // init is gone already: only the cleanup is left.
            end(&args, reason::INIT_DIED, "", None);
            return ExitCode::SUCCESS;
        }
    };
    monitor.run();
    drop(lifetime);
    ExitCode::SUCCESS
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens a file of the sandbox's directory; never creates it (made with
/// the directory: missing means the sandbox is gone, and creating it would
/// put a file back into a directory its remover is emptying).
fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Start time of `pid` in clock ticks since boot (field 22 of its stat),
/// `None` when it does not exist or is a zombie.
fn live_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

struct Monitor {
    args: Args,
    init: OwnedFd,
    inotify: OwnedFd,
    lifecycle: Option<Lifecycle>,
}

/// What the idle timeout says now.
enum Idle {
    /// Idle past the timeout; the activity lock is held (no command can
    /// start until the sandbox is gone).
    Expired(File),
    /// Look again at this time (ms since the epoch).
    NextAt(u64),
}

impl Monitor {
    /// Opens init's pidfd (checked against its start time) and the watch;
    /// gives the arguments back if init is gone.
    fn new(args: Args) -> Result<Monitor, Args> {
        let Ok(init) = sys::pidfd_open(args.pid) else {
            return Err(args);
        };
        // Checked after the pidfd exists: if the pid had been recycled
        // before the open, the start time differs now.
        if live_start_time(args.pid) != Some(args.start_time) {
            return Err(args);
        }
        let Ok(dir) = CString::new(args.dir.as_os_str().as_bytes()) else {
            return Err(args);
        };
        let Ok(inotify) = sys::watch_renames_into(&dir) else {
            return Err(args);
        };
        let mut monitor = Monitor {
            args,
            init,
            inotify,
            lifecycle: None,
        };
        monitor.reload();
        Ok(monitor)
    }

    /// Re-reads the lifecycle file (a runtime replaced it). A file that
    /// cannot be read keeps what was known.
    fn reload(&mut self) {
        if let Ok(text) = fs::read_to_string(self.args.dir.join(LIFECYCLE)) {
            if let Ok(lifecycle) = Lifecycle::decode(&text) {
                self.lifecycle = Some(lifecycle);
            }
        }
    }

    fn run(&mut self) {
        loop {
            let now = now_ms();
            let mut wake = now + MAX_SLEEP_MS;
            if let Some(lifecycle) = self.lifecycle.filter(Lifecycle::clock_runs) {
                if now >= lifecycle.end_at_ms {
                    match lifecycle.on_timeout {
                        OnTimeout::Kill => return self.end(reason::TIMEOUT, None),
                        OnTimeout::Pause => {
                            self.pause_at_timeout();
                            continue;
                        }
                    }
                }
                wake = wake.min(lifecycle.end_at_ms);
                if lifecycle.idle_ms > 0 && lifecycle.phase == Phase::Running {
                    match self.idle(now, lifecycle.idle_ms) {
                        Idle::Expired(activity) => {
                            return self.end(reason::IDLE, Some(activity));
                        }
                        Idle::NextAt(at) => wake = wake.min(at),
                    }
                }
            }
            let mut fds = [
                pollfd(self.init.as_raw_fd()),
                pollfd(self.inotify.as_raw_fd()),
            ];
            let timeout = wake.saturating_sub(now).min(MAX_SLEEP_MS) as i32;
            if crate::sys::poll(&mut fds, timeout).is_err() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if fds[0].revents != 0 {
                return self.end(reason::INIT_DIED, None);
            }
            if fds[1].revents != 0 {
                let _ = sys::drain(self.inotify.as_fd());
                if !self.args.dir.exists() {
                    // Ended by a runtime (which held the lock): nothing
                    // left to watch once init is gone.
                    return self.end(reason::INIT_DIED, None);
                }
                self.reload();
            }
        }
    }

    /// The idle timeout at `now`: the activity file's mtime is the last
    /// activity; a shared lock on it means commands are in flight.
    fn idle(&self, now: u64, idle_ms: u64) -> Idle {
        let path = self.args.dir.join(ACTIVITY);
        let last = |file: &File| {
            file.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64)
        };
        let Ok(file) = open_rw(&path) else {
            return Idle::NextAt(now + idle_ms);
        };
        let due = last(&file) + idle_ms;
        if now < due {
            return Idle::NextAt(due);
        }
        match sys::flock(file.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(true) => {}
            // Commands in flight: activity for as long as they run.
            _ => return Idle::NextAt(now + idle_ms.min(BUSY_RECHECK_MS)),
        }
        // Something may have ended just before the lock was ours.
        let due = last(&file) + idle_ms;
        if now < due {
            return Idle::NextAt(due);
        }
        Idle::Expired(file)
    }

    /// The lifetime ran out and the sandbox pauses instead of ending:
    /// freeze, then say so in the lifecycle file (clock stopped, nothing
    /// left of it: a resume gives the timeout again).
    fn pause_at_timeout(&mut self) {
        let Ok(lock) = open_rw(&self.args.dir.join(LOCK)) else {
            return;
        };
        if !sys::flock(lock.as_fd(), libc::LOCK_EX).unwrap_or(false) {
            return;
        }
        self.reload();
        let Some(mut lifecycle) = self.lifecycle else {
            return;
        };
        if !lifecycle.clock_runs() || now_ms() < lifecycle.end_at_ms {
            return; // moved or paused meanwhile
        }
        freeze(&self.args.cgroups);
        lifecycle.phase = Phase::Paused;
        lifecycle.clock_left_ms = Some(0);
        if replace(&self.args.dir, LIFECYCLE, lifecycle.encode().as_bytes()).is_ok() {
            self.lifecycle = Some(lifecycle);
        } else {
            // Could not say it is paused: better not pause at all.
            thaw(&self.args.cgroups);
            self.lifecycle = None;
        }
    }

    fn end(&self, why: &str, activity: Option<File>) {
        end(&self.args, why, "", Some(&self.init));
        drop(activity);
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Ends the sandbox for `why` unless a runtime did already (see the
/// module docs).
fn end(args: &Args, why: &str, detail: &str, init: Option<&OwnedFd>) {
    let Ok(lock) = open_rw(&args.dir.join(LOCK)) else {
        return;
    };
    if !sys::flock(lock.as_fd(), libc::LOCK_EX).unwrap_or(false) {
        return;
    }
    let Ok(record) = fs::read_to_string(args.dir.join(RECORD)) else {
        return; // ended by a runtime meanwhile
    };
    let init_alive = init.is_some_and(|pidfd| !exited(pidfd, Duration::ZERO));
    let (why, detail) = match (why, oom_kills(&args.cgroups)) {
        (reason::INIT_DIED, kills) if kills > 0 => (
            reason::OOM,
            format!("init died; the memory cgroup counted {kills} OOM kills"),
        ),
        _ => (why, detail.to_string()),
    };
    let tombstone = contract::tombstone(why, &detail, now_ms(), &record);
    let _ = fs::create_dir_all(&args.tombstones);
    let _ = replace(
        &args.tombstones,
        &format!("{}.json", args.id),
        tombstone.as_bytes(),
    );
    if init_alive {
        kill(&args.cgroups, init);
    }
    if let Some(pidfd) = init {
        exited(pidfd, DEATH_WAIT);
    }
    for dir in &args.cgroups {
        remove_cgroup(dir);
    }
    // The record first: whoever takes the lock next finds it gone.
    let _ = fs::remove_file(args.dir.join(RECORD));
    let _ = fs::remove_dir_all(&args.dir);
    drop(lock);
}

/// Whether init has exited, waiting up to `wait`.
fn exited(pidfd: &OwnedFd, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let mut fds = [pollfd(pidfd.as_raw_fd())];
        let left = deadline.saturating_duration_since(Instant::now());
        match crate::sys::poll(&mut fds, left.as_millis() as i32) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => return false,
        }
    }
}

/// SIGKILL to every process: `cgroup.kill` where there is one (frozen
/// tasks too), else to init, whose death ends its pid namespace; then a
/// thaw, which the v1 freezer needs even for killed tasks.
fn kill(cgroups: &[PathBuf], init: Option<&OwnedFd>) {
    let killed = cgroups
        .iter()
        .any(|dir| fs::write(dir.join("cgroup.kill"), "1").is_ok());
    if !killed {
        if let Some(pidfd) = init {
            let _ = sys::pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
        }
    }
    thaw(cgroups);
}

fn freeze(cgroups: &[PathBuf]) {
    for dir in cgroups {
        if fs::write(dir.join("cgroup.freeze"), "1").is_ok()
            || fs::write(dir.join("freezer.state"), "FROZEN").is_ok()
        {
            return;
        }
    }
}

fn thaw(cgroups: &[PathBuf]) {
    for dir in cgroups {
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
    }
}

/// OOM kills the memory cgroup counted (v2 `memory.events`, v1
/// `memory.oom_control`), 0 when unknown.
fn oom_kills(cgroups: &[PathBuf]) -> u64 {
    cgroups
        .iter()
        .flat_map(|dir| ["memory.events", "memory.oom_control"].map(|f| dir.join(f)))
        .filter_map(|file| fs::read_to_string(file).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| line.strip_prefix("oom_kill "))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// Removes a cgroup dir whose tasks were killed (they may take a moment
/// to leave).
fn remove_cgroup(dir: &Path) {
    let deadline = Instant::now() + RMDIR_WAIT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return,
        }
    }
}

/// Replaces `dir/name` whole: a temporary file, then a rename over it.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes));
    match written.and_then(|()| fs::rename(&tmp, dir.join(name))) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}
