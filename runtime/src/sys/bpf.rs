//! The few `bpf(2)` commands sandlot's network steering needs: create a
//! map, put a socket in it, load a program, attach it to a network
//! namespace with a link, and walk the kernel's program and link ids (for
//! leak checks). No libbpf: each command's attribute block is a small
//! `repr(C)` struct laid out as in `union bpf_attr` (linux/bpf.h); the
//! kernel accepts a block shorter than its own as long as the size passed
//! covers every field it reads.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{check, Errno, SysResult};

// Commands (enum bpf_cmd).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;

/// `BPF_MAP_TYPE_SOCKMAP`: an array whose values are sockets.
pub const MAP_TYPE_SOCKMAP: u32 = 15;
/// `BPF_PROG_TYPE_SK_LOOKUP`: runs when the kernel looks up the socket
/// that receives a new TCP connection or a UDP datagram.
pub const PROG_TYPE_SK_LOOKUP: u32 = 30;
/// `BPF_SK_LOOKUP`: the attach type of an sk_lookup program (to a netns).
pub const ATTACH_SK_LOOKUP: u32 = 36;
/// `BPF_LINK_TYPE_NETNS`.
pub const LINK_TYPE_NETNS: u32 = 5;
/// `BPF_ANY` for map updates: create or replace.
pub const UPDATE_ANY: u64 = 0;

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and
/// source registers (low and high nibble), offset, immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Issues `bpf(cmd, attr, size_of::<A>())`.
///
/// # Safety
///
/// `A` must be a `repr(C)` prefix of `union bpf_attr` for `cmd`, and every
/// pointer it holds must be valid for what the command does with it.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> SysResult<libc::c_long> {
    // A program load can fail with EAGAIN while the verifier is short of
    // memory: a few more tries (as libbpf does), never a spin.
    let mut tries_left = 5;
    loop {
        // SAFETY: forwarded to the caller's contract; the size is exactly
        // the struct's, so the kernel reads and writes only inside it.
        let ret = check(unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut A,
                std::mem::size_of::<A>() as libc::c_uint,
            )
        });
        match ret {
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) if cmd == BPF_PROG_LOAD && tries_left > 0 => tries_left -= 1,
            other => return other,
        }
    }
}

/// Takes ownership of the descriptor a successful command returned.
fn owned(ret: libc::c_long) -> OwnedFd {
    // SAFETY: the bpf commands that create an object return a fresh
    // descriptor (close-on-exec, always) that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// Copies `name` into a `BPF_OBJ_NAME_LEN` (16) field, cut to 15 bytes.
fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (dst, src) in out.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    out
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `BPF_MAP_CREATE`: a map of `max_entries` entries with the given key and
/// value sizes. `name` shows in `bpftool map` (cut to 15 bytes).
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> SysResult<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: obj_name(name),
        ..MapCreateAttr::default()
    };
    // SAFETY: MapCreateAttr mirrors the BPF_MAP_CREATE prefix of bpf_attr
    // and holds no pointers.
    unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.map(owned)
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `BPF_MAP_UPDATE_ELEM` with a `u32` key and a `u32` value (for a
/// SOCKMAP: the socket's descriptor, which the kernel resolves to the
/// socket and keeps a reference to).
pub fn map_update_u32(map: BorrowedFd<'_>, key: u32, value: u32, flags: u64) -> SysResult<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags,
    };
    // SAFETY: key and value point at live u32s for the call; the map's
    // key and value sizes are 4 (the caller made it so).
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }?;
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Why a program did not load: the errno and, when the verifier refused
/// it, the verifier's log (its last lines say what it did not accept).
#[derive(Debug)]
pub struct LoadError {
    pub errno: Errno,
    pub log: String,
}

/// `BPF_PROG_LOAD`. On failure the load is repeated with a log buffer so
/// the error carries the verifier's explanation.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    license: &CStr,
    name: &str,
) -> Result<OwnedFd, LoadError> {
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: obj_name(name),
        expected_attach_type,
        ..ProgLoadAttr::default()
    };
    // SAFETY: insns and license point at live memory of the stated sizes
    // for the call; no log buffer is offered.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(owned(fd)),
        Err(errno) => {
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            // SAFETY: as above, plus a log buffer of log_size writable
            // bytes that outlives the call.
            match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
                Ok(fd) => Ok(owned(fd)),
                Err(_) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    Err(LoadError {
                        errno,
                        log: String::from_utf8_lossy(&log[..end]).into_owned(),
                    })
                }
            }
        }
    }
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `BPF_LINK_CREATE`: attaches `prog` to `target` (for sk_lookup: a
/// network namespace descriptor). The attachment lasts as long as the
/// returned link descriptor (or the target) lives.
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> SysResult<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: target.as_raw_fd() as u32,
        attach_type,
        flags: 0,
    };
    // SAFETY: LinkCreateAttr mirrors the link_create prefix; no pointers.
    unsafe { bpf(BPF_LINK_CREATE, &mut attr) }.map(owned)
}

#[repr(C)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The kinds of objects whose ids can be walked.
#[derive(Clone, Copy, Debug)]
pub enum Object {
    Prog,
    Link,
}

/// The id after `start` of every loaded program or live link in the
/// system (`BPF_*_GET_NEXT_ID`), `None` at the end.
pub fn next_id(kind: Object, start: u32) -> SysResult<Option<u32>> {
    let cmd = match kind {
        Object::Prog => BPF_PROG_GET_NEXT_ID,
        Object::Link => BPF_LINK_GET_NEXT_ID,
    };
    let mut attr = GetIdAttr {
        id: start,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: GetIdAttr mirrors the start_id/next_id prefix; no pointers.
    match unsafe { bpf(cmd, &mut attr) } {
        Ok(_) => Ok(Some(attr.next_id)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A descriptor for the object with `id` (`BPF_*_GET_FD_BY_ID`); `ENOENT`
/// if it went away meanwhile.
pub fn fd_by_id(kind: Object, id: u32) -> SysResult<OwnedFd> {
    let cmd = match kind {
        Object::Prog => BPF_PROG_GET_FD_BY_ID,
        Object::Link => BPF_LINK_GET_FD_BY_ID,
    };
    let mut attr = GetIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: as in next_id.
    unsafe { bpf(cmd, &mut attr) }.map(owned)
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The first fields of `struct bpf_prog_info` / `struct bpf_link_info`
/// sandlot reads: the object's type and, for a netns link, the program's
/// id, the namespace's inode number and the attach type.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct ObjInfo {
    /// Program type or link type.
    pub kind: u32,
    pub id: u32,
    /// Links only: the attached program's id.
    pub prog_id: u32,
    _pad: u32,
    /// Netns links only: the namespace's inode (0 once it is gone).
    pub netns_ino: u32,
    /// Netns links only.
    pub netns_attach_type: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD`, the prefix in [`ObjInfo`].
pub fn info(fd: BorrowedFd<'_>) -> SysResult<ObjInfo> {
    let mut out = ObjInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ObjInfo>() as u32,
        info: &mut out as *mut ObjInfo as u64,
    };
    // SAFETY: `info` points at a writable ObjInfo of info_len bytes; the
    // kernel writes at most that many.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(out)
}
