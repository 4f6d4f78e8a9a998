//! A persistent runtime's state dir: one directory per live sandbox and a
//! tombstone per ended one, shared by every process that opens the state
//! dir (the files and their formats: `sandlot_proto::monitor`).
//!
//! ```text
//! <state dir>/            0700, root
//!   sandboxes/<id>/       record.json, lifecycle, lock, activity, control (socket), monitor.lock
//!   tombstones/<id>.json  the record and why it ended
//! ```
//!
//! Concurrency: a lock per sandbox (`flock` on its `lock` file), taken to
//! replace its record or lifecycle and to end it — never a lock over the
//! whole dir, and never held while waiting for a sandbox to do something.
//! A sandbox's directory appears whole (made under a hidden name, then
//! renamed into `sandboxes/`). Whoever finds a record whose process is
//! gone (pid and start time: [`ProcId`]) ends what is left of it.

pub(crate) mod files;
pub(crate) mod record;

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sandlot_proto::monitor::{
    self as contract, Lifecycle, ACTIVITY, CONTROL, LIFECYCLE, LOCK, MONITOR_LOCK, RECORD,
    SANDBOXES, TOMBSTONES,
};
use serde::Deserialize;

use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{Reason, SandboxInfo, State};
use crate::engine::sync::lock;
use crate::kernel::procs::ProcId;
use crate::sys::fd;

pub(crate) use files::{RecordLock, Version};
pub(crate) use record::{from_ms, to_ms, Record, RECORD_VERSION};

/// How long, and how many, ended sandboxes are remembered (both modes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TombstonePolicy {
    pub keep_for: Duration,
    pub max: usize,
}

impl Default for TombstonePolicy {
    fn default() -> Self {
        TombstonePolicy {
            keep_for: Duration::from_secs(600),
            max: 1000,
        }
    }
}

/// An ended sandbox as `info()` shows it: state Destroyed, its reason.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    pub info: SandboxInfo,
    pub ended_at: SystemTime,
}

/// The tombstones of a runtime without a state dir, in memory.
#[derive(Default)]
pub(crate) struct Graveyard {
    entries: Mutex<Vec<Tombstone>>,
}

impl Graveyard {
    pub fn bury(&self, tombstone: Tombstone, policy: TombstonePolicy) {
        let mut entries = lock(&self.entries);
        entries.retain(|t| t.info.id != tombstone.info.id);
        entries.push(tombstone);
        prune(&mut entries, policy);
    }

    pub fn all(&self, policy: TombstonePolicy) -> Vec<Tombstone> {
        let mut entries = lock(&self.entries);
        prune(&mut entries, policy);
        entries.clone()
    }

    pub fn get(&self, id: &str, policy: TombstonePolicy) -> Option<Tombstone> {
        self.all(policy).into_iter().find(|t| t.info.id == id)
    }
}

/// Drops what is older than the policy allows, then the oldest beyond the
/// count (oldest first in `entries`).
fn prune(entries: &mut Vec<Tombstone>, policy: TombstonePolicy) {
    let now = SystemTime::now();
    entries.retain(|t| now.duration_since(t.ended_at).unwrap_or_default() <= policy.keep_for);
    if entries.len() > policy.max {
        let extra = entries.len() - policy.max;
        entries.drain(..extra);
    }
}

/// The state dir of a persistent runtime.
#[derive(Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
    sandboxes: PathBuf,
    tombstones: PathBuf,
    policy: TombstonePolicy,
    /// Tombstones written since the last prune, and when that was: a prune
    /// reads the whole directory, so it runs every [`PRUNE_EVERY`] writes
    /// or [`PRUNE_AFTER`], not at each.
    pruned: Mutex<(u32, std::time::Instant)>,
}

/// Tombstones written between two prunes (the count may exceed the
/// policy's by this much meanwhile).
const PRUNE_EVERY: u32 = 64;
/// The longest between two prunes while tombstones are written.
const PRUNE_AFTER: Duration = Duration::from_secs(30);

