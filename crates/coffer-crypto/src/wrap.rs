//! Wrapping secrets under a 256-bit key (the dev-mode root key, or any key held in memory).
//!
//! Wrapped record, version 1 (see `docs/formats.md`):
//!
//! ```text
//! 0x01 | nonce (12) | AES-256-GCM ciphertext | tag (16)
//! ```
//!
//! The caller's associated data (`aad`) names what the secret is, so a wrapped record cannot be
//! moved to another purpose or key id and still open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::{CryptoError, Key256, SecretBytes};

pub const WRAP_VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// Bytes a wrapped record adds to its plaintext.
pub const WRAP_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

fn gcm_key(key: &Key256) -> Result<LessSafeKey, CryptoError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| CryptoError::Unspecified)?,
    ))
}

/// Wraps `secret` under `key`, bound to `aad`.
pub fn wrap(key: &Key256, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(secret.len() + WRAP_OVERHEAD);
    out.push(WRAP_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(secret);
    let tag = gcm_key(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(|_| CryptoError::Unspecified)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens a record made by [`wrap`] with the same key and `aad`.
pub fn unwrap(key: &Key256, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, CryptoError> {
    let (&version, rest) = wrapped
        .split_first()
        .ok_or(CryptoError::Malformed("wrapped key"))?;
    if version != WRAP_VERSION {
        return Err(CryptoError::UnsupportedVersion {
            what: "wrapped key",
            version,
        });
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed("wrapped key"));
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| CryptoError::Malformed("wrapped key"))?;
    let mut buf = SecretBytes::new(sealed.to_vec());
    let plain_len = gcm_key(key)?
        .open_in_place(nonce, Aad::from(aad), buf.expose_mut())
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
        let w = wrap(&k, b"purpose-a", b"secret material").expect("wrap");
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
    }
}
