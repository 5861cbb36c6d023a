//! Coffer's key management domain: KMS keys and their material versions, aliases, tags, the key
//! lifecycle (enable, disable, scheduled deletion, rotation) and the root of trust that wraps all
//! material. No HTTP here: the API crate turns requests into calls on [`Kms`] and errors into AWS
//! exceptions.
//!
//! Key material is unwrapped once and cached in memory (zeroized on eviction); the metadata store is
//! the source of truth and every change goes through it before it is acknowledged.

pub mod authz;
pub mod backup;
pub mod custom_key_stores;
mod error;
pub mod grants;
pub mod iam;
pub mod identity;
mod keyref;
mod model;
pub mod root;
mod root_rotation;
mod service;

pub use authz::Caller;
pub use error::{KmsError, Result};
pub use iam::{Iam, IamError};
pub use identity::{Identities, Principal};
pub use keyref::{KeyRef, is_key_id};
pub use model::*;
pub use root_rotation::{RotationReport, failpoint, s3_master_key_aad};
pub use service::Kms;

mod key_policy;

/// Where this Coffer says it is: the account id and region that appear in every ARN; and the HSM
/// clusters (PKCS#11 tokens) custom key stores may use, by cluster id.
#[derive(Debug, Clone, Default)]
pub struct KmsConfig {
    pub account_id: String,
    pub region: String,
    pub hsm_clusters: std::collections::BTreeMap<String, custom_key_stores::HsmCluster>,
}

impl KmsConfig {
    pub fn key_arn(&self, key_id: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{key_id}",
            self.region, self.account_id
        )
    }

    pub fn alias_arn(&self, alias: &str) -> String {
        format!("arn:aws:kms:{}:{}:{alias}", self.region, self.account_id)
    }
}

/// Locks for reading. A poisoned lock only means another thread panicked while holding it; the maps
/// behind these locks are caches whose every state is valid, so the data is used as it is.
pub(crate) fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Locks for writing; see [`read`] for why poisoning is not an error here.
pub(crate) fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
