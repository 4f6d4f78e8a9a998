//! The seccomp profile of a sandbox: policy as reviewed data, compiled to
//! BPF once per runtime.
//!
//! # Shape
//!
//! The default profile ([`DEFAULT_RULES`]) is a deny list over a default
//! *allow*: each row names a system call, optionally a condition on its
//! arguments, the action (an errno) and why. Rows are grouped by action into
//! one BPF program each (seccompiler allows one match action per filter);
//! the programs are installed in the order their action first appears in
//! the table:
//!
//! 1. `EPERM` for everything denied outright, preceded on x86_64 by a guard
//!    that answers `ENOSYS` to any system call number ≥ `0x4000_0000` (the
//!    x32 ABI bit, which seccompiler does not check: on a kernel built with
//!    x32 a default-allow list could otherwise be bypassed through the x32
//!    numbers; `ENOSYS` is what a kernel without x32 answers, so user code
//!    sees the same thing on every host);
//! 2. `ENOSYS` for `clone3` and `sched_setattr`, installed *last*: between
//!    two errno results the kernel keeps the one from the filter installed
//!    last, so this program's errno wins.
//!
//! Every program starts with seccompiler's architecture check: a system
//! call made through another ABI (i386 `int 0x80` on x86_64, aarch32 on
//! aarch64) kills the process with `SIGSYS` instead of slipping past a list
//! of x86_64 numbers. 32-bit binaries therefore cannot run in a sandbox.
//!
//! Allowed system calls cost nothing on the hot path: since Linux 5.11 the
//! kernel caches, per system call number, filters whose answer is "allow"
//! regardless of the arguments, and skips running them.
//!
//! # Decisions
//!
//! - **Arguments are compared as 32-bit values.** Every argument the profile
//!   inspects is an `int`/`unsigned int`, or (clone flags, ioctl requests)
//!   is truncated to 32 bits by the kernel. A 64-bit compare would let a
//!   caller put garbage in the high half: `ioctl(fd, 0x1_0000_5412)` is
//!   TIOCSTI to the kernel but not equal to `0x5412` as a 64-bit value.
//! - **clone** with any `CLONE_NEW*` flag is denied; plain `fork`, `vfork`
//!   and thread creation are not. The flags are argument 0 on x86_64 and on
//!   aarch64 alike (the two differ only in the order of `tls` and
//!   `child_tid`, arguments 3 and 4). `CLONE_NEWTIME` (`0x80`) shares its bit
//!   with the exit signal in `clone(2)`, where no valid signal sets it; it is
//!   in the mask for completeness.
//! - **clone3** passes its flags in a struct that seccomp cannot read, so it
//!   answers `ENOSYS`: glibc (`posix_spawn`, `pthread_create`) and Rust's
//!   std then fall back to `clone(2)`, whose flags the filter inspects.
//!   glibc's `fork` uses `clone(2)` directly.
//! - **unshare and setns** are denied whatever their flags: a sandbox's
//!   namespaces are fixed when it is created.
//! - **personality** is allowed only for `PER_LINUX` (0), the query value
//!   `0xffff_ffff`, and `PER_LINUX32` (8): the last only changes what
//!   `uname` reports as the machine (`linux32`, `setarch i686` in build
//!   scripts) and cannot run 32-bit code, which the architecture check kills
//!   anyway. Everything else is denied, above all `ADDR_NO_RANDOMIZE`
//!   (switches off ASLR for the next exec) and `READ_IMPLIES_EXEC`. "Not in
//!   the set" is one rule whose conditions are ANDed: `≠ 0 ∧ ≠ 8 ∧ ≠
//!   0xffff_ffff`.
//! - **Real-time scheduling**: `sched_setscheduler` with `SCHED_FIFO` or
//!   `SCHED_RR` (with or without `SCHED_RESET_ON_FORK`) is denied, so a
//!   sandbox cannot starve the host's CPUs even if its `RLIMIT_RTPRIO` were
//!   raised by mistake (the kernel also wants `CAP_SYS_NICE` in the initial
//!   namespace). `sched_setattr` takes a struct pointer the filter cannot
//!   read; like `clone3` it answers `ENOSYS`, the answer of a kernel older
//!   than 3.14, so callers fall back to `sched_setscheduler`. Only it could
//!   set `SCHED_DEADLINE` or utilisation clamps, which no sandbox needs.
//!   `sched_setparam` stays allowed: it only changes the priority *within*
//!   the current policy, and no sandbox process can enter a real-time
//!   policy.
//! - **Sockets**: only `AF_UNIX`, `AF_INET`, `AF_INET6` and `AF_NETLINK`
//!   (`ip`, glibc's `getaddrinfo`) are allowed for `socket` and
//!   `socketpair`. `AF_VSOCK` reaches the hypervisor on our VMs; `AF_PACKET`,
//!   `AF_ALG`, `AF_KEY`, `AF_TIPC`, `AF_RDS`, Bluetooth and the rest bring
//!   rarely used protocol code with a record of exploits.
//! - **Device nodes** need no rule: in a user namespace the kernel refuses
//!   `mknod`/`mknodat` of block and character devices (it checks
//!   `CAP_MKNOD` in the initial namespace), while FIFOs and sockets, which
//!   programs do need, keep working.
//! - **Errno, not kill**, for denied calls: programs probe for features and
//!   must get an error they can handle (`EPERM` like Docker's profile). Only
//!   a foreign ABI is killed.
//!
//! # Child order
//!
//! The runtime's child, as its last steps after all setup that needs
//! `CAP_SYS_ADMIN` (mounts, `pivot_root`, masks, rlimits, `close_range`):
//!
//! 1. [`crate::kernel::caps::CapPlan::apply`]: bounding drop, ambient clear,
//!    `capset`;
//! 2. [`crate::kernel::caps::set_no_new_privs`];
//! 3. [`CompiledSeccomp::install`]: the programs in order (main filter, then
//!    the `ENOSYS` one), each with `seccomp(SECCOMP_SET_MODE_FILTER)`;
//! 4. `execveat(memfd, "", argv, envp, AT_EMPTY_PATH)` of init, which the
//!    profile leaves allowed (as it does `execve` for init's children).
//!
//! Each step is async-signal-safe and returns a raw errno; the profile and
//! the capability plan are computed in the parent.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

