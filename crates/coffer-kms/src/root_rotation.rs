//! Root rotation: a new root generation, then every stored secret rewrapped under it, then the old
//! generations removed once nothing is wrapped under them.
//!
//! Every step is durable before the next starts, and each secret is rewrapped by a compare-and-swap
//! on its row, so a crash at any point leaves each secret wrapped under a generation the root still
//! holds: the store starts and opens everything, and running the rotation again finishes the job.

use coffer_meta::{WrappedKind, WrappedSecret};

use crate::service::{import_key_aad, material_aad};
use crate::{Kms, KmsError, Result};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The new current generation.
    pub generation: u32,
    /// Secrets rewrapped under it.
    pub rewrapped: usize,
}

/// Test hook: `COFFER_TEST_FAILPOINT=<name>` makes the process abort when it reaches that point,
/// as a crash or `kill -9` would, so tests can prove that no point of a rotation loses anything.
pub fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let set = POINT.get_or_init(|| std::env::var("COFFER_TEST_FAILPOINT").ok());
    if set.as_deref() == Some(name) {
        eprintln!("coffer: failpoint {name} reached; aborting");
        std::process::abort();
    }
}

/// What the S3 master key `id` is bound to when wrapped under the root.
pub fn s3_master_key_aad(id: u32) -> Vec<u8> {
    format!("coffer:s3-master-key:{id}").into_bytes()
}

pub(crate) fn aad_of(kind: &WrappedKind) -> Vec<u8> {
    match kind {
        WrappedKind::KeyMaterial { key_id, version } => material_aad(key_id, *version),
        WrappedKind::SecretAccessKey { access_key_id } => {
            crate::identity::secret_aad(access_key_id)
        }
        WrappedKind::ImportWrappingKey { key_id, token_hash } => import_key_aad(key_id, token_hash),
        WrappedKind::KeyStorePassword { id } => crate::custom_key_stores::password_aad(id),
        WrappedKind::S3MasterKey { id } => s3_master_key_aad(*id),
    }
}

fn generation_of(s: &WrappedSecret) -> Result<u32> {
    coffer_crypto::wrap::parse(&s.wrapped)
        .map(|p| p.generation)
        .map_err(|e| KmsError::Internal(format!("a stored wrapped secret is malformed: {e}")))
}

impl Kms {
    /// Adds a root generation and rewraps every stored secret under it.
    pub async fn rotate_root(&self) -> Result<RotationReport> {
        let root = self.root().clone();
        let generation = tokio::task::spawn_blocking(move || root.add_generation())
            .await
            .map_err(|e| KmsError::Internal(e.to_string()))?
            .map_err(|e| KmsError::Internal(format!("cannot add a root generation: {e}")))?;
        failpoint("rotate-root:after-new-generation");
        let mut rewrapped = 0;
        for s in self.meta.wrapped_secrets().await? {
            if generation_of(&s)? == generation {
                continue;
            }
            let aad = aad_of(&s.kind);
            let root = self.root().clone();
            let old = s.wrapped.clone();
            let new = tokio::task::spawn_blocking(move || {
                let plain = root.unwrap(&aad, &old)?;
                root.wrap(&aad, plain.expose())
            })
            .await
            .map_err(|e| KmsError::Internal(e.to_string()))?
            .map_err(|e| KmsError::Internal(format!("cannot rewrap {:?}: {e}", s.kind)))?;
            // A row changed meanwhile (a rotation of key material, a deleted access key) was
            // written under the new generation already, or is gone.
            if self.meta.replace_wrapped(&s, &new).await? {
                rewrapped += 1;
            }
            failpoint("rotate-root:after-one-rewrap");
        }
        failpoint("rotate-root:after-rewrap");
        Ok(RotationReport {
            generation,
            rewrapped,
        })
    }

    /// Removes every root generation but the current one that no stored secret is wrapped under
    /// (the caller has rewrapped whatever else it keeps under the root). Returns those removed.
    pub async fn retire_root_generations(&self) -> Result<Vec<u32>> {
        let root = self.root().clone();
        let current = root.current_generation();
        let mut in_use = std::collections::BTreeSet::from([current]);
        for s in self.meta.wrapped_secrets().await? {
            in_use.insert(generation_of(&s)?);
        }
        let mut removed = Vec::new();
        for g in root.generations() {
            if in_use.contains(&g) {
                continue;
            }
            let r = root.clone();
            tokio::task::spawn_blocking(move || r.remove_generation(g))
                .await
                .map_err(|e| KmsError::Internal(e.to_string()))?
                .map_err(|e| {
                    KmsError::Internal(format!("cannot remove root generation {g}: {e}"))
                })?;
            removed.push(g);
        }
        Ok(removed)
    }
}
