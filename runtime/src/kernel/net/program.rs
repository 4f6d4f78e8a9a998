//! The sk_lookup program, hand-assembled: no clang or libbpf at build
//! time, and small enough to read in full (see [`steering_program`]).
//!
//! For each new TCP connection and each UDP datagram in the sandbox's
//! network namespace the kernel runs it before looking up a socket:
//!
//! - port 53, TCP or UDP, any destination: the host's resolver socket;
//! - other TCP, unless the destination is loopback (127.0.0.0/8, ::1):
//!   the host's proxy listener;
//! - everything else: the normal lookup (the sandbox's own servers on
//!   loopback; UDP to other ports finds nobody and is refused).
//!
//! The chosen socket comes from a SOCKMAP indexed by [`Slot`]; an empty
//! slot also falls back to the normal lookup.

use crate::sys::bpf::Insn;

/// Slots of the steering map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Slot {
    /// The proxy's TCP listener.
    Proxy = 0,
    /// The resolver's TCP listener (DNS over TCP, port 53).
    DnsTcp = 1,
    /// The resolver's UDP socket (port 53).
    DnsUdp = 2,
}

/// Number of slots in the map.
pub const SLOTS: u32 = 3;

// Offsets in `struct bpf_sk_lookup` (linux/bpf.h).
const FAMILY: i16 = 8;
const PROTOCOL: i16 = 12;
const LOCAL_IP4: i16 = 40;
const LOCAL_IP6: i16 = 44;
const LOCAL_PORT: i16 = 60;

const AF_INET: i32 = libc::AF_INET;
const AF_INET6: i32 = libc::AF_INET6;
const IPPROTO_TCP: i32 = libc::IPPROTO_TCP;
const IPPROTO_UDP: i32 = libc::IPPROTO_UDP;
const DNS_PORT: i32 = 53;

// Helpers (enum bpf_func_id).
const MAP_LOOKUP_ELEM: i32 = 1;
const SK_RELEASE: i32 = 86;
const SK_ASSIGN: i32 = 124;

/// `SK_PASS`: go on with this socket (if one was assigned) or the normal
/// lookup.
const SK_PASS: i32 = 1;

// Addresses are in network byte order in the context and loaded as native
// u32s: these give the loaded value of 127.x.y.z's first byte, and of
// ::1's last word, on either endianness.
const FIRST_OCTET: i32 = u32::from_ne_bytes([0xff, 0, 0, 0]) as i32;
const LOOPBACK4_FIRST_OCTET: i32 = u32::from_ne_bytes([127, 0, 0, 0]) as i32;
const LOOPBACK6_LAST_WORD: i32 = u32::from_ne_bytes([0, 0, 0, 1]) as i32;

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R10: u8 = 10;

// Opcodes (class | size/op | mode/source).
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const AND64_IMM: u8 = 0x57;
const LDX_W: u8 = 0x61;
const STX_W: u8 = 0x63;
const LD_IMM64: u8 = 0x18;
const JA: u8 = 0x05;
const JEQ_IMM: u8 = 0x15;
const JNE_IMM: u8 = 0x55;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// `src_reg` of a `ld_imm64` whose immediate is a map descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// A tiny assembler: instructions plus jumps to named labels, resolved at
/// the end (offsets count instructions after the jump).
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(&'static str, usize)>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        });
    }
    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.op(MOV64_REG, dst, src, 0, 0);
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.op(MOV64_IMM, dst, 0, 0, imm);
    }
    fn load_u32(&mut self, dst: u8, base: u8, off: i16) {
        self.op(LDX_W, dst, base, off, 0);
    }
    fn store_u32(&mut self, base: u8, off: i16, src: u8) {
        self.op(STX_W, base, src, off, 0);
    }
    fn load_map_fd(&mut self, dst: u8, fd: i32) {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd);
        self.op(0, 0, 0, 0, 0);
    }
    fn jump(&mut self, code: u8, reg: u8, imm: i32, target: &'static str) {
        self.jumps.push((self.insns.len(), target));
        self.op(code, reg, 0, 0, imm);
    }
    fn call(&mut self, helper: i32) {
        self.op(CALL, 0, 0, 0, helper);
    }
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, target) in &self.jumps {
            let to = self
                .labels
                .iter()
                .find(|(name, _)| name == target)
                .map(|&(_, index)| index)
                .unwrap_or_else(|| panic!("undefined label {target}"));
            self.insns[*at].off = (to as isize - *at as isize - 1) as i16;
        }
        self.insns
    }
}

