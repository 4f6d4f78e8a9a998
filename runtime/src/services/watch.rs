//! `sandbox.files().watch(path, recursive)`: file system events of a
//! sandbox, from inotify.
//!
//! inotify wants a path, and a path the sandbox controls must never be
//! resolved by the host; so each directory is opened inside the sandbox
//! root (openat2, `RESOLVE_IN_ROOT`) and watched through the host's
//! `/proc/thread-self/fd/<fd>` — the kernel resolves that magic link to the inode
//! already open, whatever the sandbox renames meanwhile. The watch is on
//! the sandbox's overlay (or whatever mount the path is on), so it sees
//! every change made through it: by the sandbox's processes and by the
//! files API alike.
//!
//! Each watch has its own inotify instance and a thread (`sandlot-watch`)
//! polling three descriptors: the inotify instance, init's pidfd (the
//! sandbox's end), and a pipe whose write end the [`Watch`] holds (its
//! drop). Whichever fires first ends the thread, which closes everything
//! it opened. With `recursive`, directories created or moved in later are
//! watched as they appear, and what a new directory already holds when it
//! is first seen is reported as created (so `mkdir -p a/b && touch a/b/f`
//! is not lost between the events; such entries may be reported twice).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use nix::sys::stat::SFlag;

use crate::engine::error::{Error, Result};
use crate::engine::sandbox::SandboxShared;
use crate::kernel::fs::at::{self, MAX_DEPTH};
use crate::kernel::fs::path::SbPath;
use crate::kernel::fs::FilesError;

/// Events queued for a slow receiver before they are dropped (and an
/// [`FsEvent::Overflow`] says so).
const QUEUE: usize = 4096;

/// How long a rename's first half waits for its second half.
const RENAME_PAIRING: Duration = Duration::from_millis(10);

/// One change in a watched tree. Paths are absolute inside the sandbox,
/// built from the watched path as given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsEvent {
    Create {
        path: String,
        is_dir: bool,
    },
    /// Content written (consecutive writes of one batch are reported once).
    Modify {
        path: String,
    },
    /// Mode, owner, times or link count changed.
    Metadata {
        path: String,
    },
    Delete {
        path: String,
        is_dir: bool,
    },
    /// Moved within the watched tree (`from` and `to`), into it (`from`
    /// is `None`) or out of it (`to` is `None`).
    Rename {
        from: Option<String>,
        to: Option<String>,
        is_dir: bool,
    },
    /// Events were lost: the kernel's queue or this watch's overflowed.
    Overflow,
}

/// A running watch: receive [`FsEvent`]s from it (it derefs to the
/// channel's receiver). Dropping it stops the watch; the channel also
/// disconnects when the sandbox ends or the watched path is removed.
pub struct Watch {
    events: Receiver<FsEvent>,
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("pending", &self.events.len())
            .finish()
    }
}

impl std::ops::Deref for Watch {
    type Target = Receiver<FsEvent>;

