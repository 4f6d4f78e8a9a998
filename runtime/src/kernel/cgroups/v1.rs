//! cgroup v1 specifics: limit files, cpuset preparation, the v1 freezer.

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::error::CgroupError;
use super::files;
use super::layout::Controller;
use crate::kernel::limits::Limits;

/// The CFS period of a new cgroup: the kernel default of 100 ms
/// (`default_cfs_period()`), which sandlot keeps, so only the quota is
/// written.
pub(crate) const CFS_PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel accepts (1 ms).
const MIN_QUOTA_US: i64 = 1_000;

/// How long freeze waits for every task to stop.
pub(crate) const FREEZE_PATIENCE: Duration = Duration::from_secs(5);

/// `cpu.cfs_quota_us` for a share of `cpus` CPUs per CFS period (100 ms):
/// 0.5 → 50000.
pub fn cpu_quota_us(cpus: f64) -> i64 {
    ((cpus * CFS_PERIOD_US as f64).round() as i64).max(MIN_QUOTA_US)
}

/// The files and values that apply `limits` in a new v1 cgroup of a
/// hierarchy serving `roles`, in the order they must be written.
///
/// - memory: `memory.limit_in_bytes`, then `memory.memsw.limit_in_bytes`
///   to the same value when the kernel accounts swap (`memsw`; it must not
///   be below the first), so swap cannot extend the limit, and
///   `memory.swappiness` 0;
/// - pids: `pids.max`;
/// - cpu: `cpu.cfs_quota_us` (the period stays at its default);
/// - cpuset (pinned sandboxes only): `cpuset.cpus` (`cpuset.mems` comes
///   from the parent through `cgroup.clone_children`).
pub(crate) fn limit_writes(
    roles: &[Controller],
    limits: &Limits,
    memsw: bool,
) -> Vec<(&'static str, String)> {
    let mut w = Vec::with_capacity(6);
    for role in roles {
        match role {
            Controller::Memory => {
                w.push(("memory.limit_in_bytes", limits.memory.to_string()));
                if memsw {
                    w.push(("memory.memsw.limit_in_bytes", limits.memory.to_string()));
                }
                w.push(("memory.swappiness", "0".to_string()));
            }
            Controller::Pids => w.push(("pids.max", limits.pids.to_string())),
            Controller::Cpu => w.push(("cpu.cfs_quota_us", cpu_quota_us(limits.cpus).to_string())),
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

/// Makes a new v1 cpuset cgroup usable: it starts with empty
/// `cpuset.cpus`/`cpuset.mems`, and adding a task then fails with ENOSPC.
/// Copies both from `parent`, then sets `cgroup.clone_children` so that
/// sandbox cgroups created below get them from the kernel at mkdir.
pub(crate) fn prepare_cpuset(
    parent: &Path,
    dir: BorrowedFd<'_>,
    dir_path: &Path,
) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut value = files::read_path(&parent.join(file))?.trim().to_string();
        if value.is_empty() {
            // a parent that itself inherits: use what it effectively has
            let effective = file.replace("cpuset.", "cpuset.effective_");
            value = files::read_path(&parent.join(effective))?
                .trim()
                .to_string();
        }
        files::write_at(dir, file, &value, dir_path)?;
    }
    files::write_at(dir, "cgroup.clone_children", "1", dir_path)
}

/// Freezes with the v1 freezer: writes FROZEN to `<rel>/freezer.state` and
/// waits until the state reads FROZEN (it reads FREEZING while tasks are
/// still running), polling with short, growing pauses (50 µs … 1 ms). On
/// timeout it thaws again and fails.
pub(crate) fn freeze(dir: BorrowedFd<'_>, rel: &str, base: &Path) -> Result<(), CgroupError> {
    let file = format!("{rel}/freezer.state");
    files::write_at(dir, &file, "FROZEN", base)?;
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        if state(dir, &file, base)? == "FROZEN" {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= FREEZE_PATIENCE {
            let _ = files::write_at(dir, &file, "THAWED", base);
            return Err(CgroupError::Timeout {
                action: "freeze",
                path: base.join(&file),
                waited,
            });
        }
        thread::sleep(pause);
        // a freezer.state read also re-checks, so re-writing is not needed
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

/// Thaws with the v1 freezer (takes effect at once).
pub(crate) fn thaw(dir: BorrowedFd<'_>, rel: &str, base: &Path) -> Result<(), CgroupError> {
    files::write_at(dir, &format!("{rel}/freezer.state"), "THAWED", base)
}

/// Reads `freezer.state` (`THAWED`, `FREEZING` or `FROZEN`).
pub(crate) fn state(dir: BorrowedFd<'_>, file: &str, base: &Path) -> Result<String, CgroupError> {
    let mut buf = [0u8; 32];
    files::read_at(dir, file, &mut buf)
        .map(|s| s.trim().to_string())
        .map_err(|errno| CgroupError::Read {
            path: base.join(file),
            errno,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_from_cpus() {
        assert_eq!(cpu_quota_us(0.5), 50_000);
        assert_eq!(cpu_quota_us(1.0), 100_000);
        assert_eq!(cpu_quota_us(2.0), 200_000);
        assert_eq!(cpu_quota_us(0.25), 25_000);
        assert_eq!(cpu_quota_us(1.0 / 3.0), 33_333);
        assert_eq!(cpu_quota_us(0.01), 1_000);
        assert_eq!(cpu_quota_us(0.001), 1_000, "the kernel's minimum");
        assert_eq!(CFS_PERIOD_US, 100_000);
    }

    #[test]
    fn limit_files_and_order() {
        let limits = Limits {
            cpus: 0.5,
            memory: 256 << 20,
            pids: 64,
            ..Limits::default()
        };
        let all = [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::CpuAcct,
            Controller::Freezer,
        ];
        assert_eq!(
            limit_writes(&all, &limits, true),
            vec![
                ("memory.limit_in_bytes", "268435456".to_string()),
                ("memory.memsw.limit_in_bytes", "268435456".to_string()),
                ("memory.swappiness", "0".to_string()),
                ("pids.max", "64".to_string()),
                ("cpu.cfs_quota_us", "50000".to_string()),
            ]
        );
        // no swap accounting: no memsw file to write
        assert_eq!(
            limit_writes(&[Controller::Memory], &limits, false),
            vec![
                ("memory.limit_in_bytes", "268435456".to_string()),
                ("memory.swappiness", "0".to_string()),
            ]
        );
        // cpuset only when pinned
        assert!(limit_writes(&[Controller::Cpuset], &limits, true).is_empty());
        let pinned = Limits {
            cpuset: Some("1".into()),
            ..limits
        };
        assert_eq!(
            limit_writes(&[Controller::Cpuset], &pinned, true),
            vec![("cpuset.cpus", "1".to_string())]
        );
    }
}