/// The steering program for the SOCKMAP behind `map_fd` (the descriptor
/// is baked into the instructions and resolved by the kernel at load).
pub fn steering_program(map_fd: i32) -> Vec<Insn> {
    let mut a = Asm::default();
    a.mov_reg(R6, R1); // r6 = ctx, kept across helper calls
    a.load_u32(R2, R6, LOCAL_PORT);
    a.load_u32(R3, R6, PROTOCOL);

    // DNS, TCP or UDP, to any address.
    a.mov_imm(R7, Slot::DnsTcp as i32);
    a.jump(JNE_IMM, R2, DNS_PORT, "not_dns");
    a.jump(JNE_IMM, R3, IPPROTO_UDP, "assign");
    a.mov_imm(R7, Slot::DnsUdp as i32);
    a.jump(JA, 0, 0, "assign");

    // Other TCP to anything but loopback goes to the proxy.
    a.label("not_dns");
    a.jump(JNE_IMM, R3, IPPROTO_TCP, "pass");
    a.mov_imm(R7, Slot::Proxy as i32);
    a.load_u32(R4, R6, FAMILY);
    a.jump(JNE_IMM, R4, AF_INET, "ipv6");
    a.load_u32(R5, R6, LOCAL_IP4);
    a.op(AND64_IMM, R5, 0, 0, FIRST_OCTET);
    a.jump(JEQ_IMM, R5, LOOPBACK4_FIRST_OCTET, "pass");
    a.jump(JA, 0, 0, "assign");

    a.label("ipv6");
    a.jump(JNE_IMM, R4, AF_INET6, "pass");
    for word in 0..3 {
        a.load_u32(R5, R6, LOCAL_IP6 + 4 * word);
        a.jump(JNE_IMM, R5, 0, "assign");
    }
    a.load_u32(R5, R6, LOCAL_IP6 + 12);
    a.jump(JEQ_IMM, R5, LOOPBACK6_LAST_WORD, "pass");

    // sk = map[slot]; if sk { sk_assign(ctx, sk, 0); sk_release(sk) }
    a.label("assign");
    a.store_u32(R10, -4, R7);
    a.load_map_fd(R1, map_fd);
    a.mov_reg(R2, R10);
    a.op(ADD64_IMM, R2, 0, 0, -4);
    a.call(MAP_LOOKUP_ELEM);
    a.jump(JEQ_IMM, R0, 0, "pass");
    a.mov_reg(R8, R0);
    a.mov_reg(R1, R6);
    a.mov_reg(R2, R8);
    a.mov_imm(R3, 0);
    a.call(SK_ASSIGN);
    a.mov_reg(R1, R8);
    a.call(SK_RELEASE);

    a.label("pass");
    a.mov_imm(R0, SK_PASS);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_their_labels() {
        let insns = steering_program(7);
        // The last two instructions are `r0 = SK_PASS; exit`.
        let pass = insns.len() - 2;
        assert_eq!(insns[pass].code, MOV64_IMM);
        assert_eq!(insns[pass].imm, SK_PASS);
        assert_eq!(insns[pass + 1].code, EXIT);
        // Every jump stays inside the program, and a lookup miss passes.
        for (i, insn) in insns.iter().enumerate() {
            if matches!(insn.code, JA | JEQ_IMM | JNE_IMM) {
                let to = i as isize + 1 + insn.off as isize;
                assert!(
                    to > i as isize && (to as usize) < insns.len(),
                    "jump at {i}"
                );
            }
        }
        let miss = insns
            .iter()
            .position(|i| i.code == CALL && i.imm == MAP_LOOKUP_ELEM)
            .unwrap()
            + 1;
        assert_eq!(miss as isize + 1 + insns[miss].off as isize, pass as isize);
    }

    #[test]
    fn the_map_descriptor_is_a_pseudo_map_load() {
        let insns = steering_program(42);
        let at = insns.iter().position(|i| i.code == LD_IMM64).unwrap();
        assert_eq!(insns[at].imm, 42);
        assert_eq!(insns[at].regs >> 4, PSEUDO_MAP_FD);
        assert_eq!(
            insns[at + 1],
            Insn {
                code: 0,
                regs: 0,
                off: 0,
                imm: 0
            }
        );
    }
}