pub use seccompiler::sock_filter;

mod syscalls;

// Argument values, identical on x86_64 and aarch64 (generic ioctl numbers,
// generic clone flags); a unit test checks them against the host's libc.

/// `CLONE_NEWTIME` (only reachable through `clone3`/`unshare`; see the
/// module docs).
pub const CLONE_NEWTIME: u32 = 0x0000_0080;
/// `CLONE_NEWNS`.
pub const CLONE_NEWNS: u32 = 0x0002_0000;
/// `CLONE_NEWCGROUP`.
pub const CLONE_NEWCGROUP: u32 = 0x0200_0000;
/// `CLONE_NEWUTS`.
pub const CLONE_NEWUTS: u32 = 0x0400_0000;
/// `CLONE_NEWIPC`.
pub const CLONE_NEWIPC: u32 = 0x0800_0000;
/// `CLONE_NEWUSER`.
pub const CLONE_NEWUSER: u32 = 0x1000_0000;
/// `CLONE_NEWPID`.
pub const CLONE_NEWPID: u32 = 0x2000_0000;
/// `CLONE_NEWNET`.
pub const CLONE_NEWNET: u32 = 0x4000_0000;
/// Every namespace flag of `clone(2)`.
pub const CLONE_NAMESPACE_FLAGS: u32 = CLONE_NEWTIME
    | CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET;

/// `TIOCSTI`: push a byte into a terminal's input queue.
pub const TIOCSTI: u32 = 0x5412;
/// `TIOCLINUX`: virtual console control (selection paste included).
pub const TIOCLINUX: u32 = 0x541C;

/// `PER_LINUX`.
pub const PER_LINUX: u32 = 0x0000;
/// `PER_LINUX32`.
pub const PER_LINUX32: u32 = 0x0008;
/// `personality(0xffffffff)` queries without changing anything.
pub const PERSONALITY_QUERY: u32 = 0xffff_ffff;

/// `AF_UNIX`.
pub const AF_UNIX: u32 = 1;
/// `AF_INET`.
pub const AF_INET: u32 = 2;
/// `AF_INET6`.
pub const AF_INET6: u32 = 10;
/// `AF_NETLINK`.
pub const AF_NETLINK: u32 = 16;

/// `SCHED_FIFO`.
pub const SCHED_FIFO: u32 = 1;
/// `SCHED_RR`.
pub const SCHED_RR: u32 = 2;
/// `SCHED_RESET_ON_FORK`, or-ed into a policy.
pub const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;

/// First system call number of the x32 ABI.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel's limit on one BPF program (`BPF_MAXINSNS`).
pub const MAX_PROGRAM_LEN: usize = 4096;

/// `EPERM`, the answer of most rows.
const EPERM: Action = Action::Errno(libc::EPERM);
/// `ENOSYS`, for calls that callers retry through an inspectable fallback.
const ENOSYS: Action = Action::Errno(libc::ENOSYS);

const NS_WHY: &str = "new mounts would let root in the sandbox's user namespace reshape its \
    view, uncover masked paths and reach filesystem code with a long CVE history; the runtime \
    assembles the root before exec";
const NEW_MOUNT_API_WHY: &str =
    "new mount API: the same power as mount(2), closed for the same reason";

