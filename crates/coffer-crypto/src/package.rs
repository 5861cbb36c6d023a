//! The stored form of an encrypted object: a header, then the plaintext sealed in fixed-size
//! packages of AES-256-GCM under a key used for this object alone.
//!
//! Version 1 (see `docs/formats.md`):
//!
//! ```text
//! header:  "CFOB" | 0x01 | plaintext length (u64 BE) | object id (16 random bytes)
//! package i (0-based): AES-256-GCM ciphertext of plaintext bytes [i·64 KiB, (i+1)·64 KiB) | tag (16)
//!          nonce: 0 (4 bytes) | i (u64 BE)
//!          associated data: the header | i (u64 BE) | 0x01 if i is the last package else 0x00
//! ```
//!
//! Every package but the last holds exactly 64 KiB of plaintext; an empty object is one empty
//! package. Because the header (with the length) is authenticated by every package and each package
//! is bound to its index and to whether it is the last, packages cannot be reordered, dropped,
//! duplicated or truncated, nor moved to another object, without a package failing to open. A range
//! read opens only the packages that hold the range: package `i` starts at a fixed offset.
//!
//! A key never seals two objects, so counter nonces are safe. Multipart uploads seal each part as
//! an object of its own under [`part_key`], derived from the object key.

use aws_lc_rs::aead::{Aad, LessSafeKey};
use aws_lc_rs::hkdf;

use crate::{CryptoError, Key256, SecretBytes};

pub const PACKAGE_LEN: usize = 64 * 1024;
pub const TAG_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"CFOB";
const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 4 + 1 + 8 + 16;
const SEALED_PACKAGE_LEN: u64 = (PACKAGE_LEN + TAG_LEN) as u64;

/// What an object's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHeader {
    pub plaintext_len: u64,
    pub object_id: [u8; 16],
}

impl ObjectHeader {
    /// A header for a new object of `plaintext_len` bytes, with a fresh object id.
    pub fn new(plaintext_len: u64) -> Result<Self, CryptoError> {
        let mut object_id = [0u8; 16];
        crate::fill_random(&mut object_id)?;
        Ok(Self {
            plaintext_len,
            object_id,
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5..13].copy_from_slice(&self.plaintext_len.to_be_bytes());
        h[13..].copy_from_slice(&self.object_id);
        h
    }

    /// Reads a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let h = bytes
            .get(..HEADER_LEN)
            .ok_or(CryptoError::Malformed("object header"))?;
        if &h[..4] != MAGIC {
            return Err(CryptoError::Malformed("object header"));
        }
        if h[4] != VERSION {
            return Err(CryptoError::UnsupportedVersion {
                what: "object",
                version: h[4],
            });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&h[5..13]);
        let mut object_id = [0u8; 16];
        object_id.copy_from_slice(&h[13..]);
        Ok(Self {
            plaintext_len: u64::from_be_bytes(len),
            object_id,
        })
    }

    /// How many packages the object has (an empty object has one, empty).
    pub fn packages(&self) -> u64 {
        self.plaintext_len.div_ceil(PACKAGE_LEN as u64).max(1)
    }

    /// The stored size: header and every sealed package.
    pub fn sealed_len(&self) -> u64 {
        HEADER_LEN as u64 + self.plaintext_len + self.packages() * TAG_LEN as u64
    }

    /// Where sealed package `index` starts in the stored object, and its stored length.
    pub fn package_span(&self, index: u64) -> Option<(u64, u64)> {
        if index >= self.packages() {
            return None;
        }
        let plain = if index + 1 == self.packages() {
            self.plaintext_len - index * PACKAGE_LEN as u64
        } else {
            PACKAGE_LEN as u64
        };
        Some((
            HEADER_LEN as u64 + index * SEALED_PACKAGE_LEN,
            plain + TAG_LEN as u64,
        ))
    }

