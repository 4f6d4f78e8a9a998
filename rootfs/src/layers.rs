//! The content-addressed layer cache under `<data_dir>/layers`:
//!
//! ```text
//! layers/sha256/<hex>/root        the unpacked layer: an overlay lower dir
//! layers/sha256/<hex>/layer.json  what it was unpacked from, and its size
//! layers/tmp/<pid>-<n>/           unpacks in progress
//! ```
//!
//! `<hex>` is the digest of the layer blob as the manifest names it. A
//! layer is unpacked into a temporary directory and renamed into place only
//! once complete and verified, with RENAME_NOREPLACE: whoever renames first
//! wins, and a process that loses the race (another import of the same
//! layer) discards its own copy and uses the winner's. So a layer dir that
//! exists is always whole, and is never written again.

use std::fs;
use std::io::{self, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::extract::{self, ExtractError, Policy};
use crate::oci::{self, Compression, Hashing, Source};
use crate::{sys, Error};

const LAYER_META: &str = "layer.json";
const LAYER_ROOT: &str = "root";

/// What the cache knows about a layer (its `layer.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerMeta {
    pub digest: String,
    pub media_type: String,
    /// Size of the blob.
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    pub entries: u64,
    /// Bytes of regular-file content.
    pub unpacked_size: u64,
}

pub(crate) struct Layers {
    dir: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Layers {
    /// Opens (creating) `<data_dir>/layers` and removes unpacks left behind
    /// by processes that no longer exist.
    pub fn open(data_dir: &Path) -> Result<Layers, Error> {
        let layers = Layers {
            dir: data_dir.join("layers"),
        };
        for dir in [layers.dir.join("sha256"), layers.tmp_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(Error::io("create", &dir))?;
        }
        layers.remove_stale_tmp();
        Ok(layers)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn layer_dir(&self, hex: &str) -> PathBuf {
        self.dir.join("sha256").join(hex)
    }

    /// The overlay lower dir of a layer, by its blob digest's hex.
    pub fn root(&self, hex: &str) -> PathBuf {
        self.layer_dir(hex).join(LAYER_ROOT)
    }

    /// The metadata of a cached layer, `None` if it is not in the cache.
    pub fn meta(&self, hex: &str) -> Result<Option<LayerMeta>, Error> {
        let path = self.layer_dir(hex).join(LAYER_META);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Json {
                    what: "layer metadata".into(),
                    path,
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path)(e)),
        }
    }

