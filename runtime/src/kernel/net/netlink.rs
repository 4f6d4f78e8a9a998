//! rtnetlink requests a sandbox's network namespace needs, sent from a
//! thread inside it: bring `lo` up, and route every address, IPv4 and
//! IPv6, locally (`local 0.0.0.0/0 dev lo`, `local ::/0 dev lo` in the
//! local table). With those routes a connection to any destination is
//! delivered inside the namespace, where the steering program hands it to
//! the host's listener; nothing ever leaves on a wire (there is none).
//!
//! The messages are built with netlink-packet-route and sent in one
//! datagram over a netlink-sys socket (rtnetlink, the async crate on top
//! of them, would need an async runtime); the kernel answers each with an
//! acknowledgement, read back in order.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

use crate::kernel::KernelError;

/// `lo` is always the first interface a network namespace gets.
const LOOPBACK_IFINDEX: u32 = 1;
/// The kernel's local routing table (`RT_TABLE_LOCAL`).
const TABLE_LOCAL: u8 = 255;

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `ip link set lo up`.
fn loopback_up() -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = LOOPBACK_IFINDEX;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(link)
}

/// `ip route add local <any>/0 dev lo table local`, for one family.
fn local_default(family: AddressFamily) -> RouteNetlinkMessage {
    let mut route = RouteMessage::default();
    route.header = RouteHeader {
        address_family: family,
        destination_prefix_length: 0,
        table: TABLE_LOCAL,
        protocol: RouteProtocol::Static,
        scope: RouteScope::Host,
        kind: RouteType::Local,
        ..RouteHeader::default()
    };
    let any = match family {
        AddressFamily::Inet6 => RouteAddress::Inet6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => RouteAddress::Inet(std::net::Ipv4Addr::UNSPECIFIED),
    };
    route.attributes = vec![
        RouteAttribute::Destination(any),
        RouteAttribute::Oif(LOOPBACK_IFINDEX),
    ];
    RouteNetlinkMessage::NewRoute(route)
}

/// Brings `lo` up and adds the catch-all local routes in the calling
/// thread's network namespace. `ipv6` false skips the IPv6 route (a host
/// booted without IPv6).
pub fn configure_loopback(ipv6: bool) -> Result<(), KernelError> {
    let mut requests = vec![
        ("bring lo up", loopback_up(), 0),
        (
            "route every IPv4 address to lo",
            local_default(AddressFamily::Inet),
            NLM_F_CREATE | NLM_F_EXCL,
        ),
    ];
    if ipv6 {
        requests.push((
            "route every IPv6 address to lo",
            local_default(AddressFamily::Inet6),
            NLM_F_CREATE | NLM_F_EXCL,
        ));
    }

    let mut socket = Socket::new(NETLINK_ROUTE)
        .map_err(|e| KernelError::setup("netlink socket", errno_of(&e)))?;
    socket
        .bind(&SocketAddr::new(0, 0))
        .map_err(|e| KernelError::setup("netlink bind", errno_of(&e)))?;

    // All requests in one datagram; the kernel processes them in order.
    let mut batch = Vec::with_capacity(256);
    for (seq, (_, inner, flags)) in requests.iter().enumerate() {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq as u32 + 1;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner.clone()));
        message.finalize();
        let start = batch.len();
        batch.resize(start + message.buffer_len(), 0);
        message.serialize(&mut batch[start..]);
    }
    socket
        .send(&batch, 0)
        .map_err(|e| KernelError::setup("netlink send", errno_of(&e)))?;

    // One acknowledgement per request; a failure names its request.
    let mut acked = 0;
    let mut buf = vec![0u8; 8192];
    while acked < requests.len() {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| KernelError::setup("netlink receive", errno_of(&e)))?;
        let mut offset = 0;
        while offset < n {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                .map_err(|_| KernelError::setup("netlink: malformed answer", Errno::EPROTO))?;
            let len = message.header.length as usize;
            let seq = message.header.sequence_number as usize;
            if let NetlinkPayload::Error(err) = message.payload {
                let step = requests.get(seq.wrapping_sub(1)).map_or("netlink", |r| r.0);
                if let Some(code) = err.code {
                    return Err(KernelError::setup(step, Errno::from_raw(-code.get())));
                }
                acked += 1;
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
    Ok(())
}
