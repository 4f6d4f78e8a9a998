//! Resource limits of one sandbox.
//!
//! [`Limits`] is plain data with documented defaults; [`Limits::validate`]
//! checks it against this machine before anything is created and names the
//! bad field. Who enforces what:
//!
//! | field | enforced by |
//! |---|---|
//! | `cpus`, `memory`, `pids`, `cpuset` | the sandbox's cgroup ([`crate::kernel::cgroups`]) |
//! | `disk` | the size of the sandbox's tmpfs upper dir |
//! | `open_files`, `max_file_size` | rlimits (`RLIMIT_NOFILE`, `RLIMIT_FSIZE`) set in the child |
//!
//! [`ExecLimits`] bound the commands of a sandbox rather than the sandbox
//! itself; the host enforces them (the reactor's deadlines and output
//! forwarding, the command table).

#![deny(unsafe_code)]

use std::fs;
use std::time::Duration;

use thiserror::Error;

/// 1 MiB, for readability of the constants below.
const MIB: u64 = 1 << 20;

/// The smallest memory limit accepted: below this a sandbox's init and a
/// shell cannot even start, and the kernel's own per-cgroup overhead
/// (page tables, kernel stacks, slab) becomes most of the budget.
pub const MIN_MEMORY: u64 = 4 * MIB;

/// The smallest disk (tmpfs) size accepted.
pub const MIN_DISK: u64 = MIB;

/// The smallest CPU share accepted: a CFS quota cannot be below 1 ms per
/// 100 ms period, i.e. 0.01 of a CPU.
pub const MIN_CPUS: f64 = 0.01;

/// The smallest `open_files` accepted: stdin, stdout, stderr and the
/// control socket must fit, with a little room for the program itself.
pub const MIN_OPEN_FILES: u64 = 8;

/// The longest `ExecLimits::max_time` (30 days, a sandbox's longest life).
pub const MAX_EXEC_TIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Resource limits of one sandbox.
///
/// Defaults ([`Limits::default`]): 1 CPU, 512 MiB of memory, 128 processes
/// (threads count too), 1 GiB of disk, 1024 open files per process, no
/// maximum file size and no CPU pinning.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// CPU time as a number of CPUs, fractional: 0.5 is half of one CPU's
    /// time (a CFS quota of 50 ms per 100 ms period), 2.0 two CPUs' worth.
    /// At least [`MIN_CPUS`], at most the number of online CPUs.
    pub cpus: f64,
    /// Memory in bytes (anonymous memory, page cache, kernel memory charged
    /// to the cgroup); swap cannot extend it. At least [`MIN_MEMORY`].
    pub memory: u64,
    /// Maximum number of processes and threads alive at once, init included.
    /// At least 1, at most `/proc/sys/kernel/pid_max`.
    pub pids: u64,
    /// Size of the sandbox's writable layer in bytes. At least [`MIN_DISK`].
    pub disk: u64,
    /// `RLIMIT_NOFILE` of every process in the sandbox. At least
    /// [`MIN_OPEN_FILES`], at most this process's hard `RLIMIT_NOFILE`
    /// (nobody can raise it without CAP_SYS_RESOURCE).
    pub open_files: u64,
    /// `RLIMIT_FSIZE` in bytes, or `None` for no limit.
    pub max_file_size: Option<u64>,
    /// Pin the sandbox to these CPUs, in the kernel's list format
    /// (`"0-1,3"`); `None` runs it on any CPU of its parent cgroup. Only the
    /// syntax is checked by [`Limits::validate`]: whether the CPUs exist and
    /// belong to the parent cgroup's cpuset is checked by the kernel when
    /// the sandbox's cgroup is created.
    pub cpuset: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpus: 1.0,
            memory: 512 * MIB,
            pids: 128,
            disk: 1024 * MIB,
            open_files: 1024,
            max_file_size: None,
            cpuset: None,
        }
    }
}

