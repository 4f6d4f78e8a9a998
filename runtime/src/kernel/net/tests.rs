//! Root tests of the mechanism on the real kernel: a host-made namespace,
//! its routes and sysctl, the steering program, and what root of a child
//! user namespace (a sandbox's root) can and cannot do inside it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

use super::netns::NetNamespace;
use super::setup::{self, HostSockets, SandboxNetns};
use super::steering;
use crate::sys::testing::{fork_lock, in_child, require_root, Outcome};

fn made() -> (NetNamespace, SandboxNetns, HostSockets) {
    require_root("the network namespace tests");
    let home = NetNamespace::current().unwrap();
    let (ns, sockets) = setup::create(&home).expect("create a sandbox network namespace");
    (home, ns, sockets)
}

/// Runs `f` on a new thread moved into `ns`, as a sandbox process would
/// be; checks first that the thread really is inside (so a test never
/// sends anything from the host's namespace).
fn inside<T: Send>(home: &NetNamespace, ns: &NetNamespace, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _entered = ns.enter(home).unwrap();
            assert_eq!(NetNamespace::current().unwrap().inode(), ns.inode());
            f()
        })
        .join()
        .unwrap()
    })
}

fn accept_one(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(false).unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream
}

#[test]
fn tcp_to_any_public_address_reaches_the_proxy_with_its_original_destination() {
    let (home, ns, sockets) = made();
    for dest in ["203.0.113.7:80", "[2001:db8::1]:443", "8.8.8.8:8080"] {
        let dest: SocketAddr = dest.parse().unwrap();
        let client = inside(&home, &ns.netns, || {
            TcpStream::connect_timeout(&dest, Duration::from_secs(2)).expect("connect")
        });
        let mut accepted = accept_one(&sockets.proxy);
        let local = accepted.local_addr().unwrap();
        // An IPv4 connection on the dual-stack listener shows v4-mapped.
        let seen = match local {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::from((v4, v6.port())),
                None => local,
            },
            v4 => v4,
        };
        assert_eq!(seen, dest, "original destination");
        (&client).write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
}

#[test]
fn loopback_stays_the_sandboxs_own_and_dns_goes_to_the_resolver() {
    let (home, ns, sockets) = made();
    // A server of the sandbox's own on loopback is reached directly.
    let inner = inside(&home, &ns.netns, || {
        TcpListener::bind("127.0.0.1:8000").unwrap()
    });
    inside(&home, &ns.netns, || {
        TcpStream::connect_timeout(&"127.0.0.1:8000".parse().unwrap(), Duration::from_secs(2))
            .expect("loopback connect")
    });
    accept_one(&inner);
    sockets.proxy.set_nonblocking(true).unwrap();
    assert_eq!(
        sockets.proxy.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "loopback traffic must not reach the proxy"
    );

    // DNS over TCP to any address: the resolver's listener.
    inside(&home, &ns.netns, || {
        TcpStream::connect_timeout(&"192.0.2.53:53".parse().unwrap(), Duration::from_secs(2))
            .expect("DNS over TCP")
    });
    let dns = accept_one(&sockets.dns_tcp);
    assert_eq!(dns.local_addr().unwrap().port(), 53);

    // DNS over UDP: the resolver's socket.
    inside(&home, &ns.netns, || {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.send_to(b"query", "198.51.100.1:53").unwrap();
    });
    let mut buf = [0u8; 16];
    sockets.dns_udp.set_nonblocking(false).unwrap();
    sockets
        .dns_udp
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, _) = sockets.dns_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"query");
    // Also to a loopback resolver address (a template's 127.0.0.53).
    inside(&home, &ns.netns, || {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.send_to(b"stub", "127.0.0.53:53").unwrap();
    });
    let (n, _) = sockets.dns_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"stub");

    // Other UDP finds nobody: refused, never sent anywhere.
    let err = inside(&home, &ns.netns, || {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.connect("203.0.113.9:443").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        udp.send(b"quic?").unwrap();
        udp.recv(&mut [0u8; 8]).unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn the_steering_is_gone_with_its_namespace() {
    let (_home, ns, sockets) = made();
    let info = crate::sys::bpf::info(ns.steering.link()).unwrap();
    assert_eq!(info.kind, crate::sys::bpf::LINK_TYPE_NETNS);
    assert_eq!(info.netns_ino as u64, ns.netns.inode());
    let (progs, links) = steering::census().unwrap();
    assert!(
        progs >= 1 && links >= 1,
        "census sees ours: {progs} {links}"
    );
    drop(sockets);
    drop(ns);
    // Link and program are freed at once (the namespace itself goes
    // asynchronously, in the kernel's cleanup work).
    use crate::sys::bpf::{fd_by_id, Object};
    assert_eq!(fd_by_id(Object::Link, info.id).err(), Some(Errno::ENOENT));
    assert_eq!(
        fd_by_id(Object::Prog, info.prog_id).err(),
        Some(Errno::ENOENT)
    );
}

/// What root of a user namespace created inside the host-made network
/// namespace (the sandbox's root, at its most capable: right after
/// unshare, every capability of its own namespace) can do there.
#[test]
fn root_of_a_child_user_namespace_cannot_reconfigure_or_leave_the_namespace() {
    let (home, ns, _sockets) = made();
    let _serial = fork_lock();
    let netns_fd = ns.netns.as_fd().as_raw_fd();
    let outcome = inside(&home, &ns.netns, || {
        in_child(|| {
            if unshare(CloneFlags::CLONE_NEWUSER).is_err() {
                return 1;
            }
            // 2: no CAP_NET_ADMIN over the namespace (SIOCSIFFLAGS on lo).
            if crate::sys::process::loopback_up() != Err(Errno::EPERM) {
                return 2;
            }
            // 3: no raw sockets, and no ICMP datagram sockets either.
            let raw = socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::Icmp,
            );
            if raw.err() != Some(Errno::EPERM) {
                return 3;
            }
            let ping = socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::Icmp,
            );
            if ping.err() != Some(Errno::EACCES) {
                return 4;
            }
            // 5: low ports bind, thanks to ip_unprivileged_port_start=0.
            let Ok(fd) = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            ) else {
                return 5;
            };
            let addr = nix::sys::socket::SockaddrIn::new(0, 0, 0, 0, 80);
            if nix::sys::socket::bind(fd.as_raw_fd(), &addr).is_err() {
                return 6;
            }
            // 7: it cannot setns into a namespace of the host's.
            // SAFETY-free: the descriptor was inherited from the parent.
            if setns(crate::sys::fd::borrow(netns_fd), CloneFlags::CLONE_NEWNET)
                != Err(Errno::EPERM)
            {
                return 7;
            }
            0
        })
    });
    assert_eq!(outcome, Outcome::Exited(0), "check number that failed");
}

