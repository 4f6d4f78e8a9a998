//! The parent's side of building a sandbox, on one long-lived thread.
//!
//! Why one thread ("sandlot-spawner"): it owns a private mount namespace
//! (`unshare(CLONE_NEWNS)` affects only the calling thread), so every mount
//! sandlot makes is invisible to the host and disappears with the process;
//! and it is the parent *thread* of every init, which matters because the
//! parent-death signal fires when the parent thread exits — a caller's
//! short-lived thread must never be that parent.
//!
//! The numbered steps of [`launch`] mirror ARCHITECTURE.md ("parent
//! sequence"); the child's are in [`child`].

mod child;
mod plan;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use sandlot_proto::GO_BYTES;
use sandlot_rootfs::Template;

pub(crate) use plan::Rlimit;
pub use plan::Step;
use plan::{ChildPlan, PlanInputs};

use crate::caps::CapPlan;
use crate::cgroups::SandboxCgroup;
use crate::error::{Error, Result};
use crate::mounts::Scratch;
use crate::seccomp::CompiledSeccomp;
use crate::sys::{clone, fd};
use crate::userns::{self, IdRange};

/// Namespaces every sandbox starts in. The cgroup namespace comes later,
/// from the child, once the host has placed it in its cgroups.
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC;

pub(crate) struct SpawnerConfig {
    pub scratch_dir: PathBuf,
    pub range: IdRange,
    /// The sealed init memfd; owned by the runtime, outlives the spawner.
    pub init_fd: RawFd,
}

/// Everything needed to build one sandbox.
pub(crate) struct CreateJob {
    pub id: String,
    pub hostname: String,
    pub template: Arc<Template>,
    pub disk_bytes: u64,
    pub rlimits: Vec<Rlimit>,
    pub caps: CapPlan,
    pub seccomp: CompiledSeccomp,
    /// The sandbox's cgroup v2 directory, for `CLONE_INTO_CGROUP` (`None`
    /// without a v2 hierarchy), sent by the caller once its cgroups exist:
    /// it makes them while this thread assembles the root. The caller
    /// keeps the directory open until [`PendingLaunch::wait`] returns; a
    /// hang-up means they could not be made, and the launch is abandoned.
    pub cgroup_fd: Receiver<Option<RawFd>>,
}

/// A launch submitted to the spawner thread.
pub(crate) struct PendingLaunch {
    reply: Receiver<Result<Launched>>,
}

impl PendingLaunch {
    /// Waits for the parent's part of setup (steps 1-5).
    pub fn wait(self) -> Result<Launched> {
        self.reply.recv().map_err(|_| Error::RuntimeShutDown)?
    }
}

/// A child that passed the parent's part of setup; it now finishes its own
/// and execs init, which will say Ready on `control`.
pub(crate) struct Launched {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub control: OwnedFd,
    /// `O_PATH` descriptor of the sandbox's writable tmpfs (disk usage).
    pub rw: OwnedFd,
}

enum Job {
    Create(Box<CreateJob>, Sender<Result<Launched>>),
}

pub(crate) struct Spawner {
    jobs: std::sync::Mutex<Option<Sender<Job>>>,
    thread: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
}