    /// The packages that hold plaintext bytes `first..=last` (inclusive, as HTTP ranges are).
    pub fn packages_for(&self, first: u64, last: u64) -> Option<(u64, u64)> {
        if first > last || last >= self.plaintext_len {
            return None;
        }
        Some((first / PACKAGE_LEN as u64, last / PACKAGE_LEN as u64))
    }
}

fn aad(header: &[u8; HEADER_LEN], index: u64, last: bool) -> [u8; HEADER_LEN + 9] {
    let mut a = [0u8; HEADER_LEN + 9];
    a[..HEADER_LEN].copy_from_slice(header);
    a[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&index.to_be_bytes());
    a[HEADER_LEN + 8] = u8::from(last);
    a
}

/// Seals an object as its plaintext arrives, one package at a time, so memory stays at one package
/// whatever the object's size.
pub struct Sealer {
    /// `None`: the benchmark baseline, which copies instead of sealing (see [`Cipher`]).
    key: Option<LessSafeKey>,
    header: ObjectHeader,
    encoded: [u8; HEADER_LEN],
    index: u64,
    taken: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("header", &self.header)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Starts sealing an object of `plaintext_len` bytes under `key` (used for no other object).
    /// Returns the sealer and the header, which is the start of the stored object.
    pub fn new(key: &Key256, plaintext_len: u64) -> Result<(Self, [u8; HEADER_LEN]), CryptoError> {
        Self::with_cipher(Cipher::Seal, key, plaintext_len)
    }

    /// A sealer that seals, or (benchmark baseline only) copies.
    pub fn with_cipher(
        cipher: Cipher,
        key: &Key256,
        plaintext_len: u64,
    ) -> Result<(Self, [u8; HEADER_LEN]), CryptoError> {
        let header = ObjectHeader::new(plaintext_len)?;
        let encoded = header.encode();
        Ok((
            Self {
                key: match cipher {
                    Cipher::Seal => Some(crate::aes_gcm(key)?),
                    Cipher::CopyBaseline => None,
                },
                header,
                encoded,
                index: 0,
                taken: 0,
                buf: Vec::with_capacity(PACKAGE_LEN + TAG_LEN),
            },
            encoded,
        ))
    }

    fn seal_buffered(&mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let last = self.index + 1 == self.header.packages();
        match &self.key {
            Some(key) => key
                .seal_in_place_append_tag(
                    crate::counter_nonce(self.index),
                    Aad::from(aad(&self.encoded, self.index, last)),
                    &mut self.buf,
                )
                .map_err(|_| CryptoError::Unspecified)?,
            None => self.buf.extend_from_slice(&[0u8; TAG_LEN]),
        }
        out.extend_from_slice(&self.buf);
        zeroize::Zeroize::zeroize(&mut self.buf);
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Takes more plaintext; appends every package it completes to `out`. More bytes than the
    /// length given at the start is an error.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if self.taken + data.len() as u64 > self.header.plaintext_len {
            return Err(CryptoError::Malformed("object longer than its length"));
        }
        self.taken += data.len() as u64;
        while !data.is_empty() {
            let room = PACKAGE_LEN - self.buf.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = rest;
            // A full package is sealed now unless it is the last one, which `finish` seals.
            if self.buf.len() == PACKAGE_LEN && self.index + 1 < self.header.packages() {
                self.seal_buffered(out)?;
            }
        }
        Ok(())
    }

    /// Seals the last package. Fewer bytes than the length given at the start is an error.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if self.taken != self.header.plaintext_len {
            return Err(CryptoError::Malformed("object shorter than its length"));
        }
        self.seal_buffered(out)
    }
}

/// What the package layer does with the bytes. Only [`Cipher::Seal`] is ever used for data:
/// [`Cipher::CopyBaseline`] copies plaintext into the same layout (a zero "tag" after each
/// package) so that `coffer bench s3` can measure what sealing costs against an identical path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Seal,
    CopyBaseline,
}

