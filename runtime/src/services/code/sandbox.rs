//! Code contexts in a sandbox: each interpreter is a background execution
//! started through init (`services/launch.rs`) with the host's pipes as its
//! stdout and stderr and its request and message pipes at fixed numbers,
//! as the context's user (the template's unless the context names one),
//! in the context's cwd, with the sandbox's environment plus the
//! context's. The driver's program text travels on the interpreter's
//! command line (Python `-c`, node `-e`) or on its request pipe before
//! anything else (bash): nothing is written into the sandbox where code
//! could change it before it runs.
//!
//! An interpreter waiting between cells is not activity and does not count
//! against `max_concurrent`; each running cell holds an activity guard (the
//! sandbox is Active meanwhile). A sandbox's contexts live in its
//! extensions and end with it: its teardown kills every process first, and
//! then the contexts let go of their pipes without waiting for a running
//! cell, which ends on its own thread with `state_lost`.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, TryRecvError};

use super::launcher::{CellGuard, DriverExit, DriverProcess, LaunchError, LaunchRequest, Launcher};
use super::types::{CellOptions, CodeContextOptions, Execution, Language};
use super::{CodeContexts, Context, ContextInfo};
use crate::engine::error::{Error, Result};
use crate::engine::extensions::Extension;
use crate::engine::lifecycle::{ProcessEvent, Signal};
use crate::engine::output::ProcessEvents;
use crate::engine::sandbox::SandboxShared;
use crate::engine::sync::lock;
use crate::services::launch::{self, Launch, Role, RunOptions, Stdio};

/// How often a driver's `wait` looks whether the sandbox is still there
/// while no exit report comes.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Starts drivers inside one sandbox.
struct SandboxLauncher {
    id: String,
    /// Weak: the sandbox holds its contexts, which hold this.
    sandbox: Weak<SandboxShared>,
}

impl SandboxLauncher {
    fn sandbox(&self) -> Result<Arc<SandboxShared>, LaunchError> {
        self.sandbox
            .upgrade()
            .ok_or_else(|| LaunchError::Sandbox(Error::SandboxNotFound(self.id.clone())))
    }
}

impl Launcher for SandboxLauncher {
    fn launch(&self, request: LaunchRequest) -> Result<Box<dyn DriverProcess>, LaunchError> {
        let sandbox = self.sandbox()?;
        let options = RunOptions {
            cwd: request.cwd,
            env: request.env,
            user: request.user,
            ..RunOptions::default()
        };
        let launched = launch::launch(
            &sandbox,
            Launch {
                argv: request.argv,
                options: &options,
                stdio: Stdio::Given {
                    stdin: request.stdin,
                    stdout: request.stdout,
                    stderr: request.stderr,
                    extra: request.extra,
                },
                role: Role::Helper,
                budget: None,
            },
        )
        .map_err(|e| match e {
            Error::CommandNotFound { program } => LaunchError::NotFound { program },
            e => LaunchError::Sandbox(e),
        })?;
        Ok(Box::new(SandboxDriver {
            sandbox: self.sandbox.clone(),
            id: launched.id,
            pid: launched.pid,
            events: launched.events,
            exit: Mutex::new(None),
        }))
    }

    fn cell_started(&self) -> Result<Option<CellGuard>, LaunchError> {
        let sandbox = self.sandbox()?;
        sandbox.check_accepts_commands()?;
        Ok(Some(Box::new(sandbox.activity())))
    }
}

/// A driver running in a sandbox, known to init by its execution id.
struct SandboxDriver {
    sandbox: Weak<SandboxShared>,
    id: u64,
    pid: i32,
    /// Only the exit comes here: the driver's output goes to the context's
    /// own pipes.
    events: ProcessEvents,
    exit: Mutex<Option<DriverExit>>,
}

