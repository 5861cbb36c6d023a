//! The primitives the AWS Encryption SDK message format is built from, for `coffer-esdk`: AES-GCM
//! with 128-, 192- and 256-bit keys, HKDF over SHA-256/384/512, ECDSA over P-256/P-384 signing a
//! running digest (public keys as compressed points), and RSA encryption with OAEP or PKCS #1 v1.5
//! padding for the raw RSA keyring.

use aws_lc_rs::{aead, digest, hkdf, rsa, signature};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

use crate::{CryptoError, SecretBytes};

/// Length of every AES-GCM IV the format uses.
pub const IV_LEN: usize = 12;
/// Length of every AES-GCM tag the format uses.
pub const TAG_LEN: usize = 16;

/// An AES-GCM key of 16, 24 or 32 bytes.
pub struct Gcm(aead::LessSafeKey);

impl std::fmt::Debug for Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gcm([redacted])")
    }
}

impl Gcm {
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let alg = match key.len() {
            16 => &aead::AES_128_GCM,
            24 => &aead::AES_192_GCM,
            32 => &aead::AES_256_GCM,
            _ => return Err(CryptoError::Malformed("AES-GCM key length")),
        };
        let key = aead::UnboundKey::new(alg, key).map_err(|_| CryptoError::Unspecified)?;
        Ok(Self(aead::LessSafeKey::new(key)))
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(*iv),
                aead::Aad::from(aad),
                in_out,
            )
            .map_err(|_| CryptoError::Unspecified)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place; the plaintext is the first
    /// `in_out.len() - TAG_LEN` bytes. On failure the buffer holds no plaintext.
    pub fn open(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let r = self.0.open_in_place(
            aead::Nonce::assume_unique_for_key(*iv),
            aead::Aad::from(aad),
            in_out,
        );
        if r.is_err() {
            in_out.fill(0);
            return Err(CryptoError::Decrypt);
        }
        Ok(())
    }
}

/// The hash an HKDF or a signature runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF (RFC 5869) of `ikm` into `len` bytes. An empty `salt` means the hash length of zeros, as
/// the RFC says.
pub fn hkdf(
    hash: Hash,
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
    len: usize,
) -> Result<SecretBytes, CryptoError> {
    let alg = match hash {
        Hash::Sha256 => hkdf::HKDF_SHA256,
        Hash::Sha384 => hkdf::HKDF_SHA384,
        Hash::Sha512 => hkdf::HKDF_SHA512,
    };
    let prk = hkdf::Salt::new(alg, salt).extract(ikm);
    let okm = prk
        .expand(info, Len(len))
        .map_err(|_| CryptoError::Unspecified)?;
    let mut out = SecretBytes::zeroed(len);
    okm.fill(out.expose_mut())
        .map_err(|_| CryptoError::Unspecified)?;
    Ok(out)
}

/// A running hash of everything a signature covers.
pub struct Hasher(digest::Context);

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    pub fn new(curve: Curve) -> Self {
        Self(digest::Context::new(match curve {
            Curve::P256 => &digest::SHA256,
            Curve::P384 => &digest::SHA384,
        }))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish(self) -> digest::Digest {
        self.0.finish()
    }
}

/// The curves (each with its hash) of the format's signed suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// P-256 with SHA-256.
    P256,
    /// P-384 with SHA-384.
    P384,
}

impl Curve {
    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        }
    }

    /// Length of a compressed public point.
    pub fn compressed_len(self) -> usize {
        match self {
            Curve::P256 => 33,
            Curve::P384 => 49,
        }
    }
}

/// A one-message ECDSA signing key.
pub struct SigningKey {
    key: signature::EcdsaKeyPair,
    curve: Curve,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?}, [redacted])", self.curve)
    }
}

impl SigningKey {
    pub fn generate(curve: Curve) -> Result<Self, CryptoError> {
        let key = signature::EcdsaKeyPair::generate(curve.signing())
            .map_err(|_| CryptoError::Unspecified)?;
        Ok(Self { key, curve })
    }

    /// The public key as a compressed SEC 1 point.
    pub fn public_compressed(&self) -> Result<Vec<u8>, CryptoError> {
        use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
        use signature::KeyPair;
        let bin: EcPublicKeyCompressedBin<'static> = self
            .key
            .public_key()
            .as_be_bytes()
            .map_err(|_| CryptoError::Unspecified)?;
        Ok(bin.as_ref().to_vec())
    }

