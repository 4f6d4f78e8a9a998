//! The child's side of the setup sequence, from clone to exec of init.
//!
//! Runs in a copy of a multithreaded host: only syscalls, no allocation, no
//! locks, no unwinding. Any failure sends `(step, errno)` on the control
//! socket and exits; success ends in `execveat` of init, which closes our
//! copy of the memfd and keeps the control socket at fd 3.
//!
//! The numbered steps mirror ARCHITECTURE.md ("child sequence").

use std::ffi::CStr;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root};
use sandlot_proto::{encode_setup_failed, CONTROL_FD, GO_BYTES};

use super::plan::{ChildPlan, MaskKind, Step, DEVPTS_OPTIONS, DEV_NULL, EMPTY_DIR_OPTIONS};
use crate::sys::{fd, process};

/// Reports `step`'s failure to the host and exits. Never returns.
fn fail(control: RawFd, step: Step, errno: Errno) -> ! {
    let frame = encode_setup_failed(step as u32, errno as i32);
    let _ = fd::send_with_fds(fd::borrow(control), &frame, &[], false);
    process::exit_now(1)
}

fn try_step(control: RawFd, step: Step, result: Result<(), Errno>) {
    if let Err(errno) = result {
        fail(control, step, errno);
    }
}

const NO_DATA: Option<&CStr> = None;

