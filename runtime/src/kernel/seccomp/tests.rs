//! Unit tests of the compiled policy, run through a small classic-BPF
//! interpreter that evaluates the programs the way the kernel does: each
//! program sees `struct seccomp_data`, and across programs the most severe
//! action wins, the most recently installed one on a tie.

use std::time::Instant;

use super::*;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ACTION_FULL: u32 = 0xffff_0000;
const RET_DATA: u32 = 0x0000_ffff;
const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
const AUDIT_ARCH_ARM: u32 = 40 | 0x4000_0000;

/// `struct seccomp_data` as the filter sees it.
#[derive(Clone, Copy, Debug)]
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn load(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr,
            4 => self.arch,
            8 | 12 => 0, // instruction pointer: unused by our programs
            16..=63 if offset & 3 == 0 => {
                let arg = self.args[(offset as usize - 16) / 8];
                // Little endian: the low word comes first.
                if offset & 7 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load from invalid seccomp_data offset {offset}"),
        }
    }
}

/// Runs one program; panics on any instruction our programs should not
/// contain or on a jump out of the program.
fn run(program: &[sock_filter], data: &Data) -> u32 {
    assert!(!program.is_empty() && program.len() <= MAX_PROGRAM_LEN);
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let insn = program
            .get(pc)
            .unwrap_or_else(|| panic!("fell off the program at {pc}"));
        pc += 1;
        let k = insn.k;
        let (jt, jf) = (usize::from(insn.jt), usize::from(insn.jf));
        match insn.code {
            0x20 => acc = data.load(k),                       // ld [k]
            0x54 => acc &= k,                                 // and #k
            0x05 => pc += k as usize,                         // ja
            0x15 => pc += if acc == k { jt } else { jf },     // jeq
            0x25 => pc += if acc > k { jt } else { jf },      // jgt
            0x35 => pc += if acc >= k { jt } else { jf },     // jge
            0x45 => pc += if acc & k != 0 { jt } else { jf }, // jset
            0x06 => return k,                                 // ret #k
            code => panic!("unexpected BPF opcode {code:#x} at {}", pc - 1),
        }
    }
}

/// All programs together, as the kernel combines them.
fn evaluate(compiled: &CompiledSeccomp, data: &Data) -> u32 {
    let mut result = RET_ALLOW;
    for program in compiled.programs().iter().rev() {
        let current = run(program, data);
        if ((current & RET_ACTION_FULL) as i32) < ((result & RET_ACTION_FULL) as i32) {
            result = current;
        }
    }
    result
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Errno(i32),
    Kill,
}

fn verdict(ret: u32) -> Verdict {
    match ret & RET_ACTION_FULL {
        RET_ALLOW => Verdict::Allow,
        RET_ERRNO => Verdict::Errno((ret & RET_DATA) as i32),
        RET_KILL_PROCESS => Verdict::Kill,
        other => panic!("unexpected action {other:#x}"),
    }
}

fn nr(arch: SeccompArch, name: &str) -> u32 {
    arch.syscall_number(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} has no number on {arch}"))
}

fn call(compiled: &CompiledSeccomp, name: &str, args: &[u64]) -> Verdict {
    let arch = compiled.arch();
    let mut data = Data {
        nr: nr(arch, name),
        arch: arch.audit_arch(),
        args: [0; 6],
    };
    data.args[..args.len()].copy_from_slice(args);
    verdict(evaluate(compiled, &data))
}

fn default_for(arch: SeccompArch) -> CompiledSeccomp {
    SeccompProfile::default().compile(arch).unwrap()
}

const ARCHES: [SeccompArch; 2] = [SeccompArch::X86_64, SeccompArch::Aarch64];
const EPERM: Verdict = Verdict::Errno(libc::EPERM);
const ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS);

