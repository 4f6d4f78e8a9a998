//! Test fixtures: temporary dirs that clean up after themselves, layer
//! tars written entry by entry (hostile ones included: the tar crate's
//! friendly API refuses `..` and absolute paths, so names go into the raw
//! header), and OCI layouts around them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use tar::EntryType;

use crate::oci::{host_arch, sha256};

/// The mtime every fixture entry carries.
pub const MTIME: u64 = 1_600_000_000;

/// A directory removed when the test ends, passed or failed.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sandlot-rootfs-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// These tests create device nodes, chown and set trusted xattrs.
pub fn require_root() {
    let uid = fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    assert_eq!(
        uid.ok(),
        Some(0),
        "sandlot-rootfs tests need root (mknod, chown, trusted.* xattrs): run them as root"
    );
}

/// A layer tar, entry by entry.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Default for Tar {
    fn default() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }
}

impl Tar {
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        mut self,
        kind: EntryType,
        path: &str,
        link: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        let mut header = tar::Header::new_ustar();
        {
            let old = header.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(MTIME);
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    pub fn dir(self, path: &str) -> Self {
        self.raw(EntryType::Directory, path, "", b"", 0o755, 0, 0)
    }

    pub fn file(self, path: &str, content: &str) -> Self {
        self.raw(
            EntryType::Regular,
            path,
            "",
            content.as_bytes(),
            0o644,
            0,
            0,
        )
    }

    pub fn owned(self, path: &str, content: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self.raw(
            EntryType::Regular,
            path,
            "",
            content.as_bytes(),
            mode,
            uid,
            gid,
        )
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.raw(EntryType::Symlink, path, target, b"", 0o777, 0, 0)
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.raw(EntryType::Link, path, target, b"", 0o644, 0, 0)
    }

    /// pax records for the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.0
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// A layer blob and how the manifest describes it.
#[derive(Clone)]
pub struct Layer {
    pub media_type: String,
    pub blob: Vec<u8>,
    pub diff_id: String,
    /// What the manifest claims; the real size unless a test lies.
    pub size: u64,
}

impl Layer {
    pub fn new(tar: Vec<u8>, comp: Comp) -> Layer {
        let diff_id = sha256(&tar);
        let (blob, media_type) = match comp {
            Comp::None => (tar, "application/vnd.oci.image.layer.v1.tar"),
            Comp::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).unwrap();
                (
                    gz.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Comp::Zstd => (
                zstd::stream::encode_all(&tar[..], 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        Layer {
            media_type: media_type.into(),
            size: blob.len() as u64,
            blob,
            diff_id,
        }
    }

    pub fn media_type(mut self, media_type: &str) -> Layer {
        self.media_type = media_type.into();
        self
    }

    pub fn digest(&self) -> String {
        sha256(&self.blob)
    }

    pub fn hex(&self) -> String {
        self.digest()["sha256:".len()..].to_string()
    }
}

/// Writes a blob into `layout/blobs/sha256/` and returns its descriptor.
pub fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let digest = sha256(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(&digest["sha256:".len()..]), bytes).unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

/// The image config JSON for `layers` with `config` as its "config".
pub fn config_json(arch: &str, layers: &[Layer], config: Value) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Writes the blobs, config and manifest of one image into `layout` and
/// returns the manifest's descriptor.
pub fn put_image(layout: &Path, arch: &str, layers: &[Layer], config: Value) -> Value {
    let config = put_blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        &config_json(arch, layers, config),
    );
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let mut desc = put_blob(layout, &l.media_type, &l.blob);
            desc["size"] = json!(l.size);
            desc
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layer_descs,
    }))
    .unwrap();
    put_blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
}

pub fn put_index(layout: &Path, manifests: Vec<Value>) {
    fs::create_dir_all(layout).unwrap();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// A one-image layout for this machine; returns the layout dir.
pub fn layout(dir: &Path, layers: &[Layer], config: Value) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let manifest = put_image(dir, host_arch(), layers, config);
    put_index(dir, vec![manifest]);
    dir.to_path_buf()
}

/// A tar of a layout directory, as `skopeo copy … oci-archive:` writes it.
pub fn archive(layout: &Path, out: &Path) -> PathBuf {
    let mut builder = tar::Builder::new(fs::File::create(out).unwrap());
    builder.append_dir_all(".", layout).unwrap();
    builder.finish().unwrap();
    out.to_path_buf()
}

/// Names under `dir` (empty when it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
