//! The store's logic, written once over [`Tx`] and run on either engine: keys, key material,
//! aliases, tags, key policies, grants, custom key stores, IAM and wrapped-secret rotation here;
//! the object store and discovery in the submodules.

use std::path::Path;

use async_trait::async_trait;

mod discovery;
mod objects;

use crate::changes::{Change, notify};
use crate::sql::{Row, SqlStore, Tx, p};
use crate::{
    AccessKeyRecord, AliasRecord, CustomKeyStoreRecord, GrantRecord, IamEntityRecord, IamKind,
    ImportTokenRecord, KeyRecord, MaterialRecord, MetaError, MetaStore, Page, Result, WrappedKind,
    WrappedSecret,
};

const MATERIAL_COLUMNS: &str = "key_id, version, wrapped, created_ms, rotation_type, imported, \
     pending_rotation, expiration_model, valid_to_ms, description, fingerprint";

fn material_row(r: &Row) -> Result<MaterialRecord> {
    Ok(MaterialRecord {
        key_id: r.get(0)?,
        version: r.get(1)?,
        wrapped: r.get(2)?,
        created_ms: r.get(3)?,
        rotation_type: r.get(4)?,
        imported: r.get(5)?,
        pending_rotation: r.get(6)?,
        expiration_model: r.get(7)?,
        valid_to_ms: r.get(8)?,
        description: r.get(9)?,
        fingerprint: r.get(10)?,
    })
}

/// Inserts a material row; with `replace`, one of the same key and version is overwritten.
fn insert_material(t: &mut dyn Tx, m: &MaterialRecord, replace: bool) -> Result<()> {
    let on_conflict = if replace {
        " ON CONFLICT (key_id, version) DO UPDATE SET wrapped = excluded.wrapped, \
         created_ms = excluded.created_ms, rotation_type = excluded.rotation_type, \
         imported = excluded.imported, pending_rotation = excluded.pending_rotation, \
         expiration_model = excluded.expiration_model, valid_to_ms = excluded.valid_to_ms, \
         description = excluded.description, fingerprint = excluded.fingerprint"
    } else {
        ""
    };
    t.execute(
        &format!(
            "INSERT INTO kms_key_materials ({MATERIAL_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11){on_conflict}"
        ),
        &p![
            m.key_id,
            m.version,
            m.wrapped,
            m.created_ms,
            m.rotation_type,
            m.imported,
            m.pending_rotation,
            m.expiration_model,
            m.valid_to_ms,
            m.description,
            m.fingerprint
        ],
    )
    .map_err(|e| {
        e.unique_as(|| MetaError::AlreadyExists(format!("{} version {}", m.key_id, m.version)))
    })?;
    Ok(())
}

/// Replaces one wrapped secret if it still holds the old value.
fn replace_one(t: &mut dyn Tx, old: &WrappedSecret, new_wrapped: &[u8]) -> Result<bool> {
    let n = match &old.kind {
        WrappedKind::KeyMaterial { key_id, version } => t.execute(
            "UPDATE kms_key_materials SET wrapped = ?1 WHERE key_id = ?2 AND version = ?3 AND wrapped = ?4",
            &p![new_wrapped, key_id, version, old.wrapped],
        ),
        WrappedKind::SecretAccessKey { access_key_id } => t.execute(
            "UPDATE access_keys SET wrapped_secret = ?1 WHERE access_key_id = ?2 AND wrapped_secret = ?3",
            &p![new_wrapped, access_key_id, old.wrapped],
        ),
        WrappedKind::ImportWrappingKey { token_hash, .. } => t.execute(
            "UPDATE kms_import_tokens SET wrapped_private = ?1 WHERE token_hash = ?2 AND wrapped_private = ?3",
            &p![new_wrapped, token_hash, old.wrapped],
        ),
        WrappedKind::KeyStorePassword { id } => t.execute(
            "UPDATE kms_custom_key_stores SET wrapped_password = ?1 WHERE id = ?2 AND wrapped_password = ?3",
            &p![new_wrapped, id, old.wrapped],
        ),
        WrappedKind::S3MasterKey { id } => t.execute(
            "UPDATE s3_master_keys SET wrapped = ?1 WHERE id = ?2 AND wrapped = ?3",
            &p![new_wrapped, id, old.wrapped],
        ),
    }?;
    Ok(n == 1)
}

const KEY_COLUMNS: &str = "key_id, created_ms, description, key_usage, key_spec, origin, key_manager, state, \
     deletion_ms, pending_window_days, rotation_enabled, rotation_period_days, next_rotation_ms, current_version, \
     expiration_model, valid_to_ms, import_fingerprint, custom_key_store_id";

fn key_row(r: &Row) -> Result<KeyRecord> {
    Ok(KeyRecord {
        key_id: r.get(0)?,
        created_ms: r.get(1)?,
        description: r.get(2)?,
        key_usage: r.get(3)?,
        key_spec: r.get(4)?,
        origin: r.get(5)?,
        key_manager: r.get(6)?,
        state: r.get(7)?,
        deletion_ms: r.get(8)?,
        pending_window_days: r.get(9)?,
        rotation_enabled: r.get(10)?,
        rotation_period_days: r.get(11)?,
        next_rotation_ms: r.get(12)?,
        current_version: r.get(13)?,
        expiration_model: r.get(14)?,
        valid_to_ms: r.get(15)?,
        import_fingerprint: r.get(16)?,
        custom_key_store_id: r.get(17)?,
    })
}

const CKS_COLUMNS: &str = "id, name, cluster_id, trust_anchor, wrapped_password, connection_state, connection_error, created_ms";

fn cks_row(r: &Row) -> Result<CustomKeyStoreRecord> {
    Ok(CustomKeyStoreRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        cluster_id: r.get(2)?,
        trust_anchor: r.get(3)?,
        wrapped_password: r.get(4)?,
        connection_state: r.get(5)?,
        connection_error: r.get(6)?,
        created_ms: r.get(7)?,
    })
}

