//! cgroup v2 specifics: limit files, enabling controllers for our subtree
//! (and the host leaf that the no-internal-processes rule may require),
//! `cgroup.freeze` and `cgroup.kill`.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::error::CgroupError;
use super::files;
use super::layout::Controller;
use super::v1::{cpu_quota_us, CFS_PERIOD_US, FREEZE_PATIENCE};
use crate::kernel::limits::Limits;

/// `cpu.max` for a share of `cpus` CPUs: 0.5 → `"50000 100000"`.
pub fn cpu_max(cpus: f64) -> String {
    format!("{} {}", cpu_quota_us(cpus), CFS_PERIOD_US)
}

/// The files and values that apply `limits` in a new v2 cgroup, for the
/// roles v2 serves: `memory.max`, `memory.swap.max` 0 (when the kernel has
/// swap accounting: `swap_max`), `pids.max`, `cpu.max`, and `cpuset.cpus`
/// for pinned sandboxes.
pub(crate) fn limit_writes(
    roles: &[Controller],
    limits: &Limits,
    swap_max: bool,
) -> Vec<(&'static str, String)> {
    let mut w = Vec::with_capacity(5);
    for role in roles {
        match role {
            Controller::Memory => {
                w.push(("memory.max", limits.memory.to_string()));
                if swap_max {
                    w.push(("memory.swap.max", "0".to_string()));
                }
            }
            Controller::Pids => w.push(("pids.max", limits.pids.to_string())),
            Controller::Cpu => w.push(("cpu.max", cpu_max(limits.cpus))),
            Controller::Cpuset => {
                if let Some(cpus) = &limits.cpuset {
                    w.push(("cpuset.cpus", cpus.clone()));
                }
            }
            Controller::CpuAcct | Controller::Freezer => {}
        }
    }
    w
}

/// Writes `+c` for each controller to `dir/cgroup.subtree_control` in one
/// write.
pub(crate) fn enable(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    if controllers.is_empty() {
        return Ok(());
    }
    let value = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    files::write_path(&dir.join("cgroup.subtree_control"), &value)
}