/// The default profile: every row is `(system call, condition, action,
/// why)`. Reviewed data; see the module docs for the reasoning across rows.
pub const DEFAULT_RULES: &[SyscallRule] = &[
    // -- Mounts: the root is assembled by the runtime before exec.
    SyscallRule::deny("mount", NS_WHY),
    SyscallRule::deny(
        "umount2",
        "detaching the runtime's masks (/proc/kcore, /proc/sys, ...) would uncover what they hide",
    ),
    SyscallRule::deny(
        "pivot_root",
        "the runtime pivots the root once; a second pivot only serves an escape",
    ),
    SyscallRule::deny("move_mount", NEW_MOUNT_API_WHY),
    SyscallRule::deny("open_tree", NEW_MOUNT_API_WHY),
    SyscallRule::deny("open_tree_attr", NEW_MOUNT_API_WHY),
    SyscallRule::deny("fsopen", NEW_MOUNT_API_WHY),
    SyscallRule::deny("fsconfig", NEW_MOUNT_API_WHY),
    SyscallRule::deny("fsmount", NEW_MOUNT_API_WHY),
    SyscallRule::deny("fspick", NEW_MOUNT_API_WHY),
    SyscallRule::deny("mount_setattr", NEW_MOUNT_API_WHY),
    // -- Namespaces: fixed when the sandbox is created.
    SyscallRule::deny(
        "unshare",
        "new namespaces, above all user namespaces, hand root-in-namespace powers over fresh \
         kernel objects to untrusted code: the usual door to kernel bugs (CVE-2022-0185, \
         CVE-2023-32233)",
    ),
    SyscallRule::deny(
        "setns",
        "joining another namespace through an inherited or /proc fd would leave the sandbox's",
    ),
    SyscallRule::deny_if(
        "clone",
        ArgMatch::AnyBit {
            arg: 0,
            mask: CLONE_NAMESPACE_FLAGS,
        },
        "clone with a CLONE_NEW* flag is unshare by another name; fork, vfork and threads \
         (no namespace flag) keep working. Flags are arg 0 on x86_64 and aarch64",
    ),
    // -- Other processes' memory and files.
    SyscallRule::deny(
        "ptrace",
        "one sandbox process could inspect and rewrite another (init included); debuggers \
         are not a goal",
    ),
    SyscallRule::deny(
        "process_vm_readv",
        "reads another process's memory: ptrace by another name",
    ),
    SyscallRule::deny(
        "process_vm_writev",
        "writes another process's memory: ptrace by another name",
    ),
    SyscallRule::deny(
        "pidfd_getfd",
        "copies a file descriptor out of another process (init's control socket): ptrace-class",
    ),
    SyscallRule::deny(
        "kcmp",
        "compares kernel objects of other processes, an ordering oracle on kernel pointers",
    ),
    // -- The kernel itself and host-wide state.
    SyscallRule::deny("kexec_load", "loads a new kernel"),
    SyscallRule::deny("kexec_file_load", "loads a new kernel"),
    SyscallRule::deny("init_module", "kernel modules are host-wide kernel code"),
    SyscallRule::deny("finit_module", "kernel modules are host-wide kernel code"),
    SyscallRule::deny("delete_module", "kernel modules are host-wide kernel code"),
    SyscallRule::deny(
        "reboot",
        "the sandbox's life belongs to the host (in a pid namespace reboot kills its init)",
    ),
    SyscallRule::deny("swapon", "swap is host-wide"),
    SyscallRule::deny("swapoff", "swap is host-wide"),
    SyscallRule::deny(
        "bpf",
        "eBPF verifier, maps and programs: a large kernel attack surface",
    ),
    SyscallRule::deny(
        "perf_event_open",
        "kernel and hardware profiling: side channels and a CVE-rich subsystem",
    ),
    SyscallRule::deny(
        "userfaultfd",
        "lets an exploit stall the kernel inside copy_from_user to widen races",
    ),
    SyscallRule::deny(
        "keyctl",
        "kernel keyrings are not namespaced (CVE-2016-0728)",
    ),
    SyscallRule::deny("add_key", "kernel keyrings are not namespaced"),
    SyscallRule::deny("request_key", "kernel keyrings are not namespaced"),
    SyscallRule::deny(
        "io_uring_setup",
        "io_uring operations bypass the filters of the equivalent system calls, and the \
         subsystem has a long record of privilege escalations",
    ),
    SyscallRule::deny("io_uring_enter", "see io_uring_setup"),
    SyscallRule::deny("io_uring_register", "see io_uring_setup"),
    SyscallRule::deny(
        "open_by_handle_at",
        "opens files by handle, ignoring the mount view: the 2014 'shocker' container escape",
    ),
    SyscallRule::deny(
        "name_to_handle_at",
        "the other half of open_by_handle_at; leaks inode identities",
    ),
    SyscallRule::deny("clock_settime", "the clock is host-wide"),
    SyscallRule::deny(
        "clock_adjtime",
        "the clock is host-wide; no sandbox needs NTP state",
    ),
    SyscallRule::deny("settimeofday", "the clock is host-wide"),
    SyscallRule::deny(
        "adjtimex",
        "the clock is host-wide; no sandbox needs NTP state",
    ),
    SyscallRule::deny("acct", "process accounting writes a host-wide file"),
    SyscallRule::deny("quotactl", "disk quotas are host-wide configuration"),
    SyscallRule::deny("quotactl_fd", "disk quotas are host-wide configuration"),
    SyscallRule::deny(
        "lookup_dcookie",
        "oprofile helper leaking kernel dentry cookies (removed in 6.10; denied where the \
         number exists)",
    ),
    SyscallRule::deny(
        "syslog",
        "the kernel log leaks kernel addresses and host activity",
    ),
    SyscallRule::deny(
        "vhangup",
        "hangs up the terminal; nothing in a sandbox needs it",
    ),
    SyscallRule::deny(
        "nfsservctl",
        "NFS server control, removed in 3.1; closed should a kernel still have it",
    ),
    SyscallRule::deny(
        "iopl",
        "raw I/O port access (x86_64 only); needs CAP_SYS_RAWIO, denied outright",
    ),
    SyscallRule::deny(
        "ioperm",
        "raw I/O port access (x86_64 only); needs CAP_SYS_RAWIO, denied outright",
    ),
    SyscallRule::deny(
        "modify_ldt",
        "16-bit segments for Wine and DOSEMU only (x86_64 only); a source of kernel bugs \
         (CVE-2015-5157, CVE-2017-17053)",
    ),
    // -- Arguments that matter.
    SyscallRule::deny_if(
        "personality",
        ArgMatch::NotIn {
            arg: 0,
            values: Cow::Borrowed(&[PER_LINUX, PER_LINUX32, PERSONALITY_QUERY]),
        },
        "other personalities switch off ASLR (ADDR_NO_RANDOMIZE) or make reads executable; \
         PER_LINUX32 only changes uname's machine",
    ),
    SyscallRule::deny_if(
        "ioctl",
        ArgMatch::Eq {
            arg: 1,
            value: TIOCSTI,
        },
        "TIOCSTI types into a terminal's input: a sandbox sharing a terminal could run commands \
         in the host's shell. Compared as 32 bits: the kernel truncates the request",
    ),
    SyscallRule::deny_if(
        "ioctl",
        ArgMatch::Eq {
            arg: 1,
            value: TIOCLINUX,
        },
        "TIOCLINUX selection paste injects terminal input like TIOCSTI",
    ),
    SyscallRule::deny_if(
        "socket",
        ArgMatch::NotIn {
            arg: 0,
            values: Cow::Borrowed(&[AF_UNIX, AF_INET, AF_INET6, AF_NETLINK]),
        },
        "families beyond local, IP and netlink (AF_VSOCK reaches the hypervisor; AF_PACKET \
         CVE-2017-7308, CVE-2020-14386; AF_ALG, AF_KEY, AF_TIPC, ...) bring rarely used, often \
         exploited protocol code",
    ),
    SyscallRule::deny_if(
        "socketpair",
        ArgMatch::NotIn {
            arg: 0,
            values: Cow::Borrowed(&[AF_UNIX, AF_INET, AF_INET6, AF_NETLINK]),
        },
        "same families as socket",
    ),
    SyscallRule::deny_if(
        "sched_setscheduler",
        ArgMatch::MaskedIn {
            arg: 1,
            mask: !SCHED_RESET_ON_FORK,
            values: Cow::Borrowed(&[SCHED_FIFO, SCHED_RR]),
        },
        "real-time policies could starve the host's CPUs",
    ),
    // -- Answered with ENOSYS, installed last so that this errno wins.
    SyscallRule::new_const(
        "clone3",
        ArgMatch::Always,
        ENOSYS,
        "its flags sit in a struct the filter cannot read; ENOSYS makes glibc and Rust's std \
         fall back to clone, whose flags the filter inspects",
    ),
    SyscallRule::new_const(
        "sched_setattr",
        ArgMatch::Always,
        ENOSYS,
        "its policy sits in a struct the filter cannot read; ENOSYS (a pre-3.14 kernel) makes \
         callers fall back to sched_setscheduler",
    ),
];

