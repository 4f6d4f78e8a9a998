//! Everything the child needs, computed before the clone: the child of a
//! multithreaded host may not allocate, so every path is a ready CString,
//! every pointer array is built, and the child only makes syscalls.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::kernel::caps::CapPlan;
use crate::kernel::error::{KernelError, KernelResult};
use crate::kernel::seccomp::CompiledSeccomp;

/// The child's setup steps, in order. The number travels in
/// `Event::SetupFailed` so the host can name the failing step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    JoinCgroups = 1,
    Namespaces,
    Hostname,
    Loopback,
    WaitGo,
    SetIds,
    ParentDeath,
    CgroupNamespace,
    MakePrivate,
    BindRoot,
    MountProc,
    MountDevpts,
    PivotRoot,
    DetachOldRoot,
    MaskProc,
    Descriptors,
    Rlimits,
    Capabilities,
    NoNewPrivs,
    Seccomp,
    ExecInit,
}

impl Step {
    const ALL: [Step; 21] = [
        Step::JoinCgroups,
        Step::Namespaces,
        Step::Hostname,
        Step::Loopback,
        Step::WaitGo,
        Step::SetIds,
        Step::ParentDeath,
        Step::CgroupNamespace,
        Step::MakePrivate,
        Step::BindRoot,
        Step::MountProc,
        Step::MountDevpts,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::MaskProc,
        Step::Descriptors,
        Step::Rlimits,
        Step::Capabilities,
        Step::NoNewPrivs,
        Step::Seccomp,
        Step::ExecInit,
    ];

    pub fn from_code(code: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == code)
    }

    /// What the step does, for error messages ("pivot_root into the
    /// sandbox root: EINVAL").
    pub fn describe(self) -> &'static str {
        match self {
            Step::JoinCgroups => "join the sandbox's cgroups",
            Step::Namespaces => "unshare the network (unless the host made it) and IPC namespaces",
            Step::WaitGo => "wait for the host's go-ahead",
            Step::SetIds => "become root of the user namespace",
            Step::ParentDeath => "arm the parent-death signal",
            Step::CgroupNamespace => "unshare the cgroup namespace",
            Step::Hostname => "set the hostname",
            Step::Loopback => "bring up the loopback interface",
            Step::MakePrivate => "make / recursively private",
            Step::BindRoot => "bind the sandbox root onto itself",
            Step::MountProc => "mount /proc",
            Step::MountDevpts => "mount /dev/pts",
            Step::PivotRoot => "pivot_root into the sandbox root",
            Step::DetachOldRoot => "detach the old root",
            Step::MaskProc => "mask /proc",
            Step::Rlimits => "set resource limits",
            Step::Descriptors => "close inherited descriptors",
            Step::Capabilities => "drop capabilities",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Seccomp => "install the seccomp filter",
            Step::ExecInit => "execute init",
        }
    }
}

/// How a /proc path is hidden or frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// Bind /dev/null over a file.
    Null,
    /// Mount an empty read-only tmpfs over a directory.
    EmptyDir,
    /// Bind the path onto itself read-only.
    ReadOnly,
}

/// Kernel knobs hidden from or frozen in the sandbox (the set Docker and
/// crun mask; SECURITY.md S6). Without the `/proc/sys` entry, root of the
/// sandbox's own IPC namespace could write `kernel/shmmax` and friends
/// (tests/escapes.rs s6_* goes red). No sysfs is mounted at all, so no
/// cgroup `release_agent` (CVE-2022-0492) is in reach (S7).
pub const PROC_MASKS: &[(&CStr, MaskKind)] = &[
    (c"/proc/kcore", MaskKind::Null),
    (c"/proc/keys", MaskKind::Null),
    (c"/proc/timer_list", MaskKind::Null),
    (c"/proc/sched_debug", MaskKind::Null),
    (c"/proc/latency_stats", MaskKind::Null),
    (c"/proc/timer_stats", MaskKind::Null),
    (c"/proc/acpi", MaskKind::EmptyDir),
    (c"/proc/scsi", MaskKind::EmptyDir),
    (c"/proc/asound", MaskKind::EmptyDir),
    (c"/proc/sys", MaskKind::ReadOnly),
    (c"/proc/irq", MaskKind::ReadOnly),
    (c"/proc/bus", MaskKind::ReadOnly),
    (c"/proc/fs", MaskKind::ReadOnly),
    (c"/proc/sysrq-trigger", MaskKind::ReadOnly),
];

/// The [`PROC_MASKS`] this kernel has (the sandbox's /proc is the same
/// kernel's): looked up once per process, so that no create spends a
/// failing mount on a knob that does not exist.
pub fn present_proc_masks() -> &'static [(&'static CStr, MaskKind)] {
    static PRESENT: std::sync::OnceLock<Vec<(&'static CStr, MaskKind)>> =
        std::sync::OnceLock::new();
    PRESENT.get_or_init(|| {
        PROC_MASKS
            .iter()
            .copied()
            .filter(|(path, _)| {
                std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(path.to_bytes())).is_ok()
            })
            .collect()
    })
}

