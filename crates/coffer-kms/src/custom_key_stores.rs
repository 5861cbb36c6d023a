//! Custom key stores: AWS's CloudHSM key store API over PKCS#11 tokens.
//!
//! The operator names the tokens Coffer may use as "HSM clusters" (`--hsm-cluster
//! cluster-<id>=<module>#<token label>`), as CloudHSM clusters exist before KMS uses them. A custom
//! key store binds one cluster, its trust anchor certificate, and the token's user PIN (AWS's
//! `KeyStorePassword`, kept wrapped under the root). Connecting logs into the token; keys created in
//! the store are AES-256 keys generated inside it, non-extractable, and every Encrypt, Decrypt,
//! ReEncrypt and GenerateDataKey with them runs in the token. While the store is not connected
//! its keys are `Unavailable`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use coffer_hsm::{HsmError, Token};
use coffer_meta::{CustomKeyStoreRecord, MetaError};
use tracing::{info, warn};

use crate::now_ms;
use crate::{Kms, KmsError, Listing, Result};

pub const CONNECTED: &str = "CONNECTED";
pub const DISCONNECTED: &str = "DISCONNECTED";
pub const FAILED: &str = "FAILED";
pub const TYPE_CLOUDHSM: &str = "AWS_CLOUDHSM";
pub const TYPE_EXTERNAL: &str = "EXTERNAL_KEY_STORE";

/// A token the operator made available as an HSM cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmCluster {
    pub module: PathBuf,
    pub token_label: String,
}

/// DescribeCustomKeyStores' entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomKeyStoreInfo {
    pub id: String,
    pub name: String,
    pub cluster_id: String,
    pub trust_anchor: String,
    pub connection_state: String,
    pub connection_error: Option<String>,
    pub created_ms: i64,
}

impl From<&CustomKeyStoreRecord> for CustomKeyStoreInfo {
    fn from(r: &CustomKeyStoreRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            cluster_id: r.cluster_id.clone(),
            trust_anchor: r.trust_anchor.clone(),
            connection_state: r.connection_state.clone(),
            connection_error: r.connection_error.clone(),
            created_ms: r.created_ms,
        }
    }
}

/// The connected stores' tokens and every store's cluster, for the request path.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    tokens: std::sync::RwLock<HashMap<String, Arc<Token>>>,
    clusters: std::sync::RwLock<HashMap<String, String>>,
}

impl Connections {
    pub(crate) fn token(&self, store_id: &str) -> Option<Arc<Token>> {
        crate::read(&self.tokens).get(store_id).cloned()
    }

    pub(crate) fn cluster_of(&self, store_id: &str) -> Option<String> {
        crate::read(&self.clusters).get(store_id).cloned()
    }
}

pub(crate) fn password_aad(id: &str) -> Vec<u8> {
    format!("coffer/kms/custom-key-store-password/v1/{id}").into_bytes()
}

pub(crate) fn hsm_key_label(key_id: &str, version: u32) -> String {
    format!("coffer-key-{key_id}-v{version}")
}

fn not_found(what: &str) -> KmsError {
    KmsError::CustomKeyStoreNotFound(format!("Custom key store {what} does not exist."))
}

/// A PEM certificate, as far as its armour and base64 go (the token has no certificate to compare
/// it with).
fn check_trust_anchor(pem: &str) -> Result<()> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN CERTIFICATE-----")
        .and_then(|r| r.strip_suffix("-----END CERTIFICATE-----"));
    let der = body.and_then(|b| {
        let b64: String = b.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    });
    // A DER certificate is a SEQUENCE.
    match der {
        Some(d) if d.len() > 64 && d[0] == 0x30 => Ok(()),
        _ => Err(KmsError::IncorrectTrustAnchor(
            "The TrustAnchorCertificate is not a PEM-encoded X.509 certificate (-----BEGIN CERTIFICATE----- …).".into(),
        )),
    }
}

/// What connecting failed with, as AWS's `ConnectionErrorCode`.
fn connection_error(e: &HsmError) -> &'static str {
    match e {
        HsmError::PinIncorrect { .. } => "INVALID_CREDENTIALS",
        HsmError::PinLocked { .. } => "USER_LOCKED_OUT",
        HsmError::NoToken { .. } | HsmError::Module { .. } => "CLUSTER_NOT_FOUND",
        _ => "INTERNAL_ERROR",
    }
}

