//! Reading an OCI image: index → (nested index →) manifest → config and
//! layers, every blob verified against its descriptor.

mod blob;
mod layout;

#[cfg(test)]
pub(crate) use blob::sha256;
pub(crate) use blob::{BlobRef, Hashing};
pub(crate) use layout::Source;

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, OciLayout,
};

use crate::error::BlobProblem;
use crate::Error;

/// Indexes may nest (a multi-platform index inside a layout's index.json);
/// deeper than this is a loop or an attack.
const MAX_INDEX_DEPTH: usize = 4;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub blob: BlobRef,
    pub media_type: String,
    pub compression: Compression,
    /// The config's `diff_id` for this layer (sha256 of the uncompressed
    /// tar), checked while unpacking.
    pub diff_id: Option<String>,
}

pub(crate) struct Image {
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    /// Bottom layer first, as in the manifest.
    pub layers: Vec<Layer>,
}

/// The GOARCH name of the machine we run on: the platform we import.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub(crate) fn read_image(source: &Source) -> Result<Image, Error> {
    if let Some(layout) = source.read_json::<OciLayout>("oci-layout")? {
        let version = layout.image_layout_version();
        if !version.starts_with("1.") {
            return Err(source.not_a_layout(format!("unsupported imageLayoutVersion {version}")));
        }
    }
    let index: ImageIndex = source
        .read_json("index.json")?
        .ok_or_else(|| source.not_a_layout("no index.json"))?;
    let manifest_desc = select(source, index.manifests(), 0)?;
    let manifest_ref = BlobRef::from_descriptor(&manifest_desc)?;
    let manifest: ImageManifest = source.read_json_blob(&manifest_ref, "manifest")?;

    let config_ref = BlobRef::from_descriptor(manifest.config())?;
    let config: ImageConfiguration = source.read_json_blob(&config_ref, "image config")?;
    let (os, arch) = (config.os().to_string(), config.architecture().to_string());
    if os != "linux" || arch != host_arch() {
        return Err(Error::NoMatchingPlatform {
            path: source.path().to_path_buf(),
            wanted: host_arch(),
            available: format!("{os}/{arch}"),
        });
    }

    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(source.not_a_layout(format!(
            "the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            manifest.layers().len()
        )));
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(desc, diff_id)| {
            let blob = BlobRef::from_descriptor(desc)?;
            let media_type = desc.media_type().to_string();
            let compression = compression(desc.media_type()).ok_or_else(|| {
                Error::blob(
                    &blob.digest,
                    BlobProblem::UnsupportedMediaType(media_type.clone()),
                )
            })?;
            Ok(Layer {
                blob,
                media_type,
                compression,
                diff_id: Some(diff_id.clone()),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Image {
        manifest_digest: manifest_ref.digest,
        config,
        layers,
    })
}

fn is_index(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex)
        || media_type.as_ref() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn is_manifest(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageManifest)
        || media_type.as_ref() == "application/vnd.docker.distribution.manifest.v2+json"
}

/// The image manifest for this machine among an index's entries: the
/// first whose platform is linux/<host arch>, or the only one that names no
/// platform. Several platform-less images (a layout holding several tags)
/// are ambiguous and refused rather than guessed.
fn select(source: &Source, entries: &[Descriptor], depth: usize) -> Result<Descriptor, Error> {
    if depth > MAX_INDEX_DEPTH {
        return Err(source.not_a_layout("image indexes nested too deeply"));
    }
    let candidates: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| is_index(d.media_type()) || is_manifest(d.media_type()))
        .collect();
    let matching = candidates.iter().find(|d| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
        })
    });
    let unplatformed: Vec<&&Descriptor> = candidates
        .iter()
        .filter(|d| d.platform().is_none())
        .collect();
    let chosen = match (matching, unplatformed.as_slice()) {
        (Some(d), _) => *d,
        (None, [only]) => **only,
        (None, []) => {
            let available: Vec<String> = candidates
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect();
            return Err(Error::NoMatchingPlatform {
                path: source.path().to_path_buf(),
                wanted: host_arch(),
                available: if available.is_empty() {
                    "no image manifests".into()
                } else {
                    available.join(", ")
                },
            });
        }
        (None, several) => {
            let names: Vec<String> = several
                .iter()
                .map(|d| {
                    d.annotations()
                        .as_ref()
                        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                        .cloned()
                        .unwrap_or_else(|| d.digest().to_string())
                })
                .collect();
            return Err(source.not_a_layout(format!(
                "it holds {} images ({}); import a layout with one image",
                several.len(),
                names.join(", ")
            )));
        }
    };
    if is_index(chosen.media_type()) {
        let blob = BlobRef::from_descriptor(chosen)?;
        let nested: ImageIndex = source.read_json_blob(&blob, "image index")?;
        return select(source, nested.manifests(), depth + 1);
    }
    Ok(chosen.clone())
}

fn compression(media_type: &MediaType) -> Option<Compression> {
    Some(match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Compression::None,
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Compression::Gzip,
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Compression::Zstd,
        MediaType::Other(other) => match other.as_str() {
            "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            _ => return None,
        },
        _ => return None,
    })
}