/// A [`Limits`] field that cannot be used on this machine.
///
/// Every message starts with the field's name (`limits.<field>`, or
/// `exec_limits.<field>` for [`ExecLimits`]); the field is also available
/// as [`LimitsError::field`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LimitsError {
    /// `cpus` is NaN, infinite, or below [`MIN_CPUS`].
    #[error("limits.cpus is {value}: must be a finite number of at least {MIN_CPUS}")]
    CpusInvalid { value: f64 },
    /// `cpus` asks for more CPUs than the machine has online.
    #[error("limits.cpus is {value}: above the {online} online cpus of this machine")]
    CpusAboveMachine { value: f64, online: u64 },
    /// `memory` is 0.
    #[error("limits.memory is 0")]
    MemoryZero,
    /// `memory` is below [`MIN_MEMORY`].
    #[error("limits.memory is {value} bytes: below the minimum of {MIN_MEMORY} bytes (4 MiB)")]
    MemoryTooSmall { value: u64 },
    /// `pids` is 0: not even init could run.
    #[error("limits.pids is 0: init itself needs one")]
    PidsZero,
    /// `pids` is above the kernel's `pid_max`.
    #[error("limits.pids is {value}: above /proc/sys/kernel/pid_max ({pid_max})")]
    PidsAboveMax { value: u64, pid_max: u64 },
    /// `disk` is below [`MIN_DISK`] (0 would mean "unlimited" to tmpfs).
    #[error("limits.disk is {value} bytes: below the minimum of {MIN_DISK} bytes (1 MiB)")]
    DiskTooSmall { value: u64 },
    /// `open_files` is below [`MIN_OPEN_FILES`].
    #[error("limits.open_files is {value}: below the minimum of {MIN_OPEN_FILES}")]
    OpenFilesTooSmall { value: u64 },
    /// `open_files` is above what this process may grant.
    #[error(
        "limits.open_files is {value}: above this process's hard RLIMIT_NOFILE ({hard}), \
         which cannot be raised without CAP_SYS_RESOURCE"
    )]
    OpenFilesAboveHard { value: u64, hard: u64 },
    /// `max_file_size` is `Some(0)`.
    #[error("limits.max_file_size is 0: use None for no limit")]
    MaxFileSizeZero,
    /// `cpuset` is not a CPU list like `0-1,3`.
    #[error("limits.cpuset is {value:?}: {reason}")]
    CpusetSyntax { value: String, reason: &'static str },
    /// `ExecLimits::max_time` is zero: no command could run.
    #[error("exec_limits.max_time is 0: use None for no limit")]
    MaxTimeZero,
    /// `ExecLimits::max_time` is above [`MAX_EXEC_TIME`].
    #[error("exec_limits.max_time is {value:?}: above the maximum of {MAX_EXEC_TIME:?}")]
    MaxTimeTooLong { value: Duration },
    /// `ExecLimits::max_concurrent` is zero: no command could run.
    #[error("exec_limits.max_concurrent is 0: use None for no limit")]
    MaxConcurrentZero,
}

impl LimitsError {
    /// The name of the offending field, e.g. `"memory"`.
    pub fn field(&self) -> &'static str {
        match self {
            LimitsError::CpusInvalid { .. } | LimitsError::CpusAboveMachine { .. } => "cpus",
            LimitsError::MemoryZero | LimitsError::MemoryTooSmall { .. } => "memory",
            LimitsError::PidsZero | LimitsError::PidsAboveMax { .. } => "pids",
            LimitsError::DiskTooSmall { .. } => "disk",
            LimitsError::OpenFilesTooSmall { .. } | LimitsError::OpenFilesAboveHard { .. } => {
                "open_files"
            }
            LimitsError::MaxFileSizeZero => "max_file_size",
            LimitsError::CpusetSyntax { .. } => "cpuset",
            LimitsError::MaxTimeZero | LimitsError::MaxTimeTooLong { .. } => "max_time",
            LimitsError::MaxConcurrentZero => "max_concurrent",
        }
    }
}

/// Facts about the machine that limits are checked against; read once by
/// [`MachineLimits::current`], or made up in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineLimits {
    /// Online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`).
    pub online_cpus: u64,
    /// `/proc/sys/kernel/pid_max`.
    pub pid_max: u64,
    /// This process's hard `RLIMIT_NOFILE`.
    pub nofile_hard: u64,
}

impl MachineLimits {
    /// Reads the facts from this machine. A fact that cannot be read is
    /// replaced by a permissive value (the kernel still enforces its own).
    pub fn current() -> MachineLimits {
        use nix::sys::resource::{getrlimit, Resource};
        use nix::unistd::{sysconf, SysconfVar};
        let online_cpus = match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
            Ok(Some(n)) if n > 0 => n as u64,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        };
        let pid_max = fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        let nofile_hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(_, hard)| hard);
        MachineLimits {
            online_cpus,
            pid_max,
            nofile_hard,
        }
    }
}

impl Limits {
    /// Checks every field against this machine (its online CPUs, `pid_max`, RLIMIT_NOFILE)
    /// and returns the first bad one.
    pub fn validate(&self) -> Result<(), LimitsError> {
        self.validate_for(&MachineLimits::current())
    }

