//! The contexts of one place to run them: creation, the default context
//! per language, cells, interrupts, restarts and removal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::context::{ContextCore, ContextState};
use super::error::CodeError;
use super::launcher::Launcher;
use super::protocol;
use super::types::{CellOptions, CodeContextOptions, Execution, Language};
use crate::engine::sync::lock;

/// A context, as the caller names it: cheap to clone, valid until removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Context {
    pub id: String,
    pub language: Language,
    pub cwd: Option<String>,
}

/// A context as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextInfo {
    pub id: String,
    pub language: Language,
    pub cwd: Option<String>,
    pub state: ContextState,
    /// The interpreter's process id, as the launcher sees it.
    pub pid: Option<u32>,
    /// Cells run by the current interpreter.
    pub execution_count: u32,
    /// Whether the default context of its language (`run_code`).
    pub is_default: bool,
}

/// The code contexts of one place to run them (a sandbox, or the host).
pub struct CodeContexts {
    launcher: Arc<dyn Launcher>,
    /// The template's interpreters, by language.
    interpreters: BTreeMap<Language, Vec<String>>,
    contexts: Mutex<BTreeMap<String, Arc<ContextCore>>>,
    defaults: Mutex<BTreeMap<Language, String>>,
    next: AtomicU64,
}

impl CodeContexts {
    pub fn new(launcher: impl Launcher + 'static) -> CodeContexts {
        CodeContexts::with_launcher(Arc::new(launcher))
    }

    pub fn with_launcher(launcher: Arc<dyn Launcher>) -> CodeContexts {
        CodeContexts {
            launcher,
            interpreters: BTreeMap::new(),
            contexts: Mutex::new(BTreeMap::new()),
            defaults: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// The interpreter to start for `language` when a context names none
    /// (a template's settings); unknown language names are ignored.
    pub fn interpreter(mut self, language: Language, command: Vec<String>) -> Self {
        self.interpreters.insert(language, command);
        self
    }

    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let random =
            crate::sys::process::random_id().unwrap_or_else(|_| format!("{:016x}", n.swap_bytes()));
        format!("{random}-{n}")
    }

    /// Creates a context and starts its interpreter (so that a missing
    /// interpreter is an error here, not at the first cell).
    pub fn create_context(&self, options: CodeContextOptions) -> Result<Context, CodeError> {
        let language = options.language;
        let interpreter = match &options.command {
            Some(argv) if argv.is_empty() || argv[0].is_empty() => {
                return Err(CodeError::InvalidOptions {
                    option: "command",
                    reason: "empty interpreter command".into(),
                })
            }
            Some(argv) => argv.clone(),
            None => self
                .interpreters
                .get(&language)
                .cloned()
                .unwrap_or_else(|| vec![language.default_command().to_string()]),
        };
        protocol::validate_cell("", &options.env)?;
        let id = self.new_id();
        let context = Context {
            id: id.clone(),
            language,
            cwd: options.cwd.clone(),
        };
        let core = Arc::new(ContextCore::new(
            id.clone(),
            options,
            interpreter,
            self.launcher.clone(),
        )?);
        core.ensure_started()?;
        self.lock_contexts().insert(id, core);
        Ok(context)
    }

    fn lock_contexts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<ContextCore>>> {
        lock(&self.contexts)
    }

    fn core(&self, context: &Context) -> Result<Arc<ContextCore>, CodeError> {
        self.lock_contexts()
            .get(&context.id)
            .cloned()
            .ok_or_else(|| CodeError::ContextNotFound(context.id.clone()))
    }

    /// Runs `code` as the next cell of `context`. Cells of one context run
    /// one at a time (a second caller waits); contexts run in parallel.
    pub fn run(
        &self,
        context: &Context,
        code: &str,
        options: CellOptions,
    ) -> Result<Execution, CodeError> {
        self.core(context)?.run(code, options)
    }

    /// Runs `code` in the default context of `language`, created on first
    /// use.
    pub fn run_code(
        &self,
        language: Language,
        code: &str,
        options: CellOptions,
    ) -> Result<Execution, CodeError> {
        let context = self.default_context(language)?;
        self.run(&context, code, options)
    }

    /// The default context of `language` (created if needed).
    pub fn default_context(&self, language: Language) -> Result<Context, CodeError> {
        let mut defaults = lock(&self.defaults);
        if let Some(id) = defaults.get(&language) {
            if let Some(core) = self.lock_contexts().get(id) {
                return Ok(Context {
                    id: id.clone(),
                    language,
                    cwd: core.options.cwd.clone(),
                });
            }
        }
        let context = self.create_context(CodeContextOptions::new(language))?;
        defaults.insert(language, context.id.clone());
        Ok(context)
    }

    /// Every context, in id order.
    pub fn list(&self) -> Vec<ContextInfo> {
        let defaults = lock(&self.defaults).clone();
        self.lock_contexts()
            .values()
            .map(|core| ContextInfo {
                id: core.id.clone(),
                language: core.language(),
                cwd: core.options.cwd.clone(),
                state: core.state(),
                pid: core.pid(),
                execution_count: core.execution_count(),
                is_default: defaults.get(&core.language()) == Some(&core.id),
            })
            .collect()
    }

    /// The context with this id.
    pub fn get(&self, id: &str) -> Result<Context, CodeError> {
        let contexts = self.lock_contexts();
        let core = contexts
            .get(id)
            .ok_or_else(|| CodeError::ContextNotFound(id.to_string()))?;
        Ok(Context {
            id: core.id.clone(),
            language: core.language(),
            cwd: core.options.cwd.clone(),
        })
    }

    /// Interrupts the running cell of `context` (SIGINT; killed and
    /// restarted if it does not stop within its grace period). Nothing
    /// happens to an idle context.
    pub fn interrupt(&self, context: &Context) -> Result<(), CodeError> {
        self.core(context)?.interrupt();
        Ok(())
    }

    /// Starts a new interpreter for `context`: its state is gone.
    pub fn restart(&self, context: &Context) -> Result<(), CodeError> {
        self.core(context)?.restart()
    }

    /// Removes `context` and ends its interpreter.
    pub fn remove(&self, context: &Context) -> Result<(), CodeError> {
        let core = self
            .lock_contexts()
            .remove(&context.id)
            .ok_or_else(|| CodeError::ContextNotFound(context.id.clone()))?;
        core.remove();
        Ok(())
    }

    /// Whether the Python driver of `context` runs on IPython.
    pub fn uses_ipython(&self, context: &Context) -> Result<bool, CodeError> {
        Ok(self.core(context)?.uses_ipython())
    }

    /// The place the contexts ran in is gone (a sandbox's teardown): every
    /// context ends without waiting for its running cell, which returns
    /// with `state_lost` on its own thread.
    pub(crate) fn abandon_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.lock_contexts())
            .into_values()
            .collect();
        for core in all {
            core.abandon();
        }
    }

    /// Removes every context.
    pub fn remove_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.lock_contexts())
            .into_values()
            .collect();
        for core in all {
            core.remove();
        }
    }
}

impl Drop for CodeContexts {
    fn drop(&mut self) {
        self.remove_all();
    }
}

impl std::fmt::Debug for CodeContexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeContexts")
            .field("contexts", &self.lock_contexts().len())
            .finish_non_exhaustive()
    }
}
