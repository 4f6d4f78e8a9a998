//! Host-side mount work, all of it inside the spawner thread's private
//! mount namespace (see `spawn`): nothing here is ever visible in the host's
//! namespace, and everything vanishes with the process.
//!
//! Once per runtime ([`Scratch::new`]): a tmpfs over the scratch directory;
//! a read-only /dev template holding only the allowed device nodes; and,
//! lazily per template, each layer and host bind attached as an idmapped,
//! read-only, nosuid, nodev mount (KERNEL-NOTES §1: idmapped lower +
//! overlay). Per sandbox ([`Scratch::assemble`]): a tmpfs sized by the disk
//! limit holding the overlay's upper and work dirs and /dev/shm, the overlay
//! itself, the host binds, /dev and /dev/shm. After the clone the whole tree
//! is detached ([`Scratch::detach`]): the child has its own copy, so the
//! next sandbox reuses the same mount points.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use sandlot_rootfs::Template;

use crate::kernel::error::{KernelError, KernelResult};
use crate::kernel::userns::IdRange;
use crate::kernel::version;
use crate::sys::mount as newmount;

/// Device nodes every sandbox gets: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// A template's layers and binds, attached as idmapped mounts while
/// sandboxes of it live (and a little longer, for the next create).
#[derive(Debug)]
pub struct PreparedTemplate {
    /// The overlay `lowerdir=` value (uppermost first).
    lowerdir: String,
    /// (attached idmapped source, target inside the root).
    binds: Vec<(PathBuf, PathBuf)>,
    /// Every scratch mount point it attached (layers and binds).
    attached: Vec<PathBuf>,
    /// Live sandboxes built from it.
    users: usize,
    /// When the last of them ended.
    unused_since: Option<Instant>,
}

/// Per-sandbox mount points, reused by every sandbox (creates are serial on
/// the spawner thread and everything is detached after each clone).
pub struct Scratch {
    dir: PathBuf,
    range: IdRange,
    idmap: OwnedFd,
    /// The merged root of the sandbox being built.
    root: PathBuf,
    /// The per-sandbox tmpfs (upper, work, shm).
    rw: PathBuf,
    dev: PathBuf,
    templates: HashMap<Vec<PathBuf>, PreparedTemplate>,
    attached: usize,
}

fn mkdir(path: &Path, mode: u32) -> KernelResult<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(KernelError::setup_io("mkdir", path, &e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| KernelError::setup_io("chmod", path, &e))
}

fn cstring(path: &Path) -> KernelResult<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        KernelError::invalid("path", format!("{} contains a NUL byte", path.display()))
    })
}

/// The name of the filesystem `path` is on (`ext4`, `overlayfs`, ...), or
/// its magic number when sandlot does not know it.
pub(crate) fn filesystem_name(path: &Path) -> String {
    let Ok(stat) = nix::sys::statfs::statfs(path) else {
        return "an unknown filesystem".into();
    };
    // Magic numbers from linux/magic.h.
    #[allow(clippy::unnecessary_cast)] // the field's type differs by target
    let magic = stat.filesystem_type().0 as i64 & 0xffff_ffff;
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x0102_1997 => "9p".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xFF53_4D42 | 0xFE53_4D42 => "cifs/smb".into(),
        0x7275 => "romfs".into(),
        0x7371_7368 => "squashfs".into(),
        other => format!("filesystem 0x{other:x}"),
    }
}

/// The error for a source directory the kernel cannot idmap: which
/// filesystem it is on, why that fails, and what to do.
fn idmap_unsupported(source: &Path, errno: nix::errno::Errno) -> KernelError {
    let fs = filesystem_name(source);
    let why = match fs.as_str() {
        "overlayfs" => "overlayfs cannot be idmapped (is sandlot itself running in a container?)",
        "tmpfs" => "tmpfs can be idmapped only from Linux 6.3 on",
        "nfs" | "fuse" | "9p" | "cifs/smb" => "network and FUSE filesystems cannot be idmapped",
        _ => "this filesystem or kernel (before 5.12) does not support idmapped mounts",
    };
    KernelError::Unsupported {
        feature: "idmapped mounts",
        reason: format!(
            "mount_setattr(MOUNT_ATTR_IDMAP) on {} failed with {errno}: it is on {fs}; {why}. \
             Put the data dir (RuntimeBuilder::data_dir, `sandlot --data-dir`) on ext4, xfs or \
             btrfs; the base template also idmaps the host's /usr, so on such a host use an \
             imported template. sandlot never falls back to host-owned files; `sandlot doctor` \
             checks this up front",
            source.display()
        ),
    }
}