#[test]
fn syscall_table_is_sorted_and_unique() {
    for pair in syscalls::SYSCALLS.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{} / {}", pair[0].0, pair[1].0);
    }
    for arch in ARCHES {
        let mut numbers: Vec<_> = syscalls::SYSCALLS
            .iter()
            .map(|row| {
                if arch == SeccompArch::X86_64 {
                    row.1
                } else {
                    row.2
                }
            })
            .filter(|nr| *nr >= 0)
            .collect();
        let len = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), len, "duplicate numbers on {arch}");
    }
}

#[test]
fn syscall_table_matches_host_libc() {
    let arch = SeccompArch::native().expect("tests run on x86_64 or aarch64");
    // Each name is libc's SYS_<name>; the table drops the prefix.
    macro_rules! check_sys {
        ($($name:ident),* $(,)?) => {$(
            assert_eq!(
                arch.syscall_number(&stringify!($name)[4..]).unwrap(),
                Some(libc::$name as u32),
                "{} on {arch}", stringify!($name)
            );
        )*};
    }
    check_sys!(
        SYS_read,
        SYS_write,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_move_mount,
        SYS_open_tree,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_mount_setattr,
        SYS_unshare,
        SYS_setns,
        SYS_clone,
        SYS_clone3,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pidfd_getfd,
        SYS_kcmp,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_reboot,
        SYS_swapon,
        SYS_swapoff,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_settimeofday,
        SYS_adjtimex,
        SYS_acct,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_lookup_dcookie,
        SYS_syslog,
        SYS_vhangup,
        SYS_nfsservctl,
        SYS_personality,
        SYS_ioctl,
        SYS_socket,
        SYS_socketpair,
        SYS_sched_setscheduler,
        SYS_sched_setattr,
        SYS_sched_setparam,
        SYS_execve,
        SYS_execveat,
        SYS_seccomp,
        SYS_capset,
        SYS_prctl,
        SYS_close_range,
        SYS_mseal,
    );
    #[cfg(target_arch = "x86_64")]
    check_sys!(SYS_iopl, SYS_ioperm, SYS_modify_ldt, SYS_fork, SYS_vfork);
}

#[test]
fn argument_constants_match_host_libc() {
    assert_eq!(CLONE_NEWTIME, libc::CLONE_NEWTIME as u32);
    assert_eq!(CLONE_NEWNS, libc::CLONE_NEWNS as u32);
    assert_eq!(CLONE_NEWCGROUP, libc::CLONE_NEWCGROUP as u32);
    assert_eq!(CLONE_NEWUTS, libc::CLONE_NEWUTS as u32);
    assert_eq!(CLONE_NEWIPC, libc::CLONE_NEWIPC as u32);
    assert_eq!(CLONE_NEWUSER, libc::CLONE_NEWUSER as u32);
    assert_eq!(CLONE_NEWPID, libc::CLONE_NEWPID as u32);
    assert_eq!(CLONE_NEWNET, libc::CLONE_NEWNET as u32);
    assert_eq!(libc::TIOCSTI, u64::from(TIOCSTI));
    assert_eq!(libc::TIOCLINUX, u64::from(TIOCLINUX));
    assert_eq!(AF_UNIX, libc::AF_UNIX as u32);
    assert_eq!(AF_INET, libc::AF_INET as u32);
    assert_eq!(AF_INET6, libc::AF_INET6 as u32);
    assert_eq!(AF_NETLINK, libc::AF_NETLINK as u32);
    assert_eq!(SCHED_FIFO, libc::SCHED_FIFO as u32);
    assert_eq!(SCHED_RR, libc::SCHED_RR as u32);
    assert_eq!(SCHED_RESET_ON_FORK, libc::SCHED_RESET_ON_FORK as u32);
}

#[test]
fn every_row_has_a_known_syscall_and_a_reason() {
    for rule in DEFAULT_RULES {
        assert!(
            ARCHES
                .iter()
                .any(|arch| arch.syscall_number(&rule.syscall).unwrap().is_some()),
            "{} exists on neither architecture",
            rule.syscall
        );
        assert!(rule.why.len() >= 10, "{} needs a reason", rule.syscall);
    }
}

