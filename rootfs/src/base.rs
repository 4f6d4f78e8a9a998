//! The `base` template: the host's /usr (and the /bin, /sbin, /lib* that
//! point into it or sit beside it) bound read-only, plus a small synthesized
//! /etc and the empty directories a root filesystem needs.
//!
//! The lower directory is built once under the data dir and reused; its name
//! carries a fingerprint of what it was built from (the host's top-level
//! layout and the /etc files copied from the host), so a host change (a new
//! ld.so.cache after an upgrade) produces a fresh one instead of a stale
//! template. Building happens in a temporary directory that is renamed into
//! place, so concurrent runtimes never see half a template.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, HostBind, Settings, Template, TemplateConfig, TemplateKind};

pub const BASE_NAME: &str = "base";

/// Bumped whenever the synthesized content changes.
const BASE_VERSION: u32 = 2;

/// Top-level host entries that make up the userland. A directory is bound
/// read-only; a symlink (merged-/usr systems) is reproduced as a symlink.
const HOST_TOP: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Small host files and trees under /etc that programs from /usr expect
/// (the dynamic loader's cache, Debian's alternatives symlinks, time zone,
/// protocol and service names, fontconfig's configuration, and Debian's
/// matplotlib defaults, which it keeps in /etc and without which `import
/// matplotlib` fails). Nothing secret: no shadow, no keys.
const HOST_ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "os-release",
    "debian_version",
    "protocols",
    "services",
    "mime.types",
    "fonts",
    "matplotlibrc",
];

/// Uid and gid of the unprivileged user every template offers.
pub const USER_ID: u32 = 1000;

const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("srv", 0o755),
    ("media", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/lib", 0o755),
    ("var/cache", 0o755),
    ("var/log", 0o755),
    ("etc", 0o755),
];

fn shell(host_root: &Path) -> &'static str {
    if host_root.join("usr/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

fn etc_files(shell: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:{shell}\n\
                 user:x:{USER_ID}:{USER_ID}:user:/home/user:{shell}\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\ntty:x:5:\nuser:x:{USER_ID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
        ),
        (
            "resolv.conf",
            // With a network, every DNS packet reaches sandlot's resolver
            // whatever the address; without one, nothing answers there.
            "# sandlot: with a network, sandlot's resolver answers at any\n\
             # nameserver address; without one, there is nothing to ask\n\
             nameserver 127.0.0.53\n"
                .into(),
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
             networks: files\nprotocols: files\nservices: files\n"
                .into(),
        ),
    ]
}

/// The `base` template, built under `data_dir/templates/base` on first use.
pub fn base(data_dir: &Path) -> Result<Template, Error> {
    base_from(data_dir, Path::new("/"))
}

/// [`base`] with the host root injected, so tests can build from a fixture.
pub fn base_from(data_dir: &Path, host_root: &Path) -> Result<Template, Error> {
    let dir = data_dir.join("templates").join(BASE_NAME);
    let fingerprint = fingerprint(host_root);
    let rootfs = dir.join(format!("rootfs-{fingerprint:016x}"));
    if !rootfs.is_dir() {
        build(&dir, &rootfs, host_root)?;
    }
    let binds = HOST_TOP
        .iter()
        .map(|name| host_root.join(name))
        .filter(|p| is_real_dir(p))
        .map(|source| HostBind {
            target: PathBuf::from(source.file_name().unwrap()),
            source,
        })
        .collect();
    let shell = shell(host_root).to_string();
    Ok(Template {
        name: BASE_NAME.into(),
        kind: TemplateKind::HostBind,
        layers: vec![rootfs],
        binds,
        config: TemplateConfig {
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            cmd: Vec::new(),
            entrypoint: Vec::new(),
            working_dir: None,
            user: "root".into(),
            shell,
        },
        settings: Settings::default(),
    })
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// FNV-1a over everything the template is derived from.
fn fingerprint(host_root: &Path) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    feed(&BASE_VERSION.to_le_bytes());
    for name in HOST_TOP {
        let path = host_root.join(name);
        feed(name.as_bytes());
        match fs::read_link(&path) {
            Ok(target) => feed(target.as_os_str().as_encoded_bytes()),
            Err(_) => feed(if is_real_dir(&path) {
                b"dir"
            } else {
                b"absent"
            }),
        }
    }
    feed(shell(host_root).as_bytes());
    for name in HOST_ETC {
        if let Ok(meta) = fs::symlink_metadata(host_root.join("etc").join(name)) {
            feed(name.as_bytes());
            feed(&meta.mtime().to_le_bytes());
            feed(&meta.mtime_nsec().to_le_bytes());
            feed(&meta.size().to_le_bytes());
        }
    }
    hash
}

