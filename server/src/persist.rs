//! What survives a restart of the server. The library keeps the sandboxes
//! themselves (a persistent runtime on `--state-dir`: they outlive the
//! server, SIGKILL included, and the next server takes them over); the
//! server keeps, beside them in `<state dir>/server/`, the facts the
//! library has no field for: one `<id>.json` per sandbox (the SDK's
//! template name, the access tokens, the reported sizes, the network as
//! the SDK described it, the lifecycle options), written whole (temp file,
//! rename) at create and at each change, removed when the sandbox ends.
//!
//! One server per state dir: `<state dir>/server/lock` is held (flock) for
//! the server's life, and a second server on the same dir refuses to
//! start. The directory is root's only (0700), the files 0600: they hold
//! the tokens that open the sandboxes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::control::network::NetworkSettings;
use crate::error::ServerError;
use crate::state::SandboxRecord;

/// One sandbox's server-side facts, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub template_id: String,
    pub template: String,
    pub envd_token: String,
    pub traffic_token: String,
    pub secure: bool,
    pub started_at_ms: u64,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub network: NetworkSettings,
    pub auto_pause: bool,
    pub auto_resume: bool,
}

impl Saved {
    pub fn of(record: &SandboxRecord) -> Saved {
        Saved {
            template_id: record.template_id.clone(),
            template: record.template.clone(),
            envd_token: record.envd_token.clone(),
            traffic_token: record.traffic_token.clone(),
            secure: record.secure,
            started_at_ms: record
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            cpu_count: record.cpu_count,
            memory_mb: record.memory_mb,
            disk_mb: record.disk_mb,
            network: record.network.lock().unwrap().clone(),
            auto_pause: record.auto_pause,
            auto_resume: record.auto_resume,
        }
    }

    pub fn started_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.started_at_ms)
    }
}

/// The server's directory in the state dir, or nothing for an ephemeral
/// server.
pub struct Store {
    dir: Option<PathBuf>,
    /// Held for the server's life: one server per state dir.
    _lock: Option<nix::fcntl::Flock<File>>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { context, source }
}

impl Store {
    pub fn ephemeral() -> Store {
        Store {
            dir: None,
            _lock: None,
        }
    }

    /// Opens (making it if needed) `<state_dir>/server` and takes its lock.
    pub fn open(state_dir: &Path) -> Result<Store, ServerError> {
        let dir = state_dir.join("server");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(format!("make {}", dir.display())))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(format!("open {}", lock_path.display())))?;
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map(|held| Store {
                dir: Some(dir.clone()),
                _lock: Some(held),
            })
            .map_err(|(_, errno)| {
                ServerError::config(format!(
                    "another sandlot-server serves the state dir {} ({errno}); \
                     give this one its own --state-dir",
                    state_dir.display()
                ))
            })
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{id}.json")))
    }

    /// Writes a sandbox's facts whole.
    pub fn save(&self, id: &str, saved: &Saved) -> std::io::Result<()> {
        let (Some(dir), Some(path)) = (&self.dir, self.path(id)) else {
            return Ok(());
        };
        // A name of its own per write: two saves of one sandbox at once
        // (two network updates) never write into one file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = dir.join(format!(".{id}.{}.{n}.tmp", std::process::id()));
        let written = (|| {
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&serde_json::to_vec(saved).map_err(std::io::Error::other)?)?;
            drop(file);
            fs::rename(&temp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    pub fn remove(&self, id: &str) {
        if let Some(path) = self.path(id) {
            let _ = fs::remove_file(path);
        }
    }

    /// Every saved sandbox: (id, facts). Unreadable files are removed
    /// (a record that cannot be read opens nothing).
    pub fn load_all(&self) -> Vec<(String, Saved)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // A write that never finished.
                if name.ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
            {
                Some(saved) => out.push((id.to_string(), saved)),
                None => {
                    tracing::warn!(sandbox = id, "unreadable server record removed");
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        out
    }
}