#[test]
fn default_profile_compiles_for_both_arches() {
    for arch in ARCHES {
        let compiled = default_for(arch);
        assert_eq!(compiled.arch(), arch);
        assert_eq!(compiled.programs().len(), 2, "EPERM program, then ENOSYS");
        assert!(!compiled.is_unconfined());
        for len in compiled.instruction_counts() {
            assert!(len <= MAX_PROGRAM_LEN);
        }
    }
}

/// Every system call the policy promises to deny outright, with its errno.
const DENIED: &[(&str, Verdict)] = &[
    ("mount", EPERM),
    ("umount2", EPERM),
    ("pivot_root", EPERM),
    ("move_mount", EPERM),
    ("open_tree", EPERM),
    ("open_tree_attr", EPERM),
    ("fsopen", EPERM),
    ("fsconfig", EPERM),
    ("fsmount", EPERM),
    ("fspick", EPERM),
    ("mount_setattr", EPERM),
    ("unshare", EPERM),
    ("setns", EPERM),
    ("ptrace", EPERM),
    ("process_vm_readv", EPERM),
    ("process_vm_writev", EPERM),
    ("pidfd_getfd", EPERM),
    ("kcmp", EPERM),
    ("kexec_load", EPERM),
    ("kexec_file_load", EPERM),
    ("init_module", EPERM),
    ("finit_module", EPERM),
    ("delete_module", EPERM),
    ("reboot", EPERM),
    ("swapon", EPERM),
    ("swapoff", EPERM),
    ("bpf", EPERM),
    ("perf_event_open", EPERM),
    ("userfaultfd", EPERM),
    ("keyctl", EPERM),
    ("add_key", EPERM),
    ("request_key", EPERM),
    ("io_uring_setup", EPERM),
    ("io_uring_enter", EPERM),
    ("io_uring_register", EPERM),
    ("open_by_handle_at", EPERM),
    ("name_to_handle_at", EPERM),
    ("clock_settime", EPERM),
    ("clock_adjtime", EPERM),
    ("settimeofday", EPERM),
    ("adjtimex", EPERM),
    ("acct", EPERM),
    ("quotactl", EPERM),
    ("quotactl_fd", EPERM),
    ("lookup_dcookie", EPERM),
    ("syslog", EPERM),
    ("vhangup", EPERM),
    ("nfsservctl", EPERM),
    ("clone3", ENOSYS),
    ("sched_setattr", ENOSYS),
];

const X86_64_ONLY_DENIED: &[&str] = &["iopl", "ioperm", "modify_ldt"];

#[test]
fn named_syscalls_are_denied_on_both_arches() {
    for arch in ARCHES {
        let compiled = default_for(arch);
        for (name, expected) in DENIED {
            // Whatever the arguments.
            for args in [[0u64; 6], [u64::MAX; 6], [1, 2, 3, 4, 5, 6]] {
                assert_eq!(
                    &call(&compiled, name, &args),
                    expected,
                    "{name} on {arch} with {args:?}"
                );
            }
        }
        for name in X86_64_ONLY_DENIED {
            match arch {
                SeccompArch::X86_64 => assert_eq!(call(&compiled, name, &[]), EPERM, "{name}"),
                SeccompArch::Aarch64 => assert_eq!(arch.syscall_number(name).unwrap(), None),
            }
        }
    }
}

