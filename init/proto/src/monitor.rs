//! The contract between the runtime and the monitor of a persistent
//! sandbox (`sandlot-init` started under the name [`MONITOR_ARGV0`]): the
//! files of a sandbox's directory in the state dir, the lifecycle file
//! both sides read and write, the names of end reasons, and the tombstone
//! format. One definition, used by both, like the control protocol.
//!
//! A sandbox's directory, `<state dir>/sandboxes/<id>/`:
//!
//! | file | written by | what |
//! |---|---|---|
//! | [`RECORD`] | runtime | JSON: id, template, options, metadata, limits, times, init's pid and start time, cgroup dirs |
//! | [`LIFECYCLE`] | runtime, monitor | [`Lifecycle`]: state, end, idle timeout, pause clock |
//! | [`LOCK`] | — | `flock`ed exclusively by whoever changes the record or ends the sandbox |
//! | [`ACTIVITY`] | runtime | its mtime is the last activity; shared `flock`s mean commands in flight |
//! | [`CONTROL`] | runtime (bound), init (accepts) | the listening control socket, root-only (0600) |
//! | [`MONITOR_LOCK`] | monitor | `flock`ed for the monitor's whole life: a free lock means no monitor |
//!
//! Every file that is read by another process is replaced whole (written
//! to a temporary name, then renamed over), so a reader never sees half
//! of one.

use std::fmt::Write as _;

/// `argv[0]` that makes `sandlot-init` run as a sandbox's monitor.
pub const MONITOR_ARGV0: &str = "sandlot-monitor";

/// Directory of the live sandboxes' directories, under the state dir.
pub const SANDBOXES: &str = "sandboxes";
/// Directory of tombstones (`<id>.json`), under the state dir.
pub const TOMBSTONES: &str = "tombstones";

pub const RECORD: &str = "record.json";
pub const LIFECYCLE: &str = "lifecycle";
pub const LOCK: &str = "lock";
pub const ACTIVITY: &str = "activity";
pub const CONTROL: &str = "control";
pub const MONITOR_LOCK: &str = "monitor.lock";

/// Where a live persistent sandbox is in its life, as far as the files
/// say (commands in flight are not written down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Paused,
    /// `stop(grace)` is under way: no new commands.
    Stopping,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Stopping => "stopping",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        match s {
            "running" => Some(Phase::Running),
            "paused" => Some(Phase::Paused),
            "stopping" => Some(Phase::Stopping),
            _ => None,
        }
    }
}

/// What happens when the lifetime runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// The sandbox is destroyed.
    #[default]
    Kill,
    /// The sandbox is paused (its clock stopped); resuming it gives it its
    /// timeout again.
    Pause,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Kill => "kill",
            OnTimeout::Pause => "pause",
        }
    }

    fn parse(s: &str) -> Option<OnTimeout> {
        match s {
            "kill" => Some(OnTimeout::Kill),
            "pause" => Some(OnTimeout::Pause),
            _ => None,
        }
    }
}

/// The part of a persistent sandbox's state that changes during its life
/// and that its monitor acts on: the file [`LIFECYCLE`], one `key value`
/// per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    pub phase: Phase,
    /// When the lifetime ends, in milliseconds since the Unix epoch.
    pub end_at_ms: u64,
    /// The idle timeout in milliseconds; 0 is none.
    pub idle_ms: u64,
    /// Paused with the pause clock (or by the timeout): the lifetime that
    /// was left; neither the lifetime nor the idle timeout runs meanwhile.
    pub clock_left_ms: Option<u64>,
    pub on_timeout: OnTimeout,
    /// The sandbox's timeout, in milliseconds (a sandbox paused by its
    /// timeout gets it again on resume).
    pub timeout_ms: u64,
}

