//! Resource usage of a sandbox's cgroup, read cheaply enough for 1,000
//! calls per second: the files are opened once (on the first call) and
//! re-read with pread at offset 0, which makes cgroupfs regenerate them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::error::CgroupError;
use super::files;
use super::layout::Version;

/// A snapshot of a sandbox's resource usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupStats {
    /// CPU time used by every task, ever, in nanoseconds (v1
    /// `cpuacct.usage`; v2 `cpu.stat` `usage_usec` × 1000).
    pub cpu_usage_ns: u64,
    /// Memory charged now, in bytes (`memory.usage_in_bytes` /
    /// `memory.current`).
    pub memory_current: u64,
    /// The most memory ever charged (`memory.max_usage_in_bytes` /
    /// `memory.peak`); `None` on v2 kernels before 5.19.
    pub memory_peak: Option<u64>,
    /// The memory limit in bytes.
    pub memory_limit: u64,
    /// Page cache in bytes (`memory.stat` `cache` on v1, `file` on v2).
    pub memory_cache: u64,
    /// Processes and threads alive.
    pub pids_current: u64,
    /// The process limit.
    pub pids_max: u64,
    /// How many times the OOM killer killed a task of this cgroup (v1
    /// `memory.oom_control` `oom_kill`, v2 `memory.events` `oom_kill`).
    pub oom_kills: u64,
}

/// Where one role's stat files live: the runtime dir's fd and path, and the
/// sandbox id below it.
pub(crate) struct StatDir<'a> {
    pub version: Version,
    pub fd: BorrowedFd<'a>,
    pub base: &'a Path,
    pub id: &'a str,
}

/// The open stat files of one sandbox.
pub(crate) struct StatFiles {
    cpu_version: Version,
    cpu: OwnedFd,
    memory_version: Version,
    memory_current: OwnedFd,
    memory_peak: Option<OwnedFd>,
    memory_stat: OwnedFd,
    memory_events: OwnedFd,
    pids_current: OwnedFd,
    /// The sandbox dirs of the cpu, memory and pids roles, for messages.
    cpu_dir: PathBuf,
    memory_dir: PathBuf,
    pids_dir: PathBuf,
    buf: Vec<u8>,
}

/// Which file failed.
struct StatError {
    file: &'static str,
    errno: Errno,
}

