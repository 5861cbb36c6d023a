//! Coffer's object storage below the S3 API: where sealed object bytes live ([`BlobStore`], with
//! the local-disk [`DiskBlobs`]), and objects written and read through the package cipher
//! ([`write_object`], [`ObjectReader`]) so that nothing readable reaches the disk and a range read
//! opens only the packages it needs.
//!
//! A blob becomes visible only whole and durable: it is written to a temporary file, fsynced, then
//! renamed into place and its directory fsynced. A crash leaves at most a temporary file, which
//! [`BlobStore::clean_temporary`] removes at start. Blob ids are random; the metadata that names
//! them is committed after the blob, by the caller.

mod disk;
pub mod s3;

use std::io::Read;

use coffer_crypto::package::{self, HEADER_LEN, ObjectHeader, PACKAGE_LEN, Sealer};

pub use coffer_crypto::package::Cipher;
use coffer_crypto::{CryptoError, Key256, SecretBytes};

pub use disk::DiskBlobs;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob storage I/O on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no blob {0}")]
    NotFound(String),
    /// The stored bytes do not authenticate: changed on disk, cut short, or not this object's.
    #[error("the stored object {0} is damaged or was altered: it does not authenticate")]
    Damaged(String),
    #[error("the object body was {got} bytes, not the {expected} announced")]
    LengthMismatch { expected: u64, got: u64 },
    #[error("the range {first}-{last} is not within the object's {len} bytes")]
    InvalidRange { first: u64, last: u64, len: u64 },
    #[error("object cipher: {0}")]
    Crypto(#[from] CryptoError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A blob id: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(String);

impl BlobId {
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Accepts only what [`BlobId::new_random`] makes, so an id can never name a path elsewhere.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where sealed object bytes are kept: the local disk ([`DiskBlobs`]) or, in the binary, any
/// S3-compatible store that several nodes share. Calls block; callers on async threads of a
/// multi-thread runtime are fine (a remote store moves off the worker while it waits).
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Starts a new blob; nothing is visible until [`BlobWriter::commit`].
    fn create(&self) -> Result<Box<dyn BlobWriter>>;
    /// `len` bytes of blob `id` from `offset`.
    fn read_at(&self, id: &BlobId, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// The blob's size.
    fn len(&self, id: &BlobId) -> Result<u64>;
    /// Removes a blob; `false` when there was none.
    fn delete(&self, id: &BlobId) -> Result<bool>;
    /// Removes what a crash left half-written (in a shared store: only what is old enough to be
    /// abandoned); returns how many.
    fn clean_temporary(&self) -> Result<usize>;
    /// Committed blobs, for the sweep at start that removes blobs no metadata names. A store
    /// that several nodes share lists only blobs old enough that no node can still be about to
    /// commit the metadata that names them.
    fn list(&self) -> Result<Vec<BlobId>>;
    /// What the package layer does with object bytes in this store: always
    /// [`Cipher::Seal`], but in the unencrypted baseline store `coffer bench s3` measures
    /// against.
    fn cipher(&self) -> Cipher {
        Cipher::Seal
    }
}

/// A blob being written.
pub trait BlobWriter: Send {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()>;
    /// Makes the blob durable and visible, and returns its id.
    fn commit(self: Box<Self>) -> Result<BlobId>;
}

/// What writing an object produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub blob: BlobId,
    pub plaintext_len: u64,
    /// MD5 of the plaintext, as S3 computes a single-part ETag.
    pub md5: [u8; 16],
}

/// Seals `plaintext_len` bytes read from `body` under `key` into a new blob, one package in memory
/// at a time. The body must hold exactly that many bytes.
pub fn write_object(
    blobs: &dyn BlobStore,
    key: &Key256,
    plaintext_len: u64,
    body: &mut dyn Read,
) -> Result<Written> {
    let (mut sealer, header) = Sealer::with_cipher(blobs.cipher(), key, plaintext_len)?;
    let mut writer = blobs.create()?;
    writer.write_all(&header)?;
    let mut md5 = coffer_crypto::digest::Md5::new();
    let mut buf = SecretBytes::zeroed(PACKAGE_LEN);
    let mut sealed = Vec::with_capacity(PACKAGE_LEN + package::TAG_LEN);
    let mut got = 0u64;
    loop {
        let n = body
            .read(buf.expose_mut())
            .map_err(|source| StoreError::Io {
                what: "the request body".into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > plaintext_len {
            return Err(StoreError::LengthMismatch {
                expected: plaintext_len,
                got,
            });
        }
        md5.update(&buf.expose()[..n]);
        sealer.push(&buf.expose()[..n], &mut sealed)?;
        if !sealed.is_empty() {
            writer.write_all(&sealed)?;
            sealed.clear();
        }
    }
    if got != plaintext_len {
        return Err(StoreError::LengthMismatch {
            expected: plaintext_len,
            got,
        });
    }
    sealer.finish(&mut sealed)?;
    writer.write_all(&sealed)?;
    let blob = writer.commit()?;
    Ok(Written {
        blob,
        plaintext_len,
        md5: md5.finish(),
    })
}

/// Reads an object back, whole or by range, opening only the packages a read needs.
#[derive(Debug)]
pub struct ObjectReader<'a> {
    blobs: &'a dyn BlobStore,
    blob: BlobId,
    header: ObjectHeader,
}

impl<'a> ObjectReader<'a> {
    /// Reads and checks the object's header and stored size (a cut-short blob is refused here).
    pub fn open(blobs: &'a dyn BlobStore, blob: &BlobId) -> Result<Self> {
        let head = blobs.read_at(blob, 0, HEADER_LEN)?;
        let header =
            ObjectHeader::decode(&head).map_err(|_| StoreError::Damaged(blob.to_string()))?;
        if blobs.len(blob)? != header.sealed_len() {
            return Err(StoreError::Damaged(blob.to_string()));
        }
        Ok(Self {
            blobs,
            blob: blob.clone(),
            header,
        })
    }

    pub fn len(&self) -> u64 {
        self.header.plaintext_len
    }

    pub fn is_empty(&self) -> bool {
        self.header.plaintext_len == 0
    }

    /// Plaintext bytes `first..=last`, handed to `sink` a package's worth at a time. Nothing is
    /// handed over from a package that does not authenticate.
    pub fn read_range(
        &self,
        key: &Key256,
        first: u64,
        last: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (p0, p1) = self
            .header
            .packages_for(first, last)
            .ok_or(StoreError::InvalidRange {
                first,
                last,
                len: self.header.plaintext_len,
            })?;
        for i in p0..=p1 {
            let plain = self.package(key, i)?;
            let start = i * PACKAGE_LEN as u64;
            let from = first.saturating_sub(start) as usize;
            let to = ((last - start) as usize + 1).min(plain.len());
            sink(&plain.expose()[from..to])?;
        }
        Ok(())
    }

    /// The whole plaintext, to `sink` a package at a time (an empty object hands over nothing).
    pub fn read_all(&self, key: &Key256, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if self.header.plaintext_len == 0 {
            // The one empty package must still authenticate.
            self.package(key, 0)?;
            return Ok(());
        }
        self.read_range(key, 0, self.header.plaintext_len - 1, sink)
    }

    fn package(&self, key: &Key256, index: u64) -> Result<SecretBytes> {
        let (at, len) = self
            .header
            .package_span(index)
            .ok_or_else(|| StoreError::Damaged(self.blob.to_string()))?;
        let sealed = self.blobs.read_at(&self.blob, at, len as usize)?;
        package::open_package_with(self.blobs.cipher(), key, &self.header, index, &sealed)
            .map_err(|_| StoreError::Damaged(self.blob.to_string()))
    }
}

/// A stretch of an object's plaintext sealed in a blob of its own (the whole of a single-part
/// object, or one part of a multipart object), with the key it is sealed under.
#[derive(Debug)]
pub struct Piece {
    pub blob: BlobId,
    pub key: Key256,
    pub len: u64,
}

/// Reads the plaintext of an object made of `pieces` (in order), whole or the inclusive range
/// `first..=last`, handing it to `sink` a package at a time. Only the packages the range
/// touches are opened; a piece whose stored length is not the one recorded is damaged.
pub fn read_pieces(
    blobs: &dyn BlobStore,
    pieces: &[Piece],
    range: Option<(u64, u64)>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut start = 0u64;
    for p in pieces {
        let end = start + p.len;
        let wanted = match range {
            None => Some(None),
            Some((first, last)) if last >= start && first < end => Some(Some((
                first.saturating_sub(start),
                (last - start).min(p.len.saturating_sub(1)),
            ))),
            Some(_) => None,
        };
        if let Some(local) = wanted {
            let reader = ObjectReader::open(blobs, &p.blob)?;
            if reader.len() != p.len {
                return Err(StoreError::Damaged(p.blob.to_string()));
            }
            match local {
                None => reader.read_all(&p.key, sink)?,
                Some((a, b)) => reader.read_range(&p.key, a, b, sink)?,
            }
        }
        start = end;
    }
    if let Some((first, last)) = range
        && (first > last || last >= start)
    {
        return Err(StoreError::InvalidRange {
            first,
            last,
            len: start,
        });
    }
    Ok(())
}

/// Seals (a range of) an existing object into a new blob under `key`: the copy of CopyObject
/// and UploadPartCopy. Plaintext passes between the reading and the sealing thread a package
/// at a time and never leaves memory.
pub fn copy_pieces(
    blobs: &dyn BlobStore,
    pieces: &[Piece],
    range: Option<(u64, u64)>,
    key: &Key256,
) -> Result<Written> {
    let total: u64 = pieces.iter().map(|p| p.len).sum();
    let len = match range {
        Some((a, b)) if a <= b && b < total => b - a + 1,
        Some((first, last)) => {
            return Err(StoreError::InvalidRange {
                first,
                last,
                len: total,
            });
        }
        None => total,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<SecretBytes>>(4);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let r = read_pieces(blobs, pieces, range, &mut |b| {
                tx.send(Ok(SecretBytes::new(b.to_vec())))
                    .map_err(|_| StoreError::Io {
                        what: "the copy".into(),
                        source: std::io::Error::other("the sealing side stopped"),
                    })
            });
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
        });
        let mut reader = PlainReader {
            rx,
            current: SecretBytes::new(Vec::new()),
            at: 0,
            failed: None,
        };
        let written = write_object(blobs, key, len, &mut reader);
        match reader.failed.take() {
            Some(e) => Err(e),
            None => written,
        }
    })
}

/// Reads the plaintext a copy's reading thread sends.
struct PlainReader {
    rx: std::sync::mpsc::Receiver<Result<SecretBytes>>,
    current: SecretBytes,
    at: usize,
    /// The reading side's error, reported instead of the sealing side's.
    failed: Option<StoreError>,
}

impl Read for PlainReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Err(_) => return Ok(0),
                Ok(Err(e)) => {
                    self.failed = Some(e);
                    return Err(std::io::Error::other("the copy source failed"));
                }
                Ok(Ok(b)) => {
                    self.current = b;
                    self.at = 0;
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current.expose()[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