fn alias_row(r: &Row) -> Result<AliasRecord> {
    Ok(AliasRecord {
        name: r.get(0)?,
        target_key_id: r.get(1)?,
        created_ms: r.get(2)?,
        updated_ms: r.get(3)?,
    })
}

fn update_key_row(t: &mut dyn Tx, k: &KeyRecord) -> Result<()> {
    let n = t.execute(
        "UPDATE kms_keys SET description = ?2, state = ?3, deletion_ms = ?4, pending_window_days = ?5, \
         rotation_enabled = ?6, rotation_period_days = ?7, next_rotation_ms = ?8, current_version = ?9, \
         expiration_model = ?10, valid_to_ms = ?11, import_fingerprint = ?12 WHERE key_id = ?1",
        &p![
            k.key_id,
            k.description,
            k.state,
            k.deletion_ms,
            k.pending_window_days,
            k.rotation_enabled,
            k.rotation_period_days,
            k.next_rotation_ms,
            k.current_version,
            k.expiration_model,
            k.valid_to_ms,
            k.import_fingerprint
        ],
    )?;
    if n == 0 {
        return Err(MetaError::NotFound(k.key_id.clone()));
    }
    notify(t, Change::Key(k.key_id.clone()))
}

pub(crate) fn page<T>(mut items: Vec<T>, limit: usize) -> Page<T> {
    let truncated = items.len() > limit;
    items.truncate(limit);
    Page { items, truncated }
}

/// Runs a statement that must change some row; `NotFound(what)` when it changed none.
fn change_or_not_found(
    t: &mut dyn Tx,
    sql: &str,
    params: &[crate::sql::Value],
    what: &str,
) -> Result<()> {
    if t.execute(sql, params)? == 0 {
        return Err(MetaError::NotFound(what.to_owned()));
    }
    Ok(())
}