impl Lifecycle {
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(128);
        let _ = writeln!(out, "phase {}", self.phase.as_str());
        let _ = writeln!(out, "end_at_ms {}", self.end_at_ms);
        let _ = writeln!(out, "idle_ms {}", self.idle_ms);
        match self.clock_left_ms {
            Some(left) => {
                let _ = writeln!(out, "clock_left_ms {left}");
            }
            None => out.push_str("clock_left_ms -\n"),
        }
        let _ = writeln!(out, "on_timeout {}", self.on_timeout.as_str());
        let _ = writeln!(out, "timeout_ms {}", self.timeout_ms);
        out
    }

    /// Parses what [`Lifecycle::encode`] wrote; every key is required and
    /// unknown keys are refused, so a damaged file is never half-read.
    pub fn decode(text: &str) -> Result<Lifecycle, String> {
        let mut phase = None;
        let mut end_at_ms = None;
        let mut idle_ms = None;
        let mut clock_left_ms = None;
        let mut on_timeout = None;
        let mut timeout_ms = None;
        for line in text.lines() {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("lifecycle line {line:?} has no value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("lifecycle {key} is not a number: {value:?}"))
            };
            match key {
                "phase" => {
                    phase = Some(
                        Phase::parse(value).ok_or_else(|| format!("unknown phase {value:?}"))?,
                    )
                }
                "end_at_ms" => end_at_ms = Some(number()?),
                "idle_ms" => idle_ms = Some(number()?),
                "clock_left_ms" => {
                    clock_left_ms = Some(if value == "-" { None } else { Some(number()?) })
                }
                "on_timeout" => {
                    on_timeout = Some(
                        OnTimeout::parse(value)
                            .ok_or_else(|| format!("unknown on_timeout {value:?}"))?,
                    )
                }
                "timeout_ms" => timeout_ms = Some(number()?),
                other => return Err(format!("unknown lifecycle key {other:?}")),
            }
        }
        let missing = |key: &str| format!("lifecycle has no {key}");
        Ok(Lifecycle {
            phase: phase.ok_or_else(|| missing("phase"))?,
            end_at_ms: end_at_ms.ok_or_else(|| missing("end_at_ms"))?,
            idle_ms: idle_ms.ok_or_else(|| missing("idle_ms"))?,
            clock_left_ms: clock_left_ms.ok_or_else(|| missing("clock_left_ms"))?,
            on_timeout: on_timeout.ok_or_else(|| missing("on_timeout"))?,
            timeout_ms: timeout_ms.ok_or_else(|| missing("timeout_ms"))?,
        })
    }

    /// Whether the lifetime and the idle timeout run now.
    pub fn clock_runs(&self) -> bool {
        self.clock_left_ms.is_none()
    }
}

/// Why a sandbox ended, as written in its tombstone.
pub mod reason {
    pub const TIMEOUT: &str = "timeout";
    pub const IDLE: &str = "idle_timeout";
    pub const STOPPED: &str = "stopped";
    pub const KILLED: &str = "killed";
    pub const INIT_DIED: &str = "init_died";
    pub const OOM: &str = "oom";
    pub const HOST_SHUTDOWN: &str = "host_shutdown";
    pub const START_FAILED: &str = "start_failed";
    pub const INTERNAL: &str = "internal";
}

/// A tombstone: one JSON object with the reason, its detail (may be
/// empty), when the sandbox ended, and its record as it was (`record_json`
/// must be a JSON value; the record file always is).
pub fn tombstone(reason: &str, detail: &str, ended_at_ms: u64, record_json: &str) -> String {
    let mut out = String::with_capacity(record_json.len() + 96);
    out.push_str("{\"version\":1,\"reason\":");
    json_string(&mut out, reason);
    out.push_str(",\"detail\":");
    json_string(&mut out, detail);
    let _ = write!(out, ",\"ended_at_ms\":{ended_at_ms},\"record\":");
    out.push_str(record_json.trim());
    out.push_str("}\n");
    out
}

/// `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_round_trips_and_refuses_damage() {
        let lifecycle = Lifecycle {
            phase: Phase::Paused,
            end_at_ms: 1_700_000_000_123,
            idle_ms: 30_000,
            clock_left_ms: Some(4_500),
            on_timeout: OnTimeout::Pause,
            timeout_ms: 300_000,
        };
        let text = lifecycle.encode();
        assert_eq!(Lifecycle::decode(&text), Ok(lifecycle));
        let running = Lifecycle {
            phase: Phase::Running,
            clock_left_ms: None,
            ..lifecycle
        };
        assert_eq!(Lifecycle::decode(&running.encode()), Ok(running));
        // Missing any line: refused (all keys are required).
        let lines: Vec<&str> = text.lines().collect();
        for skip in 0..lines.len() {
            let damaged: String = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            assert!(Lifecycle::decode(&damaged).is_err(), "{damaged:?} decoded");
        }
        assert!(Lifecycle::decode(&text.replace("paused", "frozen")).is_err());
        assert!(Lifecycle::decode(&format!("{text}extra 1\n")).is_err());
    }

    #[test]
    fn a_tombstone_is_json_with_the_record_inside() {
        let t = tombstone("internal", "a \"quoted\"\nline", 5, "{\"id\":\"ab\"}\n");
        assert_eq!(
            t,
            "{\"version\":1,\"reason\":\"internal\",\"detail\":\"a \\\"quoted\\\"\\u000aline\",\
             \"ended_at_ms\":5,\"record\":{\"id\":\"ab\"}}\n"
        );
    }
}
