//! Blobs are trusted only after their bytes were counted and hashed: a
//! reader that checks size and sha256 as the content streams through it,
//! so a layer is never held in memory and a wrong byte is always caught.

use std::io::{self, Read};

use oci_spec::image::{Descriptor, DigestAlgorithm};
use sha2::{Digest as _, Sha256};

use crate::error::BlobProblem;
use crate::Error;

/// JSON blobs (manifests, configs, indexes) larger than this are refused
/// before reading: real ones are a few KiB, and they are parsed in memory.
pub(crate) const MAX_JSON_BLOB: u64 = 4 << 20;

/// A blob as a descriptor names it: `sha256:<hex>` and a size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRef {
    /// `sha256:<64 lowercase hex>`.
    pub digest: String,
    pub size: u64,
}

impl BlobRef {
    pub fn from_descriptor(desc: &Descriptor) -> Result<BlobRef, Error> {
        let digest = desc.digest();
        // oci-spec has already checked that a sha256 digest is 64 lowercase
        // hex digits, so it is safe to use as a file name.
        if *digest.algorithm() != DigestAlgorithm::Sha256 {
            return Err(Error::blob(digest, BlobProblem::UnsupportedDigest));
        }
        Ok(BlobRef {
            digest: digest.to_string(),
            size: desc.size(),
        })
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.digest["sha256:".len()..]
    }
}

/// Reads a blob while hashing and counting it. Reading more than the
/// expected size fails at once; [`Verified::finish`] drains what is left
/// and compares size and digest.
pub(crate) struct Verified<R> {
    inner: R,
    blob: BlobRef,
    hasher: Sha256,
    read: u64,
    overrun: bool,
}

impl<R: Read> Verified<R> {
    pub fn new(inner: R, blob: BlobRef) -> Self {
        Verified {
            inner,
            blob,
            hasher: Sha256::new(),
            read: 0,
            overrun: false,
        }
    }

    /// Reads the rest of the blob and checks it. Call this even when the
    /// consumer failed: a corrupt blob is the better explanation of a
    /// broken gzip stream than the gzip error.
    pub fn finish(mut self) -> Result<(), Error> {
        if !self.overrun {
            if let Err(e) = io::copy(&mut self, &mut io::sink()) {
                if !self.overrun {
                    return Err(Error::Io {
                        action: "read blob",
                        path: self.blob.digest.clone().into(),
                        source: e,
                    });
                }
            }
        }
        let blob = &self.blob;
        if self.overrun {
            return Err(Error::blob(
                &blob.digest,
                BlobProblem::TooLarge {
                    expected: blob.size,
                },
            ));
        }
        if self.read != blob.size {
            return Err(Error::blob(
                &blob.digest,
                BlobProblem::SizeMismatch {
                    expected: blob.size,
                    actual: self.read,
                },
            ));
        }
        let actual = format!("sha256:{}", hex(&self.hasher.finalize()));
        if actual != blob.digest {
            return Err(Error::blob(
                &blob.digest,
                BlobProblem::DigestMismatch { actual },
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.overrun {
            return Err(io::Error::other("blob is longer than its descriptor says"));
        }
        // Ask for at most one byte past the expected end: enough to notice
        // an overlong blob without reading all of it.
        let room = self.blob.size.saturating_sub(self.read).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if self.read + n as u64 > self.blob.size {
            self.overrun = true;
            return Err(io::Error::other("blob is longer than its descriptor says"));
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Hashes what is read through it (a layer's uncompressed stream, to check
/// the config's `diff_id`).
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read so far.
    pub fn digest(self) -> String {
        format!("sha256:{}", hex(&self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of a byte string.
#[cfg(test)]
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(content: &[u8], size: u64) -> BlobRef {
        BlobRef {
            digest: sha256(content),
            size,
        }
    }

    #[test]
    fn accepts_the_exact_blob() {
        let mut r = Verified::new(&b"hello"[..], blob(b"hello", 5));
        let mut first = [0u8; 2];
        r.read_exact(&mut first).unwrap();
        r.finish().unwrap(); // drains the remaining three bytes
    }

    #[test]
    fn catches_wrong_content_size_and_overrun() {
        let r = Verified::new(&b"hellO"[..], blob(b"hello", 5));
        assert!(matches!(
            r.finish(),
            Err(Error::Blob {
                problem: BlobProblem::DigestMismatch { .. },
                ..
            })
        ));
        let r = Verified::new(&b"hell"[..], blob(b"hello", 5));
        assert!(matches!(
            r.finish(),
            Err(Error::Blob {
                problem: BlobProblem::SizeMismatch {
                    expected: 5,
                    actual: 4
                },
                ..
            })
        ));
        let mut r = Verified::new(&b"hello world"[..], blob(b"hello", 5));
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        assert!(matches!(
            r.finish(),
            Err(Error::Blob {
                problem: BlobProblem::TooLarge { expected: 5 },
                ..
            })
        ));
    }
}