#[async_trait]
impl MetaStore for SqlStore {
    fn engine(&self) -> &'static str {
        self.engine_name()
    }

    async fn cluster_lock(&self, name: &str) -> Result<crate::ClusterLock> {
        SqlStore::cluster_lock(self, name).await
    }

    async fn try_cluster_lock(&self, name: &str) -> Result<Option<crate::ClusterLock>> {
        SqlStore::try_cluster_lock(self, name).await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|t| t.query_scalar::<i64>("SELECT 1", &[]).map(|_| ()))
            .await
    }

    async fn create_key(
        &self,
        key: &KeyRecord,
        material: Option<&MaterialRecord>,
        tags: &[(String, String)],
        policy: &str,
    ) -> Result<()> {
        let (key, material, tags) = (key.clone(), material.cloned(), tags.to_vec());
        let policy = policy.to_owned();
        self.tx(move |t| {
            t.execute(
                &format!("INSERT INTO kms_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"),
                &p![
                    key.key_id,
                    key.created_ms,
                    key.description,
                    key.key_usage,
                    key.key_spec,
                    key.origin,
                    key.key_manager,
                    key.state,
                    key.deletion_ms,
                    key.pending_window_days,
                    key.rotation_enabled,
                    key.rotation_period_days,
                    key.next_rotation_ms,
                    key.current_version,
                    key.expiration_model,
                    key.valid_to_ms,
                    key.import_fingerprint,
                    key.custom_key_store_id
                ],
            )
            .map_err(|e| e.unique_as(|| MetaError::AlreadyExists(key.key_id.clone())))?;
            if let Some(material) = &material {
                insert_material(t, material, false)?;
            }
            t.execute(
                "INSERT INTO kms_key_policies (key_id, policy, updated_ms) VALUES (?1, ?2, ?3)",
                &p![key.key_id, policy, key.created_ms],
            )?;
            for (k, v) in &tags {
                t.execute(
                    "INSERT INTO kms_tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)",
                    &p![key.key_id, k, v],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        let key_id = key_id.to_owned();
        self.read(move |t| {
            t.query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM kms_keys WHERE key_id = ?1"),
                &p![key_id],
                key_row,
            )
        })
        .await
    }

    async fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Page<KeyRecord>> {
        let after = after.unwrap_or("").to_owned();
        self.read(move |t| {
            let rows = t.query_map(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM kms_keys WHERE key_id > ?1 ORDER BY key_id LIMIT ?2"
                ),
                &p![after, limit as i64 + 1],
                key_row,
            )?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn update_key(&self, key: &KeyRecord) -> Result<()> {
        let key = key.clone();
        self.tx(move |t| update_key_row(t, &key)).await
    }

    async fn delete_key(&self, key_id: &str) -> Result<()> {
        let key_id = key_id.to_owned();
        self.tx(move |t| {
            // Explicit deletes keep this correct on engines without ON DELETE CASCADE enforcement.
            for table in [
                "kms_aliases WHERE target_key_id",
                "kms_tags WHERE key_id",
                "kms_key_materials WHERE key_id",
                "kms_import_tokens WHERE key_id",
                "kms_keys WHERE key_id",
            ] {
                t.execute(&format!("DELETE FROM {table} = ?1"), &p![key_id])?;
            }
            notify(t, Change::Key(key_id.clone()))
        })
        .await
    }

    async fn keys_due(&self, now_ms: i64) -> Result<Vec<KeyRecord>> {
        self.read(move |t| {
            t.query_map(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM kms_keys WHERE (deletion_ms IS NOT NULL AND deletion_ms <= ?1) \
                     OR (rotation_enabled <> 0 AND next_rotation_ms IS NOT NULL AND next_rotation_ms <= ?1) \
                     OR key_id IN (SELECT key_id FROM kms_key_materials WHERE imported <> 0 \
                        AND valid_to_ms IS NOT NULL AND valid_to_ms <= ?1) ORDER BY key_id"
                ),
                &p![now_ms],
                key_row,
            )
        })
        .await
    }

    async fn materials(&self, key_id: &str) -> Result<Vec<MaterialRecord>> {
        let key_id = key_id.to_owned();
        self.read(move |t| {
            t.query_map(
                &format!(
                    "SELECT {MATERIAL_COLUMNS} FROM kms_key_materials WHERE key_id = ?1 ORDER BY version"
                ),
                &p![key_id],
                material_row,
            )
        })
        .await
    }

    async fn add_material(&self, key: &KeyRecord, material: &MaterialRecord) -> Result<()> {
        let (key, material) = (key.clone(), material.clone());
        self.tx(move |t| {
            insert_material(t, &material, false)?;
            update_key_row(t, &key)
        })
        .await
    }

    async fn save_materials(
        &self,
        key: &KeyRecord,
        put: &[MaterialRecord],
        remove: &[u32],
    ) -> Result<()> {
        let (key, put, remove) = (key.clone(), put.to_vec(), remove.to_vec());
        self.tx(move |t| {
            for v in &remove {
                t.execute(
                    "DELETE FROM kms_key_materials WHERE key_id = ?1 AND version = ?2",
                    &p![key.key_id, v],
                )?;
            }
            for m in &put {
                insert_material(t, m, true)?;
            }
            update_key_row(t, &key)
        })
        .await
    }

    async fn put_import_token(&self, token: &ImportTokenRecord) -> Result<()> {
        let tok = token.clone();
        self.tx(move |t| {
            t.execute(
                "INSERT INTO kms_import_tokens (token_hash, key_id, wrapping_alg, wrapping_spec, wrapped_private, valid_to_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &p![tok.token_hash, tok.key_id, tok.wrapping_alg, tok.wrapping_spec, tok.wrapped_private, tok.valid_to_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn import_token(&self, token_hash: &[u8]) -> Result<Option<ImportTokenRecord>> {
        let hash = token_hash.to_vec();
        self.read(move |t| {
            t.query_opt(
                "SELECT token_hash, key_id, wrapping_alg, wrapping_spec, wrapped_private, valid_to_ms \
                 FROM kms_import_tokens WHERE token_hash = ?1",
                &p![hash],
                |r| {
                    Ok(ImportTokenRecord {
                        token_hash: r.get(0)?,
                        key_id: r.get(1)?,
                        wrapping_alg: r.get(2)?,
                        wrapping_spec: r.get(3)?,
                        wrapped_private: r.get(4)?,
                        valid_to_ms: r.get(5)?,
                    })
                },
            )
        })
        .await
    }

    async fn delete_import_tokens(
        &self,
        key_id: &str,
        expired_before_ms: Option<i64>,
    ) -> Result<()> {
        let key_id = key_id.to_owned();
        self.tx(move |t| {
            t.execute(
                "DELETE FROM kms_import_tokens WHERE key_id = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR valid_to_ms < ?2)",
                &p![key_id, expired_before_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_alias(&self, alias: &AliasRecord) -> Result<()> {
        let a = alias.clone();
        self.tx(move |t| {
            t.execute(
                "INSERT INTO kms_aliases (name, target_key_id, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                &p![a.name, a.target_key_id, a.created_ms, a.updated_ms],
            )
            .map_err(|e| e.unique_as(|| MetaError::AlreadyExists(a.name.clone())))?;
            Ok(())
        })
        .await
    }

    async fn alias(&self, name: &str) -> Result<Option<AliasRecord>> {
        let name = name.to_owned();
        self.read(move |t| {
            t.query_opt(
                "SELECT name, target_key_id, created_ms, updated_ms FROM kms_aliases WHERE name = ?1",
                &p![name],
                alias_row,
            )
        })
        .await
    }

    async fn update_alias(&self, name: &str, target_key_id: &str, now_ms: i64) -> Result<()> {
        let (name, target) = (name.to_owned(), target_key_id.to_owned());
        self.tx(move |t| {
            change_or_not_found(
                t,
                "UPDATE kms_aliases SET target_key_id = ?2, updated_ms = ?3 WHERE name = ?1",
                &p![name, target, now_ms],
                &name,
            )?;
            notify(t, Change::Alias(name.clone()))
        })
        .await
    }

    async fn delete_alias(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.tx(move |t| {
            change_or_not_found(
                t,
                "DELETE FROM kms_aliases WHERE name = ?1",
                &p![name],
                &name,
            )?;
            notify(t, Change::Alias(name.clone()))
        })
        .await
    }

    async fn list_aliases(
        &self,
        key_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AliasRecord>> {
        let (key_id, after) = (key_id.map(str::to_owned), after.unwrap_or("").to_owned());
        self.read(move |t| {
            let rows = t.query_map(
                "SELECT name, target_key_id, created_ms, updated_ms FROM kms_aliases \
                 WHERE name > ?1 AND (CAST(?2 AS TEXT) IS NULL OR target_key_id = ?2) ORDER BY name LIMIT ?3",
                &p![after, key_id, limit as i64 + 1],
                alias_row,
            )?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn put_tags(&self, key_id: &str, tags: &[(String, String)]) -> Result<()> {
        let (key_id, tags) = (key_id.to_owned(), tags.to_vec());
        self.tx(move |t| {
            for (k, v) in &tags {
                t.execute(
                    "INSERT INTO kms_tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                    &p![key_id, k, v],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_tags(&self, key_id: &str, tag_keys: &[String]) -> Result<()> {
        let (key_id, tag_keys) = (key_id.to_owned(), tag_keys.to_vec());
        self.tx(move |t| {
            for k in &tag_keys {
                t.execute(
                    "DELETE FROM kms_tags WHERE key_id = ?1 AND tag_key = ?2",
                    &p![key_id, k],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn tags(&self, key_id: &str) -> Result<Vec<(String, String)>> {
        let key_id = key_id.to_owned();
        self.read(move |t| {
            t.query_map(
                "SELECT tag_key, tag_value FROM kms_tags WHERE key_id = ?1 ORDER BY tag_key",
                &p![key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    async fn put_access_key(&self, r: &AccessKeyRecord) -> Result<()> {
        let r = r.clone();
        self.tx(move |t| {
            t.execute(
                "INSERT INTO access_keys (access_key_id, wrapped_secret, principal_arn, status, created_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (access_key_id) DO UPDATE SET wrapped_secret = excluded.wrapped_secret, \
                 principal_arn = excluded.principal_arn, status = excluded.status",
                &p![r.access_key_id, r.wrapped_secret, r.principal_arn, r.status, r.created_ms],
            )?;
            notify(t, Change::AccessKey(r.access_key_id.clone()))
        })
        .await
    }

    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKeyRecord>> {
        let id = access_key_id.to_owned();
        self.read(move |t| {
            t.query_opt(
                "SELECT access_key_id, wrapped_secret, principal_arn, status, created_ms FROM access_keys WHERE access_key_id = ?1",
                &p![id],
                access_key_row,
            )
        })
        .await
    }

    async fn key_policy(&self, key_id: &str) -> Result<Option<String>> {
        let key_id = key_id.to_owned();
        self.read(move |t| {
            t.query_opt(
                "SELECT policy FROM kms_key_policies WHERE key_id = ?1",
                &p![key_id],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn put_key_policy(&self, key_id: &str, policy: &str, now_ms: i64) -> Result<()> {
        let (key_id, policy) = (key_id.to_owned(), policy.to_owned());
        self.tx(move |t| {
            change_or_not_found(
                t,
                "INSERT INTO kms_key_policies (key_id, policy, updated_ms) \
                 SELECT key_id, ?2, ?3 FROM kms_keys WHERE key_id = ?1 \
                 ON CONFLICT (key_id) DO UPDATE SET policy = excluded.policy, updated_ms = excluded.updated_ms",
                &p![key_id, policy, now_ms],
                &key_id,
            )?;
            notify(t, Change::Key(key_id.clone()))
        })
        .await
    }

    async fn access_keys_of(&self, principal_arn: &str) -> Result<Vec<AccessKeyRecord>> {
        let arn = principal_arn.to_owned();
        self.read(move |t| {
            t.query_map(
                "SELECT access_key_id, wrapped_secret, principal_arn, status, created_ms FROM access_keys \
                 WHERE principal_arn = ?1 ORDER BY created_ms, access_key_id",
                &p![arn],
                access_key_row,
            )
        })
        .await
    }

    async fn set_access_key_status(&self, access_key_id: &str, status: &str) -> Result<()> {
        let (id, status) = (access_key_id.to_owned(), status.to_owned());
        self.tx(move |t| {
            change_or_not_found(
                t,
                "UPDATE access_keys SET status = ?2 WHERE access_key_id = ?1",
                &p![id, status],
                &id,
            )?;
            notify(t, Change::AccessKey(id.clone()))
        })
        .await
    }

    async fn delete_access_key(&self, access_key_id: &str) -> Result<()> {
        let id = access_key_id.to_owned();
        self.tx(move |t| {
            change_or_not_found(
                t,
                "DELETE FROM access_keys WHERE access_key_id = ?1",
                &p![id],
                &id,
            )?;
            notify(t, Change::AccessKey(id.clone()))
        })
        .await
    }

    async fn create_iam_entity(&self, e: &IamEntityRecord) -> Result<()> {
        let e = e.clone();
        self.tx(move |t| {
            t.execute(
                "INSERT INTO iam_entities (kind, name, id, path, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                &p![e.kind.as_str(), e.name, e.id, e.path, e.created_ms],
            )
            .map_err(|err| err.unique_as(|| MetaError::AlreadyExists(e.name.clone())))?;
            notify(t, Change::Iam)
        })
        .await
    }

    async fn iam_entity(&self, kind: IamKind, name: &str) -> Result<Option<IamEntityRecord>> {
        let name = name.to_owned();
        self.read(move |t| {
            t.query_opt(
                "SELECT name, id, path, created_ms FROM iam_entities WHERE kind = ?1 AND name = ?2",
                &p![kind.as_str(), name],
                |r| entity_row(kind, r),
            )
        })
        .await
    }

    async fn list_iam_entities(
        &self,
        kind: IamKind,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<IamEntityRecord>> {
        let after = after.unwrap_or("").to_owned();
        self.read(move |t| {
            let rows = t.query_map(
                "SELECT name, id, path, created_ms FROM iam_entities \
                 WHERE kind = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                &p![kind.as_str(), after, limit as i64 + 1],
                |r| entity_row(kind, r),
            )?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn delete_iam_entity(&self, kind: IamKind, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.tx(move |t| {
            change_or_not_found(
                t,
                "DELETE FROM iam_entities WHERE kind = ?1 AND name = ?2",
                &p![kind.as_str(), name],
                &name,
            )?;
            let member_column = match kind {
                IamKind::User => "user_name",
                IamKind::Group => "group_name",
            };
            t.execute(
                &format!("DELETE FROM iam_group_members WHERE {member_column} = ?1"),
                &p![name],
            )?;
            t.execute(
                "DELETE FROM iam_policies WHERE owner_kind = ?1 AND owner_name = ?2",
                &p![kind.as_str(), name],
            )?;
            notify(t, Change::Iam)
        })
        .await
    }

    async fn add_group_member(&self, group: &str, user: &str) -> Result<()> {
        let (group, user) = (group.to_owned(), user.to_owned());
        self.tx(move |t| {
            t.execute(
                "INSERT INTO iam_group_members (group_name, user_name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                &p![group, user],
            )?;
            notify(t, Change::Iam)
        })
        .await
    }

    async fn remove_group_member(&self, group: &str, user: &str) -> Result<()> {
        let (group, user) = (group.to_owned(), user.to_owned());
        self.tx(move |t| {
            change_or_not_found(
                t,
                "DELETE FROM iam_group_members WHERE group_name = ?1 AND user_name = ?2",
                &p![group, user],
                &user,
            )?;
            notify(t, Change::Iam)
        })
        .await
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<IamEntityRecord>> {
        let user = user.to_owned();
        self.read(move |t| {
            t.query_map(
                "SELECT e.name, e.id, e.path, e.created_ms FROM iam_group_members m \
                 JOIN iam_entities e ON e.kind = 'group' AND e.name = m.group_name \
                 WHERE m.user_name = ?1 ORDER BY e.name",
                &p![user],
                |r| entity_row(IamKind::Group, r),
            )
        })
        .await
    }

    async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        let group = group.to_owned();
        self.read(move |t| {
            t.query_map(
                "SELECT user_name FROM iam_group_members WHERE group_name = ?1 ORDER BY user_name",
                &p![group],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn put_iam_policy(
        &self,
        kind: IamKind,
        owner: &str,
        name: &str,
        document: &str,
    ) -> Result<()> {
        let (owner, name, document) = (owner.to_owned(), name.to_owned(), document.to_owned());
        self.tx(move |t| {
            t.execute(
                "INSERT INTO iam_policies (owner_kind, owner_name, policy_name, document) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (owner_kind, owner_name, policy_name) DO UPDATE SET document = excluded.document",
                &p![kind.as_str(), owner, name, document],
            )?;
            notify(t, Change::Iam)
        })
        .await
    }

    async fn delete_iam_policy(&self, kind: IamKind, owner: &str, name: &str) -> Result<()> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        self.tx(move |t| {
            change_or_not_found(
                t,
                "DELETE FROM iam_policies WHERE owner_kind = ?1 AND owner_name = ?2 AND policy_name = ?3",
                &p![kind.as_str(), owner, name],
                &name,
            )?;
            notify(t, Change::Iam)
        })
        .await
    }

    async fn iam_policies(&self, kind: IamKind, owner: &str) -> Result<Vec<(String, String)>> {
        let owner = owner.to_owned();
        self.read(move |t| {
            t.query_map(
                "SELECT policy_name, document FROM iam_policies \
                 WHERE owner_kind = ?1 AND owner_name = ?2 ORDER BY policy_name",
                &p![kind.as_str(), owner],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    async fn create_grant(&self, g: &GrantRecord) -> Result<()> {
        let g = g.clone();
        self.tx(move |t| {
            let (ctype, cctx) = match &g.constraint {
                Some((ty, pairs)) => (Some(ty.clone()), Some(pairs_json(pairs))),
                None => (None, None),
            };
            t.execute(
                &format!("INSERT INTO kms_grants ({GRANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                &p![
                    g.grant_id,
                    g.key_id,
                    g.name,
                    g.grantee,
                    g.retiring,
                    g.operations.join(","),
                    ctype,
                    cctx,
                    g.issuing_account,
                    g.creator,
                    g.created_ms
                ],
            )
            .map_err(|e| e.unique_as(|| MetaError::AlreadyExists(g.grant_id.clone())))?;
            Ok(())
        })
        .await
    }

    async fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        let id = grant_id.to_owned();
        self.read(move |t| {
            t.query_opt(
                &format!("SELECT {GRANT_COLUMNS} FROM kms_grants WHERE grant_id = ?1"),
                &p![id],
                grant_row,
            )
        })
        .await
    }

    async fn grants_of_key(
        &self,
        key_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>> {
        let (key_id, after) = (key_id.to_owned(), after.unwrap_or("").to_owned());
        self.read(move |t| grant_page(t, "key_id", &key_id, &after, limit))
            .await
    }

    async fn grants_retirable_by(
        &self,
        retiring: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>> {
        let (retiring, after) = (retiring.to_owned(), after.unwrap_or("").to_owned());
        self.read(move |t| grant_page(t, "retiring", &retiring, &after, limit))
            .await
    }

    async fn grants_for(&self, key_id: &str, grantee: &str) -> Result<Vec<GrantRecord>> {
        let (key_id, grantee) = (key_id.to_owned(), grantee.to_owned());
        self.read(move |t| {
            t.query_map(
                &format!(
                    "SELECT {GRANT_COLUMNS} FROM kms_grants WHERE key_id = ?1 AND grantee = ?2 ORDER BY grant_id"
                ),
                &p![key_id, grantee],
                grant_row,
            )
        })
        .await
    }

    async fn grant_count(&self, key_id: &str) -> Result<usize> {
        let key_id = key_id.to_owned();
        self.read(move |t| {
            t.query_scalar::<i64>(
                "SELECT COUNT(*) FROM kms_grants WHERE key_id = ?1",
                &p![key_id],
            )
            .map(|n| n as usize)
        })
        .await
    }

    async fn delete_grant(&self, grant_id: &str) -> Result<()> {
        let id = grant_id.to_owned();
        self.tx(move |t| {
            change_or_not_found(
                t,
                "DELETE FROM kms_grants WHERE grant_id = ?1",
                &p![id],
                &id,
            )
        })
        .await
    }

    async fn create_custom_key_store(&self, r: &CustomKeyStoreRecord) -> Result<()> {
        let r = r.clone();
        self.tx(move |t| {
            t.execute(
                &format!("INSERT INTO kms_custom_key_stores ({CKS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                &p![r.id, r.name, r.cluster_id, r.trust_anchor, r.wrapped_password, r.connection_state, r.connection_error, r.created_ms],
            )
            .map_err(|e| e.unique_as(|| MetaError::AlreadyExists(r.name.clone())))?;
            Ok(())
        })
        .await
    }

    async fn custom_key_stores(&self) -> Result<Vec<CustomKeyStoreRecord>> {
        self.read(|t| {
            t.query_map(
                &format!("SELECT {CKS_COLUMNS} FROM kms_custom_key_stores ORDER BY created_ms, id"),
                &[],
                cks_row,
            )
        })
        .await
    }

    async fn update_custom_key_store(&self, r: &CustomKeyStoreRecord) -> Result<()> {
        let r = r.clone();
        self.tx(move |t| {
            let n = t
                .execute(
                    "UPDATE kms_custom_key_stores SET name = ?2, cluster_id = ?3, trust_anchor = ?4, wrapped_password = ?5, \
                     connection_state = ?6, connection_error = ?7 WHERE id = ?1",
                    &p![r.id, r.name, r.cluster_id, r.trust_anchor, r.wrapped_password, r.connection_state, r.connection_error],
                )
                .map_err(|e| e.unique_as(|| MetaError::AlreadyExists(r.name.clone())))?;
            if n == 0 {
                return Err(MetaError::NotFound(r.id.clone()));
            }
            Ok(())
        })
        .await
    }

    async fn delete_custom_key_store(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.tx(move |t| {
            let keys: i64 = t.query_scalar(
                "SELECT COUNT(*) FROM kms_keys WHERE custom_key_store_id = ?1",
                &p![id],
            )?;
            if keys > 0 {
                return Err(MetaError::InUse(format!("{keys} key(s)")));
            }
            change_or_not_found(
                t,
                "DELETE FROM kms_custom_key_stores WHERE id = ?1",
                &p![id],
                &id,
            )
        })
        .await
    }

    async fn snapshot_to(&self, path: &Path) -> Result<()> {
        let path = path
            .to_str()
            .ok_or_else(|| MetaError::Backend("the snapshot path is not UTF-8".into()))?
            .to_owned();
        self.sqlite_snapshot(path).await
    }

    async fn wrapped_secrets(&self) -> Result<Vec<WrappedSecret>> {
        self.tx(|t| {
            let mut out = t.query_map(
                "SELECT key_id, version, wrapped FROM kms_key_materials WHERE length(wrapped) > 0 ORDER BY key_id, version",
                &[],
                |r| {
                    Ok(WrappedSecret {
                        kind: WrappedKind::KeyMaterial {
                            key_id: r.get(0)?,
                            version: r.get(1)?,
                        },
                        wrapped: r.get(2)?,
                    })
                },
            )?;
            out.extend(t.query_map(
                "SELECT access_key_id, wrapped_secret FROM access_keys ORDER BY access_key_id",
                &[],
                |r| {
                    Ok(WrappedSecret {
                        kind: WrappedKind::SecretAccessKey {
                            access_key_id: r.get(0)?,
                        },
                        wrapped: r.get(1)?,
                    })
                },
            )?);
            out.extend(t.query_map(
                "SELECT id, wrapped FROM s3_master_keys ORDER BY id",
                &[],
                |r| {
                    Ok(WrappedSecret {
                        kind: WrappedKind::S3MasterKey { id: r.get(0)? },
                        wrapped: r.get(1)?,
                    })
                },
            )?);
            out.extend(t.query_map(
                "SELECT id, wrapped_password FROM kms_custom_key_stores ORDER BY id",
                &[],
                |r| {
                    Ok(WrappedSecret {
                        kind: WrappedKind::KeyStorePassword { id: r.get(0)? },
                        wrapped: r.get(1)?,
                    })
                },
            )?);
            out.extend(t.query_map(
                "SELECT key_id, token_hash, wrapped_private FROM kms_import_tokens ORDER BY token_hash",
                &[],
                |r| {
                    Ok(WrappedSecret {
                        kind: WrappedKind::ImportWrappingKey {
                            key_id: r.get(0)?,
                            token_hash: r.get(1)?,
                        },
                        wrapped: r.get(2)?,
                    })
                },
            )?);
            Ok(out)
        })
        .await
    }

    async fn replace_wrapped(&self, old: &WrappedSecret, new_wrapped: &[u8]) -> Result<bool> {
        let old = old.clone();
        let new_wrapped = new_wrapped.to_vec();
        self.tx(move |t| replace_one(t, &old, &new_wrapped)).await
    }

    async fn replace_wrapped_all(&self, changes: Vec<(WrappedSecret, Vec<u8>)>) -> Result<usize> {
        self.tx(move |t| {
            for (old, new) in &changes {
                if !replace_one(t, old, new)? {
                    return Err(MetaError::Backend(format!(
                        "{:?} changed while it was being rewrapped; nothing was replaced",
                        old.kind
                    )));
                }
            }
            Ok(changes.len())
        })
        .await
    }
}

const GRANT_COLUMNS: &str = "grant_id, key_id, name, grantee, retiring, operations, constraint_type, \
    constraint_ctx, issuing_account, creator, created_ms";

fn pairs_json(pairs: &[(String, String)]) -> String {
    let m: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(m).to_string()
}

/// Grants whose `column` equals `value`, by grant id after `after`.
fn grant_page(
    t: &mut dyn Tx,
    column: &str,
    value: &str,
    after: &str,
    limit: usize,
) -> Result<Page<GrantRecord>> {
    let rows = t.query_map(
        &format!(
            "SELECT {GRANT_COLUMNS} FROM kms_grants WHERE {column} = ?1 AND grant_id > ?2 ORDER BY grant_id LIMIT ?3"
        ),
        &p![value, after, limit as i64 + 1],
        grant_row,
    )?;
    Ok(page(rows, limit))
}

fn grant_row(r: &Row) -> Result<GrantRecord> {
    let ops: String = r.get(5)?;
    let ctype: Option<String> = r.get(6)?;
    let cctx: Option<String> = r.get(7)?;
    let constraint = ctype.map(|t| {
        let pairs = cctx
            .and_then(|j| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&j).ok()
            })
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        (t, pairs)
    });
    Ok(GrantRecord {
        grant_id: r.get(0)?,
        key_id: r.get(1)?,
        name: r.get(2)?,
        grantee: r.get(3)?,
        retiring: r.get(4)?,
        operations: ops
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        constraint,
        issuing_account: r.get(8)?,
        creator: r.get(9)?,
        created_ms: r.get(10)?,
    })
}

fn access_key_row(r: &Row) -> Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        access_key_id: r.get(0)?,
        wrapped_secret: r.get(1)?,
        principal_arn: r.get(2)?,
        status: r.get(3)?,
        created_ms: r.get(4)?,
    })
}

fn entity_row(kind: IamKind, r: &Row) -> Result<IamEntityRecord> {
    Ok(IamEntityRecord {
        kind,
        name: r.get(0)?,
        id: r.get(1)?,
        path: r.get(2)?,
        created_ms: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::key;

    fn material(id: &str, v: u32) -> MaterialRecord {
        MaterialRecord::generated(id, v, vec![v as u8; 8], 1, None)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_materials_aliases_tags() {
        for s in crate::testing::stores().await {
            keys_materials_aliases_tags_on(s).await;
        }
    }

    async fn keys_materials_aliases_tags_on(s: SqlStore) {
        s.create_key(
            &key("a"),
            Some(&material("a", 1)),
            &[("t".into(), "1".into())],
            "{}",
        )
        .await
        .expect("create");
        assert!(matches!(
            s.create_key(&key("a"), Some(&material("a", 1)), &[], "{}")
                .await,
            Err(MetaError::AlreadyExists(_))
        ));
        s.create_key(&key("b"), Some(&material("b", 1)), &[], "{}")
            .await
            .expect("create");
        let p = s.list_keys(None, 1).await.expect("list");
        assert_eq!((p.items.len(), p.truncated), (1, true));
        let p = s.list_keys(Some("a"), 1).await.expect("list");
        assert_eq!((p.items[0].key_id.as_str(), p.truncated), ("b", false));

        let mut k = key("a");
        k.current_version = 2;
        s.add_material(&k, &material("a", 2)).await.expect("rotate");
        assert_eq!(
            s.key("a")
                .await
                .expect("get")
                .expect("exists")
                .current_version,
            2
        );
        assert_eq!(s.materials("a").await.expect("materials").len(), 2);
        assert!(matches!(
            s.add_material(&k, &material("a", 2)).await,
            Err(MetaError::AlreadyExists(_))
        ));

        let al = AliasRecord {
            name: "alias/x".into(),
            target_key_id: "a".into(),
            created_ms: 1,
            updated_ms: 1,
        };
        s.create_alias(&al).await.expect("alias");
        assert!(matches!(
            s.create_alias(&al).await,
            Err(MetaError::AlreadyExists(_))
        ));
        s.update_alias("alias/x", "b", 2).await.expect("update");
        assert_eq!(
            s.list_aliases(Some("b"), None, 10)
                .await
                .expect("list")
                .items
                .len(),
            1
        );
        assert!(
            s.list_aliases(Some("a"), None, 10)
                .await
                .expect("list")
                .items
                .is_empty()
        );

        s.put_tags("a", &[("t".into(), "2".into()), ("u".into(), "3".into())])
            .await
            .expect("tags");
        assert_eq!(
            s.tags("a").await.expect("tags"),
            vec![("t".into(), "2".into()), ("u".into(), "3".into())]
        );
        s.remove_tags("a", &["t".into()]).await.expect("untag");
        assert_eq!(s.tags("a").await.expect("tags").len(), 1);

        s.delete_key("b").await.expect("delete");
        assert!(s.key("b").await.expect("get").is_none());
        assert!(s.alias("alias/x").await.expect("alias").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_keys() {
        for s in crate::testing::stores().await {
            due_keys_on(s).await;
        }
    }

    async fn due_keys_on(s: SqlStore) {
        let mut k = key("a");
        k.deletion_ms = Some(100);
        s.create_key(&k, Some(&material("a", 1)), &[], "{}")
            .await
            .expect("create");
        let mut k = key("b");
        k.rotation_enabled = true;
        k.next_rotation_ms = Some(200);
        s.create_key(&k, Some(&material("b", 1)), &[], "{}")
            .await
            .expect("create");
        assert!(s.keys_due(50).await.expect("due").is_empty());
        assert_eq!(s.keys_due(150).await.expect("due").len(), 1);
        assert_eq!(s.keys_due(250).await.expect("due").len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn iam_entities_policies_and_key_policies() {
        for s in crate::testing::stores().await {
            iam_entities_policies_and_key_policies_on(s).await;
        }
    }

    async fn iam_entities_policies_and_key_policies_on(s: SqlStore) {
        let user = |name: &str, id: &str| IamEntityRecord {
            kind: IamKind::User,
            name: name.into(),
            id: id.into(),
            path: "/".into(),
            created_ms: 1,
        };
        s.create_iam_entity(&user("Alice", "AIDA1"))
            .await
            .expect("create");
        assert!(matches!(
            s.create_iam_entity(&user("alice", "AIDA2")).await,
            Err(MetaError::AlreadyExists(_))
        ));
        let found = s
            .iam_entity(IamKind::User, "ALICE")
            .await
            .expect("get")
            .expect("found");
        assert_eq!(found.name, "Alice");
        assert!(
            s.iam_entity(IamKind::Group, "Alice")
                .await
                .expect("get")
                .is_none()
        );
        s.create_iam_entity(&IamEntityRecord {
            kind: IamKind::Group,
            name: "admins".into(),
            id: "AGPA1".into(),
            path: "/".into(),
            created_ms: 1,
        })
        .await
        .expect("group");
        s.add_group_member("admins", "Alice").await.expect("add");
        s.add_group_member("Admins", "alice")
            .await
            .expect("idempotent");
        assert_eq!(s.groups_of("alice").await.expect("groups").len(), 1);
        s.put_iam_policy(IamKind::User, "Alice", "p1", "{1}")
            .await
            .expect("put");
        s.put_iam_policy(IamKind::User, "alice", "P1", "{2}")
            .await
            .expect("replace");
        assert_eq!(
            s.iam_policies(IamKind::User, "ALICE").await.expect("list"),
            vec![("p1".to_owned(), "{2}".to_owned())]
        );
        s.delete_iam_entity(IamKind::User, "alice")
            .await
            .expect("delete");
        assert!(s.groups_of("alice").await.expect("groups").is_empty());
        assert!(
            s.iam_policies(IamKind::User, "alice")
                .await
                .expect("list")
                .is_empty()
        );
        assert!(matches!(
            s.remove_group_member("admins", "alice").await,
            Err(MetaError::NotFound(_))
        ));

        s.create_key(&key("k"), Some(&material("k", 1)), &[], "{\"a\":1}")
            .await
            .expect("key");
        assert_eq!(
            s.key_policy("k").await.expect("policy").as_deref(),
            Some("{\"a\":1}")
        );
        s.put_key_policy("k", "{\"b\":2}", 2).await.expect("put");
        assert_eq!(
            s.key_policy("k").await.expect("policy").as_deref(),
            Some("{\"b\":2}")
        );
        assert!(matches!(
            s.put_key_policy("missing", "{}", 2).await,
            Err(MetaError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_schema() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("meta.db");
        {
            let s = SqlStore::open_sqlite(&path).expect("open");
            s.create_key(&key("a"), Some(&material("a", 1)), &[], "{}")
                .await
                .expect("create");
        }
        let s = SqlStore::open_sqlite(&path).expect("reopen");
        assert!(s.key("a").await.expect("get").is_some());
    }

    /// A SQLite database as schema version `version` left it.
    fn sqlite_at_version(path: &std::path::Path, version: usize) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).expect("open");
        c.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .expect("table");
        for (i, sql) in crate::sql::SQLITE_MIGRATIONS[..version].iter().enumerate() {
            c.execute_batch(sql).expect("migrate");
            c.execute(
                "INSERT INTO schema_migrations VALUES (?1, 0)",
                [i as i64 + 1],
            )
            .expect("version");
        }
        c
    }

    #[tokio::test]
    async fn schema_3_moves_import_state_onto_material_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("meta.db");
        {
            // A database as schema version 2 left it: one imported key with material and a
            // ValidTo, one whose imported material was deleted (no row, fingerprint kept).
            let c = sqlite_at_version(&path, 2);
            c.execute_batch(
                "INSERT INTO kms_keys (key_id, created_ms, description, key_usage, key_spec, origin, key_manager, state, \
                 rotation_enabled, current_version, expiration_model, valid_to_ms, import_fingerprint) VALUES \
                 ('live', 1, '', 'ENCRYPT_DECRYPT', 'SYMMETRIC_DEFAULT', 'EXTERNAL', 'CUSTOMER', 'Enabled', 0, 1, 'KEY_MATERIAL_EXPIRES', 500, X'AA'), \
                 ('gone', 1, '', 'ENCRYPT_DECRYPT', 'SYMMETRIC_DEFAULT', 'EXTERNAL', 'CUSTOMER', 'PendingImport', 0, 0, NULL, NULL, X'BB'), \
                 ('never', 1, '', 'ENCRYPT_DECRYPT', 'SYMMETRIC_DEFAULT', 'EXTERNAL', 'CUSTOMER', 'PendingImport', 0, 0, NULL, NULL, NULL);
                 INSERT INTO kms_key_materials (key_id, version, wrapped, created_ms) VALUES ('live', 1, X'0102', 1);",
            )
            .expect("rows");
        }
        let s = SqlStore::open_sqlite(&path).expect("upgrade");
        let live = s.materials("live").await.expect("live");
        assert_eq!(live.len(), 1);
        assert!(live[0].imported);
        assert_eq!(live[0].valid_to_ms, Some(500));
        assert_eq!(live[0].fingerprint.as_deref(), Some(&[0xAA][..]));
        let gone = s.materials("gone").await.expect("gone");
        assert_eq!(gone.len(), 1);
        assert!(!gone[0].imported && gone[0].wrapped.is_empty());
        assert_eq!(gone[0].fingerprint.as_deref(), Some(&[0xBB][..]));
        assert_eq!(
            s.key("gone")
                .await
                .expect("key")
                .expect("exists")
                .current_version,
            1
        );
        assert!(s.materials("never").await.expect("never").is_empty());
        // The expiry is found through the material row.
        let due: Vec<String> = s
            .keys_due(600)
            .await
            .expect("due")
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        assert_eq!(due, ["live"]);
    }

    #[tokio::test]
    async fn schema_9_keeps_findings_and_leaves_them_to_be_indexed() {
        use crate::DiscoveryMeta;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("meta.db");
        {
            // A database as schema version 8 left it: one finding, its document in its row.
            let c = sqlite_at_version(&path, 8);
            c.execute_batch(
                "INSERT INTO discovery_findings VALUES \
                 ('f1', 'b', 'k', 'HIGH', 'T', 'AUTOMATED', 1, 2, 0, '{\"id\":\"f1\"}');",
            )
            .expect("rows");
        }
        let s = SqlStore::open_sqlite(&path).expect("upgrade");
        let old = s.unindexed_findings(10).await.expect("unindexed");
        assert_eq!(old.len(), 1);
        assert_eq!(
            (old[0].id.as_str(), old[0].doc.as_str()),
            ("f1", "{\"id\":\"f1\"}")
        );
        s.index_findings(&[("f1".into(), vec![("type".into(), "T".into())])])
            .await
            .expect("index");
        assert!(
            s.unindexed_findings(10)
                .await
                .expect("none left")
                .is_empty()
        );
        let by_term = s
            .query_findings(&crate::FindingQuery {
                tests: vec![crate::FindingTest::In(
                    crate::FindingField::Term("type".into()),
                    vec![crate::Scalar::Text("T".into())],
                )],
                order: crate::FindingField::Id,
                descending: false,
                after: None,
                limit: 10,
            })
            .await
            .expect("query");
        assert_eq!(by_term.len(), 1);
    }
}
