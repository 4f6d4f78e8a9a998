//! A persistent init (`Request::Persist`): it outlives its creator's
//! connection and its parent-death signal, accepts more connections on the
//! socket it was handed, keeps each connection's command ids and events
//! apart, and never lets one host that stops reading stall the others.

mod common;

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::persist::{closed_by_peer, Client, Listener};
use common::*;
use sandlot_proto::{Event, Request, Status, StdioMask};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "sandlot-init tests need root: run them as root (CI does)"
    );
}

fn running(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|fields| fields[0] != "Z")
}

#[test]
fn a_persistent_init_outlives_its_creators_connection_and_serves_new_ones() {
    require_root();
    let mut init = Init::start();
    let listener = Listener::new("outlive");
    init.persist(&listener);
    let sleeper = init.spawn(command(1, &["sleep", "100"]), &[]);

    init.close_host();
    assert!(
        init.wait_exit(Duration::from_millis(300)).is_none(),
        "init exited with its creator's connection"
    );
    assert!(running(sleeper), "the creator's command ended with it");

    // Another host connects; id 1 is its own, free again.
    let client = Client::connect(&listener.path);
    let (out_r, out_w) = pipe();
    let mut spawn = sh(1, "echo $$");
    spawn.stdio = StdioMask(StdioMask::STDOUT);
    let pid = client.spawn(spawn, &[out_w.as_fd()]);
    drop(out_w);
    assert_eq!(read_line(out_r.as_fd()), pid.to_string());
    match client.event() {
        Event::Exited {
            id: 1,
            pid: exited,
            status: Status::Exited(0),
            ..
        } => assert_eq!(exited, pid),
        other => panic!("expected Exited for 1, got {other:?}"),
    }
    init.kill_persistent(&client);
}

#[test]
fn each_connection_has_its_own_command_ids_and_events() {
    require_root();
    let mut init = Init::start();
    let listener = Listener::new("ids");
    init.persist(&listener);
    let a = Client::connect(&listener.path);
    let b = Client::connect(&listener.path);
    let in_a = a.spawn(command(7, &["sleep", "100"]), &[]);
    let in_b = b.spawn(command(7, &["sleep", "100"]), &[]);
    let in_creator = init.spawn(command(7, &["sleep", "100"]), &[]);
    assert!(in_a != in_b && in_b != in_creator && in_a != in_creator);

    // A signal names the command of its own connection only; the exit is
    // reported there and nowhere else.
    a.send(
        &Request::Signal {
            id: 7,
            signal: libc::SIGTERM,
            group: false,
        },
        &[],
    );
    match a.event() {
        Event::Exited {
            id: 7, pid, status, ..
        } => {
            assert_eq!(pid, in_a);
            assert_eq!(
                status,
                Status::Signaled {
                    signal: libc::SIGTERM,
                    core_dumped: false
                }
            );
        }
        other => panic!("expected Exited for a's 7, got {other:?}"),
    }
    b.expect_quiet();
    init.expect_quiet();
    assert!(running(in_b) && running(in_creator));

    // A spawn reusing a running id is refused on that connection only.
    b.send(&Request::Spawn(command(7, &["true"])), &[]);
    assert_eq!(
        b.event(),
        Event::SpawnFailed {
            id: 7,
            errno: libc::EEXIST
        }
    );
    a.spawn(command(7, &["true"]), &[]);
    assert!(matches!(a.event(), Event::Exited { id: 7, .. }));

    // A connection that goes away takes none of the others' commands and
    // events with it.
    drop(a);
    init.send(
        &Request::Signal {
            id: 7,
            signal: libc::SIGKILL,
            group: false,
        },
        &[],
    );
    assert!(matches!(init.event(), Event::Exited { id: 7, pid, .. } if pid == in_creator));
    assert!(running(in_b));
    init.kill_persistent(&b);
}