/// overlayfs accepts idmapped lower layers from Linux 5.19 on; before, the
/// mount fails with `EINVAL` and nothing else would say why.
fn overlay_error(root: &Path, errno: nix::errno::Errno) -> KernelError {
    let release = version::release();
    let old_kernel = version::parse(&release).is_some_and(|v| v < (5, 19));
    if errno == nix::errno::Errno::EINVAL && old_kernel {
        KernelError::Unsupported {
            feature: "overlayfs on idmapped layers",
            reason: format!(
                "mounting the sandbox root failed with {errno}: Linux {release} is older than \
                 5.19, the first kernel whose overlayfs takes idmapped layers; upgrade to 6.1 or \
                 later"
            ),
        }
    } else {
        KernelError::setup_at("mount overlay on", root, errno)
    }
}

impl Scratch {
    /// Mounts the scratch tmpfs over `dir` and builds the /dev template.
    /// Must run in the spawner's private mount namespace.
    pub fn new(dir: &Path, range: IdRange, idmap: OwnedFd) -> KernelResult<Scratch> {
        fs::create_dir_all(dir)
            .map_err(|e| KernelError::setup_io("create scratch dir", dir, &e))?;
        mount(
            Some("sandlot"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID,
            Some("mode=0711,size=1m"),
        )
        .map_err(|e| KernelError::setup_at("mount scratch tmpfs on", dir, e))?;
        let scratch = Scratch {
            dir: dir.to_path_buf(),
            range,
            idmap,
            root: dir.join("root"),
            rw: dir.join("rw"),
            dev: dir.join("dev"),
            templates: HashMap::new(),
            attached: 0,
        };
        // The child (sandbox root, an unmapped id here) only traverses.
        for path in [
            &scratch.root,
            &scratch.rw,
            &scratch.dev,
            &dir.join("layers"),
        ] {
            mkdir(path, 0o711)?;
        }
        scratch.build_dev()?;
        Ok(scratch)
    }

    /// A tmpfs with only the allowed device nodes, remounted read-only: each
    /// sandbox binds it at /dev, so no sandbox can add a node or see one of
    /// the host's. Owned by sandbox root so it looks normal inside.
    fn build_dev(&self) -> KernelResult<()> {
        let dev = &self.dev;
        mount(
            Some("sandlot-dev"),
            dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0755,size=64k"),
        )
        .map_err(|e| KernelError::setup_at("mount /dev template on", dev, e))?;
        let root_uid = Uid::from_raw(self.range.base);
        let root_gid = Gid::from_raw(self.range.base);
        let owned = |path: &Path| {
            chown(path, Some(root_uid), Some(root_gid))
                .map_err(|e| KernelError::setup_at("chown", path, e))
        };
        for (name, major, minor) in DEVICES {
            let path = dev.join(name);
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(*major, *minor),
            )
            .map_err(|e| KernelError::setup_at("mknod", &path, e))?;
            // mknod is subject to the umask; devices must be 0666.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
                .map_err(|e| KernelError::setup_io("chmod", &path, &e))?;
            owned(&path)?;
        }
        for (name, target) in DEV_LINKS {
            let path = dev.join(name);
            symlink(target, &path).map_err(|e| KernelError::setup_io("symlink", &path, &e))?;
        }
        for (name, mode) in [("pts", 0o755), ("shm", 0o1777)] {
            let path = dev.join(name);
            mkdir(&path, mode)?;
            owned(&path)?;
        }
        owned(dev)?;
        mount(
            None::<&str>,
            dev,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| KernelError::setup_at("remount /dev template read-only", dev, e))
    }

