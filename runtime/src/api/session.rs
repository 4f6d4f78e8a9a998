//! Session pools: one sandbox per session key (a user, a conversation, a
//! notebook) — the reference's advice for keeping a sandbox per session,
//! as a library type.
//!
//! [`SessionPool::get`] returns the key's sandbox, creating it on first
//! use; each get checks it again — alive, and with more than
//! `min_remaining` of its lifetime left — and replaces a dead or expiring
//! one with a fresh sandbox. At most `max_sessions` are kept: a get for a
//! new key beyond that destroys the least recently used session's
//! sandbox. [`SessionPool::cleanup`] drops dead and expiring sessions.
//!
//! Sessions carry metadata `sandlot.session_pool` = the pool's name and
//! `sandlot.session` = the key, so that on a persistent runtime a pool
//! made by a later process (after a restart) finds the sandboxes of its
//! sessions again instead of creating new ones. Dropping a pool leaves its
//! sandboxes to their timeouts; [`SessionPool::shutdown`] destroys them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::api::runtime::{ListFilter, Runtime};
use crate::api::sandbox::Sandbox;
use crate::engine::error::{Error, Result};
use crate::engine::options::SandboxOptions;
use crate::engine::sync::lock;

/// Metadata key naming the session pool of a session's sandbox.
pub const SESSION_POOL_METADATA_KEY: &str = "sandlot.session_pool";
/// Metadata key naming the session of a session's sandbox.
pub const SESSION_METADATA_KEY: &str = "sandlot.session";

/// How a [`SessionPool`] makes and keeps its sandboxes.
#[derive(Debug, Clone)]
pub struct SessionPoolConfig {
    /// Its name (metadata; a later process finds the sessions by it).
    pub name: String,
    /// What each session's sandbox is created with.
    pub options: SandboxOptions,
    /// Most sessions kept; beyond, the least recently used one goes.
    pub max_sessions: usize,
    /// A session's sandbox with less lifetime than this left is replaced
    /// on `get` rather than handed out.
    pub min_remaining: Duration,
}

impl Default for SessionPoolConfig {
    fn default() -> Self {
        SessionPoolConfig {
            name: "sessions".into(),
            options: SandboxOptions::default(),
            max_sessions: 100,
            min_remaining: Duration::from_secs(10),
        }
    }
}