    /// [`Limits::validate`] against given machine facts.
    pub fn validate_for(&self, machine: &MachineLimits) -> Result<(), LimitsError> {
        if !self.cpus.is_finite() || self.cpus < MIN_CPUS {
            return Err(LimitsError::CpusInvalid { value: self.cpus });
        }
        if self.cpus > machine.online_cpus as f64 {
            return Err(LimitsError::CpusAboveMachine {
                value: self.cpus,
                online: machine.online_cpus,
            });
        }
        if self.memory == 0 {
            return Err(LimitsError::MemoryZero);
        }
        if self.memory < MIN_MEMORY {
            return Err(LimitsError::MemoryTooSmall { value: self.memory });
        }
        if self.pids == 0 {
            return Err(LimitsError::PidsZero);
        }
        if self.pids > machine.pid_max {
            return Err(LimitsError::PidsAboveMax {
                value: self.pids,
                pid_max: machine.pid_max,
            });
        }
        if self.disk < MIN_DISK {
            return Err(LimitsError::DiskTooSmall { value: self.disk });
        }
        if self.open_files < MIN_OPEN_FILES {
            return Err(LimitsError::OpenFilesTooSmall {
                value: self.open_files,
            });
        }
        if self.open_files > machine.nofile_hard {
            return Err(LimitsError::OpenFilesAboveHard {
                value: self.open_files,
                hard: machine.nofile_hard,
            });
        }
        if self.max_file_size == Some(0) {
            return Err(LimitsError::MaxFileSizeZero);
        }
        if let Some(list) = &self.cpuset {
            check_cpu_list(list).map_err(|reason| LimitsError::CpusetSyntax {
                value: list.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

/// Limits on the commands of one sandbox, enforced by the host. Every
/// field is `None` (no limit) by default.
///
/// - `max_time`: a command still running this long after it was started
///   is killed with its process group; its exit says
///   [`ExitReason::TimedOut`](crate::ExitReason::TimedOut). A shorter
///   [`RunOptions::timeout`](crate::RunOptions::timeout) wins.
/// - `max_output_bytes`: each of stdout and stderr forwards at most this
///   many bytes; the rest is read and discarded (so the command never
///   blocks on a full pipe) and the exit says `stdout_truncated` /
///   `stderr_truncated`. The command is not killed.
/// - `max_concurrent`: commands in flight at once; one more fails at once
///   with [`Error::QuotaExceeded`](crate::Error::QuotaExceeded) (it is not
///   queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ExecLimits {
    pub max_time: Option<Duration>,
    pub max_output_bytes: Option<u64>,
    pub max_concurrent: Option<usize>,
}

impl ExecLimits {
    pub fn max_time(mut self, max: Duration) -> Self {
        self.max_time = Some(max);
        self
    }

    pub fn max_output_bytes(mut self, max: u64) -> Self {
        self.max_output_bytes = Some(max);
        self
    }

    pub fn max_concurrent(mut self, max: usize) -> Self {
        self.max_concurrent = Some(max);
        self
    }

    /// Zero time or zero concurrency would refuse every command; zero
    /// output bytes is allowed (discard everything).
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_time.is_some_and(|t| t.is_zero()) {
            return Err(LimitsError::MaxTimeZero);
        }
        if let Some(value) = self.max_time.filter(|t| *t > MAX_EXEC_TIME) {
            return Err(LimitsError::MaxTimeTooLong { value });
        }
        if self.max_concurrent == Some(0) {
            return Err(LimitsError::MaxConcurrentZero);
        }
        Ok(())
    }
}

/// Checks the syntax of a kernel CPU list: `N` or `N-M` items (N ≤ M)
/// separated by commas.
fn check_cpu_list(list: &str) -> Result<(), &'static str> {
    if list.is_empty() {
        return Err("empty: use None for no pinning");
    }
    for item in list.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let parse = |s: &str| -> Result<u32, &'static str> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err("not a cpu list like 0-1,3");
            }
            s.parse().map_err(|_| "cpu number out of range")
        };
        if parse(lo)? > parse(hi)? {
            return Err("a range ends before it starts");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: MachineLimits = MachineLimits {
        online_cpus: 2,
        pid_max: 32768,
        nofile_hard: 20000,
    };

    fn with(f: impl FnOnce(&mut Limits)) -> Result<(), LimitsError> {
        let mut l = Limits::default();
        f(&mut l);
        l.validate_for(&MACHINE)
    }

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let l = Limits::default();
        assert_eq!(l.cpus, 1.0);
        assert_eq!(l.memory, 512 << 20);
        assert_eq!(l.pids, 128);
        assert_eq!(l.disk, 1 << 30);
        assert_eq!(l.open_files, 1024);
        assert_eq!(l.max_file_size, None);
        assert_eq!(l.cpuset, None);
        assert_eq!(l.validate_for(&MACHINE), Ok(()));
    }

