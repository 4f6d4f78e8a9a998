//! sandlot-init against the real kernel: each test starts the built binary,
//! drives it over the control protocol and checks what the commands saw.
//! Needs root (uid changes, pid namespaces), like all sandlot tests.

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::*;
use sandlot_proto::{Event, Request, Spawn, Status, StdioMask, MAX_MESSAGE, PROTOCOL_VERSION};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "sandlot-init tests need root: run them as root (CI does)"
    );
}

#[test]
fn ready_arrives_first_with_the_protocol_version() {
    let init = Init::launch(std::process::Command::new(init_binary()));
    assert_eq!(
        init.event(),
        Event::Ready {
            version: PROTOCOL_VERSION
        }
    );
    init.expect_quiet();
}

#[test]
fn echo_output_reaches_the_stdout_pipe_and_exit_is_zero() {
    let init = Init::start();
    let out = init.run(command(1, &["echo", "hi"]), None);
    assert_eq!(out.stdout, "hi\n");
    assert_eq!(out.stderr, "");
    assert_eq!(out.status, Status::Exited(0));
}

#[test]
fn exit_codes_pass_through() {
    let init = Init::start();
    for (id, code) in [(1, 0), (2, 1), (3, 42), (4, 255)] {
        let out = init.run(sh(id, &format!("echo oops >&2; exit {code}")), None);
        assert_eq!(out.status, Status::Exited(code));
        assert_eq!(out.stderr, "oops\n");
    }
}

#[test]
fn signal_ends_a_command_and_is_reported_as_signaled() {
    let init = Init::start();
    let pid = init.spawn(command(1, &["sleep", "100"]), &[]);
    // Unknown ids are ignored.
    init.send(
        &Request::Signal {
            id: 99,
            signal: libc::SIGKILL,
            group: false,
        },
        &[],
    );
    init.expect_quiet();
    init.send(
        &Request::Signal {
            id: 1,
            signal: libc::SIGTERM,
            group: false,
        },
        &[],
    );
    let (got, status, _) = init.exited(1);
    assert_eq!(got, pid);
    assert_eq!(
        status,
        Status::Signaled {
            signal: libc::SIGTERM,
            core_dumped: false
        }
    );
    // A finished command's id is ignored too.
    init.send(
        &Request::Signal {
            id: 1,
            signal: libc::SIGKILL,
            group: true,
        },
        &[],
    );
    init.expect_quiet();
}

#[test]
fn group_signal_reaches_a_background_grandchild() {
    let init = Init::start();
    let (out_r, out_w) = pipe();
    let mut spawn = sh(1, "sleep 100 & echo $!; wait");
    spawn.stdio = StdioMask(StdioMask::STDOUT);
    init.spawn(spawn, &[out_w.as_fd()]);
    drop(out_w);
    let sleeper: i32 = read_line(out_r.as_fd()).parse().unwrap();
    let started = start_time(sleeper).expect("the background sleep runs");
    init.send(
        &Request::Signal {
            id: 1,
            signal: libc::SIGTERM,
            group: true,
        },
        &[],
    );
    let (_, status, _) = init.exited(1);
    assert_eq!(
        status,
        Status::Signaled {
            signal: libc::SIGTERM,
            core_dumped: false
        }
    );
    // The sleep held stdout: end of file means it is gone too.
    assert_eq!(read_to_end(out_r.as_fd(), DEADLINE), Some(Vec::new()));
    assert!(wait_gone(sleeper, started, DEADLINE), "grandchild survived");
}

