//! A sandbox's network as the runtime wires it.
//!
//! - [`NetService`], one per runtime (in `RuntimeCtx::services`): the
//!   proxy engine and the `sandlot-netns` thread, started with the first
//!   sandbox that needs them (a runtime whose sandboxes all have the
//!   network off never starts a thread for it), and the bus of
//!   [`NetworkDenied`] events.
//! - [`prepare`], step 7 of create (caller's thread, while the spawner
//!   assembles the root): a ready namespace from the factory, served by
//!   the engine from then on; the spawner clones the sandbox into it.
//! - `NetState`, the sandbox's extension: the engine's handle and the
//!   kernel side (steering, namespace), released at teardown — after
//!   init was reaped, so nothing inside can still connect.
//! - [`set_network`], [`expose_port`], [`counters`]: what `Sandbox` calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::engine::{NetEngine, NetworkConfig, NetworkCounters, SandboxNet};
use crate::engine::error::{Error, Result};
use crate::engine::extensions::Extension;
use crate::engine::lifecycle::{EventBus, NetworkDenied, Subscription};
use crate::engine::network::Network;
use crate::engine::persist::{NetworkRecord, RecordLock};
use crate::engine::sandbox::{RuntimeCtx, SandboxShared};
use crate::engine::sync::lock;
use crate::kernel::net::{NetNamespace, NetnsFactory, SandboxNetns};

/// The threads serving every sandbox's network.
struct Stack {
    // Drop order: the engine's threads end once no sandbox holds it; the
    // factory's thread then closes the namespaces it kept.
    engine: NetEngine,
    namespaces: NetnsFactory,
}

/// The runtime's network: configuration, the denied-events bus, and the
/// machinery once started.
pub(crate) struct NetService {
    config: NetworkConfig,
    events: Arc<EventBus<NetworkDenied>>,
    stack: Mutex<Option<Arc<Stack>>>,
}

impl Extension for NetService {
    /// Runtime shutdown, after every sandbox was destroyed: the threads
    /// stop and the ready namespaces close.
    fn release(&self) {
        let stack = lock(&self.stack).take();
        drop(stack);
    }
}

impl NetService {
    pub fn new(config: NetworkConfig) -> NetService {
        NetService {
            config,
            events: Arc::default(),
            stack: Mutex::new(None),
        }
    }

    /// The runtime's service (installed when the runtime is built).
    pub fn of(ctx: &RuntimeCtx) -> Result<Arc<NetService>> {
        ctx.services
            .get::<NetService>()
            .ok_or(Error::RuntimeShutDown)
    }

    /// Denied connections and names of every sandbox, from now on.
    pub fn events(&self) -> Subscription<NetworkDenied> {
        self.events.subscribe()
    }

    /// The engine and the namespace factory, started on first use.
    fn stack(&self) -> Result<Arc<Stack>> {
        let mut slot = lock(&self.stack);
        if let Some(stack) = slot.as_ref() {
            return Ok(stack.clone());
        }
        let engine = NetEngine::start_with(self.config.clone(), self.events.clone())?;
        let namespaces =
            NetnsFactory::start(self.config.warm_namespaces).map_err(Error::network)?;
        let stack = Arc::new(Stack { engine, namespaces });
        *slot = Some(stack.clone());
        Ok(stack)
    }
}

/// What the network keeps per sandbox.
#[derive(Default)]
struct NetState {
    inner: Mutex<NetInner>,
}

#[derive(Default)]
struct NetInner {
    /// The option as created or last set.
    network: Network,
    /// The engine's service of the sandbox (with a network, from create;
    /// without, from the first exposed port).
    serving: Option<SandboxNet>,
    /// The namespace the host made, with its steering (network on only).
    kernel: Option<SandboxNetns>,
    /// A persistent sandbox's right to serve its network (its state dir's
    /// network lock), held while this process serves it.
    right: Option<RecordLock>,
    /// A persistent sandbox whose network another process serves.
    served_elsewhere: bool,
    /// Torn down: nothing may attach any more.
    released: bool,
}