#[test]
fn what_init_and_normal_programs_use_is_allowed() {
    let common = [
        "read",
        "write",
        "openat",
        "close",
        "execve",
        "execveat",
        "setresuid",
        "setresgid",
        "setgroups",
        "setsid",
        "kill",
        "wait4",
        "waitid",
        "signalfd4",
        "sendmsg",
        "recvmsg",
        "ppoll",
        "close_range",
        "prctl",
        "dup3",
        "pipe2",
        "chdir",
        "mknodat",
        "mmap",
        "mprotect",
        "munmap",
        "brk",
        "futex",
        "rt_sigaction",
        "rt_sigprocmask",
        "exit_group",
        "getpid",
        "sched_setparam",
        "sched_getattr",
        "seccomp",
        "capget",
        "capset",
        "setpriority",
        "memfd_create",
        "epoll_pwait",
        "statx",
        "newfstatat",
        "getdents64",
        "connect",
        "bind",
        "listen",
        "accept4",
        "chroot",
        "sethostname",
        "statmount",
        "listmount",
        "mseal",
    ];
    for arch in ARCHES {
        let compiled = default_for(arch);
        for name in common {
            assert_eq!(
                call(&compiled, name, &[]),
                Verdict::Allow,
                "{name} on {arch}"
            );
        }
    }
    let compiled = default_for(SeccompArch::X86_64);
    for name in [
        "fork",
        "vfork",
        "dup2",
        "poll",
        "pipe",
        "arch_prctl",
        "open",
        "mknod",
    ] {
        assert_eq!(call(&compiled, name, &[]), Verdict::Allow, "{name}");
    }
}

#[test]
fn ioctl_tiocsti_is_denied_even_with_high_bits() {
    for arch in ARCHES {
        let compiled = default_for(arch);
        let tcgets = 0x5401;
        assert_eq!(call(&compiled, "ioctl", &[0, tcgets]), Verdict::Allow);
        assert_eq!(
            call(&compiled, "ioctl", &[0, 0x1_0000_0000 | tcgets]),
            Verdict::Allow
        );
        for request in [TIOCSTI, TIOCLINUX] {
            let request = u64::from(request);
            assert_eq!(call(&compiled, "ioctl", &[0, request]), EPERM, "{arch}");
            // The kernel truncates the request to 32 bits: these are the
            // same call to it and must be to the filter.
            for high in [0x1_0000_0000, 0xffff_ffff_0000_0000] {
                assert_eq!(
                    call(&compiled, "ioctl", &[0, high | request]),
                    EPERM,
                    "{request:#x} | {high:#x} on {arch}"
                );
            }
        }
    }
}

#[test]
fn x32_numbers_are_denied_on_x86_64() {
    let compiled = default_for(SeccompArch::X86_64);
    for number in [
        X32_SYSCALL_BIT,
        X32_SYSCALL_BIT | 39,
        X32_SYSCALL_BIT | 165,
        u32::MAX,
    ] {
        let data = Data {
            nr: number,
            arch: SeccompArch::X86_64.audit_arch(),
            args: [0; 6],
        };
        assert_eq!(verdict(evaluate(&compiled, &data)), ENOSYS, "{number:#x}");
    }
    // Just below the x32 range: an (unknown) native number, allowed (the
    // kernel answers ENOSYS itself).
    let data = Data {
        nr: X32_SYSCALL_BIT - 1,
        arch: SeccompArch::X86_64.audit_arch(),
        args: [0; 6],
    };
    assert_eq!(verdict(evaluate(&compiled, &data)), Verdict::Allow);
    // Even a profile with no rules keeps the guard.
    let empty = SeccompProfile::from_rules(Vec::new())
        .compile(SeccompArch::X86_64)
        .unwrap();
    let data = Data {
        nr: X32_SYSCALL_BIT | 165,
        arch: SeccompArch::X86_64.audit_arch(),
        args: [0; 6],
    };
    assert_eq!(verdict(evaluate(&empty, &data)), ENOSYS);
}