/// A tombstone file as `contract::tombstone` writes it.
#[derive(Deserialize)]
struct TombstoneFile {
    reason: String,
    #[serde(default)]
    detail: String,
    ended_at_ms: u64,
    record: Record,
}

/// What [`StateDir::scan`] found in one sandbox's directory.
pub(crate) enum Found {
    /// Its process runs: the record, and whether a monitor watches it.
    Live(Box<Record>),
    /// Its process is gone; what was left has been ended and removed.
    Ended,
    /// Someone else holds its lock (ending it, or changing it), or it is
    /// unreadable: left alone this time.
    Busy,
}

impl StateDir {
    /// Opens (making them) the state dir and its two subdirs, root-only.
    pub fn open(root: &Path, policy: TombstonePolicy) -> Result<StateDir> {
        let dir = StateDir {
            sandboxes: root.join(SANDBOXES),
            tombstones: root.join(TOMBSTONES),
            root: root.to_owned(),
            policy,
            pruned: Mutex::new((0, std::time::Instant::now())),
        };
        for path in [&dir.root, &dir.sandboxes, &dir.tombstones] {
            match fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("make {}", path.display()), e)),
            }
            // Whatever made it before: root only (the control sockets
            // below take commands as root of any sandbox).
            let meta =
                fs::metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            if !meta.is_dir() {
                return Err(Error::invalid(
                    "state_dir",
                    format!("{} is not a directory", path.display()),
                ));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io(format!("chmod 0700 {}", path.display()), e))?;
            }
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes.join(id)
    }

    /// The ids of every sandbox directory (live or not yet cleaned).
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.sandboxes) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect()
    }

    /// Makes a sandbox's directory with its record and lifecycle, whole:
    /// built under a hidden name, then renamed into place.
    pub fn create(&self, record: &Record, lifecycle: &Lifecycle) -> Result<SandboxFiles> {
        let staging = self.sandboxes.join(format!(
            ".new-{}-{}-{}",
            record.creator.pid, record.creator.start_time, record.id
        ));
        let made = (|| {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&staging)
                .map_err(|e| Error::io(format!("make {}", staging.display()), e))?;
            files::replace(&staging, RECORD, &record_json(record)?)?;
            files::replace(&staging, LIFECYCLE, lifecycle.encode().as_bytes())?;
            for name in [LOCK, ACTIVITY, MONITOR_LOCK] {
                files::create_empty(&staging.join(name))?;
            }
            fs::rename(&staging, self.sandbox_dir(&record.id))
                .map_err(|e| Error::io(format!("move {} into place", staging.display()), e))
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        let files = SandboxFiles::open(self, &record.id)?;
        let dir = &files.dir;
        *lock(&files.seen) = (
            Version::of(&dir.join(RECORD)),
            Version::of(&dir.join(LIFECYCLE)),
        );
        *lock(&files.record) = Some(record.clone());
        Ok(files)
    }

    /// Looks at one sandbox's directory: live, or ended now (its tombstone
    /// written, its cgroups and directory removed), or busy.
    pub fn scan(&self, id: &str) -> Found {
        let dir = self.sandbox_dir(id);
        let Ok(record) = read_record(&dir) else {
            return Found::Busy;
        };
        match (record.owner().is_alive(), record.version == RECORD_VERSION) {
            (true, true) => return Found::Live(Box::new(record)),
            // Alive, but written by another version of sandlot: not ours
            // to take over, and certainly not to end.
            (true, false) => return Found::Busy,
            (false, _) => {}
        }
        let Ok(Some(_lock)) = RecordLock::try_take(&dir.join(LOCK)) else {
            return Found::Busy;
        };
        // Under the lock: it may have been ended by the lock's last holder.
        let Ok(record) = read_record(&dir) else {
            return Found::Ended;
        };
        if record.owner().is_alive() {
            return if record.version == RECORD_VERSION {
                Found::Live(Box::new(record))
            } else {
                Found::Busy
            };
        }
        let reason = if record.init.is_none() {
            Reason::SetupFailed("its creator ended before the sandbox was ready".into())
        } else {
            Reason::InitDied
        };
        let _ = self.bury(&dir, &reason);
        remove_cgroups(&record.cgroups);
        files::remove_sandbox_dir(&dir);
        Found::Ended
    }

    /// Removes what creators that died mid-create left under hidden names.
    pub fn sweep_staging(&self) {
        let Ok(entries) = fs::read_dir(&self.sandboxes) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(".new-") else {
                continue;
            };
            let mut parts = rest.splitn(3, '-');
            let creator = match (parts.next(), parts.next()) {
                (Some(pid), Some(start)) => pid
                    .parse()
                    .ok()
                    .zip(start.parse().ok())
                    .map(|(pid, start_time)| ProcId { pid, start_time }),
                _ => None,
            };
            if creator.is_none_or(|c| !c.is_alive()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Writes the tombstone of the sandbox in `dir` (its record as it is,
    /// and `reason`). The caller holds its lock.
    pub fn bury(&self, dir: &Path, reason: &Reason) -> Result<()> {
        let record = fs::read_to_string(dir.join(RECORD))
            .map_err(|e| Error::io(format!("read {}", dir.join(RECORD).display()), e))?;
        let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let text = contract::tombstone(
            reason.as_str(),
            reason.detail(),
            to_ms(SystemTime::now()),
            &record,
        );
        files::replace(&self.tombstones, &format!("{id}.json"), text.as_bytes())?;
        let due = {
            let mut pruned = lock(&self.pruned);
            pruned.0 += 1;
            pruned.0 >= PRUNE_EVERY || pruned.1.elapsed() >= PRUNE_AFTER
        };
        if due {
            self.prune_tombstones();
        }
        Ok(())
    }

    /// The tombstone of `id`, if it ended within the policy's time.
    pub fn tombstone(&self, id: &str) -> Option<Tombstone> {
        if id.contains('/') || id.starts_with('.') {
            return None;
        }
        let text = fs::read_to_string(self.tombstones.join(format!("{id}.json"))).ok()?;
        let tombstone = parse_tombstone(&text)?;
        let age = SystemTime::now()
            .duration_since(tombstone.ended_at)
            .unwrap_or_default();
        (age <= self.policy.keep_for).then_some(tombstone)
    }

    /// Every tombstone within the policy, oldest first.
    pub fn tombstones(&self) -> Vec<Tombstone> {
        self.prune_tombstones();
        let Ok(entries) = fs::read_dir(&self.tombstones) else {
            return Vec::new();
        };
        let mut all: Vec<Tombstone> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|text| parse_tombstone(&text))
            .collect();
        all.sort_by_key(|t| t.ended_at);
        all
    }

    /// Removes tombstones older than the policy's time, then the oldest
    /// beyond its count (by file time: no need to parse them).
    pub fn prune_tombstones(&self) {
        *lock(&self.pruned) = (0, std::time::Instant::now());
        let Ok(entries) = fs::read_dir(&self.tombstones) else {
            return;
        };
        let now = SystemTime::now();
        let mut kept: Vec<(SystemTime, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            let age = now.duration_since(modified).unwrap_or_default();
            // A hidden one is a write that never finished (its writer died).
            if age > self.policy.keep_for || (hidden && age > Duration::from_secs(60)) {
                let _ = fs::remove_file(entry.path());
            } else if !hidden {
                kept.push((modified, entry.path()));
            }
        }
        if kept.len() > self.policy.max {
            kept.sort();
            for (_, path) in &kept[..kept.len() - self.policy.max] {
                let _ = fs::remove_file(path);
            }
        }
    }
}

fn record_json(record: &Record) -> Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::io("encode a sandbox record", std::io::Error::other(e)))?;
    json.push(b'\n');
    Ok(json)
}