    fn deref(&self) -> &Receiver<FsEvent> {
        &self.events
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Closing the write end wakes the thread (POLLHUP on the read end).
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const DIR_MASK: AddWatchFlags = AddWatchFlags::from_bits_truncate(
    AddWatchFlags::IN_CREATE.bits()
        | AddWatchFlags::IN_DELETE.bits()
        | AddWatchFlags::IN_MODIFY.bits()
        | AddWatchFlags::IN_ATTRIB.bits()
        | AddWatchFlags::IN_MOVED_FROM.bits()
        | AddWatchFlags::IN_MOVED_TO.bits()
        | AddWatchFlags::IN_DELETE_SELF.bits()
        | AddWatchFlags::IN_MOVE_SELF.bits()
        | AddWatchFlags::IN_ONLYDIR.bits(),
);

const FILE_MASK: AddWatchFlags = AddWatchFlags::from_bits_truncate(
    AddWatchFlags::IN_MODIFY.bits()
        | AddWatchFlags::IN_ATTRIB.bits()
        | AddWatchFlags::IN_DELETE_SELF.bits()
        | AddWatchFlags::IN_MOVE_SELF.bits(),
);

/// The thread's state: the inotify instance and what each watch is.
struct Watcher {
    inotify: Inotify,
    root: Arc<OwnedFd>,
    dirs: HashMap<WatchDescriptor, SbPath>,
    top: WatchDescriptor,
    top_path: SbPath,
    top_is_dir: bool,
    recursive: bool,
    events: Sender<FsEvent>,
    /// Events were dropped for a full queue; say so before the next one.
    lost: bool,
    /// The first half of a rename: (cookie, path, is_dir).
    moved_from: Option<(u32, SbPath, bool)>,
    /// Set when the receiver is gone or the watched path went away.
    done: bool,
}

fn inotify_error(op: &'static str, path: &SbPath, errno: Errno) -> Error {
    // Not `from_errno`: ENOSPC here is the watch limit, not a full disk.
    let hint = match errno {
        Errno::ENOSPC => " (fs.inotify.max_user_watches reached)",
        Errno::EMFILE => " (fs.inotify.max_user_instances reached)",
        _ => "",
    };
    if hint.is_empty() {
        FilesError::Os {
            op,
            path: path.to_string(),
            errno,
        }
        .into()
    } else {
        Error::ResourceUnavailable(format!("{op} {path}: {errno}{hint}"))
    }
}

/// Starts watching `path` of `sandbox` (see [`crate::Files::watch`]).
pub(crate) fn start(
    sandbox: &SandboxShared,
    root: Arc<OwnedFd>,
    path: SbPath,
    recursive: bool,
) -> Result<Watch> {
    let fd = at::open_in_root(root.as_fd(), &path, OFlag::O_PATH)?;
    let st = at::stat_fd(fd.as_fd(), path.as_str())?;
    at::check_filesystem(fd.as_fd(), path.as_str())?;
    let is_dir = at::kind_of(st.st_mode) == SFlag::S_IFDIR;
    let pidfd = sandbox.init_pidfd().ok_or_else(|| sandbox.not_running())?;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|errno| inotify_error("inotify_init", &path, errno))?;
    let mask = if is_dir { DIR_MASK } else { FILE_MASK };
    let top = inotify
        .add_watch(fd_path(&fd).as_str(), mask)
        .map_err(|errno| inotify_error("inotify_add_watch", &path, errno))?;
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let mut watcher = Watcher {
        inotify,
        root,
        dirs: HashMap::from([(top, path.clone())]),
        top,
        top_path: path,
        top_is_dir: is_dir,
        recursive,
        events: tx,
        lost: false,
        moved_from: None,
        done: false,
    };
    if is_dir && recursive {
        watcher.add_below(&fd, &watcher.top_path.clone(), 1, false)?;
    }
    drop(fd);
    let (stop_read, stop_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Error::setup("create the watch's stop pipe", e))?;
    let thread = std::thread::Builder::new()
        .name("sandlot-watch".into())
        .spawn(move || watcher.run(stop_read, pidfd))
        .map_err(|e| Error::io("start the watch thread", e))?;
    Ok(Watch {
        events: rx,
        stop: Some(stop_write),
        thread: Some(thread),
    })
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/thread-self/fd/{}", fd.as_raw_fd())
}

impl Watcher {
    fn run(mut self, stop: OwnedFd, pidfd: OwnedFd) {
        while !self.done {
            let timeout = if self.moved_from.is_some() {
                PollTimeout::try_from(RENAME_PAIRING).unwrap_or(PollTimeout::ZERO)
            } else {
                PollTimeout::NONE
            };
            let mut fds = [
                PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    // The rename's second half did not come: moved out.
                    self.flush_moved_from();
                    continue;
                }
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
            let fired = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            if fired(&fds[1]) || fired(&fds[2]) {
                return; // the sandbox ended, or the Watch was dropped
            }
            if fired(&fds[0]) {
                self.drain();
            }
        }
    }

