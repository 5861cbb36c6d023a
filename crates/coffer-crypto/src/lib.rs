//! Coffer's cryptography. This is the only crate that names a crypto library (aws-lc-rs); everything
//! above it speaks in terms of [`Key256`], [`SecretBytes`], [`blob`] and [`wrap`], so the primitives can
//! change (or move into an HSM) behind one seam.
//!
//! Secret values live in zeroizing types that do not implement `Clone`, `Serialize` or `PartialEq`, and
//! whose `Debug` output is redacted.

pub mod blob;
pub mod checksum;
pub mod context;
pub mod digest;
mod error;
pub mod esdk;
pub mod fle;
pub mod keys;
pub mod package;
mod secret;
pub mod shamir;
pub mod stream;
pub mod wrap;

pub use error::CryptoError;
pub use secret::{Key256, SecretBytes};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Fills `out` from the operating system's CSPRNG (through aws-lc).
pub fn fill_random(out: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| CryptoError::Unspecified)
}

/// An AES-256-GCM key for `key`.
pub(crate) fn aes_gcm(key: &Key256) -> Result<aws_lc_rs::aead::LessSafeKey, CryptoError> {
    use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| CryptoError::Unspecified)?,
    ))
}

/// The GCM nonce of the `index`th chunk of a stream sealed under a one-use key: 4 zero bytes, then
/// the index (u64 big-endian).
pub(crate) fn counter_nonce(index: u64) -> aws_lc_rs::aead::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    aws_lc_rs::aead::Nonce::assume_unique_for_key(n)
}

/// Returns `n` fresh random bytes as a secret.
pub fn random_secret(n: usize) -> Result<SecretBytes, CryptoError> {
    let mut out = SecretBytes::zeroed(n);
    fill_random(out.expose_mut())?;
    Ok(out)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
