//! Where an image's files come from: an OCI image layout directory, or a
//! tar archive of one (`skopeo copy … oci-archive:`, `podman save --format
//! oci-archive`, `docker save` since Docker 25). An archive is indexed once
//! (one pass over its headers, skipping the data) and its blobs are then
//! read in place with a seek, so nothing is extracted to disk twice.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::blob::{BlobRef, Verified, MAX_JSON_BLOB};
use crate::error::BlobProblem;
use crate::Error;

pub(crate) enum Source {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        /// Normalised member path → (offset of the data, size).
        members: HashMap<String, (u64, u64)>,
    },
}

/// A blob being read and checked.
pub(crate) type BlobReader = Verified<Box<dyn Read + Send>>;

/// A file of the layout, open, and its size.
type OpenFile = (Box<dyn Read + Send>, u64);

impl Source {
    pub fn open(path: &Path) -> Result<Source, Error> {
        let meta = std::fs::metadata(path).map_err(Error::io("open image", path))?;
        let source = if meta.is_dir() {
            Source::Dir(path.to_path_buf())
        } else {
            Source::Archive {
                path: path.to_path_buf(),
                members: index_archive(path)?,
            }
        };
        if !source.exists("index.json") {
            let reason = if source.exists("manifest.json") {
                "no index.json (only a legacy docker save manifest.json; use Docker 25 or newer, or skopeo)"
            } else {
                "no index.json"
            };
            return Err(source.not_a_layout(reason));
        }
        Ok(source)
    }

    pub fn path(&self) -> &Path {
        match self {
            Source::Dir(path) | Source::Archive { path, .. } => path,
        }
    }

    pub fn not_a_layout(&self, reason: impl Into<String>) -> Error {
        Error::NotALayout {
            path: self.path().to_path_buf(),
            reason: reason.into(),
        }
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(dir) => dir.join(name).is_file(),
            Source::Archive { members, .. } => members.contains_key(name),
        }
    }

    /// A file of the layout by its path inside it, with its size.
    fn open_file(&self, name: &str) -> Result<Option<OpenFile>, Error> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(name);
                match File::open(&path) {
                    Ok(file) => {
                        let meta = file.metadata().map_err(Error::io("stat", &path))?;
                        if !meta.is_file() {
                            return Ok(None);
                        }
                        Ok(Some((Box::new(BufReader::new(file)), meta.len())))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("open", path)(e)),
                }
            }
            Source::Archive { path, members } => {
                let Some(&(offset, size)) = members.get(name) else {
                    return Ok(None);
                };
                let mut file = File::open(path).map_err(Error::io("open", path))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(Error::io("seek in", path))?;
                Ok(Some((Box::new(BufReader::new(file).take(size)), size)))
            }
        }
    }

    /// A small JSON file of the layout itself (`index.json`, `oci-layout`),
    /// which no digest covers.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let Some((reader, size)) = self.open_file(name)? else {
            return Ok(None);
        };
        if size > MAX_JSON_BLOB {
            return Err(self.not_a_layout(format!("{name} is {size} bytes, too large")));
        }
        let mut bytes = Vec::new();
        reader
            .take(MAX_JSON_BLOB)
            .read_to_end(&mut bytes)
            .map_err(Error::io("read", self.path().join(name)))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                what: name.to_string(),
                path: self.path().to_path_buf(),
                source,
            })
    }

    /// A blob, read through a checking reader.
    pub fn open_blob(&self, blob: &BlobRef) -> Result<BlobReader, Error> {
        let name = format!("blobs/sha256/{}", blob.hex());
        match self.open_file(&name)? {
            Some((reader, _)) => Ok(Verified::new(reader, blob.clone())),
            None => Err(Error::blob(&blob.digest, BlobProblem::Missing)),
        }
    }

    /// Reads a whole blob and checks its size and digest, keeping nothing.
    pub fn verify_blob(&self, blob: &BlobRef) -> Result<(), Error> {
        // finish() reads what is left (here: everything) before it checks.
        self.open_blob(blob)?.finish()
    }

    /// A JSON blob (manifest, index, config), verified before it is parsed.
    pub fn read_json_blob<T: DeserializeOwned>(
        &self,
        blob: &BlobRef,
        what: &str,
    ) -> Result<T, Error> {
        if blob.size > MAX_JSON_BLOB {
            return Err(self.not_a_layout(format!(
                "{what} {} is {} bytes, too large",
                blob.digest, blob.size
            )));
        }
        let mut reader = self.open_blob(blob)?;
        let mut bytes = Vec::with_capacity(blob.size as usize);
        let read = reader.read_to_end(&mut bytes);
        reader.finish()?;
        read.map_err(Error::io("read blob", &blob.digest))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: format!("{what} {}", blob.digest),
            path: self.path().to_path_buf(),
            source,
        })
    }
}

/// Member path → (data offset, size) of every regular file in the archive.
fn index_archive(path: &Path) -> Result<HashMap<String, (u64, u64)>, Error> {
    let mut file = File::open(path).map_err(Error::io("open", path))?;
    let mut magic = [0u8; 2];
    if file.read(&mut magic).ok() == Some(2) && magic == [0x1f, 0x8b] {
        return Err(Error::NotALayout {
            path: path.to_path_buf(),
            reason: "a compressed archive; decompress it first (an OCI archive is a plain tar)"
                .into(),
        });
    }
    file.rewind().map_err(Error::io("read", path))?;
    let bad = |e: io::Error| Error::NotALayout {
        path: path.to_path_buf(),
        reason: format!("not a readable tar archive: {e}"),
    };
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    for entry in archive.entries_with_seek().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./").trim_start_matches('/');
        members.insert(name.to_string(), (entry.raw_file_position(), entry.size()));
    }
    Ok(members)
}