impl Kms {
    async fn store(&self, id: &str) -> Result<CustomKeyStoreRecord> {
        self.meta
            .custom_key_stores()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| not_found(id))
    }

    fn cluster(&self, cluster_id: &str) -> Result<&HsmCluster> {
        self.cfg.hsm_clusters.get(cluster_id).ok_or_else(|| {
            KmsError::CloudHsmClusterNotFound(format!(
                "No HSM cluster with ID {cluster_id} is available to this Coffer; the operator names them with --hsm-cluster."
            ))
        })
    }

    async fn save_store(&self, r: &CustomKeyStoreRecord) -> Result<()> {
        self.meta
            .update_custom_key_store(r)
            .await
            .map_err(|e| match e {
                MetaError::AlreadyExists(name) => KmsError::CustomKeyStoreNameInUse(format!(
                    "The custom key store name {name} is already in use."
                )),
                MetaError::NotFound(id) => not_found(&id),
                other => other.into(),
            })?;
        crate::write(&self.connections.clusters).insert(r.id.clone(), r.cluster_id.clone());
        Ok(())
    }

    pub async fn create_custom_key_store(
        &self,
        name: &str,
        store_type: Option<&str>,
        cluster_id: Option<&str>,
        trust_anchor: Option<&str>,
        password: Option<&str>,
    ) -> Result<String> {
        match store_type.unwrap_or(TYPE_CLOUDHSM) {
            TYPE_CLOUDHSM => {}
            TYPE_EXTERNAL => {
                return Err(KmsError::UnsupportedOperation(
                    "External key stores are not supported by Coffer; use AWS_CLOUDHSM with a PKCS#11 token.".into(),
                ));
            }
            other => {
                return Err(KmsError::Validation(format!(
                    "CustomKeyStoreType {other} is not AWS_CLOUDHSM or EXTERNAL_KEY_STORE."
                )));
            }
        }
        let (Some(cluster_id), Some(trust_anchor), Some(password)) =
            (cluster_id, trust_anchor, password)
        else {
            return Err(KmsError::Validation(
                "An AWS_CLOUDHSM key store needs CloudHsmClusterId, TrustAnchorCertificate and KeyStorePassword.".into(),
            ));
        };
        self.cluster(cluster_id)?;
        check_trust_anchor(trust_anchor)?;
        let existing = self.meta.custom_key_stores().await?;
        if let Some(other) = existing.iter().find(|s| s.cluster_id == cluster_id) {
            return Err(KmsError::CloudHsmClusterInUse(format!(
                "The cluster {cluster_id} is already associated with the custom key store {}.",
                other.id
            )));
        }
        let mut raw = [0u8; 9];
        coffer_crypto::fill_random(&mut raw).map_err(|e| KmsError::Internal(e.to_string()))?;
        let id = format!("cks-{}", &coffer_crypto::digest::hex(&raw)[..17]);
        let wrapped_password = self
            .root()
            .wrap(&password_aad(&id), password.as_bytes())
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        let rec = CustomKeyStoreRecord {
            id: id.clone(),
            name: name.to_owned(),
            cluster_id: cluster_id.to_owned(),
            trust_anchor: trust_anchor.to_owned(),
            wrapped_password,
            connection_state: DISCONNECTED.to_owned(),
            connection_error: None,
            created_ms: now_ms(),
        };
        self.meta
            .create_custom_key_store(&rec)
            .await
            .map_err(|e| match e {
                MetaError::AlreadyExists(_) => KmsError::CustomKeyStoreNameInUse(format!(
                    "The custom key store name {name} is already in use."
                )),
                other => other.into(),
            })?;
        crate::write(&self.connections.clusters).insert(id.clone(), cluster_id.to_owned());
        info!(custom_key_store_id = %id, cluster_id, "custom key store created");
        Ok(id)
    }

    pub async fn describe_custom_key_stores(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        limit: usize,
        marker: Option<&str>,
    ) -> Result<Listing<CustomKeyStoreInfo>> {
        let all = self.meta.custom_key_stores().await?;
        let selected: Vec<CustomKeyStoreInfo> = all
            .iter()
            .filter(|s| id.is_none_or(|i| s.id == i) && name.is_none_or(|n| s.name == n))
            .map(CustomKeyStoreInfo::from)
            .collect();
        if selected.is_empty()
            && let Some(what) = id.or(name)
        {
            return Err(not_found(what));
        }
        let start = match marker {
            None => 0,
            Some(m) => selected
                .iter()
                .position(|s| s.id == m)
                .map(|p| p + 1)
                .ok_or_else(|| {
                    KmsError::InvalidMarker("The marker is not one this listing returned.".into())
                })?,
        };
        let rest = &selected[start.min(selected.len())..];
        let items: Vec<_> = rest.iter().take(limit).cloned().collect();
        let next_marker = (rest.len() > limit)
            .then(|| items.last().map(|s| s.id.clone()))
            .flatten();
        Ok(Listing { items, next_marker })
    }

    /// Logs into the store's token. Like AWS, a failure to reach the token is not an error of
    /// this call: the store becomes `FAILED` with a `ConnectionErrorCode`.
    pub async fn connect_custom_key_store(&self, id: &str) -> Result<()> {
        let _w = self.write_lock().await?;
        let rec = self.store(id).await?;
        match rec.connection_state.as_str() {
            CONNECTED if self.connections.token(id).is_some() => return Ok(()),
            FAILED => {
                return Err(KmsError::CustomKeyStoreInvalidState(format!(
                    "Custom key store {id} is FAILED: disconnect it (DisconnectCustomKeyStore), fix the cause ({}), then connect it.",
                    rec.connection_error
                        .as_deref()
                        .unwrap_or("see ConnectionErrorCode")
                )));
            }
            _ => {}
        }
        self.connect_custom_key_store_record(rec).await
    }

    async fn open_token(
        &self,
        rec: &CustomKeyStoreRecord,
    ) -> std::result::Result<Arc<Token>, &'static str> {
        let cluster = self
            .cluster(&rec.cluster_id)
            .map_err(|_| "CLUSTER_NOT_FOUND")?
            .clone();
        let pin = self
            .root()
            .unwrap(&password_aad(&rec.id), &rec.wrapped_password)
            .map_err(|_| "INTERNAL_ERROR")?;
        let pin = zeroize::Zeroizing::new(
            String::from_utf8(pin.expose().to_vec()).map_err(|_| "INTERNAL_ERROR")?,
        );
        tokio::task::spawn_blocking(move || {
            Token::open(&cluster.module, &cluster.token_label, &pin)
        })
        .await
        .map_err(|_| "INTERNAL_ERROR")?
        .map(Arc::new)
        .map_err(|e| connection_error(&e))
    }

    pub async fn disconnect_custom_key_store(&self, id: &str) -> Result<()> {
        let _w = self.write_lock().await?;
        let mut rec = self.store(id).await?;
        crate::write(&self.connections.tokens).remove(id);
        rec.connection_state = DISCONNECTED.to_owned();
        rec.connection_error = None;
        self.save_store(&rec).await?;
        info!(custom_key_store_id = id, "custom key store disconnected");
        Ok(())
    }

    pub async fn update_custom_key_store(
        &self,
        id: &str,
        new_name: Option<&str>,
        password: Option<&str>,
        cluster_id: Option<&str>,
    ) -> Result<()> {
        let _w = self.write_lock().await?;
        let mut rec = self.store(id).await?;
        if (password.is_some() || cluster_id.is_some()) && rec.connection_state != DISCONNECTED {
            return Err(KmsError::CustomKeyStoreInvalidState(format!(
                "Custom key store {id} must be DISCONNECTED to change its KeyStorePassword or CloudHsmClusterId (it is {}).",
                rec.connection_state
            )));
        }
        if let Some(c) = cluster_id {
            self.cluster(c)?;
            if let Some(other) = self
                .meta
                .custom_key_stores()
                .await?
                .iter()
                .find(|s| s.cluster_id == c && s.id != id)
            {
                return Err(KmsError::CloudHsmClusterInUse(format!(
                    "The cluster {c} is already associated with the custom key store {}.",
                    other.id
                )));
            }
            rec.cluster_id = c.to_owned();
        }
        if let Some(p) = password {
            rec.wrapped_password = self
                .root()
                .wrap(&password_aad(id), p.as_bytes())
                .map_err(|e| KmsError::Internal(e.to_string()))?;
        }
        if let Some(n) = new_name {
            rec.name = n.to_owned();
        }
        self.save_store(&rec).await
    }

    pub async fn delete_custom_key_store(&self, id: &str) -> Result<()> {
        let _w = self.write_lock().await?;
        let rec = self.store(id).await?;
        if rec.connection_state != DISCONNECTED {
            return Err(KmsError::CustomKeyStoreInvalidState(format!(
                "Custom key store {id} must be DISCONNECTED to be deleted (it is {}).",
                rec.connection_state
            )));
        }
        self.meta
            .delete_custom_key_store(id)
            .await
            .map_err(|e| match e {
                MetaError::InUse(what) => KmsError::CustomKeyStoreHasCmks(format!(
                    "Custom key store {id} still holds {what}; schedule their deletion first."
                )),
                MetaError::NotFound(_) => not_found(id),
                other => other.into(),
            })?;
        crate::write(&self.connections.clusters).remove(id);
        info!(custom_key_store_id = id, "custom key store deleted");
        Ok(())
    }

    /// At start: reconnects the stores that were connected, and learns every store's cluster.
    pub async fn reconnect_custom_key_stores(&self) -> Result<()> {
        for rec in self.meta.custom_key_stores().await? {
            crate::write(&self.connections.clusters).insert(rec.id.clone(), rec.cluster_id.clone());
            if rec.connection_state == CONNECTED {
                let mut rec = rec;
                rec.connection_state = DISCONNECTED.to_owned();
                self.connect_custom_key_store_record(rec).await?;
            }
        }
        Ok(())
    }

    async fn connect_custom_key_store_record(&self, mut rec: CustomKeyStoreRecord) -> Result<()> {
        match self.open_token(&rec).await {
            Ok(token) => {
                crate::write(&self.connections.tokens).insert(rec.id.clone(), token);
                rec.connection_state = CONNECTED.to_owned();
                rec.connection_error = None;
                info!(custom_key_store_id = %rec.id, "custom key store connected");
            }
            Err(code) => {
                warn!(custom_key_store_id = %rec.id, error = code, "custom key store failed to connect");
                rec.connection_state = FAILED.to_owned();
                rec.connection_error = Some(code.to_owned());
            }
        }
        self.save_store(&rec).await
    }

    /// The token of store `store_id`, which must be CONNECTED for `purpose` (AWS's
    /// CustomKeyStoreInvalidStateException otherwise).
    pub(crate) async fn connected_store(
        &self,
        store_id: &str,
        purpose: &str,
    ) -> Result<Arc<Token>> {
        let rec = self.store(store_id).await?;
        self.connections
            .token(store_id)
            .filter(|_| rec.connection_state == CONNECTED)
            .ok_or_else(|| {
                KmsError::CustomKeyStoreInvalidState(format!(
                    "Custom key store {store_id} is {}; {purpose} needs it CONNECTED.",
                    rec.connection_state
                ))
            })
    }

    /// GenerateRandom from a custom key store's token.
    pub async fn generate_random_in_store(
        &self,
        store_id: &str,
        number_of_bytes: usize,
    ) -> Result<coffer_crypto::SecretBytes> {
        let token = self
            .connected_store(store_id, "GenerateRandom in it")
            .await?;
        let bytes = tokio::task::spawn_blocking(move || token.random(number_of_bytes))
            .await
            .map_err(|e| KmsError::Internal(e.to_string()))?
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        Ok(coffer_crypto::SecretBytes::new(bytes.to_vec()))
    }

    /// The token of a connected store, for a key in it.
    pub(crate) fn store_token(
        &self,
        store_id: &str,
        key_arn: impl FnOnce() -> String,
    ) -> Result<Arc<Token>> {
        self.connections.token(store_id).ok_or_else(|| {
            KmsError::InvalidState(format!(
                "{} is unavailable: its custom key store {store_id} is not connected (ConnectCustomKeyStore).",
                key_arn()
            ))
        })
    }
}
