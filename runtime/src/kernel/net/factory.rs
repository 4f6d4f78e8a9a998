//! The `sandlot-netns` thread: makes sandboxes' network namespaces on
//! request, off the caller's thread, so that a create can overlap it with
//! the rest of its work (the root's mounts, the cgroups). The thread
//! stays in the host's namespace between requests; it leaves it only
//! inside [`super::setup::create`], which always brings it back.

use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::netns::NetNamespace;
use super::setup::{self, HostSockets, SandboxNetns};
use crate::error::Error;

type Made = Result<(SandboxNetns, HostSockets), Error>;

/// A request: where to send the result.
struct Request(Sender<Made>);

/// Handle to the `sandlot-netns` thread; dropping it ends the thread.
pub struct NetnsFactory {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// A namespace being made; [`Pending::wait`] gives it.
pub struct Pending(Receiver<Made>);

impl Pending {
    pub fn wait(self) -> Made {
        self.0.recv().unwrap_or(Err(Error::RuntimeShutDown))
    }
}

impl NetnsFactory {
    /// Starts the thread; it remembers the network namespace it starts in
    /// (the caller's) as home.
    pub fn start() -> Result<NetnsFactory, Error> {
        let home = NetNamespace::current()?;
        let (requests, incoming) = bounded::<Request>(64);
        let thread = std::thread::Builder::new()
            .name("sandlot-netns".into())
            .spawn(move || {
                for Request(reply) in incoming {
                    let _ = reply.send(setup::create(&home));
                }
            })
            .map_err(|e| Error::io("start the sandlot-netns thread", e))?;
        Ok(NetnsFactory {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks for a new sandbox network; returns at once.
    pub fn request(&self) -> Pending {
        let (reply, result) = bounded(1);
        if let Some(requests) = &self.requests {
            // A send fails only if the thread is gone; `wait` then reports it.
            let _ = requests.send(Request(reply));
        }
        Pending(result)
    }

    /// Makes a new sandbox network and waits for it.
    pub fn create(&self) -> Made {
        self.request().wait()
    }
}

impl Drop for NetnsFactory {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