impl SessionPoolConfig {
    pub fn new(options: SandboxOptions) -> Self {
        SessionPoolConfig {
            options,
            ..SessionPoolConfig::default()
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    pub fn min_remaining(mut self, min: Duration) -> Self {
        self.min_remaining = min;
        self
    }
}

struct Session {
    sandbox: Option<Sandbox>,
    last_used: Instant,
    /// Held while the session's sandbox is being made (gets of other keys
    /// go on meanwhile; a second get of this key waits for it).
    making: Arc<Mutex<()>>,
}

/// One sandbox per session key (see the module docs).
pub struct SessionPool {
    runtime: Runtime,
    config: SessionPoolConfig,
    sessions: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("name", &self.config.name)
            .field("sessions", &self.len())
            .finish()
    }
}

impl SessionPool {
    pub fn new(runtime: &Runtime, config: SessionPoolConfig) -> Result<SessionPool> {
        if config.max_sessions == 0 {
            return Err(Error::invalid("max_sessions", "must be at least 1"));
        }
        crate::engine::options::validate_metadata(
            &[(SESSION_POOL_METADATA_KEY.to_string(), config.name.clone())].into(),
        )?;
        config.options.validate()?;
        Ok(SessionPool {
            runtime: runtime.clone(),
            config,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The sessions kept now.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a session's sandbox may be handed out: alive, and not about
    /// to reach its end.
    fn usable(&self, sandbox: &Sandbox) -> bool {
        let left = sandbox
            .end_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        sandbox.is_alive() && left > self.config.min_remaining
    }

    /// The sandbox of session `key`: the one it has if that is still
    /// usable, else a new one (the old one destroyed). A new key beyond
    /// `max_sessions` evicts the least recently used session.
    pub fn get(&self, key: &str) -> Result<Sandbox> {
        crate::engine::options::validate_metadata(
            &[(SESSION_METADATA_KEY.to_string(), key.to_string())].into(),
        )?;
        let making = {
            let mut sessions = lock(&self.sessions);
            if let Some(session) = sessions.get_mut(key) {
                session.last_used = Instant::now();
                match &session.sandbox {
                    Some(sandbox) if self.usable(sandbox) => return Ok(sandbox.clone()),
                    _ => session.making.clone(),
                }
            } else {
                let evicted = if sessions.len() >= self.config.max_sessions {
                    least_recently_used(&sessions).and_then(|k| sessions.remove(&k))
                } else {
                    None
                };
                let making = Arc::new(Mutex::new(()));
                sessions.insert(
                    key.to_string(),
                    Session {
                        sandbox: None,
                        last_used: Instant::now(),
                        making: making.clone(),
                    },
                );
                drop(sessions);
                if let Some(sandbox) = evicted.and_then(|s| s.sandbox) {
                    let _ = sandbox.kill();
                }
                making
            }
        };
        // One maker per key; the others wait and take what it made.
        let _making = lock(&making);
        if let Some(sandbox) = self.current(key) {
            if self.usable(&sandbox) {
                return Ok(sandbox);
            }
            let _ = sandbox.kill();
        }
        let sandbox = match self.find_elsewhere(key) {
            Some(sandbox) => sandbox,
            None => self.runtime.create(
                self.config
                    .options
                    .clone()
                    .metadata(SESSION_POOL_METADATA_KEY, &self.config.name)
                    .metadata(SESSION_METADATA_KEY, key),
            )?,
        };
        let mut sessions = lock(&self.sessions);
        match sessions.get_mut(key) {
            Some(session) => {
                session.sandbox = Some(sandbox.clone());
                session.last_used = Instant::now();
            }
            // Removed (or evicted) meanwhile: ours to end.
            None => {
                drop(sessions);
                let _ = sandbox.kill();
                return Err(Error::SandboxNotFound(key.to_string()));
            }
        }
        Ok(sandbox)
    }

    fn current(&self, key: &str) -> Option<Sandbox> {
        lock(&self.sessions)
            .get(key)
            .and_then(|s| s.sandbox.clone())
    }

    /// A usable sandbox of this session that the runtime knows but the pool
    /// does not (a persistent runtime: one made before a restart).
    fn find_elsewhere(&self, key: &str) -> Option<Sandbox> {
        let filter = ListFilter::all()
            .metadata(SESSION_POOL_METADATA_KEY, &self.config.name)
            .metadata(SESSION_METADATA_KEY, key);
        self.runtime
            .list(&filter)
            .into_iter()
            .filter_map(|info| self.runtime.connect(&info.id).ok())
            .find(|sandbox| self.usable(sandbox))
    }

    /// Ends session `key`: its sandbox is destroyed.
    pub fn remove(&self, key: &str) -> Result<()> {
        let session = lock(&self.sessions).remove(key);
        match session.and_then(|s| s.sandbox) {
            Some(sandbox) => sandbox.kill(),
            None => Ok(()),
        }
    }

    /// Drops sessions whose sandbox is dead or about to reach its end
    /// (destroying those still alive); returns how many went.
    pub fn cleanup(&self) -> usize {
        let stale: Vec<(String, Option<Sandbox>)> = {
            let mut sessions = lock(&self.sessions);
            let keys: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.sandbox.as_ref().is_some_and(|sb| !self.usable(sb)))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| sessions.remove(&k).map(|s| (k, s.sandbox)))
                .collect()
        };
        for sandbox in stale.iter().filter_map(|(_, s)| s.as_ref()) {
            if sandbox.is_alive() {
                let _ = sandbox.kill();
            }
        }
        stale.len()
    }

    /// Ends every session (their sandboxes destroyed).
    pub fn shutdown(&self) {
        let all: Vec<Session> = lock(&self.sessions).drain().map(|(_, s)| s).collect();
        for sandbox in all.into_iter().filter_map(|s| s.sandbox) {
            let _ = sandbox.kill();
        }
    }
}

fn least_recently_used(sessions: &HashMap<String, Session>) -> Option<String> {
    sessions
        .iter()
        .min_by_key(|(_, s)| s.last_used)
        .map(|(k, _)| k.clone())
}
