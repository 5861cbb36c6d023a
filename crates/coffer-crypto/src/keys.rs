//! Key material of every KMS key spec: generation, loading from its stored form, and the operations
//! each spec allows (AES-GCM through [`crate::blob`], RSA-OAEP, RSA and ECDSA signatures, HMAC).
//!
//! Stored forms (always wrapped under the root key before they reach storage):
//! - `SYMMETRIC_DEFAULT`: 32 raw bytes;
//! - `HMAC_<n>`: n/8 raw bytes;
//! - RSA, ECC and Ed25519: a PKCS#8 v1 `PrivateKeyInfo` in DER;
//! - `ML_DSA_<n>`: the 32-byte seed ξ of FIPS 204 key generation.
//!
//! aws-lc-rs does all of it except two things it does not expose: Ed25519ph (RFC 8032's prehash
//! variant, `ED25519_PH_SHA_512`) comes from `ed25519-dalek`, and ML-DSA over an external μ
//! (`MessageType` `EXTERNAL_MU`) from RustCrypto's `ml-dsa`, both loaded from the same stored form.

use aws_lc_rs::encoding::{AsBigEndian, AsDer, Curve25519SeedBin, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, PqdsaKeyPair, RsaKeyPair};
use aws_lc_rs::{agreement, digest, hmac, rsa};
use ed25519_dalek::Digest as _;
use ml_dsa::signature::Keypair as _;
use ml_dsa::{MlDsa44, MlDsa65, MlDsa87, MlDsaParams};

/// ML-DSA's 64-byte message representative μ.
type Mu = ml_dsa::common::array::Array<u8, ml_dsa::common::typenum::U64>;

use crate::{CryptoError, Key256, SecretBytes};

/// The key specs Coffer creates, named as AWS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    SymmetricDefault,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EccNistP256,
    EccNistP384,
    EccNistP521,
    EccSecgP256k1,
    EccNistEdwards25519,
    Hmac224,
    Hmac256,
    Hmac384,
    Hmac512,
    MlDsa44,
    MlDsa65,
    MlDsa87,
}

/// What the `Message` of Sign and Verify holds, named as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// The message itself (hashed by the signing algorithm).
    Raw,
    /// A digest of the message, computed by the caller with the algorithm's hash.
    Digest,
    /// ML-DSA only: the 64-byte message representative μ of FIPS 204 section 6.2.
    ExternalMu,
}

/// Signing algorithms, named as AWS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    RsassaPssSha256,
    RsassaPssSha384,
    RsassaPssSha512,
    RsassaPkcs1V15Sha256,
    RsassaPkcs1V15Sha384,
    RsassaPkcs1V15Sha512,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    /// Pure Ed25519 (RFC 8032) over the message.
    Ed25519Sha512,
    /// Ed25519ph (RFC 8032 HashEdDSA): Ed25519 over the SHA-512 of the message.
    Ed25519PhSha512,
    /// ML-DSA (FIPS 204), empty context.
    MlDsaShake256,
}

/// MAC algorithms, named as AWS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    HmacSha224,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// Asymmetric encryption algorithms, named as AWS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RsaEncryptionAlgorithm {
    RsaesOaepSha1,
    RsaesOaepSha256,
}

macro_rules! aws_names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The AWS name.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }

            /// Parses an AWS name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

aws_names!(KeySpec {
    SymmetricDefault => "SYMMETRIC_DEFAULT",
    Rsa2048 => "RSA_2048",
    Rsa3072 => "RSA_3072",
    Rsa4096 => "RSA_4096",
    EccNistP256 => "ECC_NIST_P256",
    EccNistP384 => "ECC_NIST_P384",
    EccNistP521 => "ECC_NIST_P521",
    EccSecgP256k1 => "ECC_SECG_P256K1",
    EccNistEdwards25519 => "ECC_NIST_EDWARDS25519",
    Hmac224 => "HMAC_224",
    Hmac256 => "HMAC_256",
    Hmac384 => "HMAC_384",
    Hmac512 => "HMAC_512",
    MlDsa44 => "ML_DSA_44",
    MlDsa65 => "ML_DSA_65",
    MlDsa87 => "ML_DSA_87",
});

aws_names!(MessageType {
    Raw => "RAW",
    Digest => "DIGEST",
    ExternalMu => "EXTERNAL_MU",
});

aws_names!(SigningAlgorithm {
    RsassaPssSha256 => "RSASSA_PSS_SHA_256",
    RsassaPssSha384 => "RSASSA_PSS_SHA_384",
    RsassaPssSha512 => "RSASSA_PSS_SHA_512",
    RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
    RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
    RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
    EcdsaSha256 => "ECDSA_SHA_256",
    EcdsaSha384 => "ECDSA_SHA_384",
    EcdsaSha512 => "ECDSA_SHA_512",
    Ed25519Sha512 => "ED25519_SHA_512",
    Ed25519PhSha512 => "ED25519_PH_SHA_512",
    MlDsaShake256 => "ML_DSA_SHAKE_256",
});

aws_names!(MacAlgorithm {
    HmacSha224 => "HMAC_SHA_224",
    HmacSha256 => "HMAC_SHA_256",
    HmacSha384 => "HMAC_SHA_384",
    HmacSha512 => "HMAC_SHA_512",
});

/// How key material is wrapped for ImportKeyMaterial, named as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrappingAlgorithm {
    RsaesOaepSha1,
    RsaesOaepSha256,
    RsaAesKeyWrapSha1,
    RsaAesKeyWrapSha256,
}

aws_names!(WrappingAlgorithm {
    RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
    RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
    RsaAesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
    RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
});

impl WrappingAlgorithm {
    fn oaep(self) -> RsaEncryptionAlgorithm {
        match self {
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => {
                RsaEncryptionAlgorithm::RsaesOaepSha1
            }
            WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
                RsaEncryptionAlgorithm::RsaesOaepSha256
            }
        }
    }
}

aws_names!(RsaEncryptionAlgorithm {
    RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
    RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
});

const RSA_SIGNING: &[SigningAlgorithm] = &[
    SigningAlgorithm::RsassaPssSha256,
    SigningAlgorithm::RsassaPssSha384,
    SigningAlgorithm::RsassaPssSha512,
    SigningAlgorithm::RsassaPkcs1V15Sha256,
    SigningAlgorithm::RsassaPkcs1V15Sha384,
    SigningAlgorithm::RsassaPkcs1V15Sha512,
];
const RSA_ENCRYPTION: &[RsaEncryptionAlgorithm] = &[
    RsaEncryptionAlgorithm::RsaesOaepSha1,
    RsaEncryptionAlgorithm::RsaesOaepSha256,
];