impl SandboxDriver {
    fn signal_group(&self, signal: Signal) -> io::Result<()> {
        let Some(sandbox) = self.sandbox.upgrade() else {
            return Ok(());
        };
        match sandbox.send_signal(self.id, signal.as_raw(), true) {
            // Gone with its sandbox: nothing left to signal.
            Ok(()) | Err(Error::SandboxNotRunning { .. }) => Ok(()),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    /// Whether the sandbox has ended (its teardown reaped every process:
    /// no exit report may come any more, none is needed), or this process
    /// let go of it (a persistent runtime's shutdown: the control
    /// connection that would bring the report is closed, and the
    /// interpreter is no longer this process's to wait for).
    fn sandbox_ended(&self) -> bool {
        self.sandbox
            .upgrade()
            .is_none_or(|sandbox| !sandbox.state().is_live() || sandbox.is_detached())
    }
}

impl DriverProcess for SandboxDriver {
    fn pid(&self) -> u32 {
        self.pid as u32
    }

    fn interrupt(&self) -> io::Result<()> {
        self.signal_group(Signal::INT)
    }

    fn kill(&self) -> io::Result<()> {
        self.signal_group(Signal::KILL)
    }

    fn wait(&self) -> io::Result<DriverExit> {
        let mut slot = lock(&self.exit);
        if let Some(exit) = *slot {
            return Ok(exit);
        }
        let killed = DriverExit::Signal(libc::SIGKILL);
        let exit_of = |exit: crate::engine::lifecycle::CommandExit| match (exit.code, exit.signal) {
            (Some(code), _) => DriverExit::Code(code),
            (None, Some(signal)) => DriverExit::Signal(signal.as_raw()),
            (None, None) => killed,
        };
        let exit = loop {
            // What has arrived first; then, if the sandbox has ended (its
            // teardown reaped everything and reports exits only later),
            // no need to wait; else wait a while and look again.
            match self.events.try_recv() {
                Ok(ProcessEvent::Exit(exit)) => break exit_of(exit),
                Ok(_) => continue,
                Err(TryRecvError::Disconnected) => break killed,
                Err(TryRecvError::Empty) => {}
            }
            if self.sandbox_ended() {
                break killed;
            }
            match self.events.recv_timeout(WAIT_POLL) {
                Ok(ProcessEvent::Exit(exit)) => break exit_of(exit),
                Ok(_) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break killed,
            }
        };
        *slot = Some(exit);
        Ok(exit)
    }
}

/// A sandbox's contexts, kept in its extensions.
pub(crate) struct SandboxContexts(CodeContexts);

impl Extension for SandboxContexts {
    fn release(&self) {
        self.0.abandon_all();
    }
}

/// The contexts of `sandbox` (made on first use), with the interpreters
/// its template's settings offer.
fn contexts(sandbox: &Arc<SandboxShared>) -> Arc<SandboxContexts> {
    sandbox.ext.get_or_insert_with(|| {
        let launcher = SandboxLauncher {
            id: sandbox.id.clone(),
            sandbox: Arc::downgrade(sandbox),
        };
        let mut contexts = CodeContexts::with_launcher(Arc::new(launcher));
        for offered in &sandbox.template.settings.interpreters {
            if let Ok(language) = offered.language.parse::<Language>() {
                contexts = contexts.interpreter(language, offered.command.clone());
            }
        }
        SandboxContexts(contexts)
    })
}

/// A sandbox's code contexts (`sandbox.code()`): stateful interpreters
/// that run cells and return structured results. Every error is the
/// runtime's [`Error`]; a cell that raised is a successful call whose
/// [`Execution`] has an error.
pub struct SandboxCode<'a> {
    pub(crate) sandbox: &'a Arc<SandboxShared>,
}

impl SandboxCode<'_> {
    fn contexts(&self) -> Arc<SandboxContexts> {
        contexts(self.sandbox)
    }

    /// Starts a new context's interpreter (a missing interpreter is an
    /// error here, naming the language and the program).
    pub fn create_context(&self, options: CodeContextOptions) -> Result<Context> {
        Ok(self.contexts().0.create_context(options)?)
    }

    /// Runs `code` as the next cell of `context`. Cells of one context run
    /// one at a time; contexts run in parallel. The callbacks of `options`
    /// run on this thread as output arrives.
    pub fn run(&self, context: &Context, code: &str, options: CellOptions) -> Result<Execution> {
        Ok(self.contexts().0.run(context, code, options)?)
    }

    /// Runs `code` in the default context of `language` (created on first
    /// use).
    pub fn run_code(
        &self,
        language: Language,
        code: &str,
        options: CellOptions,
    ) -> Result<Execution> {
        Ok(self.contexts().0.run_code(language, code, options)?)
    }

    /// The default context of `language` (created if needed).
    pub fn default_context(&self, language: Language) -> Result<Context> {
        Ok(self.contexts().0.default_context(language)?)
    }

    /// The context with this id.
    pub fn get(&self, id: &str) -> Result<Context> {
        Ok(self.contexts().0.get(id)?)
    }

    /// Every context, in id order.
    pub fn list(&self) -> Vec<ContextInfo> {
        self.contexts().0.list()
    }

    /// Interrupts the running cell of `context` (SIGINT to its process
    /// group; killed and restarted if it does not stop within the grace
    /// period). Nothing happens to an idle context.
    pub fn interrupt(&self, context: &Context) -> Result<()> {
        Ok(self.contexts().0.interrupt(context)?)
    }

    /// Starts a new interpreter for `context`: its state is gone. Refused
    /// while the sandbox is paused (a frozen interpreter cannot end).
    pub fn restart(&self, context: &Context) -> Result<()> {
        self.sandbox.check_accepts_commands()?;
        Ok(self.contexts().0.restart(context)?)
    }

    /// Removes `context` and ends its interpreter. Refused while the
    /// sandbox is paused (a frozen interpreter cannot end); once the
    /// sandbox has ended its contexts are gone with it.
    pub fn remove(&self, context: &Context) -> Result<()> {
        self.sandbox.check_accepts_commands()?;
        Ok(self.contexts().0.remove(context)?)
    }

    /// Whether the Python driver of `context` runs on IPython.
    pub fn uses_ipython(&self, context: &Context) -> Result<bool> {
        Ok(self.contexts().0.uses_ipython(context)?)
    }
}