/// An architecture sandlot compiles filters for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeccompArch {
    /// x86_64 (`AUDIT_ARCH_X86_64`); the x32 ABI is denied by an extra guard.
    X86_64,
    /// aarch64 (`AUDIT_ARCH_AARCH64`).
    Aarch64,
}

impl SeccompArch {
    /// The architecture this crate was built for, if filters can be built
    /// for it.
    pub const fn native() -> Option<Self> {
        if cfg!(target_arch = "x86_64") {
            Some(Self::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Self::Aarch64)
        } else {
            None
        }
    }

    /// The name used in messages (`x86_64`, `aarch64`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }

    /// The `AUDIT_ARCH_*` value that `seccomp_data.arch` holds for native
    /// system calls.
    pub const fn audit_arch(self) -> u32 {
        match self {
            // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
            Self::X86_64 => 62 | 0x8000_0000 | 0x4000_0000,
            // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
            Self::Aarch64 => 183 | 0x8000_0000 | 0x4000_0000,
        }
    }

    fn target(self) -> seccompiler::TargetArch {
        match self {
            Self::X86_64 => seccompiler::TargetArch::x86_64,
            Self::Aarch64 => seccompiler::TargetArch::aarch64,
        }
    }

    /// The number of `syscall` on this architecture: `Ok(None)` if the
    /// architecture has no such call, an error if sandlot's tables do not
    /// know the name at all.
    pub fn syscall_number(self, syscall: &str) -> Result<Option<u32>, SeccompError> {
        let row = syscalls::SYSCALLS
            .binary_search_by(|(name, _, _)| (*name).cmp(syscall))
            .map_err(|_| SeccompError::UnknownSyscall {
                syscall: syscall.to_owned(),
            })?;
        let (_, x86_64, aarch64) = syscalls::SYSCALLS[row];
        let nr = match self {
            Self::X86_64 => x86_64,
            Self::Aarch64 => aarch64,
        };
        Ok(u32::try_from(nr).ok())
    }
}

impl fmt::Display for SeccompArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Fail the call with this errno (1..=4095).
    Errno(i32),
    /// Kill the whole process with `SIGSYS`.
    KillProcess,
    /// Allow the call but log it to the kernel's audit log.
    Log,
}

impl Action {
    fn to_seccompiler(self) -> SeccompAction {
        match self {
            // Validated to 1..=4095 before compiling.
            Self::Errno(errno) => SeccompAction::Errno(errno.unsigned_abs()),
            Self::KillProcess => SeccompAction::KillProcess,
            Self::Log => SeccompAction::Log,
        }
    }