impl KeySpec {
    pub fn is_rsa(self) -> bool {
        matches!(self, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
    }

    pub fn is_ecc(self) -> bool {
        matches!(
            self,
            KeySpec::EccNistP256
                | KeySpec::EccNistP384
                | KeySpec::EccNistP521
                | KeySpec::EccSecgP256k1
        )
    }

    pub fn is_hmac(self) -> bool {
        self.mac_algorithm().is_some()
    }

    pub fn is_ml_dsa(self) -> bool {
        self.ml_dsa().is_some()
    }

    pub fn is_asymmetric(self) -> bool {
        self.is_rsa() || self.is_ecc() || self == KeySpec::EccNistEdwards25519 || self.is_ml_dsa()
    }

    /// The key usages AWS allows for this spec (the first is what CreateKey assumes by default).
    pub fn key_usages(self) -> &'static [&'static str] {
        match self {
            KeySpec::SymmetricDefault => &["ENCRYPT_DECRYPT"],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                &["ENCRYPT_DECRYPT", "SIGN_VERIFY"]
            }
            KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 => {
                &["SIGN_VERIFY", "KEY_AGREEMENT"]
            }
            KeySpec::EccSecgP256k1
            | KeySpec::EccNistEdwards25519
            | KeySpec::MlDsa44
            | KeySpec::MlDsa65
            | KeySpec::MlDsa87 => &["SIGN_VERIFY"],
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                &["GENERATE_VERIFY_MAC"]
            }
        }
    }

    /// Signing algorithms of a SIGN_VERIFY key of this spec.
    pub fn signing_algorithms(self) -> &'static [SigningAlgorithm] {
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => RSA_SIGNING,
            KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => &[SigningAlgorithm::EcdsaSha256],
            KeySpec::EccNistP384 => &[SigningAlgorithm::EcdsaSha384],
            KeySpec::EccNistP521 => &[SigningAlgorithm::EcdsaSha512],
            KeySpec::EccNistEdwards25519 => &[
                SigningAlgorithm::Ed25519Sha512,
                SigningAlgorithm::Ed25519PhSha512,
            ],
            KeySpec::MlDsa44 | KeySpec::MlDsa65 | KeySpec::MlDsa87 => {
                &[SigningAlgorithm::MlDsaShake256]
            }
            _ => &[],
        }
    }

    /// Encryption algorithms of an ENCRYPT_DECRYPT RSA key of this spec.
    pub fn rsa_encryption_algorithms(self) -> &'static [RsaEncryptionAlgorithm] {
        if self.is_rsa() { RSA_ENCRYPTION } else { &[] }
    }

    pub fn mac_algorithm(self) -> Option<MacAlgorithm> {
        match self {
            KeySpec::Hmac224 => Some(MacAlgorithm::HmacSha224),
            KeySpec::Hmac256 => Some(MacAlgorithm::HmacSha256),
            KeySpec::Hmac384 => Some(MacAlgorithm::HmacSha384),
            KeySpec::Hmac512 => Some(MacAlgorithm::HmacSha512),
            _ => None,
        }
    }

    fn ecdh(self) -> Option<&'static agreement::Algorithm> {
        match self {
            KeySpec::EccNistP256 => Some(&agreement::ECDH_P256),
            KeySpec::EccNistP384 => Some(&agreement::ECDH_P384),
            KeySpec::EccNistP521 => Some(&agreement::ECDH_P521),
            _ => None,
        }
    }

    fn ml_dsa(self) -> Option<&'static signature::PqdsaSigningAlgorithm> {
        match self {
            KeySpec::MlDsa44 => Some(&signature::ML_DSA_44_SIGNING),
            KeySpec::MlDsa65 => Some(&signature::ML_DSA_65_SIGNING),
            KeySpec::MlDsa87 => Some(&signature::ML_DSA_87_SIGNING),
            _ => None,
        }
    }

    fn rsa_size(self) -> Option<rsa::KeySize> {
        match self {
            KeySpec::Rsa2048 => Some(rsa::KeySize::Rsa2048),
            KeySpec::Rsa3072 => Some(rsa::KeySize::Rsa3072),
            KeySpec::Rsa4096 => Some(rsa::KeySize::Rsa4096),
            _ => None,
        }
    }

    fn ecdsa(
        self,
    ) -> Option<(
        &'static signature::EcdsaSigningAlgorithm,
        &'static signature::EcdsaVerificationAlgorithm,
    )> {
        match self {
            KeySpec::EccNistP256 => Some((
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P256_SHA256_ASN1,
            )),
            KeySpec::EccNistP384 => Some((
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                &signature::ECDSA_P384_SHA384_ASN1,
            )),
            KeySpec::EccNistP521 => Some((
                &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
                &signature::ECDSA_P521_SHA512_ASN1,
            )),
            KeySpec::EccSecgP256k1 => Some((
                &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P256K1_SHA256_ASN1,
            )),
            _ => None,
        }
    }
}

