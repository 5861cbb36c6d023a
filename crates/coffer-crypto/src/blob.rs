//! The ciphertext blob returned by KMS Encrypt and GenerateDataKey for symmetric keys.
//!
//! Version 1 (see `docs/formats.md`):
//!
//! ```text
//! offset  len  field
//! 0       1    version = 0x01
//! 1       16   key id (UUID, binary)
//! 17      4    key-material version, big-endian u32
//! 21      16   salt for the per-message key
//! 37      12   AES-GCM nonce
//! 49      n    ciphertext
//! 49+n    16   GCM tag
//! ```
//!
//! Each message is encrypted under its own AES-256 key, HKDF-SHA256(material, salt, info), so the
//! GCM random-nonce limit applies per message rather than per key version. The whole header (bytes
//! 0..49) and the encoded encryption context are the associated data: changing any header byte, or
//! presenting another context, makes the blob fail to open.
//!
//! Version 2 is for keys whose material never leaves an HSM, which can run AES-GCM but not derive a
//! per-message key: `0x02 | key id (16) | material version (4) | nonce (12) | ciphertext | tag`,
//! AES-256-GCM under the key itself, associated data the 33 header bytes and the encoded context.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;

use crate::{CryptoError, Key256, SecretBytes};

pub const BLOB_VERSION: u8 = 1;
/// Blobs made inside an HSM (see the module docs).
pub const DIRECT_BLOB_VERSION: u8 = 2;
pub const DIRECT_HEADER_LEN: usize = 1 + 16 + 4 + NONCE_LEN;
pub const HEADER_LEN: usize = 1 + 16 + 4 + SALT_LEN + NONCE_LEN;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Bytes a blob adds to its plaintext.
pub const BLOB_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
const INFO: &[u8] = b"coffer kms blob v1";

/// What a blob's header says, readable before (and without) decrypting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    pub key_id: [u8; 16],
    pub material_version: u32,
}

/// Reads the header of a blob, refusing anything that cannot be a version-1 blob.
pub fn peek(blob: &[u8]) -> Result<BlobHeader, CryptoError> {
    let Some(&version) = blob.first() else {
        return Err(CryptoError::Malformed("ciphertext blob"));
    };
    let min = match version {
        BLOB_VERSION => BLOB_OVERHEAD,
        DIRECT_BLOB_VERSION => DIRECT_HEADER_LEN + TAG_LEN,
        version => {
            return Err(CryptoError::UnsupportedVersion {
                what: "ciphertext blob",
                version,
            });
        }
    };
    if blob.len() < min {
        return Err(CryptoError::Malformed("ciphertext blob"));
    }
    let mut key_id = [0u8; 16];
    key_id.copy_from_slice(&blob[1..17]);
    let mut v = [0u8; 4];
    v.copy_from_slice(&blob[17..21]);
    Ok(BlobHeader {
        key_id,
        material_version: u32::from_be_bytes(v),
    })
}

/// The header of a version 2 blob.
pub fn direct_header(header: BlobHeader, nonce: &[u8; NONCE_LEN]) -> [u8; DIRECT_HEADER_LEN] {
    let mut h = [0u8; DIRECT_HEADER_LEN];
    h[0] = DIRECT_BLOB_VERSION;
    h[1..17].copy_from_slice(&header.key_id);
    h[17..21].copy_from_slice(&header.material_version.to_be_bytes());
    h[21..].copy_from_slice(nonce);
    h
}

/// A version 2 blob's parts: its header (also the start of the associated data), nonce, and
/// ciphertext followed by the tag. `None` for any other blob.
pub fn split_direct(blob: &[u8]) -> Option<(&[u8], [u8; NONCE_LEN], &[u8])> {
    if blob.first() != Some(&DIRECT_BLOB_VERSION) || blob.len() < DIRECT_HEADER_LEN + TAG_LEN {
        return None;
    }
    let (head, sealed) = blob.split_at(DIRECT_HEADER_LEN);
    let nonce = head[21..].try_into().ok()?;
    Some((head, nonce, sealed))
}

/// The associated data of a blob: its header, then the encoded context.
pub fn associated_data(header: &[u8], context: &[u8]) -> Vec<u8> {
    aad(header, context)
}

