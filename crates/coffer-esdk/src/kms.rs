//! The AWS KMS keyrings (provider id `aws-kms`, provider info the key ARN). They speak to KMS
//! through [`KmsClient`], which the caller implements over its HTTP client, so the same keyring
//! works against Coffer or AWS.

use coffer_crypto::SecretBytes;

use crate::context::Context;
use crate::error::Error;
use crate::header::EncryptedDataKey;
use crate::keyring::{DecryptionMaterials, EncryptionMaterials, Keyring};

/// The provider id of data keys wrapped by AWS KMS.
pub const PROVIDER_ID: &str = "aws-kms";

/// The three KMS operations the keyrings use. Errors are messages for the user.
pub trait KmsClient: Send + Sync {
    /// GenerateDataKey: the plaintext key, its ciphertext blob and the ARN of the key used.
    fn generate_data_key(
        &self,
        key_id: &str,
        number_of_bytes: usize,
        context: &Context,
        grant_tokens: &[String],
    ) -> Result<(SecretBytes, Vec<u8>, String), String>;

    /// Encrypt: the ciphertext blob and the ARN of the key used.
    fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &Context,
        grant_tokens: &[String],
    ) -> Result<(Vec<u8>, String), String>;

    /// Decrypt with the key `key_id`: the plaintext and the ARN of the key used.
    fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &Context,
        grant_tokens: &[String],
    ) -> Result<(SecretBytes, String), String>;
}

/// The parts of a KMS ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsArn {
    pub partition: String,
    pub region: String,
    pub account: String,
    /// `key` or `alias`.
    pub resource_type: String,
    pub resource_id: String,
}

impl KmsArn {
    pub fn parse(s: &str) -> Option<KmsArn> {
        let mut parts = s.splitn(6, ':');
        let (arn, partition, service, region, account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if arn != "arn" || service != "kms" || partition.is_empty() || region.is_empty() {
            return None;
        }
        if account.is_empty() {
            return None;
        }
        let (resource_type, resource_id) = resource.split_once('/')?;
        if !matches!(resource_type, "key" | "alias") || resource_id.is_empty() {
            return None;
        }
        Some(KmsArn {
            partition: partition.into(),
            region: region.into(),
            account: account.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
        })
    }
}

/// A KMS keyring bound to one key: it generates or wraps with that key, and unwraps only data
/// keys that key wrapped (`key_id` must then be the key's ARN).
pub struct KmsKeyring {
    client: std::sync::Arc<dyn KmsClient>,
    key_id: String,
    grant_tokens: Vec<String>,
}

impl std::fmt::Debug for KmsKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmsKeyring({})", self.key_id)
    }
}

impl KmsKeyring {
    pub fn new(
        client: std::sync::Arc<dyn KmsClient>,
        key_id: &str,
        grant_tokens: Vec<String>,
    ) -> Result<Self, Error> {
        if key_id.is_empty() {
            return Err(Error::Options("a KMS keyring needs a key id".into()));
        }
        Ok(Self {
            client,
            key_id: key_id.into(),
            grant_tokens,
        })
    }
}

fn check_response_arn(arn: &str, what: &str) -> Result<(), Error> {
    match KmsArn::parse(arn) {
        Some(a) if a.resource_type == "key" => Ok(()),
        _ => Err(Error::Keyring(format!(
            "KMS {what} answered with '{arn}', which is not a key ARN"
        ))),
    }
}

impl Keyring for KmsKeyring {
    fn on_encrypt(&self, m: &mut EncryptionMaterials) -> Result<(), Error> {
        let n = m.suite.key_len();
        let (ciphertext, arn) = match &m.data_key {
            None => {
                let (plaintext, ciphertext, arn) = self
                    .client
                    .generate_data_key(&self.key_id, n, &m.context, &self.grant_tokens)
                    .map_err(|e| {
                        Error::Keyring(format!("KMS GenerateDataKey with {}: {e}", self.key_id))
                    })?;
                check_response_arn(&arn, "GenerateDataKey")?;
                if plaintext.len() != n {
                    return Err(Error::Keyring(format!(
                        "KMS GenerateDataKey returned {} bytes, not {n}",
                        plaintext.len()
                    )));
                }
                m.data_key = Some(plaintext);
                (ciphertext, arn)
            }
            Some(k) => {
                let (ciphertext, arn) = self
                    .client
                    .encrypt(&self.key_id, k.expose(), &m.context, &self.grant_tokens)
                    .map_err(|e| {
                        Error::Keyring(format!("KMS Encrypt with {}: {e}", self.key_id))
                    })?;
                check_response_arn(&arn, "Encrypt")?;
                (ciphertext, arn)
            }
        };
        m.encrypted_data_keys.push(EncryptedDataKey {
            provider_id: PROVIDER_ID.into(),
            provider_info: arn.into_bytes(),
            ciphertext,
        });
        Ok(())
    }

    fn on_decrypt(
        &self,
        m: &mut DecryptionMaterials,
        edks: &[EncryptedDataKey],
    ) -> Result<(), Error> {
        let mut failures = Vec::new();
        let key_id = self.key_id.as_str();
        if decrypt_first(
            self.client.as_ref(),
            &self.grant_tokens,
            m,
            edks,
            |info, _| info == key_id,
            &mut failures,
        ) {
            return Ok(());
        }
        Err(Error::NoDataKey(if failures.is_empty() {
            format!(
                "{}: the message has no data key wrapped by it",
                self.describe()
            )
        } else {
            failures.join("; ")
        }))
    }

