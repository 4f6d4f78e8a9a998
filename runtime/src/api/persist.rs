//! The persistent runtime's part of the create sequence (steps 2b and 17,
//! `create.rs`), and taking over a sandbox another process made
//! ([`adopt`]): everything between a state dir and a live sandbox.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use sandlot_proto::monitor::{Lifecycle, OnTimeout};
use sandlot_proto::Request;
use sandlot_rootfs::Template;

use crate::api::factory::{open_root, Factory};
use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::State;
use crate::engine::options::{SandboxOptions, TimeoutAction};
use crate::engine::persist::{
    from_ms, read_record, to_ms, Found, NetworkRecord, Record, SandboxFiles, StateDir,
    RECORD_VERSION,
};
use crate::engine::reactor::Handler;
use crate::engine::sandbox::{Live, NewSandbox, RuntimeCtx, SandboxInfo, SandboxShared};
use crate::kernel::cgroups::PERSISTENT_PREFIX;
use crate::kernel::monitor::{self, MonitorSpec};
use crate::kernel::procs::ProcId;
use crate::services::net::service as net;

/// The name of a persistent sandbox's cgroup dirs.
pub(crate) fn cgroup_name(id: &str) -> String {
    format!("{PERSISTENT_PREFIX}{id}")
}

/// Step 2b: the sandbox's directory in the state dir, with a record that
/// names this process as its creator and lists the cgroup dirs about to be
/// made — before anything is built, so that whatever a creator that dies
/// from here on leaves is found and removed.
pub(crate) fn begin(
    factory: &Factory,
    state: &StateDir,
    shared: &SandboxShared,
    options: &SandboxOptions,
    template: &Template,
) -> Result<()> {
    let record = Record {
        version: RECORD_VERSION,
        id: shared.id.clone(),
        template: shared.template_name.clone(),
        template_kind: template.kind.clone(),
        template_config: template.config.clone(),
        template_settings: template.settings.clone(),
        hostname: shared.hostname.clone(),
        env: shared.env.clone(),
        metadata: shared.metadata(),
        limits: options.limits.clone(),
        exec_limits: options.exec_limits,
        pause_clock: options.pause_clock,
        idle_timeout_ms: options.idle_timeout.map(|d| d.as_millis() as u64),
        created_at_ms: to_ms(shared.created_at),
        creator: ProcId::current(),
        init: None,
        cgroups: factory
            .cgroups
            .paths_for(&cgroup_name(&shared.id), &options.limits),
        network: NetworkRecord::of(&options.network),
    };
    let files = state.create(&record, &shared.lifecycle())?;
    shared.set_files(files);
    Ok(())
}

/// Step 17: the sandbox outlives this process. A listening control socket
/// in its directory goes to init, which stops dying with us and accepts
/// other processes' connections on it; the record then names init, whose
/// life (not ours) now decides the record's; a monitor takes over its
/// clocks.
pub(crate) fn outlive_creator(
    factory: &Factory,
    ctx: &RuntimeCtx,
    shared: &SandboxShared,
) -> Result<()> {
    let live = shared.live().ok_or_else(|| shared.not_running())?;
    let files = shared.files().ok_or_else(|| shared.not_running())?;
    let listener = listen_at(&files.control_path())?;
    let reply = shared.expect_persisted();
    shared.send_request_with_fds(&Request::Persist, &[listener.as_fd()])?;
    drop(listener); // init holds it now
    match reply.recv_timeout(factory.ready_timeout) {
        Ok(0) => {}
        Ok(errno) => {
            return Err(Error::setup(
                "make init outlive its creator",
                nix::errno::Errno::from_raw(errno),
            ))
        }
        Err(_) => {
            return Err(Error::Protocol {
                id: shared.id.clone(),
                reason: format!(
                    "init did not answer the persist request within {:?}",
                    factory.ready_timeout
                ),
            })
        }
    }
    let init = ProcId::of(live.pid).ok_or_else(|| shared.not_running())?;
    let record = {
        let _lock = files.lock()?;
        let mut record = files.current_record()?;
        record.init = Some(init);
        files.write_record(&record)?;
        shared.save_lifecycle()?;
        record
    };
    shared.mark_persisted();
    start_monitor(ctx, files, &record);
    Ok(())
}

/// Starts a monitor for a live sandbox of the state dir that has none
/// (its creator died before starting one, or someone killed it).
pub(crate) fn ensure_monitor(ctx: &RuntimeCtx, state: &StateDir, record: &Record) {
    if record.init.is_none() {
        return;
    }
    if let Ok(files) = SandboxFiles::open(state, &record.id) {
        if !files.monitored() {
            start_monitor(ctx, &files, record);
        }
    }
}

