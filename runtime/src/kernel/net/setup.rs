//! Everything a sandbox's network needs from the kernel, made in one go on
//! the calling thread: the namespace, `lo` and the catch-all local routes,
//! the low-ports sysctl, the host's sockets inside (proxy listener,
//! resolver UDP socket and TCP listener) and the steering program.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6,
};

use super::netns::NetNamespace;
use super::program::Slot;
use super::steering::Steering;
use super::{netlink, sysctl};
use crate::kernel::KernelError;

/// Connections the kernel queues for the proxy before it accepts them.
const PROXY_BACKLOG: i32 = 1024;
const DNS_BACKLOG: i32 = 64;

/// The host's sockets inside a sandbox's namespace, handed to the proxy
/// engine. IPv6 sockets accept IPv4 too (not `V6ONLY`), unless the host
/// has no IPv6: then they are IPv4 sockets.
#[derive(Debug)]
pub struct HostSockets {
    /// Every steered TCP connection arrives here; `local_addr()` of an
    /// accepted one is the destination the sandbox asked for.
    pub proxy: TcpListener,
    /// DNS over UDP: bound to port 53, so that answers leave from it.
    pub dns_udp: UdpSocket,
    /// DNS over TCP.
    pub dns_tcp: TcpListener,
}

/// A sandbox's network as the kernel holds it.
#[derive(Debug)]
pub struct SandboxNetns {
    // Detach before the namespace goes.
    pub steering: Steering,
    pub netns: NetNamespace,
}

/// Whether the host can make IPv6 sockets (decides the sockets' family).
pub fn ipv6_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        socket(
            AddressFamily::Inet6,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .is_ok()
    })
}

/// Creates the namespace and everything in it; the calling thread is back
/// in `home` when this returns, also on error (then nothing is left).
pub fn create(home: &NetNamespace) -> Result<(SandboxNetns, HostSockets), KernelError> {
    let ipv6 = ipv6_available();
    let (netns, (steering, sockets)) = NetNamespace::create(home, |ns| {
        netlink::configure_loopback(ipv6)?;
        sysctl::allow_unprivileged_low_ports()?;
        let sockets = host_sockets(ipv6)?;
        let steering = steer(ns.as_fd(), &sockets)?;
        Ok((steering, sockets))
    })?;
    Ok((SandboxNetns { steering, netns }, sockets))
}

/// Serves an existing sandbox namespace again — a persistent sandbox taken
/// over by another process, whose sockets and steering went with the
/// process that served it: new host sockets inside it and a new steering
/// link. Its loopback, routes and sysctls are as [`create`] left them. The
/// calling thread is back in `home` when this returns.
pub fn rejoin(
    home: &NetNamespace,
    netns: NetNamespace,
) -> Result<(SandboxNetns, HostSockets), KernelError> {
    if netns.inode() == home.inode() {
        // Never steer the host's own connections.
        return Err(KernelError::invalid(
            "network",
            "the namespace to serve is the host's own".to_string(),
        ));
    }
    let ipv6 = ipv6_available();
    let sockets = {
        let _inside = netns.enter(home)?;
        host_sockets(ipv6)?
    };
    let steering = steer(netns.as_fd(), &sockets)?;
    Ok((SandboxNetns { steering, netns }, sockets))
}

/// Steers the namespace's TCP to the proxy's listener and its DNS to the
/// resolver's sockets.
fn steer(netns: BorrowedFd<'_>, sockets: &HostSockets) -> Result<Steering, KernelError> {
    Steering::attach(
        netns,
        &[
            (Slot::Proxy, sockets.proxy.as_fd()),
            (Slot::DnsTcp, sockets.dns_tcp.as_fd()),
            (Slot::DnsUdp, sockets.dns_udp.as_fd()),
        ],
    )
}

/// A non-blocking, close-on-exec socket bound to `port` of the
/// any-address, dual-stack where IPv6 exists.
fn bound_socket(ipv6: bool, kind: SockType, port: u16) -> Result<OwnedFd, KernelError> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, kind, flags, None)
        .map_err(|e| KernelError::setup("host socket in the sandbox's namespace", e))?;
    let step = "bind a host socket in the sandbox's namespace";
    if ipv6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &false).map_err(|e| KernelError::setup(step, e))?;
        let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
        bind(fd.as_raw_fd(), &SockaddrIn6::from(any)).map_err(|e| KernelError::setup(step, e))?;
    } else {
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        bind(fd.as_raw_fd(), &SockaddrIn::from(any)).map_err(|e| KernelError::setup(step, e))?;
    }
    Ok(fd)
}

fn host_sockets(ipv6: bool) -> Result<HostSockets, KernelError> {
    let listen_on = |fd: &OwnedFd, backlog: i32| {
        listen(
            fd,
            Backlog::new(backlog).map_err(|_| KernelError::setup("listen", Errno::EINVAL))?,
        )
        .map_err(|e| KernelError::setup("listen in the sandbox's namespace", e))
    };
    // The proxy and DNS-over-TCP listeners sit on a port the kernel picks:
    // steering reaches them whatever the destination. They are bound to
    // the any-address because binding an IPv6 socket to a specific address
    // (::1) makes it IPv6-only, and sk_assign then refuses it for IPv4.
    let proxy = bound_socket(ipv6, SockType::Stream, 0)?;
    listen_on(&proxy, PROXY_BACKLOG)?;
    let dns_tcp = bound_socket(ipv6, SockType::Stream, 0)?;
    listen_on(&dns_tcp, DNS_BACKLOG)?;
    // The UDP socket answers from port 53 and from the address each
    // query was sent to (given by IPV6_PKTINFO / IP_PKTINFO).
    let dns_udp = bound_socket(ipv6, SockType::Datagram, 53)?;
    let step = "ask for the destination of DNS queries";
    // Answering from that address: IPv4 accepts any address the local
    // routes cover, IPv6 only assigned ones unless the socket may bind
    // non-local addresses.
    setsockopt(&dns_udp, sockopt::IpFreebind, &true).map_err(|e| KernelError::setup(step, e))?;
    if ipv6 {
        setsockopt(&dns_udp, sockopt::Ipv6RecvPacketInfo, &true)
            .map_err(|e| KernelError::setup(step, e))?;
    } else {
        setsockopt(&dns_udp, sockopt::Ipv4PacketInfo, &true)
            .map_err(|e| KernelError::setup(step, e))?;
    }
    Ok(HostSockets {
        proxy: proxy.into(),
        dns_udp: dns_udp.into(),
        dns_tcp: dns_tcp.into(),
    })
}
