//! [`Kms`]: the operations of AWS KMS for symmetric keys, over the metadata store and the root of trust.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use coffer_crypto::keys::{
    self, KeyMaterial, KeySpec, MacAlgorithm, MessageType, RsaEncryptionAlgorithm,
    SigningAlgorithm, UseError, WrappingAlgorithm,
};
use coffer_crypto::{SecretBytes, blob, context};
use coffer_meta::{
    AliasRecord, ImportTokenRecord, KeyRecord, MaterialRecord, MetaError, MetaStore,
};
use tracing::{info, warn};

use crate::model::*;
use crate::root::RootOfTrust;
use crate::{KeyRef, KmsConfig, KmsError, Result, now_ms};

const DAY_MS: i64 = 86_400_000;
/// AWS's quota of on-demand rotations per key.
pub const MAX_ON_DEMAND_ROTATIONS: usize = 10;
/// AWS's quota of tags per key.
pub const MAX_TAGS: usize = 50;
/// AWS's quota of aliases per key.
pub const MAX_ALIASES_PER_KEY: usize = 50;
pub const DEFAULT_ROTATION_DAYS: i32 = 365;
pub const DEFAULT_PENDING_WINDOW_DAYS: i32 = 30;

/// A key with its material unwrapped, as cached in memory.
#[derive(Debug)]
pub(crate) struct LoadedKey {
    pub(crate) record: KeyRecord,
    spec: KeySpec,
    /// Index `v - 1` holds material version `v`; `None` for imported material that was deleted or
    /// expired and awaits re-import.
    materials: Vec<Option<KeyMaterial>>,
    /// `KeyMaterialId` of each version, same indexing.
    material_ids: Vec<String>,
}

impl LoadedKey {
    fn current(&self) -> Result<&KeyMaterial> {
        self.record
            .current_version
            .checked_sub(1)
            .and_then(|i| self.materials.get(i as usize))
            .and_then(Option::as_ref)
            .ok_or_else(|| KmsError::Internal("current material missing".into()))
    }

    fn material_id(&self, version: u32) -> String {
        version
            .checked_sub(1)
            .and_then(|i| self.material_ids.get(i as usize))
            .cloned()
            .unwrap_or_default()
    }
}

/// Held while a read-modify-write of KMS state is under way.
pub(crate) struct WriteGuard<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    _shared: coffer_meta::ClusterLock,
}

/// The key service.
#[derive(Debug)]
pub struct Kms {
    pub(crate) cfg: KmsConfig,
    pub(crate) meta: Arc<dyn MetaStore>,
    root: Arc<dyn RootOfTrust>,
    pub(crate) policies: crate::authz::PolicyCache,
    pub(crate) identity_cache: Arc<crate::authz::IdentityPolicyCache>,
    keys: RwLock<HashMap<String, Arc<LoadedKey>>>,
    aliases: RwLock<HashMap<String, String>>,
    /// Serialises read-modify-write changes of keys and aliases on this node.
    pub(crate) writes: tokio::sync::Mutex<()>,
    /// Serialises the creation of AWS managed keys.
    managed: tokio::sync::Mutex<()>,
    /// Custom key stores' tokens (connected ones) and clusters.
    pub(crate) connections: crate::custom_key_stores::Connections,
}

pub(crate) fn material_aad(key_id: &str, version: u32) -> Vec<u8> {
    format!("coffer/kms/key-material/v1/{key_id}/{version}").into_bytes()
}

/// The public identifier of one material version (AWS's `KeyMaterialId`): 64 hex characters derived
/// from the key id and version, never from the material.
fn key_material_id_of(key_id: &str, m: &MaterialRecord) -> String {
    key_material_id(key_id, m.version)
}

pub fn key_material_id(key_id: &str, version: u32) -> String {
    let mut input = b"coffer key material id v1\0".to_vec();
    input.extend_from_slice(key_id.as_bytes());
    input.extend_from_slice(&version.to_be_bytes());
    coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(&input))
}

fn uuid_bytes(key_id: &str) -> Result<[u8; 16]> {
    uuid::Uuid::parse_str(key_id)
        .map(|u| *u.as_bytes())
        .map_err(|_| KmsError::Internal(format!("stored key id {key_id} is not a UUID")))
}

fn invalid_ciphertext() -> KmsError {
    KmsError::InvalidCiphertext(
        "The ciphertext is invalid, was altered, or does not match the encryption context.".into(),
    )
}

fn internal(e: impl std::fmt::Display) -> KmsError {
    KmsError::Internal(e.to_string())
}

/// How a key encrypts: AES-GCM blobs for symmetric keys, RSA-OAEP for RSA keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncryptionMode {
    Symmetric,
    Rsa(RsaEncryptionAlgorithm),
}

impl EncryptionMode {
    fn name(self) -> &'static str {
        match self {
            EncryptionMode::Symmetric => SYMMETRIC_DEFAULT,
            EncryptionMode::Rsa(a) => a.as_str(),
        }
    }
}

const IMPORT_TOKEN_VERSION: u8 = 1;
const IMPORT_TOKEN_VALIDITY_MS: i64 = 24 * 3_600_000;

pub(crate) fn import_key_aad(key_id: &str, token_hash: &[u8]) -> Vec<u8> {
    format!(
        "coffer/kms/import-wrapping-key/v1/{key_id}/{}",
        coffer_crypto::digest::hex(token_hash)
    )
    .into_bytes()
}

/// Identifies imported material without revealing it: SHA-256 over a label, the key id and the
/// material (at least 224 bits of secret, so the digest cannot be searched).
fn import_fingerprint(key_id: &str, material: &[u8]) -> Vec<u8> {
    let mut h = coffer_crypto::digest::Sha256::new();
    h.update(b"coffer import fingerprint v1\0");
    h.update(key_id.as_bytes());
    h.update(material);
    h.finish().to_vec()
}

/// New material for `spec`, generated on the blocking pool (RSA generation takes a while).
async fn generate_off_thread(spec: KeySpec) -> Result<SecretBytes> {
    tokio::task::spawn_blocking(move || keys::generate(spec))
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// A new asymmetric key pair: the private key (PKCS#8) and its DER SubjectPublicKeyInfo.
async fn generate_key_pair(spec: KeySpec) -> Result<(SecretBytes, Vec<u8>)> {
    let private = generate_off_thread(spec).await?;
    let public = KeyMaterial::load(spec, private.expose())
        .map_err(internal)?
        .public_key_der()
        .map_err(internal)?;
    Ok((private, public))
}

fn spec_of(rec: &KeyRecord) -> Result<KeySpec> {
    KeySpec::parse(&rec.key_spec).ok_or_else(|| {
        KmsError::Internal(format!(
            "key {} has unknown spec {}",
            rec.key_id, rec.key_spec
        ))
    })
}

fn no_context_for_asymmetric(ctx: &EncryptionContext) -> Result<()> {
    if ctx.is_empty() {
        Ok(())
    } else {
        Err(KmsError::Validation(
            "EncryptionContext is not supported for asymmetric KMS keys.".into(),
        ))
    }
}

/// The algorithm lists DescribeKey and GetPublicKey report for a key.
fn encryption_algorithms(rec: &KeyRecord) -> Vec<&'static str> {
    match KeySpec::parse(&rec.key_spec) {
        Some(KeySpec::SymmetricDefault) => vec![SYMMETRIC_DEFAULT],
        Some(spec) if rec.key_usage == ENCRYPT_DECRYPT => spec
            .rsa_encryption_algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect(),
        _ => Vec::new(),
    }
}

fn signing_algorithms(rec: &KeyRecord) -> Vec<&'static str> {
    match KeySpec::parse(&rec.key_spec) {
        Some(spec) if rec.key_usage == "SIGN_VERIFY" => spec
            .signing_algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect(),
        _ => Vec::new(),
    }
}

fn key_agreement_algorithms(rec: &KeyRecord) -> Vec<&'static str> {
    if rec.key_usage == "KEY_AGREEMENT" {
        vec!["ECDH"]
    } else {
        Vec::new()
    }
}

fn mac_algorithms(rec: &KeyRecord) -> Vec<&'static str> {
    KeySpec::parse(&rec.key_spec)
        .and_then(KeySpec::mac_algorithm)
        .map(|a| vec![a.as_str()])
        .unwrap_or_default()
}

fn check_tags(tags: &[(String, String)]) -> Result<()> {
    for (k, _) in tags {
        if k.starts_with("aws:") {
            return Err(KmsError::Tag(
                "Tags beginning with aws: are reserved.".into(),
            ));
        }
    }
    Ok(())
}

fn paginate<T, F: Fn(&T) -> String>(items: Vec<T>, truncated: bool, marker_of: F) -> Listing<T> {
    let next_marker = if truncated {
        items.last().map(&marker_of)
    } else {
        None
    };
    Listing { items, next_marker }
}

impl Kms {
    pub fn new(cfg: KmsConfig, meta: Arc<dyn MetaStore>, root: Arc<dyn RootOfTrust>) -> Self {
        Self {
            cfg,
            meta,
            root,
            policies: Default::default(),
            identity_cache: Default::default(),
            keys: RwLock::new(HashMap::new()),
            aliases: RwLock::new(HashMap::new()),
            writes: tokio::sync::Mutex::new(()),
            managed: tokio::sync::Mutex::new(()),
            connections: Default::default(),
        }
    }

    /// The identity-policy cache, shared with [`crate::Iam`] so that IAM changes clear it.
    pub fn identity_cache(&self) -> Arc<crate::authz::IdentityPolicyCache> {
        self.identity_cache.clone()
    }

    pub fn config(&self) -> &KmsConfig {
        &self.cfg
    }