#[test]
fn a_command_that_cannot_start_fails_with_its_errno_and_never_exits() {
    let init = Init::start();
    let mut cases: Vec<(Spawn, i32)> = vec![
        (command(1, &["no-such-command"]), libc::ENOENT),
        (command(2, &["/no/such/path"]), libc::ENOENT),
        (command(3, &["/etc/passwd"]), libc::EACCES),
        (command(4, &[""]), libc::ENOENT),
    ];
    // PATH search skips missing entries and remembers permission errors.
    let mut denied = command(5, &["passwd"]);
    denied.env = vec![b"PATH=/no/such/dir:/etc:/etc/passwd".to_vec()];
    cases.push((denied, libc::EACCES));
    let mut no_cwd = command(6, &["true"]);
    no_cwd.cwd = b"/no/such/dir".to_vec();
    cases.push((no_cwd, libc::ENOENT));
    let mut empty_argv = command(7, &[]);
    empty_argv.argv.clear();
    cases.push((empty_argv, libc::EINVAL));
    let mut nul = command(8, &["tr\0ue"]);
    nul.env.push(b"A=1".to_vec());
    cases.push((nul, libc::EINVAL));
    for (spawn, errno) in cases {
        let id = spawn.id;
        init.send(&Request::Spawn(spawn), &[]);
        assert_eq!(init.event(), Event::SpawnFailed { id, errno }, "id {id}");
    }
    // ... and the search goes on past a denied entry to a good one.
    let mut found = command(9, &["true"]);
    found.env = vec![b"PATH=/no/such/dir:/etc/passwd:/etc:/usr/bin:/bin".to_vec()];
    // The failed children were reaped without a word: the next events are
    // this command's.
    let out = init.run(found, None);
    assert_eq!(out.status, Status::Exited(0));
    init.expect_quiet();
}

#[test]
fn cwd_env_and_credentials_are_applied() {
    require_root();
    let init = Init::start();
    let mut spawn = sh(1, "id -u; id -g; id -G; pwd; env | sort");
    spawn.cwd = b"/tmp".to_vec();
    spawn.env = vec![
        b"PATH=/usr/bin:/bin".to_vec(),
        b"GREETING=hello world".to_vec(),
    ];
    spawn.uid = 65534;
    spawn.gid = 65534;
    spawn.groups = vec![65534, 100];
    let out = init.run(spawn, None);
    assert_eq!(out.status, Status::Exited(0), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..4], ["65534", "65534", "65534 100", "/tmp"]);
    // Exactly the request's environment (dash adds PWD itself).
    assert_eq!(
        lines[4..],
        ["GREETING=hello world", "PATH=/usr/bin:/bin", "PWD=/tmp"]
    );
}

#[test]
fn the_working_directory_is_entered_as_the_commands_user() {
    require_root();
    let init = Init::start();
    // /root is 0700: root may enter, nobody may not.
    let mut spawn = command(1, &["true"]);
    spawn.cwd = b"/root".to_vec();
    spawn.uid = 65534;
    spawn.gid = 65534;
    init.send(&Request::Spawn(spawn), &[]);
    assert_eq!(
        init.event(),
        Event::SpawnFailed {
            id: 1,
            errno: libc::EACCES
        }
    );
}

#[test]
fn every_command_leads_its_own_session_without_a_terminal() {
    let init = Init::start();
    let out = init.run(sh(1, "exec cat /proc/self/stat"), None);
    let stat = out.stdout;
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let (pgrp, session, tty): (i32, i32, i32) = (
        fields[2].parse().unwrap(),
        fields[3].parse().unwrap(),
        fields[4].parse().unwrap(),
    );
    assert_eq!(session, out.pid, "session id");
    assert_eq!(pgrp, out.pid, "process group id");
    assert_eq!(tty, 0, "controlling terminal");
}

#[test]
fn stdin_round_trips_through_cat() {
    let init = Init::start();
    let input = b"hello\nworld\n".repeat(1000);
    let out = init.run(command(1, &["cat"]), Some(&input));
    assert_eq!(out.stdout.as_bytes(), input);
    assert_eq!(out.status, Status::Exited(0));
}

