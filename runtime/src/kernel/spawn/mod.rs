//! The parent's side of building a sandbox, on one long-lived thread.
//!
//! Why one thread ("sandlot-spawner"): it owns a private mount namespace
//! (`unshare(CLONE_NEWNS)` affects only the calling thread), so every mount
//! sandlot makes is invisible to the host and disappears with the process;
//! and it is the parent *thread* of every init, which matters because the
//! parent-death signal fires when the parent thread exits — a caller's
//! short-lived thread must never be that parent.
//!
//! It also has a descriptor table of its own, so that sandbox children
//! inherit a handful of descriptors rather than every one the host holds;
//! descriptors cross between the tables through [`handoff`].
//!
//! [`launch`] does steps 4–6 and 8–10 of the parent sequence, whose one
//! function is `api::create::create` (the numbers are the same there and
//! in ARCHITECTURE.md); the child's sequence is in [`child`].

mod child;
mod handoff;
mod plan;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use sandlot_proto::GO_BYTES;
use sandlot_rootfs::Template;

pub(crate) use plan::Rlimit;
pub use plan::Step;
use plan::{ChildPlan, PlanInputs};

use handoff::Handoff;

use crate::kernel::caps::CapPlan;
use crate::kernel::error::{KernelError, KernelResult};
use crate::kernel::mounts::Scratch;
use crate::kernel::net::NetNamespace;
use crate::kernel::seccomp::CompiledSeccomp;
use crate::kernel::userns::{self, IdRange};
use crate::sys::{clone, fd, process};

/// Namespaces every sandbox starts in. The child adds the network and IPC
/// namespaces itself while the host writes its id maps (the network one
/// costs ~0.35 ms, which then overlaps with the host's part), and the
/// cgroup namespace once the host has placed it in its cgroups. A sandbox
/// with a network is cloned inside the namespace the host made for it
/// instead, and adds only IPC.
const NAMESPACES: libc::c_int =
    libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS;

pub(crate) struct SpawnerConfig {
    pub scratch_dir: PathBuf,
    pub range: IdRange,
    /// How long a template's layers stay attached once no sandbox of it
    /// lives (the next create of it skips attaching them).
    pub template_linger: Duration,
}

/// The job id the init memfd travels under on the descriptor channel
/// (sandbox jobs count from 1).
const INIT_HANDOFF: u64 = 0;

/// Everything needed to build one sandbox.
pub(crate) struct CreateJob {
    pub id: String,
    pub hostname: String,
    pub template: Arc<Template>,
    pub disk_bytes: u64,
    pub rlimits: Vec<Rlimit>,
    pub caps: CapPlan,
    pub seccomp: CompiledSeccomp,
}

/// A launch submitted to the spawner thread. The caller makes the
/// sandbox's cgroups while the spawner assembles the root, then hands over
/// the cgroup v2 directory ([`PendingLaunch::cgroups_ready`]) or drops the
/// launch (the spawner then abandons it before any clone), and waits.
pub(crate) struct PendingLaunch {
    id: u64,
    handoff: Arc<Handoff>,
    cgroups: Option<Sender<CloneInputs>>,
    reply: Receiver<KernelResult<i32>>,
    /// For the lease, once launched.
    layers: Vec<PathBuf>,
    jobs: Sender<Job>,
}

/// What the caller hands the spawner for the clone, besides the
/// descriptors (which cross through the handoff, in this order).
struct CloneInputs {
    v1_tasks: Vec<PathBuf>,
    /// A cgroup v2 directory to clone into comes first.
    v2_dir: bool,
    /// Then the network namespace the host made for the sandbox.
    netns: bool,
}