/// Opens package `index` as `cipher` says: authenticated and decrypted, or (benchmark baseline)
/// copied.
pub fn open_package_with(
    cipher: Cipher,
    key: &Key256,
    header: &ObjectHeader,
    index: u64,
    sealed: &[u8],
) -> Result<SecretBytes, CryptoError> {
    match cipher {
        Cipher::Seal => open_package(key, header, index, sealed),
        Cipher::CopyBaseline => {
            let (_, len) = header
                .package_span(index)
                .ok_or(CryptoError::Malformed("object package"))?;
            if sealed.len() as u64 != len {
                return Err(CryptoError::Malformed("object package"));
            }
            Ok(SecretBytes::new(sealed[..sealed.len() - TAG_LEN].to_vec()))
        }
    }
}

/// Opens sealed package `index` of the object whose header is `header` (the stored bytes from the
/// package's span, see [`ObjectHeader::package_span`]).
pub fn open_package(
    key: &Key256,
    header: &ObjectHeader,
    index: u64,
    sealed: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let (_, len) = header
        .package_span(index)
        .ok_or(CryptoError::Malformed("object package"))?;
    if sealed.len() as u64 != len {
        return Err(CryptoError::Malformed("object package"));
    }
    let last = index + 1 == header.packages();
    let mut buf = SecretBytes::new(sealed.to_vec());
    let n = crate::aes_gcm(key)?
        .open_in_place(
            crate::counter_nonce(index),
            Aad::from(aad(&header.encode(), index, last)),
            buf.expose_mut(),
        )
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// The key of part `part_number` of a multipart upload, derived from the object key.
pub fn part_key(object_key: &Key256, part_number: u32) -> Result<Key256, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"coffer object part key v1")
        .extract(object_key.expose());
    let number = part_number.to_be_bytes();
    let info = [&number[..]];
    let okm = prk
        .expand(&info, PartKeyLen)
        .map_err(|_| CryptoError::Unspecified)?;
    let mut out = [0u8; 32];
    okm.fill(&mut out).map_err(|_| CryptoError::Unspecified)?;
    let key = Key256::from_slice(&out);
    zeroize::Zeroize::zeroize(&mut out);
    key
}

struct PartKeyLen;

