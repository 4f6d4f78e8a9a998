//! Importing well-formed images: what lands in each layer dir, and what
//! overlayfs makes of the stack.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use serde_json::json;
use tar::EntryType;

use super::fixture::*;
use crate::extract::whiteout::OPAQUE_XATTR;
use crate::oci::host_arch;
use crate::{sys, Store, TemplateKind};

/// Layer 1 (gzip): a small tree with every kind of entry we keep.
fn layer_one() -> Layer {
    let tar = Tar::default()
        .dir("etc")
        .pax(&[
            ("SCHILY.xattr.user.comment", b"from layer 1"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
        ])
        .file("etc/hostname", "one")
        .file("etc/motd", "to be whited out")
        .dir("etc/alternatives")
        .symlink("etc/alternatives/tool", "/usr/bin/tool")
        .dir("opt")
        .dir("opt/app")
        .file("opt/app/old.txt", "old")
        .dir("usr")
        .dir("usr/bin")
        .owned("usr/bin/tool", "#!/bin/sh\n", 0o755, 0, 0)
        .owned("usr/bin/su", "su", 0o4755, 0, 0)
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .symlink("bin", "usr/bin")
        .dir("home")
        .raw(
            EntryType::Directory,
            "home/user",
            "",
            b"",
            0o750,
            1000,
            1000,
        )
        .owned("home/user/notes", "mine", 0o640, 1000, 1000)
        .bytes();
    Layer::new(tar, Comp::Gzip)
}

/// Layer 2 (plain tar): deletes etc/motd, makes opt/app opaque.
fn layer_two() -> Layer {
    let tar = Tar::default()
        .dir("etc")
        .file("etc/.wh.motd", "")
        .file("etc/hostname", "two")
        .dir("opt/app")
        .file("opt/app/.wh..wh..opq", "")
        .file("opt/app/new.txt", "new")
        .bytes();
    Layer::new(tar, Comp::None)
}

pub fn two_layer_image(dir: &Path) -> (std::path::PathBuf, Layer, Layer) {
    let (one, two) = (layer_one(), layer_two());
    let layout = layout(
        dir,
        &[one.clone(), two.clone()],
        json!({"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["sh"],
               "WorkingDir": "/home/user", "User": "1000"}),
    );
    (layout, one, two)
}

fn xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    sys::lgetxattr(path, name).unwrap()
}