    fn drain(&mut self) {
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => {
                    let mut last_modified: Option<String> = None;
                    for event in events {
                        self.handle(event, &mut last_modified);
                        if self.done {
                            return;
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return, // EAGAIN: drained
            }
        }
    }

    fn send(&mut self, event: FsEvent) {
        if self.lost {
            match self.events.try_send(FsEvent::Overflow) {
                Ok(()) => self.lost = false,
                Err(TrySendError::Full(_)) => return,
                Err(TrySendError::Disconnected(_)) => {
                    self.done = true;
                    return;
                }
            }
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.lost = true,
            Err(TrySendError::Disconnected(_)) => self.done = true,
        }
    }

    fn flush_moved_from(&mut self) {
        if let Some((_, from, is_dir)) = self.moved_from.take() {
            if is_dir {
                self.forget_below(&from);
            }
            self.send(FsEvent::Rename {
                from: Some(from.to_string()),
                to: None,
                is_dir,
            });
        }
    }

    fn handle(&mut self, event: InotifyEvent, last_modified: &mut Option<String>) {
        let mask = event.mask;
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            self.send(FsEvent::Overflow);
            return;
        }
        if mask.contains(AddWatchFlags::IN_IGNORED) {
            self.dirs.remove(&event.wd);
            if event.wd == self.top {
                self.flush_moved_from();
                self.done = true; // the watched path is gone
            }
            return;
        }
        let Some(dir) = self.dirs.get(&event.wd).cloned() else {
            return;
        };
        let is_dir = mask.contains(AddWatchFlags::IN_ISDIR);
        let is_moved_to = mask.contains(AddWatchFlags::IN_MOVED_TO);
        if self.moved_from.is_some() && !is_moved_to {
            self.flush_moved_from();
        }
        let Some(name) = event.name else {
            // About a watched inode itself: its parent's watch reports
            // it for every directory below the top.
            if event.wd == self.top {
                self.on_top(mask);
            }
            return;
        };
        let path = dir.join(&name.to_string_lossy());
        if !mask.contains(AddWatchFlags::IN_MODIFY) {
            *last_modified = None;
        }
        if mask.contains(AddWatchFlags::IN_CREATE) {
            self.send(FsEvent::Create {
                path: path.to_string(),
                is_dir,
            });
            if is_dir && self.recursive {
                self.watch_new_dir(&path);
            }
        } else if mask.contains(AddWatchFlags::IN_DELETE) {
            self.send(FsEvent::Delete {
                path: path.to_string(),
                is_dir,
            });
        } else if mask.contains(AddWatchFlags::IN_MODIFY) {
            if last_modified.as_deref() != Some(path.as_str()) {
                *last_modified = Some(path.to_string());
                self.send(FsEvent::Modify {
                    path: path.to_string(),
                });
            }
        } else if mask.contains(AddWatchFlags::IN_ATTRIB) {
            self.send(FsEvent::Metadata {
                path: path.to_string(),
            });
        } else if mask.contains(AddWatchFlags::IN_MOVED_FROM) {
            self.moved_from = Some((event.cookie, path, is_dir));
        } else if is_moved_to {
            let from = match self.moved_from.take() {
                Some((cookie, from, _)) if cookie == event.cookie => Some(from),
                other => {
                    self.moved_from = other;
                    self.flush_moved_from();
                    None
                }
            };
            if is_dir {
                match &from {
                    Some(from) => self.rename_below(from, &path),
                    None if self.recursive => self.watch_new_dir(&path),
                    None => {}
                }
            }
            self.send(FsEvent::Rename {
                from: from.map(|f| f.to_string()),
                to: Some(path.to_string()),
                is_dir,
            });
        }
    }

