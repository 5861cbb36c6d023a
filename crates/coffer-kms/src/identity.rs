//! Access keys and the principals they belong to. Secret access keys are stored only wrapped under
//! the root key and held in memory in zeroizing buffers; SigV4 verification borrows them here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use coffer_crypto::SecretBytes;
use coffer_meta::{AccessKeyRecord, MetaStore};

use crate::root::RootOfTrust;
use crate::{KmsError, Result, now_ms};

/// Who made a request, once its signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub arn: String,
    pub account_id: String,
    pub access_key_id: String,
}

/// A usable access key, unwrapped.
#[derive(Debug)]
pub struct Credential {
    pub access_key_id: String,
    pub secret: SecretBytes,
    pub principal_arn: String,
    pub active: bool,
    /// Keys derived from the secret, by scope (SigV4 signing keys per date/region/service). They
    /// live and die with this credential, so a changed secret never meets a stale derivation.
    derived: std::sync::Mutex<Vec<(String, zeroize::Zeroizing<[u8; 32]>)>>,
}

/// How many derived keys a credential keeps (a day's scopes for a few services).
const DERIVED_CACHE: usize = 8;

impl Credential {
    /// The key derived for `scope`, computed by `derive` on first use and cached.
    pub fn derived_key(
        &self,
        scope: &str,
        derive: impl FnOnce(&[u8]) -> [u8; 32],
    ) -> zeroize::Zeroizing<[u8; 32]> {
        let mut cache = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, k)) = cache.iter().find(|(s, _)| s == scope) {
            return k.clone();
        }
        let key = zeroize::Zeroizing::new(derive(self.secret.expose()));
        if cache.len() >= DERIVED_CACHE {
            cache.remove(0);
        }
        cache.push((scope.to_owned(), key.clone()));
        key
    }
}

#[derive(Debug)]
pub struct Identities {
    meta: Arc<dyn MetaStore>,
    root: Arc<dyn RootOfTrust>,
    cache: RwLock<HashMap<String, Arc<Credential>>>,
}

pub const STATUS_ACTIVE: &str = "Active";
pub const STATUS_INACTIVE: &str = "Inactive";
pub(crate) const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn secret_aad(access_key_id: &str) -> Vec<u8> {
    format!("coffer/iam/secret-access-key/v1/{access_key_id}").into_bytes()
}

/// Draws `n` characters uniformly from `alphabet` (whose length must divide 256).
pub(crate) fn random_chars(alphabet: &[u8], n: usize) -> Result<SecretBytes> {
    debug_assert_eq!(256 % alphabet.len(), 0);
    let mut raw = coffer_crypto::random_secret(n).map_err(|e| KmsError::Internal(e.to_string()))?;
    for b in raw.expose_mut() {
        *b = alphabet[*b as usize % alphabet.len()];
    }
    Ok(raw)
}