impl PendingLaunch {
    /// The cgroups exist; `v2_dir` (for `CLONE_INTO_CGROUP`) is `None`
    /// without a v2 hierarchy; the child joins the v1 ones through their
    /// `v1_tasks` files itself. `netns`: the network namespace the host
    /// made for the sandbox (`None`: the child makes its own, loopback
    /// only).
    pub fn cgroups_ready(
        &mut self,
        v2_dir: Option<BorrowedFd<'_>>,
        v1_tasks: Vec<PathBuf>,
        netns: Option<BorrowedFd<'_>>,
    ) -> KernelResult<()> {
        let inputs = CloneInputs {
            v1_tasks,
            v2_dir: v2_dir.is_some(),
            netns: netns.is_some(),
        };
        let fds: Vec<BorrowedFd<'_>> = v2_dir.into_iter().chain(netns).collect();
        self.handoff
            .send(self.id, &fds)
            .map_err(|e| KernelError::setup("hand the cgroup to the spawner", e))?;
        if let Some(tx) = self.cgroups.take() {
            let _ = tx.send(inputs);
        }
        Ok(())
    }

    /// Waits for the spawner's part of setup (steps 4–6 and 8–9).
    pub fn wait(mut self) -> KernelResult<Launched> {
        // Not handed over: abandoned.
        self.cgroups.take();
        let pid = self
            .reply
            .recv()
            .map_err(|_| KernelError::RuntimeShutDown)??;
        // The spawner counted this sandbox as a user of its template: from
        // here any failure gives that back.
        let lease = TemplateLease {
            layers: std::mem::take(&mut self.layers),
            jobs: self.jobs.clone(),
        };
        let mut fds = self
            .handoff
            .take(self.id)
            .map_err(|e| KernelError::setup("take the sandbox's descriptors from the spawner", e))?
            .into_iter();
        match (fds.next(), fds.next(), fds.next()) {
            (Some(control), Some(pidfd), Some(rw)) => Ok(Launched {
                pid,
                pidfd,
                control,
                rw,
                lease,
            }),
            _ => Err(KernelError::setup(
                "take the sandbox's descriptors from the spawner",
                nix::errno::Errno::EPROTO,
            )),
        }
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
    /// Keeps the template's layers attached while the sandbox lives.
    pub lease: TemplateLease,
}

/// A live sandbox's hold on its template's attached layers: dropping it
/// tells the spawner, which detaches them once no sandbox of the template
/// is left (after the linger).
pub(crate) struct TemplateLease {
    layers: Vec<PathBuf>,
    jobs: Sender<Job>,
}

impl Drop for TemplateLease {
    fn drop(&mut self) {
        // After a shutdown nobody is left to tell.
        let _ = self.jobs.send(Job::Release {
            layers: std::mem::take(&mut self.layers),
        });
    }
}

enum Job {
    /// A sandbox of the template with these layers ended.
    Release {
        layers: Vec<PathBuf>,
    },
    Stop,
    Create {
        id: u64,
        job: Box<CreateJob>,
        /// Says the cgroup directory was handed over; hung up: abandon.
        cgroups: Receiver<CloneInputs>,
        reply: Sender<KernelResult<i32>>,
    },
}

pub(crate) struct Spawner {
    jobs: std::sync::Mutex<Option<Sender<Job>>>,
    thread: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
    /// The process's end of the descriptor channel.
    handoff: Arc<Handoff>,
    next_id: AtomicU64,
}

/// A spawner thread setting itself up (private mount namespace, idmap user
/// namespace, scratch space) while the runtime does its own start-up work
/// on the caller's thread; [`StartingSpawner::ready`] hands it the init
/// memfd and waits. Dropping it stops the thread.
pub(crate) struct StartingSpawner {
    jobs: Sender<Job>,
    thread: thread::JoinHandle<()>,
    handoff: Handoff,
    ready: Receiver<KernelResult<()>>,
}

impl StartingSpawner {
    /// Sends the init memfd over and waits until the spawner is ready.
    pub fn ready(self, init: BorrowedFd<'_>) -> KernelResult<Spawner> {
        let sent = self
            .handoff
            .send(INIT_HANDOFF, &[init])
            .map_err(|e| KernelError::setup("hand the init memfd to the spawner", e));
        // A send fails only when the thread already gave up: its own error
        // says why, so it comes first.
        let result = self
            .ready
            .recv()
            .unwrap_or(Err(KernelError::RuntimeShutDown))
            .and(sent);
        match result {
            Ok(()) => Ok(Spawner {
                jobs: std::sync::Mutex::new(Some(self.jobs)),
                thread: std::sync::Mutex::new(Some(self.thread)),
                handoff: Arc::new(self.handoff),
                next_id: AtomicU64::new(1),
            }),
            Err(e) => {
                drop(self.jobs);
                drop(self.handoff);
                let _ = self.thread.join();
                Err(e)
            }
        }
    }
}

impl Spawner {
    /// Starts the spawner thread; it sets itself up while the caller goes
    /// on (see [`StartingSpawner`]).
    pub fn start(config: SpawnerConfig) -> KernelResult<StartingSpawner> {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = bounded(1);
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| KernelError::setup("create the spawner's descriptor channel", e))?;
        let theirs_raw = theirs.as_raw_fd();
        let ours_raw = ours.as_raw_fd();
        let (table_tx, table_rx) = bounded(1);
        let thread = thread::Builder::new()
            .name("sandlot-spawner".into())
            .spawn(move || thread_main(config, theirs, ours_raw, table_tx, ready_tx, jobs_rx))
            .map_err(|e| KernelError::io("start the spawner thread", e))?;
        // The thread copies the descriptor table first thing; only then may
        // this copy of its end be closed.
        if table_rx.recv() == Ok(true) {
            // The thread's copy lives in its own table; this one is ours
            // to close (no OwnedFd of this table owns it).
            let _ = nix::unistd::close(theirs_raw);
        }
        Ok(StartingSpawner {
            jobs: jobs_tx,
            thread,
            handoff: Handoff::new(ours),
            ready: ready_rx,
        })
    }

