//! The init binary, embedded at build time (see build.rs) and loaded once
//! per process into a sealed memfd. Sandboxes exec it from that descriptor:
//! no path a sandbox could write to ever holds it (the runc CVE-2019-5736
//! class), and it runs in any template — glibc, musl or no libc at all —
//! because it is static.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::kernel::error::{KernelError, KernelResult};

/// The static init, as built by build.rs.
pub const INIT_BINARY: &[u8] = include_bytes!(env!("SANDLOT_INIT_PATH"));

static INIT_MEMFD: OnceLock<OwnedFd> = OnceLock::new();

/// The descriptor number of the process-wide sealed init memfd.
pub fn init_fd() -> KernelResult<RawFd> {
    if let Some(fd) = INIT_MEMFD.get() {
        return Ok(fd.as_raw_fd());
    }
    let fd = load()?;
    // Another thread may have won the race; its descriptor is as good.
    Ok(INIT_MEMFD.get_or_init(|| fd).as_raw_fd())
}

/// `MFD_EXEC` (Linux 6.3): executable whatever `vm.memfd_noexec` says the
/// default is. Where the sysctl is 1, a memfd made without it is sealed
/// non-executable and init could not run; kernels before 6.3 refuse the
/// flag with `EINVAL` and have no such default.
const MFD_EXEC: MFdFlags = MFdFlags::from_bits_retain(0x0010);

fn load() -> KernelResult<OwnedFd> {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let fd = match memfd_create(c"sandlot-init", flags | MFD_EXEC) {
        Err(nix::errno::Errno::EINVAL) => memfd_create(c"sandlot-init", flags),
        other => other,
    }
    .map_err(|e| {
        if e == nix::errno::Errno::EACCES {
            KernelError::Unsupported {
                feature: "executable memfds",
                reason: "vm.memfd_noexec is 2, which forbids executing any memfd; sandlot runs \
                         init from a sealed memfd (so no sandbox can ever write it): set \
                         vm.memfd_noexec to 0 or 1"
                    .into(),
            }
        } else {
            KernelError::setup("memfd_create for init", e)
        }
    })?;
    let mut file = File::from(fd);
    file.write_all(INIT_BINARY)
        .map_err(|e| KernelError::io("write init into its memfd", e))?;
    // Sealed for good: nothing, not even this process, can change it now.
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| KernelError::setup("seal the init memfd", e))?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_a_static_elf_and_its_memfd_is_sealed() {
        assert_eq!(&INIT_BINARY[..4], b"\x7fELF");
        let fd = init_fd().unwrap();
        let seals = fcntl(crate::sys::fd::borrow(fd), FcntlArg::F_GET_SEALS).unwrap();
        let sealed = SealFlag::from_bits_truncate(seals);
        assert!(sealed.contains(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL));
        // The same descriptor serves every runtime of the process.
        assert_eq!(init_fd().unwrap(), fd);
    }
}