impl Extension for NetState {
    fn release(&self) {
        let (serving, kernel, right) = {
            let mut inner = lock(&self.inner);
            inner.released = true;
            (
                inner.serving.take(),
                inner.kernel.take(),
                inner.right.take(),
            )
        };
        // The engine closes the sandbox's sockets and connections first
        // (synchronously), then the steering link and the namespace go;
        // then another process may serve it.
        drop(serving);
        drop(kernel);
        drop(right);
    }
}

fn state(sandbox: &SandboxShared) -> Arc<NetState> {
    sandbox.ext.get_or_insert_with(NetState::default)
}

/// Tells the runtime when the engine stops serving a live sandbox (its
/// loop failed): the sandbox fails visibly (Error, then Destroyed) rather
/// than lose its network silently. During create the caller checks
/// [`failure`] instead.
fn failure_hook(sandbox: &Arc<SandboxShared>) -> super::engine::FailureHook {
    let weak = Arc::downgrade(sandbox);
    Box::new(move |why: &str| {
        if let Some(sandbox) = weak.upgrade() {
            if sandbox.live().is_some() {
                sandbox.fail(format!("network: {why}"));
            }
        }
    })
}

/// Step 7 of create, on the caller's thread: for a sandbox with a
/// network, a namespace (ready from the factory, or made now) that the
/// engine serves from now on; returns it for the spawner to clone the
/// sandbox into. `None` for a sandbox without a network (nothing is
/// started). What this keeps is released with the sandbox (teardown, or
/// `forget` when the create fails).
pub(crate) fn prepare(
    sandbox: &Arc<SandboxShared>,
    network: &Network,
) -> Result<Option<NetNamespace>> {
    network.validate()?;
    if *network == Network::off() {
        return Ok(None);
    }
    let state = state(sandbox);
    if !network.is_on() {
        // Off, with a bandwidth or upstream for later exposed ports.
        lock(&state.inner).network = network.clone();
        return Ok(None);
    }
    // A persistent sandbox: this process serves it until it lets go; then
    // one that takes it over may (`rejoin`).
    let right =
        match sandbox.files() {
            Some(files) => Some(files.take_network()?.ok_or_else(|| {
                Error::invalid("network", "a new sandbox's network lock is held")
            })?),
            None => None,
        };
    let service = NetService::of(&sandbox.ctx)?;
    let stack = service.stack()?;
    let (kernel, sockets) = stack.namespaces.create().map_err(Error::network)?;
    let netns = kernel.netns.try_clone().map_err(Error::network)?;
    let serving = stack.engine.attach(
        &sandbox.id,
        &kernel.netns,
        sockets,
        network,
        Some(failure_hook(sandbox)),
    )?;
    let mut inner = lock(&state.inner);
    inner.network = network.clone();
    inner.serving = Some(serving);
    inner.kernel = Some(kernel);
    inner.right = right;
    Ok(Some(netns))
}

/// A persistent sandbox taken over from another process (`connect`):
/// serves its network again, as its record keeps it — unless another
/// process serves it now. The process that served it before took its
/// sockets and steering along when it went (connections failed closed
/// meanwhile: refused, no DNS answer); its namespace, routes and loopback
/// are still there. Established connections through the old server are
/// gone; exposed ports are not restored (expose them again).
pub(crate) fn rejoin(sandbox: &Arc<SandboxShared>, network: Network, init_pid: i32) -> Result<()> {
    let state = state(sandbox);
    let Some(files) = sandbox.files() else {
        return Ok(());
    };
    let Some(right) = files.take_network()? else {
        lock(&state.inner).served_elsewhere = true;
        lock(&state.inner).network = network;
        return Ok(());
    };
    let service = NetService::of(&sandbox.ctx)?;
    let stack = service.stack()?;
    let netns = NetNamespace::of_process(init_pid).map_err(Error::network)?;
    let (kernel, sockets) = stack.namespaces.rejoin(netns).map_err(Error::network)?;
    let serving = stack.engine.attach(
        &sandbox.id,
        &kernel.netns,
        sockets,
        &network,
        Some(failure_hook(sandbox)),
    )?;
    let mut inner = lock(&state.inner);
    if inner.released {
        return Ok(()); // ended meanwhile: what was made goes now
    }
    inner.network = network;
    inner.serving = Some(serving);
    inner.kernel = Some(kernel);
    inner.right = Some(right);
    Ok(())
}