fn disable(dir: &Path, controllers: &[String]) -> Result<(), CgroupError> {
    if controllers.is_empty() {
        return Ok(());
    }
    let value = controllers
        .iter()
        .map(|c| format!("-{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    files::write_path(&dir.join("cgroup.subtree_control"), &value)
}

fn words(path: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(files::read_path(path)?
        .split_whitespace()
        .map(String::from)
        .collect())
}

fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(files::parse_pids(&files::read_path(
        &dir.join("cgroup.procs"),
    )?))
}

/// The name of the leaf this process moves itself into.
pub(crate) fn host_leaf_name(pid: u32) -> String {
    format!("sandlot-host-{pid}")
}

/// The host leaf this process sits in, shared by every `Cgroups` of the
/// process (a process can be in one cgroup only).
struct LeafState {
    own_dir: PathBuf,
    leaf_dir: PathBuf,
    /// `Cgroups` instances relying on controllers enabled in `own_dir`.
    refs: usize,
    /// The controllers we enabled in `own_dir`'s subtree_control.
    enabled: Vec<String>,
}

static LEAF: Mutex<Option<LeafState>> = Mutex::new(None);

fn leaf_lock() -> MutexGuard<'static, Option<LeafState>> {
    LEAF.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `Cgroups` instance's claim on the host leaf; dropping the last claim
/// moves the process back (see [`prepare_parent`]).
#[derive(Debug)]
pub(crate) struct LeafRef(());

impl Drop for LeafRef {
    fn drop(&mut self) {
        release_leaf();
    }
}

/// The parent of `ppid` of a process, from `<proc>/<pid>/stat`.
fn ppid(proc_dir: &Path, pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")).ok()?;
    // "pid (comm) state ppid …": comm may contain anything, so start after
    // the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Makes `parent_dir` able to give `needed` controllers to the runtime's
/// dir below it: writes the missing ones to its `cgroup.subtree_control`.
///
/// The no-internal-processes rule: a non-root v2 cgroup that holds
/// processes cannot enable controllers for its children (EBUSY). When the
/// parent is this process's own cgroup (`may_move`, which is
/// `CgroupConfig::move_self_to_leaf` and no configured parent), this
/// process — with any children of ours still there — moves into a new leaf
/// `<own>/sandlot-host-<pid>` first; the returned [`LeafRef`] keeps it
/// there. If processes that are not ours remain, or moving is not allowed,
/// the result is [`CgroupError::InternalProcesses`], which explains the
/// rule and the fixes.
pub(crate) fn prepare_parent(
    parent_dir: &Path,
    needed: &[&'static str],
    may_move: bool,
    proc_dir: &Path,
) -> Result<Option<LeafRef>, CgroupError> {
    let mut state = leaf_lock();
    let leaf_here = state.as_ref().is_some_and(|s| s.own_dir == parent_dir);
    let present = words(&parent_dir.join("cgroup.subtree_control"))?;
    let missing: Vec<&'static str> = needed
        .iter()
        .copied()
        .filter(|c| !present.iter().any(|p| p == c))
        .collect();
    if missing.is_empty() {
        return Ok(leaf_here.then(|| {
            state.as_mut().expect("leaf_here").refs += 1;
            LeafRef(())
        }));
    }
    let offered = words(&parent_dir.join("cgroup.controllers"))?;
    if let Some(c) = missing.iter().find(|c| !offered.iter().any(|o| o == *c)) {
        return Err(CgroupError::ControllerUnavailable {
            controller: c,
            detail: format!(
                "{}/cgroup.controllers offers only [{}]; the parent's ancestors must enable it \
                 (a cgroup delegated by systemd with Delegate=yes has it)",
                parent_dir.display(),
                offered.join(" ")
            ),
        });
    }

    // The root cgroup has no cgroup.type and is exempt from the rule.
    let is_root = !parent_dir.join("cgroup.type").exists();
    let mut created_leaf = false;
    if !is_root {
        let pids = procs(parent_dir)?;
        if !pids.is_empty() {
            if !may_move || (state.is_some() && !leaf_here) {
                return Err(CgroupError::InternalProcesses {
                    path: parent_dir.to_owned(),
                    pids,
                });
            }
            if state.is_none() {
                let leaf_dir = parent_dir.join(host_leaf_name(std::process::id()));
                match std::fs::create_dir(&leaf_dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(CgroupError::Mkdir {
                            path: leaf_dir,
                            errno: super::error::errno_of(&e),
                        })
                    }
                }
                *state = Some(LeafState {
                    own_dir: parent_dir.to_owned(),
                    leaf_dir,
                    refs: 0,
                    enabled: Vec::new(),
                });
                created_leaf = true;
            }
            if let Err(e) = move_ours_to_leaf(state.as_ref().expect("set above"), proc_dir) {
                if created_leaf {
                    undo_leaf(&mut state);
                }
                return Err(e);
            }
        }
    }
    if let Err(e) = enable(parent_dir, &missing) {
        if created_leaf {
            undo_leaf(&mut state);
        }
        return Err(e);
    }
    match state.as_mut() {
        Some(s) if s.own_dir == parent_dir => {
            s.enabled.extend(missing.iter().map(|c| c.to_string()));
            s.refs += 1;
            Ok(Some(LeafRef(())))
        }
        _ => Ok(None),
    }
}

/// Moves this process and its children out of `own_dir` into the leaf;
/// fails if anything else stays.
fn move_ours_to_leaf(s: &LeafState, proc_dir: &Path) -> Result<(), CgroupError> {
    let me = std::process::id() as i32;
    let leaf_procs = s.leaf_dir.join("cgroup.procs");
    // a few rounds: a child may be forked while we move
    for _ in 0..4 {
        let pids = procs(&s.own_dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        let (ours, others): (Vec<i32>, Vec<i32>) = pids
            .into_iter()
            .partition(|&p| p == me || ppid(proc_dir, p) == Some(me));
        if !others.is_empty() {
            return Err(CgroupError::InternalProcesses {
                path: s.own_dir.clone(),
                pids: others,
            });
        }
        for pid in ours {
            match files::write_path(&leaf_procs, &pid.to_string()) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(Errno::ESRCH) => {} // exited meanwhile
                Err(e) => return Err(e),
            }
        }
    }
    let pids = procs(&s.own_dir)?;
    if pids.is_empty() {
        Ok(())
    } else {
        Err(CgroupError::InternalProcesses {
            path: s.own_dir.clone(),
            pids,
        })
    }
}

/// Moves everything in the leaf back and removes it (after a failure).
fn undo_leaf(state: &mut MutexGuard<'static, Option<LeafState>>) {
    if let Some(s) = state.take() {
        let own_procs = s.own_dir.join("cgroup.procs");
        for pid in procs(&s.leaf_dir).unwrap_or_default() {
            let _ = files::write_path(&own_procs, &pid.to_string());
        }
        let _ = std::fs::remove_dir(&s.leaf_dir);
    }
}

/// Drops one claim; the last one moves this process back to its own
/// cgroup and removes the leaf — only if the leaf holds nothing but this
/// process, after disabling the controllers we enabled (a cgroup with
/// controllers in subtree_control cannot take processes). Anything in the
/// way leaves the leaf in place for the next `Cgroups` to reuse.
fn release_leaf() {
    let mut state = leaf_lock();
    let Some(s) = state.as_mut() else { return };
    s.refs = s.refs.saturating_sub(1);
    if s.refs > 0 {
        return;
    }
    let me = std::process::id() as i32;
    if procs(&s.leaf_dir).map_or(true, |p| p != [me]) {
        return;
    }
    if disable(&s.own_dir, &s.enabled).is_err() {
        return;
    }
    if files::write_path(&s.own_dir.join("cgroup.procs"), &me.to_string()).is_err() {
        let enabled: Vec<&str> = s.enabled.iter().map(String::as_str).collect();
        let _ = enable(&s.own_dir, &enabled);
        return;
    }
    let _ = std::fs::remove_dir(&s.leaf_dir);
    *state = None;
}

/// Freezes through `cgroup.freeze` and waits for `frozen 1` in
/// `cgroup.events`, sleeping in poll(POLLPRI) (the kernel signals every
/// change of the file) — typically well under a millisecond. On timeout it
/// thaws again and fails.
pub(crate) fn freeze(dir: BorrowedFd<'_>, rel: &str, base: &Path) -> Result<(), CgroupError> {
    files::write_at(dir, &format!("{rel}/cgroup.freeze"), "1", base)?;
    if let Err(e) = wait_frozen(dir, rel, base, true, "freeze") {
        let _ = files::write_at(dir, &format!("{rel}/cgroup.freeze"), "0", base);
        return Err(e);
    }
    Ok(())
}

/// Thaws through `cgroup.freeze` and waits for `frozen 0`.
pub(crate) fn thaw(dir: BorrowedFd<'_>, rel: &str, base: &Path) -> Result<(), CgroupError> {
    files::write_at(dir, &format!("{rel}/cgroup.freeze"), "0", base)?;
    wait_frozen(dir, rel, base, false, "thaw")
}

/// The `frozen` value of `cgroup.events`.
pub(crate) fn parse_frozen(events: &str) -> Option<bool> {
    events.lines().find_map(|l| match l.trim() {
        "frozen 1" => Some(true),
        "frozen 0" => Some(false),
        _ => None,
    })
}

/// Reads `frozen` from `<rel>/cgroup.events`.
pub(crate) fn is_frozen(dir: BorrowedFd<'_>, rel: &str) -> Result<bool, Errno> {
    let mut buf = [0u8; 256];
    let text = files::read_at(dir, &format!("{rel}/cgroup.events"), &mut buf)?;
    Ok(parse_frozen(text).unwrap_or(false))
}

fn wait_frozen(
    dir: BorrowedFd<'_>,
    rel: &str,
    base: &Path,
    want: bool,
    action: &'static str,
) -> Result<(), CgroupError> {
    let file = format!("{rel}/cgroup.events");
    let read_err = |errno| CgroupError::Read {
        path: base.join(&file),
        errno,
    };
    let fd = files::open_read_at(dir, &file).map_err(read_err)?;
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        // reading also re-arms POLLPRI for the next change
        let text = files::pread_all(fd.as_fd(), &mut buf).map_err(read_err)?;
        if parse_frozen(text) == Some(want) {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= FREEZE_PATIENCE {
            return Err(CgroupError::Timeout {
                action,
                path: base.join(rel),
                waited,
            });
        }
        let left = (FREEZE_PATIENCE - waited).max(Duration::from_millis(1));
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLPRI)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(read_err(errno)),
        }
    }
}