    /// The value a `RET` of this action returns (seccompiler's encoding).
    fn to_ret(self) -> u32 {
        u32::from(self.to_seccompiler())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Errno(errno) => write!(f, "errno {errno}"),
            Self::KillProcess => f.write_str("kill process"),
            Self::Log => f.write_str("log"),
        }
    }
}

/// Which calls of a system call a rule matches. Arguments are compared as
/// their low 32 bits (see the module docs); `arg` is 0..=5.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ArgMatch {
    /// Every call.
    Always,
    /// `args[arg] == value`.
    Eq {
        /// Argument index.
        arg: u8,
        /// The value.
        value: u32,
    },
    /// Any bit of `mask` is set in `args[arg]`.
    AnyBit {
        /// Argument index.
        arg: u8,
        /// The bits.
        mask: u32,
    },
    /// `args[arg] & mask` is one of `values` (each within `mask`).
    MaskedIn {
        /// Argument index.
        arg: u8,
        /// Bits compared.
        mask: u32,
        /// Matching values.
        values: Cow<'static, [u32]>,
    },
    /// `args[arg]` is none of `values` (at least one).
    NotIn {
        /// Argument index.
        arg: u8,
        /// Values that do *not* match.
        values: Cow<'static, [u32]>,
    },
}

impl ArgMatch {
    /// seccompiler rules (ORed) for this match, `None` for every call.
    fn to_rules(&self, syscall: &str) -> Result<Option<Vec<SeccompRule>>, SeccompError> {
        let bad = |reason: &'static str| SeccompError::BadRule {
            syscall: syscall.to_owned(),
            reason,
        };
        let cond = |arg: u8, op: SeccompCmpOp, value: u32| {
            if arg > 5 {
                return Err(bad("argument index out of range (0..=5)"));
            }
            SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, u64::from(value))
                .map_err(|_| bad("invalid argument condition"))
        };
        let rule = |conds: Vec<SeccompCondition>| {
            SeccompRule::new(conds).map_err(|_| bad("empty argument condition"))
        };
        let rules = match self {
            Self::Always => return Ok(None),
            Self::Eq { arg, value } => vec![rule(vec![cond(*arg, SeccompCmpOp::Eq, *value)?])?],
            Self::AnyBit { arg, mask } => {
                if *mask == 0 {
                    return Err(bad("AnyBit with an empty mask never matches"));
                }
                (0..32)
                    .map(|bit| 1u32 << bit)
                    .filter(|bit| mask & bit != 0)
                    .map(|bit| {
                        rule(vec![cond(
                            *arg,
                            SeccompCmpOp::MaskedEq(u64::from(bit)),
                            bit,
                        )?])
                    })
                    .collect::<Result<_, _>>()?
            }
            Self::MaskedIn { arg, mask, values } => {
                if values.is_empty() {
                    return Err(bad("MaskedIn with no values never matches"));
                }
                if values.iter().any(|v| v & !mask != 0) {
                    return Err(bad("MaskedIn value has bits outside the mask"));
                }
                values
                    .iter()
                    .map(|v| {
                        rule(vec![cond(
                            *arg,
                            SeccompCmpOp::MaskedEq(u64::from(*mask)),
                            *v,
                        )?])
                    })
                    .collect::<Result<_, _>>()?
            }
            Self::NotIn { arg, values } => {
                if values.is_empty() {
                    return Err(bad("NotIn needs at least one value (use Always)"));
                }
                // One rule whose conditions are ANDed: differs from each.
                vec![rule(
                    values
                        .iter()
                        .map(|v| cond(*arg, SeccompCmpOp::Ne, *v))
                        .collect::<Result<_, _>>()?,
                )?]
            }
        };
        Ok(Some(rules))
    }
}

/// One row of a profile: which calls of a system call get which action, and
/// why.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyscallRule {
    /// System call name, as in `syscalls(2)` (`clone3`, `umount2`).
    pub syscall: Cow<'static, str>,
    /// Which calls match.
    pub args: ArgMatch,
    /// What happens to them.
    pub action: Action,
    /// Why: for reviewers.
    pub why: Cow<'static, str>,
}

impl SyscallRule {
    /// `EPERM` for every call of `syscall`.
    pub const fn deny(syscall: &'static str, why: &'static str) -> Self {
        Self::new_const(syscall, ArgMatch::Always, EPERM, why)
    }

    /// `EPERM` for the calls of `syscall` that match `args`.
    pub const fn deny_if(syscall: &'static str, args: ArgMatch, why: &'static str) -> Self {
        Self::new_const(syscall, args, EPERM, why)
    }

    /// A row from static strings (usable in `const` tables).
    pub const fn new_const(
        syscall: &'static str,
        args: ArgMatch,
        action: Action,
        why: &'static str,
    ) -> Self {
        Self {
            syscall: Cow::Borrowed(syscall),
            args,
            action,
            why: Cow::Borrowed(why),
        }
    }

    /// A row from any strings (e.g. read from configuration).
    pub fn new(
        syscall: impl Into<Cow<'static, str>>,
        args: ArgMatch,
        action: Action,
        why: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            syscall: syscall.into(),
            args,
            action,
            why: why.into(),
        }
    }
}