    /// Starts the parent's part of setup for one sandbox on the spawner
    /// thread (see [`PendingLaunch`]).
    pub fn submit(&self, job: CreateJob) -> KernelResult<PendingLaunch> {
        let (reply_tx, reply_rx) = bounded(1);
        let (cgroups_tx, cgroups_rx) = bounded(1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let layers = job.template.layers.clone();
        let jobs = self
            .jobs
            .lock()
            .unwrap()
            .clone()
            .ok_or(KernelError::RuntimeShutDown)?;
        jobs.send(Job::Create {
            id,
            job: Box::new(job),
            cgroups: cgroups_rx,
            reply: reply_tx,
        })
        .map_err(|_| KernelError::RuntimeShutDown)?;
        Ok(PendingLaunch {
            id,
            handoff: self.handoff.clone(),
            cgroups: Some(cgroups_tx),
            reply: reply_rx,
            layers,
            jobs,
        })
    }

    /// Stops the thread. Its exit fires the parent-death signal of every
    /// init it started, so call this only after destroying the sandboxes.
    pub fn stop(&self) {
        if let Some(jobs) = self.jobs.lock().unwrap().take() {
            let _ = jobs.send(Job::Stop);
        }
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

/// `ready` carries whether the thread got a descriptor table of its own
/// (then the caller closes its copy of `channel`) and the set-up result.
fn thread_main(
    config: SpawnerConfig,
    channel: OwnedFd,
    process_end: RawFd,
    own_table: Sender<bool>,
    ready: Sender<KernelResult<()>>,
    jobs: Receiver<Job>,
) {
    // A descriptor table of our own, holding only stdio (the host's, for
    // anything that reports on stderr), our end of the descriptor channel
    // (see `handoff`) and, once it arrives over it, the init memfd.
    if let Err(e) = unshare(CloneFlags::CLONE_FILES) {
        let _ = own_table.send(false);
        let _ = ready.send(Err(KernelError::setup(
            "unshare the spawner's descriptors",
            e,
        )));
        return;
    }
    let _ = own_table.send(true);
    let keep = [0, 1, 2, channel.as_raw_fd()];
    if let Err(e) = fd::close_all_except(&keep) {
        let _ = ready.send(Err(KernelError::setup(
            "close the spawner's descriptors",
            e,
        )));
        return;
    }
    debug_assert!(!keep.contains(&process_end));
    let handoff = Handoff::new(channel);
    let setup = enter_private_namespace(&config).and_then(|scratch| {
        // Where the thread returns after cloning a sandbox inside the
        // network namespace the host made for it.
        let home = NetNamespace::current()?;
        // The init memfd, written by the caller meanwhile.
        let init = handoff
            .take(INIT_HANDOFF)
            .map_err(|e| KernelError::setup("receive the init memfd", e))?
            .pop()
            .ok_or_else(|| {
                KernelError::setup("receive the init memfd", nix::errno::Errno::EBADF)
            })?;
        Ok((scratch, init, home))
    });
    let (mut scratch, init, home) = match setup {
        Ok(done) => {
            let _ = ready.send(Ok(()));
            done
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // When to look for templates nobody uses any more.
    let mut recheck: Option<Instant> = None;
    loop {
        let job = match recheck {
            None => jobs.recv().ok(),
            Some(at) => match jobs.recv_deadline(at) {
                Ok(job) => Some(job),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    recheck = scratch.detach_unused(config.template_linger);
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
            },
        };
        match job {
            None | Some(Job::Stop) => return,
            Some(Job::Release { layers }) => {
                scratch.release(&layers);
                recheck = scratch.detach_unused(config.template_linger);
            }
            Some(Job::Create {
                id,
                job,
                cgroups,
                reply,
            }) => {
                let launched = launch(
                    &mut scratch,
                    init.as_raw_fd(),
                    &home,
                    &job,
                    id,
                    &cgroups,
                    &handoff,
                );
                if launched.is_err() && cgroups.recv().is_ok() {
                    // Failed before taking the cgroup the caller handed
                    // over: take it now, or it would stay in the channel.
                    let _ = handoff.take(id);
                }
                let result = launched.and_then(|child| hand_over(&handoff, id, child));
                if result.is_ok() {
                    // Released by the caller's lease (see `PendingLaunch::wait`).
                    scratch.acquire(&job.template);
                }
                let _ = reply.send(result);
                // 10. The child has its own copy of the mounts: free the
                //     mount points for the next sandbox. After the reply, so
                //     the caller writes id maps meanwhile (saves ~85 µs of
                //     create latency; the umounts need an RCU grace period).
                scratch.detach();
                recheck = scratch.detach_unused(config.template_linger);
            }
        }
    }
}

/// The spawner's side of a launched child, before its descriptors cross to
/// the process's table.
struct Child {
    pid: i32,
    pidfd: OwnedFd,
    control: OwnedFd,
    rw: OwnedFd,
}

/// Sends a launched child's descriptors to the process's table (they are
/// closed in ours on return); kills the child if that fails.
fn hand_over(handoff: &Handoff, id: u64, launched: Child) -> KernelResult<i32> {
    let fds = [
        launched.control.as_fd(),
        launched.pidfd.as_fd(),
        launched.rw.as_fd(),
    ];
    if let Err(e) = handoff.send(id, &fds) {
        let _ = process::kill_and_reap(launched.pidfd.as_fd());
        return Err(KernelError::setup("hand the sandbox's descriptors over", e));
    }
    Ok(launched.pid)
}

/// This thread's own mount namespace, a slave of the host's (host mounts
/// and unmounts still reach us; ours never reach the host), and the
/// scratch space inside it.
fn enter_private_namespace(config: &SpawnerConfig) -> KernelResult<Scratch> {
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| KernelError::setup("unshare the spawner's mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| KernelError::setup("make / a recursive slave in the spawner's namespace", e))?;
    let idmap = userns::idmap_namespace(&config.range)?;
    Scratch::new(&config.scratch_dir, config.range, idmap)
}

/// Steps 4–6 and 8–9 of the parent sequence on the spawner thread (step
/// 10 follows the reply, in `thread_main`; step 7 is the caller's).
fn launch(
    scratch: &mut Scratch,
    init_fd: RawFd,
    home: &NetNamespace,
    job: &CreateJob,
    id: u64,
    cgroups: &Receiver<CloneInputs>,
    handoff: &Handoff,
) -> KernelResult<Child> {
    // 4. Attach the template's idmapped layers (first use only).
    scratch.prepare(&job.template)?;
    // 5. Assemble the root: writable tmpfs, overlay, host binds, /dev.
    let rw = scratch.assemble(&job.template, job.disk_bytes)?;
    // Every failure from here detaches what step 5 mounted.
    let result = clone_child(scratch, init_fd, home, job, id, cgroups, handoff);
    match result {
        Ok((pid, pidfd, control)) => Ok(Child {
            pid,
            pidfd,
            control,
            rw,
        }),
        Err(e) => {
            scratch.detach();
            Err(e)
        }
    }
}

/// Steps 6 and 8–9 (and the caller's 7): the control socket, the child's
/// plan, the clone. Returns the child's pid, pidfd and the control
/// socket's host end.
fn clone_child(
    scratch: &Scratch,
    init_fd: RawFd,
    home: &NetNamespace,
    job: &CreateJob,
    id: u64,
    cgroups: &Receiver<CloneInputs>,
    handoff: &Handoff,
) -> KernelResult<(i32, OwnedFd, OwnedFd)> {
    // 6. The control socket; the child's end becomes init's fd 3.
    let (host_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| KernelError::setup("create the control socket", e))?;
    // (7.) What the caller made meanwhile: the cgroups (the v1 `tasks`
    //    files the child joins itself, the v2 dir to clone into) and, for a
    //    sandbox with a network, the namespace the host made for it.
    let inputs = cgroups.recv().map_err(|_| {
        KernelError::setup(
            "wait for the sandbox's cgroups",
            nix::errno::Errno::ECANCELED,
        )
    })?;
    let mut fds = handoff
        .take(id)
        .map_err(|e| KernelError::setup("take the sandbox's cgroup from the caller", e))?
        .into_iter();
    let cgroup_dir = if inputs.v2_dir { fds.next() } else { None };
    let netns = match (inputs.netns, fds.next()) {
        (false, _) => None,
        (true, Some(fd)) => Some(NetNamespace::from_fd(fd)?),
        (true, None) => {
            return Err(KernelError::setup(
                "take the sandbox's network namespace from the caller",
                nix::errno::Errno::EPROTO,
            ))
        }
    };
    // 8. Everything the child needs, allocated now.
    let plan = ChildPlan::new(PlanInputs {
        control: child_end.as_raw_fd(),
        host_end: host_end.as_raw_fd(),
        init_fd,
        hostname: &job.hostname,
        root: scratch.root_path(),
        rlimits: job.rlimits.clone(),
        cgroup_tasks: &inputs.v1_tasks,
        sandbox_id: &job.id,
        caps: job.caps,
        seccomp: job.seccomp.clone(),
        host_network: netns.is_some(),
    })?;
    // 9. One clone with every namespace, straight into the sandbox's
    //    cgroup v2 directory when there is one; the child waits for "go".
    //    A sandbox with a network is cloned from inside its namespace
    //    (this thread enters it for the clone only): a child in a new user
    //    namespace could not join a namespace of the host's user namespace
    //    itself (EPERM).
    let cgroup = cgroup_dir.as_ref().map(|fd| fd.as_fd());
    let child = {
        let _inside = netns.as_ref().map(|ns| ns.enter(home)).transpose()?;
        clone::fork_into(NAMESPACES as u64, cgroup, || -> std::convert::Infallible {
            child::run(&plan)
        })
    };
    // 10. Detaching the mounts is left to `thread_main`, after the reply.
    let child = child.map_err(|e| KernelError::setup("clone the sandbox", e))?;
    Ok((child.pid, child.pidfd, host_end))
}

/// Step 12 of the parent sequence (`api/create.rs`): "go" to a child
/// whose id maps are written.
pub(crate) fn send_go(control: BorrowedFd<'_>) -> KernelResult<()> {
    fd::send_with_fds(control, &GO_BYTES, &[], false)
        .map_err(|e| KernelError::setup("send go to the sandbox", e))
}