    fn describe(&self) -> String {
        format!("KMS key {}", self.key_id)
    }
}

/// Calls KMS Decrypt for each `aws-kms` data key whose key ARN `wanted` accepts, in order, until
/// one returns a data key of the suite's length from the key the message names. Failures are
/// collected in `failures`.
fn decrypt_first(
    client: &dyn KmsClient,
    grant_tokens: &[String],
    m: &mut DecryptionMaterials,
    edks: &[EncryptedDataKey],
    mut wanted: impl FnMut(&str, &KmsArn) -> bool,
    failures: &mut Vec<String>,
) -> bool {
    for edk in edks {
        if edk.provider_id != PROVIDER_ID {
            continue;
        }
        let Ok(info) = std::str::from_utf8(&edk.provider_info) else {
            continue;
        };
        let Some(arn) = KmsArn::parse(info).filter(|a| a.resource_type == "key") else {
            continue;
        };
        if !wanted(info, &arn) {
            continue;
        }
        match client.decrypt(info, &edk.ciphertext, &m.context, grant_tokens) {
            Ok((k, got)) if got == info && k.len() == m.suite.key_len() => {
                m.data_key = Some(k);
                return true;
            }
            Ok((_, got)) => failures.push(format!("KMS Decrypt answered for {got}, not {info}")),
            Err(e) => failures.push(format!("KMS Decrypt with {info}: {e}")),
        }
    }
    false
}

/// Which KMS keys a discovery keyring may use: those of these accounts in this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryFilter {
    pub partition: String,
    pub accounts: Vec<String>,
}

/// A KMS keyring that decrypts with whichever key wrapped a data key (as the message says),
/// optionally only keys of some accounts. It cannot encrypt.
pub struct KmsDiscoveryKeyring {
    client: std::sync::Arc<dyn KmsClient>,
    filter: Option<DiscoveryFilter>,
    grant_tokens: Vec<String>,
}

impl std::fmt::Debug for KmsDiscoveryKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmsDiscoveryKeyring({:?})", self.filter)
    }
}

impl KmsDiscoveryKeyring {
    pub fn new(
        client: std::sync::Arc<dyn KmsClient>,
        filter: Option<DiscoveryFilter>,
        grant_tokens: Vec<String>,
    ) -> Result<Self, Error> {
        if let Some(f) = &filter
            && (f.partition.is_empty()
                || f.accounts.is_empty()
                || f.accounts.iter().any(String::is_empty))
        {
            return Err(Error::Options(
                "a discovery filter needs a partition and at least one account".into(),
            ));
        }
        Ok(Self {
            client,
            filter,
            grant_tokens,
        })
    }
}

impl Keyring for KmsDiscoveryKeyring {
    fn on_encrypt(&self, _m: &mut EncryptionMaterials) -> Result<(), Error> {
        Err(Error::Options(
            "a KMS discovery keyring cannot encrypt; name the KMS key to encrypt with".into(),
        ))
    }

    fn on_decrypt(
        &self,
        m: &mut DecryptionMaterials,
        edks: &[EncryptedDataKey],
    ) -> Result<(), Error> {
        let mut failures = Vec::new();
        let mut filtered = 0;
        let filter = self.filter.as_ref();
        if decrypt_first(
            self.client.as_ref(),
            &self.grant_tokens,
            m,
            edks,
            |_, arn| {
                let ok = filter.is_none_or(|f| {
                    arn.partition == f.partition && f.accounts.contains(&arn.account)
                });
                if !ok {
                    filtered += 1;
                }
                ok
            },
            &mut failures,
        ) {
            return Ok(());
        }
        if filtered > 0 {
            failures.push(format!(
                "{filtered} KMS data key(s) belong to accounts or a partition the discovery filter excludes"
            ));
        }
        Err(Error::NoDataKey(if failures.is_empty() {
            "KMS discovery: the message has no data key wrapped by a KMS key".into()
        } else {
            failures.join("; ")
        }))
    }

    fn describe(&self) -> String {
        match &self.filter {
            None => "KMS discovery".into(),
            Some(f) => format!(
                "KMS discovery ({} accounts {})",
                f.partition,
                f.accounts.join(",")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_parsing() {
        let a = KmsArn::parse("arn:aws:kms:us-east-1:111122223333:key/abc").expect("arn");
        assert_eq!(a.account, "111122223333");
        assert_eq!(a.resource_type, "key");
        assert!(KmsArn::parse("arn:aws:kms:us-east-1:111122223333:alias/x").is_some());
        assert!(KmsArn::parse("arn:aws:s3:us-east-1:111122223333:key/abc").is_none());
        assert!(KmsArn::parse("arn:aws:kms::111122223333:key/abc").is_none());
        assert!(KmsArn::parse("alias/x").is_none());
        assert!(KmsArn::parse("arn:aws:kms:us-east-1:111122223333:key/").is_none());
    }
}