impl SigningAlgorithm {
    /// The digest a DIGEST-type message must be, for the algorithms that take one.
    pub fn digest(self) -> Option<&'static digest::Algorithm> {
        use SigningAlgorithm as S;
        match self {
            S::RsassaPssSha256 | S::RsassaPkcs1V15Sha256 | S::EcdsaSha256 => Some(&digest::SHA256),
            S::RsassaPssSha384 | S::RsassaPkcs1V15Sha384 | S::EcdsaSha384 => Some(&digest::SHA384),
            S::RsassaPssSha512 | S::RsassaPkcs1V15Sha512 | S::EcdsaSha512 | S::Ed25519PhSha512 => {
                Some(&digest::SHA512)
            }
            S::Ed25519Sha512 | S::MlDsaShake256 => None,
        }
    }

    /// The message types the algorithm accepts.
    pub fn message_types(self) -> &'static [MessageType] {
        match self {
            SigningAlgorithm::Ed25519Sha512 => &[MessageType::Raw],
            SigningAlgorithm::Ed25519PhSha512 => &[MessageType::Digest],
            SigningAlgorithm::MlDsaShake256 => &[MessageType::Raw, MessageType::ExternalMu],
            _ => &[MessageType::Raw, MessageType::Digest],
        }
    }

    fn rsa_encoding(
        self,
    ) -> Option<(
        &'static signature::RsaSignatureEncoding,
        &'static signature::RsaParameters,
    )> {
        use SigningAlgorithm as S;
        match self {
            S::RsassaPssSha256 => Some((
                &signature::RSA_PSS_SHA256,
                &signature::RSA_PSS_2048_8192_SHA256,
            )),
            S::RsassaPssSha384 => Some((
                &signature::RSA_PSS_SHA384,
                &signature::RSA_PSS_2048_8192_SHA384,
            )),
            S::RsassaPssSha512 => Some((
                &signature::RSA_PSS_SHA512,
                &signature::RSA_PSS_2048_8192_SHA512,
            )),
            S::RsassaPkcs1V15Sha256 => Some((
                &signature::RSA_PKCS1_SHA256,
                &signature::RSA_PKCS1_2048_8192_SHA256,
            )),
            S::RsassaPkcs1V15Sha384 => Some((
                &signature::RSA_PKCS1_SHA384,
                &signature::RSA_PKCS1_2048_8192_SHA384,
            )),
            S::RsassaPkcs1V15Sha512 => Some((
                &signature::RSA_PKCS1_SHA512,
                &signature::RSA_PKCS1_2048_8192_SHA512,
            )),
            _ => None,
        }
    }
}

impl MacAlgorithm {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            MacAlgorithm::HmacSha224 => hmac::HMAC_SHA224,
            MacAlgorithm::HmacSha256 => hmac::HMAC_SHA256,
            MacAlgorithm::HmacSha384 => hmac::HMAC_SHA384,
            MacAlgorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// Longest key AWS accepts for import under the HMAC key spec of this algorithm.
    fn max_key_len(self) -> usize {
        match self {
            MacAlgorithm::HmacSha224 | MacAlgorithm::HmacSha256 => 64,
            MacAlgorithm::HmacSha384 | MacAlgorithm::HmacSha512 => 128,
        }
    }

    /// Key length in bytes of the HMAC key spec that uses this algorithm.
    fn key_len(self) -> usize {
        match self {
            MacAlgorithm::HmacSha224 => 28,
            MacAlgorithm::HmacSha256 => 32,
            MacAlgorithm::HmacSha384 => 48,
            MacAlgorithm::HmacSha512 => 64,
        }
    }
}

impl RsaEncryptionAlgorithm {
    fn oaep(self) -> &'static rsa::OaepAlgorithm {
        match self {
            RsaEncryptionAlgorithm::RsaesOaepSha1 => &rsa::OAEP_SHA1_MGF1SHA1,
            RsaEncryptionAlgorithm::RsaesOaepSha256 => &rsa::OAEP_SHA256_MGF1SHA256,
        }
    }
}

/// Generates new material for `spec`, in its stored form.
pub fn generate(spec: KeySpec) -> Result<SecretBytes, CryptoError> {
    if let Some(size) = spec.rsa_size() {
        let kp = RsaKeyPair::generate(size).map_err(|_| CryptoError::Unspecified)?;
        let der: Pkcs8V1Der<'static> = kp.as_der().map_err(|_| CryptoError::Unspecified)?;
        return Ok(SecretBytes::new(der.as_ref().to_vec()));
    }
    if let Some((alg, _)) = spec.ecdsa() {
        let kp = EcdsaKeyPair::generate(alg).map_err(|_| CryptoError::Unspecified)?;
        let doc = kp.to_pkcs8v1().map_err(|_| CryptoError::Unspecified)?;
        return Ok(SecretBytes::new(doc.as_ref().to_vec()));
    }
    if let Some(mac) = spec.mac_algorithm() {
        return crate::random_secret(mac.key_len());
    }
    if spec == KeySpec::EccNistEdwards25519 {
        let kp = Ed25519KeyPair::generate().map_err(|_| CryptoError::Unspecified)?;
        let der: Pkcs8V1Der<'static> = kp.as_der().map_err(|_| CryptoError::Unspecified)?;
        return Ok(SecretBytes::new(der.as_ref().to_vec()));
    }
    // SYMMETRIC_DEFAULT is 32 random bytes, and so is the ML-DSA seed.
    crate::random_secret(32)
}

/// Loaded key material, ready to use.
pub enum KeyMaterial {
    Symmetric(Key256),
    Hmac {
        algorithm: MacAlgorithm,
        // Boxed: aws-lc's HMAC key holds precomputed inner and outer states (~1 KiB).
        key: Box<hmac::Key>,
    },
    Rsa {
        spec: KeySpec,
        signing: RsaKeyPair,
        decrypting: rsa::OaepPrivateDecryptingKey,
        encrypting: rsa::OaepPublicEncryptingKey,
    },
    Ed25519 {
        key: Ed25519KeyPair,
        /// The same private key, for Ed25519ph.
        prehash: Box<ed25519_dalek::SigningKey>,
    },
    MlDsa {
        key: PqdsaKeyPair,
        /// The same private key, for signing over an external μ.
        mu: MlDsaMu,
    },
    Ecdsa {
        spec: KeySpec,
        key: EcdsaKeyPair,
        /// The same private key for ECDH, on the NIST curves.
        agreement: Option<agreement::PrivateKey>,
    },
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            KeyMaterial::Symmetric(_) => "Symmetric",
            KeyMaterial::Hmac { .. } => "Hmac",
            KeyMaterial::Rsa { .. } => "Rsa",
            KeyMaterial::Ecdsa { .. } => "Ecdsa",
            KeyMaterial::Ed25519 { .. } => "Ed25519",
            KeyMaterial::MlDsa { .. } => "MlDsa",
        };
        write!(f, "KeyMaterial::{kind}([redacted])")
    }
}

/// Ed25519ph (RFC 8032 section 5.1, empty context) of `message`.
fn ed25519ph_sign(key: &ed25519_dalek::SigningKey, message: &[u8]) -> Result<Vec<u8>, UseError> {
    let ph = ed25519_dalek::Sha512::new().chain_update(message);
    Ok(key
        .sign_prehashed(ph, None)
        .map_err(|_| UseError::Unspecified)?
        .to_bytes()
        .to_vec())
}