    /// Events on the watched path itself.
    fn on_top(&mut self, mask: AddWatchFlags) {
        let path = self.top_path.to_string();
        if mask.contains(AddWatchFlags::IN_DELETE_SELF) {
            self.send(FsEvent::Delete {
                path,
                is_dir: self.top_is_dir,
            });
        } else if mask.contains(AddWatchFlags::IN_MOVE_SELF) {
            self.send(FsEvent::Rename {
                from: Some(path),
                to: None,
                is_dir: self.top_is_dir,
            });
        } else if mask.contains(AddWatchFlags::IN_MODIFY) {
            self.send(FsEvent::Modify { path });
        } else if mask.contains(AddWatchFlags::IN_ATTRIB) {
            self.send(FsEvent::Metadata { path });
        }
    }

    /// Watches a directory that appeared (created or moved in) and reports
    /// what it already holds.
    fn watch_new_dir(&mut self, path: &SbPath) {
        let depth = path
            .as_str()
            .strip_prefix(self.top_path.as_str())
            .map_or(0, |rest| rest.matches('/').count());
        if depth > MAX_DEPTH {
            return;
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let Ok(fd) = at::open_in_root(self.root.as_fd(), path, flags) else {
            return; // gone again, or replaced by a symlink
        };
        if at::is_denied_filesystem(fd.as_fd()) {
            return;
        }
        match self.inotify.add_watch(fd_path(&fd).as_str(), DIR_MASK) {
            Ok(wd) => {
                self.dirs.insert(wd, path.clone());
            }
            Err(_) => {
                // Out of watches: say events may be missing from here on.
                self.send(FsEvent::Overflow);
                return;
            }
        }
        let _ = self.add_below(&fd, path, depth + 1, true);
    }

    /// Watches every directory below `dir` (open at `fd`); with `report`,
    /// sends a Create for every entry found.
    fn add_below(&mut self, fd: &OwnedFd, dir: &SbPath, depth: usize, report: bool) -> Result<()> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        for name in at::read_names(fd.as_fd(), dir.as_str())? {
            let path = dir.join(&at::show_name(&name));
            let Ok(st) = at::stat_child(fd.as_fd(), &name, path.as_str()) else {
                continue;
            };
            let is_dir = at::kind_of(st.st_mode) == SFlag::S_IFDIR;
            if report {
                self.send(FsEvent::Create {
                    path: path.to_string(),
                    is_dir,
                });
            }
            if !is_dir {
                continue;
            }
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
            let Ok(sub) = at::open_child(fd.as_fd(), &name, flags, path.as_str()) else {
                continue;
            };
            if at::is_denied_filesystem(sub.as_fd()) {
                continue;
            }
            let wd = self
                .inotify
                .add_watch(fd_path(&sub).as_str(), DIR_MASK)
                .map_err(|errno| inotify_error("inotify_add_watch", &path, errno))?;
            self.dirs.insert(wd, path.clone());
            self.add_below(&sub, &path, depth + 1, report)?;
        }
        Ok(())
    }

    fn is_below(path: &str, dir: &str) -> bool {
        path == dir
            || path
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// A directory moved within the tree: its watches keep working, under
    /// the new name.
    fn rename_below(&mut self, from: &SbPath, to: &SbPath) {
        for path in self.dirs.values_mut() {
            if Self::is_below(path.as_str(), from.as_str()) {
                let rest = &path.as_str()[from.as_str().len()..];
                *path = to.join(rest);
            }
        }
    }

    /// A directory moved out of the tree: stop watching it.
    fn forget_below(&mut self, dir: &SbPath) {
        let gone: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(wd, path)| **wd != self.top && Self::is_below(path.as_str(), dir.as_str()))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            let _ = self.inotify.rm_watch(wd);
            self.dirs.remove(&wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_means_the_dir_or_under_it() {
        assert!(Watcher::is_below("/a/b", "/a/b"));
        assert!(Watcher::is_below("/a/b/c", "/a/b"));
        assert!(!Watcher::is_below("/a/bc", "/a/b"));
        assert!(!Watcher::is_below("/a", "/a/b"));
    }
}