pub(crate) fn read_record(dir: &Path) -> Result<Record> {
    let path = dir.join(RECORD);
    let text = fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    serde_json::from_slice(&text).map_err(|e| {
        Error::io(
            format!("parse {}", path.display()),
            std::io::Error::other(e),
        )
    })
}

fn parse_tombstone(text: &str) -> Option<Tombstone> {
    let file: TombstoneFile = serde_json::from_str(text).ok()?;
    let ended_at = from_ms(file.ended_at_ms);
    let record = file.record;
    Some(Tombstone {
        info: SandboxInfo {
            id: record.id.clone(),
            template: record.template.clone(),
            state: State::Destroyed,
            metadata: record.metadata.clone(),
            hostname: record.hostname.clone(),
            created_at: record.created_at(),
            end_at: ended_at,
            init_pid: None,
            commands_in_flight: 0,
            end_reason: Some(Reason::from_parts(&file.reason, &file.detail)),
            limits: record.limits.clone(),
            idle_timeout: record.idle_timeout_ms.map(Duration::from_millis),
            ended_at: Some(ended_at),
        },
        ended_at,
    })
}

/// Removes the cgroup dirs of a sandbox whose init is gone (killing what
/// might be left first: nothing, unless the record lied).
pub(crate) fn remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = fs::write(dir.join("cgroup.kill"), "1");
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
    }
    for dir in dirs {
        for _ in 0..200 {
            match fs::remove_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
}

/// One live sandbox's directory, as the process that holds the sandbox
/// uses it.
#[derive(Debug)]
pub(crate) struct SandboxFiles {
    pub dir: PathBuf,
    /// Its mtime is the last activity; a shared lock on it while commands
    /// of this process are in flight.
    activity: File,
    /// The versions of the record and lifecycle files last read here.
    seen: Mutex<(Option<Version>, Option<Version>)>,
    /// The record as last read or written here.
    record: Mutex<Option<Record>>,
}

impl SandboxFiles {
    pub fn open(state: &StateDir, id: &str) -> Result<SandboxFiles> {
        let dir = state.sandbox_dir(id);
        let path = dir.join(ACTIVITY);
        let activity =
            files::open_rw(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        Ok(SandboxFiles {
            dir,
            activity,
            seen: Mutex::new((None, None)),
            record: Mutex::new(None),
        })
    }

    pub fn lock(&self) -> Result<RecordLock> {
        RecordLock::take(&self.dir.join(LOCK))
    }

    /// Whether the sandbox's record is still there (checked under its
    /// lock: gone means someone ended it).
    pub fn exists(&self) -> bool {
        self.dir.join(RECORD).exists()
    }

    pub fn read_record(&self) -> Result<Record> {
        let version = Version::of(&self.dir.join(RECORD));
        let record = read_record(&self.dir)?;
        lock(&self.seen).0 = version;
        *lock(&self.record) = Some(record.clone());
        Ok(record)
    }

    /// The record: as last read or written here if no other process has
    /// replaced it since (one `stat`), else read again.
    pub fn current_record(&self) -> Result<Record> {
        let cached = lock(&self.record).clone();
        match cached {
            Some(record) if !self.changed().0 => Ok(record),
            _ => self.read_record(),
        }
    }

    /// Replaces the record; the caller holds the lock.
    pub fn write_record(&self, record: &Record) -> Result<()> {
        files::replace(&self.dir, RECORD, &record_json(record)?)?;
        lock(&self.seen).0 = Version::of(&self.dir.join(RECORD));
        *lock(&self.record) = Some(record.clone());
        Ok(())
    }

    pub fn read_lifecycle(&self) -> Result<Lifecycle> {
        let path = self.dir.join(LIFECYCLE);
        let version = Version::of(&path);
        let text = fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let lifecycle = Lifecycle::decode(&text).map_err(|e| Error::Protocol {
            id: self.id().to_string(),
            reason: format!("{}: {e}", path.display()),
        })?;
        lock(&self.seen).1 = version;
        Ok(lifecycle)
    }

    /// Replaces the lifecycle file (the monitor follows it); the caller
    /// holds the lock.
    pub fn write_lifecycle(&self, lifecycle: &Lifecycle) -> Result<()> {
        files::replace(&self.dir, LIFECYCLE, lifecycle.encode().as_bytes())?;
        lock(&self.seen).1 = Version::of(&self.dir.join(LIFECYCLE));
        Ok(())
    }

    /// Which of record and lifecycle another process replaced since they
    /// were last read or written here (two `stat`s).
    pub fn changed(&self) -> (bool, bool) {
        let seen = *lock(&self.seen);
        (
            Version::of(&self.dir.join(RECORD)) != seen.0,
            Version::of(&self.dir.join(LIFECYCLE)) != seen.1,
        )
    }

    /// Activity: the activity file's mtime becomes now.
    pub fn touch(&self) {
        let _ = nix::sys::stat::futimens(
            self.activity.as_fd(),
            &nix::sys::time::TimeSpec::UTIME_NOW,
            &nix::sys::time::TimeSpec::UTIME_NOW,
        );
    }

    /// Commands of this process in flight (`true`) or none (`false`): a
    /// shared lock on the activity file, which the idle timeout respects.
    pub fn set_busy(&self, busy: bool) {
        let how = if busy { libc::LOCK_SH } else { libc::LOCK_UN };
        let _ = fd::flock(self.activity.as_fd(), how);
    }

    /// Whether a monitor watches the sandbox (it holds its lock for life).
    pub fn monitored(&self) -> bool {
        let Ok(file) = files::open_rw(&self.dir.join(MONITOR_LOCK)) else {
            return false;
        };
        !fd::flock(file.as_fd(), libc::LOCK_EX | libc::LOCK_NB).unwrap_or(true)
    }

    pub fn control_path(&self) -> PathBuf {
        self.dir.join(CONTROL)
    }

    pub fn id(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// Removes the directory (the sandbox ended; the caller holds the
    /// lock and wrote the tombstone).
    pub fn remove(&self) {
        files::remove_sandbox_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tombstone(id: &str, age: Duration) -> Tombstone {
        let at = SystemTime::now() - age;
        Tombstone {
            info: SandboxInfo {
                id: id.into(),
                template: "base".into(),
                state: State::Destroyed,
                metadata: Default::default(),
                hostname: id.into(),
                created_at: at,
                end_at: at,
                init_pid: None,
                commands_in_flight: 0,
                end_reason: Some(Reason::Killed),
                limits: Default::default(),
                idle_timeout: None,
                ended_at: Some(at),
            },
            ended_at: at,
        }
    }

    #[test]
    fn the_graveyard_forgets_by_age_and_by_count() {
        let policy = TombstonePolicy {
            keep_for: Duration::from_secs(60),
            max: 2,
        };
        let graveyard = Graveyard::default();
        graveyard.bury(tombstone("old", Duration::from_secs(120)), policy);
        assert!(graveyard.get("old", policy).is_none());
        for id in ["a", "b", "c"] {
            graveyard.bury(tombstone(id, Duration::ZERO), policy);
        }
        let ids: Vec<String> = graveyard
            .all(policy)
            .into_iter()
            .map(|t| t.info.id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn a_tombstone_file_reads_back_with_its_reason() {
        let record = Record {
            version: RECORD_VERSION,
            id: "ab12".into(),
            template: "base".into(),
            template_kind: sandlot_rootfs::TemplateKind::HostBind,
            template_config: sandlot_rootfs::TemplateConfig {
                env: vec![],
                cmd: vec![],
                entrypoint: vec![],
                working_dir: None,
                user: "root".into(),
                shell: "/bin/sh".into(),
            },
            template_settings: Default::default(),
            hostname: "ab12".into(),
            env: vec![],
            metadata: [("k".to_string(), "v".to_string())].into(),
            limits: Default::default(),
            exec_limits: Default::default(),
            pause_clock: false,
            idle_timeout_ms: Some(30_000),
            created_at_ms: 1_000,
            creator: ProcId {
                pid: 1,
                start_time: 2,
            },
            init: None,
            cgroups: vec![],
        };
        let json = String::from_utf8(record_json(&record).unwrap()).unwrap();
        let text = contract::tombstone("idle_timeout", "", 5_000, &json);
        let t = parse_tombstone(&text).expect("parses");
        assert_eq!(t.info.id, "ab12");
        assert_eq!(t.info.end_reason, Some(Reason::IdleTimeout));
        assert_eq!(t.info.metadata["k"], "v");
        assert_eq!(t.info.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(t.ended_at, from_ms(5_000));
    }
}
