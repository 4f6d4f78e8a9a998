//! The runtime's memory quota: a create is refused when the memory limits
//! of the live sandboxes plus the new one would exceed the host's
//! available memory times an overcommit ratio
//! ([`RuntimeBuilder::memory_overcommit`](crate::RuntimeBuilder::memory_overcommit)).
//!
//! Limits, not usage, are summed: they are what the sandboxes may take
//! without asking. `MemAvailable` (the kernel's estimate of memory that
//! can be given out without swapping) is read at every create, so memory
//! used by anything else on the host counts too. A ratio of 1.0 promises
//! every sandbox its whole limit; above 1.0 bets that they will not all
//! use it at once (the memory limit still holds each one to its own).

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::error::{Error, Result};
use crate::engine::sandbox::SandboxShared;

/// Checks the quota for a new sandbox with a `new` byte memory limit.
pub(crate) fn check_memory(
    live: &HashMap<String, Arc<SandboxShared>>,
    new: u64,
    ratio: f64,
) -> Result<()> {
    let available = mem_available()?;
    let committed = live
        .values()
        .fold(0u64, |sum, s| sum.saturating_add(s.limits.memory));
    check(new, committed, available, ratio)
}

fn check(new: u64, committed: u64, available: u64, ratio: f64) -> Result<()> {
    let allowed = (available as f64 * ratio) as u64;
    if committed.saturating_add(new) <= allowed {
        return Ok(());
    }
    Err(Error::ResourceUnavailable(format!(
        "memory: the new sandbox's limit of {} plus {} committed to live sandboxes \
         exceeds {} ({} MemAvailable x overcommit ratio {ratio})",
        mib(new),
        mib(committed),
        mib(allowed),
        mib(available),
    )))
}

pub(crate) fn validate_ratio(ratio: f64) -> Result<()> {
    if ratio.is_finite() && ratio > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            "memory_overcommit",
            format!("{ratio} is not a ratio above 0"),
        ))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Result<u64> {
    let text =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| Error::io("read /proc/meminfo", e))?;
    parse_mem_available(&text).ok_or_else(|| {
        Error::ResourceUnavailable("memory: /proc/meminfo has no MemAvailable line".into())
    })
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       24684084 kB\nMemFree:        18244104 kB\n\
                    MemAvailable:   23609144 kB\nBuffers: 1 kB\n";
        assert_eq!(parse_mem_available(text), Some(23609144 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn counts_committed_limits() {
        const GIB: u64 = 1 << 30;
        assert!(check(GIB, 0, 2 * GIB, 1.0).is_ok());
        assert!(check(GIB, GIB, 2 * GIB, 1.0).is_ok());
        let e = check(GIB, 2 * GIB, 2 * GIB, 1.0).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("resource unavailable: memory: "), "{text}");
        assert!(
            text.contains("1024.0 MiB") && text.contains("2048.0 MiB"),
            "{text}"
        );
        assert!(check(GIB, 2 * GIB, 2 * GIB, 1.5).is_ok());
    }

    #[test]
    fn ratio_must_be_positive() {
        assert!(validate_ratio(1.5).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(validate_ratio(bad).is_err(), "{bad}");
        }
    }
}