/// Whether `s` has the shape of an access key id: 16–128 characters of `[A-Z0-9]`.
pub fn is_access_key_id(s: &str) -> bool {
    (16..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl Identities {
    pub fn new(meta: Arc<dyn MetaStore>, root: Arc<dyn RootOfTrust>) -> Self {
        Self {
            meta,
            root,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Creates a fresh access key (`AKIA…` id, 40-character secret) for `principal_arn`.
    pub async fn create_access_key(&self, principal_arn: &str) -> Result<(String, SecretBytes)> {
        let suffix = random_chars(ACCESS_KEY_ALPHABET, 16)?;
        let id = format!(
            "AKIA{}",
            std::str::from_utf8(suffix.expose()).map_err(|e| KmsError::Internal(e.to_string()))?
        );
        let secret = random_chars(SECRET_ALPHABET, 40)?;
        self.import_access_key(&id, secret.expose(), principal_arn)
            .await?;
        Ok((id, secret))
    }

    /// Stores an access key given by the operator (environment or migration from AWS), replacing
    /// any key with the same id.
    pub async fn import_access_key(
        &self,
        access_key_id: &str,
        secret: &[u8],
        principal_arn: &str,
    ) -> Result<()> {
        if !is_access_key_id(access_key_id) {
            return Err(KmsError::Validation(format!(
                "access key id '{access_key_id}' must be 16 to 128 characters of A-Z and 0-9"
            )));
        }
        if secret.len() < 16 || secret.len() > 128 {
            return Err(KmsError::Validation(
                "a secret access key must be 16 to 128 characters long".into(),
            ));
        }
        let wrapped = self
            .root
            .wrap(&secret_aad(access_key_id), secret)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        self.meta
            .put_access_key(&AccessKeyRecord {
                access_key_id: access_key_id.to_owned(),
                wrapped_secret: wrapped,
                principal_arn: principal_arn.to_owned(),
                status: STATUS_ACTIVE.to_owned(),
                created_ms: now_ms(),
            })
            .await?;
        self.write_cache().remove(access_key_id);
        Ok(())
    }

    /// Activates or deactivates an access key; the next request with it sees the change.
    pub async fn set_status(&self, access_key_id: &str, active: bool) -> Result<()> {
        let status = if active {
            STATUS_ACTIVE
        } else {
            STATUS_INACTIVE
        };
        let r = self.meta.set_access_key_status(access_key_id, status).await;
        self.write_cache().remove(access_key_id);
        r.map_err(Into::into)
    }

    /// Deletes an access key; the next request with it fails.
    pub async fn delete(&self, access_key_id: &str) -> Result<()> {
        let r = self.meta.delete_access_key(access_key_id).await;
        self.write_cache().remove(access_key_id);
        r.map_err(Into::into)
    }

    /// The credential for an access key id, if there is one.
    pub async fn credential(&self, access_key_id: &str) -> Result<Option<Arc<Credential>>> {
        if let Some(c) = self.read_cache().get(access_key_id) {
            return Ok(Some(c.clone()));
        }
        if !is_access_key_id(access_key_id) {
            return Ok(None);
        }
        let Some(rec) = self.meta.access_key(access_key_id).await? else {
            return Ok(None);
        };
        let secret = self
            .root
            .unwrap(&secret_aad(access_key_id), &rec.wrapped_secret)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        let cred = Arc::new(Credential {
            access_key_id: rec.access_key_id,
            secret,
            principal_arn: rec.principal_arn,
            active: rec.status == STATUS_ACTIVE,
            derived: std::sync::Mutex::new(Vec::new()),
        });
        self.write_cache()
            .insert(access_key_id.to_owned(), cred.clone());
        Ok(Some(cred))
    }

    /// Drops cached credentials another node may have changed.
    pub fn forget(&self, change: &coffer_meta::Change) {
        match change {
            coffer_meta::Change::AccessKey(id) => {
                self.write_cache().remove(id);
            }
            coffer_meta::Change::All => self.write_cache().clear(),
            _ => {}
        }
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Credential>>> {
        crate::read(&self.cache)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Credential>>> {
        crate::write(&self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::DevFileRoot;

    #[tokio::test]
    async fn create_import_and_look_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let (root, _) = DevFileRoot::load_or_create(&dir.path().join("root.key")).expect("root");
        let meta = Arc::new(coffer_meta::SqlStore::in_memory().expect("db"));
        let ids = Identities::new(meta.clone(), Arc::new(root));
        let (id, secret) = ids
            .create_access_key("arn:aws:iam::111122223333:root")
            .await
            .expect("create");
        assert!(id.starts_with("AKIA") && id.len() == 20 && is_access_key_id(&id));
        assert_eq!(secret.len(), 40);
        let c = ids.credential(&id).await.expect("lookup").expect("exists");
        assert_eq!(c.secret.expose(), secret.expose());
        assert!(c.active);
        // Stored wrapped, never in the clear.
        let rec = meta.access_key(&id).await.expect("row").expect("exists");
        assert!(!rec.wrapped_secret.windows(40).any(|w| w == secret.expose()));

        assert!(
            ids.credential("AKIANOSUCHKEY0000000")
                .await
                .expect("lookup")
                .is_none()
        );
        assert!(ids.credential("not an id").await.expect("lookup").is_none());
        assert!(
            ids.import_access_key("short", b"0123456789abcdef", "x")
                .await
                .is_err()
        );
    }
}
