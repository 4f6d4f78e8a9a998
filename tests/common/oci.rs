//! OCI image layouts built in the tests with the tar crate, and templates
//! imported from them that go away when the test ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::EntryType;

use sandlot::Runtime;

/// The mtime of every entry the fixtures write.
pub const MTIME: u64 = 1_600_000_000;

/// A layer tar, entry by entry (names go into the raw header, so any name
/// the tests need can be written).
#[derive(Default)]
pub struct Layer(Vec<(EntryType, String, String, Vec<u8>, u32, u64)>);

impl Layer {
    pub fn entry(
        mut self,
        kind: EntryType,
        path: &str,
        link: &str,
        data: &[u8],
        mode: u32,
        owner: u64,
    ) -> Self {
        self.0
            .push((kind, path.into(), link.into(), data.to_vec(), mode, owner));
        self
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(EntryType::Directory, path, "", b"", 0o755, 0)
    }

    pub fn file(self, path: &str, content: &str) -> Self {
        self.entry(EntryType::Regular, path, "", content.as_bytes(), 0o644, 0)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(EntryType::Symlink, path, target, b"", 0o777, 0)
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(EntryType::Link, path, target, b"", 0o644, 0)
    }

    /// The host's static busybox as /bin/busybox, every applet a symlink
    /// to it: a shell and tools without a C library.
    pub fn busybox(mut self) -> Self {
        let binary = fs::read("/bin/busybox").expect(
            "the template tests need a static busybox at /bin/busybox (Debian: busybox-static)",
        );
        self = self
            .dir("bin")
            .entry(EntryType::Regular, "bin/busybox", "", &binary, 0o755, 0);
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" && !applet.is_empty() {
                self = self.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        self
    }

    pub fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (kind, path, link, data, mode, owner) in &self.0 {
            let mut header = tar::Header::new_ustar();
            {
                let old = header.as_old_mut();
                old.name[..path.len()].copy_from_slice(path.as_bytes());
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            header.set_uid(*owner);
            header.set_gid(*owner);
            header.set_mtime(MTIME);
            header.set_cksum();
            builder.append(&header, &data[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let digest = sha256(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(&digest["sha256:".len()..]), bytes).unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sandlot-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a one-image OCI layout of `layers` (lowest first, uncompressed)
/// with image config `config` into `dir`.
pub fn layout(dir: &Path, layers: &[Layer], config: Value) -> PathBuf {
    let tars: Vec<Vec<u8>> = layers.iter().map(Layer::tar).collect();
    let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
    let config = put_blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&json!({
            "architecture": arch(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap(),
    );
    let layer_descs: Vec<Value> = tars
        .iter()
        .map(|t| put_blob(dir, "application/vnd.oci.image.layer.v1.tar", t))
        .collect();
    let manifest = put_blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layer_descs,
        }))
        .unwrap(),
    );
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [manifest]})).unwrap(),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir.to_path_buf()
}

/// A template imported for one test: on drop, the runtime's sandboxes are
/// destroyed first (their overlays read the layers), then the template.
pub struct TemplateGuard {
    pub runtime: Runtime,
    pub name: String,
}

impl Drop for TemplateGuard {
    fn drop(&mut self) {
        self.runtime.shutdown();
        let _ = self.runtime.templates().remove(&self.name);
    }
}
