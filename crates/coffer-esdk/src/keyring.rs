//! Keyrings: what wraps a message's data key on encryption and unwraps it on decryption. Raw AES
//! and raw RSA keyrings hold their wrapping key; a multi-keyring combines several; the AWS KMS
//! keyrings live in [`crate::kms`].

use coffer_crypto::SecretBytes;
use coffer_crypto::esdk::{Gcm, IV_LEN, RsaPadding, RsaPrivateKey, RsaPublicKey, TAG_LEN};

use crate::context::{self, Context};
use crate::error::Error;
use crate::header::EncryptedDataKey;
use crate::suite::Suite;

/// What a keyring works on during encryption.
pub struct EncryptionMaterials {
    pub suite: Suite,
    /// The full context, including `aws-crypto-public-key` for signed suites.
    pub context: Context,
    /// The plaintext data key, once a keyring has generated it.
    pub data_key: Option<SecretBytes>,
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
}

impl std::fmt::Debug for EncryptionMaterials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionMaterials")
            .field("suite", &self.suite)
            .field("encrypted_data_keys", &self.encrypted_data_keys)
            .finish_non_exhaustive()
    }
}

/// What a keyring works on during decryption.
pub struct DecryptionMaterials {
    pub suite: Suite,
    pub context: Context,
    pub data_key: Option<SecretBytes>,
}

impl std::fmt::Debug for DecryptionMaterials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptionMaterials")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// Wraps and unwraps data keys.
pub trait Keyring: Send + Sync {
    /// Generates the data key if there is none yet (or fails if it cannot), and adds an
    /// encrypted data key for it.
    fn on_encrypt(&self, materials: &mut EncryptionMaterials) -> Result<(), Error>;

    /// Sets the data key from the first of `edks` this keyring can unwrap. When it can unwrap
    /// none, returns [`Error::NoDataKey`] saying why (or another error for a failure that is
    /// not about the keys, such as a KMS endpoint that cannot be reached).
    fn on_decrypt(
        &self,
        materials: &mut DecryptionMaterials,
        edks: &[EncryptedDataKey],
    ) -> Result<(), Error>;

    /// A short description for messages: `raw AES key ns/name`, `KMS key arn:…`.
    fn describe(&self) -> String;
}

/// A fresh random data key of the suite's length.
pub fn generate_data_key(suite: Suite) -> Result<SecretBytes, Error> {
    Ok(coffer_crypto::random_secret(suite.key_len())?)
}

/// The data key of `m`, generated here if no keyring before made one (raw keyrings can be
/// generators).
fn data_key_or_generate(m: &mut EncryptionMaterials) -> Result<&SecretBytes, Error> {
    if m.data_key.is_none() {
        m.data_key = Some(generate_data_key(m.suite)?);
    }
    m.data_key
        .as_ref()
        .ok_or_else(|| Error::Keyring("no data key".into()))
}

/// A raw AES keyring: a 128-, 192- or 256-bit wrapping key named by a namespace (the provider
/// id) and a name; data keys are wrapped with AES-GCM under the serialized context.
pub struct RawAesKeyring {
    namespace: String,
    name: String,
    key: Gcm,
    bits: usize,
}

impl std::fmt::Debug for RawAesKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RawAesKeyring({}/{}, [redacted])",
            self.namespace, self.name
        )
    }
}

impl RawAesKeyring {
    pub fn new(namespace: &str, name: &str, key: &[u8]) -> Result<Self, Error> {
        check_namespace(namespace)?;
        let gcm = Gcm::new(key).map_err(|_| {
            Error::Options(format!(
                "a raw AES key must be 16, 24 or 32 bytes; this one is {}",
                key.len()
            ))
        })?;
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
            key: gcm,
            bits: key.len() * 8,
        })
    }

    fn info_prefix(&self) -> Vec<u8> {
        let mut v = self.name.as_bytes().to_vec();
        v.extend_from_slice(&RAW_AES_INFO_LENGTHS);
        v
    }
}

