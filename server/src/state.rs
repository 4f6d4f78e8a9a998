//! What the server keeps beside the library: one record per sandbox it
//! created (the SDK-facing facts the library has no field for: the
//! template name as asked, the envd access token, the envd processes and
//! watchers), the idempotency cache, the metrics sampler.
//!
//! A record lives as long as its sandbox: a thread follows the runtime's
//! lifecycle events and drops the record when the sandbox is destroyed
//! (timeout, kill, init died), which drops its watchers and processes.
//! With a state dir its lasting facts are saved beside the sandbox
//! (`persist.rs`), and a server that starts takes over every sandbox saved
//! there that still lives: envd processes, watchers and code contexts of
//! the server before are not carried over (their handles were that
//! process's), the sandboxes, their files and their tokens are.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sandlot::{ResourceMonitor, Runtime, Sandbox, State};
use subtle::ConstantTimeEq;

use crate::code::DefaultContexts;
use crate::config::ServerConfig;
use crate::control::network::NetworkSettings;
use crate::envd::filesystem::Watchers;
use crate::envd::process::ProcessTable;
use crate::error::ApiError;
use crate::persist::{Saved, Store};

/// The envd version sandlot reports. The SDKs enable a feature when the
/// sandbox's envd is at least the version that introduced it; 0.5.7 turns
/// on everything sandlot implements (recursive watch 0.1.4, metrics 0.1.5
/// and disk metrics 0.2.4, stdin control 0.3.0, the default user 0.4.0,
/// close-stdin 0.5.2, octet-stream uploads 0.5.7) and nothing it does not
/// (file metadata 0.6.2, entry info in watch events 0.6.3, network-mount
/// watches 0.6.4). See PROTOCOL.md.
pub const ENVD_VERSION: &str = "0.5.7";

/// Shown as `clientID` (a field the SDK requires and never uses).
pub const CLIENT_ID: &str = "sandlot";

/// How many distinct Idempotency-Keys are remembered, and for how long.
const IDEMPOTENCY_CAPACITY: usize = 10_000;
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);

/// Metrics are sampled every 5 s (as the reference does) and kept for the
/// last 10 minutes per sandbox: about 200 bytes a sample, so 24 KiB per
/// sandbox rather than 144 KiB for an hour.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(5);
const METRICS_HISTORY: usize = 120;

pub struct SandboxRecord {
    pub sandbox: Sandbox,
    /// The template as the SDK named it (`templateID`), and the sandlot
    /// template it resolved to.
    pub template_id: String,
    pub template: String,
    /// Sent as `X-Access-Token`; required on envd when `secure`.
    pub envd_token: String,
    /// Sent as `E2B-Traffic-Access-Token`: opens the code interpreter of a
    /// secure sandbox, and its other ports when they are not public.
    pub traffic_token: String,
    pub secure: bool,
    pub started_at: SystemTime,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub processes: ProcessTable,
    pub watchers: Watchers,
    /// The default code context of each language (`/execute` without a
    /// context).
    pub code_defaults: DefaultContexts,
    /// The network as the SDK described it (reported by info; the
    /// library holds the rules themselves).
    pub network: Mutex<NetworkSettings>,
    /// Host addresses forwarding to the sandbox's ports, opened on first
    /// use by a request to `PORT-ID.D` (or `E2b-Sandbox-Port`).
    pub ports: Mutex<HashMap<u16, SocketAddr>>,
    /// `autoPause`: the end of the lifetime pauses (the library's
    /// `TimeoutAction::Pause`); reported as `lifecycle.onTimeout`.
    pub auto_pause: bool,
    /// `autoResume`: a request to a paused sandbox resumes it.
    pub auto_resume: bool,
}

impl SandboxRecord {
    pub fn id(&self) -> &str {
        self.sandbox.id()
    }

    /// The record of a sandbox an earlier server made, from what it saved.
    fn adopted(sandbox: Sandbox, saved: Saved) -> SandboxRecord {
        SandboxRecord {
            sandbox,
            started_at: saved.started_at(),
            template_id: saved.template_id,
            template: saved.template,
            envd_token: saved.envd_token,
            traffic_token: saved.traffic_token,
            secure: saved.secure,
            cpu_count: saved.cpu_count,
            memory_mb: saved.memory_mb,
            disk_mb: saved.disk_mb,
            processes: ProcessTable::default(),
            watchers: Watchers::default(),
            code_defaults: DefaultContexts::default(),
            network: Mutex::new(saved.network),
            ports: Mutex::default(),
            auto_pause: saved.auto_pause,
            auto_resume: saved.auto_resume,
        }
    }

    /// Whether the sandbox's ports other than envd and the code
    /// interpreter answer without the traffic token.
    pub fn public_traffic(&self) -> bool {
        self.network.lock().unwrap().allow_public_traffic
    }
}

/// Whether a presented token is `expected`, compared in constant time.
pub fn tokens_match(presented: &[u8], expected: &str) -> bool {
    bool::from(presented.ct_eq(expected.as_bytes()))
}

/// The SDK's two states: a sandbox is paused or running (idle and busy
/// alike).
pub fn sdk_state(state: State) -> &'static str {
    match state {
        State::Paused => "paused",
        _ => "running",
    }
}