#[test]
fn foreign_architectures_are_killed() {
    for (arch, foreign) in [
        (SeccompArch::X86_64, AUDIT_ARCH_I386),
        (SeccompArch::Aarch64, AUDIT_ARCH_ARM),
    ] {
        let compiled = default_for(arch);
        // getpid on i386 (20) and arm (20), and a call the list denies.
        for number in [20, 21, X32_SYSCALL_BIT | 20] {
            let data = Data {
                nr: number,
                arch: foreign,
                args: [0; 6],
            };
            assert_eq!(verdict(evaluate(&compiled, &data)), Verdict::Kill, "{arch}");
        }
    }
}

#[test]
fn socket_families() {
    const AF_PACKET: u64 = 17;
    const AF_ALG: u64 = 38;
    const AF_VSOCK: u64 = 40;
    for arch in ARCHES {
        let compiled = default_for(arch);
        for call_name in ["socket", "socketpair"] {
            for family in [AF_UNIX, AF_INET, AF_INET6, AF_NETLINK] {
                let family = u64::from(family);
                assert_eq!(call(&compiled, call_name, &[family, 1, 0]), Verdict::Allow);
            }
            for family in [AF_VSOCK, AF_PACKET, AF_ALG, 0, 45, 0xffff_ffff] {
                assert_eq!(
                    call(&compiled, call_name, &[family, 1, 0]),
                    EPERM,
                    "{call_name}({family}) on {arch}"
                );
            }
        }
    }
}

#[test]
fn clone_with_namespace_flags_is_denied() {
    const SIGCHLD: u64 = 17;
    let fork_flags = 0x0120_0000 | SIGCHLD; // CHILD_SETTID | CHILD_CLEARTID, glibc fork
    let vfork_flags = 0x0000_4100 | SIGCHLD; // VM | VFORK
    let thread_flags = 0x003d_0f00; // pthread_create
    for arch in ARCHES {
        let compiled = default_for(arch);
        for flags in [SIGCHLD, fork_flags, vfork_flags, thread_flags, 0] {
            assert_eq!(
                call(&compiled, "clone", &[flags]),
                Verdict::Allow,
                "{flags:#x}"
            );
        }
        for flag in [
            CLONE_NEWNS,
            CLONE_NEWUSER,
            CLONE_NEWPID,
            CLONE_NEWNET,
            CLONE_NEWUTS,
            CLONE_NEWIPC,
            CLONE_NEWCGROUP,
            CLONE_NEWTIME,
        ] {
            let flag = u64::from(flag);
            assert_eq!(
                call(&compiled, "clone", &[flag | SIGCHLD]),
                EPERM,
                "{flag:#x} on {arch}"
            );
            assert_eq!(call(&compiled, "clone", &[flag | fork_flags]), EPERM);
            // Garbage in the high half changes nothing: the kernel ignores it.
            assert_eq!(
                call(&compiled, "clone", &[0xffff_0000_0000_0000 | flag]),
                EPERM
            );
        }
        assert_eq!(
            call(&compiled, "clone", &[0xffff_0000_0000_0000 | fork_flags]),
            Verdict::Allow
        );
        // clone3 answers ENOSYS whatever its struct says.
        assert_eq!(call(&compiled, "clone3", &[0, 88]), ENOSYS);
    }
}

#[test]
fn personality_allows_only_linux_query_and_linux32() {
    for arch in ARCHES {
        let compiled = default_for(arch);
        for persona in [0, 8, 0xffff_ffff, u64::MAX] {
            assert_eq!(
                call(&compiled, "personality", &[persona]),
                Verdict::Allow,
                "{persona:#x} on {arch}"
            );
        }
        let addr_no_randomize = 0x004_0000;
        let read_implies_exec = 0x040_0000;
        for persona in [
            addr_no_randomize,
            read_implies_exec,
            8 | addr_no_randomize,
            1,
            0x20000,
        ] {
            assert_eq!(
                call(&compiled, "personality", &[persona]),
                EPERM,
                "{persona:#x}"
            );
        }
    }
}