    /// Makes sure a layer of `source` is in the cache, unpacking it unless
    /// it already is. The flag says whether this call put it there.
    ///
    /// A cached layer is reused only after the image's own blob was read
    /// and checked too: the digest names content we already hold, but an
    /// image whose blob file does not match its manifest (bytes appended,
    /// a size that lies) is broken whatever the cache holds, and importing
    /// it must fail the same way on a fresh store and on a warm one.
    pub fn ensure(&self, source: &Source, layer: &oci::Layer) -> Result<(LayerMeta, bool), Error> {
        if let Some(meta) = self.meta(layer.blob.hex())? {
            source.verify_blob(&layer.blob)?;
            return Ok((meta, false));
        }
        let tmp = self.tmp_dir().join(format!(
            "{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.unpack_into(&tmp, source, layer);
        let result = result.and_then(|meta| {
            let dir = self.layer_dir(layer.blob.hex());
            match sys::rename_noreplace(&tmp, &dir) {
                Ok(()) => Ok((meta, true)),
                // Another import of the same layer finished first.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => self
                    .meta(layer.blob.hex())?
                    .map(|meta| (meta, false))
                    .ok_or_else(|| Error::io("rename into", &dir)(e)),
                Err(e) => Err(Error::io("rename into", dir)(e)),
            }
        });
        if tmp.exists() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn unpack_into(
        &self,
        tmp: &Path,
        source: &Source,
        layer: &oci::Layer,
    ) -> Result<LayerMeta, Error> {
        let root = tmp.join(LAYER_ROOT);
        for dir in [tmp, &root] {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .map_err(Error::io("create", dir))?;
            // Not whatever the umask made of it (a `./` entry may still
            // set the root's own mode).
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(Error::io("chmod", dir))?;
        }
        let digest = &layer.blob.digest;
        let mut blob = source.open_blob(&layer.blob)?;
        let unpacked = (|| {
            let decoded: Box<dyn Read + '_> = match layer.compression {
                Compression::None => Box::new(&mut blob),
                Compression::Gzip => {
                    Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(&mut blob)))
                }
                Compression::Zstd => {
                    Box::new(zstd::stream::read::Decoder::new(&mut blob).map_err(|e| {
                        Error::Layer {
                            layer: digest.clone(),
                            problem: format!("zstd: {e}"),
                        }
                    })?)
                }
            };
            let mut stream = Hashing::new(decoded);
            let stats = unpack(digest, &mut stream, &root)?;
            // The tar ends before the stream does (padding): the diff_id
            // covers all of it.
            io::copy(&mut stream, &mut io::sink()).map_err(|e| Error::Layer {
                layer: digest.clone(),
                problem: format!("decompress: {e}"),
            })?;
            Ok::<_, Error>((stats, stream.digest()))
        })();
        // A blob that is not what the manifest says explains any failure
        // above better than the failure itself, so it is checked first.
        blob.finish()?;
        let (stats, diff_id) = unpacked?;
        if let Some(expected) = &layer.diff_id {
            if *expected != diff_id {
                return Err(Error::Layer {
                    layer: digest.clone(),
                    problem: format!(
                        "uncompressed content is {diff_id}, the image config says {expected}"
                    ),
                });
            }
        }
        let meta = LayerMeta {
            digest: digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.blob.size,
            diff_id,
            entries: stats.entries,
            unpacked_size: stats.bytes,
        };
        let path = tmp.join(LAYER_META);
        let json = serde_json::to_vec_pretty(&meta).expect("layer metadata serializes");
        fs::write(&path, json).map_err(Error::io("write", &path))?;
        Ok(meta)
    }

    /// Deletes a layer from the cache. It disappears at once (a rename into
    /// tmp/), then its files are removed.
    pub fn remove(&self, hex: &str) -> Result<(), Error> {
        let dir = self.layer_dir(hex);
        let doomed = self.tmp_dir().join(format!(
            "{}-{}-rm",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("remove", dir)(e)),
        }
        fs::remove_dir_all(&doomed).map_err(Error::io("remove", doomed))
    }

    /// Hex digests of every cached layer.
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let dir = self.dir.join("sha256");
        let mut hexes = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let entry = entry.map_err(Error::io("list", &dir))?;
            hexes.push(entry.file_name().to_string_lossy().into_owned());
        }
        hexes.sort();
        Ok(hexes)
    }

    /// Temporary dirs are named `<pid>-…`; those of dead processes are
    /// leftovers of a crash. (A live pid's dirs are left alone even if the
    /// pid was reused: they will go on a later open.)
    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|pid| pid > 0 && !sys::process_exists(pid)) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Unpacks the tar stream of layer `layer` (its digest, for errors) into
/// the existing empty directory `root`, as the extractor's image-layer
/// policy says.
fn unpack(layer: &str, stream: impl Read, root: &Path) -> Result<extract::Stats, Error> {
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)
        .map_err(Error::io("open", root))?;
    extract::extract(dir.as_fd(), stream, &Policy::image_layer()).map_err(|e| match e {
        ExtractError::Refused { entry, problem } => Error::Entry {
            layer: layer.to_string(),
            entry,
            problem,
        },
        ExtractError::Io {
            entry,
            action,
            source,
        } => Error::EntryIo {
            layer: layer.to_string(),
            entry,
            action,
            source,
        },
        ExtractError::Archive { source, .. } => Error::Layer {
            layer: layer.to_string(),
            problem: format!("read tar: {source}"),
        },
    })
}
