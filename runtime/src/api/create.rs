//! The parent side of creating a sandbox, as one sequence with one
//! numbering (ARCHITECTURE.md, "Setup sequence — parent", uses the same
//! numbers). Steps 4–6 and 8–10 run on the spawner thread
//! (`kernel::spawn::launch`, whose comments carry these numbers) while
//! this thread does step 7; everything else runs here, on the caller's
//! thread.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::SystemTime;

use sandlot_rootfs::Template;

use crate::api::factory::{open_root, Factory, Makers};
use crate::api::persist;
use crate::engine::control;
use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{Reason, State};
use crate::engine::options::SandboxOptions;
use crate::engine::reactor::Handler;
use crate::engine::sandbox::{Live, NewSandbox, RuntimeCtx, SandboxShared};
use crate::kernel::spawn::{self, CreateJob, Launched, Rlimit};
use crate::kernel::userns;
use crate::services::net::service as net;
use crate::services::{quota, template};
use crate::sys::process;

fn new_id() -> Result<String> {
    process::random_id().map_err(|e| Error::setup("getrandom", e))
}

/// Kills and reaps a child whose setup did not complete.
struct ChildGuard<'a>(Option<&'a OwnedFd>);

impl ChildGuard<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        if let Some(pidfd) = self.0 {
            let _ = process::kill_and_reap(pidfd.as_fd());
        }
    }
}

/// Creates a sandbox and returns when its init is ready (and the
/// template's start command, if any, is).
pub(crate) fn create(
    factory: &Factory,
    ctx: &Arc<RuntimeCtx>,
    options: SandboxOptions,
) -> Result<Arc<SandboxShared>> {
    // 1. Validate the options, resolve the template, and let its settings
    //    fill in what the caller left unset.
    let makers = factory.makers()?;
    options.validate()?;
    let template = factory.template(&options.template)?;
    let options = template::with_defaults(options, &template.settings);
    // The store bounds a template's settings; checked again as applied.
    crate::engine::options::validate_timeout(options.timeout)?;
    options.limits.validate()?;
    let id = new_id()?;
    let now = SystemTime::now();
    let shared = SandboxShared::new(
        NewSandbox {
            hostname: options.hostname.clone().unwrap_or_else(|| id.clone()),
            id: id.clone(),
            template_name: options.template.clone(),
            template: template.clone(),
            metadata: options.metadata.clone(),
            env: options.env.clone(),
            timeout: options.timeout,
            idle_timeout: options.idle_timeout,
            on_timeout: options.on_timeout,
            limits: options.limits.clone(),
            exec_limits: options.exec_limits,
            pause_clock: options.pause_clock,
            created_at: now,
            end_at: now + options.timeout,
        },
        ctx.clone(),
    );

    // 2. Enter the table as Pending — quotas and shutdown are checked under
    //    the table's lock — then Starting.
    let admitted = ctx.admit(shared.clone(), |live| {
        if let Some(max) = factory.max_sandboxes {
            if live.len() >= max {
                return Err(Error::QuotaExceeded {
                    what: "max_sandboxes",
                    limit: max as u64,
                });
            }
        }
        if let Some(ratio) = factory.memory_overcommit {
            quota::check_memory(live, options.limits.memory, ratio)?;
        }
        Ok(())
    });
    if let Err(e) = admitted {
        let why = match &e {
            Error::QuotaExceeded { what, .. } => (*what).to_string(),
            Error::RuntimeShutDown => "runtime shut down".to_string(),
            _ => "memory".to_string(),
        };
        let _ = shared.transition(State::Failed, Reason::Rejected(why));
        return Err(e);
    }
    let _ = shared.transition(State::Starting, Reason::Created);

    // 2b. (persistent) Its directory in the state dir, naming this process
    //     as its creator and listing the cgroup dirs about to be made.
    let started = match &ctx.state {
        Some(state) => persist::begin(factory, state, &shared, &options, &template),
        None => Ok(()),
    }
    .and_then(|()| start(factory, makers, ctx, &shared, template, &options));
    if let Err(e) = started {
        let why = Reason::SetupFailed(e.to_string());
        let _ = shared.transition(State::Error, why.clone());
        shared.forget(why);
        return Err(e);
    }
    // 16. The template's start command, and its readiness check.
    template::run_start(&shared)?;
    // 17. (persistent) Outlive this process: init listens for other
    //     processes and stops dying with us, the record names init, a
    //     monitor takes over the clocks.
    if ctx.state.is_some() {
        persist::outlive_creator(factory, ctx, &shared).inspect_err(|e| {
            let _ = shared.destroy(Reason::SetupFailed(e.to_string()));
        })?;
    }
    Ok(shared)
}