#[test]
fn realtime_scheduling_is_denied() {
    const SCHED_OTHER: u64 = 0;
    const SCHED_BATCH: u64 = 3;
    const SCHED_IDLE: u64 = 5;
    let reset = u64::from(SCHED_RESET_ON_FORK);
    for arch in ARCHES {
        let compiled = default_for(arch);
        for policy in [SCHED_FIFO, SCHED_RR] {
            let policy = u64::from(policy);
            assert_eq!(call(&compiled, "sched_setscheduler", &[0, policy]), EPERM);
            assert_eq!(
                call(&compiled, "sched_setscheduler", &[0, policy | reset]),
                EPERM
            );
            assert_eq!(
                call(
                    &compiled,
                    "sched_setscheduler",
                    &[0, 0x1_0000_0000 | policy]
                ),
                EPERM
            );
        }
        for policy in [SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_OTHER | reset] {
            assert_eq!(
                call(&compiled, "sched_setscheduler", &[0, policy]),
                Verdict::Allow
            );
        }
        assert_eq!(call(&compiled, "sched_setparam", &[0, 0]), Verdict::Allow);
        assert_eq!(call(&compiled, "sched_setattr", &[0, 0, 0]), ENOSYS);
    }
}

#[test]
fn callers_can_extend_override_and_remove() {
    for arch in ARCHES {
        let profile = SeccompProfile::default()
            .deny("chroot")
            .deny_with_errno("ptrace", libc::EACCES)
            .deny("clone3")
            .without("io_uring_setup");
        let compiled = profile.compile(arch).unwrap();
        assert_eq!(compiled.programs().len(), 3);
        assert_eq!(call(&compiled, "chroot", &[]), EPERM);
        assert_eq!(call(&compiled, "ptrace", &[]), Verdict::Errno(libc::EACCES));
        assert_eq!(call(&compiled, "clone3", &[]), EPERM);
        assert_eq!(call(&compiled, "sched_setattr", &[]), ENOSYS);
        assert_eq!(call(&compiled, "io_uring_setup", &[]), Verdict::Allow);
        assert_eq!(call(&compiled, "io_uring_enter", &[]), EPERM);
        assert_eq!(call(&compiled, "mount", &[]), EPERM);

        // Rules added with with_rule keep the others: between two errno
        // programs, the one whose action first appears later wins.
        let stacked = SeccompProfile::default()
            .with_rule(SyscallRule::new(
                "ptrace",
                ArgMatch::Always,
                Action::Errno(libc::EACCES),
                "test",
            ))
            .compile(arch)
            .unwrap();
        assert_eq!(call(&stacked, "ptrace", &[]), Verdict::Errno(libc::EACCES));

        // A replacement profile only has its own rules.
        let replaced = SeccompProfile::from_rules(vec![SyscallRule::new(
            "getpid",
            ArgMatch::Always,
            Action::KillProcess,
            "test",
        )])
        .compile(arch)
        .unwrap();
        assert_eq!(call(&replaced, "getpid", &[]), Verdict::Kill);
        assert_eq!(call(&replaced, "mount", &[]), Verdict::Allow);

        // An unconditional row wins over conditional rows of the same
        // action for the same call, in either order.
        let both = SeccompProfile::from_rules(vec![
            SyscallRule::deny_if("ioctl", ArgMatch::Eq { arg: 1, value: 1 }, "test"),
            SyscallRule::deny("ioctl", "test"),
            SyscallRule::deny_if("ioctl", ArgMatch::Eq { arg: 1, value: 2 }, "test"),
        ])
        .compile(arch)
        .unwrap();
        assert_eq!(call(&both, "ioctl", &[0, 7]), EPERM);
    }
}

#[test]
fn unconfined_has_no_programs() {
    let profile = SeccompProfile::unconfined();
    assert!(profile.is_unconfined());
    let compiled = profile.compile_native().unwrap();
    assert!(compiled.is_unconfined());
    assert!(compiled.programs().is_empty());
    assert_eq!(compiled.install(), Ok(()));
}