/// Starts the sandbox's monitor, off the caller's path: on a teardown
/// thread, which then reaps the monitor's first process (it exits as soon
/// as the monitor runs). A runtime's shutdown finishes the queued starts
/// before it returns, so only a creator killed within the millisecond this
/// takes leaves a sandbox without a monitor — started then by the next
/// process that opens the state dir.
fn start_monitor(ctx: &RuntimeCtx, files: &SandboxFiles, record: &Record) {
    let Some(init) = record.init else {
        return;
    };
    let dir = files.dir.clone();
    let cgroups = record.cgroups.clone();
    ctx.teardowns.run(move || {
        let started = monitor::start(MonitorSpec {
            dir: &dir,
            init,
            cgroups: &cgroups,
        });
        if let Ok(starting) = started {
            starting.wait();
        }
    });
}

/// A listening SEQPACKET socket bound at `path`, root-only.
fn listen_at(path: &Path) -> Result<OwnedFd> {
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::setup("create the control socket", e))?;
    with_unix_addr(path, |addr| socket::bind(sock.as_raw_fd(), addr)).map_err(|e| {
        Error::Setup {
            step: "bind the control socket",
            path: Some(path.to_owned()),
            errno: e,
        }
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod 0600 {}", path.display()), e))?;
    socket::listen(&sock, Backlog::new(64).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| Error::setup("listen on the control socket", e))?;
    Ok(sock)
}

/// A connection to a persistent sandbox's control socket.
fn connect_to(path: &Path) -> Result<OwnedFd> {
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::setup("create a control socket", e))?;
    with_unix_addr(path, |addr| socket::connect(sock.as_raw_fd(), addr)).map_err(|e| {
        Error::Setup {
            step: "connect to the sandbox's control socket",
            path: Some(path.to_owned()),
            errno: e,
        }
    })?;
    Ok(sock)
}

/// Calls `f` with the address of `path`; a path too long for a socket
/// address is reached through its directory's descriptor
/// (`/proc/self/fd/N/name`).
fn with_unix_addr<T>(path: &Path, f: impl FnOnce(&UnixAddr) -> nix::Result<T>) -> nix::Result<T> {
    if let Ok(addr) = UnixAddr::new(path) {
        return f(&addr);
    }
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name),
        _ => return Err(nix::errno::Errno::ENAMETOOLONG),
    };
    let dir = fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    f(&UnixAddr::new(&short)?)
}