/// Checks an ECDSA signature (ASN.1 DER) of `message` with only the public key, given as DER
/// SubjectPublicKeyInfo — for verifiers that hold no private key (the audit log's digests).
pub fn verify_ecdsa_with_public_key(
    spec: KeySpec,
    spki_der: &[u8],
    message: &[u8],
    sig: &[u8],
) -> Result<bool, UseError> {
    let (_, verification) = spec.ecdsa().ok_or(UseError::WrongAlgorithm)?;
    Ok(signature::UnparsedPublicKey::new(verification, spki_der)
        .verify(message, sig)
        .is_ok())
}

/// An ML-DSA private key for signing and verifying over a μ the caller computed, which aws-lc-rs
/// does not offer.
pub enum MlDsaMu {
    D44(Box<ml_dsa::SigningKey<MlDsa44>>),
    D65(Box<ml_dsa::SigningKey<MlDsa65>>),
    D87(Box<ml_dsa::SigningKey<MlDsa87>>),
}

impl std::fmt::Debug for MlDsaMu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MlDsaMu::{:?}([redacted])", self.spec())
    }
}

fn ml_dsa_sign_mu<P: MlDsaParams>(
    key: &ml_dsa::SigningKey<P>,
    mu: &[u8],
) -> Result<Vec<u8>, UseError> {
    let mu = Mu::try_from(mu).map_err(|_| UseError::DigestLength)?;
    // Hedged signing (FIPS 204's default): fresh randomness mixed with the key and μ.
    let sig = key
        .expanded_key()
        .sign_mu_randomized(&mu, &mut ml_dsa::common::getrandom::SysRng)
        .map_err(|_| UseError::Unspecified)?;
    Ok(sig.encode().to_vec())
}

fn ml_dsa_verify_mu<P: MlDsaParams>(key: &ml_dsa::SigningKey<P>, mu: &[u8], sig: &[u8]) -> bool {
    let (Ok(mu), Ok(sig)) = (Mu::try_from(mu), ml_dsa::Signature::<P>::try_from(sig)) else {
        return false;
    };
    key.verifying_key().verify_mu(&mu, &sig)
}

impl MlDsaMu {
    fn from_seed(spec: KeySpec, seed: &[u8]) -> Result<Self, CryptoError> {
        let mut seed =
            ml_dsa::Seed::try_from(seed).map_err(|_| CryptoError::Malformed("ML-DSA seed"))?;
        let key = Self::from_array(spec, &seed);
        zeroize::Zeroize::zeroize(&mut seed);
        key
    }

    fn from_array(spec: KeySpec, seed: &ml_dsa::Seed) -> Result<Self, CryptoError> {
        Ok(match spec {
            KeySpec::MlDsa44 => MlDsaMu::D44(Box::new(ml_dsa::SigningKey::from_seed(seed))),
            KeySpec::MlDsa65 => MlDsaMu::D65(Box::new(ml_dsa::SigningKey::from_seed(seed))),
            KeySpec::MlDsa87 => MlDsaMu::D87(Box::new(ml_dsa::SigningKey::from_seed(seed))),
            _ => return Err(CryptoError::Malformed("ML-DSA seed")),
        })
    }

    fn spec(&self) -> KeySpec {
        match self {
            MlDsaMu::D44(_) => KeySpec::MlDsa44,
            MlDsaMu::D65(_) => KeySpec::MlDsa65,
            MlDsaMu::D87(_) => KeySpec::MlDsa87,
        }
    }

    fn sign(&self, mu: &[u8]) -> Result<Vec<u8>, UseError> {
        match self {
            MlDsaMu::D44(k) => ml_dsa_sign_mu(k, mu),
            MlDsaMu::D65(k) => ml_dsa_sign_mu(k, mu),
            MlDsaMu::D87(k) => ml_dsa_sign_mu(k, mu),
        }
    }

    fn verify(&self, mu: &[u8], sig: &[u8]) -> bool {
        match self {
            MlDsaMu::D44(k) => ml_dsa_verify_mu(k, mu, sig),
            MlDsaMu::D65(k) => ml_dsa_verify_mu(k, mu, sig),
            MlDsaMu::D87(k) => ml_dsa_verify_mu(k, mu, sig),
        }
    }
}

/// A failed signature or MAC check, or input the algorithm cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UseError {
    /// The algorithm does not take this message type (for example a digest for pure Ed25519).
    #[error("the algorithm does not take this message type")]
    MessageType,
    /// The peer's public key is not a valid key on this key's curve.
    #[error("the public key is not a valid key for this curve")]
    BadPublicKey,
    /// The key cannot do this (wrong spec for the algorithm).
    #[error("the algorithm does not fit the key")]
    WrongAlgorithm,
    /// A DIGEST message whose length is not the algorithm's digest length.
    #[error("the digest length does not match the algorithm")]
    DigestLength,
    /// The plaintext is longer than the algorithm allows for this key size.
    #[error("the plaintext is too long for this key and algorithm")]
    TooLong,
    /// Decryption failed (wrong key, algorithm, or tampered ciphertext).
    #[error("decryption failed")]
    Decrypt,
    #[error("cryptographic operation failed")]
    Unspecified,
}