/// Errors while compiling a profile; each names the system call or the
/// architecture.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The name is in neither of sandlot's system call tables.
    #[error(
        "seccomp rule for `{syscall}`: unknown system call (not in the x86_64 or aarch64 table)"
    )]
    UnknownSyscall {
        /// The name.
        syscall: String,
    },
    /// An errno outside 1..=4095.
    #[error("seccomp rule for `{syscall}`: errno {errno} out of range (1..=4095)")]
    BadErrno {
        /// The system call.
        syscall: String,
        /// The errno given.
        errno: i32,
    },
    /// An argument condition that cannot be compiled or never matches.
    #[error("seccomp rule for `{syscall}`: {reason}")]
    BadRule {
        /// The system call.
        syscall: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// seccompiler refused the filter of one action.
    #[error("compiling the seccomp filter for {arch} ({action}): {source}")]
    Compile {
        /// Target architecture.
        arch: SeccompArch,
        /// The action of the filter.
        action: Action,
        /// seccompiler's error.
        source: seccompiler::BackendError,
    },
    /// A program longer than the kernel accepts.
    #[error("seccomp filter for {arch} ({action}) has {len} instructions, the kernel takes at most {MAX_PROGRAM_LEN}")]
    TooLarge {
        /// Target architecture.
        arch: SeccompArch,
        /// The action of the filter.
        action: Action,
        /// Its length.
        len: usize,
    },
    /// Filters are built for x86_64 and aarch64 only.
    #[error("seccomp filters are built for x86_64 and aarch64 only, not {arch}")]
    UnsupportedArch {
        /// The build's architecture.
        arch: &'static str,
    },
}

/// A sandbox's seccomp policy: the default deny list, extended, replaced or
/// (explicitly) switched off.
///
/// Rules of the same action go into one program; programs are installed in
/// the order each action first appears, so when two errno rules match one
/// call, the action that first appears later in the rule list wins. Rows
/// naming a system call that one architecture lacks (`iopl` on aarch64) are
/// skipped for that architecture.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeccompProfile {
    rules: Vec<SyscallRule>,
    unconfined: bool,
}

impl Default for SeccompProfile {
    /// The default profile (the reviewed table `DEFAULT_RULES` in `seccomp/mod.rs`).
    fn default() -> Self {
        Self::from_rules(DEFAULT_RULES.to_vec())
    }
}

impl SeccompProfile {
    /// A profile made of exactly `rules`, replacing the default. Even with
    /// no rules it keeps the architecture check (foreign ABIs are killed) and
    /// the x32 guard.
    pub fn from_rules(rules: Vec<SyscallRule>) -> Self {
        Self {
            rules,
            unconfined: false,
        }
    }

    /// No seccomp filter at all. Only for trusted code or debugging: the
    /// sandbox then relies on namespaces and capabilities alone.
    pub fn unconfined() -> Self {
        Self {
            rules: Vec::new(),
            unconfined: true,
        }
    }

    /// Whether this is [`SeccompProfile::unconfined`].
    pub fn is_unconfined(&self) -> bool {
        self.unconfined
    }