    /// Attaches `source` as an idmapped, read-only, nosuid, nodev mount at a
    /// fresh scratch path.
    fn attach_idmapped(&mut self, source: &Path) -> KernelResult<PathBuf> {
        let tree = newmount::clone_tree(&cstring(source)?)
            .map_err(|e| KernelError::setup_at("open_tree", source, e))?;
        let attrs = newmount::MOUNT_ATTR_IDMAP
            | newmount::MOUNT_ATTR_RDONLY
            | newmount::MOUNT_ATTR_NOSUID
            | newmount::MOUNT_ATTR_NODEV;
        newmount::set_attributes(tree.as_fd(), attrs, Some(self.idmap.as_fd())).map_err(|e| {
            if e == nix::errno::Errno::EINVAL || e == nix::errno::Errno::EOPNOTSUPP {
                idmap_unsupported(source, e)
            } else {
                KernelError::setup_at("idmap", source, e)
            }
        })?;
        let target = self.dir.join("layers").join(self.attached.to_string());
        self.attached += 1;
        mkdir(&target, 0o711)?;
        newmount::move_mount(tree.as_fd(), &cstring(&target)?)
            .map_err(|e| KernelError::setup_at("move_mount to", &target, e))?;
        Ok(target)
    }

    /// Attaches a template's layers and binds the first time it is used.
    pub fn prepare(&mut self, template: &Template) -> KernelResult<()> {
        let key = template.layers.clone();
        if self.templates.contains_key(&key) {
            return Ok(());
        }
        if template.layers.is_empty() {
            return Err(KernelError::invalid(
                "template",
                format!("{} has no layers", template.name),
            ));
        }
        let mut lowers = Vec::new();
        let mut attached = Vec::new();
        let result = self.attach_all(template, &mut lowers, &mut attached);
        let binds = match result {
            Ok(binds) => binds,
            Err(e) => {
                // Nothing half-attached stays behind.
                detach_all(&attached);
                return Err(e);
            }
        };
        self.templates.insert(
            key,
            PreparedTemplate {
                lowerdir: lowers.join(":"),
                binds,
                attached,
                users: 0,
                unused_since: Some(Instant::now()),
            },
        );
        Ok(())
    }

    fn attach_all(
        &mut self,
        template: &Template,
        lowers: &mut Vec<String>,
        attached: &mut Vec<PathBuf>,
    ) -> KernelResult<Vec<(PathBuf, PathBuf)>> {
        for layer in &template.layers {
            let path = self.attach_idmapped(layer)?;
            attached.push(path.clone());
            let text = path.to_str().filter(|p| !p.contains([',', ':', '\\']));
            lowers.push(
                text.ok_or_else(|| {
                    KernelError::invalid("scratch_dir", "must not contain ',', ':' or '\\'")
                })?
                .to_string(),
            );
        }
        let mut binds = Vec::new();
        for bind in &template.binds {
            let path = self.attach_idmapped(&bind.source)?;
            attached.push(path.clone());
            binds.push((path, bind.target.clone()));
        }
        Ok(binds)
    }

    /// A sandbox of `template` went live (its lease is held until it ends).
    pub fn acquire(&mut self, template: &Template) {
        if let Some(prepared) = self.templates.get_mut(&template.layers) {
            prepared.users += 1;
            prepared.unused_since = None;
        }
    }

    /// A sandbox built from the template with these layers ended.
    pub fn release(&mut self, layers: &[PathBuf]) {
        if let Some(prepared) = self.templates.get_mut(layers) {
            prepared.users = prepared.users.saturating_sub(1);
            if prepared.users == 0 {
                prepared.unused_since = Some(Instant::now());
            }
        }
    }