/// What follows the key name in a raw AES keyring's provider info, before the IV: the tag length
/// in bits and the IV length, as u32s.
const RAW_AES_INFO_LENGTHS: [u8; 8] = {
    let tag = ((TAG_LEN * 8) as u32).to_be_bytes();
    let iv = (IV_LEN as u32).to_be_bytes();
    [tag[0], tag[1], tag[2], tag[3], iv[0], iv[1], iv[2], iv[3]]
};

/// The key name in a raw keyring's provider info (a raw AES key's info ends with the tag
/// length, IV length and IV; a raw RSA key's is the name alone).
pub(crate) fn raw_key_name(info: &[u8]) -> &[u8] {
    let tail = RAW_AES_INFO_LENGTHS.len() + IV_LEN;
    match info.len().checked_sub(tail) {
        Some(n) if info[n..n + RAW_AES_INFO_LENGTHS.len()] == RAW_AES_INFO_LENGTHS => &info[..n],
        _ => info,
    }
}

fn check_namespace(namespace: &str) -> Result<(), Error> {
    if namespace.starts_with("aws-kms") {
        return Err(Error::Options(format!(
            "the key namespace '{namespace}' is reserved for AWS KMS; choose another"
        )));
    }
    Ok(())
}

impl Keyring for RawAesKeyring {
    fn on_encrypt(&self, m: &mut EncryptionMaterials) -> Result<(), Error> {
        let aad = context::serialize(&m.context)?;
        let mut iv = [0u8; IV_LEN];
        coffer_crypto::fill_random(&mut iv)?;
        let data_key = data_key_or_generate(m)?;
        let mut buf = data_key.expose().to_vec();
        let tag = self.key.seal(&iv, &aad, &mut buf)?;
        buf.extend_from_slice(&tag);
        let mut info = self.info_prefix();
        info.extend_from_slice(&iv);
        m.encrypted_data_keys.push(EncryptedDataKey {
            provider_id: self.namespace.clone(),
            provider_info: info,
            ciphertext: buf,
        });
        Ok(())
    }

    fn on_decrypt(
        &self,
        m: &mut DecryptionMaterials,
        edks: &[EncryptedDataKey],
    ) -> Result<(), Error> {
        let prefix = self.info_prefix();
        let aad = context::serialize(&m.context)?;
        let mut matched = 0;
        for edk in edks {
            if edk.provider_id != self.namespace
                || edk.provider_info.len() != prefix.len() + IV_LEN
                || !edk.provider_info.starts_with(&prefix)
                || edk.ciphertext.len() != m.suite.key_len() + TAG_LEN
            {
                continue;
            }
            matched += 1;
            let mut iv = [0u8; IV_LEN];
            iv.copy_from_slice(&edk.provider_info[prefix.len()..]);
            let mut buf = SecretBytes::new(edk.ciphertext.clone());
            if self.key.open(&iv, &aad, buf.expose_mut()).is_ok() {
                buf.truncate(m.suite.key_len());
                m.data_key = Some(buf);
                return Ok(());
            }
        }
        Err(not_unwrapped(
            self,
            matched,
            "wrong key material or a changed encryption context",
        ))
    }

    fn describe(&self) -> String {
        format!("raw AES-{} key {}/{}", self.bits, self.namespace, self.name)
    }
}

/// Why a raw keyring unwrapped nothing: no data key of its own, or `matched` that failed.
fn not_unwrapped(k: &dyn Keyring, matched: usize, why: &str) -> Error {
    Error::NoDataKey(if matched == 0 {
        format!(
            "{}: the message has no data key wrapped by it",
            k.describe()
        )
    } else {
        format!(
            "{}: its {matched} data key(s) did not unwrap ({why})",
            k.describe()
        )
    })
}

/// A raw RSA keyring: wraps with the public key, unwraps with the private key.
pub struct RawRsaKeyring {
    namespace: String,
    name: String,
    padding: RsaPadding,
    public: Option<RsaPublicKey>,
    private: Option<RsaPrivateKey>,
}

impl std::fmt::Debug for RawRsaKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RawRsaKeyring({}/{}, {:?})",
            self.namespace, self.name, self.padding
        )
    }
}

