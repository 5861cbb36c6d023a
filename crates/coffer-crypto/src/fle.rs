//! Primitives of field-level encryption (`coffer-esdk`'s record encryption): deterministic
//! AES-256-SIV (RFC 5297, the one RustCrypto crate in the tree, as aws-lc-rs has no SIV),
//! randomized AES-256-GCM, and an HMAC-SHA256 record tag, each under its own key derived from one
//! table data key.

use aes_siv::KeyInit;
use aes_siv::siv::Aes256Siv;
use aws_lc_rs::hmac;

use crate::esdk::{Gcm, Hash, IV_LEN, TAG_LEN, hkdf};
use crate::{CryptoError, SecretBytes};

/// The three keys of one table, derived from its data key.
pub struct TableKeys {
    deterministic: SecretBytes,
    randomized: Gcm,
    mac: hmac::Key,
}

impl std::fmt::Debug for TableKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableKeys([redacted])")
    }
}

impl TableKeys {
    /// Derives the keys of `table` from its data key (HKDF-SHA512, one label per purpose, the
    /// table name in each).
    pub fn derive(data_key: &[u8], table: &str) -> Result<Self, CryptoError> {
        if data_key.len() < 32 {
            return Err(CryptoError::Malformed("table data key (at least 32 bytes)"));
        }
        let salt = b"coffer field-level encryption v1";
        let t = table.as_bytes();
        let deterministic = hkdf(Hash::Sha512, salt, data_key, &[b"deterministic\0", t], 64)?;
        let randomized = hkdf(Hash::Sha512, salt, data_key, &[b"randomized\0", t], 32)?;
        let mac = hkdf(Hash::Sha512, salt, data_key, &[b"record tag\0", t], 32)?;
        Ok(Self {
            deterministic,
            randomized: Gcm::new(randomized.expose())?,
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac.expose()),
        })
    }

    /// AES-256-SIV of `plaintext` with the associated data items `ad`: equal inputs give equal
    /// outputs (the synthetic IV, then the ciphertext).
    pub fn seal_deterministic(
        &self,
        ad: &[&[u8]],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut siv = Aes256Siv::new_from_slice(self.deterministic.expose())
            .map_err(|_| CryptoError::Unspecified)?;
        siv.encrypt(ad, plaintext)
            .map_err(|_| CryptoError::Unspecified)
    }

    pub fn open_deterministic(
        &self,
        ad: &[&[u8]],
        sealed: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        let mut siv = Aes256Siv::new_from_slice(self.deterministic.expose())
            .map_err(|_| CryptoError::Unspecified)?;
        siv.decrypt(ad, sealed)
            .map(SecretBytes::new)
            .map_err(|_| CryptoError::Decrypt)
    }

    /// AES-256-GCM with a fresh random IV: the IV, the ciphertext, the tag.
    pub fn seal_randomized(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut iv = [0u8; IV_LEN];
        crate::fill_random(&mut iv)?;
        let mut out = Vec::with_capacity(IV_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        let tag = self.randomized.seal(&iv, aad, &mut out[IV_LEN..])?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub fn open_randomized(&self, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        if sealed.len() < IV_LEN + TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&sealed[..IV_LEN]);
        let mut buf = SecretBytes::new(sealed[IV_LEN..].to_vec());
        self.randomized.open(&iv, aad, buf.expose_mut())?;
        let n = buf.len() - TAG_LEN;
        buf.truncate(n);
        Ok(buf)
    }

    /// The record tag (HMAC-SHA256, hardware-accelerated where SHA-384 often is not) of `data`.
    pub fn tag(&self, data: &[u8]) -> Vec<u8> {
        hmac::sign(&self.mac, data).as_ref().to_vec()
    }

    /// Checks a record tag in constant time.
    pub fn verify_tag(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.mac, data, tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_is_stable_bound_and_tamper_evident() {
        let k = TableKeys::derive(&[3u8; 32], "t").expect("keys");
        let a = k
            .seal_deterministic(&[b"t", b"ssn"], b"\"123-45-6789\"")
            .expect("seal");
        let b = k
            .seal_deterministic(&[b"t", b"ssn"], b"\"123-45-6789\"")
            .expect("seal");
        assert_eq!(a, b);
        assert_eq!(a.len(), 16 + 13);
        assert_ne!(
            a,
            k.seal_deterministic(&[b"t", b"email"], b"\"123-45-6789\"")
                .expect("seal")
        );
        assert_eq!(
            k.open_deterministic(&[b"t", b"ssn"], &a)
                .expect("open")
                .expose(),
            b"\"123-45-6789\""
        );
        assert!(k.open_deterministic(&[b"t", b"email"], &a).is_err());
        let mut bad = a.clone();
        bad[20] ^= 1;
        assert!(k.open_deterministic(&[b"t", b"ssn"], &bad).is_err());
        let other = TableKeys::derive(&[3u8; 32], "u").expect("keys");
        assert!(other.open_deterministic(&[b"t", b"ssn"], &a).is_err());
    }

    #[test]
    fn randomized_and_tag() {
        let k = TableKeys::derive(&[4u8; 32], "t").expect("keys");
        let a = k.seal_randomized(b"ctx", b"value").expect("seal");
        let b = k.seal_randomized(b"ctx", b"value").expect("seal");
        assert_ne!(a, b);
        assert_eq!(
            k.open_randomized(b"ctx", &a).expect("open").expose(),
            b"value"
        );
        assert!(k.open_randomized(b"other", &a).is_err());
        assert!(k.open_randomized(b"ctx", &a[..10]).is_err());
        let t = k.tag(b"record");
        assert!(k.verify_tag(b"record", &t));
        assert!(!k.verify_tag(b"recorc", &t));
        assert!(TableKeys::derive(&[0u8; 16], "t").is_err());
    }
}
