//! Sandbox network namespaces kept ready ahead of demand. The kernel needs
//! ~0.5-1 ms (more on a busy machine) to build a namespace with its
//! routes, sockets and steering; the `sandlot-netns` thread does that in
//! the background, and a create takes a ready one under a mutex: no
//! thread hand-off on the create path. With none ready (a burst), the
//! caller makes its own on its own thread, as [`super::setup::create`]
//! would.
//!
//! Both threads leave the host's namespace only inside `setup::create`,
//! which always brings them back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::netns::NetNamespace;
use super::setup::{self, HostSockets, SandboxNetns};
use crate::kernel::KernelError;

type Net = (SandboxNetns, HostSockets);

/// Keeps `warm` sandbox networks ready; dropping it ends the thread and
/// closes those it kept.
pub struct NetnsFactory {
    home: NetNamespace,
    ready: Arc<Mutex<VecDeque<Net>>>,
    /// A token asks the thread to top the queue up.
    refill: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsFactory {
    /// Starts the thread, which keeps `warm` namespaces ready (0: none,
    /// every create makes its own). The caller's network namespace is
    /// home for both.
    pub fn start(warm: usize) -> Result<NetnsFactory, KernelError> {
        let home = NetNamespace::current()?;
        let ready = Arc::new(Mutex::new(VecDeque::with_capacity(warm)));
        let (refill, wanted) = bounded::<()>(1);
        let thread = {
            let home = home.try_clone()?;
            let ready = ready.clone();
            std::thread::Builder::new()
                .name("sandlot-netns".into())
                .spawn(move || keep_ready(&home, warm, &ready, &wanted))
                .map_err(|e| KernelError::io("start the sandlot-netns thread", e))?
        };
        let _ = refill.try_send(());
        Ok(NetnsFactory {
            home,
            ready,
            refill: Some(refill),
            thread: Some(thread),
        })
    }

    /// A sandbox network: a ready one, or one made now on the calling
    /// thread (which must be in the host's namespace).
    pub fn create(&self) -> Result<Net, KernelError> {
        let taken = self
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if let Some(refill) = &self.refill {
            // Full means a top-up is already asked for.
            if let Err(TrySendError::Disconnected(())) = refill.try_send(()) {
                return Err(KernelError::RuntimeShutDown);
            }
        }
        match taken {
            Some(net) => Ok(net),
            None => setup::create(&self.home),
        }
    }

    /// Serves an existing sandbox namespace again (see [`setup::rejoin`]),
    /// on the calling thread.
    pub fn rejoin(&self, netns: NetNamespace) -> Result<Net, KernelError> {
        setup::rejoin(&self.home, netns)
    }

    /// How many are ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Tops the queue up to `warm` each time it is asked. A failure (say, the
/// namespace limit) is left for the next request to retry, and the
/// creates that find the queue empty make their own and see the error.
fn keep_ready(
    home: &NetNamespace,
    warm: usize,
    ready: &Mutex<VecDeque<Net>>,
    wanted: &Receiver<()>,
) {
    while wanted.recv().is_ok() {
        while ready.lock().unwrap_or_else(|p| p.into_inner()).len() < warm {
            match setup::create(home) {
                Ok(net) => ready
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(net),
                Err(_) => break,
            }
        }
    }
}

impl Drop for NetnsFactory {
    fn drop(&mut self) {
        self.refill = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
