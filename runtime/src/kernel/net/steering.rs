//! The steering program attached to a sandbox's network namespace: a
//! SOCKMAP holding the host's sockets, the program of [`super::program`]
//! loaded for that map, and a BPF link from the program to the namespace.
//! Dropping [`Steering`] detaches the program (the link goes with its
//! last descriptor) and frees map and program; a namespace that dies
//! first detaches it by itself.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::program::{steering_program, Slot, SLOTS};
use crate::kernel::KernelError;
use crate::sys::bpf;

/// A live sk_lookup attachment.
#[derive(Debug)]
pub struct Steering {
    // Field order is drop order: detach first.
    link: OwnedFd,
    _program: OwnedFd,
    _map: OwnedFd,
}

impl Steering {
    /// Fills the map with `sockets` and attaches the program to `netns`.
    /// Until this returns nothing is steered; a slot left empty falls
    /// back to the kernel's normal lookup.
    pub fn attach(
        netns: BorrowedFd<'_>,
        sockets: &[(Slot, BorrowedFd<'_>)],
    ) -> Result<Steering, KernelError> {
        let map = bpf::map_create(bpf::MAP_TYPE_SOCKMAP, 4, 4, SLOTS, "sandlot_steer")
            .map_err(|e| KernelError::setup("create the steering map", e))?;
        for (slot, socket) in sockets {
            bpf::map_update_u32(
                map.as_fd(),
                *slot as u32,
                socket_fd(*socket),
                bpf::UPDATE_ANY,
            )
            .map_err(|e| KernelError::setup("put a socket in the steering map", e))?;
        }
        let insns = steering_program(std::os::fd::AsRawFd::as_raw_fd(&map));
        let program = bpf::prog_load(
            bpf::PROG_TYPE_SK_LOOKUP,
            bpf::ATTACH_SK_LOOKUP,
            &insns,
            c"Dual MIT/GPL",
            "sandlot_steer",
        )
        .map_err(|e| KernelError::Unsupported {
            feature: "the sk_lookup steering program",
            reason: format!("{}: {}", e.errno, last_lines(&e.log, 4)),
        })?;
        let link =
            bpf::link_create(program.as_fd(), netns, bpf::ATTACH_SK_LOOKUP).map_err(|e| {
                KernelError::setup("attach the steering program to the network namespace", e)
            })?;
        Ok(Steering {
            link,
            _program: program,
            _map: map,
        })
    }

    /// The link's descriptor (its info names the namespace and program).
    pub fn link(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

fn socket_fd(fd: BorrowedFd<'_>) -> u32 {
    std::os::fd::AsRawFd::as_raw_fd(&fd) as u32
}

fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// The steering links and programs alive in the whole system, for leak
/// checks: `(sk_lookup programs, netns links)`.
pub fn census() -> Result<(usize, usize), KernelError> {
    let count = |kind: bpf::Object, wanted: u32| -> Result<usize, KernelError> {
        let mut n = 0;
        let mut id = 0;
        while let Some(next) =
            bpf::next_id(kind, id).map_err(|e| KernelError::setup("walk BPF object ids", e))?
        {
            id = next;
            // Objects may vanish between the two calls.
            let Ok(fd) = bpf::fd_by_id(kind, id) else {
                continue;
            };
            if bpf::info(fd.as_fd()).is_ok_and(|info| info.kind == wanted) {
                n += 1;
            }
        }
        Ok(n)
    };
    Ok((
        count(bpf::Object::Prog, bpf::PROG_TYPE_SK_LOOKUP)?,
        count(bpf::Object::Link, bpf::LINK_TYPE_NETNS)?,
    ))
}