/// The counterpart: a process in a new user namespace cannot join a
/// host-made network namespace, so the sandbox must inherit it (the
/// spawner enters it before clone3).
#[test]
fn a_child_user_namespace_cannot_join_a_host_made_namespace() {
    let (_home, ns, _sockets) = made();
    let _serial = fork_lock();
    let netns_fd = ns.netns.as_fd().as_raw_fd();
    let outcome = in_child(|| {
        if unshare(CloneFlags::CLONE_NEWUSER).is_err() {
            return 1;
        }
        match setns(crate::sys::fd::borrow(netns_fd), CloneFlags::CLONE_NEWNET) {
            Err(Errno::EPERM) => 0,
            Ok(()) => 2,
            Err(_) => 3,
        }
    });
    assert_eq!(outcome, Outcome::Exited(0));
}

/// Without the sysctl, sandbox root could not bind port 80: the check
/// is against the namespace's owner, the host.
#[test]
fn without_the_sysctl_low_ports_are_refused_to_sandbox_root() {
    require_root("the network namespace tests");
    let home = NetNamespace::current().unwrap();
    let (plain, ()) = NetNamespace::create(&home, |_| Ok(())).unwrap();
    let _serial = fork_lock();
    let outcome = inside(&home, &plain, || {
        in_child(|| {
            if unshare(CloneFlags::CLONE_NEWUSER).is_err() {
                return 1;
            }
            let Ok(fd) = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            ) else {
                return 2;
            };
            let addr = nix::sys::socket::SockaddrIn::new(0, 0, 0, 0, 80);
            match nix::sys::socket::bind(fd.as_raw_fd(), &addr) {
                Err(Errno::EACCES) => 0,
                _ => 3,
            }
        })
    });
    assert_eq!(outcome, Outcome::Exited(0));
}

#[test]
fn the_factory_hands_out_ready_namespaces_and_closes_the_rest_when_dropped() {
    require_root("the network namespace tests");
    let home = NetNamespace::current().unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let factory = super::NetnsFactory::start(2).unwrap();
    // More than it keeps ready: the third is made on request.
    let made: Vec<_> = (0..3)
        .map(|_| factory.create().expect("a namespace"))
        .collect();
    let mut inodes: Vec<u64> = made.iter().map(|(ns, _)| ns.netns.inode()).collect();
    inodes.sort_unstable();
    inodes.dedup();
    assert_eq!(inodes.len(), 3, "each caller gets its own namespace");
    for (ns, sockets) in &made {
        inside(&home, &ns.netns, || {
            TcpStream::connect_timeout(&"203.0.113.7:80".parse().unwrap(), Duration::from_secs(2))
                .expect("steered")
        });
        accept_one(&sockets.proxy);
    }
    drop(made);
    // The thread keeps two ready again; dropping it closes them. Other
    // tests of this binary open descriptors meanwhile: compare what this
    // factory holds, which is 8 per ready namespace, with some slack.
    std::thread::sleep(Duration::from_millis(200));
    let with_warm = fds();
    drop(factory);
    let without = fds();
    assert!(
        with_warm >= without + 12,
        "ready namespaces closed: {with_warm} -> {without}"
    );
}