fn build(dir: &Path, rootfs: &Path, host_root: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    // Unique per process (pid) and per build within it (the counter: two
    // runtimes of one process may build at once, and a coarse clock can
    // give both the same time).
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".build-{}-{n}-{nanos}", std::process::id()));
    let result = populate(&tmp, host_root).and_then(|()| {
        match fs::rename(&tmp, rootfs) {
            Ok(()) => Ok(()),
            // Another runtime finished the same template first: use theirs.
            Err(_) if rootfs.is_dir() => Ok(()),
            Err(e) => Err(Error::io("rename into", rootfs)(e)),
        }
    });
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn populate(root: &Path, host_root: &Path) -> Result<(), Error> {
    mkdir(root, 0o755)?;
    for (name, mode) in DIRS {
        mkdir(&root.join(name), *mode)?;
    }
    for name in HOST_TOP {
        let host = host_root.join(name);
        let ours = root.join(name);
        if let Ok(target) = fs::read_link(&host) {
            symlink(&target, &ours).map_err(Error::io("symlink", &ours))?;
        } else if is_real_dir(&host) {
            mkdir(&ours, 0o755)?;
        }
    }
    let home = root.join("home/user");
    mkdir(&home, 0o755)?;
    std::os::unix::fs::lchown(&home, Some(USER_ID), Some(USER_ID))
        .map_err(Error::io("chown", &home))?;

    let etc = root.join("etc");
    for (name, content) in etc_files(shell(host_root)) {
        let path = etc.join(name);
        fs::write(&path, content).map_err(Error::io("write", &path))?;
    }
    for name in HOST_ETC {
        let from = host_root.join("etc").join(name);
        if fs::symlink_metadata(&from).is_ok() {
            copy_tree(&from, &etc.join(name))?;
        }
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create", path)(e)),
    }
    // The umask must not weaken 1777 or 0700 into something else.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io("chmod", path))
}

/// Copies regular files, directories and symlinks; skips anything else
/// (sockets, device nodes) — a template never carries those from the host.
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let meta = fs::symlink_metadata(from).map_err(Error::io("stat", from))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(from).map_err(Error::io("readlink", from))?;
        symlink(&target, to).map_err(Error::io("symlink", to))
    } else if kind.is_dir() {
        mkdir(to, meta.mode() & 0o7777)?;
        for entry in fs::read_dir(from).map_err(Error::io("list", from))? {
            let entry = entry.map_err(Error::io("list", from))?;
            let name: &OsStr = &entry.file_name();
            copy_tree(&from.join(name), &to.join(name))?;
        }
        Ok(())
    } else if kind.is_file() {
        fs::copy(from, to).map_err(Error::io("copy", from))?;
        Ok(())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_host(dir: &Path) -> PathBuf {
        let host = dir.join("host");
        fs::create_dir_all(host.join("usr/bin")).unwrap();
        fs::create_dir_all(host.join("usr/lib")).unwrap();
        fs::write(host.join("usr/bin/bash"), b"").unwrap();
        symlink("usr/bin", host.join("bin")).unwrap();
        symlink("usr/lib", host.join("lib")).unwrap();
        fs::create_dir_all(host.join("etc/alternatives")).unwrap();
        symlink("/usr/bin/mawk", host.join("etc/alternatives/awk")).unwrap();
        fs::write(host.join("etc/ld.so.cache"), b"cache").unwrap();
        fs::write(host.join("etc/shadow"), b"secret").unwrap();
        host
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sandlot-rootfs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn base_mirrors_the_host_layout_and_synthesizes_etc() {
        let dir = tempdir("layout");
        let host = fixture_host(&dir);
        let template = base_from(&dir.join("data"), &host).unwrap();
        let root = &template.layers[0];

        assert_eq!(
            template.binds,
            vec![HostBind {
                source: host.join("usr"),
                target: "usr".into()
            }]
        );
        assert_eq!(
            fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(root.join("usr").is_dir() && !root.join("usr").is_symlink());
        assert!(fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:"));
        assert_eq!(fs::read(root.join("etc/ld.so.cache")).unwrap(), b"cache");
        assert_eq!(
            fs::read_link(root.join("etc/alternatives/awk")).unwrap(),
            Path::new("/usr/bin/mawk")
        );
        assert!(
            !root.join("etc/shadow").exists(),
            "host secrets must not be copied"
        );
        let tmp_mode = fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777;
        assert_eq!(tmp_mode, 0o1777);
        assert_eq!(fs::metadata(root.join("home/user")).unwrap().uid(), USER_ID);
        assert_eq!(template.config.shell, "/bin/bash");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn base_is_reused_until_the_host_changes() {
        let dir = tempdir("reuse");
        let host = fixture_host(&dir);
        let data = dir.join("data");
        let first = base_from(&data, &host).unwrap();
        let again = base_from(&data, &host).unwrap();
        assert_eq!(first.layers, again.layers);

        fs::write(host.join("etc/ld.so.cache"), b"a newer and longer cache").unwrap();
        let rebuilt = base_from(&data, &host).unwrap();
        assert_ne!(first.layers, rebuilt.layers);
        assert_eq!(
            fs::read(rebuilt.layers[0].join("etc/ld.so.cache")).unwrap(),
            b"a newer and longer cache"
        );
        let leftovers: Vec<_> = fs::read_dir(data.join("templates/base"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".build"))
            .collect();
        assert!(leftovers.is_empty(), "temporary build dirs left behind");
        let _ = fs::remove_dir_all(&dir);
    }
}