impl StatFiles {
    /// Opens the six files (five without `memory.peak`).
    pub(crate) fn open(
        cpu: &StatDir<'_>,
        memory: &StatDir<'_>,
        pids: &StatDir<'_>,
    ) -> Result<StatFiles, CgroupError> {
        let open = |d: &StatDir<'_>, file: &str| {
            let rel = format!("{}/{file}", d.id);
            files::open_read_at(d.fd, &rel).map_err(|errno| CgroupError::Open {
                path: d.base.join(&rel),
                errno,
            })
        };
        let cpu_fd = match cpu.version {
            Version::V1 => open(cpu, "cpuacct.usage")?,
            Version::V2 => open(cpu, "cpu.stat")?,
        };
        let (current, peak, events) = match memory.version {
            Version::V1 => (
                "memory.usage_in_bytes",
                "memory.max_usage_in_bytes",
                "memory.oom_control",
            ),
            Version::V2 => ("memory.current", "memory.peak", "memory.events"),
        };
        let memory_peak = match open(memory, peak) {
            Ok(fd) => Some(fd),
            Err(CgroupError::Open {
                errno: Errno::ENOENT,
                ..
            }) => None,
            Err(e) => return Err(e),
        };
        Ok(StatFiles {
            cpu_version: cpu.version,
            cpu: cpu_fd,
            memory_version: memory.version,
            memory_current: open(memory, current)?,
            memory_peak,
            memory_stat: open(memory, "memory.stat")?,
            memory_events: open(memory, events)?,
            pids_current: open(pids, "pids.current")?,
            cpu_dir: cpu.base.join(cpu.id),
            memory_dir: memory.base.join(memory.id),
            pids_dir: pids.base.join(pids.id),
            buf: vec![0; 16 << 10],
        })
    }

    /// Reads every file; the limits are the ones sandlot wrote.
    pub(crate) fn read(
        &mut self,
        memory_limit: u64,
        pids_max: u64,
    ) -> Result<CgroupStats, CgroupError> {
        self.read_all(memory_limit, pids_max).map_err(|e| {
            let dir = match e.file {
                "cpuacct.usage" | "cpu.stat" => &self.cpu_dir,
                "pids.current" => &self.pids_dir,
                _ => &self.memory_dir,
            };
            let path = dir.join(e.file);
            if e.errno == Errno::EINVAL {
                CgroupError::Parse {
                    path,
                    detail: "no number where one was expected".into(),
                }
            } else {
                CgroupError::Read {
                    path,
                    errno: e.errno,
                }
            }
        })
    }

    fn read_all(&mut self, memory_limit: u64, pids_max: u64) -> Result<CgroupStats, StatError> {
        let buf = &mut self.buf[..];
        let v1 = self.memory_version == Version::V1;
        let cpu_usage_ns = match self.cpu_version {
            Version::V1 => need(
                get(buf, &self.cpu, "cpuacct.usage", parse_u64)?,
                "cpuacct.usage",
            )?,
            Version::V2 => {
                let us = get(buf, &self.cpu, "cpu.stat", |t| keyed(t, "usage_usec"))?;
                need(us, "cpu.stat")?.saturating_mul(1000)
            }
        };
        let current = if v1 {
            "memory.usage_in_bytes"
        } else {
            "memory.current"
        };
        let memory_current = need(get(buf, &self.memory_current, current, parse_u64)?, current)?;
        let memory_peak = match &self.memory_peak {
            Some(fd) => get(buf, fd, "memory.peak", parse_u64)?,
            None => None,
        };
        let cache_key = if v1 { "cache" } else { "file" };
        let memory_cache = get(buf, &self.memory_stat, "memory.stat", |t| {
            keyed(t, cache_key)
        })?;
        let events = if v1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let oom_kills = get(buf, &self.memory_events, events, |t| keyed(t, "oom_kill"))?;
        let pids_current = get(buf, &self.pids_current, "pids.current", parse_u64)?;
        Ok(CgroupStats {
            cpu_usage_ns,
            memory_current,
            memory_peak,
            memory_limit,
            memory_cache: memory_cache.unwrap_or(0),
            pids_current: pids_current.unwrap_or(0),
            pids_max,
            oom_kills: oom_kills.unwrap_or(0),
        })
    }
}

/// Reads one open file and parses it, without allocating.
fn get<T>(
    buf: &mut [u8],
    fd: &OwnedFd,
    file: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, StatError> {
    files::pread_all(fd.as_fd(), buf)
        .map(parse)
        .map_err(|errno| StatError { file, errno })
}

/// A value that must be there.
fn need<T>(value: Option<T>, file: &'static str) -> Result<T, StatError> {
    value.ok_or(StatError {
        file,
        errno: Errno::EINVAL,
    })
}

/// A file holding one number.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a `key value` per line file (memory.stat,
/// cpu.stat, memory.events, memory.oom_control).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let v2_events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(v2_events, "oom_kill"), Some(1));
        assert_eq!(keyed(v2_events, "oom"), Some(1));
        let v1_oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(v1_oom, "oom_kill"), Some(3));
        let cpu_stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(keyed(cpu_stat, "usage_usec"), Some(1500));
        let v1_stat = "cache 4096\nrss 8192\ntotal_cache 4096\n";
        assert_eq!(keyed(v1_stat, "cache"), Some(4096));
        let v2_stat = "anon 8192\nfile 12288\nfile_mapped 0\n";
        assert_eq!(keyed(v2_stat, "file"), Some(12288));
        assert_eq!(keyed(v2_stat, "missing"), None);
    }

    #[test]
    fn single_numbers() {
        assert_eq!(parse_u64("123\n"), Some(123));
        assert_eq!(parse_u64("max\n"), None);
    }
}