impl Spawner {
    /// Starts the spawner thread and waits until its namespace and scratch
    /// space are ready (or failed).
    pub fn start(config: SpawnerConfig) -> Result<Spawner> {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = bounded(1);
        let thread = thread::Builder::new()
            .name("sandlot-spawner".into())
            .spawn(move || thread_main(config, ready_tx, jobs_rx))
            .map_err(|e| Error::io("start the spawner thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Spawner {
                jobs: std::sync::Mutex::new(Some(jobs_tx)),
                thread: std::sync::Mutex::new(Some(thread)),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::RuntimeShutDown)
            }
        }
    }

    /// Starts the parent's part of setup for one sandbox on the spawner
    /// thread; the caller sends the cgroup fd meanwhile (see
    /// [`CreateJob::cgroup_fd`]) and then waits.
    pub fn submit(&self, job: CreateJob) -> Result<PendingLaunch> {
        let (tx, rx) = bounded(1);
        let jobs = self
            .jobs
            .lock()
            .unwrap()
            .clone()
            .ok_or(Error::RuntimeShutDown)?;
        jobs.send(Job::Create(Box::new(job), tx))
            .map_err(|_| Error::RuntimeShutDown)?;
        Ok(PendingLaunch { reply: rx })
    }

    /// Stops the thread. Its exit fires the parent-death signal of every
    /// init it started, so call this only after destroying the sandboxes.
    pub fn stop(&self) {
        self.jobs.lock().unwrap().take();
        if let Some(thread) = self.thread.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn thread_main(config: SpawnerConfig, ready: Sender<Result<()>>, jobs: Receiver<Job>) {
    let mut scratch = match enter_private_namespace(&config) {
        Ok(scratch) => {
            let _ = ready.send(Ok(()));
            scratch
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    for job in jobs {
        match job {
            Job::Create(job, reply) => {
                let _ = reply.send(launch(&mut scratch, &config, &job));
                // 6. The child has its own copy of the mounts: free the
                //    mount points for the next sandbox. After the reply, so
                //    the caller writes id maps meanwhile (saves ~85 µs of
                //    create latency; the umounts need an RCU grace period).
                scratch.detach();
            }
        }
    }
}

/// This thread's own mount namespace, a slave of the host's (host mounts
/// and unmounts still reach us; ours never reach the host), and the
/// scratch space inside it.
fn enter_private_namespace(config: &SpawnerConfig) -> Result<Scratch> {
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::setup("unshare the spawner's mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::setup("make / a recursive slave in the spawner's namespace", e))?;
    let idmap = userns::idmap_namespace(&config.range)?;
    Scratch::new(&config.scratch_dir, config.range, idmap)
}

/// The parent sequence for one sandbox, steps 1-5 (on the spawner
/// thread; step 6 follows the reply); [`release`] does 7-9 from the
/// caller's thread.
fn launch(scratch: &mut Scratch, config: &SpawnerConfig, job: &CreateJob) -> Result<Launched> {
    // 1. Attach the template's idmapped layers (first use only).
    scratch.prepare(&job.template)?;
    // 2. Assemble the root: writable tmpfs, overlay, host binds, /dev.
    let rw = scratch.assemble(&job.template, job.disk_bytes)?;
    // 3. The control socket; the child's end becomes init's fd 3.
    let pair = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    );
    let (host_end, child_end) = match pair {
        Ok(pair) => pair,
        Err(e) => {
            scratch.detach();
            return Err(Error::setup("create the control socket", e));
        }
    };
    // 4. Everything the child needs, allocated now.
    let plan = ChildPlan::new(PlanInputs {
        control: child_end.as_raw_fd(),
        host_end: host_end.as_raw_fd(),
        init_fd: config.init_fd,
        hostname: &job.hostname,
        root: scratch.root_path(),
        rlimits: job.rlimits.clone(),
        sandbox_id: &job.id,
        caps: job.caps,
        seccomp: job.seccomp.clone(),
    });
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            scratch.detach();
            return Err(e);
        }
    };
    // 5. One clone with every namespace, straight into the sandbox's
    //    cgroup v2 directory when there is one; the child waits for "go".
    let Ok(cgroup_fd) = job.cgroup_fd.recv() else {
        scratch.detach();
        return Err(Error::setup(
            "wait for the sandbox's cgroups",
            nix::errno::Errno::ECANCELED,
        ));
    };
    let cgroup = cgroup_fd.map(fd::borrow);
    let child = clone::fork_into(NAMESPACES as u64, cgroup, || -> std::convert::Infallible {
        child::run(&plan)
    });
    // 6. Detaching the mounts is left to `thread_main`, after the reply.
    let child = child.map_err(|e| Error::setup("clone the sandbox", e))?;
    Ok(Launched {
        pid: child.pid,
        pidfd: child.pidfd,
        control: host_end,
        rw,
    })
}

/// Steps 7-9 of the parent sequence, from the caller's thread while the
/// spawner builds the next sandbox: id maps, cgroups, go. On error the
/// caller kills the child.
pub(crate) fn release(
    launched: &Launched,
    range: &IdRange,
    cgroup: Option<&SandboxCgroup>,
) -> Result<()> {
    // 7. Map sandbox root to the unprivileged range.
    userns::write_maps(launched.pid, range)?;
    // 8. The v1 hierarchies (clone3 already placed the child in v2), before
    //    the child unshares its cgroup namespace.
    if let Some(cgroup) = cgroup {
        cgroup.attach(launched.pid, cgroup.v2_dir_fd().is_some())?;
    }
    // 9. Release the child.
    fd::send_with_fds(launched.control.as_fd(), &GO_BYTES, &[], false)
        .map_err(|e| Error::setup("send go to the sandbox", e))
}