/// The runtime's child arms `PR_SET_PDEATHSIG`, which fires when the thread
/// that forked it exits. A persistent init clears it; an init that was not
/// made persistent dies.
#[test]
fn persist_clears_the_parent_death_signal() {
    require_root();
    let start_from_a_thread = |persist: bool| {
        std::thread::spawn(move || {
            let mut cmd = Command::new(init_binary());
            // SAFETY: prctl is async-signal-safe and allocates nothing.
            unsafe {
                cmd.pre_exec(|| {
                    check(libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                    ))
                    .map(drop)
                });
            }
            let mut init = Init::launch(cmd);
            init.expect_ready();
            let listener = Listener::new(if persist { "pdeath-p" } else { "pdeath-t" });
            if persist {
                init.persist(&listener);
            }
            (init, listener)
        })
        .join()
        .expect("starter thread")
    };

    let (mut tied, _listener) = start_from_a_thread(false);
    let status = tied
        .wait_exit(DEADLINE)
        .expect("an init that was not made persistent outlived its parent thread");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    let (mut persistent, listener) = start_from_a_thread(true);
    assert!(
        persistent.wait_exit(Duration::from_millis(300)).is_none(),
        "a persistent init died with the thread that started it"
    );
    let client = Client::connect(&listener.path);
    client.spawn(command(1, &["true"]), &[]);
    assert!(matches!(client.event(), Event::Exited { id: 1, .. }));
    persistent.kill_persistent(&client);
}

#[test]
fn persist_takes_only_a_listening_socket_and_otherwise_stays_tied() {
    require_root();
    let mut init = Init::start();
    let (pipe_r, _pipe_w) = pipe();
    init.send(&Request::Persist, &[pipe_r.as_fd()]);
    assert_eq!(
        init.event(),
        Event::Persisted {
            errno: libc::ENOTSOCK
        }
    );
    // A connected (not listening) SEQPACKET socket is refused too.
    let (one, _other) = socketpair();
    init.send(&Request::Persist, &[one.as_fd()]);
    assert_eq!(
        init.event(),
        Event::Persisted {
            errno: libc::ENOTSOCK
        }
    );
    // Without a descriptor: nothing to listen on.
    init.send(&Request::Persist, &[]);
    assert_eq!(
        init.event(),
        Event::Persisted {
            errno: libc::EINVAL
        }
    );

    init.close_host();
    assert!(
        init.wait_exit(DEADLINE).is_some(),
        "init outlived its host after a refused Persist"
    );
}

/// A host that stops reading its events gets them queued (bounded); past
/// the bound its connection is closed. Meanwhile every other connection is
/// served.
#[test]
fn a_connection_that_stops_reading_never_stalls_the_others() {
    require_root();
    let mut init = Init::start();
    let listener = Listener::new("slow");
    init.persist(&listener);
    let slow = Client::connect(&listener.path);
    let other = Client::connect(&listener.path);
    // Two events per command (Spawned, Exited): more than the socket and
    // init's queue together hold.
    let mut closed = false;
    for id in 1..=3000 {
        if closed_now(&slow) {
            closed = true;
            break;
        }
        let request = Request::Spawn(command(id, &["true"])).encode();
        if send_with_fds(slow.sock(), &request, &[]).is_err() {
            closed = true; // reset by init
            break;
        }
        if id % 500 == 0 {
            // The other connection is served all along.
            other.spawn(command(id, &["true"]), &[]);
            assert!(matches!(other.event(), Event::Exited { .. }));
        }
    }
    assert!(
        closed || closed_by_peer(slow.sock()),
        "init kept a connection that read nothing"
    );
    other.spawn(command(1, &["true"]), &[]);
    assert!(matches!(other.event(), Event::Exited { id: 1, .. }));
    init.kill_persistent(&other);
}

fn closed_now(client: &Client) -> bool {
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&client.sock()),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd.
    unsafe { libc::poll(&mut pfd, 1, 0) };
    pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0
}
