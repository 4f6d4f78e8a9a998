//! A network namespace made by the host, not by the sandbox.
//!
//! A thread unshares `CLONE_NEWNET` (only the calling thread moves), keeps
//! a descriptor of `/proc/thread-self/ns/net` and goes back to where it
//! was with `setns`. The namespace is then owned by the host's user
//! namespace: root inside a sandbox (root of a child user namespace only)
//! holds no `CAP_NET_ADMIN` over it, cannot change its interfaces, routes
//! or the steering program, and cannot `setns` into it or out of it. The
//! sandbox enters it by inheritance: the thread that clones the sandbox's
//! first process is inside it at that moment.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};

use crate::kernel::KernelError;

const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A host-made network namespace; it lives while this descriptor (or a
/// process or socket inside it) does.
#[derive(Debug)]
pub struct NetNamespace {
    fd: OwnedFd,
    inode: u64,
}

impl NetNamespace {
    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNamespace, KernelError> {
        NetNamespace::open(THREAD_NETNS)
    }

    /// A namespace descriptor received from elsewhere (the caller's table,
    /// through the spawner's handoff).
    pub fn from_fd(fd: OwnedFd) -> Result<NetNamespace, KernelError> {
        let inode = nix::sys::stat::fstat(&fd)
            .map_err(|e| KernelError::setup("stat a network namespace descriptor", e))?
            .st_ino;
        Ok(NetNamespace { fd, inode })
    }

    /// The network namespace of process `pid` (`/proc/<pid>/ns/net`).
    pub fn of_process(pid: i32) -> Result<NetNamespace, KernelError> {
        NetNamespace::open(&format!("/proc/{pid}/ns/net"))
    }

    fn open(path: &str) -> Result<NetNamespace, KernelError> {
        let file = File::open(path).map_err(|e| KernelError::setup_io("open", path, &e))?;
        NetNamespace::from_fd(file.into())
    }

    /// Makes a new network namespace and runs `setup` on the calling
    /// thread inside it (sockets made there belong to it), then moves the
    /// thread back to `home`, also when `setup` fails. The namespace
    /// starts with `lo` down and nothing else.
    pub fn create<T>(
        home: &NetNamespace,
        setup: impl FnOnce(&NetNamespace) -> Result<T, KernelError>,
    ) -> Result<(NetNamespace, T), KernelError> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| KernelError::setup("unshare network namespace", e))?;
        let back = Back(home);
        let ns = NetNamespace::current()?;
        let out = setup(&ns)?;
        drop(back);
        Ok((ns, out))
    }

    /// Moves the calling thread into this namespace until the guard drops
    /// (then back to `home`). For making a socket inside, or for tests
    /// that play a sandbox process.
    pub fn enter<'a>(&self, home: &'a NetNamespace) -> Result<Entered<'a>, KernelError> {
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| KernelError::setup("enter network namespace", e))?;
        Ok(Entered {
            _back: Back(home),
            _thread_bound: std::marker::PhantomData,
        })
    }

    /// Another descriptor of the same namespace.
    pub fn try_clone(&self) -> Result<NetNamespace, KernelError> {
        Ok(NetNamespace {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| KernelError::io("duplicate a network namespace descriptor", e))?,
            inode: self.inode,
        })
    }

    /// The namespace's inode number: its identity (`ip netns identify`,
    /// the `net:[N]` of `/proc/<pid>/ns/net`).
    pub fn inode(&self) -> u64 {
        self.inode
    }
}

impl AsFd for NetNamespace {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Moves the thread back into its home namespace when dropped.
struct Back<'a>(&'a NetNamespace);

impl Drop for Back<'_> {
    fn drop(&mut self) {
        // A thread stranded in a sandbox's namespace would make every later
        // socket of it there: that must never go unnoticed.
        if let Err(e) = setns(self.0.fd.as_fd(), CloneFlags::CLONE_NEWNET) {
            panic!("cannot return to the host's network namespace: {e}");
        }
    }
}

/// The calling thread is inside a [`NetNamespace`] until this drops. Not
/// `Send`: it must drop on the thread it moved.
pub struct Entered<'a> {
    _back: Back<'a>,
    _thread_bound: std::marker::PhantomData<*const ()>,
}