/// One resource limit: (resource, soft, hard).
pub type Rlimit = (libc::__rlimit_resource_t, u64, u64);

pub struct ChildPlan {
    /// The control socket (the child's end), at whatever number it has.
    pub control: RawFd,
    /// The host's end, which the child must close first: while the child
    /// holds a copy, it could not notice the host going away.
    pub host_end: RawFd,
    /// The sealed memfd holding init.
    pub init_fd: RawFd,
    pub hostname: CString,
    /// The merged root in the spawner's namespace.
    pub root: CString,
    pub proc_dir: CString,
    pub devpts_dir: CString,
    pub masks: &'static [(&'static CStr, MaskKind)],
    /// The `tasks` files of the sandbox's v1 cgroups: the child writes
    /// "0" to each (see `SandboxCgroup::v1_task_files`).
    pub cgroup_tasks: Vec<CString>,
    pub rlimits: Vec<Rlimit>,
    /// Capability sets of init and every command (computed by the parent).
    pub caps: CapPlan,
    /// Installed last before exec.
    pub seccomp: CompiledSeccomp,
    /// The child was cloned inside a network namespace the host made (and
    /// set up): it makes no network namespace and brings up no `lo`.
    pub host_network: bool,
    _init_args: Vec<CString>,
    /// NULL-terminated argv of init.
    pub init_argv: Vec<*const libc::c_char>,
    /// NULL-terminated (empty) environment of init.
    pub init_envp: Vec<*const libc::c_char>,
}

pub const DEVPTS_OPTIONS: &CStr = c"newinstance,ptmxmode=0666,mode=0620,gid=5";
pub const DEV_NULL: &CStr = c"/dev/null";
pub const EMPTY_DIR_OPTIONS: &CStr = c"size=0,mode=0555";

fn cstr(text: &str) -> KernelResult<CString> {
    CString::new(text)
        .map_err(|_| KernelError::invalid("path", format!("{text:?} contains a NUL byte")))
}

/// The per-sandbox inputs of a plan.
pub struct PlanInputs<'a> {
    pub control: RawFd,
    pub host_end: RawFd,
    pub init_fd: RawFd,
    pub hostname: &'a str,
    pub root: &'a Path,
    pub rlimits: Vec<Rlimit>,
    pub cgroup_tasks: &'a [std::path::PathBuf],
    pub sandbox_id: &'a str,
    pub caps: CapPlan,
    pub seccomp: CompiledSeccomp,
    pub host_network: bool,
}

impl ChildPlan {
    pub fn new(inputs: PlanInputs<'_>) -> KernelResult<ChildPlan> {
        let root_text = inputs
            .root
            .to_str()
            .ok_or_else(|| KernelError::invalid("scratch_dir", "must be valid UTF-8"))?;
        let init_args = vec![cstr("sandlot-init")?, cstr(inputs.sandbox_id)?];
        let mut init_argv: Vec<*const libc::c_char> =
            init_args.iter().map(|a| a.as_ptr()).collect();
        init_argv.push(std::ptr::null());
        Ok(ChildPlan {
            control: inputs.control,
            host_end: inputs.host_end,
            init_fd: inputs.init_fd,
            hostname: cstr(inputs.hostname)?,
            root: cstr(root_text)?,
            proc_dir: cstr(&format!("{root_text}/proc"))?,
            devpts_dir: cstr(&format!("{root_text}/dev/pts"))?,
            masks: present_proc_masks(),
            cgroup_tasks: inputs
                .cgroup_tasks
                .iter()
                .map(|p| {
                    p.to_str()
                        .ok_or_else(|| KernelError::invalid("cgroup", "path is not UTF-8"))
                        .and_then(cstr)
                })
                .collect::<KernelResult<_>>()?,
            rlimits: inputs.rlimits,
            caps: inputs.caps,
            seccomp: inputs.seccomp,
            host_network: inputs.host_network,
            _init_args: init_args,
            init_argv,
            init_envp: vec![std::ptr::null()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_codes_round_trip_and_are_described() {
        for step in Step::ALL {
            assert_eq!(Step::from_code(step as u32), Some(step));
            assert!(!step.describe().is_empty());
        }
        assert_eq!(Step::from_code(0), None);
        assert_eq!(Step::from_code(999), None);
    }

    #[test]
    fn plan_pointer_arrays_are_null_terminated() {
        let plan = ChildPlan::new(PlanInputs {
            control: 5,
            host_end: 7,
            init_fd: 6,
            hostname: "sb",
            root: Path::new("/run/sandlot/root"),
            rlimits: vec![],
            cgroup_tasks: &[],
            sandbox_id: "abc",
            caps: CapPlan::sandbox_default().unwrap(),
            seccomp: crate::kernel::seccomp::SeccompProfile::default()
                .compile_native()
                .unwrap(),
            host_network: false,
        })
        .unwrap();
        assert_eq!(plan.init_argv.len(), 3);
        assert!(plan.init_argv[2].is_null());
        assert_eq!(plan.init_envp, vec![std::ptr::null()]);
        assert_eq!(plan.proc_dir.as_bytes(), b"/run/sandlot/root/proc");
    }
}