#[test]
fn layers_are_unpacked_in_overlay_format() {
    require_root();
    let tmp = TempDir::new("two-layers");
    let (layout, one, two) = two_layer_image(&tmp.join("layout"));
    let store = Store::open(tmp.join("data")).unwrap();
    let template = store.import_oci("two", &layout).unwrap();

    let layer_root = |l: &Layer| tmp.join(&format!("data/layers/sha256/{}/root", l.hex()));
    assert_eq!(template.layers, [layer_root(&two), layer_root(&one)]);
    assert!(matches!(template.kind, TemplateKind::Oci { .. }));
    assert_eq!(template.config.user, "1000");
    assert_eq!(template.config.cmd, ["sh"]);
    assert_eq!(template.config.working_dir.as_deref(), Some("/home/user"));
    assert_eq!(
        template.config.env[0],
        ("PATH".into(), "/usr/bin:/bin".into())
    );

    // Layer 1: links, modes, owners, times, xattrs.
    let l1 = &template.layers[1];
    assert_eq!(fs::read_link(l1.join("bin")).unwrap(), Path::new("usr/bin"));
    assert_eq!(
        fs::read_link(l1.join("etc/alternatives/tool")).unwrap(),
        Path::new("/usr/bin/tool")
    );
    let su = fs::metadata(l1.join("usr/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!((su.uid(), su.gid()), (0, 0));
    let notes = fs::metadata(l1.join("home/user/notes")).unwrap();
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o7777),
        (1000, 1000, 0o640)
    );
    let home = fs::metadata(l1.join("home/user")).unwrap();
    assert_eq!((home.uid(), home.mode() & 0o7777), (1000, 0o750));
    let tool = fs::metadata(l1.join("usr/bin/tool")).unwrap();
    let tool2 = fs::metadata(l1.join("usr/bin/tool2")).unwrap();
    assert_eq!(tool.ino(), tool2.ino(), "hard link shares the inode");
    assert_eq!(tool.nlink(), 2);
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!(tool.mtime(), MTIME as i64);
    assert_eq!(
        fs::metadata(l1.join("usr/bin")).unwrap().mtime(),
        MTIME as i64,
        "directory mtimes survive their children"
    );
    assert_eq!(
        fs::symlink_metadata(l1.join("bin")).unwrap().mtime(),
        MTIME as i64
    );
    assert_eq!(
        xattr(&l1.join("etc/hostname"), c"user.comment").as_deref(),
        Some(&b"from layer 1"[..])
    );
    assert_eq!(
        xattr(&l1.join("etc/hostname"), OPAQUE_XATTR),
        None,
        "an image may not set trusted.* xattrs"
    );
    assert_eq!(
        xattr(&l1.join("etc/hostname"), c"security.capability"),
        None
    );

    // Layer 2: the whiteout is a 0:0 character device, the opaque marker
    // an xattr, and neither `.wh.` name is left.
    let l2 = &template.layers[0];
    let motd = fs::symlink_metadata(l2.join("etc/motd")).unwrap();
    assert!(motd.file_type().is_char_device());
    assert_eq!((motd.rdev(), motd.uid(), motd.gid()), (0, 0, 0));
    assert_eq!(
        xattr(&l2.join("opt/app"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&l2.join("etc"), OPAQUE_XATTR), None);
    assert_eq!(names(&l2.join("etc")), ["hostname", "motd"]);
    assert_eq!(names(&l2.join("opt/app")), ["new.txt"]);

    // What a sandbox will see: mount the stack for real, in a private
    // mount namespace that dies with the shell.
    let merged = tmp.join("merged");
    fs::create_dir(&merged).unwrap();
    let lowerdir = format!("lowerdir={}:{}", l2.display(), l1.display());
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(
            r#"mount -t overlay overlay -o "$1" "$2"
               cat "$2/etc/hostname"; echo
               ls -A "$2/opt/app"
               if [ -e "$2/etc/motd" ]; then echo motd-visible; else echo motd-gone; fi
               ls -A "$2/etc" | tr '\n' ' '; echo
               cat "$2/usr/bin/tool2""#,
        )
        .arg("sh")
        .arg(&lowerdir)
        .arg(&merged)
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "overlay mount failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "two\nnew.txt\nmotd-gone\nalternatives hostname \n#!/bin/sh\n"
    );
    assert!(
        names(&merged).is_empty(),
        "the mount stayed in its namespace"
    );
}

#[test]
fn importing_again_reuses_the_layer_dirs() {
    require_root();
    let tmp = TempDir::new("reuse");
    let (layout, one, _) = two_layer_image(&tmp.join("layout"));
    let store = Store::open(tmp.join("data")).unwrap();
    let first = store.import_oci("first", &layout).unwrap();
    let dir = tmp.join(&format!("data/layers/sha256/{}", one.hex()));
    let before = fs::metadata(&dir).unwrap();
    let file_before = fs::metadata(dir.join("root/etc/hostname")).unwrap();

    let again = store.import_oci("first", &layout).unwrap();
    let other = store.import_oci("second", &layout).unwrap();
    assert_eq!(first.layers, again.layers);
    assert_eq!(first.layers, other.layers);
    let after = fs::metadata(&dir).unwrap();
    let file_after = fs::metadata(dir.join("root/etc/hostname")).unwrap();
    assert_eq!(before.ino(), after.ino(), "layer dir replaced");
    assert_eq!(file_before.ino(), file_after.ino(), "layer unpacked again");
    assert_eq!(names(&tmp.join("data/layers/sha256")).len(), 2);
    assert!(names(&tmp.join("data/layers/tmp")).is_empty());
}