/// Writes 1 to `<rel>/cgroup.kill`: SIGKILL to every process in the cgroup
/// and its descendants, including ones forked meanwhile. `Ok(false)` when
/// the kernel has no cgroup.kill (before 5.14).
pub(crate) fn kill(dir: BorrowedFd<'_>, rel: &str, base: &Path) -> Result<bool, CgroupError> {
    match files::write_at(dir, &format!("{rel}/cgroup.kill"), "1", base) {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_from_cpus() {
        assert_eq!(cpu_max(0.5), "50000 100000");
        assert_eq!(cpu_max(1.0), "100000 100000");
        assert_eq!(cpu_max(1.5), "150000 100000");
        assert_eq!(cpu_max(0.01), "1000 100000");
    }

    #[test]
    fn limit_files() {
        let limits = Limits {
            cpus: 0.5,
            memory: 64 << 20,
            pids: 32,
            ..Limits::default()
        };
        let roles = [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::CpuAcct,
            Controller::Freezer,
        ];
        assert_eq!(
            limit_writes(&roles, &limits, true),
            vec![
                ("memory.max", "67108864".to_string()),
                ("memory.swap.max", "0".to_string()),
                ("pids.max", "32".to_string()),
                ("cpu.max", "50000 100000".to_string()),
            ]
        );
        assert_eq!(
            limit_writes(&[Controller::Memory], &limits, false),
            vec![("memory.max", "67108864".to_string())]
        );
    }

    #[test]
    fn frozen_from_events() {
        assert_eq!(parse_frozen("populated 1\nfrozen 1\n"), Some(true));
        assert_eq!(parse_frozen("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_frozen("populated 0\n"), None);
    }

    #[test]
    fn ppid_parses_comm_with_spaces_and_parens() {
        let dir = std::env::temp_dir().join(format!("cgroups-ppid-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("42")).unwrap();
        std::fs::write(dir.join("42/stat"), "42 (a) b (c)) S 7 42 42 0 -1").unwrap();
        let got = ppid(&dir, 42);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, Some(7));
        assert_eq!(
            ppid(Path::new("/proc"), std::process::id() as i32),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }
}