/// Why the engine stopped serving the sandbox, if it did.
pub(crate) fn failure(sandbox: &SandboxShared) -> Option<String> {
    let state = sandbox.ext.get::<NetState>()?;
    let inner = lock(&state.inner);
    inner
        .serving
        .as_ref()
        .and_then(|s| s.failure().map(str::to_string))
}

/// Replaces the rules (and bandwidth) of a sandbox with a network; new
/// connections and lookups follow them.
pub(crate) fn set_network(sandbox: &SandboxShared, network: Network) -> Result<()> {
    network.validate()?;
    let state = sandbox
        .ext
        .get::<NetState>()
        .ok_or_else(|| created_without(sandbox))?;
    {
        let mut inner = lock(&state.inner);
        if inner.released || sandbox.live().is_none() {
            return Err(sandbox.not_running());
        }
        if inner.served_elsewhere {
            return Err(Error::Unsupported {
                feature: "set_network",
                reason: format!(
                    "another process serves the network of sandbox {}; change it there",
                    sandbox.id
                ),
            });
        }
        if inner.kernel.is_none() {
            return Err(created_without(sandbox));
        }
        let serving = inner
            .serving
            .as_ref()
            .ok_or_else(|| sandbox.not_running())?;
        serving.set_network(&network)?;
        inner.network = network.clone();
    }
    // A process that takes the sandbox over serves what was set last.
    if let Some(files) = sandbox.files() {
        let _lock = files.lock()?;
        let mut record = files.current_record()?;
        record.network = NetworkRecord::of(&network);
        files.write_record(&record)?;
    }
    Ok(())
}

fn created_without(sandbox: &SandboxShared) -> Error {
    Error::invalid(
        "network",
        format!(
            "sandbox {} was created with the network off (its own namespace, loopback only); \
             rules can be changed only on a sandbox created with a network",
            sandbox.id
        ),
    )
}

/// The sandbox's network option as created or last set.
pub(crate) fn network(sandbox: &SandboxShared) -> Network {
    sandbox
        .ext
        .get::<NetState>()
        .map(|state| lock(&state.inner).network.clone())
        .unwrap_or_default()
}

/// Forwards TCP from a host address (`bind`; default the runtime's
/// expose address with a port the kernel picks) to the sandbox's
/// `port` on loopback. Works with the network off too: the engine then
/// serves the sandbox's own namespace for its exposed ports only.
pub(crate) fn expose_port(
    sandbox: &Arc<SandboxShared>,
    port: u16,
    bind: Option<SocketAddr>,
) -> Result<SocketAddr> {
    if port == 0 {
        return Err(Error::invalid("port", "port 0 cannot be exposed"));
    }
    let service = NetService::of(&sandbox.ctx)?;
    let bind = bind.unwrap_or(SocketAddr::new(service.config.expose_address, 0));
    let live = sandbox.live().ok_or_else(|| sandbox.not_running())?;
    let state = state(sandbox);
    let mut inner = lock(&state.inner);
    if inner.released {
        return Err(sandbox.not_running());
    }
    if inner.serving.is_none() {
        let stack = service.stack()?;
        let netns = NetNamespace::of_process(live.pid).map_err(Error::network)?;
        let serving = stack.engine.attach_ports_only(
            &sandbox.id,
            &netns,
            &inner.network,
            Some(failure_hook(sandbox)),
        )?;
        inner.serving = Some(serving);
    }
    let serving = inner.serving.as_ref().expect("attached above");
    serving.expose_port(port, Some(bind))
}

/// The sandbox's traffic through the engine so far (zero when it never
/// had any).
pub(crate) fn counters(sandbox: &SandboxShared) -> NetworkCounters {
    sandbox
        .ext
        .get::<NetState>()
        .and_then(|state| {
            lock(&state.inner)
                .serving
                .as_ref()
                .map(SandboxNet::counters)
        })
        .unwrap_or_default()
}

/// Tests only: the engine's loop panics on the sandbox's next connection.
#[cfg(feature = "testing")]
pub(crate) fn panic_on_next_connection(sandbox: &SandboxShared) {
    if let Some(state) = sandbox.ext.get::<NetState>() {
        if let Some(serving) = lock(&state.inner).serving.as_ref() {
            serving.panic_on_next_connection();
        }
    }
}