    /// Detaches the layers of templates nobody used for `linger`; returns
    /// when to look again (`None`: nothing is waiting).
    pub fn detach_unused(&mut self, linger: Duration) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        self.templates.retain(|_, prepared| {
            let Some(since) = prepared.unused_since else {
                return true;
            };
            let due = since + linger;
            if due <= now {
                detach_all(&prepared.attached);
                return false;
            }
            next = Some(next.map_or(due, |n| n.min(due)));
            true
        });
        next
    }

    /// Builds one sandbox's root at [`Scratch::root_path`]. Returns an
    /// `O_PATH` descriptor of the writable tmpfs (for disk usage). On error
    /// everything mounted so far is detached again.
    pub fn assemble(&self, template: &Template, disk_bytes: u64) -> KernelResult<OwnedFd> {
        let prepared = self.templates.get(&template.layers).ok_or_else(|| {
            KernelError::invalid("template", format!("{} was not prepared", template.name))
        })?;
        let result = self.assemble_mounts(prepared, disk_bytes);
        if result.is_err() {
            self.detach();
        }
        result
    }

    fn assemble_mounts(
        &self,
        prepared: &PreparedTemplate,
        disk_bytes: u64,
    ) -> KernelResult<OwnedFd> {
        let base = self.range.base;
        // Inodes cost kernel memory; bound them with the disk limit.
        let inodes = (disk_bytes / 8192).max(16_384);
        // inode32: 32-bit inode numbers leave overlayfs the high bits it
        // needs for xino (below), also on kernels built with
        // CONFIG_TMPFS_INODE64.
        let opts = format!("size={disk_bytes},nr_inodes={inodes},mode=0700,inode32");
        mount(
            Some("sandlot-rw"),
            &self.rw,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| KernelError::setup_at("mount writable tmpfs on", &self.rw, e))?;
        let owner = (Some(Uid::from_raw(base)), Some(Gid::from_raw(base)));
        for (name, mode) in [("upper", 0o755), ("work", 0o700), ("shm", 0o1777)] {
            let path = self.rw.join(name);
            mkdir(&path, mode)?;
            // The upper root's owner is what / looks like inside.
            chown(&path, owner.0, owner.1).map_err(|e| KernelError::setup_at("chown", &path, e))?;
        }
        let rw_fd = fs::File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&self.rw)
            .map_err(|e| KernelError::setup_io("open", &self.rw, &e))?;

        // xino=on: the layers are on different filesystems (the data dir's
        // and this tmpfs), and without it overlayfs gives a directory an
        // inode number of its own in stat while readdir shows the layer's
        // (and files one st_dev per layer): programs that compare
        // scandir's d_ino with stat's st_ino, or tell files apart by
        // (st_dev, st_ino), misbehave. With xino every inode number is the
        // layer's, tagged in the high bits with the layer's filesystem.
        let overlay = format!(
            "lowerdir={},upperdir={},workdir={},xino=on",
            prepared.lowerdir,
            self.rw.join("upper").display(),
            self.rw.join("work").display()
        );
        mount(
            Some("sandlot"),
            &self.root,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(overlay.as_str()),
        )
        .map_err(|e| overlay_error(&self.root, e))?;

        // Images need not ship the directories sandlot mounts on.
        for dir in ["proc", "dev", "tmp"]
            .iter()
            .map(PathBuf::from)
            .chain(prepared.binds.iter().map(|(_, target)| target.clone()))
        {
            let path = self.root.join(&dir);
            if fs::symlink_metadata(&path).is_err() {
                mkdir(
                    &path,
                    if dir == Path::new("tmp") {
                        0o1777
                    } else {
                        0o755
                    },
                )?;
                chown(&path, owner.0, owner.1)
                    .map_err(|e| KernelError::setup_at("chown", &path, e))?;
            }
        }
        for (source, target) in &prepared.binds {
            let at = self.root.join(target);
            mount(
                Some(source),
                &at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| KernelError::setup_at("bind host dir onto", &at, e))?;
        }
        let dev = self.root.join("dev");
        mount(
            Some(&self.dev),
            &dev,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| KernelError::setup_at("bind /dev onto", &dev, e))?;
        let shm = dev.join("shm");
        mount(
            Some(&self.rw.join("shm")),
            &shm,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| KernelError::setup_at("bind /dev/shm onto", &shm, e))?;
        Ok(rw_fd.into())
    }

    /// Where the sandbox being built has its root in this namespace.
    pub fn root_path(&self) -> &Path {
        &self.root
    }

    /// Detaches this sandbox's mounts from the spawner's namespace. The
    /// child's namespace holds its own copy; the overlay keeps its layers.
    pub fn detach(&self) {
        for path in [&self.root, &self.rw] {
            // EINVAL: nothing mounted there (a failed assemble).
            let _ = umount2(path, MntFlags::MNT_DETACH);
        }
    }
}

/// Detaches scratch mount points and removes them.
fn detach_all(paths: &[PathBuf]) {
    for path in paths {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(path);
    }
}