impl KeyMaterial {
    /// Loads material of `spec` from its stored form.
    pub fn load(spec: KeySpec, stored: &[u8]) -> Result<Self, CryptoError> {
        if spec.is_rsa() {
            let signing =
                RsaKeyPair::from_pkcs8(stored).map_err(|_| CryptoError::Malformed("RSA key"))?;
            let private = rsa::PrivateDecryptingKey::from_pkcs8(stored)
                .map_err(|_| CryptoError::Malformed("RSA key"))?;
            let encrypting = rsa::OaepPublicEncryptingKey::new(private.public_key())
                .map_err(|_| CryptoError::Malformed("RSA key"))?;
            let decrypting = rsa::OaepPrivateDecryptingKey::new(private)
                .map_err(|_| CryptoError::Malformed("RSA key"))?;
            return Ok(KeyMaterial::Rsa {
                spec,
                signing,
                decrypting,
                encrypting,
            });
        }
        if let Some((alg, _)) = spec.ecdsa() {
            let key = EcdsaKeyPair::from_pkcs8(alg, stored)
                .map_err(|_| CryptoError::Malformed("ECC key"))?;
            let agreement = match spec.ecdh() {
                Some(alg) => Some(
                    agreement::PrivateKey::from_private_key_der(alg, stored)
                        .map_err(|_| CryptoError::Malformed("ECC key"))?,
                ),
                None => None,
            };
            return Ok(KeyMaterial::Ecdsa {
                spec,
                key,
                agreement,
            });
        }
        if spec == KeySpec::EccNistEdwards25519 {
            let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(stored)
                .map_err(|_| CryptoError::Malformed("Ed25519 key"))?;
            let seed: Curve25519SeedBin<'static> = key
                .seed()
                .and_then(|s| s.as_be_bytes())
                .map_err(|_| CryptoError::Malformed("Ed25519 key"))?;
            let seed: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
                seed.as_ref()
                    .try_into()
                    .map_err(|_| CryptoError::Malformed("Ed25519 key"))?,
            );
            let prehash = Box::new(ed25519_dalek::SigningKey::from_bytes(&seed));
            return Ok(KeyMaterial::Ed25519 { key, prehash });
        }
        if let Some(alg) = spec.ml_dsa() {
            let key = PqdsaKeyPair::from_seed(alg, stored)
                .map_err(|_| CryptoError::Malformed("ML-DSA seed"))?;
            let mu = MlDsaMu::from_seed(spec, stored)?;
            return Ok(KeyMaterial::MlDsa { key, mu });
        }
        if let Some(algorithm) = spec.mac_algorithm() {
            // Generated keys have the spec's length; imported ones may be longer, as AWS allows.
            if stored.len() < algorithm.key_len() || stored.len() > algorithm.max_key_len() {
                return Err(CryptoError::Malformed("HMAC key"));
            }
            return Ok(KeyMaterial::Hmac {
                algorithm,
                key: Box::new(hmac::Key::new(algorithm.hmac(), stored)),
            });
        }
        Ok(KeyMaterial::Symmetric(Key256::from_slice(stored)?))
    }

    /// The AES key of a symmetric key, if this is one.
    pub fn symmetric(&self) -> Option<&Key256> {
        match self {
            KeyMaterial::Symmetric(k) => Some(k),
            _ => None,
        }
    }

    /// The DER SubjectPublicKeyInfo of an asymmetric key.
    pub fn public_key_der(&self) -> Result<Vec<u8>, UseError> {
        let der: PublicKeyX509Der<'static> = match self {
            KeyMaterial::Rsa { signing, .. } => signing.public_key().as_der(),
            KeyMaterial::Ecdsa { key, .. } => key.public_key().as_der(),
            KeyMaterial::Ed25519 { key, .. } => key.public_key().as_der(),
            KeyMaterial::MlDsa { key, .. } => key.public_key().as_der(),
            _ => return Err(UseError::WrongAlgorithm),
        }
        .map_err(|_| UseError::Unspecified)?;
        Ok(der.as_ref().to_vec())
    }

    fn digest_of(
        alg: SigningAlgorithm,
        message: &[u8],
        message_type: MessageType,
    ) -> Result<digest::Digest, UseError> {
        let hash = alg.digest().ok_or(UseError::MessageType)?;
        match message_type {
            MessageType::Raw => Ok(digest::digest(hash, message)),
            MessageType::Digest => {
                digest::Digest::import_less_safe(message, hash).map_err(|_| UseError::DigestLength)
            }
            MessageType::ExternalMu => Err(UseError::MessageType),
        }
    }

    /// Checks that `alg` belongs to this key and takes `message_type`.
    fn check(
        &self,
        alg: SigningAlgorithm,
        message_type: MessageType,
        message: &[u8],
    ) -> Result<(), UseError> {
        let spec = match self {
            KeyMaterial::Rsa { spec, .. } | KeyMaterial::Ecdsa { spec, .. } => *spec,
            KeyMaterial::Ed25519 { .. } => KeySpec::EccNistEdwards25519,
            KeyMaterial::MlDsa { mu, .. } => mu.spec(),
            _ => return Err(UseError::WrongAlgorithm),
        };
        if !spec.signing_algorithms().contains(&alg) {
            return Err(UseError::WrongAlgorithm);
        }
        if !alg.message_types().contains(&message_type) {
            return Err(UseError::MessageType);
        }
        let expected = match message_type {
            MessageType::Raw => None,
            MessageType::Digest => alg.digest().map(|d| d.output_len()),
            MessageType::ExternalMu => Some(64),
        };
        if expected.is_some_and(|n| n != message.len()) {
            return Err(UseError::DigestLength);
        }
        Ok(())
    }

    /// Signs `message`, which holds what `message_type` says: the message, a digest the caller
    /// computed with the algorithm's hash, or an ML-DSA μ.
    pub fn sign(
        &self,
        alg: SigningAlgorithm,
        message: &[u8],
        message_type: MessageType,
    ) -> Result<Vec<u8>, UseError> {
        self.check(alg, message_type, message)?;
        match self {
            KeyMaterial::Ed25519 { key, .. } if alg == SigningAlgorithm::Ed25519Sha512 => Ok(key
                .try_sign(message)
                .map_err(|_| UseError::Unspecified)?
                .as_ref()
                .to_vec()),
            // AWS hashes the submitted digest once more (FIPS 186-5 7.8.1 step 1): the signature
            // is Ed25519ph over the 64 bytes the caller sent.
            KeyMaterial::Ed25519 { prehash, .. } => ed25519ph_sign(prehash, message),
            KeyMaterial::MlDsa { key, mu } => match message_type {
                MessageType::ExternalMu => mu.sign(message),
                _ => {
                    let mut sig = vec![0u8; key.algorithm().signature_len()];
                    let n = key
                        .sign(message, &mut sig)
                        .map_err(|_| UseError::Unspecified)?;
                    sig.truncate(n);
                    Ok(sig)
                }
            },
            KeyMaterial::Rsa { signing, .. } => {
                let d = Self::digest_of(alg, message, message_type)?;
                let (encoding, _) = alg.rsa_encoding().ok_or(UseError::WrongAlgorithm)?;
                let mut sig = vec![0u8; signing.public_modulus_len()];
                signing
                    .sign_digest(encoding, &d, &mut sig)
                    .map_err(|_| UseError::Unspecified)?;
                Ok(sig)
            }
            KeyMaterial::Ecdsa { key, .. } => {
                let d = Self::digest_of(alg, message, message_type)?;
                Ok(key
                    .sign_digest(&d)
                    .map_err(|_| UseError::Unspecified)?
                    .as_ref()
                    .to_vec())
            }
            _ => Err(UseError::WrongAlgorithm),
        }
    }

    /// Checks a signature made by [`KeyMaterial::sign`] or by anyone holding the private key.
    pub fn verify(
        &self,
        alg: SigningAlgorithm,
        message: &[u8],
        message_type: MessageType,
        sig: &[u8],
    ) -> Result<bool, UseError> {
        self.check(alg, message_type, message)?;
        let ok = match self {
            KeyMaterial::Ed25519 { key, .. } if alg == SigningAlgorithm::Ed25519Sha512 => {
                signature::UnparsedPublicKey::new(&signature::ED25519, key.public_key().as_ref())
                    .verify(message, sig)
                    .is_ok()
            }
            KeyMaterial::Ed25519 { prehash, .. } => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                    return Ok(false);
                };
                let ph = ed25519_dalek::Sha512::new().chain_update(message);
                prehash
                    .verifying_key()
                    .verify_prehashed_strict(ph, None, &sig)
                    .is_ok()
            }
            KeyMaterial::MlDsa { key, mu } => match message_type {
                MessageType::ExternalMu => mu.verify(message, sig),
                _ => signature::UnparsedPublicKey::new(
                    match mu.spec() {
                        KeySpec::MlDsa44 => &signature::ML_DSA_44,
                        KeySpec::MlDsa65 => &signature::ML_DSA_65,
                        _ => &signature::ML_DSA_87,
                    },
                    key.public_key().as_ref(),
                )
                .verify(message, sig)
                .is_ok(),
            },
            KeyMaterial::Rsa { signing, .. } => {
                let d = Self::digest_of(alg, message, message_type)?;
                let (_, params) = alg.rsa_encoding().ok_or(UseError::WrongAlgorithm)?;
                signature::UnparsedPublicKey::new(params, signing.public_key().as_ref())
                    .verify_digest(&d, sig)
                    .is_ok()
            }
            KeyMaterial::Ecdsa { spec, key, .. } => {
                let d = Self::digest_of(alg, message, message_type)?;
                let (_, verification) = spec.ecdsa().ok_or(UseError::WrongAlgorithm)?;
                signature::UnparsedPublicKey::new(verification, key.public_key().as_ref())
                    .verify_digest(&d, sig)
                    .is_ok()
            }
            _ => return Err(UseError::WrongAlgorithm),
        };
        Ok(ok)
    }

    /// HMAC of `message`.
    pub fn mac(&self, alg: MacAlgorithm, message: &[u8]) -> Result<Vec<u8>, UseError> {
        match self {
            KeyMaterial::Hmac { algorithm, key } if *algorithm == alg => {
                Ok(hmac::sign(key, message).as_ref().to_vec())
            }
            _ => Err(UseError::WrongAlgorithm),
        }
    }

    /// Checks an HMAC in constant time.
    pub fn verify_mac(
        &self,
        alg: MacAlgorithm,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, UseError> {
        match self {
            KeyMaterial::Hmac { algorithm, key } if *algorithm == alg => {
                Ok(hmac::verify(key, message, mac).is_ok())
            }
            _ => Err(UseError::WrongAlgorithm),
        }
    }

    /// ECDH: the raw shared secret (the x coordinate) with a peer's DER SubjectPublicKeyInfo.
    pub fn derive_shared_secret(
        &self,
        peer_public_key_der: &[u8],
    ) -> Result<SecretBytes, UseError> {
        let KeyMaterial::Ecdsa {
            agreement: Some(private),
            ..
        } = self
        else {
            return Err(UseError::WrongAlgorithm);
        };
        let peer = agreement::UnparsedPublicKey::new(private.algorithm(), peer_public_key_der);
        agreement::agree(private, peer, UseError::BadPublicKey, |secret| {
            Ok(SecretBytes::new(secret.to_vec()))
        })
    }

    /// RSA-OAEP encryption with the public half of an RSA key.
    pub fn rsa_encrypt(
        &self,
        alg: RsaEncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, UseError> {
        let KeyMaterial::Rsa {
            encrypting: public, ..
        } = self
        else {
            return Err(UseError::WrongAlgorithm);
        };
        if plaintext.len() > public.max_plaintext_size(alg.oaep()) {
            return Err(UseError::TooLong);
        }
        let mut out = vec![0u8; public.ciphertext_size()];
        let n = public
            .encrypt(alg.oaep(), plaintext, &mut out, None)
            .map_err(|_| UseError::Unspecified)?
            .len();
        out.truncate(n);
        Ok(out)
    }

    /// RSA-OAEP decryption.
    pub fn rsa_decrypt(
        &self,
        alg: RsaEncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, UseError> {
        let KeyMaterial::Rsa { decrypting, .. } = self else {
            return Err(UseError::WrongAlgorithm);
        };
        let mut out = SecretBytes::zeroed(decrypting.min_output_size());
        let n = decrypting
            .decrypt(alg.oaep(), ciphertext, out.expose_mut(), None)
            .map_err(|_| UseError::Decrypt)?
            .len();
        out.truncate(n);
        Ok(out)
    }

    /// Opens key material wrapped for import with this RSA wrapping key: RSA-OAEP alone, or
    /// RSA-OAEP of an ephemeral AES-256 key followed by AES key wrap with padding (RFC 5649) of the
    /// material, as AWS's import procedure defines.
    pub fn unwrap_import(
        &self,
        alg: WrappingAlgorithm,
        wrapped: &[u8],
    ) -> Result<SecretBytes, UseError> {
        let KeyMaterial::Rsa { decrypting, .. } = self else {
            return Err(UseError::WrongAlgorithm);
        };
        match alg {
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaesOaepSha256 => {
                self.rsa_decrypt(alg.oaep(), wrapped)
            }
            WrappingAlgorithm::RsaAesKeyWrapSha1 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
                use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
                let n = decrypting.key_size_bytes();
                if wrapped.len() <= n {
                    return Err(UseError::Decrypt);
                }
                let (rsa_part, kwp_part) = wrapped.split_at(n);
                let aes = self.rsa_decrypt(alg.oaep(), rsa_part)?;
                if aes.len() != 32 {
                    return Err(UseError::Decrypt);
                }
                let kek = AesKek::new(&AES_256, aes.expose()).map_err(|_| UseError::Unspecified)?;
                let mut out = SecretBytes::zeroed(kwp_part.len());
                let len = kek
                    .unwrap_with_padding(kwp_part, out.expose_mut())
                    .map_err(|_| UseError::Decrypt)?
                    .len();
                out.truncate(len);
                Ok(out)
            }
        }
    }

    /// Largest plaintext RSA-OAEP accepts for this key and algorithm.
    pub fn rsa_max_plaintext(&self, alg: RsaEncryptionAlgorithm) -> Option<usize> {
        let KeyMaterial::Rsa { encrypting, .. } = self else {
            return None;
        };
        Some(encrypting.max_plaintext_size(alg.oaep()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signing_spec_signs_and_verifies_raw_and_digest() {
        for spec in [
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
            KeySpec::EccSecgP256k1,
            KeySpec::Rsa2048,
        ] {
            let stored = generate(spec).expect("generate");
            let m = KeyMaterial::load(spec, stored.expose()).expect("load");
            assert!(!m.public_key_der().expect("spki").is_empty());
            for &alg in spec.signing_algorithms() {
                let sig = m.sign(alg, b"message", MessageType::Raw).expect("sign");
                assert!(
                    m.verify(alg, b"message", MessageType::Raw, &sig)
                        .expect("verify"),
                    "{spec:?} {alg:?}"
                );
                assert!(
                    !m.verify(alg, b"messagE", MessageType::Raw, &sig)
                        .expect("verify")
                );
                let d = digest::digest(alg.digest().expect("hash"), b"message");
                assert!(
                    m.verify(alg, d.as_ref(), MessageType::Digest, &sig)
                        .expect("digest verify"),
                    "{spec:?} {alg:?} digest"
                );
                let sig2 = m
                    .sign(alg, d.as_ref(), MessageType::Digest)
                    .expect("sign digest");
                assert!(
                    m.verify(alg, b"message", MessageType::Raw, &sig2)
                        .expect("verify")
                );
                assert_eq!(
                    m.sign(alg, b"short", MessageType::Digest).unwrap_err(),
                    UseError::DigestLength
                );
            }
            let wrong = if spec.is_rsa() {
                SigningAlgorithm::EcdsaSha256
            } else {
                SigningAlgorithm::RsassaPssSha256
            };
            assert_eq!(
                m.sign(wrong, b"m", MessageType::Raw).unwrap_err(),
                UseError::WrongAlgorithm
            );
        }
    }

    #[test]
    fn ed25519_signs_messages_not_digests() {
        let stored = generate(KeySpec::EccNistEdwards25519).expect("generate");
        let m = KeyMaterial::load(KeySpec::EccNistEdwards25519, stored.expose()).expect("load");
        let alg = SigningAlgorithm::Ed25519Sha512;
        let sig = m.sign(alg, b"message", MessageType::Raw).expect("sign");
        assert_eq!(sig.len(), 64);
        assert!(
            m.verify(alg, b"message", MessageType::Raw, &sig)
                .expect("verify")
        );
        assert!(
            !m.verify(alg, b"messagE", MessageType::Raw, &sig)
                .expect("verify")
        );
        assert_eq!(
            m.sign(alg, &[0; 64], MessageType::Digest).unwrap_err(),
            UseError::MessageType
        );
        assert_eq!(
            m.sign(SigningAlgorithm::EcdsaSha256, b"m", MessageType::Raw)
                .unwrap_err(),
            UseError::WrongAlgorithm
        );
        assert_eq!(m.public_key_der().expect("spki").len(), 44);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn ed25519ph_matches_rfc8032_and_takes_digests_only() {
        // RFC 8032 section 7.3, test "abc", loaded from the PKCS#8 form Coffer stores.
        let mut pkcs8 = hex("302e020100300506032b657004220420");
        pkcs8.extend(hex(
            "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        ));
        let m = KeyMaterial::load(KeySpec::EccNistEdwards25519, &pkcs8).expect("load");
        let KeyMaterial::Ed25519 { key, prehash } = &m else {
            panic!("not Ed25519");
        };
        assert_eq!(
            prehash.verifying_key().as_bytes().as_slice(),
            key.public_key().as_ref(),
            "both libraries derive the same public key"
        );
        assert_eq!(
            ed25519ph_sign(prehash, b"abc").expect("sign"),
            hex(
                "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41\
                 31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
            )
        );
        let alg = SigningAlgorithm::Ed25519PhSha512;
        let digest = [7u8; 64];
        let sig = m.sign(alg, &digest, MessageType::Digest).expect("sign");
        assert!(
            m.verify(alg, &digest, MessageType::Digest, &sig)
                .expect("verify")
        );
        assert!(
            !m.verify(alg, &[8u8; 64], MessageType::Digest, &sig)
                .expect("verify")
        );
        assert!(
            !m.verify(alg, &digest, MessageType::Digest, &sig[..63])
                .expect("verify")
        );
        assert_eq!(
            m.sign(alg, b"raw", MessageType::Raw).unwrap_err(),
            UseError::MessageType
        );
        assert_eq!(
            m.sign(alg, &[0; 32], MessageType::Digest).unwrap_err(),
            UseError::DigestLength
        );
    }

    #[test]
    fn ml_dsa_signs_raw_and_external_mu() {
        for spec in [KeySpec::MlDsa44, KeySpec::MlDsa65, KeySpec::MlDsa87] {
            let stored = generate(spec).expect("generate");
            assert_eq!(stored.len(), 32);
            let m = KeyMaterial::load(spec, stored.expose()).expect("load");
            let KeyMaterial::MlDsa { key, mu } = &m else {
                panic!("not ML-DSA");
            };
            let mu_public = match mu {
                MlDsaMu::D44(k) => k.verifying_key().encode().to_vec(),
                MlDsaMu::D65(k) => k.verifying_key().encode().to_vec(),
                MlDsaMu::D87(k) => k.verifying_key().encode().to_vec(),
            };
            assert_eq!(
                mu_public,
                key.public_key().as_ref(),
                "{spec:?}: both libraries derive the same key from the seed"
            );
            let alg = SigningAlgorithm::MlDsaShake256;
            let sig = m.sign(alg, b"message", MessageType::Raw).expect("sign");
            assert!(
                m.verify(alg, b"message", MessageType::Raw, &sig)
                    .expect("verify")
            );
            assert!(
                !m.verify(alg, b"messagE", MessageType::Raw, &sig)
                    .expect("verify")
            );
            let mu_value = [0x42u8; 64];
            let sig = m
                .sign(alg, &mu_value, MessageType::ExternalMu)
                .expect("sign mu");
            assert!(
                m.verify(alg, &mu_value, MessageType::ExternalMu, &sig)
                    .expect("verify")
            );
            assert!(
                !m.verify(alg, &[0x43; 64], MessageType::ExternalMu, &sig)
                    .expect("verify")
            );
            assert!(
                !m.verify(alg, &mu_value, MessageType::ExternalMu, &sig[1..])
                    .expect("verify")
            );
            assert_eq!(
                m.sign(alg, &[0; 63], MessageType::ExternalMu).unwrap_err(),
                UseError::DigestLength
            );
            assert_eq!(
                m.sign(alg, &[0; 32], MessageType::Digest).unwrap_err(),
                UseError::MessageType
            );
            assert!(m.public_key_der().expect("spki").len() > 1000);
        }
    }

    #[test]
    fn ecdsa_verifies_with_the_public_key_alone() {
        let stored = generate(KeySpec::EccNistP384).expect("generate");
        let m = KeyMaterial::load(KeySpec::EccNistP384, stored.expose()).expect("load");
        let spki = m.public_key_der().expect("spki");
        let sig = m
            .sign(SigningAlgorithm::EcdsaSha384, b"chain", MessageType::Raw)
            .expect("sign");
        let check = |msg: &[u8], sig: &[u8]| {
            verify_ecdsa_with_public_key(KeySpec::EccNistP384, &spki, msg, sig).expect("verify")
        };
        assert!(check(b"chain", &sig));
        assert!(!check(b"chaiN", &sig));
        assert!(!check(b"chain", &sig[1..]));
        assert!(
            !verify_ecdsa_with_public_key(KeySpec::EccNistP256, &spki, b"chain", &sig)
                .expect("verify")
        );
    }

    #[test]
    fn hmac_and_rsa_encryption() {
        let stored = generate(KeySpec::Hmac384).expect("generate");
        assert_eq!(stored.len(), 48);
        let m = KeyMaterial::load(KeySpec::Hmac384, stored.expose()).expect("load");
        let tag = m.mac(MacAlgorithm::HmacSha384, b"data").expect("mac");
        assert_eq!(tag.len(), 48);
        assert!(
            m.verify_mac(MacAlgorithm::HmacSha384, b"data", &tag)
                .expect("verify")
        );
        assert!(
            !m.verify_mac(MacAlgorithm::HmacSha384, b"datA", &tag)
                .expect("verify")
        );
        assert_eq!(
            m.mac(MacAlgorithm::HmacSha256, b"data").unwrap_err(),
            UseError::WrongAlgorithm
        );

        let stored = generate(KeySpec::Rsa2048).expect("generate");
        let m = KeyMaterial::load(KeySpec::Rsa2048, stored.expose()).expect("load");
        for alg in RsaEncryptionAlgorithm::ALL {
            let ct = m.rsa_encrypt(*alg, b"secret").expect("encrypt");
            assert_eq!(ct.len(), 256);
            assert_eq!(
                m.rsa_decrypt(*alg, &ct).expect("decrypt").expose(),
                b"secret"
            );
            let other = if *alg == RsaEncryptionAlgorithm::RsaesOaepSha1 {
                RsaEncryptionAlgorithm::RsaesOaepSha256
            } else {
                RsaEncryptionAlgorithm::RsaesOaepSha1
            };
            assert!(m.rsa_decrypt(other, &ct).is_err());
        }
        let max = m
            .rsa_max_plaintext(RsaEncryptionAlgorithm::RsaesOaepSha256)
            .expect("rsa");
        assert_eq!(max, 256 - 2 * 32 - 2);
        assert_eq!(
            m.rsa_encrypt(RsaEncryptionAlgorithm::RsaesOaepSha256, &vec![0; max + 1])
                .unwrap_err(),
            UseError::TooLong
        );
    }

    #[test]
    fn ecdh_agrees_with_a_peer() {
        let stored = generate(KeySpec::EccNistP384).expect("generate");
        let ours = KeyMaterial::load(KeySpec::EccNistP384, stored.expose()).expect("load");
        let peer_stored = generate(KeySpec::EccNistP384).expect("generate");
        let peer = KeyMaterial::load(KeySpec::EccNistP384, peer_stored.expose()).expect("load");
        let a = ours
            .derive_shared_secret(&peer.public_key_der().expect("spki"))
            .expect("agree");
        let b = peer
            .derive_shared_secret(&ours.public_key_der().expect("spki"))
            .expect("agree");
        assert_eq!(a.expose(), b.expose());
        assert_eq!(a.len(), 48);
        let p256 = KeyMaterial::load(
            KeySpec::EccNistP256,
            generate(KeySpec::EccNistP256).expect("g").expose(),
        )
        .expect("load");
        assert_eq!(
            ours.derive_shared_secret(&p256.public_key_der().expect("spki"))
                .unwrap_err(),
            UseError::BadPublicKey
        );
        assert_eq!(
            ours.derive_shared_secret(b"junk").unwrap_err(),
            UseError::BadPublicKey
        );
    }

    #[test]
    fn names_round_trip() {
        for s in KeySpec::ALL {
            assert_eq!(KeySpec::parse(s.as_str()), Some(*s));
        }
        for a in SigningAlgorithm::ALL {
            assert_eq!(SigningAlgorithm::parse(a.as_str()), Some(*a));
        }
        assert_eq!(KeySpec::parse("SM2"), None);
    }

    #[test]
    fn stored_forms_are_checked() {
        assert!(KeyMaterial::load(KeySpec::Hmac256, &[0; 31]).is_err());
        assert!(KeyMaterial::load(KeySpec::Hmac256, &[0; 65]).is_err());
        assert!(KeyMaterial::load(KeySpec::Hmac256, &[0; 64]).is_ok());
        assert!(KeyMaterial::load(KeySpec::EccNistP256, b"not der").is_err());
        assert!(KeyMaterial::load(KeySpec::Rsa2048, b"not der").is_err());
        assert!(KeyMaterial::load(KeySpec::SymmetricDefault, &[0; 16]).is_err());
    }
}