#[test]
fn an_oci_archive_imports_like_its_directory() {
    require_root();
    let tmp = TempDir::new("archive");
    let (layout, _, _) = two_layer_image(&tmp.join("layout"));
    let tarball = archive(&layout, &tmp.join("image.tar"));
    let store = Store::open(tmp.join("data")).unwrap();
    let from_archive = store.import_oci("archived", &tarball).unwrap();
    assert_eq!(
        fs::read_to_string(from_archive.layers[0].join("etc/hostname")).unwrap(),
        "two"
    );
    let from_dir = store.import_oci("plain", &layout).unwrap();
    assert_eq!(from_archive.layers, from_dir.layers);
    assert_eq!(from_archive.config, from_dir.config);
}

#[test]
fn zstd_docker_media_types_and_long_names_work() {
    require_root();
    let tmp = TempDir::new("media");
    let long = format!("deep/{}/file.txt", "d".repeat(150));
    let mut long_tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o600);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_cksum();
    long_tar
        .append_data(&mut header, &long, &b"long"[..])
        .unwrap();
    let zstd = Layer::new(Tar::default().file("z.txt", "zstd").bytes(), Comp::Zstd);
    let docker = Layer::new(long_tar.into_inner().unwrap(), Comp::Gzip)
        .media_type("application/vnd.docker.image.rootfs.diff.tar.gzip");
    let layout = layout(&tmp.join("layout"), &[zstd, docker], json!({}));
    let store = Store::open(tmp.join("data")).unwrap();
    let template = store.import_oci("mixed", &layout).unwrap();
    assert_eq!(
        fs::read_to_string(template.layers[1].join("z.txt")).unwrap(),
        "zstd"
    );
    let file = template.layers[0].join(&long);
    assert_eq!(fs::read_to_string(&file).unwrap(), "long");
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o600);
    // No PATH in the image: the default one.
    assert!(template.config.env.iter().any(|(k, _)| k == "PATH"));
}

#[test]
fn the_host_platform_is_picked_from_a_nested_index() {
    require_root();
    let tmp = TempDir::new("multiarch");
    let layout = tmp.join("layout");
    let ours = Layer::new(Tar::default().file("arch", host_arch()).bytes(), Comp::Gzip);
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let theirs = Layer::new(Tar::default().file("arch", other_arch).bytes(), Comp::Gzip);
    let mut mine = put_image(&layout, host_arch(), &[ours], json!({}));
    mine["platform"] = json!({"architecture": host_arch(), "os": "linux"});
    let mut other = put_image(&layout, other_arch, &[theirs], json!({}));
    other["platform"] = json!({"architecture": other_arch, "os": "linux"});
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [other, mine],
    }))
    .unwrap();
    let index = put_blob(&layout, "application/vnd.oci.image.index.v1+json", &nested);
    put_index(&layout, vec![index]);

    let store = Store::open(tmp.join("data")).unwrap();
    let template = store.import_oci("multi", &layout).unwrap();
    assert_eq!(
        fs::read_to_string(template.layers[0].join("arch")).unwrap(),
        host_arch()
    );

    // Only the other platform on offer: refused, naming what there is.
    let foreign = tmp.join("foreign");
    let theirs = Layer::new(Tar::default().file("arch", other_arch).bytes(), Comp::Gzip);
    let mut desc = put_image(&foreign, other_arch, &[theirs], json!({}));
    desc["platform"] = json!({"architecture": other_arch, "os": "linux"});
    put_index(&foreign, vec![desc]);
    let err = store.import_oci("foreign", &foreign).unwrap_err();
    assert!(
        matches!(err, crate::Error::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(other_arch), "{err}");
}
