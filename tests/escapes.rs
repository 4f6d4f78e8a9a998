//! Escape tests: one per attack class, each named after the invariant of
//! SECURITY.md it guards (S1…), each able to fail: the attack is really
//! made, from inside a real sandbox, with a static probe (`probe/probe.c`)
//! or the template's shell, and `seccomp_is_what_stops_each_denied_call`
//! shows for the seccomp-only defences that the very same probes get
//! through once the filter is off.
//!
//! Root and the real kernel; nothing here sends a packet off the machine
//! (egress goes to a veth pair in a namespace the test creates) or changes
//! a global setting.

mod probe;

use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sandlot::SeccompProfile;
use sandlot::{Error, RunOptions, Runtime, Sandbox, SandboxOptions};
use sandlot_tests::{eventually, process_exists, require_root, runtime, sh};

/// A sandbox of the default template and profile, with the probe in it.
fn probed(rt: &Runtime) -> Sandbox {
    probed_with(rt, SandboxOptions::default())
}

fn probed_with(rt: &Runtime, options: SandboxOptions) -> Sandbox {
    let sb = rt.create(options).expect("create a sandbox");
    probe::install(&sb);
    sb
}

fn as_user() -> RunOptions {
    RunOptions::default().user("user")
}

/// Host pids of every process in the sandbox's pid namespace, init first.
fn host_pids(sb: &Sandbox) -> Vec<i32> {
    let init = sb.info().init_pid.expect("init runs");
    let ns = fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    let mut pids = vec![init];
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid != init && fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns) {
            pids.push(pid);
        }
    }
    pids
}