    #[test]
    fn cpus_errors_name_the_field() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.001] {
            let e = with(|l| l.cpus = bad).unwrap_err();
            assert_eq!(e.field(), "cpus", "{bad}");
            assert!(e.to_string().starts_with("limits.cpus is "), "{e}");
        }
        let e = with(|l| l.cpus = 2.5).unwrap_err();
        assert_eq!(
            e,
            LimitsError::CpusAboveMachine {
                value: 2.5,
                online: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "limits.cpus is 2.5: above the 2 online cpus of this machine"
        );
        assert_eq!(with(|l| l.cpus = 0.01), Ok(()));
        assert_eq!(with(|l| l.cpus = 2.0), Ok(()));
    }

    #[test]
    fn memory_errors() {
        assert_eq!(with(|l| l.memory = 0), Err(LimitsError::MemoryZero));
        assert_eq!(
            with(|l| l.memory = (4 << 20) - 1),
            Err(LimitsError::MemoryTooSmall {
                value: (4 << 20) - 1
            })
        );
        assert_eq!(with(|l| l.memory = 4 << 20), Ok(()));
        assert_eq!(
            with(|l| l.memory = 0).unwrap_err().to_string(),
            "limits.memory is 0"
        );
    }

    #[test]
    fn pids_errors() {
        assert_eq!(with(|l| l.pids = 0), Err(LimitsError::PidsZero));
        assert_eq!(
            with(|l| l.pids = 32769),
            Err(LimitsError::PidsAboveMax {
                value: 32769,
                pid_max: 32768
            })
        );
        assert_eq!(with(|l| l.pids = 32768), Ok(()));
    }

    #[test]
    fn disk_files_and_size_errors() {
        assert_eq!(with(|l| l.disk = 0).unwrap_err().field(), "disk");
        assert_eq!(
            with(|l| l.open_files = 0).unwrap_err().field(),
            "open_files"
        );
        assert_eq!(
            with(|l| l.open_files = 20001),
            Err(LimitsError::OpenFilesAboveHard {
                value: 20001,
                hard: 20000
            })
        );
        assert_eq!(
            with(|l| l.max_file_size = Some(0)),
            Err(LimitsError::MaxFileSizeZero)
        );
        assert_eq!(with(|l| l.max_file_size = Some(1)), Ok(()));
    }

    #[test]
    fn cpuset_syntax() {
        for good in ["0", "0-1", "0,1", "0-1,3", "4096"] {
            assert_eq!(with(|l| l.cpuset = Some(good.into())), Ok(()), "{good}");
        }
        for bad in ["", "a", "1-", "-1", "3-1", "0,,1", " 0", "0x1"] {
            let e = with(|l| l.cpuset = Some(bad.into())).unwrap_err();
            assert_eq!(e.field(), "cpuset", "{bad:?}");
        }
    }

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            with(|l| l.cpus = 0.0).unwrap_err(),
            with(|l| l.memory = 1).unwrap_err(),
            with(|l| l.pids = 0).unwrap_err(),
            with(|l| l.open_files = 1).unwrap_err(),
            with(|l| l.cpuset = Some("x".into())).unwrap_err(),
        ];
        for e in errors {
            let m = e.to_string();
            assert!(!m.ends_with('.'), "{m}");
            assert!(m.starts_with("limits."), "{m}");
        }
    }

    #[test]
    fn exec_limits() {
        assert_eq!(ExecLimits::default().validate(), Ok(()));
        let e = ExecLimits::default().max_time(Duration::ZERO).validate();
        assert_eq!(e, Err(LimitsError::MaxTimeZero));
        assert_eq!(e.unwrap_err().field(), "max_time");
        let e = ExecLimits::default().max_concurrent(0).validate();
        assert_eq!(e, Err(LimitsError::MaxConcurrentZero));
        let e = ExecLimits::default().max_time(Duration::MAX).validate();
        assert_eq!(
            e,
            Err(LimitsError::MaxTimeTooLong {
                value: Duration::MAX
            })
        );
        let ok = ExecLimits::default()
            .max_time(Duration::from_millis(1))
            .max_output_bytes(0)
            .max_concurrent(1);
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn current_machine_is_plausible() {
        let m = MachineLimits::current();
        assert!(m.online_cpus >= 1);
        assert!(m.pid_max >= 301);
    }
}