    /// Signs what `hasher` has seen (ASN.1 DER signature).
    pub fn sign(&self, hasher: Hasher) -> Result<Vec<u8>, CryptoError> {
        let digest = hasher.finish();
        Ok(self
            .key
            .sign_digest(&digest)
            .map_err(|_| CryptoError::Unspecified)?
            .as_ref()
            .to_vec())
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }
}

/// Checks a DER ECDSA signature over what `hasher` has seen with a compressed public point.
pub fn verify(curve: Curve, public_compressed: &[u8], hasher: Hasher, sig: &[u8]) -> bool {
    if public_compressed.len() != curve.compressed_len() {
        return false;
    }
    let digest = hasher.finish();
    signature::UnparsedPublicKey::new(curve.verification(), public_compressed)
        .verify_digest(&digest, sig)
        .is_ok()
}

/// RSA encryption paddings of the raw RSA keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaPadding {
    Pkcs1,
    OaepSha1,
    OaepSha256,
    OaepSha384,
    OaepSha512,
}

impl RsaPadding {
    /// By name: `pkcs1`, `oaep-sha1`, `oaep-sha256`, `oaep-sha384` or `oaep-sha512`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "pkcs1" => RsaPadding::Pkcs1,
            "oaep-sha1" => RsaPadding::OaepSha1,
            "oaep-sha256" => RsaPadding::OaepSha256,
            "oaep-sha384" => RsaPadding::OaepSha384,
            "oaep-sha512" => RsaPadding::OaepSha512,
            _ => return None,
        })
    }

    fn oaep(self) -> Option<&'static rsa::OaepAlgorithm> {
        match self {
            RsaPadding::Pkcs1 => None,
            RsaPadding::OaepSha1 => Some(&rsa::OAEP_SHA1_MGF1SHA1),
            RsaPadding::OaepSha256 => Some(&rsa::OAEP_SHA256_MGF1SHA256),
            RsaPadding::OaepSha384 => Some(&rsa::OAEP_SHA384_MGF1SHA384),
            RsaPadding::OaepSha512 => Some(&rsa::OAEP_SHA512_MGF1SHA512),
        }
    }
}

/// The public half of an RSA key, for wrapping data keys.
pub struct RsaPublicKey(rsa::PublicEncryptingKey);

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPublicKey({} bits)", self.0.key_size_bits())
    }
}

/// An RSA private key, for unwrapping data keys (and wrapping with its public half).
pub struct RsaPrivateKey(rsa::PrivateDecryptingKey);

impl std::fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RsaPrivateKey({} bits, [redacted])",
            self.0.key_size_bits()
        )
    }
}

impl RsaPublicKey {
    /// From PEM (`PUBLIC KEY`) or DER SubjectPublicKeyInfo.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CryptoError> {
        let der = match SubjectPublicKeyInfoDer::from_pem_slice(bytes) {
            Ok(d) => d.as_ref().to_vec(),
            Err(_) => bytes.to_vec(),
        };
        rsa::PublicEncryptingKey::from_der(&der)
            .map(Self)
            .map_err(|_| CryptoError::Malformed("RSA public key (PEM or DER SubjectPublicKeyInfo)"))
    }

    pub fn bits(&self) -> usize {
        self.0.key_size_bits()
    }

    pub fn encrypt(&self, padding: RsaPadding, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        rsa_encrypt(&self.0, padding, plaintext)
    }
}

fn rsa_encrypt(
    key: &rsa::PublicEncryptingKey,
    padding: RsaPadding,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; key.key_size_bytes()];
    let n = match padding.oaep() {
        Some(alg) => {
            let k = rsa::OaepPublicEncryptingKey::new(key.clone())
                .map_err(|_| CryptoError::Unspecified)?;
            if plaintext.len() > k.max_plaintext_size(alg) {
                return Err(CryptoError::Malformed("RSA plaintext too long for the key"));
            }
            k.encrypt(alg, plaintext, &mut out, None)
                .map_err(|_| CryptoError::Unspecified)?
                .len()
        }
        None => {
            let k = rsa::Pkcs1PublicEncryptingKey::new(key.clone())
                .map_err(|_| CryptoError::Unspecified)?;
            if plaintext.len() > k.max_plaintext_size() {
                return Err(CryptoError::Malformed("RSA plaintext too long for the key"));
            }
            k.encrypt(plaintext, &mut out)
                .map_err(|_| CryptoError::Unspecified)?
                .len()
        }
    };
    out.truncate(n);
    Ok(out)
}