type IdempotencySlot = Arc<tokio::sync::OnceCell<Result<serde_json::Value, ApiError>>>;

pub struct AppState {
    pub config: ServerConfig,
    pub runtime: Runtime,
    records: Mutex<HashMap<String, Arc<SandboxRecord>>>,
    store: Store,
    idempotency: Mutex<HashMap<String, (Instant, IdempotencySlot)>>,
    pub monitor: ResourceMonitor,
}

impl AppState {
    pub fn new(
        config: ServerConfig,
        runtime: Runtime,
        store: Store,
    ) -> Result<Arc<AppState>, sandlot::Error> {
        // Thresholds far above 100%: the monitor is used for its history
        // only, and raises no alerts that nobody would read.
        let never = sandlot::Thresholds {
            cpu_percent: 1e9,
            memory_percent: 1e9,
            disk_percent: 1e9,
        };
        let monitor = ResourceMonitor::start(&runtime, METRICS_INTERVAL, METRICS_HISTORY, never)?;
        let state = Arc::new(AppState {
            config,
            runtime,
            records: Mutex::new(HashMap::new()),
            store,
            idempotency: Mutex::new(HashMap::new()),
            monitor,
        });
        follow_lifecycle(&state);
        state.adopt_saved();
        Ok(state)
    }

    /// Takes over every sandbox an earlier server saved that still lives;
    /// forgets those that ended meanwhile.
    fn adopt_saved(&self) {
        for (id, saved) in self.store.load_all() {
            match self.runtime.connect(&id) {
                Ok(sandbox) => {
                    // Its network (as last set) is served by this
                    // process from now on: the library re-serves it on
                    // adoption.
                    tracing::info!(sandbox = %id, "taken over from an earlier server");
                    self.records
                        .lock()
                        .unwrap()
                        .insert(id, Arc::new(SandboxRecord::adopted(sandbox, saved)));
                }
                Err(e) => {
                    tracing::info!(sandbox = %id, "saved sandbox is gone: {e}");
                    self.store.remove(&id);
                }
            }
        }
    }

    /// Saves a record's lasting facts (nothing without a state dir).
    pub fn save(&self, record: &SandboxRecord) -> std::io::Result<()> {
        self.store.save(record.id(), &Saved::of(record))
    }

    /// Checks `X-API-Key` in constant time.
    pub fn api_key_ok(&self, presented: Option<&[u8]>) -> bool {
        match (&self.config.api_key, presented) {
            (None, _) => self.config.insecure_no_api_key,
            (Some(key), Some(presented)) => tokens_match(presented, key),
            (Some(_), None) => false,
        }
    }

    pub fn insert(&self, record: Arc<SandboxRecord>) {
        self.records
            .lock()
            .unwrap()
            .insert(record.id().to_string(), record);
    }

    /// The record of a live sandbox.
    pub fn record(&self, id: &str) -> Option<Arc<SandboxRecord>> {
        let record = self.records.lock().unwrap().get(id).cloned()?;
        if record.sandbox.state().is_terminal() {
            self.remove(id);
            return None;
        }
        Some(record)
    }

    /// Forgets a sandbox that ended, and what was saved of it.
    pub fn remove(&self, id: &str) -> Option<Arc<SandboxRecord>> {
        self.store.remove(id);
        self.records.lock().unwrap().remove(id)
    }

    pub fn records(&self) -> Vec<Arc<SandboxRecord>> {
        self.records
            .lock()
            .unwrap()
            .values()
            .filter(|r| !r.sandbox.state().is_terminal())
            .cloned()
            .collect()
    }

    /// The slot for an Idempotency-Key: the first request with the key
    /// fills it, later ones (concurrent or not) get the same answer.
    pub fn idempotency_slot(&self, key: &str) -> IdempotencySlot {
        let mut cache = self.idempotency.lock().unwrap();
        let now = Instant::now();
        if cache.len() >= IDEMPOTENCY_CAPACITY {
            cache.retain(|_, (at, _)| now.duration_since(*at) < IDEMPOTENCY_TTL);
            if cache.len() >= IDEMPOTENCY_CAPACITY {
                // Still full of fresh keys: forget the oldest.
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&oldest);
                }
            }
        }
        match cache.get(key) {
            Some((at, slot)) if now.duration_since(*at) < IDEMPOTENCY_TTL => slot.clone(),
            _ => {
                let slot = IdempotencySlot::default();
                cache.insert(key.to_string(), (now, slot.clone()));
                slot
            }
        }
    }
}

/// Drops a sandbox's record when the library reports it destroyed.
fn follow_lifecycle(state: &Arc<AppState>) {
    let events = state.runtime.events();
    let weak = Arc::downgrade(state);
    let _ = std::thread::Builder::new()
        .name("sandlot-srv-life".into())
        .spawn(move || {
            for event in events.iter() {
                let Some(state) = weak.upgrade() else { return };
                if event.to.is_terminal() {
                    state.remove(&event.sandbox_id);
                }
            }
        });
}

/// A fresh secret: 32 random bytes from the kernel, hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