    /// Adds a rule.
    pub fn with_rule(mut self, rule: SyscallRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Denies every call of `syscall` with `EPERM`, replacing the rules
    /// that named it.
    pub fn deny(self, syscall: impl Into<Cow<'static, str>>) -> Self {
        self.deny_with_errno(syscall, libc::EPERM)
    }

    /// Fails every call of `syscall` with `errno`, replacing the rules that
    /// named it (so it also overrides the default's `ENOSYS` for `clone3`).
    pub fn deny_with_errno(self, syscall: impl Into<Cow<'static, str>>, errno: i32) -> Self {
        let syscall = syscall.into();
        self.without(&syscall).with_rule(SyscallRule::new(
            syscall,
            ArgMatch::Always,
            Action::Errno(errno),
            "denied by the caller",
        ))
    }

    /// Removes every rule naming `syscall` (e.g. to allow io_uring in a
    /// sandbox that needs it).
    pub fn without(mut self, syscall: &str) -> Self {
        self.rules.retain(|rule| rule.syscall != syscall);
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[SyscallRule] {
        &self.rules
    }

    /// Compiles for the architecture this crate was built for.
    pub fn compile_native(&self) -> Result<CompiledSeccomp, SeccompError> {
        self.compile(native_arch()?)
    }

    /// Compiles the profile into the ordered list of BPF programs for
    /// `arch`.
    pub fn compile(&self, arch: SeccompArch) -> Result<CompiledSeccomp, SeccompError> {
        if self.unconfined {
            return Ok(CompiledSeccomp::new(arch, Vec::new()));
        }

        // Action -> syscall number -> chain (None = every call).
        let mut groups: Vec<(Action, Chains)> = Vec::new();
        for rule in &self.rules {
            if let Action::Errno(errno) = rule.action {
                if !(1..=4095).contains(&errno) {
                    return Err(SeccompError::BadErrno {
                        syscall: rule.syscall.to_string(),
                        errno,
                    });
                }
            }
            let conditions = rule.args.to_rules(&rule.syscall)?;
            let Some(nr) = arch.syscall_number(&rule.syscall)? else {
                continue;
            };
            let index = match groups.iter().position(|(action, _)| *action == rule.action) {
                Some(index) => index,
                None => {
                    groups.push((rule.action, BTreeMap::new()));
                    groups.len() - 1
                }
            };
            let chain = groups[index]
                .1
                .entry(i64::from(nr))
                .or_insert_with(|| Some(Vec::new()));
            match (chain, conditions) {
                (chain, None) => *chain = None,
                (Some(chain), Some(more)) => chain.extend(more),
                (None, Some(_)) => {} // already every call
            }
        }

        let mut programs = Vec::with_capacity(groups.len().max(1));
        if groups.is_empty() {
            // Still check the architecture and guard x32: allow every native
            // call, kill foreign ones.
            programs.push(build_program(
                arch,
                Action::KillProcess,
                BTreeMap::new(),
                true,
            )?);
        }
        for (index, (action, chains)) in groups.into_iter().enumerate() {
            let chains = chains
                .into_iter()
                .map(|(nr, chain)| (nr, chain.unwrap_or_default()))
                .collect();
            programs.push(build_program(arch, action, chains, index == 0)?);
        }
        Ok(CompiledSeccomp::new(arch, programs))
    }
}

/// System call number -> its rules (ORed), `None` for every call.
type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn native_arch() -> Result<SeccompArch, SeccompError> {
    SeccompArch::native().ok_or(SeccompError::UnsupportedArch {
        arch: std::env::consts::ARCH,
    })
}

/// One program: default allow, `action` on a match; the first program on
/// x86_64 starts with the x32 guard.
///
/// seccompiler lays a filter out as one block per system call, tried one
/// after another: every call the kernel checks walks past the blocks before
/// its own, and so does the kernel when, at install, it works out which
/// calls the filter always allows (it emulates the program for every call
/// number: ~450 × ~300 instructions, 0.2 ms per sandbox, measured). So the
/// blocks are taken from seccompiler one call at a time and reached through
/// a binary search on the call number instead: about a dozen instructions
/// for any call, at install and at run time.
///
/// ```text
/// [x32 guard] [arch check] LD nr
/// search tree: JGE mid → right half | left half … leaf: JEQ nr → action/block | allow
/// RET allow
/// block of a call with argument rules, RET allow (its fall-through) …
/// ```
fn build_program(
    arch: SeccompArch,
    action: Action,
    chains: BTreeMap<i64, Vec<SeccompRule>>,
    first: bool,
) -> Result<BpfProgram, SeccompError> {
    let compile_error = |source| SeccompError::Compile {
        arch,
        action,
        source,
    };
    let compile = |chains: BTreeMap<i64, Vec<SeccompRule>>| -> Result<BpfProgram, SeccompError> {
        let filter = SeccompFilter::new(
            chains,
            SeccompAction::Allow,
            action.to_seccompiler(),
            arch.target(),
        )
        .map_err(compile_error)?;
        BpfProgram::try_from(filter).map_err(compile_error)
    };

    // seccompiler's architecture check: an empty filter is the check and
    // one RET of the default action.
    let mut check = compile(BTreeMap::new())?;
    check.pop();

    let mut program = if first && arch == SeccompArch::X86_64 {
        x32_guard(arch)
    } else {
        Vec::new()
    };
    program.extend(check.iter().cloned());
    program.push(insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR));

    // The blocks of calls with argument rules, as seccompiler builds them:
    // a single-call filter is [check] [LD nr] [block] [RET allow]; the block
    // starts by comparing the number (true when we jump there) and its
    // instructions only jump inside it or to its end.
    let mut leaves = Vec::with_capacity(chains.len());
    for (nr, rules) in chains {
        let nr = u32::try_from(nr).map_err(|_| SeccompError::TooLarge {
            arch,
            action,
            len: usize::MAX,
        })?;
        let block = if rules.is_empty() {
            None
        } else {
            let single = compile(BTreeMap::from([(i64::from(nr), rules)]))?;
            Some(single[check.len() + 1..single.len() - 1].to_vec())
        };
        leaves.push((nr, block));
    }

    let tree_start = program.len();
    let tree_len = tree_size(leaves.len());
    let allow_at = tree_start + tree_len;
    let mut block_at = Vec::with_capacity(leaves.len());
    let mut next = allow_at + 1;
    for (_, block) in &leaves {
        block_at.push(next);
        if let Some(block) = block {
            next += block.len() + 1;
        }
    }
    emit_tree(
        &mut program,
        &leaves,
        0,
        leaves.len(),
        &block_at,
        allow_at,
        action,
    );
    debug_assert_eq!(program.len(), allow_at);
    let allow = || insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW);
    program.push(allow());
    for (_, block) in leaves {
        if let Some(block) = block {
            program.extend(block);
            program.push(allow());
        }
    }