impl RsaPrivateKey {
    /// From PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`) or DER PKCS #8.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CryptoError> {
        let pkcs8: Vec<u8> = match PrivateKeyDer::from_pem_slice(bytes) {
            Ok(PrivateKeyDer::Pkcs8(d)) => d.secret_pkcs8_der().to_vec(),
            Ok(PrivateKeyDer::Pkcs1(d)) => pkcs1_to_pkcs8(d.secret_pkcs1_der())?,
            Ok(_) => return Err(CryptoError::Malformed("RSA private key (not an RSA key)")),
            Err(_) => bytes.to_vec(),
        };
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map(Self)
            .map_err(|_| CryptoError::Malformed("RSA private key (PEM or DER PKCS #8)"))
    }

    pub fn bits(&self) -> usize {
        self.0.key_size_bits()
    }

    pub fn public(&self) -> RsaPublicKey {
        RsaPublicKey(self.0.public_key())
    }

    pub fn decrypt(
        &self,
        padding: RsaPadding,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        let mut out = SecretBytes::zeroed(self.0.key_size_bytes());
        let n = match padding.oaep() {
            Some(alg) => rsa::OaepPrivateDecryptingKey::new(self.0.clone())
                .map_err(|_| CryptoError::Unspecified)?
                .decrypt(alg, ciphertext, out.expose_mut(), None)
                .map_err(|_| CryptoError::Decrypt)?
                .len(),
            None => rsa::Pkcs1PrivateDecryptingKey::new(self.0.clone())
                .map_err(|_| CryptoError::Unspecified)?
                .decrypt(ciphertext, out.expose_mut())
                .map_err(|_| CryptoError::Decrypt)?
                .len(),
        };
        out.truncate(n);
        Ok(out)
    }
}

/// A PKCS #1 RSAPrivateKey as PKCS #8, the only private key form aws-lc-rs parses for RSA
/// decryption (converted by aws-lc itself).
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    let pair = rsa::KeyPair::from_der(pkcs1)
        .map_err(|_| CryptoError::Malformed("RSA private key (PKCS #1)"))?;
    let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| CryptoError::Unspecified)?;
    Ok(der.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_round_trip_every_key_size() {
        for n in [16, 24, 32] {
            let key = vec![7u8; n];
            let g = Gcm::new(&key).expect("key");
            let iv = [1u8; IV_LEN];
            let mut buf = b"hello frames".to_vec();
            let tag = g.seal(&iv, b"aad", &mut buf).expect("seal");
            buf.extend_from_slice(&tag);
            g.open(&iv, b"aad", &mut buf).expect("open");
            assert_eq!(&buf[..12], b"hello frames");
            let mut bad = buf.clone();
            bad[0] ^= 1;
            assert!(g.open(&iv, b"aad", &mut bad).is_err());
            assert!(bad.iter().all(|b| *b == 0));
        }
        assert!(Gcm::new(&[0u8; 20]).is_err());
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let okm = hkdf(Hash::Sha256, &salt, &ikm, &[&info], 42).expect("hkdf");
        assert_eq!(
            crate::digest::hex(okm.expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn ecdsa_sign_verify_compressed() {
        for curve in [Curve::P256, Curve::P384] {
            let key = SigningKey::generate(curve).expect("key");
            let public = key.public_compressed().expect("public");
            assert_eq!(public.len(), curve.compressed_len());
            let mut h = Hasher::new(curve);
            h.update(b"message");
            let sig = key.sign(h).expect("sign");
            let mut h = Hasher::new(curve);
            h.update(b"message");
            assert!(verify(curve, &public, h, &sig));
            let mut h = Hasher::new(curve);
            h.update(b"messagf");
            assert!(!verify(curve, &public, h, &sig));
        }
    }

    #[test]
    fn rsa_paddings_round_trip() {
        let key = rsa::PrivateDecryptingKey::generate(rsa::KeySize::Rsa2048).expect("rsa");
        let private = RsaPrivateKey(key);
        let public = private.public();
        for p in [
            RsaPadding::Pkcs1,
            RsaPadding::OaepSha1,
            RsaPadding::OaepSha256,
            RsaPadding::OaepSha384,
            RsaPadding::OaepSha512,
        ] {
            let c = public.encrypt(p, &[9u8; 32]).expect("encrypt");
            assert_eq!(
                private.decrypt(p, &c).expect("decrypt").expose(),
                &[9u8; 32]
            );
        }
    }
}