#[test]
fn installing_another_arch_is_refused() {
    let foreign = match SeccompArch::native().unwrap() {
        SeccompArch::X86_64 => SeccompArch::Aarch64,
        SeccompArch::Aarch64 => SeccompArch::X86_64,
    };
    // Refused before any system call, so this is safe in the test process.
    assert_eq!(default_for(foreign).install(), Err(libc::EINVAL));
}

#[test]
fn errors_name_the_syscall_and_arch() {
    let err = SeccompProfile::default()
        .deny("frobnicate")
        .compile(SeccompArch::X86_64)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "seccomp rule for `frobnicate`: unknown system call (not in the x86_64 or aarch64 table)"
    );
    let err = SeccompProfile::default()
        .deny_with_errno("ptrace", 0)
        .compile(SeccompArch::Aarch64)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "seccomp rule for `ptrace`: errno 0 out of range (1..=4095)"
    );
    let err = SeccompProfile::default()
        .with_rule(SyscallRule::deny_if(
            "ioctl",
            ArgMatch::Eq { arg: 6, value: 1 },
            "test",
        ))
        .compile(SeccompArch::X86_64)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "seccomp rule for `ioctl`: argument index out of range (0..=5)"
    );
    let err = SeccompProfile::default()
        .with_rule(SyscallRule::deny_if(
            "socket",
            ArgMatch::NotIn {
                arg: 0,
                values: Cow::Borrowed(&[]),
            },
            "test",
        ))
        .compile(SeccompArch::X86_64)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("seccomp rule for `socket`: NotIn"),
        "{err}"
    );
    // Too many rules for one program.
    let mut profile = SeccompProfile::from_rules(Vec::new());
    for value in 0..1000 {
        profile = profile.with_rule(SyscallRule::deny_if(
            "ioctl",
            ArgMatch::Eq { arg: 1, value },
            "test",
        ));
    }
    let err = profile
        .compile(SeccompArch::Aarch64)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("compiling the seccomp filter for aarch64 (errno 1)"),
        "{err}"
    );
    // A call that one architecture lacks is skipped there, not an error.
    let compiled = SeccompProfile::from_rules(vec![SyscallRule::deny("iopl", "test")])
        .compile(SeccompArch::Aarch64)
        .unwrap();
    assert_eq!(compiled.programs().len(), 1);
}

#[test]
fn cache_compiles_each_profile_once() {
    let cache = SeccompCache::native().unwrap();
    assert!(cache.is_empty());
    let a = cache.get(&SeccompProfile::default()).unwrap();
    let b = cache.get(&SeccompProfile::default()).unwrap();
    assert!(a.ptr_eq(&b));
    let custom = cache
        .get(&SeccompProfile::default().deny("chroot"))
        .unwrap();
    assert!(!custom.ptr_eq(&a));
    let custom_again = cache
        .get(&SeccompProfile::default().deny("chroot"))
        .unwrap();
    assert!(custom.ptr_eq(&custom_again));
    assert_eq!(cache.len(), 2);
}

#[test]
fn the_cache_stays_bounded_whatever_profiles_callers_pass() {
    let cache = SeccompCache::native().unwrap();
    for errno in 1..=(SECCOMP_CACHE_ENTRIES * 3) as i32 {
        let profile = SeccompProfile::default().deny_with_errno("acct", errno);
        cache.get(&profile).unwrap();
        assert!(cache.len() <= SECCOMP_CACHE_ENTRIES);
    }
}

/// Prints the program sizes and the compile time (`--nocapture`).
#[test]
fn report_sizes_and_compile_time() {
    for arch in ARCHES {
        let rounds = 200u32;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(SeccompProfile::default().compile(arch).unwrap());
        }
        let per_compile = start.elapsed() / rounds;
        let compiled = default_for(arch);
        println!(
            "{arch}: programs {:?} instructions, compile {per_compile:?}",
            compiled.instruction_counts()
        );
    }
}