    if program.len() > MAX_PROGRAM_LEN {
        return Err(SeccompError::TooLarge {
            arch,
            action,
            len: program.len(),
        });
    }
    Ok(program)
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Instructions of the search tree over `n` leaves: a leaf is 3 (compare,
/// match, miss), an inner node 2 (compare, jump to the right half).
fn tree_size(n: usize) -> usize {
    match n {
        0 => 0,
        1 => 3,
        n => 2 + tree_size(n / 2) + tree_size(n - n / 2),
    }
}

/// Emits the search over `leaves[lo..hi]` (sorted by number) at the end of
/// `program`. Jumps are forward only, so every far target goes through
/// `JA` (32-bit offset); the 8-bit offsets are all 0 or 1.
fn emit_tree(
    program: &mut Vec<sock_filter>,
    leaves: &[(u32, Option<Vec<sock_filter>>)],
    lo: usize,
    hi: usize,
    block_at: &[usize],
    allow_at: usize,
    action: Action,
) {
    let ja = |from: usize, to: usize| insn(BPF_JMP_JA, 0, 0, (to - from - 1) as u32);
    match hi - lo {
        0 => {}
        1 => {
            let (nr, block) = &leaves[lo];
            // JEQ nr: the next instruction on a match, the one after on a miss.
            program.push(insn(BPF_JMP_JEQ_K, 0, 1, *nr));
            let here = program.len();
            program.push(match block {
                None => insn(BPF_RET_K, 0, 0, action.to_ret()),
                Some(_) => ja(here, block_at[lo]),
            });
            let here = program.len();
            program.push(ja(here, allow_at));
        }
        n => {
            let mid = lo + n / 2;
            // nr >= leaves[mid]: the right half, behind the left one.
            program.push(insn(BPF_JMP_JGE_K, 0, 1, leaves[mid].0));
            let here = program.len();
            let right = here + 1 + tree_size(mid - lo);
            program.push(ja(here, right));
            emit_tree(program, leaves, lo, mid, block_at, allow_at, action);
            emit_tree(program, leaves, mid, hi, block_at, allow_at, action);
        }
    }
}

// Classic BPF opcodes (linux/bpf_common.h) used by the guard.
/// `BPF_LD | BPF_W | BPF_ABS`.
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const BPF_JMP_JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;
/// `BPF_JMP | BPF_JA`.
const BPF_JMP_JA: u16 = 0x05;
/// `offsetof(struct seccomp_data, nr)`.
const SECCOMP_DATA_NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const SECCOMP_DATA_ARCH: u32 = 4;

/// `ENOSYS` for x32 system call numbers (≥ `0x4000_0000`) of the native
/// architecture; other architectures fall through to seccompiler's check,
/// which kills them.
fn x32_guard(arch: SeccompArch) -> Vec<sock_filter> {
    vec![
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        insn(BPF_JMP_JEQ_K, 0, 3, arch.audit_arch()),
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        insn(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs(),
        ),
    ]
}

/// A compiled profile: the BPF programs in install order, for one
/// architecture. Cheap to clone and share (an `Arc`).
#[derive(Clone, Debug)]
pub struct CompiledSeccomp(Arc<Compiled>);

#[derive(Debug)]
struct Compiled {
    arch: SeccompArch,
    programs: Vec<BpfProgram>,
}

impl CompiledSeccomp {
    fn new(arch: SeccompArch, programs: Vec<BpfProgram>) -> Self {
        Self(Arc::new(Compiled { arch, programs }))
    }

    /// The architecture the programs check for.
    pub fn arch(&self) -> SeccompArch {
        self.0.arch
    }

    /// The programs, in install order; empty when unconfined.
    pub fn programs(&self) -> &[BpfProgram] {
        &self.0.programs
    }

    /// Instructions per program, in install order.
    pub fn instruction_counts(&self) -> Vec<usize> {
        self.0.programs.iter().map(Vec::len).collect()
    }

    /// Whether no filter will be installed.
    pub fn is_unconfined(&self) -> bool {
        self.0.programs.is_empty()
    }

    /// Whether both share one compilation.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Child side: installs the programs in order (see the module docs for
    /// where this sits in the child). Async-signal-safe: no allocation.
    /// no_new_privs must be set first. Returns the raw errno of the first
    /// failure; `EINVAL` without trying if the programs were compiled for
    /// another architecture than this build's. Unconfined: does nothing.
    pub fn install(&self) -> Result<(), i32> {
        if self.0.programs.is_empty() {
            return Ok(());
        }
        if SeccompArch::native() != Some(self.0.arch) {
            return Err(libc::EINVAL);
        }
        crate::sys::seccomp::install_seccomp(&self.0.programs)
    }
}

/// The most profiles a cache keeps compiled; callers choose profiles, so
/// the cache must not grow with them.
pub const SECCOMP_CACHE_ENTRIES: usize = 64;

/// Compiles each distinct profile once and shares the result: one per
/// runtime. At most [`SECCOMP_CACHE_ENTRIES`] are kept: past it the cache
/// starts over (compiling costs tens of microseconds; a caller with that
/// many profiles pays it again).
#[derive(Debug)]
pub struct SeccompCache {
    arch: SeccompArch,
    compiled: Mutex<HashMap<SeccompProfile, CompiledSeccomp>>,
}

impl SeccompCache {
    /// A cache for `arch`.
    pub fn new(arch: SeccompArch) -> Self {
        Self {
            arch,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// A cache for this build's architecture.
    pub fn native() -> Result<Self, SeccompError> {
        Ok(Self::new(native_arch()?))
    }

    /// The compiled form of `profile`, compiling it on first use.
    pub fn get(&self, profile: &SeccompProfile) -> Result<CompiledSeccomp, SeccompError> {
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hit) = compiled.get(profile) {
            return Ok(hit.clone());
        }
        let fresh = profile.compile(self.arch)?;
        if compiled.len() >= SECCOMP_CACHE_ENTRIES {
            compiled.clear();
        }
        compiled.insert(profile.clone(), fresh.clone());
        Ok(fresh)
    }

    /// How many distinct profiles were compiled.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// Whether nothing was compiled yet.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