impl RawRsaKeyring {
    /// From a private key (which also wraps), a public key (wraps only), or both.
    pub fn new(
        namespace: &str,
        name: &str,
        padding: RsaPadding,
        public: Option<RsaPublicKey>,
        private: Option<RsaPrivateKey>,
    ) -> Result<Self, Error> {
        check_namespace(namespace)?;
        let public = match (public, &private) {
            (Some(p), _) => Some(p),
            (None, Some(k)) => Some(k.public()),
            (None, None) => {
                return Err(Error::Options(
                    "a raw RSA keyring needs a public or a private key".into(),
                ));
            }
        };
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
            padding,
            public,
            private,
        })
    }
}

impl Keyring for RawRsaKeyring {
    fn on_encrypt(&self, m: &mut EncryptionMaterials) -> Result<(), Error> {
        let Some(public) = &self.public else {
            return Err(Error::Keyring(format!(
                "{}: no public key to encrypt with",
                self.describe()
            )));
        };
        let data_key = data_key_or_generate(m)?;
        let ciphertext = public.encrypt(self.padding, data_key.expose())?;
        m.encrypted_data_keys.push(EncryptedDataKey {
            provider_id: self.namespace.clone(),
            provider_info: self.name.as_bytes().to_vec(),
            ciphertext,
        });
        Ok(())
    }

    fn on_decrypt(
        &self,
        m: &mut DecryptionMaterials,
        edks: &[EncryptedDataKey],
    ) -> Result<(), Error> {
        let Some(private) = &self.private else {
            return Err(Error::NoDataKey(format!(
                "{}: only the public key is known, which cannot decrypt",
                self.describe()
            )));
        };
        let mut matched = 0;
        for edk in edks {
            if edk.provider_id != self.namespace || edk.provider_info != self.name.as_bytes() {
                continue;
            }
            matched += 1;
            if let Ok(k) = private.decrypt(self.padding, &edk.ciphertext)
                && k.len() == m.suite.key_len()
            {
                m.data_key = Some(k);
                return Ok(());
            }
        }
        Err(not_unwrapped(self, matched, "wrong key or padding"))
    }

    fn describe(&self) -> String {
        let bits = self
            .public
            .as_ref()
            .map(|p| p.bits())
            .or(self.private.as_ref().map(|p| p.bits()))
            .unwrap_or(0);
        format!(
            "raw RSA-{bits} key {}/{} ({:?})",
            self.namespace, self.name, self.padding
        )
    }
}

/// Several keyrings as one: on encryption the first generates the data key and every one wraps
/// it; on decryption the first that unwraps a key wins.
pub struct MultiKeyring {
    keyrings: Vec<Box<dyn Keyring>>,
}

impl std::fmt::Debug for MultiKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultiKeyring({})", self.describe())
    }
}

impl MultiKeyring {
    /// `keyrings[0]` is the generator.
    pub fn new(keyrings: Vec<Box<dyn Keyring>>) -> Result<Self, Error> {
        if keyrings.is_empty() {
            return Err(Error::Options(
                "a multi-keyring needs at least one keyring".into(),
            ));
        }
        Ok(Self { keyrings })
    }
}

impl Keyring for MultiKeyring {
    fn on_encrypt(&self, m: &mut EncryptionMaterials) -> Result<(), Error> {
        for k in &self.keyrings {
            k.on_encrypt(m)?;
        }
        Ok(())
    }

    fn on_decrypt(
        &self,
        m: &mut DecryptionMaterials,
        edks: &[EncryptedDataKey],
    ) -> Result<(), Error> {
        let mut reasons = Vec::new();
        for k in &self.keyrings {
            match k.on_decrypt(m, edks) {
                Ok(()) if m.data_key.is_some() => return Ok(()),
                Ok(()) => reasons.push(format!("{}: nothing unwrapped", k.describe())),
                Err(Error::NoDataKey(r)) => reasons.push(r),
                Err(e) => reasons.push(format!("{}: {e}", k.describe())),
            }
        }
        Err(Error::NoDataKey(reasons.join("; ")))
    }

    fn describe(&self) -> String {
        self.keyrings
            .iter()
            .map(|k| k.describe())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