    pub fn root_mode(&self) -> &'static str {
        self.root.mode()
    }

    /// The root of trust this service wraps under.
    /// The metadata store the keys live in (shared with the other services of the process).
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    pub fn root(&self) -> &Arc<dyn RootOfTrust> {
        &self.root
    }

    // ---- resolution and caching -------------------------------------------------------------

    /// Resolves a `KeyId` to a key id, following aliases.
    pub(crate) async fn resolve(&self, r: &KeyRef) -> Result<String> {
        match r {
            KeyRef::Key(id) => Ok(id.clone()),
            KeyRef::Alias(name) => {
                if let Some(id) = crate::read(&self.aliases).get(name) {
                    return Ok(id.clone());
                }
                let a = self
                    .meta
                    .alias(name)
                    .await?
                    .ok_or_else(|| self.alias_not_found(name))?;
                crate::write(&self.aliases).insert(name.clone(), a.target_key_id.clone());
                Ok(a.target_key_id)
            }
        }
    }

    fn alias_not_found(&self, name: &str) -> KmsError {
        KmsError::NotFound(format!("Alias {} is not found.", self.cfg.alias_arn(name)))
    }

    fn key_not_found(&self, key_id: &str) -> KmsError {
        KmsError::NotFound(format!("Key '{}' does not exist", self.cfg.key_arn(key_id)))
    }

    /// The key with its material, from the cache or loaded (and unwrapped) from the store.
    pub(crate) async fn loaded(&self, key_id: &str) -> Result<Arc<LoadedKey>> {
        if let Some(k) = crate::read(&self.keys).get(key_id) {
            return Ok(k.clone());
        }
        let record = self
            .meta
            .key(key_id)
            .await?
            .ok_or_else(|| self.key_not_found(key_id))?;
        let spec = spec_of(&record)?;
        let mut materials = Vec::new();
        let in_hsm = record.custom_key_store_id.is_some();
        for m in self.meta.materials(key_id).await? {
            if m.version as usize != materials.len() + 1 {
                return Err(KmsError::Internal(format!(
                    "key {key_id} has a gap in its material versions at {}",
                    m.version
                )));
            }
            // Keys in a custom key store: the material is a token object, used in place.
            if !m.imported || in_hsm {
                materials.push(None);
                continue;
            }
            let raw = self
                .root
                .unwrap(&material_aad(key_id, m.version), &m.wrapped)
                .map_err(internal)?;
            materials.push(Some(
                KeyMaterial::load(spec, raw.expose()).map_err(internal)?,
            ));
        }
        if materials.len() < record.current_version as usize {
            return Err(KmsError::Internal(format!(
                "key {key_id} names material version {} but has {}",
                record.current_version,
                materials.len()
            )));
        }
        let material_ids = (1..=materials.len() as u32)
            .map(|v| key_material_id(key_id, v))
            .collect();
        let loaded = Arc::new(LoadedKey {
            record,
            spec,
            materials,
            material_ids,
        });
        crate::write(&self.keys).insert(key_id.to_owned(), loaded.clone());
        Ok(loaded)
    }

    async fn loaded_ref(&self, r: &KeyRef) -> Result<Arc<LoadedKey>> {
        let id = self.resolve(r).await?;
        self.loaded(&id).await
    }

    /// Serialises read-modify-write changes of keys, aliases, grants and custom key stores: on
    /// this node (a local mutex), and across every node sharing the metadata store.
    pub(crate) async fn write_lock(&self) -> Result<WriteGuard<'_>> {
        let local = self.writes.lock().await;
        let shared = self.meta.cluster_lock("coffer:kms-writes").await?;
        Ok(WriteGuard {
            _local: local,
            _shared: shared,
        })
    }

    fn evict(&self, key_id: &str) {
        crate::write(&self.keys).remove(key_id);
    }

    /// Drops what another node may have changed: a key (with its policy and the aliases that
    /// point at it), an alias, identity policies, or everything.
    pub fn forget(&self, change: &coffer_meta::Change) {
        use coffer_meta::Change;
        match change {
            Change::Key(id) => {
                self.evict(id);
                self.policies.evict(id);
                crate::write(&self.aliases).retain(|_, target| target != id);
            }
            Change::Alias(name) => {
                crate::write(&self.aliases).remove(name);
            }
            Change::Iam => self.identity_cache.clear(),
            Change::All => {
                crate::write(&self.keys).clear();
                crate::write(&self.aliases).clear();
                self.policies.clear();
                self.identity_cache.clear();
            }
            Change::AccessKey(_) | Change::Bucket(_) => {}
        }
    }

    /// The current record of a key, read from the store (for changes, which must not act on a
    /// stale cache).
    async fn record_for_update(&self, r: &KeyRef) -> Result<KeyRecord> {
        let id = self.resolve(r).await?;
        self.meta
            .key(&id)
            .await?
            .ok_or_else(|| self.key_not_found(&id))
    }

    async fn store_update(&self, rec: &KeyRecord) -> Result<()> {
        self.meta.update_key(rec).await?;
        self.evict(&rec.key_id);
        Ok(())
    }

    pub(crate) fn usable(&self, rec: &KeyRecord) -> Result<()> {
        // The hot path: no ARN is formatted unless there is an error to report.
        if rec.state == state::ENABLED && rec.custom_key_store_id.is_none() {
            return Ok(());
        }
        if let Some(store) = &rec.custom_key_store_id {
            if matches!(rec.state.as_str(), state::ENABLED | state::DISABLED)
                && self.connections.token(store).is_none()
            {
                return Err(KmsError::InvalidState(format!(
                    "{} is unavailable: its custom key store {store} is not connected (ConnectCustomKeyStore).",
                    self.cfg.key_arn(&rec.key_id)
                )));
            }
            if rec.state == state::ENABLED {
                return Ok(());
            }
        }
        let arn = self.cfg.key_arn(&rec.key_id);
        match rec.state.as_str() {
            state::DISABLED => Err(KmsError::Disabled(format!("{arn} is disabled."))),
            state::PENDING_DELETION => Err(KmsError::InvalidState(format!(
                "{arn} is pending deletion."
            ))),
            state::PENDING_IMPORT => Err(KmsError::InvalidState(format!(
                "{arn} is pending import: import its key material first."
            ))),
            other => Err(KmsError::InvalidState(format!("{arn} is {other}."))),
        }
    }

    fn not_pending_deletion(&self, rec: &KeyRecord) -> Result<()> {
        if rec.state == state::PENDING_DELETION {
            return Err(KmsError::InvalidState(format!(
                "{} is pending deletion.",
                self.cfg.key_arn(&rec.key_id)
            )));
        }
        Ok(())
    }

    fn not_pending_import(&self, rec: &KeyRecord) -> Result<()> {
        if rec.state == state::PENDING_IMPORT {
            return Err(KmsError::InvalidState(format!(
                "{} is pending import: import its key material first.",
                self.cfg.key_arn(&rec.key_id)
            )));
        }
        Ok(())
    }

    fn wrong_usage(&self, rec: &KeyRecord, operation: &str) -> KmsError {
        KmsError::InvalidKeyUsage(format!(
            "{} key usage is {} which is not valid for {operation}.",
            self.cfg.key_arn(&rec.key_id),
            rec.key_usage
        ))
    }

    /// How a key encrypts for `operation`, given the caller's `EncryptionAlgorithm`.
    fn encryption_mode(
        &self,
        k: &LoadedKey,
        algorithm: Option<&str>,
        operation: &str,
    ) -> Result<EncryptionMode> {
        if k.record.key_usage != ENCRYPT_DECRYPT {
            return Err(self.wrong_usage(&k.record, operation));
        }
        let algorithm = algorithm.unwrap_or(SYMMETRIC_DEFAULT);
        match (k.spec, algorithm) {
            (KeySpec::SymmetricDefault, SYMMETRIC_DEFAULT) => Ok(EncryptionMode::Symmetric),
            (spec, name) if spec.is_rsa() => match RsaEncryptionAlgorithm::parse(name) {
                Some(a) => Ok(EncryptionMode::Rsa(a)),
                None => Err(self.wrong_algorithm(&k.record, name)),
            },
            (_, name) => Err(self.wrong_algorithm(&k.record, name)),
        }
    }

    fn wrong_algorithm(&self, rec: &KeyRecord, algorithm: &str) -> KmsError {
        KmsError::InvalidKeyUsage(format!(
            "Algorithm {algorithm} is incompatible with key spec {} of {}.",
            rec.key_spec,
            self.cfg.key_arn(&rec.key_id)
        ))
    }

    /// An enabled symmetric encryption key, for the operations that seal under one (data keys and
    /// data key pairs).
    async fn symmetric_for(&self, r: &KeyRef, operation: &str) -> Result<Arc<LoadedKey>> {
        let k = self.usable_for(r, ENCRYPT_DECRYPT, operation).await?;
        if k.spec != KeySpec::SymmetricDefault {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{} has key spec {}; {operation} needs a symmetric encryption key.",
                self.cfg.key_arn(&k.record.key_id),
                k.spec.as_str()
            )));
        }
        Ok(k)
    }

    /// The key, which must be enabled and have `usage`, for `operation`.
    async fn usable_for(&self, r: &KeyRef, usage: &str, operation: &str) -> Result<Arc<LoadedKey>> {
        let k = self.loaded_ref(r).await?;
        self.usable(&k.record)?;
        if k.record.key_usage != usage {
            return Err(self.wrong_usage(&k.record, operation));
        }
        Ok(k)
    }

    fn metadata(&self, rec: &KeyRecord) -> KeyMetadata {
        KeyMetadata {
            account_id: self.cfg.account_id.clone(),
            key_id: rec.key_id.clone(),
            arn: self.cfg.key_arn(&rec.key_id),
            creation_ms: rec.created_ms,
            enabled: rec.state == state::ENABLED,
            description: rec.description.clone(),
            key_usage: rec.key_usage.clone(),
            key_state: match &rec.custom_key_store_id {
                Some(store)
                    if matches!(rec.state.as_str(), state::ENABLED | state::DISABLED)
                        && self.connections.token(store).is_none() =>
                {
                    state::UNAVAILABLE.to_owned()
                }
                _ => rec.state.clone(),
            },
            deletion_ms: rec.deletion_ms,
            pending_window_days: rec.pending_window_days,
            origin: rec.origin.clone(),
            key_manager: rec.key_manager.clone(),
            key_spec: rec.key_spec.clone(),
            encryption_algorithms: encryption_algorithms(rec),
            signing_algorithms: signing_algorithms(rec),
            mac_algorithms: mac_algorithms(rec),
            key_agreement_algorithms: key_agreement_algorithms(rec),
            multi_region: false,
            current_key_material_id: (rec.current_version > 0)
                .then(|| key_material_id(&rec.key_id, rec.current_version)),
            expiration_model: rec.expiration_model.clone(),
            valid_to_ms: rec.valid_to_ms,
            custom_key_store_id: rec.custom_key_store_id.clone(),
            cloud_hsm_cluster_id: rec
                .custom_key_store_id
                .as_deref()
                .and_then(|s| self.connections.cluster_of(s)),
        }
    }

    async fn new_material(
        &self,
        key_id: &str,
        spec: KeySpec,
        version: u32,
        rotation_type: Option<&str>,
    ) -> Result<MaterialRecord> {
        let material = generate_off_thread(spec).await?;
        let wrapped = self
            .root
            .wrap(&material_aad(key_id, version), material.expose())
            .map_err(internal)?;
        Ok(MaterialRecord::generated(
            key_id,
            version,
            wrapped,
            now_ms(),
            rotation_type,
        ))
    }

    // ---- keys -------------------------------------------------------------------------------

    pub async fn create_key(&self, input: CreateKeyInput) -> Result<KeyMetadata> {
        let spec_name = input.key_spec.as_deref().unwrap_or(SYMMETRIC_DEFAULT);
        let usage = input.key_usage.as_deref().unwrap_or(ENCRYPT_DECRYPT);
        let origin = input.origin.as_deref().unwrap_or(ORIGIN_AWS_KMS);
        let Some(spec) = KeySpec::parse(spec_name) else {
            return Err(KmsError::UnsupportedOperation(format!(
                "KeySpec {spec_name} is not supported by this Coffer version yet."
            )));
        };
        if !spec.key_usages().contains(&usage) {
            return Err(KmsError::Validation(format!(
                "KeyUsage {usage} is not compatible with KeySpec {spec_name}. Use one of: {}.",
                spec.key_usages().join(", ")
            )));
        }
        let external = origin == ORIGIN_EXTERNAL;
        let in_hsm = origin == ORIGIN_AWS_CLOUDHSM;
        if !(origin == ORIGIN_AWS_KMS || external || in_hsm) {
            return Err(KmsError::UnsupportedOperation(format!(
                "Origin {origin} is not supported by Coffer; use AWS_KMS, EXTERNAL or AWS_CLOUDHSM."
            )));
        }
        let store_token = if in_hsm {
            let store = input.custom_key_store_id.as_deref().ok_or_else(|| {
                KmsError::Validation(
                    "Origin AWS_CLOUDHSM needs the CustomKeyStoreId of the key store to create the key in.".into(),
                )
            })?;
            if spec != KeySpec::SymmetricDefault || usage != ENCRYPT_DECRYPT {
                return Err(KmsError::UnsupportedOperation(
                    "Keys in a custom key store are SYMMETRIC_DEFAULT keys for ENCRYPT_DECRYPT."
                        .into(),
                ));
            }
            Some(self.connected_store(store, "creating a key in it").await?)
        } else {
            if input.custom_key_store_id.is_some() {
                return Err(KmsError::UnsupportedOperation(format!(
                    "A CustomKeyStoreId needs Origin AWS_CLOUDHSM (not {origin})."
                )));
            }
            None
        };
        if input.multi_region {
            return Err(KmsError::UnsupportedOperation(
                "Multi-Region keys are not supported by Coffer.".into(),
            ));
        }
        check_tags(&input.tags)?;
        let mut tags: HashMap<String, String> = HashMap::new();
        tags.extend(input.tags);
        if tags.len() > MAX_TAGS {
            return Err(KmsError::LimitExceeded(format!(
                "A key can have at most {MAX_TAGS} tags."
            )));
        }
        let key_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let policy = match &input.policy {
            None => crate::authz::default_key_policy(&self.cfg.account_id),
            Some(text) => {
                if let Some(caller) = &input.caller {
                    crate::authz::check_new_key_policy(
                        self.meta.as_ref(),
                        &self.identity_cache,
                        &self.cfg.account_id,
                        text,
                        caller,
                        &self.cfg.key_arn(&key_id),
                        input.bypass_policy_lockout_safety_check,
                    )
                    .await?;
                }
                text.clone()
            }
        };
        let rec = KeyRecord {
            key_id: key_id.clone(),
            created_ms: now_ms(),
            description: input.description.unwrap_or_default(),
            key_usage: usage.to_owned(),
            key_spec: spec.as_str().to_owned(),
            origin: origin.to_owned(),
            key_manager: if input.aws_managed { "AWS" } else { "CUSTOMER" }.to_owned(),
            state: if external {
                state::PENDING_IMPORT
            } else {
                state::ENABLED
            }
            .to_owned(),
            deletion_ms: None,
            pending_window_days: None,
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation_ms: None,
            current_version: if external { 0 } else { 1 },
            expiration_model: None,
            valid_to_ms: None,
            import_fingerprint: None,
            custom_key_store_id: store_token.as_ref().and(input.custom_key_store_id.clone()),
        };
        // A key with Origin EXTERNAL waits for the material its owner imports; a key in a custom
        // key store gets an AES key generated inside the token, which never leaves it.
        let material = if external {
            None
        } else if let Some(token) = &store_token {
            let label = crate::custom_key_stores::hsm_key_label(&key_id, 1);
            let token = token.clone();
            tokio::task::spawn_blocking(move || token.generate_aes256(&label))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Some(MaterialRecord::generated(
                &key_id,
                1,
                Vec::new(),
                now_ms(),
                None,
            ))
        } else {
            Some(self.new_material(&key_id, spec, 1, None).await?)
        };
        let mut tags: Vec<_> = tags.into_iter().collect();
        tags.sort();
        self.meta
            .create_key(&rec, material.as_ref(), &tags, &policy)
            .await?;
        info!(key_id = %key_id, "created key");
        Ok(self.metadata(&rec))
    }

    pub async fn describe_key(&self, r: &KeyRef) -> Result<KeyMetadata> {
        let k = self.loaded_ref(r).await?;
        Ok(self.metadata(&k.record))
    }

    pub async fn list_keys(
        &self,
        limit: usize,
        marker: Option<&str>,
    ) -> Result<Listing<KeyListEntry>> {
        let page = self.meta.list_keys(marker, limit).await?;
        let items = page
            .items
            .into_iter()
            .map(|k| KeyListEntry {
                key_arn: self.cfg.key_arn(&k.key_id),
                key_id: k.key_id,
            })
            .collect();
        Ok(paginate(items, page.truncated, |e: &KeyListEntry| {
            e.key_id.clone()
        }))
    }

    pub async fn update_key_description(&self, r: &KeyRef, description: String) -> Result<()> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.not_pending_deletion(&rec)?;
        rec.description = description;
        self.store_update(&rec).await
    }

    pub async fn enable_key(&self, r: &KeyRef) -> Result<()> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.not_pending_deletion(&rec)?;
        self.not_pending_import(&rec)?;
        if rec.state != state::ENABLED {
            rec.state = state::ENABLED.to_owned();
            self.store_update(&rec).await?;
            info!(key_id = %rec.key_id, "enabled key");
        }
        Ok(())
    }

    pub async fn disable_key(&self, r: &KeyRef) -> Result<()> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.not_pending_deletion(&rec)?;
        self.not_pending_import(&rec)?;
        if rec.state != state::DISABLED {
            rec.state = state::DISABLED.to_owned();
            self.store_update(&rec).await?;
            info!(key_id = %rec.key_id, "disabled key");
        }
        Ok(())
    }

    pub async fn schedule_key_deletion(
        &self,
        r: &KeyRef,
        window_days: Option<i32>,
    ) -> Result<ScheduledDeletion> {
        let days = window_days.unwrap_or(DEFAULT_PENDING_WINDOW_DAYS);
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.not_pending_deletion(&rec)?;
        let deletion_ms = now_ms() + i64::from(days) * DAY_MS;
        rec.state = state::PENDING_DELETION.to_owned();
        rec.deletion_ms = Some(deletion_ms);
        rec.pending_window_days = Some(days);
        self.store_update(&rec).await?;
        warn!(key_id = %rec.key_id, days, "key scheduled for deletion");
        Ok(ScheduledDeletion {
            key_arn: self.cfg.key_arn(&rec.key_id),
            deletion_ms,
            pending_window_days: days,
        })
    }

    pub async fn cancel_key_deletion(&self, r: &KeyRef) -> Result<String> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        if rec.state != state::PENDING_DELETION {
            return Err(KmsError::InvalidState(format!(
                "{} is not pending deletion (current KeyState: {}).",
                self.cfg.key_arn(&rec.key_id),
                rec.state
            )));
        }
        // A key that never received (or lost) its imported material goes back to waiting for it.
        rec.state = if rec.current_version == 0 {
            state::PENDING_IMPORT
        } else {
            state::DISABLED
        }
        .to_owned();
        rec.deletion_ms = None;
        rec.pending_window_days = None;
        self.store_update(&rec).await?;
        info!(key_id = %rec.key_id, state = %rec.state, "key deletion cancelled");
        Ok(self.cfg.key_arn(&rec.key_id))
    }

    // ---- cryptographic operations -----------------------------------------------------------

    /// Encrypts under the current material of `k` in the given mode.
    fn seal(
        &self,
        k: &LoadedKey,
        mode: EncryptionMode,
        ctx: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<EncryptOutput> {
        let version = k.record.current_version;
        if let Some(store) = &k.record.custom_key_store_id {
            let token = self.store_token(store, || self.cfg.key_arn(&k.record.key_id))?;
            let aad = context::encode(ctx)
                .map_err(|_| KmsError::Validation("The encryption context is too large.".into()))?;
            let mut nonce = [0u8; 12];
            coffer_crypto::fill_random(&mut nonce).map_err(internal)?;
            let header = blob::direct_header(
                blob::BlobHeader {
                    key_id: uuid_bytes(&k.record.key_id)?,
                    material_version: version,
                },
                &nonce,
            );
            let sealed = token
                .gcm_seal(
                    &crate::custom_key_stores::hsm_key_label(&k.record.key_id, version),
                    &nonce,
                    &blob::associated_data(&header, &aad),
                    plaintext,
                )
                .map_err(internal)?;
            let mut ciphertext = header.to_vec();
            ciphertext.extend_from_slice(&sealed);
            return Ok(EncryptOutput {
                ciphertext,
                key_arn: self.cfg.key_arn(&k.record.key_id),
                key_material_id: k.material_id(version),
                algorithm: mode.name(),
            });
        }
        let material = k.current()?;
        let ciphertext = match mode {
            EncryptionMode::Symmetric => {
                let key = material.symmetric().ok_or_else(|| {
                    KmsError::Internal("symmetric key without AES material".into())
                })?;
                let header = blob::BlobHeader {
                    key_id: uuid_bytes(&k.record.key_id)?,
                    material_version: version,
                };
                let aad = context::encode(ctx).map_err(|_| {
                    KmsError::Validation("The encryption context is too large.".into())
                })?;
                blob::seal(key, header, &aad, plaintext).map_err(internal)?
            }
            EncryptionMode::Rsa(alg) => {
                no_context_for_asymmetric(ctx)?;
                material.rsa_encrypt(alg, plaintext).map_err(|e| match e {
                    UseError::TooLong => KmsError::Validation(format!(
                        "The plaintext is longer than {} bytes, the most {} takes with a {} key.",
                        material.rsa_max_plaintext(alg).unwrap_or(0),
                        alg.as_str(),
                        k.spec.as_str()
                    )),
                    other => internal(other),
                })?
            }
        };
        Ok(EncryptOutput {
            ciphertext,
            key_arn: self.cfg.key_arn(&k.record.key_id),
            key_material_id: k.material_id(version),
            algorithm: mode.name(),
        })
    }

    pub async fn encrypt(
        &self,
        r: &KeyRef,
        plaintext: &[u8],
        ctx: &EncryptionContext,
        algorithm: Option<&str>,
        dry_run: bool,
    ) -> Result<EncryptOutput> {
        let k = self.loaded_ref(r).await?;
        self.usable(&k.record)?;
        let mode = self.encryption_mode(&k, algorithm, "Encrypt")?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        self.seal(&k, mode, ctx, plaintext)
    }

    /// Opens a ciphertext. `expected` is the caller's `KeyId`, if given: a symmetric blob must
    /// belong to that key, and an RSA ciphertext (which names no key) needs it.
    async fn open(
        &self,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
        expected: Option<&KeyRef>,
        algorithm: Option<&str>,
        operation: &str,
    ) -> Result<(Arc<LoadedKey>, u32, SecretBytes, EncryptionMode)> {
        if let Some(expected) = expected {
            let named = self.loaded_ref(expected).await?;
            if named.spec.is_asymmetric() {
                self.usable(&named.record)?;
                let mode = self.encryption_mode(&named, algorithm, operation)?;
                let EncryptionMode::Rsa(alg) = mode else {
                    return Err(self.wrong_algorithm(&named.record, SYMMETRIC_DEFAULT));
                };
                no_context_for_asymmetric(ctx)?;
                let plaintext = named
                    .current()?
                    .rsa_decrypt(alg, ciphertext)
                    .map_err(|_| invalid_ciphertext())?;
                let version = named.record.current_version;
                return Ok((named, version, plaintext, mode));
            }
        }
        let header = blob::peek(ciphertext).map_err(|_| invalid_ciphertext())?;
        let key_id = uuid::Uuid::from_bytes(header.key_id)
            .hyphenated()
            .to_string();
        if let Some(expected) = expected {
            let wanted = self.resolve(expected).await?;
            if wanted != key_id {
                return Err(KmsError::IncorrectKey(
                    "The key ID in the request does not identify a CMK that can perform this operation.".into(),
                ));
            }
        }
        let k = match self.loaded(&key_id).await {
            Ok(k) => k,
            // A blob naming no key we hold is as unusable as a corrupt one; say no more than that.
            Err(KmsError::NotFound(_)) => return Err(invalid_ciphertext()),
            Err(e) => return Err(e),
        };
        self.usable(&k.record)?;
        let mode = self.encryption_mode(&k, algorithm, operation)?;
        let version = header.material_version;
        if let Some(store) = &k.record.custom_key_store_id {
            let token = self.store_token(store, || self.cfg.key_arn(&k.record.key_id))?;
            let (head, nonce, sealed) = blob::split_direct(ciphertext)
                .filter(|_| version == k.record.current_version)
                .ok_or_else(invalid_ciphertext)?;
            let aad = context::encode(ctx).map_err(|_| invalid_ciphertext())?;
            let plain = token
                .gcm_open(
                    &crate::custom_key_stores::hsm_key_label(&k.record.key_id, version),
                    &nonce,
                    &blob::associated_data(head, &aad),
                    sealed,
                )
                .map_err(|e| match e {
                    coffer_hsm::HsmError::Decrypt => invalid_ciphertext(),
                    other => internal(other),
                })?;
            return Ok((k, version, SecretBytes::new(plain.to_vec()), mode));
        }
        // Only material that is or was current: never material still pending rotation.
        let material = version
            .checked_sub(1)
            .filter(|_| version <= k.record.current_version)
            .and_then(|i| k.materials.get(i as usize))
            .and_then(Option::as_ref)
            .and_then(KeyMaterial::symmetric)
            .ok_or_else(invalid_ciphertext)?;
        let aad = context::encode(ctx).map_err(|_| invalid_ciphertext())?;
        let plaintext = blob::open(material, ciphertext, &aad).map_err(|_| invalid_ciphertext())?;
        Ok((k, version, plaintext, mode))
    }

    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
        key: Option<&KeyRef>,
        algorithm: Option<&str>,
        dry_run: bool,
    ) -> Result<DecryptOutput> {
        let (k, version, plaintext, mode) = self
            .open(ciphertext, ctx, key, algorithm, "Decrypt")
            .await?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        Ok(DecryptOutput {
            plaintext,
            key_arn: self.cfg.key_arn(&k.record.key_id),
            key_material_id: k.material_id(version),
            algorithm: mode.name(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn re_encrypt(
        &self,
        ciphertext: &[u8],
        source_ctx: &EncryptionContext,
        source_key: Option<&KeyRef>,
        source_algorithm: Option<&str>,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
        destination_algorithm: Option<&str>,
        dry_run: bool,
    ) -> Result<ReEncryptOutput> {
        let (src, version, plaintext, source_mode) = self
            .open(
                ciphertext,
                source_ctx,
                source_key,
                source_algorithm,
                "ReEncrypt",
            )
            .await?;
        let dst = self.loaded_ref(destination).await?;
        self.usable(&dst.record)?;
        let mode = self.encryption_mode(&dst, destination_algorithm, "ReEncrypt")?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        let out = self.seal(&dst, mode, destination_ctx, plaintext.expose())?;
        Ok(ReEncryptOutput {
            ciphertext: out.ciphertext,
            source_key_arn: self.cfg.key_arn(&src.record.key_id),
            key_arn: out.key_arn,
            source_key_material_id: src.material_id(version),
            destination_key_material_id: out.key_material_id,
            source_algorithm: source_mode.name(),
            destination_algorithm: out.algorithm,
        })
    }

    /// GenerateDataKey (`with_plaintext`) and GenerateDataKeyWithoutPlaintext.
    pub async fn generate_data_key(
        &self,
        r: &KeyRef,
        ctx: &EncryptionContext,
        number_of_bytes: usize,
        with_plaintext: bool,
        dry_run: bool,
    ) -> Result<DataKeyOutput> {
        let operation = if with_plaintext {
            "GenerateDataKey"
        } else {
            "GenerateDataKeyWithoutPlaintext"
        };
        let k = self.symmetric_for(r, operation).await?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        let data_key = coffer_crypto::random_secret(number_of_bytes).map_err(internal)?;
        let out = self.seal(&k, EncryptionMode::Symmetric, ctx, data_key.expose())?;
        Ok(DataKeyOutput {
            plaintext: with_plaintext.then_some(data_key),
            ciphertext: out.ciphertext,
            key_arn: out.key_arn,
            key_material_id: out.key_material_id,
        })
    }

    pub fn generate_random(&self, number_of_bytes: usize) -> Result<SecretBytes> {
        coffer_crypto::random_secret(number_of_bytes).map_err(internal)
    }

    /// GetPublicKey: the DER SubjectPublicKeyInfo of an asymmetric key.
    pub async fn public_key(&self, r: &KeyRef) -> Result<PublicKeyOutput> {
        let k = self.loaded_ref(r).await?;
        self.usable(&k.record)?;
        if !k.spec.is_asymmetric() {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} is not an asymmetric key; GetPublicKey needs an RSA or ECC key.",
                self.cfg.key_arn(&k.record.key_id)
            )));
        }
        let der = k.current()?.public_key_der().map_err(internal)?;
        Ok(PublicKeyOutput {
            key_arn: self.cfg.key_arn(&k.record.key_id),
            public_key: der,
            key_spec: k.record.key_spec.clone(),
            key_usage: k.record.key_usage.clone(),
            encryption_algorithms: encryption_algorithms(&k.record),
            signing_algorithms: signing_algorithms(&k.record),
            key_agreement_algorithms: key_agreement_algorithms(&k.record),
        })
    }

    /// DeriveSharedSecret: ECDH between a KEY_AGREEMENT key and a peer's public key.
    pub async fn derive_shared_secret(
        &self,
        r: &KeyRef,
        algorithm: &str,
        peer_public_key: &[u8],
        dry_run: bool,
    ) -> Result<(SecretBytes, String, String)> {
        let k = self
            .usable_for(r, "KEY_AGREEMENT", "DeriveSharedSecret")
            .await?;
        if algorithm != "ECDH" {
            return Err(self.wrong_algorithm(&k.record, algorithm));
        }
        if dry_run {
            return Err(KmsError::DryRun);
        }
        let secret = k
            .current()?
            .derive_shared_secret(peer_public_key)
            .map_err(|e| match e {
                UseError::BadPublicKey => KmsError::Validation(format!(
                    "PublicKey is not a DER-encoded SubjectPublicKeyInfo of a {} key.",
                    k.spec.as_str()
                )),
                other => internal(other),
            })?;
        Ok((
            secret,
            self.cfg.key_arn(&k.record.key_id),
            k.record.origin.clone(),
        ))
    }

    /// GenerateDataKeyPair (`with_plaintext`) and GenerateDataKeyPairWithoutPlaintext: a fresh key
    /// pair whose private key comes back encrypted under a symmetric key.
    pub async fn generate_data_key_pair(
        &self,
        r: &KeyRef,
        ctx: &EncryptionContext,
        pair_spec: &str,
        with_plaintext: bool,
        dry_run: bool,
    ) -> Result<DataKeyPairOutput> {
        let operation = if with_plaintext {
            "GenerateDataKeyPair"
        } else {
            "GenerateDataKeyPairWithoutPlaintext"
        };
        let k = self.symmetric_for(r, operation).await?;
        let spec = KeySpec::parse(pair_spec)
            .filter(|s| s.is_asymmetric())
            .ok_or_else(|| {
                KmsError::UnsupportedOperation(format!(
                    "KeyPairSpec {pair_spec} is not supported by this Coffer version yet."
                ))
            })?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        let (private, public_key) = generate_key_pair(spec).await?;
        let sealed = self.seal(&k, EncryptionMode::Symmetric, ctx, private.expose())?;
        Ok(DataKeyPairOutput {
            private_key_plaintext: with_plaintext.then_some(private),
            private_key_ciphertext: sealed.ciphertext,
            public_key,
            key_arn: sealed.key_arn,
            key_pair_spec: spec.as_str(),
            key_material_id: sealed.key_material_id,
        })
    }

    fn signing_algorithm(&self, k: &LoadedKey, name: &str) -> Result<SigningAlgorithm> {
        SigningAlgorithm::parse(name)
            .filter(|a| k.spec.signing_algorithms().contains(a))
            .ok_or_else(|| self.wrong_algorithm(&k.record, name))
    }

    fn digest_length_error(alg: SigningAlgorithm) -> KmsError {
        KmsError::Validation(format!(
            "Digest is invalid length for algorithm {}.",
            alg.as_str()
        ))
    }

    fn signing_error(alg: SigningAlgorithm, message_type: MessageType, e: UseError) -> KmsError {
        match e {
            UseError::DigestLength if message_type == MessageType::ExternalMu => {
                KmsError::Validation(
                    "Message of type EXTERNAL_MU must be the 64-byte message representative mu."
                        .into(),
                )
            }
            UseError::DigestLength => Self::digest_length_error(alg),
            UseError::MessageType => {
                let accepted: Vec<&str> = alg.message_types().iter().map(|t| t.as_str()).collect();
                KmsError::Validation(format!(
                    "MessageType {} is not compatible with signing algorithm {}; use MessageType {}.",
                    message_type.as_str(),
                    alg.as_str(),
                    accepted.join(" or ")
                ))
            }
            other => internal(other),
        }
    }

    /// Sign: a signature over `message`, which holds what `message_type` says.
    pub async fn sign(
        &self,
        r: &KeyRef,
        message: &[u8],
        message_type: MessageType,
        algorithm: &str,
        dry_run: bool,
    ) -> Result<(Vec<u8>, String)> {
        let k = self.usable_for(r, "SIGN_VERIFY", "Sign").await?;
        let alg = self.signing_algorithm(&k, algorithm)?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        let sig = k
            .current()?
            .sign(alg, message, message_type)
            .map_err(|e| Self::signing_error(alg, message_type, e))?;
        Ok((sig, self.cfg.key_arn(&k.record.key_id)))
    }

    /// Verify: Ok with the key ARN when the signature is valid, KMSInvalidSignatureException when not.
    pub async fn verify(
        &self,
        r: &KeyRef,
        message: &[u8],
        message_type: MessageType,
        signature: &[u8],
        algorithm: &str,
        dry_run: bool,
    ) -> Result<String> {
        let k = self.usable_for(r, "SIGN_VERIFY", "Verify").await?;
        let alg = self.signing_algorithm(&k, algorithm)?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        let valid = k
            .current()?
            .verify(alg, message, message_type, signature)
            .map_err(|e| Self::signing_error(alg, message_type, e))?;
        if !valid {
            return Err(KmsError::InvalidSignature(String::new()));
        }
        Ok(self.cfg.key_arn(&k.record.key_id))
    }

    fn mac_algorithm(&self, k: &LoadedKey, name: &str) -> Result<MacAlgorithm> {
        MacAlgorithm::parse(name)
            .filter(|a| k.spec.mac_algorithm() == Some(*a))
            .ok_or_else(|| self.wrong_algorithm(&k.record, name))
    }

    /// GenerateMac: the HMAC of `message` under an HMAC key.
    pub async fn generate_mac(
        &self,
        r: &KeyRef,
        message: &[u8],
        algorithm: &str,
        dry_run: bool,
    ) -> Result<(Vec<u8>, String)> {
        let k = self
            .usable_for(r, "GENERATE_VERIFY_MAC", "GenerateMac")
            .await?;
        let alg = self.mac_algorithm(&k, algorithm)?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        let mac = k.current()?.mac(alg, message).map_err(internal)?;
        Ok((mac, self.cfg.key_arn(&k.record.key_id)))
    }

    /// VerifyMac: Ok with the key ARN when the MAC matches (compared in constant time),
    /// KMSInvalidMacException when not.
    pub async fn verify_mac(
        &self,
        r: &KeyRef,
        message: &[u8],
        mac: &[u8],
        algorithm: &str,
        dry_run: bool,
    ) -> Result<String> {
        let k = self
            .usable_for(r, "GENERATE_VERIFY_MAC", "VerifyMac")
            .await?;
        let alg = self.mac_algorithm(&k, algorithm)?;
        if dry_run {
            return Err(KmsError::DryRun);
        }
        if !k
            .current()?
            .verify_mac(alg, message, mac)
            .map_err(internal)?
        {
            return Err(KmsError::InvalidMac(String::new()));
        }
        Ok(self.cfg.key_arn(&k.record.key_id))
    }

    // ---- bring your own key -------------------------------------------------------------------

    fn external(&self, rec: &KeyRecord) -> Result<()> {
        if rec.origin != ORIGIN_EXTERNAL {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} has Origin {}; key material can be imported only into keys created with Origin EXTERNAL.",
                self.cfg.key_arn(&rec.key_id),
                rec.origin
            )));
        }
        Ok(())
    }

    /// GetParametersForImport: a fresh RSA wrapping key and the token that names it, valid 24 hours.
    pub async fn parameters_for_import(
        &self,
        r: &KeyRef,
        wrapping_algorithm: &str,
        wrapping_spec: &str,
    ) -> Result<ImportParameters> {
        let rec = self.record_for_update(r).await?;
        self.external(&rec)?;
        self.not_pending_deletion(&rec)?;
        let alg = WrappingAlgorithm::parse(wrapping_algorithm).ok_or_else(|| {
            KmsError::UnsupportedOperation(format!(
                "WrappingAlgorithm {wrapping_algorithm} is not supported by this Coffer version."
            ))
        })?;
        let spec = match wrapping_spec {
            "RSA_2048" => KeySpec::Rsa2048,
            "RSA_3072" => KeySpec::Rsa3072,
            "RSA_4096" => KeySpec::Rsa4096,
            other => {
                return Err(KmsError::UnsupportedOperation(format!(
                    "WrappingKeySpec {other} is not supported by this Coffer version."
                )));
            }
        };
        let (private, public_key) = generate_key_pair(spec).await?;
        let mut token = vec![IMPORT_TOKEN_VERSION];
        token.extend_from_slice(coffer_crypto::random_secret(32).map_err(internal)?.expose());
        let token_hash = coffer_crypto::digest::sha256(&token).to_vec();
        let wrapped_private = self
            .root
            .wrap(&import_key_aad(&rec.key_id, &token_hash), private.expose())
            .map_err(internal)?;
        let valid_to_ms = now_ms() + IMPORT_TOKEN_VALIDITY_MS;
        self.meta
            .delete_import_tokens(&rec.key_id, Some(now_ms()))
            .await?;
        self.meta
            .put_import_token(&ImportTokenRecord {
                token_hash,
                key_id: rec.key_id.clone(),
                wrapping_alg: alg.as_str().to_owned(),
                wrapping_spec: spec.as_str().to_owned(),
                wrapped_private,
                valid_to_ms,
            })
            .await?;
        Ok(ImportParameters {
            key_arn: self.cfg.key_arn(&rec.key_id),
            import_token: token,
            public_key,
            valid_to_ms,
        })
    }

    /// ImportKeyMaterial: opens material wrapped with a key from GetParametersForImport and
    /// associates it with the key. `EXISTING_KEY_MATERIAL` (the default) imports the first material,
    /// or re-imports material the key already had (found by `KeyMaterialId` or by the material
    /// itself); `NEW_KEY_MATERIAL` adds material to a symmetric key for RotateKeyOnDemand.
    pub async fn import_key_material(
        &self,
        r: &KeyRef,
        input: ImportInput<'_>,
    ) -> Result<(String, String)> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.external(&rec)?;
        self.not_pending_deletion(&rec)?;
        let spec = spec_of(&rec)?;
        if spec != KeySpec::SymmetricDefault
            && (input.import_type.is_some()
                || input.key_material_id.is_some()
                || input.description.is_some())
        {
            return Err(KmsError::Validation(format!(
                "ImportType, KeyMaterialId and KeyMaterialDescription apply only to symmetric encryption keys; \
                 omit them for {} keys, which have exactly one key material.",
                spec.as_str()
            )));
        }
        let material = self
            .open_import(&rec, spec, input.import_token, input.encrypted_material)
            .await?;
        let fingerprint = import_fingerprint(&rec.key_id, material.expose());
        let mut rows = self.meta.materials(&rec.key_id).await?;
        let id_of = |m: &MaterialRecord| key_material_id(&rec.key_id, m.version);
        let same = |m: &MaterialRecord| {
            m.fingerprint
                .as_deref()
                .is_some_and(|f| coffer_crypto::ct_eq(f, &fingerprint))
        };
        let incorrect = || {
            KmsError::IncorrectKeyMaterial(
                "The key material does not match the key material previously imported into this KMS key \
                 (for new key material, use ImportType NEW_KEY_MATERIAL)."
                    .into(),
            )
        };
        let index = if input.import_type == Some("NEW_KEY_MATERIAL") && !rows.is_empty() {
            if input.key_material_id.is_some() {
                return Err(KmsError::Validation(
                    "KeyMaterialId names existing key material; omit it with ImportType NEW_KEY_MATERIAL.".into(),
                ));
            }
            if let Some(p) = rows.iter().find(|m| m.pending_rotation) {
                return Err(KmsError::InvalidState(format!(
                    "{} already has key material pending rotation ({}); rotate to it with RotateKeyOnDemand \
                     or delete it with DeleteImportedKeyMaterial first.",
                    self.cfg.key_arn(&rec.key_id),
                    id_of(p)
                )));
            }
            if rows.iter().any(same) {
                return Err(KmsError::IncorrectKeyMaterial(
                    "This key material is already associated with the KMS key; re-import it with ImportType \
                     EXISTING_KEY_MATERIAL."
                        .into(),
                ));
            }
            let version = rows.len() as u32 + 1;
            let mut row =
                MaterialRecord::generated(&rec.key_id, version, Vec::new(), now_ms(), None);
            row.pending_rotation = true;
            rows.push(row);
            rows.len() - 1
        } else if rows.is_empty() {
            if input.key_material_id.is_some() {
                return Err(KmsError::NotFound(format!(
                    "{} has no key material yet; omit KeyMaterialId for the first import.",
                    self.cfg.key_arn(&rec.key_id)
                )));
            }
            rows.push(MaterialRecord::generated(
                &rec.key_id,
                1,
                Vec::new(),
                now_ms(),
                None,
            ));
            0
        } else {
            let i = match input.key_material_id {
                Some(id) => rows.iter().position(|m| id_of(m) == id).ok_or_else(|| {
                    KmsError::NotFound(format!(
                        "Key material {id} is not associated with {}.",
                        self.cfg.key_arn(&rec.key_id)
                    ))
                })?,
                None => rows.iter().position(same).ok_or_else(incorrect)?,
            };
            if !same(&rows[i]) {
                return Err(incorrect());
            }
            i
        };
        let row = &mut rows[index];
        row.wrapped = self
            .root
            .wrap(&material_aad(&rec.key_id, row.version), material.expose())
            .map_err(internal)?;
        row.imported = true;
        row.fingerprint = Some(fingerprint);
        row.valid_to_ms = input.expires_ms;
        row.expiration_model = Some(
            if input.expires_ms.is_some() {
                "KEY_MATERIAL_EXPIRES"
            } else {
                "KEY_MATERIAL_DOES_NOT_EXPIRE"
            }
            .to_owned(),
        );
        if let Some(d) = input.description {
            row.description = Some(d.to_owned());
        }
        let row = row.clone();
        if rec.current_version == 0 {
            rec.current_version = row.version;
        }
        if row.version == rec.current_version {
            rec.valid_to_ms = row.valid_to_ms;
            rec.expiration_model = row.expiration_model.clone();
        }
        let complete = rows
            .iter()
            .filter(|m| !m.pending_rotation)
            .all(|m| m.imported);
        if rec.state == state::PENDING_IMPORT && complete {
            rec.state = state::ENABLED.to_owned();
        }
        self.meta
            .save_materials(&rec, std::slice::from_ref(&row), &[])
            .await?;
        self.evict(&rec.key_id);
        info!(
            key_id = %rec.key_id,
            version = row.version,
            pending_rotation = row.pending_rotation,
            "imported key material"
        );
        Ok((self.cfg.key_arn(&rec.key_id), id_of(&row)))
    }

    /// Checks an import token and unwraps the material sent with it, which must fit the key spec.
    async fn open_import(
        &self,
        rec: &KeyRecord,
        spec: KeySpec,
        import_token: &[u8],
        encrypted_material: &[u8],
    ) -> Result<SecretBytes> {
        let invalid_token = || {
            KmsError::InvalidImportToken(
                "The import token is not valid for this KMS key; call GetParametersForImport for a new one.".into(),
            )
        };
        if import_token.first() != Some(&IMPORT_TOKEN_VERSION) {
            return Err(invalid_token());
        }
        let token_hash = coffer_crypto::digest::sha256(import_token);
        let token = self
            .meta
            .import_token(&token_hash)
            .await?
            .filter(|t| t.key_id == rec.key_id)
            .ok_or_else(invalid_token)?;
        if token.valid_to_ms <= now_ms() {
            return Err(KmsError::ExpiredImportToken(
                "The import token has expired (they are valid for 24 hours); call GetParametersForImport again.".into(),
            ));
        }
        let wrapping_spec = KeySpec::parse(&token.wrapping_spec).ok_or_else(invalid_token)?;
        let alg = WrappingAlgorithm::parse(&token.wrapping_alg).ok_or_else(invalid_token)?;
        let wrapping_private = self
            .root
            .unwrap(
                &import_key_aad(&rec.key_id, &token.token_hash),
                &token.wrapped_private,
            )
            .map_err(internal)?;
        let wrapping =
            KeyMaterial::load(wrapping_spec, wrapping_private.expose()).map_err(internal)?;
        let material = wrapping.unwrap_import(alg, encrypted_material).map_err(|_| {
            KmsError::InvalidCiphertext(format!(
                "The encrypted key material could not be unwrapped with {} and the wrapping key of this import token.",
                alg.as_str()
            ))
        })?;
        if KeyMaterial::load(spec, material.expose()).is_err() {
            return Err(KmsError::InvalidCiphertext(format!(
                "The imported key material is not valid for key spec {}.",
                spec.as_str()
            )));
        }
        Ok(material)
    }

    /// DeleteImportedKeyMaterial: deletes the named (default: current) imported material. Material
    /// that belongs to the key leaves the key PendingImport until the same material is imported
    /// again; material still pending rotation is simply removed.
    pub async fn delete_imported_key_material(
        &self,
        r: &KeyRef,
        key_material_id: Option<&str>,
    ) -> Result<(String, String)> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.external(&rec)?;
        self.not_pending_deletion(&rec)?;
        let arn = self.cfg.key_arn(&rec.key_id);
        let rows = self.meta.materials(&rec.key_id).await?;
        let target = match key_material_id {
            Some(id) => rows
                .into_iter()
                .find(|m| key_material_id_of(&rec.key_id, m) == id)
                .ok_or_else(|| {
                    KmsError::NotFound(format!("Key material {id} is not associated with {arn}."))
                })?,
            None => match rows.into_iter().find(|m| m.version == rec.current_version) {
                Some(m) => m,
                None => return Ok((arn, String::new())),
            },
        };
        let id = key_material_id_of(&rec.key_id, &target);
        self.drop_imported_material(&mut rec, target).await?;
        Ok((arn, id))
    }

    /// Deletes one imported material (at the caller's request or at its ValidTo).
    async fn drop_imported_material(
        &self,
        rec: &mut KeyRecord,
        mut m: MaterialRecord,
    ) -> Result<()> {
        if m.pending_rotation {
            self.meta.save_materials(rec, &[], &[m.version]).await?;
            self.evict(&rec.key_id);
            warn!(key_id = %rec.key_id, version = m.version, "deleted imported key material pending rotation");
            return Ok(());
        }
        m.wrapped = Vec::new();
        m.imported = false;
        m.valid_to_ms = None;
        m.expiration_model = None;
        rec.state = state::PENDING_IMPORT.to_owned();
        if m.version == rec.current_version {
            rec.valid_to_ms = None;
            rec.expiration_model = None;
        }
        self.meta.save_materials(rec, &[m.clone()], &[]).await?;
        self.evict(&rec.key_id);
        warn!(key_id = %rec.key_id, version = m.version, "imported key material deleted; key is pending import");
        Ok(())
    }

    // ---- aliases ----------------------------------------------------------------------------

    fn check_alias_name(name: &str) -> Result<()> {
        if !name.starts_with("alias/") || name.len() == "alias/".len() {
            return Err(KmsError::Validation(
                "Alias must start with the prefix \"alias/\" followed by a name.".into(),
            ));
        }
        if name.starts_with("alias/aws/") {
            return Err(KmsError::NotAuthorized(format!(
                "{name}: aliases that begin with alias/aws/ are reserved for AWS managed keys."
            )));
        }
        Ok(())
    }

    /// The key an alias may point at: named by key id or key ARN (not another alias), existing and
    /// not pending deletion.
    async fn alias_target(&self, target: &KeyRef) -> Result<KeyRecord> {
        let KeyRef::Key(id) = target else {
            return Err(KmsError::Validation(
                "TargetKeyId must be a key ID or key ARN, not an alias.".into(),
            ));
        };
        let rec = self
            .meta
            .key(id)
            .await?
            .ok_or_else(|| self.key_not_found(id))?;
        self.not_pending_deletion(&rec)?;
        Ok(rec)
    }

    /// The AWS managed key of `service` (`alias/aws/<service>`, e.g. `aws/s3`), created on first
    /// use with the key policy AWS gives such keys: every principal of the account may use it
    /// through that service (`kms:ViaService`), and the account may read its metadata. Returns
    /// the key's ARN.
    pub async fn aws_managed_key(&self, service: &str, description: &str) -> Result<String> {
        let alias = format!("alias/aws/{service}");
        if let Some(a) = self.meta.alias(&alias).await? {
            return Ok(self.cfg.key_arn(&a.target_key_id));
        }
        let _w = self.managed.lock().await;
        if let Some(a) = self.meta.alias(&alias).await? {
            return Ok(self.cfg.key_arn(&a.target_key_id));
        }
        let account = &self.cfg.account_id;
        let via = format!("{service}.{}.amazonaws.com", self.cfg.region);
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Id": format!("auto-{service}-2"),
            "Statement": [
                {
                    "Sid": format!("Allow access through {} for all principals in the account that are authorized to use {}", service.to_uppercase(), service.to_uppercase()),
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:CallerAccount": account, "kms:ViaService": via}}
                },
                {
                    "Sid": "Allow direct access to key metadata to the account",
                    "Effect": "Allow",
                    "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                    "Action": ["kms:Describe*", "kms:Get*", "kms:List*"],
                    "Resource": "*"
                }
            ]
        });
        let meta = self
            .create_key(CreateKeyInput {
                description: Some(description.to_owned()),
                policy: Some(serde_json::to_string_pretty(&policy).map_err(internal)?),
                aws_managed: true,
                ..CreateKeyInput::default()
            })
            .await?;
        let now = now_ms();
        self.meta
            .create_alias(&AliasRecord {
                name: alias.clone(),
                target_key_id: meta.key_id.clone(),
                created_ms: now,
                updated_ms: now,
            })
            .await?;
        info!(alias = %alias, key_id = %meta.key_id, "created AWS managed key");
        Ok(meta.arn)
    }

    pub async fn create_alias(&self, name: &str, target: &KeyRef) -> Result<()> {
        Self::check_alias_name(name)?;
        let _w = self.write_lock().await?;
        let rec = self.alias_target(target).await?;
        let existing = self
            .meta
            .list_aliases(Some(&rec.key_id), None, MAX_ALIASES_PER_KEY)
            .await?;
        if existing.items.len() >= MAX_ALIASES_PER_KEY {
            return Err(KmsError::LimitExceeded(format!(
                "Key {} already has {MAX_ALIASES_PER_KEY} aliases.",
                self.cfg.key_arn(&rec.key_id)
            )));
        }
        let now = now_ms();
        let result = self
            .meta
            .create_alias(&AliasRecord {
                name: name.to_owned(),
                target_key_id: rec.key_id.clone(),
                created_ms: now,
                updated_ms: now,
            })
            .await;
        match result {
            Ok(()) => {
                info!(alias = %name, key_id = %rec.key_id, "created alias");
                Ok(())
            }
            Err(MetaError::AlreadyExists(_)) => Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                self.cfg.alias_arn(name)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn update_alias(&self, name: &str, target: &KeyRef) -> Result<()> {
        Self::check_alias_name(name)?;
        let _w = self.write_lock().await?;
        let current = self
            .meta
            .alias(name)
            .await?
            .ok_or_else(|| self.alias_not_found(name))?;
        let rec = self.alias_target(target).await?;
        if let Some(old) = self.meta.key(&current.target_key_id).await?
            && (old.key_spec != rec.key_spec || old.key_usage != rec.key_usage)
        {
            return Err(KmsError::Validation(
                "An alias can only move to a key of the same key spec and key usage.".into(),
            ));
        }
        self.meta.update_alias(name, &rec.key_id, now_ms()).await?;
        crate::write(&self.aliases).insert(name.to_owned(), rec.key_id.clone());
        info!(alias = %name, key_id = %rec.key_id, "updated alias");
        Ok(())
    }

    pub async fn delete_alias(&self, name: &str) -> Result<()> {
        Self::check_alias_name(name)?;
        let _w = self.write_lock().await?;
        match self.meta.delete_alias(name).await {
            Ok(()) => {}
            Err(MetaError::NotFound(_)) => return Err(self.alias_not_found(name)),
            Err(e) => return Err(e.into()),
        }
        crate::write(&self.aliases).remove(name);
        info!(alias = %name, "deleted alias");
        Ok(())
    }

    pub async fn list_aliases(
        &self,
        key: Option<&KeyRef>,
        limit: usize,
        marker: Option<&str>,
    ) -> Result<Listing<AliasEntry>> {
        let key_id = match key {
            Some(r) => {
                let id = self.resolve(r).await?;
                if self.meta.key(&id).await?.is_none() {
                    return Err(self.key_not_found(&id));
                }
                Some(id)
            }
            None => None,
        };
        let page = self
            .meta
            .list_aliases(key_id.as_deref(), marker, limit)
            .await?;
        let items = page
            .items
            .into_iter()
            .map(|a| AliasEntry {
                arn: self.cfg.alias_arn(&a.name),
                name: a.name,
                target_key_id: a.target_key_id,
                creation_ms: a.created_ms,
                last_updated_ms: a.updated_ms,
            })
            .collect();
        Ok(paginate(items, page.truncated, |a: &AliasEntry| {
            a.name.clone()
        }))
    }

    // ---- tags -------------------------------------------------------------------------------

    pub async fn tag_resource(&self, r: &KeyRef, tags: Vec<(String, String)>) -> Result<()> {
        check_tags(&tags)?;
        let _w = self.write_lock().await?;
        let rec = self.record_for_update(r).await?;
        self.not_pending_deletion(&rec)?;
        let mut all: HashMap<String, String> =
            self.meta.tags(&rec.key_id).await?.into_iter().collect();
        let mut new: HashMap<String, String> = HashMap::new();
        new.extend(tags);
        all.extend(new.clone());
        if all.len() > MAX_TAGS {
            return Err(KmsError::LimitExceeded(format!(
                "A key can have at most {MAX_TAGS} tags."
            )));
        }
        let mut new: Vec<_> = new.into_iter().collect();
        new.sort();
        self.meta.put_tags(&rec.key_id, &new).await?;
        Ok(())
    }

    pub async fn untag_resource(&self, r: &KeyRef, tag_keys: Vec<String>) -> Result<()> {
        let _w = self.write_lock().await?;
        let rec = self.record_for_update(r).await?;
        self.not_pending_deletion(&rec)?;
        self.meta.remove_tags(&rec.key_id, &tag_keys).await?;
        Ok(())
    }

    pub async fn list_resource_tags(
        &self,
        r: &KeyRef,
        limit: usize,
        marker: Option<&str>,
    ) -> Result<Listing<(String, String)>> {
        let id = self.resolve(r).await?;
        if self.meta.key(&id).await?.is_none() {
            return Err(self.key_not_found(&id));
        }
        let all = self.meta.tags(&id).await?;
        let rest: Vec<_> = all
            .into_iter()
            .filter(|(k, _)| marker.is_none_or(|m| k.as_str() > m))
            .collect();
        let truncated = rest.len() > limit;
        let items: Vec<_> = rest.into_iter().take(limit).collect();
        Ok(paginate(items, truncated, |(k, _): &(String, String)| {
            k.clone()
        }))
    }

    // ---- rotation ---------------------------------------------------------------------------

    /// Symmetric keys rotate: automatically when Coffer made the material, on demand also when it
    /// was imported.
    fn check_rotatable(&self, rec: &KeyRecord, automatic: bool) -> Result<()> {
        let arn = self.cfg.key_arn(&rec.key_id);
        if rec.key_spec != SYMMETRIC_DEFAULT
            || (rec.origin != ORIGIN_AWS_KMS && rec.origin != ORIGIN_EXTERNAL)
        {
            return Err(KmsError::UnsupportedOperation(format!(
                "{arn} does not support automatic or on-demand rotation."
            )));
        }
        if automatic && rec.origin == ORIGIN_EXTERNAL {
            return Err(KmsError::UnsupportedOperation(format!(
                "{arn} has imported key material, which does not rotate automatically; import new key \
                 material with ImportType NEW_KEY_MATERIAL and call RotateKeyOnDemand."
            )));
        }
        Ok(())
    }

    pub async fn enable_key_rotation(&self, r: &KeyRef, period_days: Option<i32>) -> Result<()> {
        let days = period_days.unwrap_or(DEFAULT_ROTATION_DAYS);
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.usable(&rec)?;
        self.check_rotatable(&rec, true)?;
        rec.rotation_enabled = true;
        rec.rotation_period_days = Some(days);
        rec.next_rotation_ms = Some(now_ms() + i64::from(days) * DAY_MS);
        self.store_update(&rec).await
    }

    pub async fn disable_key_rotation(&self, r: &KeyRef) -> Result<()> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.usable(&rec)?;
        self.check_rotatable(&rec, true)?;
        rec.rotation_enabled = false;
        rec.rotation_period_days = None;
        rec.next_rotation_ms = None;
        self.store_update(&rec).await
    }

    pub async fn key_rotation_status(&self, r: &KeyRef) -> Result<RotationStatus> {
        let rec = self.loaded_ref(r).await?.record.clone();
        self.not_pending_deletion(&rec)?;
        Ok(RotationStatus {
            key_arn: self.cfg.key_arn(&rec.key_id),
            enabled: rec.rotation_enabled,
            period_days: rec.rotation_period_days.filter(|_| rec.rotation_enabled),
            next_rotation_ms: rec.next_rotation_ms.filter(|_| rec.rotation_enabled),
        })
    }

    /// Adds a material version; new encryptions use it, old versions keep decrypting.
    async fn rotate_locked(&self, mut rec: KeyRecord, rotation_type: &str) -> Result<KeyRecord> {
        let version = rec.current_version + 1;
        let material = self
            .new_material(&rec.key_id, spec_of(&rec)?, version, Some(rotation_type))
            .await?;
        rec.current_version = version;
        self.meta.add_material(&rec, &material).await?;
        self.evict(&rec.key_id);
        info!(key_id = %rec.key_id, version, rotation_type, "rotated key material");
        Ok(rec)
    }

    pub async fn rotate_key_on_demand(&self, r: &KeyRef) -> Result<String> {
        let _w = self.write_lock().await?;
        let mut rec = self.record_for_update(r).await?;
        self.usable(&rec)?;
        self.check_rotatable(&rec, false)?;
        let rows = self.meta.materials(&rec.key_id).await?;
        let on_demand = rows
            .iter()
            .filter(|m| m.rotation_type.as_deref() == Some("ON_DEMAND"))
            .count();
        if on_demand >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::LimitExceeded(format!(
                "{} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations.",
                self.cfg.key_arn(&rec.key_id)
            )));
        }
        if rec.origin == ORIGIN_EXTERNAL {
            // Imported keys rotate to the material imported with NEW_KEY_MATERIAL.
            let Some(mut next) = rows.into_iter().find(|m| m.pending_rotation) else {
                return Err(KmsError::InvalidState(format!(
                    "{} has no key material pending rotation; import new key material with ImportType \
                     NEW_KEY_MATERIAL first.",
                    self.cfg.key_arn(&rec.key_id)
                )));
            };
            next.pending_rotation = false;
            next.rotation_type = Some("ON_DEMAND".to_owned());
            next.created_ms = now_ms();
            rec.current_version = next.version;
            rec.valid_to_ms = next.valid_to_ms;
            rec.expiration_model = next.expiration_model.clone();
            self.meta.save_materials(&rec, &[next], &[]).await?;
            self.evict(&rec.key_id);
            info!(key_id = %rec.key_id, version = rec.current_version, "rotated to imported key material");
            return Ok(rec.key_id);
        }
        let rec = self.rotate_locked(rec, "ON_DEMAND").await?;
        Ok(rec.key_id)
    }

    /// Rotations of a key, oldest first. With `include_initial`, the material the key was created
    /// with is listed too (AWS's `ALL_KEY_MATERIAL`).
    pub async fn list_key_rotations(
        &self,
        r: &KeyRef,
        include_initial: bool,
        limit: usize,
        marker: Option<&str>,
    ) -> Result<Listing<RotationEntry>> {
        let rec = self.record_for_update(r).await?;
        self.not_pending_deletion(&rec)?;
        self.check_rotatable(&rec, false)?;
        let external = rec.origin == ORIGIN_EXTERNAL;
        let after: u32 = match marker {
            None => 0,
            Some(m) => m.parse().map_err(|_| {
                KmsError::InvalidMarker("The marker is not valid for this request.".into())
            })?,
        };
        let mut entries: Vec<(u32, RotationEntry)> = self
            .meta
            .materials(&rec.key_id)
            .await?
            .into_iter()
            .filter(|m| m.version > after && (include_initial || m.rotation_type.is_some()))
            .map(|m| {
                let material_state = if m.pending_rotation {
                    "PENDING_ROTATION"
                } else if m.version == rec.current_version {
                    "CURRENT"
                } else {
                    "NON_CURRENT"
                };
                let entry = RotationEntry {
                    key_id: rec.key_id.clone(),
                    key_material_id: key_material_id(&rec.key_id, m.version),
                    material_state,
                    rotation_type: m.rotation_type,
                    rotation_ms: (!m.pending_rotation).then_some(m.created_ms),
                    import: external.then_some(ImportedMaterial {
                        imported: m.imported,
                        expiration_model: m.expiration_model,
                        valid_to_ms: m.valid_to_ms,
                        description: m.description,
                    }),
                };
                (m.version, entry)
            })
            .collect();
        let truncated = entries.len() > limit;
        entries.truncate(limit);
        // The marker is the last listed material version.
        let next_marker = entries
            .last()
            .filter(|_| truncated)
            .map(|(v, _)| v.to_string());
        let items = entries.into_iter().map(|(_, e)| e).collect();
        Ok(Listing { items, next_marker })
    }

    // ---- the clock --------------------------------------------------------------------------

    /// Carries out what is due at `now`: deletes keys whose waiting period has ended and rotates
    /// enabled keys whose automatic rotation date has come. Run it periodically.
    pub async fn sweep(&self, now: i64) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        for due in self.meta.keys_due(now).await? {
            let _w = self.write_lock().await?;
            // Re-read under the lock: the key may have changed since the scan.
            let Some(rec) = self.meta.key(&due.key_id).await? else {
                continue;
            };
            if rec.state == state::PENDING_DELETION && rec.deletion_ms.is_some_and(|d| d <= now) {
                self.meta.delete_key(&rec.key_id).await?;
                // The key material inside a connected token goes too; a disconnected store keeps
                // it (as CloudHSM does) until its operator removes it.
                if let Some(token) = rec
                    .custom_key_store_id
                    .as_deref()
                    .and_then(|s| self.connections.token(s))
                {
                    let label = crate::custom_key_stores::hsm_key_label(&rec.key_id, 1);
                    if let Err(e) = tokio::task::spawn_blocking(move || token.destroy_key(&label))
                        .await
                        .map_err(internal)
                        .and_then(|r| r.map_err(internal))
                    {
                        warn!(key_id = %rec.key_id, error = %e, "could not destroy the key in its token");
                    }
                }
                self.evict(&rec.key_id);
                crate::write(&self.aliases).retain(|_, target| *target != rec.key_id);
                warn!(key_id = %rec.key_id, "deleted key at the end of its waiting period");
                report.deleted += 1;
                continue;
            }
            let expired: Vec<MaterialRecord> = self
                .meta
                .materials(&rec.key_id)
                .await?
                .into_iter()
                .filter(|m| m.imported && m.valid_to_ms.is_some_and(|t| t <= now))
                .collect();
            if !expired.is_empty() {
                let mut rec = rec;
                for m in expired {
                    self.drop_imported_material(&mut rec, m).await?;
                    report.expired += 1;
                }
            } else if rec.state == state::ENABLED
                && rec.rotation_enabled
                && rec.next_rotation_ms.is_some_and(|t| t <= now)
            {
                let period = rec.rotation_period_days.unwrap_or(DEFAULT_ROTATION_DAYS);
                let mut rec = rec;
                // The next date is written in the same transaction as the new material, so a
                // crash can neither lose this rotation nor make it run twice.
                rec.next_rotation_ms = Some(now + i64::from(period) * DAY_MS);
                self.rotate_locked(rec, "AUTOMATIC").await?;
                report.rotated += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::DevFileRoot;

    struct Fixture {
        kms: Kms,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let (root, _) = DevFileRoot::load_or_create(&dir.path().join("root.key")).expect("root");
        let meta = Arc::new(coffer_meta::SqlStore::in_memory().expect("db"));
        let cfg = KmsConfig {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            ..Default::default()
        };
        Fixture {
            kms: Kms::new(cfg, meta, Arc::new(root)),
            _dir: dir,
        }
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn encrypt_decrypt_with_context_and_rotation() {
        let f = fixture();
        let md = f
            .kms
            .create_key(CreateKeyInput::default())
            .await
            .expect("create");
        let key = KeyRef::Key(md.key_id.clone());
        let c = ctx(&[("purpose", "test")]);
        let e1 = f
            .kms
            .encrypt(&key, b"one", &c, None, false)
            .await
            .expect("encrypt");
        assert_eq!(e1.key_arn, md.arn);
        f.kms.rotate_key_on_demand(&key).await.expect("rotate");
        let e2 = f
            .kms
            .encrypt(&key, b"two", &c, None, false)
            .await
            .expect("encrypt");
        assert_eq!(blob::peek(&e2.ciphertext).expect("hdr").material_version, 2);
        for (e, p) in [(&e1, &b"one"[..]), (&e2, &b"two"[..])] {
            let d = f
                .kms
                .decrypt(&e.ciphertext, &c, None, None, false)
                .await
                .expect("decrypt");
            assert_eq!(d.plaintext.expose(), p);
        }
        assert!(matches!(
            f.kms
                .decrypt(&e1.ciphertext, &ctx(&[]), None, None, false)
                .await,
            Err(KmsError::InvalidCiphertext(_))
        ));
        let other = f
            .kms
            .create_key(CreateKeyInput::default())
            .await
            .expect("create");
        assert!(matches!(
            f.kms
                .decrypt(
                    &e1.ciphertext,
                    &c,
                    Some(&KeyRef::Key(other.key_id.clone())),
                    None,
                    false
                )
                .await,
            Err(KmsError::IncorrectKey(_))
        ));
        let re = f
            .kms
            .re_encrypt(
                &e1.ciphertext,
                &c,
                None,
                None,
                &KeyRef::Key(other.key_id.clone()),
                &ctx(&[]),
                None,
                false,
            )
            .await
            .expect("reencrypt");
        assert_eq!(re.source_key_arn, md.arn);
        let d = f
            .kms
            .decrypt(&re.ciphertext, &ctx(&[]), None, None, false)
            .await
            .expect("decrypt");
        assert_eq!(d.plaintext.expose(), b"one");
    }

    #[tokio::test]
    async fn states_are_enforced() {
        let f = fixture();
        let md = f
            .kms
            .create_key(CreateKeyInput::default())
            .await
            .expect("create");
        let key = KeyRef::Key(md.key_id.clone());
        let e = f
            .kms
            .encrypt(&key, b"x", &ctx(&[]), None, false)
            .await
            .expect("encrypt");
        f.kms.disable_key(&key).await.expect("disable");
        assert!(matches!(
            f.kms.encrypt(&key, b"x", &ctx(&[]), None, false).await,
            Err(KmsError::Disabled(_))
        ));
        assert!(matches!(
            f.kms
                .decrypt(&e.ciphertext, &ctx(&[]), None, None, false)
                .await,
            Err(KmsError::Disabled(_))
        ));
        f.kms
            .schedule_key_deletion(&key, Some(7))
            .await
            .expect("schedule");
        assert!(matches!(
            f.kms.enable_key(&key).await,
            Err(KmsError::InvalidState(_))
        ));
        assert!(matches!(
            f.kms.encrypt(&key, b"x", &ctx(&[]), None, false).await,
            Err(KmsError::InvalidState(_))
        ));
        f.kms.cancel_key_deletion(&key).await.expect("cancel");
        assert_eq!(
            f.kms.describe_key(&key).await.expect("describe").key_state,
            state::DISABLED
        );
        f.kms.enable_key(&key).await.expect("enable");
        f.kms
            .encrypt(&key, b"x", &ctx(&[]), None, false)
            .await
            .expect("encrypt again");
    }

    #[tokio::test]
    async fn sweep_deletes_and_rotates_on_the_clock() {
        let f = fixture();
        let doomed = f
            .kms
            .create_key(CreateKeyInput::default())
            .await
            .expect("create");
        let doomed_ref = KeyRef::Key(doomed.key_id.clone());
        f.kms
            .create_alias("alias/doomed", &doomed_ref)
            .await
            .expect("alias");
        f.kms
            .schedule_key_deletion(&doomed_ref, Some(7))
            .await
            .expect("schedule");
        let rotating = f
            .kms
            .create_key(CreateKeyInput::default())
            .await
            .expect("create");
        let rotating_ref = KeyRef::Key(rotating.key_id.clone());
        f.kms
            .enable_key_rotation(&rotating_ref, Some(90))
            .await
            .expect("rotation");

        assert_eq!(
            f.kms.sweep(now_ms()).await.expect("sweep"),
            SweepReport::default()
        );
        let later = now_ms() + 91 * DAY_MS;
        assert_eq!(
            f.kms.sweep(later).await.expect("sweep"),
            SweepReport {
                deleted: 1,
                rotated: 1,
                expired: 0
            }
        );
        assert!(matches!(
            f.kms.describe_key(&doomed_ref).await,
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            f.kms
                .describe_key(&KeyRef::Alias("alias/doomed".into()))
                .await,
            Err(KmsError::NotFound(_))
        ));
        let rotations = f
            .kms
            .list_key_rotations(&rotating_ref, false, 10, None)
            .await
            .expect("list");
        assert_eq!(rotations.items.len(), 1);
        assert_eq!(
            rotations.items[0].rotation_type.as_deref(),
            Some("AUTOMATIC")
        );
        // The next rotation moved a period on, so a second sweep at the same time does nothing.
        assert_eq!(
            f.kms.sweep(later).await.expect("sweep"),
            SweepReport::default()
        );
    }

    #[tokio::test]
    async fn imported_material_expires_on_the_clock() {
        let f = fixture();
        let md = f
            .kms
            .create_key(CreateKeyInput {
                origin: Some(ORIGIN_EXTERNAL.into()),
                ..Default::default()
            })
            .await
            .expect("create");
        let key = KeyRef::Key(md.key_id.clone());
        assert_eq!(md.key_state, state::PENDING_IMPORT);
        // Stand in for ImportKeyMaterial: material with a ValidTo one day out.
        let mut rec = f
            .kms
            .meta
            .key(&md.key_id)
            .await
            .expect("read")
            .expect("exists");
        let mut material = f
            .kms
            .new_material(&md.key_id, KeySpec::SymmetricDefault, 1, None)
            .await
            .expect("material");
        material.expiration_model = Some("KEY_MATERIAL_EXPIRES".into());
        material.valid_to_ms = Some(now_ms() + DAY_MS);
        rec.current_version = 1;
        rec.state = state::ENABLED.into();
        rec.expiration_model = material.expiration_model.clone();
        rec.valid_to_ms = material.valid_to_ms;
        f.kms
            .meta
            .save_materials(&rec, &[material], &[])
            .await
            .expect("store");
        f.kms
            .encrypt(&key, b"x", &ctx(&[]), None, false)
            .await
            .expect("usable");

        assert_eq!(f.kms.sweep(now_ms()).await.expect("sweep").expired, 0);
        let report = f.kms.sweep(now_ms() + 2 * DAY_MS).await.expect("sweep");
        assert_eq!(report.expired, 1);
        assert_eq!(
            f.kms.describe_key(&key).await.expect("describe").key_state,
            state::PENDING_IMPORT
        );
        let rows = f.kms.meta.materials(&md.key_id).await.expect("materials");
        assert_eq!(
            rows.len(),
            1,
            "the material stays associated, awaiting re-import"
        );
        assert!(!rows[0].imported && rows[0].wrapped.is_empty());
        assert!(matches!(
            f.kms.encrypt(&key, b"x", &ctx(&[]), None, false).await,
            Err(KmsError::InvalidState(_))
        ));
        // Nothing is due any more: a second sweep does nothing.
        assert_eq!(
            f.kms.sweep(now_ms() + 3 * DAY_MS).await.expect("sweep"),
            SweepReport::default()
        );
    }

    #[tokio::test]
    async fn aliases_and_tags() {
        let f = fixture();
        let a = f
            .kms
            .create_key(CreateKeyInput::default())
            .await
            .expect("create");
        let b = f
            .kms
            .create_key(CreateKeyInput::default())
            .await
            .expect("create");
        let ka = KeyRef::Key(a.key_id.clone());
        f.kms.create_alias("alias/app", &ka).await.expect("alias");
        assert!(matches!(
            f.kms.create_alias("alias/app", &ka).await,
            Err(KmsError::AlreadyExists(_))
        ));
        assert!(matches!(
            f.kms.create_alias("alias/aws/x", &ka).await,
            Err(KmsError::NotAuthorized(_))
        ));
        assert!(matches!(
            f.kms.create_alias("app", &ka).await,
            Err(KmsError::Validation(_))
        ));
        let alias = KeyRef::Alias("alias/app".into());
        assert_eq!(
            f.kms.describe_key(&alias).await.expect("describe").key_id,
            a.key_id
        );
        f.kms
            .update_alias("alias/app", &KeyRef::Key(b.key_id.clone()))
            .await
            .expect("update");
        assert_eq!(
            f.kms.describe_key(&alias).await.expect("describe").key_id,
            b.key_id
        );
        f.kms.delete_alias("alias/app").await.expect("delete");
        assert!(matches!(
            f.kms.describe_key(&alias).await,
            Err(KmsError::NotFound(_))
        ));

        f.kms
            .tag_resource(
                &ka,
                vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            )
            .await
            .expect("tag");
        assert!(matches!(
            f.kms
                .tag_resource(&ka, vec![("aws:x".into(), "1".into())])
                .await,
            Err(KmsError::Tag(_))
        ));
        let page = f.kms.list_resource_tags(&ka, 1, None).await.expect("tags");
        assert_eq!(page.items, vec![("a".to_string(), "1".to_string())]);
        let page = f
            .kms
            .list_resource_tags(&ka, 1, page.next_marker.as_deref())
            .await
            .expect("tags");
        assert_eq!((page.items.len(), page.next_marker), (1, None));
        let many: Vec<_> = (0..MAX_TAGS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(matches!(
            f.kms.tag_resource(&ka, many).await,
            Err(KmsError::LimitExceeded(_))
        ));
    }
}