/// The child's whole life. Steps in order; see ARCHITECTURE.md.
pub fn run(plan: &ChildPlan) -> ! {
    let ctl = plan.control;
    // 0. Die with the spawner thread, from the first instruction on. Our
    //    copy of the host's end would hide the host going away.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let _ = nix::unistd::close(plan.host_end);

    // 1. Join the sandbox's v1 cgroups (v2: clone3 already placed us):
    //    "0" moves only the writing thread — all of us — and so skips the
    //    machine-wide lock (and its RCU grace period, 6–15 ms after idle)
    //    that moving another process takes. First, so that everything the
    //    sandbox makes from here on is charged to it. We are still host
    //    root here, the owner of those files.
    for tasks in &plan.cgroup_tasks {
        try_step(ctl, Step::JoinCgroups, process::write_file(tasks, b"0"));
    }

    // 2. The network and IPC namespaces, made here rather than by clone3:
    //    the network one is the costliest of all (~0.35 ms), and here it is
    //    made while the host writes our id maps and cgroups, instead of
    //    before. Our full capabilities in the new user namespace are enough,
    //    ids mapped or not; both are owned by that namespace as before.
    //    With a network, we were cloned inside the namespace the host made
    //    (owned by the host's user namespace, so root here has no
    //    CAP_NET_ADMIN over it): we keep that one.
    let namespaces = if plan.host_network {
        CloneFlags::CLONE_NEWIPC
    } else {
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC
    };
    try_step(ctl, Step::Namespaces, unshare(namespaces));

    // 3-4. Identity and the network namespace's only interface (the host
    //    set up its own namespace's `lo`; we could not, lacking
    //    CAP_NET_ADMIN there).
    try_step(ctl, Step::Hostname, process::set_hostname(&plan.hostname));
    if !plan.host_network {
        try_step(ctl, Step::Loopback, process::loopback_up());
    }

    // 5. Wait until the host wrote our id maps.
    //    EOF means the host died before that: just go.
    let mut go = [0u8; 1];
    match nix::unistd::read(fd::borrow(ctl), &mut go) {
        Ok(1) if go == GO_BYTES => {}
        Ok(0) => process::exit_now(1),
        Ok(_) => fail(ctl, Step::WaitGo, Errno::EPROTO),
        Err(e) => fail(ctl, Step::WaitGo, e),
    }

    // 6. Become root of the new user namespace, with no supplementary
    //    groups left over from the host (host root's groups would otherwise
    //    follow us in).
    try_step(ctl, Step::SetIds, process::become_namespace_root());

    // 7. Changing ids cleared the parent-death signal: arm it again, then
    //    check the host did not go away in between (its end of the control
    //    socket would be closed).
    try_step(
        ctl,
        Step::ParentDeath,
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL),
    );
    if process::peer_hung_up(fd::borrow(ctl)) {
        process::exit_now(1);
    }

    // 8. Our own cgroup namespace, rooted at the cgroups we are in (step 1
    //    and clone3): the sandbox sees "/" and no host path.
    try_step(
        ctl,
        Step::CgroupNamespace,
        unshare(CloneFlags::CLONE_NEWCGROUP),
    );

    // 9. No mount event of ours may propagate anywhere.
    try_step(
        ctl,
        Step::MakePrivate,
        mount(
            NO_DATA,
            c"/",
            NO_DATA,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            NO_DATA,
        ),
    );

    // 10. The root assembled by the host is locked in this less privileged
    //    namespace; pivot_root rejects a locked root, a fresh bind is not.
    try_step(
        ctl,
        Step::BindRoot,
        mount(
            Some(plan.root.as_c_str()),
            plan.root.as_c_str(),
            NO_DATA,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NO_DATA,
        ),
    );

    // 11. A /proc of our pid namespace. Must happen while the host's /proc
    //    is still visible: the kernel refuses a new proc mount in a
    //    namespace that has no fully visible one.
    try_step(
        ctl,
        Step::MountProc,
        mount(
            Some(c"proc"),
            plan.proc_dir.as_c_str(),
            Some(c"proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            NO_DATA,
        ),
    );

    // 12. Our own pty namespace.
    try_step(
        ctl,
        Step::MountDevpts,
        mount(
            Some(c"devpts"),
            plan.devpts_dir.as_c_str(),
            Some(c"devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(DEVPTS_OPTIONS),
        ),
    );

    // 13-14. Switch to the new root and drop every path to the host's.
    try_step(ctl, Step::PivotRoot, chdir(plan.root.as_c_str()));
    try_step(ctl, Step::PivotRoot, pivot_root(c".", c"."));
    try_step(
        ctl,
        Step::DetachOldRoot,
        umount2(c".", MntFlags::MNT_DETACH),
    );
    try_step(ctl, Step::DetachOldRoot, chdir(c"/"));

    // 15. Hide kernel knobs, freeze the rest of /proc's writable parts.
    for &(path, kind) in plan.masks {
        if let Err(errno) = mask(path, kind) {
            // A knob this kernel does not have needs no mask.
            if errno != Errno::ENOENT {
                fail(ctl, Step::MaskProc, errno);
            }
        }
    }

    // 16. Descriptors: /dev/null on 0-2, the control socket on 3, the init
    //     memfd on 4 (close-on-exec), nothing else. The host's stdio and
    //     every stray descriptor it had are gone after this (a leaked host
    //     directory descriptor is the runc CVE-2024-21626 escape: SECURITY.md
    //     S15, tests/escapes.rs s15_*). Before the
    //     rlimits: a host with more descriptors open than the sandbox's
    //     RLIMIT_NOFILE would otherwise make the dups here fail (EMFILE).
    let ctl = place_descriptors(plan);

    // 17. Resource limits, inherited by init and every command.
    for &(resource, soft, hard) in &plan.rlimits {
        try_step(
            ctl,
            Step::Rlimits,
            process::set_rlimit(resource, soft, hard),
        );
    }

    // 18. Capabilities down to the documented set (bounding, permitted,
    //     effective, inheritable; ambient cleared). Everything needing
    //     CAP_SYS_ADMIN is done by now.
    try_step(
        ctl,
        Step::Capabilities,
        plan.caps.apply().map_err(Errno::from_raw),
    );
    // 19. no_new_privs: exec can no longer grant privileges (setuid bits,
    //     file capabilities), and seccomp needs no CAP_SYS_ADMIN.
    try_step(
        ctl,
        Step::NoNewPrivs,
        crate::kernel::caps::set_no_new_privs().map_err(Errno::from_raw),
    );
    // 20. seccomp, the last step before exec: init is the first program
    //     that runs under the filter.
    try_step(
        ctl,
        Step::Seccomp,
        plan.seccomp.install().map_err(Errno::from_raw),
    );

    // 21. Become init.
    let errno = process::exec_fd(INIT_FD, &plan.init_argv, &plan.init_envp);
    fail(ctl, Step::ExecInit, errno)
}

const INIT_FD: RawFd = 4;

fn place_descriptors(plan: &ChildPlan) -> RawFd {
    let ctl = plan.control;
    let step = |r: Result<RawFd, Errno>| r.unwrap_or_else(|e| fail(ctl, Step::Descriptors, e));
    let null = step(fd::open(DEV_NULL, libc::O_RDWR));
    for target in 0..3 {
        step(fd::dup_to(null, target, false).map(|()| target));
    }
    // Move both keepers above the target numbers first, so that placing one
    // cannot overwrite the other.
    let ctl_high = step(fd::dup_above(ctl, 10));
    let init_high = step(fd::dup_above(plan.init_fd, 10));
    step(fd::dup_to(ctl_high, CONTROL_FD, false).map(|()| CONTROL_FD));
    step(fd::dup_to(init_high, INIT_FD, true).map(|()| INIT_FD));
    if let Err(e) = fd::close_from(INIT_FD as u32 + 1) {
        fail(CONTROL_FD, Step::Descriptors, e);
    }
    CONTROL_FD
}

fn mask(path: &CStr, kind: MaskKind) -> Result<(), Errno> {
    match kind {
        MaskKind::Null => mount(Some(DEV_NULL), path, NO_DATA, MsFlags::MS_BIND, NO_DATA),
        MaskKind::EmptyDir => mount(
            Some(c"tmpfs"),
            path,
            Some(c"tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(EMPTY_DIR_OPTIONS),
        ),
        MaskKind::ReadOnly => {
            mount(
                Some(path),
                path,
                NO_DATA,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                NO_DATA,
            )?;
            mount(
                NO_DATA,
                path,
                NO_DATA,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                NO_DATA,
            )
        }
    }
}