#[test]
fn a_command_sees_only_its_three_stdio_descriptors() {
    let init = Init::start();
    // `; true` keeps sh from exec'ing ls, so ls lists the shell's
    // descriptors rather than its own (which include its directory fd).
    let out = init.run(sh(1, "ls /proc/$$/fd; true"), None);
    assert_eq!(out.stdout, "0\n1\n2\n", "stderr: {}", out.stderr);
}

#[test]
fn streams_left_out_of_the_mask_are_dev_null() {
    let init = Init::start();
    let (out_r, out_w) = pipe();
    let mut spawn = sh(1, "readlink /proc/$$/fd/0 /proc/$$/fd/2; true");
    spawn.stdio = StdioMask(StdioMask::STDOUT);
    init.spawn(spawn, &[out_w.as_fd()]);
    drop(out_w);
    let out = read_to_end(out_r.as_fd(), DEADLINE).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "/dev/null\n/dev/null\n");
    assert_eq!(init.exited(1).1, Status::Exited(0));
}

#[test]
fn commands_start_with_default_signal_dispositions_and_no_blocked_signals() {
    let init = Init::start();
    // init ignores SIGPIPE (the Rust runtime does) and blocks SIGCHLD;
    // neither may reach a command.
    let out = init.run(
        sh(1, "exec grep -E '^Sig(Blk|Ign)' /proc/self/status"),
        None,
    );
    assert_eq!(
        out.stdout,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

#[test]
fn cpu_time_and_memory_are_reported() {
    let init = Init::start();
    let out = init.run(
        sh(1, "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"),
        None,
    );
    assert_eq!(out.status, Status::Exited(0));
    assert!(out.usage.user_micros > 0, "{:?}", out.usage);
    assert!(out.usage.max_rss_kib > 0, "{:?}", out.usage);
}

#[test]
fn an_orphan_is_reparented_to_init_and_reaped_silently() {
    let init = Init::start();
    // The inner shell starts a sleep and exits at once: the sleep's parent
    // is gone, so it is reparented to init.
    let out = init.run(sh(1, "sh -c 'sleep 1 >/dev/null 2>&1 & echo $!'"), None);
    assert_eq!(out.status, Status::Exited(0));
    let orphan: i32 = out.stdout.trim().parse().unwrap();
    let started = start_time(orphan).expect("orphan is running");
    let ppid: i32 = proc_stat(orphan).unwrap()[1].parse().unwrap();
    assert_eq!(ppid, init.pid(), "orphan not reparented to init");
    assert!(
        wait_gone(orphan, started, DEADLINE),
        "orphan left as a zombie"
    );
    // No event for it.
    init.expect_quiet();
}

#[test]
fn malformed_datagrams_are_dropped_and_init_keeps_serving() {
    let init = Init::start();
    let good = Request::Spawn(command(7, &["true"])).encode();

    // Unknown tag, empty datagram, trailing byte: dropped without a word.
    init.send_raw(&[0x7f, 1, 2, 3], &[]);
    init.send_raw(&[], &[]);
    let mut trailing = Request::SignalAll { signal: 0 }.encode();
    trailing.push(0);
    init.send_raw(&trailing, &[]);
    init.expect_quiet();

    // A non-spawn carrying a descriptor: dropped, descriptor closed.
    let (r, w) = pipe();
    init.send(&Request::Go, &[w.as_fd()]);
    drop(w);
    assert_eq!(
        read_to_end(r.as_fd(), DEADLINE),
        Some(Vec::new()),
        "fd kept"
    );
    init.expect_quiet();

    // Broken spawns with a readable id are answered with EINVAL.
    let einval = |id| Event::SpawnFailed {
        id,
        errno: libc::EINVAL,
    };
    init.send_raw(&good[..good.len() - 3], &[]);
    assert_eq!(init.event(), einval(7), "cut spawn");

    let mut wants_stdout = command(8, &["true"]);
    wants_stdout.stdio = StdioMask(StdioMask::STDOUT);
    init.send(&Request::Spawn(wants_stdout), &[]);
    assert_eq!(init.event(), einval(8), "missing descriptor");

    let mut unknown_stream = command(9, &["true"]);
    unknown_stream.stdio = StdioMask(8);
    init.send(&Request::Spawn(unknown_stream), &[]);
    assert_eq!(init.event(), einval(9), "unknown stdio bit");

    // Too many descriptors (4 still fit in the buffer, 6 are cut off): the
    // spawn is refused and every descriptor init received is closed.
    for (id, n) in [(10u64, 1usize), (11, 4), (12, 6)] {
        let (r, w) = pipe();
        let copies: Vec<_> = (0..n).map(|_| w.try_clone().unwrap()).collect();
        let fds: Vec<_> = copies.iter().map(|fd| fd.as_fd()).collect();
        init.send(&Request::Spawn(command(id, &["true"])), &fds);
        drop(copies);
        drop(w);
        assert_eq!(init.event(), einval(id), "{n} extra descriptors");
        assert_eq!(
            read_to_end(r.as_fd(), DEADLINE),
            Some(Vec::new()),
            "init kept one of {n} descriptors"
        );
    }

    // A datagram longer than MAX_MESSAGE arrives truncated.
    let mut huge = good.clone();
    huge[1..9].copy_from_slice(&13u64.to_le_bytes());
    huge.resize(MAX_MESSAGE + 100, b'x');
    raise_sndbuf(&init);
    init.send_raw(&huge, &[]);
    assert_eq!(init.event(), einval(13), "oversized spawn");

    init.send_raw(&good, &[]);
    assert!(matches!(init.event(), Event::Spawned { id: 7, .. }));
    assert_eq!(init.exited(7).1, Status::Exited(0));
    init.expect_quiet();
}

/// A datagram over the default socket buffer (212992 bytes) needs a bigger
/// one on the sending side.
fn raise_sndbuf(init: &Init) {
    let size: libc::c_int = 4 << 20;
    let fd = host_fd(init);
    // SAFETY: setsockopt reads one c_int from `size`.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        ret,
        0,
        "SO_SNDBUFFORCE: {}",
        std::io::Error::last_os_error()
    );
}

fn host_fd(init: &Init) -> libc::c_int {
    use std::os::fd::AsRawFd;
    init.sock().as_raw_fd()
}

#[test]
fn a_slow_host_loses_no_events_even_if_the_socket_came_non_blocking() {
    // Far more events than the socket buffer holds (about 280 small
    // datagrams): init must block in send, not drop events or give up.
    const N: u64 = 300;
    let mut init = Init::launch_with(std::process::Command::new(init_binary()), true);
    init.expect_ready();
    std::thread::scope(|s| {
        let init = &init;
        s.spawn(move || {
            for id in 0..N {
                init.send(&Request::Spawn(command(id, &["true"])), &[]);
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let (mut spawned, mut exited) = (vec![false; N as usize], vec![false; N as usize]);
        for _ in 0..2 * N {
            match init.event() {
                Event::Spawned { id, .. } => {
                    assert!(!exited[id as usize], "Exited before Spawned for {id}");
                    spawned[id as usize] = true;
                }
                Event::Exited { id, status, .. } => {
                    assert!(spawned[id as usize], "Exited before Spawned for {id}");
                    assert_eq!(status, Status::Exited(0));
                    exited[id as usize] = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(exited.iter().all(|&e| e));
    });
    init.expect_quiet();
}

#[test]
fn a_spawn_reusing_a_running_id_is_refused() {
    let init = Init::start();
    init.spawn(command(1, &["sleep", "100"]), &[]);
    init.send(&Request::Spawn(command(1, &["true"])), &[]);
    assert_eq!(
        init.event(),
        Event::SpawnFailed {
            id: 1,
            errno: libc::EEXIST
        }
    );
}

#[test]
fn signal_all_reaches_every_command() {
    let init = Init::start();
    init.spawn(command(1, &["sleep", "100"]), &[]);
    init.spawn(sh(2, "sleep 100; true"), &[]);
    init.send(
        &Request::SignalAll {
            signal: libc::SIGKILL,
        },
        &[],
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        match init.event() {
            Event::Exited { id, status, .. } => {
                assert_eq!(
                    status,
                    Status::Signaled {
                        signal: libc::SIGKILL,
                        core_dumped: false
                    }
                );
                ids.push(id);
            }
            other => panic!("expected Exited, got {other:?}"),
        }
    }
    ids.sort();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn closing_the_host_end_kills_everything_and_init_exits() {
    let mut init = Init::start();
    // A plain command, and a grandchild in a session of its own that no
    // group signal would reach.
    let (out_r, out_w) = pipe();
    let mut spawn = sh(1, "setsid sleep 100 >/dev/null 2>&1 & echo $!; wait");
    spawn.stdio = StdioMask(StdioMask::STDOUT);
    init.spawn(spawn, &[out_w.as_fd()]);
    drop(out_w);
    let hidden: i32 = read_line(out_r.as_fd()).parse().unwrap();
    let pid = init.spawn(command(2, &["sleep", "100"]), &[]);
    let started = (start_time(hidden).unwrap(), start_time(pid).unwrap());

    init.close_host();
    let status = init
        .wait_exit(DEADLINE)
        .expect("init did not exit after the host went away");
    assert!(status.success(), "init exited with {status}");
    assert!(
        wait_gone(pid, started.1, Duration::ZERO),
        "command survived"
    );
    assert!(
        wait_gone(hidden, started.0, Duration::ZERO),
        "grandchild survived"
    );
}

#[test]
fn as_pid_1_of_a_pid_namespace() {
    require_root();
    let mut init = Init::start_as_pid1();
    // The pid in Spawned is the namespace's, as the command sees it.
    let out = init.run(sh(1, "echo $$"), None);
    assert_eq!(out.stdout.trim(), out.pid.to_string());
    // An orphan, and two commands: SignalAll reaches them all, and only them.
    let orphan = init.run(sh(2, "sh -c 'sleep 100 >/dev/null 2>&1 & echo $!'"), None);
    assert_eq!(orphan.status, Status::Exited(0));
    init.spawn(command(3, &["sleep", "100"]), &[]);
    init.spawn(command(4, &["sleep", "100"]), &[]);
    init.send(
        &Request::SignalAll {
            signal: libc::SIGKILL,
        },
        &[],
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        match init.event() {
            Event::Exited { id, .. } => ids.push(id),
            other => panic!("expected Exited, got {other:?}"),
        }
    }
    ids.sort();
    assert_eq!(ids, [3, 4]);
    // Nothing else is left in the namespace (the orphan included): `kill -0
    // -1` from a shell there reaches every process but init and the shell
    // itself. Zombies count until init reaps them, so allow a moment.
    let mut alone = false;
    for id in 5..50 {
        let out = init.run(
            sh(id, "kill -0 -1 2>/dev/null && echo others || echo alone"),
            None,
        );
        if out.stdout == "alone\n" {
            alone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(alone, "processes left in the namespace after SignalAll");
    init.close_host();
    let status = init
        .wait_exit(DEADLINE)
        .expect("init (as PID 1) did not exit");
    assert!(status.success(), "unshare/init exited with {status}");
}

#[test]
fn extra_descriptors_arrive_at_their_numbers_and_only_they_stay_open() {
    require_root();
    let init = Init::start();
    // Low targets: init receives descriptors at numbers like these, so a
    // naive dup2 would overwrite one source with another.
    let (five_r, five_w) = pipe();
    let (four_r, four_w) = pipe();
    let (six_r, six_w) = pipe();
    let (out_r, out_w) = pipe();
    let mut spawn = sh(
        1,
        // No pipeline: while `ls` reads the shell's table, a pipe to `tr`
        // would sit at fd 3 in it (the flake this once was).
        "ls /proc/$$/fd; echo five >&5; echo four >&4; read line <&6; echo \"got $line\"; true",
    );
    spawn.stdio = StdioMask(StdioMask::STDOUT);
    spawn.extra_fds = vec![5, 4, 6];
    init.spawn(
        spawn,
        &[out_w.as_fd(), five_w.as_fd(), four_w.as_fd(), six_r.as_fd()],
    );
    drop((out_w, five_w, four_w, six_r));
    write_all(six_w.as_fd(), b"six\n");
    drop(six_w);
    let out = read_to_end(out_r.as_fd(), DEADLINE).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "0\n1\n2\n4\n5\n6\ngot six\n"
    );
    assert_eq!(read_to_end(five_r.as_fd(), DEADLINE).unwrap(), b"five\n");
    assert_eq!(read_to_end(four_r.as_fd(), DEADLINE).unwrap(), b"four\n");
    assert_eq!(init.exited(1).1, Status::Exited(0));
}

#[test]
fn a_spawn_whose_descriptors_do_not_match_its_extras_is_refused() {
    require_root();
    let init = Init::start();
    let (_r, w) = pipe();
    let mut spawn = command(1, &["true"]);
    spawn.extra_fds = vec![3, 4];
    init.send(&Request::Spawn(spawn), &[w.as_fd()]);
    assert_eq!(
        init.event(),
        Event::SpawnFailed {
            id: 1,
            errno: libc::EINVAL
        }
    );
}

/// Everything a terminal's master end gives until the slave side is gone
/// (EIO), or what came within the deadline.
fn read_terminal(master: std::os::fd::BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while wait_readable(master, DEADLINE) {
        // SAFETY: read writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&master),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n <= 0 {
            break; // EIO: every slave descriptor is closed
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_terminal_command_runs_on_a_new_pty_that_is_its_controlling_terminal() {
    require_root();
    let init = Init::start();
    let mut spawn = sh(
        1,
        "test -t 0 && test -t 1 && test -t 2 && stty size && read -r stat < /proc/$$/stat && echo \"$stat\" && stat -c %u \"$(tty)\"",
    );
    spawn.uid = 1000;
    spawn.gid = 1000;
    spawn.pty = Some(sandlot_proto::PtySize {
        rows: 33,
        cols: 101,
    });
    init.send(&Request::Spawn(spawn), &[]);
    let (event, mut fds) = init.event_with_fds();
    let Event::SpawnedPty { id: 1, pid } = event else {
        panic!("expected SpawnedPty for 1, got {event:?}");
    };
    assert_eq!(fds.len(), 1, "exactly the master end comes with the answer");
    let master = fds.remove(0);
    // SAFETY: struct stat is plain data; all-zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
    // SAFETY: fstat writes one struct stat into `st`, on a descriptor we own.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    assert_eq!(rc, 0);
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!((libc::major(st.st_rdev), libc::minor(st.st_rdev)), (5, 2));

    let out = read_terminal(master.as_fd());
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert_eq!(lines[0], "33 101");
    let stat: Vec<&str> = lines[1][lines[1].rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let (pgrp, session, tty, tpgid): (i32, i32, i32, i32) = (
        stat[2].parse().unwrap(),
        stat[3].parse().unwrap(),
        stat[4].parse().unwrap(),
        stat[5].parse().unwrap(),
    );
    assert_eq!((session, pgrp), (pid, pid), "a session of its own");
    assert_ne!(tty, 0, "a controlling terminal");
    assert_eq!(tpgid, pid, "the command is the terminal's foreground group");
    assert_eq!(lines[2], "1000", "the slave belongs to the command's user");
    assert_eq!(init.exited(1).1, Status::Exited(0));
}
