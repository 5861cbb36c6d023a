//! Types for secret bytes. They zeroize on drop, are never `Clone`, and print as `[redacted]`.

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;

/// A 256-bit symmetric key (root key or key material of a KMS key version).
pub struct Key256(Zeroizing<[u8; 32]>);

impl Key256 {
    /// Generates a fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        crate::fill_random(k.as_mut())?;
        Ok(Self(k))
    }

    /// Takes a key from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("256-bit key"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The raw key bytes. Callers must not copy them into a non-zeroizing buffer.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key256([redacted])")
    }
}

/// Secret bytes of any length (plaintexts, data keys, secret access keys).
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn zeroed(len: usize) -> Self {
        Self(Zeroizing::new(vec![0u8; len]))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends bytes. Growing past the capacity moves the secret; the old buffer is zeroized first.
    pub fn extend_from_slice(&mut self, more: &[u8]) {
        if self.0.len() + more.len() > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (self.0.len() + more.len()).max(2 * self.0.capacity()),
            ));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(more);
    }

    /// Shortens the secret to `len` bytes, zeroizing the bytes cut off.
    pub fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            self.0[len..].zeroize();
            self.0.truncate(len);
        }
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {}])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let k = Key256::from_slice(&[0xAB; 32]).expect("32 bytes");
        assert!(!format!("{k:?}").contains("171"));
        assert!(!format!("{k:?}").to_lowercase().contains("ab"));
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "SecretBytes([redacted; 7])");
    }

    #[test]
    fn key_requires_32_bytes() {
        assert!(Key256::from_slice(&[0; 31]).is_err());
        assert!(Key256::from_slice(&[0; 33]).is_err());
    }
}