fn message_key(
    material: &Key256,
    salt: &[u8],
    header: &BlobHeader,
) -> Result<LessSafeKey, CryptoError> {
    let version = header.material_version.to_be_bytes();
    let info = [INFO, &header.key_id[..], &version[..]];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(material.expose());
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| CryptoError::Unspecified)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Encrypts `plaintext` under one version of a key's material. `context` is the encoded encryption
/// context ([`crate::context::encode`]).
pub fn seal(
    material: &Key256,
    header: BlobHeader,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plaintext.len() + BLOB_OVERHEAD);
    out.push(BLOB_VERSION);
    out.extend_from_slice(&header.key_id);
    out.extend_from_slice(&header.material_version.to_be_bytes());
    let mut salt_nonce = [0u8; SALT_LEN + NONCE_LEN];
    crate::fill_random(&mut salt_nonce)?;
    out.extend_from_slice(&salt_nonce);
    let (salt, nonce) = salt_nonce.split_at(SALT_LEN);
    let key = message_key(material, salt, &header)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Unspecified)?;
    let aad = aad(&out, context);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut out[HEADER_LEN..])
        .map_err(|_| CryptoError::Unspecified)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts a blob with the material of the version its header names. Any tampering, a wrong key
/// or a different context gives [`CryptoError::Decrypt`].
pub fn open(material: &Key256, blob: &[u8], context: &[u8]) -> Result<SecretBytes, CryptoError> {
    let header = peek(blob)?;
    if blob[0] != BLOB_VERSION {
        return Err(CryptoError::Decrypt);
    }
    let (head, sealed) = blob.split_at(HEADER_LEN);
    let salt = &head[21..21 + SALT_LEN];
    let nonce = Nonce::try_assume_unique_for_key(&head[21 + SALT_LEN..])
        .map_err(|_| CryptoError::Malformed("ciphertext blob"))?;
    let key = message_key(material, salt, &header)?;
    let aad = aad(head, context);
    let mut buf = SecretBytes::new(sealed.to_vec());
    let n = key
        .open_in_place(nonce, Aad::from(&aad), buf.expose_mut())
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BlobHeader {
        BlobHeader {
            key_id: [7; 16],
            material_version: 3,
        }
    }

    #[test]
    fn round_trip() {
        let k = Key256::generate().expect("rng");
        let b = seal(&k, header(), b"ctx", b"hello").expect("seal");
        assert_eq!(b.len(), 5 + BLOB_OVERHEAD);
        assert_eq!(peek(&b).expect("header"), header());
        assert_eq!(open(&k, &b, b"ctx").expect("open").expose(), b"hello");
        // Fresh salt and nonce every time.
        assert_ne!(b, seal(&k, header(), b"ctx", b"hello").expect("seal"));
    }

    #[test]
    fn any_change_is_refused() {
        let k = Key256::generate().expect("rng");
        let b = seal(&k, header(), b"ctx", b"hello").expect("seal");
        for i in 0..b.len() {
            for bit in [0x01, 0x80] {
                let mut t = b.clone();
                t[i] ^= bit;
                assert!(open(&k, &t, b"ctx").is_err(), "flip at {i} went unnoticed");
            }
        }
        for n in 0..b.len() {
            assert!(open(&k, &b[..n], b"ctx").is_err());
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(open(&k, &longer, b"ctx").is_err());
        assert_eq!(open(&k, &b, b"ctx2").unwrap_err(), CryptoError::Decrypt);
        assert_eq!(open(&k, &b, b"").unwrap_err(), CryptoError::Decrypt);
        let other = Key256::generate().expect("rng");
        assert_eq!(open(&other, &b, b"ctx").unwrap_err(), CryptoError::Decrypt);
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let k = Key256::generate().expect("rng");
        let b = seal(&k, header(), b"", b"").expect("seal");
        assert!(open(&k, &b, b"").expect("open").is_empty());
    }

    #[test]
    fn versions_are_checked() {
        let k = Key256::generate().expect("rng");
        let mut b = seal(&k, header(), b"", b"x").expect("seal");
        b[0] = 3;
        assert_eq!(
            peek(&b).unwrap_err(),
            CryptoError::UnsupportedVersion {
                what: "ciphertext blob",
                version: 3
            }
        );
        assert!(peek(&[]).is_err());
    }
}
