//! Pseudo-terminal masters the host holds: what it checks before it
//! accepts one from a sandbox, and the window size. The terminal itself
//! is made inside the sandbox, by init, on the sandbox's own devpts.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::{check, SysResult};

/// The device of every pseudo-terminal master: `/dev/ptmx` and each
/// devpts instance's `ptmx` are character device 5:2 (TTYAUX_MAJOR).
const PTMX: (u32, u32) = (5, 2);

/// Whether `fd` is the master end of a pseudo-terminal: a character
/// device 5:2 that answers `TIOCGPTN` (only a master does). Anything else
/// a sandbox might pass instead — a directory, a socket, a host device, a
/// terminal's slave end — fails one of the two.
pub fn is_pty_master(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: an all-zero struct stat is valid plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one struct stat into `st`.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || (libc::major(st.st_rdev), libc::minor(st.st_rdev)) != PTMX
    {
        return false;
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int through the pointer, a live
    // local.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut number) == 0 }
}

/// Sets a terminal's size (`TIOCSWINSZ` on the master): the kernel sends
/// SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> SysResult<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } as libc::c_long)?;
    Ok(())
}

/// A terminal's size (`TIOCGWINSZ`): (rows, cols).
pub fn window_size(fd: BorrowedFd<'_>) -> SysResult<(u16, u16)> {
    // SAFETY: an all-zero winsize is valid plain data.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } as libc::c_long)?;
    Ok((size.ws_row, size.ws_col))
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    use super::*;
    use crate::sys::Errno;

    fn open(path: &std::ffi::CStr, flags: libc::c_int) -> OwnedFd {
        // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
        let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open {path:?}: {}", Errno::last());
        // SAFETY: a fresh descriptor owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn only_a_pty_master_passes_the_check() {
        let master = open(c"/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY);
        assert!(is_pty_master(master.as_fd()));
        for other in [c"/dev/null", c"/", c"/proc/self/status"] {
            let fd = open(other, libc::O_RDONLY);
            assert!(!is_pty_master(fd.as_fd()), "{other:?} passed");
        }
        // The slave end is a terminal too, but not a master.
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int; TIOCGPTPEER returns a new fd.
        let slave = unsafe {
            assert_eq!(
                libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock),
                0
            );
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        assert!(slave >= 0);
        // SAFETY: a fresh descriptor owned by nobody else.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        assert!(!is_pty_master(slave.as_fd()));
        set_window_size(master.as_fd(), 40, 120).unwrap();
        assert_eq!(window_size(slave.as_fd()).unwrap(), (40, 120));
    }
}