/// Whether `id` could name a sandbox (what sandlot makes: 16 hex digits;
/// anything that could step out of the state dir is refused).
pub(crate) fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Takes over a live sandbox of the state dir that another process (or
/// an earlier runtime of this one) made: checks its init (pid and start
/// time), opens a pidfd of it, connects to its control socket, opens its
/// root, finds its cgroups and OOM notifier, restores its deadline,
/// metadata, limits and state — its lifetime stays what it was — and
/// starts a monitor if none watches it.
pub(crate) fn adopt(
    factory: &Factory,
    ctx: &Arc<RuntimeCtx>,
    state: &StateDir,
    id: &str,
) -> Result<Arc<SandboxShared>> {
    let not_found = || Error::SandboxNotFound(id.to_string());
    if !plausible_id(id) {
        return Err(not_found());
    }
    let record = match state.scan(id) {
        Found::Live(record) => *record,
        Found::Ended | Found::Busy => return Err(not_found()),
    };
    // Still being made by its creator: not anybody else's yet.
    let init = record.init.ok_or_else(not_found)?;
    let pidfd = init.pidfd().ok_or_else(not_found)?;
    let files = SandboxFiles::open(state, id)?;
    let record = files.read_record().unwrap_or(record);
    let lifecycle = files.read_lifecycle()?;
    let control = connect_to(&files.control_path())?;
    let root = open_root(init.pid)?;
    let rw = open_shm(init.pid)?;
    let cgroup = factory.cgroups.adopt(&record.cgroups, &record.limits)?;

    let cgroup = Arc::new(cgroup);
    let shared = SandboxShared::new(new_sandbox(&record, &lifecycle), ctx.clone());
    shared.set_files(files);
    match ctx.admit_or_get(shared.clone()) {
        Ok(None) => {}
        Ok(Some(existing)) => {
            // Another thread of ours took it over first.
            cgroup.disown();
            return Ok(existing);
        }
        Err(e) => {
            cgroup.disown();
            return Err(e);
        }
    }
    let taken = shared
        .watch_oom(&cgroup)
        .and_then(|()| {
            let handler: std::sync::Weak<dyn Handler> = Arc::downgrade(&shared) as _;
            ctx.reactor
                .watch_sandbox(handler, control.as_fd(), pidfd.as_fd())
                .map_err(|e| Error::setup("watch the sandbox", e))
        })
        .and_then(|tokens| {
            shared.restore(&lifecycle);
            shared.set_live(Live {
                pid: init.pid,
                pidfd,
                control,
                root: Arc::new(root),
                rw,
                cgroup: cgroup.clone(),
                tokens,
                lease: None,
            })
        });
    if let Err(e) = taken {
        // Never ours to end: let go of it as it is.
        cgroup.disown();
        shared.drop_adoption();
        return Err(e);
    }
    if let Some(files) = shared.files() {
        if !files.monitored() {
            start_monitor(ctx, files, &record);
        }
    }
    // Its network, unless another process serves it. An attach-only
    // runtime (the CLI's exec, ls …: a process that lives for one command)
    // leaves it to a process that stays. If it cannot be served, it stays
    // closed (refused connections, no DNS answers), as while nobody served
    // it; the sandbox is still taken over.
    if factory.makers.is_some() {
        if let Some(network) = record.network.as_ref().and_then(|n| n.network().ok()) {
            let _ = net::rejoin(&shared, network, init.pid);
        }
    }
    Ok(shared)
}

/// What an adopted sandbox is made of, from its record and lifecycle.
fn new_sandbox(record: &Record, lifecycle: &Lifecycle) -> NewSandbox {
    NewSandbox {
        id: record.id.clone(),
        template_name: record.template.clone(),
        template: Arc::new(Template {
            name: record.template.clone(),
            kind: record.template_kind.clone(),
            layers: Vec::new(),
            binds: Vec::new(),
            config: record.template_config.clone(),
            settings: record.template_settings.clone(),
        }),
        metadata: record.metadata.clone(),
        env: record.env.clone(),
        hostname: record.hostname.clone(),
        timeout: Duration::from_millis(lifecycle.timeout_ms),
        idle_timeout: record.idle_timeout_ms.map(Duration::from_millis),
        on_timeout: match lifecycle.on_timeout {
            OnTimeout::Kill => TimeoutAction::Kill,
            OnTimeout::Pause => TimeoutAction::Pause,
        },
        limits: record.limits.clone(),
        exec_limits: record.exec_limits,
        pause_clock: record.pause_clock,
        created_at: record.created_at(),
        end_at: from_ms(lifecycle.end_at_ms),
    }
}

/// `/dev/shm` of the sandbox, on the same tmpfs as its writable layer:
/// what its disk usage is measured on (the creator holds the tmpfs itself).
fn open_shm(pid: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/root/dev/shm");
    let shm = fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&path)
        .map_err(|e| Error::io(format!("open {path}"), e))?;
    Ok(shm.into())
}

/// A live sandbox of the state dir as `list()` shows it without taking it
/// over: from its record and lifecycle (commands of other processes are
/// not counted).
pub(crate) fn info_from_files(state: &StateDir, record: &Record) -> Option<SandboxInfo> {
    let dir = state.sandbox_dir(&record.id);
    let lifecycle = fs::read_to_string(dir.join(sandlot_proto::monitor::LIFECYCLE))
        .ok()
        .and_then(|text| Lifecycle::decode(&text).ok())?;
    let record = read_record(&dir).unwrap_or_else(|_| record.clone());
    Some(SandboxInfo {
        id: record.id.clone(),
        template: record.template.clone(),
        state: match lifecycle.phase {
            sandlot_proto::monitor::Phase::Running if record.init.is_none() => State::Starting,
            sandlot_proto::monitor::Phase::Running => State::Running,
            sandlot_proto::monitor::Phase::Paused => State::Paused,
            sandlot_proto::monitor::Phase::Stopping => State::Stopping,
        },
        metadata: record.metadata.clone(),
        hostname: record.hostname.clone(),
        created_at: record.created_at(),
        end_at: from_ms(lifecycle.end_at_ms),
        init_pid: record.init.map(|i| i.pid),
        commands_in_flight: 0,
        end_reason: None,
        limits: record.limits.clone(),
        idle_timeout: record.idle_timeout_ms.map(Duration::from_millis),
        ended_at: None,
    })
}

/// When a sandbox of the state dir last saw activity, and whether a
/// command is in flight in any process now.
pub(crate) fn activity(state: &StateDir, id: &str) -> Option<(SystemTime, bool)> {
    let path = state.sandbox_dir(id).join(sandlot_proto::monitor::ACTIVITY);
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .ok()?;
    let last = file.metadata().and_then(|m| m.modified()).ok()?;
    let free = crate::sys::fd::flock(file.as_fd(), libc::LOCK_EX | libc::LOCK_NB).unwrap_or(false);
    Some((last, !free))
}