/// Steps 3–15: from the spawner job to a Running sandbox with a deadline.
fn start(
    factory: &Factory,
    makers: &Makers,
    ctx: &Arc<RuntimeCtx>,
    shared: &Arc<SandboxShared>,
    template: Arc<Template>,
    options: &SandboxOptions,
) -> Result<()> {
    let limits = &options.limits;
    let seccomp = match &options.seccomp {
        None => makers.default_seccomp.clone(),
        Some(profile) => makers.seccomp.get(profile)?,
    };
    let mut rlimits: Vec<Rlimit> = vec![
        (libc::RLIMIT_CORE, 0, 0),
        (libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
    ];
    if let Some(max) = limits.max_file_size {
        rlimits.push((libc::RLIMIT_FSIZE, max, max));
    }

    // 3. Hand the job to the spawner thread, which does steps 4–6 (attach
    //    the template's idmapped layers, assemble the root, make the
    //    control socket) meanwhile.
    let mut pending = makers.spawner.submit(CreateJob {
        id: shared.id.clone(),
        hostname: shared.hostname.clone(),
        template,
        disk_bytes: limits.disk,
        rlimits,
        caps: makers.caps,
        seccomp,
    })?;

    // 7. Meanwhile, on this thread: with a network, the sandbox's network
    //    namespace (one kept ready, or made now), served by the proxy
    //    engine from now on; then the cgroups and their limits, before the
    //    child exists. The v2 dir, the v1 `tasks` files and the namespace
    //    go to the spawner for step 9. If this fails the launch is
    //    dropped: the spawner abandons it before any clone (and what the
    //    network holds goes with the sandbox's `forget`).
    let netns = match net::prepare(shared, &options.network) {
        Ok(netns) => netns,
        Err(e) => {
            let _ = pending.wait();
            return Err(e);
        }
    };
    let name = match ctx.state {
        Some(_) => persist::cgroup_name(&shared.id),
        None => shared.id.clone(),
    };
    let cgroup = match factory.cgroups.create(&name, limits) {
        Ok(cgroup) => cgroup,
        Err(e) => {
            let _ = pending.wait();
            return Err(e.into());
        }
    };
    pending.cgroups_ready(
        cgroup.v2_dir_fd(),
        cgroup.v1_task_files(),
        netns.as_ref().map(AsFd::as_fd),
    )?;
    drop(netns);

    // (8. the child's plan, 9. clone3, 10. detach the scratch mounts: on
    //  the spawner thread.)
    let launched: Launched = pending.wait()?;
    let guard = ChildGuard(Some(&launched.pidfd));

    // 11. Map sandbox root to the unprivileged range.
    userns::write_maps(launched.pid, &ctx.range)?;
    // 12. Release the child.
    spawn::send_go(launched.control.as_fd())?;
    // 13. Wait for init's Ready (or the child's failed step and errno).
    control::wait_ready(&shared.id, launched.control.as_fd(), factory.ready_timeout)?;

    // 14. The root for host-side file access; the OOM notifier; the io
    //     thread watches the control socket and init's pidfd; → Running.
    let root = open_root(launched.pid)?;
    shared.watch_oom(&cgroup)?;
    let handler: std::sync::Weak<dyn Handler> = Arc::downgrade(shared) as _;
    let tokens = ctx
        .reactor
        .watch_sandbox(handler, launched.control.as_fd(), launched.pidfd.as_fd())
        .map_err(|e| Error::setup("watch the sandbox", e))?;
    guard.disarm();
    shared.set_live(Live {
        pid: launched.pid,
        pidfd: launched.pidfd,
        control: launched.control,
        root: Arc::new(root),
        rw: launched.rw,
        cgroup: Arc::new(cgroup),
        tokens,
        lease: Some(launched.lease),
    })?;
    if let Err(state) = shared.transition(State::Running, Reason::Started) {
        // Destroyed while starting (runtime shutdown): already torn down.
        return Err(Error::SandboxNotRunning {
            id: shared.id.clone(),
            state,
        });
    }

    // 15. The deadline. A network engine that stopped serving the sandbox
    //     while it started (its loop failed) fails the create.
    shared.arm_deadline();
    if let Some(why) = net::failure(shared) {
        let _ = shared.destroy(Reason::Internal(format!("network: {why}")));
        return Err(Error::NetworkSetup {
            step: "serve the sandbox's network",
            errno: None,
            detail: why,
        });
    }
    Ok(())
}
