//! Wrapping secrets under a 256-bit root key generation.
//!
//! Wrapped record, version 2 (see `docs/formats.md`):
//!
//! ```text
//! 0x02 | root generation (u32 BE) | nonce (12) | AES-256-GCM ciphertext | tag (16)
//! ```
//!
//! The GCM associated data is the five header bytes followed by the caller's associated data
//! (`aad`), which names what the secret is, so a record cannot be moved to another purpose or key
//! id, nor claim another generation, and still open. Version 1 records (`0x01 | nonce | ct | tag`,
//! associated data the caller's alone) were written before roots had generations; they belong to
//! generation 1 and still open.
//!
//! The same record is produced by a PKCS#11 token doing AES-GCM with its own key: [`Parsed`] and
//! [`gcm_aad`] give an HSM-backed root the fields to hand to the token.

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};

use crate::{CryptoError, Key256, SecretBytes};

pub const WRAP_V1: u8 = 1;
pub const WRAP_VERSION: u8 = 2;
pub const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 5;
/// Bytes a wrapped record adds to its plaintext.
pub const WRAP_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The header of a version 2 record wrapped by root `generation`.
pub fn header(generation: u32) -> [u8; HEADER_LEN] {
    let g = generation.to_be_bytes();
    [WRAP_VERSION, g[0], g[1], g[2], g[3]]
}

/// The associated data GCM authenticates for a record with `header` (empty for version 1).
pub fn gcm_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + aad.len());
    out.extend_from_slice(header);
    out.extend_from_slice(aad);
    out
}

/// A wrapped record, split into its fields.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    /// The root generation that wrapped it (1 for version 1 records).
    pub generation: u32,
    /// The bytes that prefix the caller's associated data (empty for version 1).
    pub header: &'a [u8],
    pub nonce: &'a [u8],
    /// Ciphertext followed by the tag.
    pub sealed: &'a [u8],
}

/// Splits a wrapped record into its fields, checking only its shape.
pub fn parse(wrapped: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    let malformed = CryptoError::Malformed("wrapped key");
    let (&version, _) = wrapped.split_first().ok_or(malformed)?;
    let (generation, header_len) = match version {
        WRAP_V1 => (1, 1),
        WRAP_VERSION => {
            let g: [u8; 4] = wrapped
                .get(1..HEADER_LEN)
                .and_then(|g| g.try_into().ok())
                .ok_or(malformed)?;
            (u32::from_be_bytes(g), HEADER_LEN)
        }
        version => {
            return Err(CryptoError::UnsupportedVersion {
                what: "wrapped key",
                version,
            });
        }
    };
    if wrapped.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(malformed);
    }
    let (head, rest) = wrapped.split_at(header_len);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    Ok(Parsed {
        generation,
        header: if version == WRAP_V1 { &[] } else { head },
        nonce,
        sealed,
    })
}

/// Wraps `secret` under `key`, root generation `generation`, bound to `aad`.
pub fn wrap(
    key: &Key256,
    generation: u32,
    aad: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::fill_random(&mut nonce)?;
    let header = header(generation);
    let mut out = Vec::with_capacity(secret.len() + WRAP_OVERHEAD);
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(secret);
    let tag = crate::aes_gcm(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(gcm_aad(&header, aad)),
            &mut out[HEADER_LEN + NONCE_LEN..],
        )
        .map_err(|_| CryptoError::Unspecified)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens a record made by [`wrap`] (or a version 1 record) with the key of its generation and the
/// same `aad`.
pub fn unwrap(key: &Key256, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, CryptoError> {
    let p = parse(wrapped)?;
    let nonce = Nonce::try_assume_unique_for_key(p.nonce)
        .map_err(|_| CryptoError::Malformed("wrapped key"))?;
    let mut buf = SecretBytes::new(p.sealed.to_vec());
    let plain_len = crate::aes_gcm(key)?
        .open_in_place(nonce, Aad::from(gcm_aad(p.header, aad)), buf.expose_mut())
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = Key256::generate().expect("rng");
        let w = wrap(&k, 7, b"purpose-a", b"secret material").expect("wrap");
        assert_eq!(parse(&w).expect("parse").generation, 7);
        assert_eq!(w.len(), 15 + WRAP_OVERHEAD);
        assert_eq!(
            unwrap(&k, b"purpose-a", &w).expect("open").expose(),
            b"secret material"
        );
        assert_eq!(
            unwrap(&k, b"purpose-b", &w).unwrap_err(),
            CryptoError::Decrypt
        );
        let other = Key256::generate().expect("rng");
        assert_eq!(
            unwrap(&other, b"purpose-a", &w).unwrap_err(),
            CryptoError::Decrypt
        );
        for i in 0..w.len() {
            let mut t = w.clone();
            t[i] ^= 1;
            assert!(
                unwrap(&k, b"purpose-a", &t).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        for n in 0..w.len() {
            assert!(unwrap(&k, b"purpose-a", &w[..n]).is_err());
        }
        // A record cannot claim another generation.
        let mut other_gen = w.clone();
        other_gen[4] ^= 1;
        assert_eq!(
            unwrap(&k, b"purpose-a", &other_gen).unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn version_1_records_still_open_as_generation_1() {
        let k = Key256::generate().expect("rng");
        // Built as version 1 wrote it: 0x01 | nonce | GCM(key, nonce, aad) ciphertext and tag.
        let nonce = [9u8; NONCE_LEN];
        let mut body = b"old secret".to_vec();
        let tag = crate::aes_gcm(&k)
            .expect("key")
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"aad"),
                &mut body,
            )
            .expect("seal");
        let mut v1 = vec![WRAP_V1];
        v1.extend_from_slice(&nonce);
        v1.extend_from_slice(&body);
        v1.extend_from_slice(tag.as_ref());
        assert_eq!(parse(&v1).expect("parse").generation, 1);
        assert_eq!(
            unwrap(&k, b"aad", &v1).expect("open").expose(),
            b"old secret"
        );
        assert!(matches!(
            parse(&[3, 0, 0]),
            Err(CryptoError::UnsupportedVersion { .. })
        ));
    }
}