impl hkdf::KeyType for PartKeyLen {
    fn len(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_all(key: &Key256, data: &[u8], step: usize) -> Vec<u8> {
        let (mut s, header) = Sealer::new(key, data.len() as u64).expect("sealer");
        let mut out = header.to_vec();
        for chunk in data.chunks(step.max(1)) {
            s.push(chunk, &mut out).expect("push");
        }
        s.finish(&mut out).expect("finish");
        out
    }

    fn open_all(key: &Key256, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let h = ObjectHeader::decode(stored)?;
        if stored.len() as u64 != h.sealed_len() {
            return Err(CryptoError::Malformed("object length"));
        }
        let mut out = Vec::new();
        for i in 0..h.packages() {
            let (at, len) = h.package_span(i).expect("span");
            let p = open_package(key, &h, i, &stored[at as usize..(at + len) as usize])?;
            out.extend_from_slice(p.expose());
        }
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_boundary_and_any_push_size() {
        let key = Key256::generate().expect("rng");
        for len in [
            0,
            1,
            PACKAGE_LEN - 1,
            PACKAGE_LEN,
            PACKAGE_LEN + 1,
            3 * PACKAGE_LEN,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            for step in [1000, PACKAGE_LEN, 7 * PACKAGE_LEN] {
                let stored = seal_all(&key, &data, step);
                let h = ObjectHeader::decode(&stored).expect("header");
                assert_eq!(stored.len() as u64, h.sealed_len());
                assert_eq!(open_all(&key, &stored).expect("open"), data);
            }
        }
    }

    #[test]
    fn ranges_open_only_their_packages() {
        let key = Key256::generate().expect("rng");
        let data: Vec<u8> = (0..(2 * PACKAGE_LEN + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        let stored = seal_all(&key, &data, 4096);
        let h = ObjectHeader::decode(&stored).expect("header");
        let (first, last) = (PACKAGE_LEN as u64 - 10, PACKAGE_LEN as u64 + 10);
        let (p0, p1) = h.packages_for(first, last).expect("range");
        assert_eq!((p0, p1), (0, 1));
        let mut plain = Vec::new();
        for i in p0..=p1 {
            let (at, len) = h.package_span(i).expect("span");
            plain.extend_from_slice(
                open_package(&key, &h, i, &stored[at as usize..(at + len) as usize])
                    .expect("open")
                    .expose(),
            );
        }
        let skip = (first - p0 * PACKAGE_LEN as u64) as usize;
        assert_eq!(
            &plain[skip..skip + 21],
            &data[first as usize..=last as usize]
        );
        assert!(h.packages_for(0, data.len() as u64).is_none());
        assert!(h.packages_for(5, 4).is_none());
    }

    #[test]
    fn tampering_reordering_truncation_and_wrong_lengths_fail() {
        let key = Key256::generate().expect("rng");
        let data = vec![9u8; 2 * PACKAGE_LEN + 5];
        let stored = seal_all(&key, &data, PACKAGE_LEN);
        for at in [0, 4, 6, HEADER_LEN + 3, stored.len() / 2, stored.len() - 1] {
            let mut t = stored.clone();
            t[at] ^= 1;
            assert!(open_all(&key, &t).is_err(), "flip at {at}");
        }
        // Swap the first two packages.
        let p = SEALED_PACKAGE_LEN as usize;
        let mut swapped = stored[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&stored[HEADER_LEN + p..HEADER_LEN + 2 * p]);
        swapped.extend_from_slice(&stored[HEADER_LEN..HEADER_LEN + p]);
        swapped.extend_from_slice(&stored[HEADER_LEN + 2 * p..]);
        assert!(open_all(&key, &swapped).is_err());
        // Truncate to two whole packages, fixing the header's length to match: the header no
        // longer authenticates.
        let mut cut = stored[..HEADER_LEN + 2 * p].to_vec();
        cut[5..13].copy_from_slice(&((2 * PACKAGE_LEN) as u64).to_be_bytes());
        assert!(open_all(&key, &cut).is_err());
        // A package moved to another object of the same key does not open there.
        let other = seal_all(&key, &data, PACKAGE_LEN);
        let mut mixed = other[..HEADER_LEN].to_vec();
        mixed.extend_from_slice(&stored[HEADER_LEN..]);
        assert!(open_all(&key, &mixed).is_err());
        let wrong = Key256::generate().expect("rng");
        assert!(open_all(&wrong, &stored).is_err());

        let (mut s, _) = Sealer::new(&key, 10).expect("sealer");
        let mut out = Vec::new();
        assert!(s.push(&[0; 11], &mut out).is_err());
        let (mut s, _) = Sealer::new(&key, 10).expect("sealer");
        s.push(&[0; 5], &mut out).expect("push");
        assert!(s.finish(&mut out).is_err());
        assert!(ObjectHeader::decode(b"CFOB").is_err());
        let mut v2 = stored[..HEADER_LEN].to_vec();
        v2[4] = 2;
        assert!(matches!(
            ObjectHeader::decode(&v2),
            Err(CryptoError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn part_keys_differ_by_part_and_object() {
        let a = Key256::generate().expect("rng");
        let b = Key256::generate().expect("rng");
        let a1 = part_key(&a, 1).expect("derive");
        assert_eq!(a1.expose(), part_key(&a, 1).expect("derive").expose());
        assert_ne!(a1.expose(), part_key(&a, 2).expect("derive").expose());
        assert_ne!(a1.expose(), part_key(&b, 1).expect("derive").expose());
        assert_ne!(a1.expose(), a.expose());
    }
}