/// The host pid of the process whose pid inside the sandbox is `inner`.
fn host_pid_of(sb: &Sandbox, inner: i32) -> i32 {
    host_pids(sb)
        .into_iter()
        .find(|pid| {
            status_field(*pid, "NSpid")
                .and_then(|ids| ids.split_whitespace().last().map(str::to_owned))
                == Some(inner.to_string())
        })
        .unwrap_or_else(|| panic!("no host pid for pid {inner} of the sandbox"))
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

/// A long-running command; its pid inside.
fn sleeper(sb: &Sandbox, options: RunOptions) -> sandlot::CommandHandle {
    sb.commands()
        .spawn(["sleep", "300"], options)
        .expect("start sleep")
}

/// A host file no sandbox may ever see, removed on drop.
struct HostMarker(PathBuf);

impl HostMarker {
    fn new(tag: &str) -> HostMarker {
        let path = PathBuf::from(format!(
            "/tmp/sandlot-host-marker-{tag}-{}",
            std::process::id()
        ));
        fs::write(&path, "host secret").unwrap();
        HostMarker(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for HostMarker {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A host process killed and reaped on drop.
struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------- S1

#[test]
fn s1_every_sandbox_process_runs_as_an_unprivileged_host_uid() {
    let rt = runtime();
    let sb = probed(&rt);
    let _root_cmd = sleeper(&sb, RunOptions::default());
    let _user_cmd = sleeper(&sb, as_user());
    let pids = host_pids(&sb);
    assert!(pids.len() >= 3, "init and two commands: {pids:?}");
    let mut seen_user = false;
    for pid in &pids {
        for field in ["Uid", "Gid"] {
            let ids: Vec<u32> = status_field(*pid, field)
                .unwrap()
                .split_whitespace()
                .map(|id| id.parse().unwrap())
                .collect();
            // Real, effective, saved and filesystem ids alike.
            assert_eq!(ids.len(), 4);
            for id in &ids {
                assert!(
                    (100_000..165_536).contains(id),
                    "pid {pid} has host {field} {ids:?}: outside the sandbox range"
                );
            }
            seen_user |= ids[0] == 101_000;
        }
    }
    assert!(seen_user, "the command run as `user` is host uid 101000");
    // The same from inside: root is 0 there, the user 1000.
    probe::expect(&sb, &["ids"], "ok 0 0 0");
    let result = probe::run_with(&sb, &["ids"], as_user());
    assert_eq!(probe::answer_of(&["ids"], &result), "ok 1000 1000 1000");
}

// ---------------------------------------------------------------- S2

#[test]
fn s2_nothing_can_be_mounted_or_unmounted_inside() {
    let rt = runtime();
    let sb = probed(&rt);
    for args in [
        &["mount", "tmpfs"][..],
        &["mount", "proc"],
        &["mount", "sysfs"],
        &["mount", "cgroup", "memory"],
        &["mount", "cgroup2"],
        &["bind", "/usr"],
        &["umount", "/proc/keys"],
        &["umount", "/proc/sys"],
        &["umount", "/usr"],
        &["fsopen", "tmpfs"],
        &["open_tree", "/usr"],
    ] {
        probe::expect(&sb, args, "err EPERM");
    }
    // The masks are still there afterwards.
    assert_eq!(sh(&sb, "wc -c < /proc/keys").trim(), "0");
}

// ---------------------------------------------------------------- S3

#[test]
fn s3_no_namespace_can_be_made_or_joined_to_regain_capabilities() {
    let rt = runtime();
    let sb = probed(&rt);
    for ns in ["user", "ns", "net", "pid", "uts", "ipc", "cgroup", "time"] {
        probe::expect(&sb, &["unshare", ns], "err EPERM");
        if ns != "time" {
            // CLONE_NEWTIME's bit is the exit signal's in clone(2).
            probe::expect(&sb, &["clone", ns], "err EPERM");
        }
    }
    // The nested user namespace that would hand back every capability.
    probe::expect(&sb, &["regain-caps"], "err EPERM");
    probe::expect(&sb, &["setns", "/proc/self/ns/net"], "err EPERM");
    // clone3 hides its flags from the filter: ENOSYS sends libc to clone.
    probe::expect(&sb, &["clone3"], "err ENOSYS");
    // Plain processes and threads still work.
    assert!(probe::answer(&sb, &["fork"]).starts_with("ok "));
    assert!(probe::answer(&sb, &["clone", "none"]).starts_with("ok "));
    sh(
        &sb,
        "python3 -c 'import threading; t = threading.Thread(target=print); t.start(); t.join()'",
    );
}

// ---------------------------------------------------------------- S4

#[test]
fn s4_no_process_can_trace_init_or_a_sibling() {
    let rt = runtime();
    let sb = probed(&rt);
    let sibling = sleeper(&sb, RunOptions::default());
    let sibling_pid = sibling.pid().to_string();
    for target in ["1", sibling_pid.as_str()] {
        probe::expect(&sb, &["ptrace", target], "err EPERM");
        probe::expect(&sb, &["vm_readv", target, "400000"], "err EPERM");
        probe::expect(&sb, &["pidfd_getfd", target, "3"], "err EPERM");
    }
    // As the unprivileged user, against a process of its own.
    let mine = sleeper(&sb, as_user());
    let result = probe::run_with(&sb, &["ptrace", &mine.pid().to_string()], as_user());
    assert_eq!(probe::answer_of(&["ptrace"], &result), "err EPERM");
}

// ---------------------------------------------------------------- S5

#[test]
fn s5_kill_minus_one_never_reaches_the_host() {
    let rt = runtime();
    let sb = probed(&rt);
    // A host process with the very uid of sandbox root: only the pid
    // namespace stands between it and kill(-1).
    let host = HostProcess(
        Command::new("sleep")
            .arg("300")
            .uid(probe::SANDBOX_ROOT_UID)
            .gid(probe::SANDBOX_ROOT_UID)
            .spawn()
            .unwrap(),
    );
    let other = rt.create(SandboxOptions::default()).unwrap();
    let other_cmd = sleeper(&other, RunOptions::default());
    let other_host_pid = host_pid_of(&other, other_cmd.pid());

    // Something of its own to kill, so that kill(-1) reports success.
    let own = sleeper(&sb, RunOptions::default());
    let own_host_pid = host_pid_of(&sb, own.pid());
    probe::expect(&sb, &["kill", "-1", "9"], "ok 0");
    assert!(eventually(Duration::from_secs(5), || !process_exists(
        own_host_pid
    )));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        process_exists(host.0.id() as i32),
        "kill(-1) inside killed a host process"
    );
    assert!(
        process_exists(other_host_pid),
        "kill(-1) killed another sandbox's process"
    );
    // A host pid means nothing inside: it names no process, or one of the
    // sandbox's own.
    let answer = probe::answer(&sb, &["kill", &host.0.id().to_string(), "0"]);
    assert_eq!(answer, "err ESRCH");
    assert!(sb.is_alive(), "the sandbox itself survives");
}

// ---------------------------------------------------------------- S6

#[test]
fn s6_kernel_knobs_in_proc_are_masked_or_read_only() {
    let rt = runtime();
    let sb = probed(&rt);
    // Host-wide knobs: never writable.
    for knob in [
        "/proc/sysrq-trigger",
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches",
    ] {
        probe::expect_err(&sb, &["open-write", knob]);
    }
    // Knobs of the sandbox's own IPC namespace, which the kernel lets the
    // namespace's root write: the read-only mask is what refuses them.
    for knob in [
        "/proc/sys/kernel/shmmax",
        "/proc/sys/kernel/msgmax",
        "/proc/sys/fs/mqueue/msg_max",
    ] {
        probe::expect(&sb, &["open-write", knob], "err EROFS");
    }
    // Hidden behind /dev/null or an empty directory (where this kernel has
    // them at all).
    for file in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ] {
        if Path::new(file).exists() {
            assert_eq!(sh(&sb, &format!("wc -c < {file}")).trim(), "0", "{file}");
        }
    }
    for dir in ["/proc/acpi", "/proc/scsi", "/proc/asound"] {
        if Path::new(dir).exists() {
            assert_eq!(
                sh(&sb, &format!("ls -A {dir} | wc -l")).trim(),
                "0",
                "{dir}"
            );
        }
    }
    // And the mount table says so.
    let mounts = sh(&sb, "cat /proc/self/mountinfo");
    for ro in [
        "/proc/sys",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
        "/proc/sysrq-trigger",
    ] {
        if !Path::new(ro).exists() {
            continue; // this kernel has no such knob (CONFIG_MAGIC_SYSRQ off)
        }
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(ro))
            .unwrap_or_else(|| panic!("{ro} is not masked:\n{mounts}"));
        assert!(line.split(' ').nth(5).unwrap().starts_with("ro"), "{line}");
    }
}

// ---------------------------------------------------------------- S7

#[test]
fn s7_no_cgroup_filesystem_or_sysfs_is_reachable() {
    let rt = runtime();
    let sb = probed(&rt);
    // CVE-2022-0492: a v1 cgroupfs mounted inside, then release_agent.
    probe::expect(&sb, &["mount", "cgroup", "memory"], "err EPERM");
    probe::expect(&sb, &["mount", "cgroup", "none,name=sandlot"], "err EPERM");
    probe::expect(&sb, &["mount", "cgroup2"], "err EPERM");
    probe::expect(&sb, &["mount", "sysfs"], "err EPERM");
    let mounts = sh(&sb, "cat /proc/self/mountinfo");
    for line in mounts.lines() {
        let fstype = line
            .split(" - ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap();
        assert!(
            ![
                "cgroup",
                "cgroup2",
                "sysfs",
                "debugfs",
                "tracefs",
                "securityfs",
                "bpf"
            ]
            .contains(&fstype),
            "a kernel filesystem is mounted inside: {line}"
        );
    }
    assert_eq!(
        sh(&sb, "ls -A /sys | wc -l").trim(),
        "0",
        "/sys is an empty directory"
    );
    probe::expect(&sb, &["opendir", "/sys/fs/cgroup"], "err ENOENT");
    assert_eq!(
        sh(&sb, "find / -xdev -name release_agent 2>/dev/null | wc -l").trim(),
        "0"
    );
}

// ---------------------------------------------------------------- S8

#[test]
fn s8_no_device_node_can_be_made_and_no_host_device_is_present() {
    let rt = runtime();
    let sb = probed(&rt);
    probe::expect(&sb, &["mknod-blk", "/tmp/sda"], "err EPERM");
    probe::expect(&sb, &["mknod-chr", "/tmp/mem"], "err EPERM");
    // /dev itself is read-only.
    probe::expect(&sb, &["mknod-chr", "/dev/mem"], "err EROFS");
    for device in [
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/sda",
        "/dev/vda",
        "/dev/kvm",
        "/dev/vsock",
        "/dev/console",
    ] {
        probe::expect(&sb, &["read", device], "err ENOENT");
    }
    // FIFOs are not devices and keep working.
    sh(&sb, "mkfifo /tmp/fifo && test -p /tmp/fifo");
}

// ---------------------------------------------------------------- S9

#[test]
fn s9_files_cannot_be_opened_by_handle() {
    let rt = runtime();
    let sb = probed(&rt);
    // "shocker": a forged handle for an ext4 root inode, resolved against a
    // host bind mount (/usr), would open the host's root directory.
    probe::expect(&sb, &["name_to_handle_at"], "err EPERM");
    probe::expect(&sb, &["open_by_handle_at", "/usr"], "err EPERM");
    probe::expect(&sb, &["open_by_handle_at", "/"], "err EPERM");
}

// ---------------------------------------------------------------- S10

#[test]
fn s10_chroot_cannot_lead_out_of_the_sandbox_root() {
    let rt = runtime();
    let sb = probed(&rt);
    let marker = HostMarker::new("chroot");
    // CAP_SYS_CHROOT is not kept; were it, the old root is detached and
    // climbing out of a jail would end at the sandbox's own root.
    probe::expect(&sb, &["chroot-escape", marker.path()], "err EPERM");
    assert_eq!(
        sh(
            &sb,
            &format!("test -e {} && echo visible || echo absent", marker.path())
        )
        .trim(),
        "absent"
    );
}

// ---------------------------------------------------------------- S11

#[test]
fn s11_terminal_input_cannot_be_injected() {
    let rt = runtime();
    let sb = probed(&rt);
    // On a pty that is the probe's own controlling terminal, where the
    // kernel itself would allow it.
    probe::expect(&sb, &["tiocsti"], "err EPERM");
    // The request with garbage in the high half: the kernel truncates it
    // to 32 bits, so must the filter.
    probe::expect(&sb, &["tiocsti64"], "err EPERM");
    probe::expect(&sb, &["tioclinux"], "err EPERM");
}

#[test]
fn s12_every_command_leads_its_own_session_without_a_terminal() {
    let rt = runtime();
    let sb = probed(&rt);
    probe::expect(&sb, &["session"], "ok leader=1 tty=ENXIO");
    let result = probe::run_with(&sb, &["session"], as_user());
    assert_eq!(
        probe::answer_of(&["session"], &result),
        "ok leader=1 tty=ENXIO"
    );
}

// ---------------------------------------------------------------- S13

/// One kernel facility per test: each must answer EPERM inside.
fn assert_denied(calls: &[&str]) {
    let rt = runtime();
    let sb = probed(&rt);
    for call in calls {
        probe::expect(&sb, &[call], "err EPERM");
    }
}

#[test]
fn s13_keyrings_are_unreachable() {
    assert_denied(&["keyctl", "add_key", "request_key"]);
}

#[test]
fn s13_bpf_is_denied() {
    assert_denied(&["bpf"]);
}

#[test]
fn s13_perf_event_open_is_denied() {
    assert_denied(&["perf_event_open"]);
}

#[test]
fn s13_userfaultfd_is_denied() {
    assert_denied(&["userfaultfd"]);
}

#[test]
fn s13_io_uring_is_denied() {
    assert_denied(&["io_uring_setup"]);
}

#[test]
fn s13_kexec_is_denied() {
    assert_denied(&["kexec_load", "kexec_file_load"]);
}

#[test]
fn s13_kernel_modules_are_denied() {
    assert_denied(&["init_module", "finit_module", "delete_module"]);
}

#[test]
fn s13_reboot_is_denied() {
    assert_denied(&["reboot"]);
}

#[test]
fn s13_the_clock_cannot_be_set() {
    assert_denied(&["clock_settime", "settimeofday", "adjtimex"]);
}

#[test]
fn s13_host_wide_administration_is_denied() {
    assert_denied(&["swapon", "acct", "quotactl", "syslog", "sched_fifo"]);
    // sched_setattr hides its policy from the filter: ENOSYS, like clone3.
    let rt = runtime();
    let sb = probed(&rt);
    probe::expect(&sb, &["sched_setattr"], "err ENOSYS");
}

// ---------------------------------------------------------------- S14

#[test]
fn s14_the_hostname_is_the_sandboxs_own() {
    let rt = runtime();
    let sb = probed(&rt);
    let host = nix::unistd::gethostname().unwrap();
    probe::expect(&sb, &["sethostname", "escaped"], "err EPERM");
    probe::expect_err(&sb, &["open-write", "/proc/sys/kernel/hostname"]);
    assert_eq!(nix::unistd::gethostname().unwrap(), host);
    assert_eq!(sh(&sb, "hostname").trim(), sb.id());
}

// ---------------------------------------------------------------- S15

#[test]
fn s15_no_host_descriptor_cwd_or_root_reaches_the_sandbox() {
    require_root();
    // Descriptors the host holds without close-on-exec, opened before the
    // runtime and the sandbox exist (runc CVE-2024-21626 leaked one).
    let leaked = open_inheritable(c"/etc/hostname", libc::O_RDONLY);
    let dir = open_inheritable(c"/", libc::O_RDONLY | libc::O_DIRECTORY);
    let rt = runtime();
    let sb = probed(&rt);

    let fds = probe::answer(&sb, &["fds"]);
    let lines: Vec<&str> = fds.lines().collect();
    assert_eq!(lines.last(), Some(&"end"), "{fds}");
    for line in &lines[..lines.len() - 1] {
        let (fd, target) = line.split_once(" -> ").unwrap();
        assert!(
            ["0", "1", "2"].contains(&fd),
            "fd {fd} ({target}) reached a command:\n{fds}"
        );
        assert!(
            target.starts_with("pipe:") || target == "/dev/null",
            "{line}"
        );
    }
    // A command starts in its user's home, under the sandbox's root.
    assert_eq!(
        sh(&sb, "readlink /proc/self/cwd; readlink /proc/self/root").trim(),
        "/root\n/"
    );

    // init's own table, from the host: stdio on /dev/null, the control
    // socket, its signalfd. Nothing of the host's.
    let init = sb.info().init_pid.unwrap();
    let mut fds: Vec<(i32, String)> = fs::read_dir(format!("/proc/{init}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let fd = e.file_name().to_string_lossy().parse().unwrap();
            (
                fd,
                fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect();
    fds.sort();
    let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4], "init's descriptors: {fds:?}");
    for (fd, target) in &fds {
        let expected = match fd {
            0..=2 => target == "/dev/null",
            3 => target.starts_with("socket:"),
            _ => target == "anon_inode:[signalfd]",
        };
        assert!(expected, "init fd {fd} is {target}");
    }
    // Its root and cwd are the sandbox's, not the host's.
    let host_root = fs::metadata("/").unwrap();
    for link in ["root", "cwd"] {
        let meta = fs::metadata(format!("/proc/{init}/{link}")).unwrap();
        assert_ne!(
            (meta.dev(), meta.ino()),
            (host_root.dev(), host_root.ino()),
            "init's {link} is the host's /"
        );
    }
    drop(leaked);
    drop(dir);
}

/// A descriptor without close-on-exec, as a careless host would hold.
fn open_inheritable(path: &std::ffi::CStr, flags: libc::c_int) -> OwnedFd {
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    assert!(
        fd >= 0,
        "open {path:?}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` was just opened here and has no other owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// ---------------------------------------------------------------- S16

#[test]
fn s16_init_is_sealed_and_out_of_reach() {
    let rt = runtime();
    let sb = probed(&rt);
    // runc CVE-2019-5736: overwrite the runtime's binary through
    // /proc/<pid>/exe. init is not dumpable, so nothing inside can even
    // resolve the link, its descriptors or its memory.
    probe::expect(&sb, &["open-write", "/proc/1/exe"], "err EACCES");
    probe::expect(&sb, &["open-rdwr", "/proc/1/exe"], "err EACCES");
    probe::expect(&sb, &["readlink", "/proc/1/exe"], "err EACCES");
    // Its descriptor numbers can be listed, never opened or resolved.
    probe::expect(&sb, &["open-rdwr", "/proc/1/fd/3"], "err EACCES");
    probe::expect(&sb, &["readlink", "/proc/1/fd/3"], "err EACCES");
    probe::expect(&sb, &["read", "/proc/1/mem"], "err EACCES");
    probe::expect(&sb, &["read", "/proc/1/environ"], "err EACCES");
    probe::expect(&sb, &["readlink", "/proc/1/root"], "err EACCES");
    // From the host: a sealed memfd, not a file anyone could write.
    let init = sb.info().init_pid.unwrap();
    let exe = fs::read_link(format!("/proc/{init}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:sandlot-init"),
        "{exe:?}"
    );
    let file = fs::File::open(format!("/proc/{init}/exe")).unwrap();
    let seals = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
    let seals = nix::fcntl::SealFlag::from_bits_truncate(seals);
    assert!(seals.contains(nix::fcntl::SealFlag::F_SEAL_WRITE | nix::fcntl::SealFlag::F_SEAL_SEAL));
    assert!(fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{init}/exe"))
        .is_err());
    // Nothing of the host is ever executed inside a sandbox: commands are
    // the sandbox's own files, started by init, which runs from the memfd.
}

// ---------------------------------------------------------------- S17

#[test]
fn s17_host_files_are_unreachable_through_proc_root() {
    let rt = runtime();
    let sb = probed(&rt);
    let marker = HostMarker::new("procroot");
    let _cmd = sleeper(&sb, RunOptions::default());
    let script = format!(
        "for p in /proc/[0-9]* /proc/self /proc/thread-self; do \
           test -e $p/root{m} && echo LEAK $p; \
           test -e $p/cwd{m} && echo LEAK $p cwd; \
         done; test -e {m} && echo LEAK /; echo done",
        m = marker.path()
    );
    assert_eq!(sh(&sb, &script).trim(), "done");
    // Every root a process inside can name is the sandbox's own /.
    let roots = sh(
        &sb,
        "for p in /proc/[0-9]*; do stat -L -c %d:%i $p/root 2>/dev/null; done | sort -u",
    );
    let own = sh(&sb, "stat -c %d:%i /");
    for root in roots.lines() {
        assert_eq!(root, own.trim());
    }
}

// ---------------------------------------------------------------- S18

#[test]
fn s18_a_setuid_root_binary_grants_nothing() {
    let rt = runtime();
    let sb = probed(&rt);
    // Root inside may make a set-user-ID root binary…
    probe::install_as(&sb, "/tmp/suid-probe", 0o4755);
    assert_eq!(sh(&sb, "stat -c %a:%u /tmp/suid-probe").trim(), "4755:0");
    // …but running it as the user changes nothing.
    let result = sb
        .commands()
        .run(["/tmp/suid-probe", "ids"], as_user())
        .unwrap();
    assert_eq!(probe::answer_of(&["ids"], &result), "ok 1000 1000 1000");
    let result = sb
        .commands()
        .run(
            "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
            as_user(),
        )
        .unwrap();
    assert_eq!(
        result.stdout_str(),
        "CapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
    );
}

// ---------------------------------------------------------------- S19

/// A test host on a veth pair: one end in the host's network namespace,
/// the other in a namespace of our own with a TCP listener. Everything
/// stays on this machine; removed on drop.
struct VethHost {
    netns: String,
    listener: Option<HostProcess>,
    address: String,
}

impl VethHost {
    fn new() -> VethHost {
        let id = std::process::id() % 200 + 20;
        let netns = format!("sandlot-esc-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("ip (apt-get install iproute2)");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let host_end = format!("sle{}h", std::process::id());
        let peer_end = format!("sle{}p", std::process::id());
        remove_stale_test_namespaces();
        let mut veth = VethHost {
            netns: netns.clone(),
            listener: None,
            address: format!("10.251.{id}.2"),
        };
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &peer_end,
        ]);
        ip(&["link", "set", &peer_end, "netns", &netns]);
        ip(&[
            "addr",
            "add",
            &format!("10.251.{id}.1/30"),
            "dev",
            &host_end,
        ]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("10.251.{id}.2/30"),
            "dev",
            &peer_end,
        ]);
        ip(&["-n", &netns, "link", "set", &peer_end, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let listener = Command::new("ip")
            .args(["netns", "exec", &netns, "/usr/bin/python3", "-c"])
            .arg(format!(
                "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
                 s.bind(('10.251.{id}.2', 8080)); s.listen(); print('ready', flush=True)\n\
                 while True: s.accept()[0].close()"
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut listener = HostProcess(listener);
        let mut ready = [0u8; 6];
        listener
            .0
            .stdout
            .take()
            .unwrap()
            .read_exact(&mut ready)
            .unwrap();
        veth.listener = Some(listener);
        veth
    }
}

/// Namespaces of earlier runs that died before their `Drop` (their veth
/// pairs and addresses go with them).
fn remove_stale_test_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("sandlot-esc-") else {
            continue;
        };
        if pid.parse().is_ok_and(|pid: i32| !process_exists(pid)) {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

impl Drop for VethHost {
    fn drop(&mut self) {
        self.listener.take();
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

#[test]
fn s19_nothing_beyond_loopback_is_reachable() {
    let rt = runtime();
    let sb = probed(&rt);
    let veth = VethHost::new();
    // Positive control: the host reaches the test host.
    std::net::TcpStream::connect_timeout(
        &format!("{}:8080", veth.address).parse().unwrap(),
        Duration::from_secs(3),
    )
    .expect("the host reaches the veth test host");
    // The sandbox does not.
    probe::expect(
        &sb,
        &["connect-tcp", &veth.address, "8080"],
        "err ENETUNREACH",
    );
    probe::expect(
        &sb,
        &["connect-tcp", "10.251.0.1", "8080"],
        "err ENETUNREACH",
    );
    // The host's loopback services are not the sandbox's loopback.
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_service.local_addr().unwrap().port().to_string();
    probe::expect(
        &sb,
        &["connect-tcp", "127.0.0.1", &port],
        "err ECONNREFUSED",
    );
    let interfaces = sh(&sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    assert_eq!(interfaces.trim(), "lo");
}

// ---------------------------------------------------------------- S20

#[test]
fn s20_host_unix_sockets_are_unreachable() {
    let rt = runtime();
    let sb = probed(&rt);
    let name = format!("sandlot-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    // Positive control: the host connects.
    std::os::unix::net::UnixStream::connect_addr(&addr).expect("the host reaches its own socket");
    probe::expect(&sb, &["connect-abstract", &name], "err ECONNREFUSED");
    drop(listener);
    // No socket file anywhere in the sandbox's tree (the host's /usr is
    // bound in: a live socket there would be reachable by path).
    assert_eq!(
        sh(
            &sb,
            "find / -path /proc -prune -o -type s -print 2>/dev/null | wc -l"
        )
        .trim(),
        "0"
    );
    // /run is the sandbox's own, and empty.
    assert_eq!(sh(&sb, "ls -A /run | wc -l").trim(), "0");
}

// ---------------------------------------------------------------- S21

#[test]
fn s21_only_unix_ip_and_netlink_sockets_can_be_made() {
    let rt = runtime();
    let sb = probed(&rt);
    // AF_VSOCK (40) reaches the hypervisor on a VM; AF_PACKET (17),
    // AF_ALG (38), AF_KEY (15), AF_TIPC (30), AF_BLUETOOTH (31), AF_RDS (21).
    for (family, kind) in [
        ("40", "1"),
        ("17", "3"),
        ("38", "5"),
        ("15", "3"),
        ("30", "2"),
        ("31", "1"),
        ("21", "5"),
    ] {
        probe::expect(&sb, &["socket", family, kind], "err EPERM");
    }
    for (family, kind) in [("1", "1"), ("2", "1"), ("2", "2"), ("10", "1"), ("16", "3")] {
        let answer = probe::answer(&sb, &["socket", family, kind]);
        assert!(
            answer.starts_with("ok "),
            "socket({family}, {kind}): {answer}"
        );
    }
}

// ---------------------------------------------------------------- S22

#[test]
#[cfg(target_arch = "x86_64")]
fn s22_the_i386_system_call_abi_is_killed() {
    let rt = runtime();
    let sb = probed(&rt);
    let result = probe::run(&sb, &["int80"]);
    assert_eq!(
        result.exit.signal,
        Some(sandlot::Signal::SYS),
        "int 0x80 survived: {:?} {}",
        result.exit,
        result.stdout_str()
    );
}

#[test]
fn s22_aslr_cannot_be_switched_off() {
    let rt = runtime();
    let sb = probed(&rt);
    probe::expect(&sb, &["personality", "0x0040000"], "err EPERM"); // ADDR_NO_RANDOMIZE
    probe::expect(&sb, &["personality", "0x0400000"], "err EPERM"); // READ_IMPLIES_EXEC
    probe::expect(&sb, &["personality", "0xffffffff"], "ok 0");
    let result = sb
        .commands()
        .run("setarch -R true", RunOptions::default())
        .unwrap();
    assert!(!result.success(), "setarch -R switched ASLR off");
}

// ---------------------------------------------------------------- S23

#[test]
fn s23_sandboxes_cannot_signal_trace_or_read_each_other() {
    let rt = runtime();
    let a = probed(&rt);
    let b = probed(&rt);
    sh(&a, "echo secret > /tmp/secret-a && chmod 644 /tmp/secret-a");
    let victim = sleeper(&a, RunOptions::default());
    let victim_host = host_pid_of(&a, victim.pid());
    // Both are host uid 100000: only their namespaces separate them.
    assert_eq!(
        status_field(victim_host, "Uid")
            .unwrap()
            .split_whitespace()
            .next(),
        Some("100000")
    );

    // B sees none of A's processes, by either pid.
    let visible = sh(&b, "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '");
    assert!(
        !visible
            .split_whitespace()
            .any(|p| p == victim_host.to_string()),
        "{visible}"
    );
    probe::expect(&b, &["kill", &victim_host.to_string(), "9"], "err ESRCH");
    probe::expect_err(&b, &["ptrace", &victim_host.to_string()]);
    let _own = sleeper(&b, RunOptions::default());
    probe::expect(&b, &["kill", "-1", "9"], "ok 0");
    std::thread::sleep(Duration::from_millis(200));
    assert!(process_exists(victim_host), "B killed A's process");
    // A's files exist nowhere B can look.
    let script = "test -e /tmp/secret-a && echo LEAK; for p in /proc/[0-9]*; do test -e $p/root/tmp/secret-a && echo LEAK $p; done; echo done";
    assert_eq!(sh(&b, script).trim(), "done");
}

// ---------------------------------------------------------------- S24

#[test]
fn s24_core_dumps_are_off_for_good() {
    let rt = runtime();
    let sb = probed(&rt);
    assert_eq!(sh(&sb, "ulimit -c; ulimit -H -c").trim(), "0\n0");
    probe::expect(&sb, &["raise-core-limit"], "err EPERM");
}

// ---------------------------------------------------------------- S25

#[test]
fn s25_capabilities_no_new_privs_and_seccomp_are_in_force() {
    let rt = runtime();
    let sb = probed(&rt);
    let expected = sandlot::testing::SANDBOX_CAPS
        .iter()
        .fold(0u64, |mask, (cap, _)| mask | cap.bitmask());
    let status = sh(
        &sb,
        "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status",
    );
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .to_string()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    assert_eq!(hex("CapBnd"), expected, "{status}");
    assert_eq!(hex("CapEff"), expected, "{status}");
    assert_eq!(hex("CapPrm"), expected, "{status}");
    assert_eq!(
        hex("CapInh"),
        0,
        "inheritable must be empty (CVE-2022-24769)"
    );
    assert_eq!(hex("CapAmb"), 0);
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2");
    // init too, read from the host.
    let init = sb.info().init_pid.unwrap();
    assert_eq!(status_field(init, "NoNewPrivs").as_deref(), Some("1"));
    assert_eq!(status_field(init, "Seccomp").as_deref(), Some("2"));
    assert_eq!(
        u64::from_str_radix(&status_field(init, "CapBnd").unwrap(), 16).unwrap(),
        expected
    );
}

// ---------------------------------------------------------------- S26

#[test]
fn s26_a_callers_profile_extends_or_replaces_the_default() {
    let rt = runtime();
    // Extended: sockets of every family denied on top of the default.
    let extended = probed_with(
        &rt,
        SandboxOptions::default().seccomp(SeccompProfile::default().deny("socket")),
    );
    probe::expect(&extended, &["socket", "1", "1"], "err EPERM");
    probe::expect(&extended, &["keyctl"], "err EPERM");
    let custom_errno = probed_with(
        &rt,
        SandboxOptions::default()
            .seccomp(SeccompProfile::default().deny_with_errno("socket", libc::EACCES)),
    );
    probe::expect(&custom_errno, &["socket", "1", "1"], "err EACCES");
    // Narrowed: one row removed, the rest kept.
    let narrowed = probed_with(
        &rt,
        SandboxOptions::default().seccomp(SeccompProfile::default().without("personality")),
    );
    probe::expect(&narrowed, &["personality", "0x0040000"], "ok 0");
    probe::expect(&narrowed, &["keyctl"], "err EPERM");
    // Replaced: no rows, but foreign ABIs still die.
    let replaced = probed_with(
        &rt,
        SandboxOptions::default().seccomp(SeccompProfile::from_rules(Vec::new())),
    );
    assert!(probe::answer(&replaced, &["keyctl"]).starts_with("ok "));
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        probe::run(&replaced, &["int80"]).exit.signal,
        Some(sandlot::Signal::SYS)
    );
    // The default is untouched for everyone else.
    let default = probed(&rt);
    probe::expect(&default, &["personality", "0x0040000"], "err EPERM");
    assert!(probe::answer(&default, &["socket", "1", "1"]).starts_with("ok "));
}

// ---------------------------------------------------------------- controls

/// The same attempts with the filter off: each gets through (or fails for
/// another reason than EPERM), so seccomp, not luck, is what stops them in
/// the tests above — and those tests would go red without it.
#[test]
fn seccomp_is_what_stops_each_denied_call() {
    let rt = runtime();
    let off = probed_with(
        &rt,
        SandboxOptions::default().seccomp(SeccompProfile::unconfined()),
    );
    let on = probed(&rt);
    let sibling = sleeper(&off, RunOptions::default());
    let sibling_pid = sibling.pid().to_string();
    let cases: &[&[&str]] = &[
        &["unshare", "user"],
        &["regain-caps"],
        &["clone", "user"],
        &["clone3"],
        &["ptrace", &sibling_pid],
        &["keyctl"],
        &["add_key"],
        &["perf_event_open"],
        &["userfaultfd"],
        &["io_uring_setup"],
        &["adjtimex"],
        &["tiocsti"],
        &["tiocsti64"],
        &["personality", "0x0040000"],
        &["socket", "40", "1"],
    ];
    for args in cases {
        let unconfined = probe::answer(&off, args);
        assert!(
            unconfined.starts_with("ok "),
            "without seccomp {args:?} should get through: {unconfined}"
        );
        let confined = probe::answer(&on, args);
        assert!(
            confined.starts_with("err "),
            "with seccomp {args:?} got through: {confined}"
        );
    }
    #[cfg(target_arch = "x86_64")]
    {
        assert!(probe::answer(&off, &["int80"]).starts_with("ok "));
        assert_eq!(
            probe::run(&on, &["int80"]).exit.signal,
            Some(sandlot::Signal::SYS)
        );
    }
}

// ---------------------------------------------------------------- S27

/// A data dir where idmapped mounts are impossible (overlayfs, as when the
/// runtime itself runs in a container): creating a sandbox fails and says
/// why and what to do — it never falls back to host-owned files.
#[test]
fn s27_a_data_dir_without_idmapped_mounts_is_refused_with_a_fix() {
    require_root();
    let base =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("overlay-data-{}", std::process::id()));
    let outcome = std::thread::spawn({
        let base = base.clone();
        move || -> Result<(), String> {
            // This thread's own mount namespace: the overlay is nobody
            // else's business and vanishes with the thread.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| e.to_string())?;
            for dir in ["lower", "upper", "work", "merged"] {
                fs::create_dir_all(base.join(dir)).map_err(|e| e.to_string())?;
            }
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                base.join("lower").display(),
                base.join("upper").display(),
                base.join("work").display()
            );
            nix::mount::mount(
                Some("overlay"),
                &base.join("merged"),
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(options.as_str()),
            )
            .map_err(|e| format!("mount overlay: {e}"))?;
            // `sandlot doctor` says so up front…
            let report = sandlot::doctor::check(&base.join("merged"));
            let check = report
                .get("idmapped mounts")
                .ok_or("no idmapped mounts check")?;
            if check.status != sandlot::doctor::Status::Fail
                || !check.detail.contains("overlayfs")
                || !check.fix.as_deref().unwrap_or("").contains("ext4")
                || report.ok()
            {
                return Err(format!("doctor on an overlayfs data dir:\n{report}"));
            }
            // …and creating a sandbox fails with the reason and the fix.
            let rt = Runtime::builder().data_dir(base.join("merged")).build();
            let err = match rt {
                Err(e) => e,
                Ok(rt) => match rt.create(SandboxOptions::default()) {
                    Ok(_) => return Err("a sandbox was created on an overlayfs data dir".into()),
                    Err(e) => e,
                },
            };
            match &err {
                Error::Unsupported { feature, .. } if *feature == "idmapped mounts" => {}
                other => {
                    return Err(format!(
                        "expected Unsupported(idmapped mounts), got {other:?}"
                    ))
                }
            }
            let text = err.to_string();
            for needle in ["overlay", "ext4", "data dir"] {
                if !text.contains(needle) {
                    return Err(format!("the error does not mention {needle:?}: {text}"));
                }
            }
            Ok(())
        }
    })
    .join()
    .unwrap();
    let _ = fs::remove_dir_all(&base);
    outcome.unwrap();
}
