//! The embedded engine: one SQLite file in the data dir, in WAL mode with `synchronous=FULL`, so an
//! acknowledged transaction survives a crash of the process or the machine.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

mod discovery;
mod objects;

use crate::{
    AccessKeyRecord, AliasRecord, CustomKeyStoreRecord, GrantRecord, IamEntityRecord, IamKind,
    ImportTokenRecord, KeyRecord, MaterialRecord, MetaError, MetaStore, Page, Result, WrappedKind,
    WrappedSecret,
};

/// Forward-only schema migrations; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE kms_keys (
    key_id               TEXT PRIMARY KEY,
    created_ms           BIGINT NOT NULL,
    description          TEXT NOT NULL,
    key_usage            TEXT NOT NULL,
    key_spec             TEXT NOT NULL,
    origin               TEXT NOT NULL,
    key_manager          TEXT NOT NULL,
    state                TEXT NOT NULL,
    deletion_ms          BIGINT,
    pending_window_days  INTEGER,
    rotation_enabled     INTEGER NOT NULL,
    rotation_period_days INTEGER,
    next_rotation_ms     BIGINT,
    current_version      INTEGER NOT NULL
);
CREATE TABLE kms_key_materials (
    key_id        TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    wrapped       BLOB NOT NULL,
    created_ms    BIGINT NOT NULL,
    rotation_type TEXT,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE kms_aliases (
    name          TEXT PRIMARY KEY,
    target_key_id TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);
CREATE INDEX kms_aliases_by_key ON kms_aliases(target_key_id);
CREATE TABLE kms_tags (
    key_id    TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);
CREATE TABLE access_keys (
    access_key_id  TEXT PRIMARY KEY,
    wrapped_secret BLOB NOT NULL,
    principal_arn  TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_ms     BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE kms_keys ADD COLUMN expiration_model TEXT;
ALTER TABLE kms_keys ADD COLUMN valid_to_ms BIGINT;
ALTER TABLE kms_keys ADD COLUMN import_fingerprint BLOB;
CREATE TABLE kms_import_tokens (
    token_hash       BLOB PRIMARY KEY,
    key_id           TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    wrapping_alg     TEXT NOT NULL,
    wrapping_spec    TEXT NOT NULL,
    wrapped_private  BLOB NOT NULL,
    valid_to_ms      BIGINT NOT NULL
);
CREATE INDEX kms_import_tokens_by_key ON kms_import_tokens(key_id);
"#,
    // Imported material per row: a key with imported material can hold several (rotation of
    // imported keys), each with its own expiry and fingerprint.
    r#"
ALTER TABLE kms_key_materials ADD COLUMN imported INTEGER NOT NULL DEFAULT 1;
ALTER TABLE kms_key_materials ADD COLUMN pending_rotation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE kms_key_materials ADD COLUMN expiration_model TEXT;
ALTER TABLE kms_key_materials ADD COLUMN valid_to_ms BIGINT;
ALTER TABLE kms_key_materials ADD COLUMN description TEXT;
ALTER TABLE kms_key_materials ADD COLUMN fingerprint BLOB;
UPDATE kms_key_materials SET
    expiration_model = (SELECT k.expiration_model FROM kms_keys k WHERE k.key_id = kms_key_materials.key_id),
    valid_to_ms = (SELECT k.valid_to_ms FROM kms_keys k WHERE k.key_id = kms_key_materials.key_id),
    fingerprint = (SELECT k.import_fingerprint FROM kms_keys k WHERE k.key_id = kms_key_materials.key_id)
WHERE key_id IN (SELECT key_id FROM kms_keys WHERE origin = 'EXTERNAL');
INSERT INTO kms_key_materials (key_id, version, wrapped, created_ms, rotation_type, imported, fingerprint)
    SELECT key_id, 1, X'', created_ms, NULL, 0, import_fingerprint FROM kms_keys
    WHERE origin = 'EXTERNAL' AND current_version = 0 AND import_fingerprint IS NOT NULL;
UPDATE kms_keys SET current_version = 1
    WHERE origin = 'EXTERNAL' AND current_version = 0 AND import_fingerprint IS NOT NULL;
CREATE INDEX kms_key_materials_by_expiry ON kms_key_materials(valid_to_ms) WHERE valid_to_ms IS NOT NULL;
"#,
    // Key policies; IAM users, groups, memberships and inline policies. IAM names are unique
    // without regard to case, as in AWS.
    r#"
CREATE TABLE kms_key_policies (
    key_id     TEXT PRIMARY KEY REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    policy     TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE iam_entities (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL COLLATE NOCASE,
    id         TEXT NOT NULL UNIQUE,
    path       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE iam_group_members (
    group_name TEXT NOT NULL COLLATE NOCASE,
    user_name  TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX iam_group_members_by_user ON iam_group_members(user_name);
CREATE TABLE iam_policies (
    owner_kind  TEXT NOT NULL,
    owner_name  TEXT NOT NULL COLLATE NOCASE,
    policy_name TEXT NOT NULL COLLATE NOCASE,
    document    TEXT NOT NULL,
    PRIMARY KEY (owner_kind, owner_name, policy_name)
);
CREATE INDEX access_keys_by_principal ON access_keys(principal_arn);
"#,
    // Grants: operations as a comma-separated list, the constraint as its type and a JSON object.
    r#"
CREATE TABLE kms_grants (
    grant_id        TEXT PRIMARY KEY,
    key_id          TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    name            TEXT,
    grantee         TEXT NOT NULL,
    retiring        TEXT,
    operations      TEXT NOT NULL,
    constraint_type TEXT,
    constraint_ctx  TEXT,
    issuing_account TEXT NOT NULL,
    creator         TEXT NOT NULL,
    created_ms      BIGINT NOT NULL
);
CREATE INDEX kms_grants_by_key ON kms_grants(key_id, grant_id);
CREATE INDEX kms_grants_by_grantee ON kms_grants(key_id, grantee);
CREATE INDEX kms_grants_by_retiring ON kms_grants(retiring, grant_id) WHERE retiring IS NOT NULL;
"#,
    // Custom key stores (PKCS#11 tokens behind AWS's CloudHSM key store API) and the keys in them.
    r#"
CREATE TABLE kms_custom_key_stores (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    cluster_id        TEXT NOT NULL,
    trust_anchor      TEXT NOT NULL,
    wrapped_password  BLOB NOT NULL,
    connection_state  TEXT NOT NULL,
    connection_error  TEXT,
    created_ms        BIGINT NOT NULL
);
ALTER TABLE kms_keys ADD COLUMN custom_key_store_id TEXT REFERENCES kms_custom_key_stores(id);
CREATE INDEX kms_keys_by_custom_key_store ON kms_keys(custom_key_store_id) WHERE custom_key_store_id IS NOT NULL;
"#,
    r#"
CREATE TABLE s3_master_keys (
    id          INTEGER PRIMARY KEY,
    wrapped     BLOB NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE s3_buckets (
    name                TEXT PRIMARY KEY,
    owner_account       TEXT NOT NULL,
    region              TEXT NOT NULL,
    created_ms          BIGINT NOT NULL,
    versioning          TEXT NOT NULL,
    encryption          TEXT,
    policy              TEXT,
    public_access_block TEXT,
    tags                TEXT
);
CREATE TABLE s3_objects (
    bucket           TEXT NOT NULL REFERENCES s3_buckets(name),
    key              TEXT NOT NULL,
    version_id       TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    is_latest        INTEGER NOT NULL,
    delete_marker    INTEGER NOT NULL,
    size             BIGINT NOT NULL,
    etag             TEXT NOT NULL,
    last_modified_ms BIGINT NOT NULL,
    blob             TEXT,
    sse_mode         TEXT NOT NULL,
    sealed_key       BLOB NOT NULL,
    sse_key_id       TEXT,
    sse_context      TEXT,
    sse_key_check    BLOB,
    bucket_key       INTEGER NOT NULL,
    attrs            TEXT NOT NULL,
    tags             TEXT NOT NULL,
    PRIMARY KEY (bucket, key, version_id)
);
CREATE INDEX s3_objects_latest ON s3_objects(bucket, key) WHERE is_latest = 1;
CREATE INDEX s3_objects_by_seq ON s3_objects(bucket, key, seq);
CREATE INDEX s3_objects_by_blob ON s3_objects(blob) WHERE blob IS NOT NULL;
CREATE TABLE s3_object_parts (
    bucket       TEXT NOT NULL,
    key          TEXT NOT NULL,
    version_id   TEXT NOT NULL,
    part_number  INTEGER NOT NULL,
    size         BIGINT NOT NULL,
    blob         TEXT NOT NULL,
    PRIMARY KEY (bucket, key, version_id, part_number),
    FOREIGN KEY (bucket, key, version_id) REFERENCES s3_objects(bucket, key, version_id) ON DELETE CASCADE
);
CREATE INDEX s3_object_parts_by_blob ON s3_object_parts(blob);
CREATE TABLE s3_uploads (
    upload_id        TEXT PRIMARY KEY,
    bucket           TEXT NOT NULL REFERENCES s3_buckets(name),
    key              TEXT NOT NULL,
    initiated_ms     BIGINT NOT NULL,
    sse_mode         TEXT NOT NULL,
    sealed_key       BLOB NOT NULL,
    sse_key_id       TEXT,
    sse_context      TEXT,
    sse_key_check    BLOB,
    bucket_key       INTEGER NOT NULL,
    attrs            TEXT NOT NULL,
    tags             TEXT NOT NULL
);
CREATE INDEX s3_uploads_by_key ON s3_uploads(bucket, key, upload_id);
CREATE TABLE s3_upload_parts (
    upload_id        TEXT NOT NULL REFERENCES s3_uploads(upload_id) ON DELETE CASCADE,
    part_number      INTEGER NOT NULL,
    size             BIGINT NOT NULL,
    etag             TEXT NOT NULL,
    blob             TEXT NOT NULL,
    checksum         TEXT,
    last_modified_ms BIGINT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE INDEX s3_upload_parts_by_blob ON s3_upload_parts(blob);
CREATE TABLE s3_garbage (
    blob      TEXT PRIMARY KEY,
    since_ms  BIGINT NOT NULL
);
"#,
    // 8: sensitive-data discovery.
    r#"
CREATE TABLE discovery_jobs (
    id            TEXT PRIMARY KEY,
    client_token  TEXT NOT NULL UNIQUE,
    created_ms    BIGINT NOT NULL,
    status        TEXT NOT NULL,
    doc           TEXT NOT NULL
);
CREATE TABLE discovery_findings (
    id            TEXT PRIMARY KEY,
    bucket        TEXT NOT NULL,
    key           TEXT NOT NULL,
    severity      TEXT NOT NULL,
    finding_type  TEXT NOT NULL,
    origin        TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL,
    archived      INTEGER NOT NULL,
    doc           TEXT NOT NULL
);
CREATE INDEX discovery_findings_by_bucket ON discovery_findings(bucket, updated_ms);
CREATE INDEX discovery_findings_by_time ON discovery_findings(updated_ms);
CREATE TABLE discovery_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"#,
];

const MATERIAL_COLUMNS: &str = "key_id, version, wrapped, created_ms, rotation_type, imported, \
     pending_rotation, expiration_model, valid_to_ms, description, fingerprint";

fn material_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MaterialRecord> {
    Ok(MaterialRecord {
        key_id: r.get(0)?,
        version: r.get(1)?,
        wrapped: r.get(2)?,
        created_ms: r.get(3)?,
        rotation_type: r.get(4)?,
        imported: r.get::<_, i64>(5)? != 0,
        pending_rotation: r.get::<_, i64>(6)? != 0,
        expiration_model: r.get(7)?,
        valid_to_ms: r.get(8)?,
        description: r.get(9)?,
        fingerprint: r.get(10)?,
    })
}

fn insert_material(
    tx: &rusqlite::Transaction<'_>,
    m: &MaterialRecord,
    replace: bool,
) -> rusqlite::Result<usize> {
    let verb = if replace {
        "INSERT OR REPLACE"
    } else {
        "INSERT"
    };
    tx.execute(
        &format!(
            "{verb} INTO kms_key_materials ({MATERIAL_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ),
        params![
            m.key_id,
            m.version,
            m.wrapped,
            m.created_ms,
            m.rotation_type,
            i64::from(m.imported),
            i64::from(m.pending_rotation),
            m.expiration_model,
            m.valid_to_ms,
            m.description,
            m.fingerprint
        ],
    )
}

/// SQLite engine. Calls run on the blocking thread pool; one connection serialises writers, which is
/// what SQLite does anyway.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .map_err(backend)?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if current > MIGRATIONS.len() as i64 {
            return Err(MetaError::Backend(format!(
                "the metadata schema is version {current}, newer than this build knows ({}); run a newer coffer",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                params![i as i64 + 1, now_ms()],
            )
            .map_err(backend)?;
            tracing::info!(version = i + 1, "applied metadata schema migration");
        }
        tx.commit().map_err(backend)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-call; SQLite rolled the transaction back, so the
            // connection itself is still consistent.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }
}

/// Replaces one wrapped secret if it still holds the old value.
fn replace_one(c: &Connection, old: &WrappedSecret, new_wrapped: &[u8]) -> Result<bool> {
    let n = match &old.kind {
        WrappedKind::KeyMaterial { key_id, version } => c.execute(
            "UPDATE kms_key_materials SET wrapped = ?1 WHERE key_id = ?2 AND version = ?3 AND wrapped = ?4",
            params![new_wrapped, key_id, version, old.wrapped],
        ),
        WrappedKind::SecretAccessKey { access_key_id } => c.execute(
            "UPDATE access_keys SET wrapped_secret = ?1 WHERE access_key_id = ?2 AND wrapped_secret = ?3",
            params![new_wrapped, access_key_id, old.wrapped],
        ),
        WrappedKind::ImportWrappingKey { token_hash, .. } => c.execute(
            "UPDATE kms_import_tokens SET wrapped_private = ?1 WHERE token_hash = ?2 AND wrapped_private = ?3",
            params![new_wrapped, token_hash, old.wrapped],
        ),
        WrappedKind::KeyStorePassword { id } => c.execute(
            "UPDATE kms_custom_key_stores SET wrapped_password = ?1 WHERE id = ?2 AND wrapped_password = ?3",
            params![new_wrapped, id, old.wrapped],
        ),
        WrappedKind::S3MasterKey { id } => c.execute(
            "UPDATE s3_master_keys SET wrapped = ?1 WHERE id = ?2 AND wrapped = ?3",
            params![new_wrapped, id, old.wrapped],
        ),
    }
    .map_err(backend)?;
    Ok(n == 1)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const KEY_COLUMNS: &str = "key_id, created_ms, description, key_usage, key_spec, origin, key_manager, state, \
     deletion_ms, pending_window_days, rotation_enabled, rotation_period_days, next_rotation_ms, current_version, \
     expiration_model, valid_to_ms, import_fingerprint, custom_key_store_id";

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
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
        rotation_enabled: r.get::<_, i64>(10)? != 0,
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

fn cks_row(r: &Row<'_>) -> rusqlite::Result<CustomKeyStoreRecord> {
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

fn alias_row(r: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    Ok(AliasRecord {
        name: r.get(0)?,
        target_key_id: r.get(1)?,
        created_ms: r.get(2)?,
        updated_ms: r.get(3)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn update_key_row(conn: &Connection, k: &KeyRecord) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE kms_keys SET description = ?2, state = ?3, deletion_ms = ?4, pending_window_days = ?5, \
             rotation_enabled = ?6, rotation_period_days = ?7, next_rotation_ms = ?8, current_version = ?9, \
             expiration_model = ?10, valid_to_ms = ?11, import_fingerprint = ?12 WHERE key_id = ?1",
            params![
                k.key_id,
                k.description,
                k.state,
                k.deletion_ms,
                k.pending_window_days,
                k.rotation_enabled as i64,
                k.rotation_period_days,
                k.next_rotation_ms,
                k.current_version,
                k.expiration_model,
                k.valid_to_ms,
                k.import_fingerprint
            ],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(MetaError::NotFound(k.key_id.clone()));
    }
    Ok(())
}

fn page<T>(mut items: Vec<T>, limit: usize) -> Page<T> {
    let truncated = items.len() > limit;
    items.truncate(limit);
    Page { items, truncated }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn create_key(
        &self,
        key: &KeyRecord,
        material: Option<&MaterialRecord>,
        tags: &[(String, String)],
        policy: &str,
    ) -> Result<()> {
        let (key, material, tags) = (key.clone(), material.cloned(), tags.to_vec());
        let policy = policy.to_owned();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            tx.execute(
                &format!("INSERT INTO kms_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"),
                params![
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
                    key.rotation_enabled as i64,
                    key.rotation_period_days,
                    key.next_rotation_ms,
                    key.current_version,
                    key.expiration_model,
                    key.valid_to_ms,
                    key.import_fingerprint,
                    key.custom_key_store_id
                ],
            )
            .map_err(|e| if is_unique_violation(&e) { MetaError::AlreadyExists(key.key_id.clone()) } else { backend(e) })?;
            if let Some(material) = &material {
                insert_material(&tx, material, false).map_err(backend)?;
            }
            tx.execute(
                "INSERT INTO kms_key_policies (key_id, policy, updated_ms) VALUES (?1, ?2, ?3)",
                params![key.key_id, policy, key.created_ms],
            )
            .map_err(backend)?;
            for (k, v) in &tags {
                tx.execute(
                    "INSERT INTO kms_tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)",
                    params![key.key_id, k, v],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM kms_keys WHERE key_id = ?1"),
                [key_id],
                key_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Page<KeyRecord>> {
        let after = after.unwrap_or("").to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM kms_keys WHERE key_id > ?1 ORDER BY key_id LIMIT ?2"
                ))
                .map_err(backend)?;
            let rows = st
                .query_map(params![after, limit as i64 + 1], key_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn update_key(&self, key: &KeyRecord) -> Result<()> {
        let key = key.clone();
        self.with(move |c| update_key_row(c, &key)).await
    }

    async fn delete_key(&self, key_id: &str) -> Result<()> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            // Explicit deletes keep this correct on engines without ON DELETE CASCADE enforcement.
            for table in [
                "kms_aliases WHERE target_key_id",
                "kms_tags WHERE key_id",
                "kms_key_materials WHERE key_id",
                "kms_import_tokens WHERE key_id",
                "kms_keys WHERE key_id",
            ] {
                tx.execute(&format!("DELETE FROM {table} = ?1"), [&key_id])
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn keys_due(&self, now_ms: i64) -> Result<Vec<KeyRecord>> {
        self.with(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM kms_keys WHERE (deletion_ms IS NOT NULL AND deletion_ms <= ?1) \
                     OR (rotation_enabled <> 0 AND next_rotation_ms IS NOT NULL AND next_rotation_ms <= ?1) \
                     OR key_id IN (SELECT key_id FROM kms_key_materials WHERE imported <> 0 \
                        AND valid_to_ms IS NOT NULL AND valid_to_ms <= ?1) ORDER BY key_id"
                ))
                .map_err(backend)?;
            st.query_map([now_ms], key_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn materials(&self, key_id: &str) -> Result<Vec<MaterialRecord>> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {MATERIAL_COLUMNS} FROM kms_key_materials WHERE key_id = ?1 ORDER BY version"
                ))
                .map_err(backend)?;
            st.query_map([key_id], material_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn add_material(&self, key: &KeyRecord, material: &MaterialRecord) -> Result<()> {
        let (key, material) = (key.clone(), material.clone());
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            insert_material(&tx, &material, false).map_err(|e| {
                if is_unique_violation(&e) {
                    MetaError::AlreadyExists(format!(
                        "{} version {}",
                        material.key_id, material.version
                    ))
                } else {
                    backend(e)
                }
            })?;
            update_key_row(&tx, &key)?;
            tx.commit().map_err(backend)
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
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            for v in remove {
                tx.execute(
                    "DELETE FROM kms_key_materials WHERE key_id = ?1 AND version = ?2",
                    params![key.key_id, v],
                )
                .map_err(backend)?;
            }
            for m in &put {
                insert_material(&tx, m, true).map_err(backend)?;
            }
            update_key_row(&tx, &key)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn put_import_token(&self, t: &ImportTokenRecord) -> Result<()> {
        let t = t.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO kms_import_tokens (token_hash, key_id, wrapping_alg, wrapping_spec, wrapped_private, valid_to_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.token_hash, t.key_id, t.wrapping_alg, t.wrapping_spec, t.wrapped_private, t.valid_to_ms],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn import_token(&self, token_hash: &[u8]) -> Result<Option<ImportTokenRecord>> {
        let hash = token_hash.to_vec();
        self.with(move |c| {
            c.query_row(
                "SELECT token_hash, key_id, wrapping_alg, wrapping_spec, wrapped_private, valid_to_ms \
                 FROM kms_import_tokens WHERE token_hash = ?1",
                [hash],
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
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn delete_import_tokens(
        &self,
        key_id: &str,
        expired_before_ms: Option<i64>,
    ) -> Result<()> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            c.execute(
                "DELETE FROM kms_import_tokens WHERE key_id = ?1 AND (?2 IS NULL OR valid_to_ms < ?2)",
                params![key_id, expired_before_ms],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn create_alias(&self, alias: &AliasRecord) -> Result<()> {
        let a = alias.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO kms_aliases (name, target_key_id, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                params![a.name, a.target_key_id, a.created_ms, a.updated_ms],
            )
            .map_err(|e| if is_unique_violation(&e) { MetaError::AlreadyExists(a.name.clone()) } else { backend(e) })?;
            Ok(())
        })
        .await
    }

    async fn alias(&self, name: &str) -> Result<Option<AliasRecord>> {
        let name = name.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT name, target_key_id, created_ms, updated_ms FROM kms_aliases WHERE name = ?1",
                [name],
                alias_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn update_alias(&self, name: &str, target_key_id: &str, now_ms: i64) -> Result<()> {
        let (name, target) = (name.to_owned(), target_key_id.to_owned());
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE kms_aliases SET target_key_id = ?2, updated_ms = ?3 WHERE name = ?1",
                    params![name, target, now_ms],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(name));
            }
            Ok(())
        })
        .await
    }

    async fn delete_alias(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM kms_aliases WHERE name = ?1", [&name])
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(name));
            }
            Ok(())
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
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT name, target_key_id, created_ms, updated_ms FROM kms_aliases \
                     WHERE name > ?1 AND (?2 IS NULL OR target_key_id = ?2) ORDER BY name LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![after, key_id, limit as i64 + 1], alias_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn put_tags(&self, key_id: &str, tags: &[(String, String)]) -> Result<()> {
        let (key_id, tags) = (key_id.to_owned(), tags.to_vec());
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            for (k, v) in &tags {
                tx.execute(
                    "INSERT INTO kms_tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                    params![key_id, k, v],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn remove_tags(&self, key_id: &str, tag_keys: &[String]) -> Result<()> {
        let (key_id, tag_keys) = (key_id.to_owned(), tag_keys.to_vec());
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            for k in &tag_keys {
                tx.execute(
                    "DELETE FROM kms_tags WHERE key_id = ?1 AND tag_key = ?2",
                    params![key_id, k],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn tags(&self, key_id: &str) -> Result<Vec<(String, String)>> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT tag_key, tag_value FROM kms_tags WHERE key_id = ?1 ORDER BY tag_key",
                )
                .map_err(backend)?;
            st.query_map([key_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn put_access_key(&self, r: &AccessKeyRecord) -> Result<()> {
        let r = r.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO access_keys (access_key_id, wrapped_secret, principal_arn, status, created_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (access_key_id) DO UPDATE SET wrapped_secret = excluded.wrapped_secret, \
                 principal_arn = excluded.principal_arn, status = excluded.status",
                params![r.access_key_id, r.wrapped_secret, r.principal_arn, r.status, r.created_ms],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKeyRecord>> {
        let id = access_key_id.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT access_key_id, wrapped_secret, principal_arn, status, created_ms FROM access_keys WHERE access_key_id = ?1",
                [id],
                |r| {
                    Ok(AccessKeyRecord {
                        access_key_id: r.get(0)?,
                        wrapped_secret: r.get(1)?,
                        principal_arn: r.get(2)?,
                        status: r.get(3)?,
                        created_ms: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn key_policy(&self, key_id: &str) -> Result<Option<String>> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            c.prepare_cached("SELECT policy FROM kms_key_policies WHERE key_id = ?1")
                .map_err(backend)?
                .query_row([key_id], |r| r.get(0))
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn put_key_policy(&self, key_id: &str, policy: &str, now_ms: i64) -> Result<()> {
        let (key_id, policy) = (key_id.to_owned(), policy.to_owned());
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT INTO kms_key_policies (key_id, policy, updated_ms) \
                     SELECT key_id, ?2, ?3 FROM kms_keys WHERE key_id = ?1 \
                     ON CONFLICT (key_id) DO UPDATE SET policy = excluded.policy, updated_ms = excluded.updated_ms",
                    params![key_id, policy, now_ms],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(key_id));
            }
            Ok(())
        })
        .await
    }

    async fn access_keys_of(&self, principal_arn: &str) -> Result<Vec<AccessKeyRecord>> {
        let arn = principal_arn.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT access_key_id, wrapped_secret, principal_arn, status, created_ms FROM access_keys \
                     WHERE principal_arn = ?1 ORDER BY created_ms, access_key_id",
                )
                .map_err(backend)?;
            st.query_map([arn], access_key_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn set_access_key_status(&self, access_key_id: &str, status: &str) -> Result<()> {
        let (id, status) = (access_key_id.to_owned(), status.to_owned());
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE access_keys SET status = ?2 WHERE access_key_id = ?1",
                    params![id, status],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn delete_access_key(&self, access_key_id: &str) -> Result<()> {
        let id = access_key_id.to_owned();
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM access_keys WHERE access_key_id = ?1", [&id])
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn create_iam_entity(&self, e: &IamEntityRecord) -> Result<()> {
        let e = e.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO iam_entities (kind, name, id, path, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.kind.as_str(), e.name, e.id, e.path, e.created_ms],
            )
            .map_err(|err| {
                if is_unique_violation(&err) {
                    MetaError::AlreadyExists(e.name.clone())
                } else {
                    backend(err)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn iam_entity(&self, kind: IamKind, name: &str) -> Result<Option<IamEntityRecord>> {
        let name = name.to_owned();
        self.with(move |c| {
            c.prepare_cached(
                "SELECT name, id, path, created_ms FROM iam_entities WHERE kind = ?1 AND name = ?2",
            )
            .map_err(backend)?
            .query_row(params![kind.as_str(), name], |r| entity_row(kind, r))
            .optional()
            .map_err(backend)
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
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT name, id, path, created_ms FROM iam_entities \
                     WHERE kind = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![kind.as_str(), after, limit as i64 + 1], |r| {
                    entity_row(kind, r)
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn delete_iam_entity(&self, kind: IamKind, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let n = tx
                .execute(
                    "DELETE FROM iam_entities WHERE kind = ?1 AND name = ?2",
                    params![kind.as_str(), name],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(name));
            }
            let member_column = match kind {
                IamKind::User => "user_name",
                IamKind::Group => "group_name",
            };
            tx.execute(
                &format!("DELETE FROM iam_group_members WHERE {member_column} = ?1"),
                [&name],
            )
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM iam_policies WHERE owner_kind = ?1 AND owner_name = ?2",
                params![kind.as_str(), name],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn add_group_member(&self, group: &str, user: &str) -> Result<()> {
        let (group, user) = (group.to_owned(), user.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT INTO iam_group_members (group_name, user_name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![group, user],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn remove_group_member(&self, group: &str, user: &str) -> Result<()> {
        let (group, user) = (group.to_owned(), user.to_owned());
        self.with(move |c| {
            let n = c
                .execute(
                    "DELETE FROM iam_group_members WHERE group_name = ?1 AND user_name = ?2",
                    params![group, user],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(user));
            }
            Ok(())
        })
        .await
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<IamEntityRecord>> {
        let user = user.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT e.name, e.id, e.path, e.created_ms FROM iam_group_members m \
                     JOIN iam_entities e ON e.kind = 'group' AND e.name = m.group_name \
                     WHERE m.user_name = ?1 ORDER BY e.name",
                )
                .map_err(backend)?;
            st.query_map([user], |r| entity_row(IamKind::Group, r))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        let group = group.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT user_name FROM iam_group_members WHERE group_name = ?1 ORDER BY user_name",
                )
                .map_err(backend)?;
            st.query_map([group], |r| r.get(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
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
        self.with(move |c| {
            c.execute(
                "INSERT INTO iam_policies (owner_kind, owner_name, policy_name, document) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (owner_kind, owner_name, policy_name) DO UPDATE SET document = excluded.document",
                params![kind.as_str(), owner, name, document],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_iam_policy(&self, kind: IamKind, owner: &str, name: &str) -> Result<()> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        self.with(move |c| {
            let n = c
                .execute(
                    "DELETE FROM iam_policies WHERE owner_kind = ?1 AND owner_name = ?2 AND policy_name = ?3",
                    params![kind.as_str(), owner, name],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(name));
            }
            Ok(())
        })
        .await
    }

    async fn iam_policies(&self, kind: IamKind, owner: &str) -> Result<Vec<(String, String)>> {
        let owner = owner.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT policy_name, document FROM iam_policies \
                     WHERE owner_kind = ?1 AND owner_name = ?2 ORDER BY policy_name",
                )
                .map_err(backend)?;
            st.query_map(params![kind.as_str(), owner], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)
        })
        .await
    }

    async fn create_grant(&self, g: &GrantRecord) -> Result<()> {
        let g = g.clone();
        self.with(move |c| {
            let (ctype, cctx) = match &g.constraint {
                Some((t, pairs)) => (Some(t.clone()), Some(pairs_json(pairs))),
                None => (None, None),
            };
            c.execute(
                &format!("INSERT INTO kms_grants ({GRANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
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
            .map_err(|e| if is_unique_violation(&e) { MetaError::AlreadyExists(g.grant_id.clone()) } else { backend(e) })?;
            Ok(())
        })
        .await
    }

    async fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        let id = grant_id.to_owned();
        self.with(move |c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM kms_grants WHERE grant_id = ?1"
            ))
            .map_err(backend)?
            .query_row([id], grant_row)
            .optional()
            .map_err(backend)
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
        self.with(move |c| grant_page(c, "key_id", &key_id, &after, limit))
            .await
    }

    async fn grants_retirable_by(
        &self,
        retiring: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>> {
        let (retiring, after) = (retiring.to_owned(), after.unwrap_or("").to_owned());
        self.with(move |c| grant_page(c, "retiring", &retiring, &after, limit))
            .await
    }

    async fn grants_for(&self, key_id: &str, grantee: &str) -> Result<Vec<GrantRecord>> {
        let (key_id, grantee) = (key_id.to_owned(), grantee.to_owned());
        self.with(move |c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM kms_grants WHERE key_id = ?1 AND grantee = ?2 ORDER BY grant_id"
            ))
            .map_err(backend)?
            .query_map(params![key_id, grantee], grant_row)
            .map_err(backend)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)
        })
        .await
    }

    async fn grant_count(&self, key_id: &str) -> Result<usize> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            c.prepare_cached("SELECT COUNT(*) FROM kms_grants WHERE key_id = ?1")
                .map_err(backend)?
                .query_row([key_id], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
                .map_err(backend)
        })
        .await
    }

    async fn delete_grant(&self, grant_id: &str) -> Result<()> {
        let id = grant_id.to_owned();
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM kms_grants WHERE grant_id = ?1", [&id])
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn create_custom_key_store(&self, r: &CustomKeyStoreRecord) -> Result<()> {
        let r = r.clone();
        self.with(move |c| {
            c.execute(
                &format!("INSERT INTO kms_custom_key_stores ({CKS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![r.id, r.name, r.cluster_id, r.trust_anchor, r.wrapped_password, r.connection_state, r.connection_error, r.created_ms],
            )
            .map_err(|e| if is_unique_violation(&e) { MetaError::AlreadyExists(r.name.clone()) } else { backend(e) })?;
            Ok(())
        })
        .await
    }

    async fn custom_key_stores(&self) -> Result<Vec<CustomKeyStoreRecord>> {
        self.with(|c| {
            let mut q = c
                .prepare(&format!(
                    "SELECT {CKS_COLUMNS} FROM kms_custom_key_stores ORDER BY created_ms, id"
                ))
                .map_err(backend)?;
            let rows = q.query_map([], cks_row).map_err(backend)?;
            rows.map(|r| r.map_err(backend)).collect()
        })
        .await
    }

    async fn update_custom_key_store(&self, r: &CustomKeyStoreRecord) -> Result<()> {
        let r = r.clone();
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE kms_custom_key_stores SET name = ?2, cluster_id = ?3, trust_anchor = ?4, wrapped_password = ?5, \
                     connection_state = ?6, connection_error = ?7 WHERE id = ?1",
                    params![r.id, r.name, r.cluster_id, r.trust_anchor, r.wrapped_password, r.connection_state, r.connection_error],
                )
                .map_err(|e| if is_unique_violation(&e) { MetaError::AlreadyExists(r.name.clone()) } else { backend(e) })?;
            if n == 0 {
                return Err(MetaError::NotFound(r.id.clone()));
            }
            Ok(())
        })
        .await
    }

    async fn delete_custom_key_store(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let keys: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM kms_keys WHERE custom_key_store_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if keys > 0 {
                return Err(MetaError::InUse(format!("{keys} key(s)")));
            }
            let n = tx
                .execute("DELETE FROM kms_custom_key_stores WHERE id = ?1", [&id])
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(id));
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn snapshot_to(&self, path: &Path) -> Result<()> {
        let path = path
            .to_str()
            .ok_or_else(|| MetaError::Backend("the snapshot path is not UTF-8".into()))?
            .to_owned();
        // VACUUM INTO reads in one transaction: a copy as of one instant, compacted.
        self.with(move |c| {
            c.execute("VACUUM INTO ?1", [path]).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn wrapped_secrets(&self) -> Result<Vec<WrappedSecret>> {
        self.with(|c| {
            let tx = c.transaction().map_err(backend)?;
            let mut out = Vec::new();
            {
                let mut q = tx
                    .prepare(
                        "SELECT key_id, version, wrapped FROM kms_key_materials WHERE length(wrapped) > 0 ORDER BY key_id, version",
                    )
                    .map_err(backend)?;
                let rows = q
                    .query_map([], |r| {
                        Ok(WrappedSecret {
                            kind: WrappedKind::KeyMaterial {
                                key_id: r.get(0)?,
                                version: r.get(1)?,
                            },
                            wrapped: r.get(2)?,
                        })
                    })
                    .map_err(backend)?;
                for r in rows {
                    out.push(r.map_err(backend)?);
                }
                let mut q = tx
                    .prepare("SELECT access_key_id, wrapped_secret FROM access_keys ORDER BY access_key_id")
                    .map_err(backend)?;
                let rows = q
                    .query_map([], |r| {
                        Ok(WrappedSecret {
                            kind: WrappedKind::SecretAccessKey {
                                access_key_id: r.get(0)?,
                            },
                            wrapped: r.get(1)?,
                        })
                    })
                    .map_err(backend)?;
                for r in rows {
                    out.push(r.map_err(backend)?);
                }
                let mut q = tx
                    .prepare("SELECT id, wrapped FROM s3_master_keys ORDER BY id")
                    .map_err(backend)?;
                let rows = q
                    .query_map([], |r| {
                        Ok(WrappedSecret {
                            kind: WrappedKind::S3MasterKey { id: r.get(0)? },
                            wrapped: r.get(1)?,
                        })
                    })
                    .map_err(backend)?;
                for r in rows {
                    out.push(r.map_err(backend)?);
                }
                let mut q = tx
                    .prepare("SELECT id, wrapped_password FROM kms_custom_key_stores ORDER BY id")
                    .map_err(backend)?;
                let rows = q
                    .query_map([], |r| {
                        Ok(WrappedSecret {
                            kind: WrappedKind::KeyStorePassword { id: r.get(0)? },
                            wrapped: r.get(1)?,
                        })
                    })
                    .map_err(backend)?;
                for r in rows {
                    out.push(r.map_err(backend)?);
                }
                let mut q = tx
                    .prepare("SELECT key_id, token_hash, wrapped_private FROM kms_import_tokens ORDER BY token_hash")
                    .map_err(backend)?;
                let rows = q
                    .query_map([], |r| {
                        Ok(WrappedSecret {
                            kind: WrappedKind::ImportWrappingKey {
                                key_id: r.get(0)?,
                                token_hash: r.get(1)?,
                            },
                            wrapped: r.get(2)?,
                        })
                    })
                    .map_err(backend)?;
                for r in rows {
                    out.push(r.map_err(backend)?);
                }
            }
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn replace_wrapped(&self, old: &WrappedSecret, new_wrapped: &[u8]) -> Result<bool> {
        let old = old.clone();
        let new_wrapped = new_wrapped.to_vec();
        self.with(move |c| replace_one(c, &old, &new_wrapped)).await
    }

    async fn replace_wrapped_all(&self, changes: Vec<(WrappedSecret, Vec<u8>)>) -> Result<usize> {
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            for (old, new) in &changes {
                if !replace_one(&tx, old, new)? {
                    return Err(MetaError::Backend(format!(
                        "{:?} changed while it was being rewrapped; nothing was replaced",
                        old.kind
                    )));
                }
            }
            tx.commit().map_err(backend)?;
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
    c: &mut Connection,
    column: &str,
    value: &str,
    after: &str,
    limit: usize,
) -> Result<Page<GrantRecord>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM kms_grants WHERE {column} = ?1 AND grant_id > ?2 ORDER BY grant_id LIMIT ?3"
        ))
        .map_err(backend)?
        .query_map(params![value, after, limit as i64 + 1], grant_row)
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    Ok(page(rows, limit))
}

fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRecord> {
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

fn access_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        access_key_id: r.get(0)?,
        wrapped_secret: r.get(1)?,
        principal_arn: r.get(2)?,
        status: r.get(3)?,
        created_ms: r.get(4)?,
    })
}

fn entity_row(kind: IamKind, r: &rusqlite::Row<'_>) -> rusqlite::Result<IamEntityRecord> {
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

    fn key(id: &str) -> KeyRecord {
        KeyRecord {
            custom_key_store_id: None,
            key_id: id.into(),
            created_ms: 1,
            description: String::new(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            origin: "AWS_KMS".into(),
            key_manager: "CUSTOMER".into(),
            state: "Enabled".into(),
            deletion_ms: None,
            pending_window_days: None,
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation_ms: None,
            current_version: 1,
            expiration_model: None,
            valid_to_ms: None,
            import_fingerprint: None,
        }
    }

    fn material(id: &str, v: u32) -> MaterialRecord {
        MaterialRecord::generated(id, v, vec![v as u8; 8], 1, None)
    }

    #[tokio::test]
    async fn keys_materials_aliases_tags() {
        let s = SqliteStore::in_memory().expect("open");
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

    #[tokio::test]
    async fn reopen_keeps_data_and_schema() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("meta.db");
        {
            let s = SqliteStore::open(&path).expect("open");
            s.create_key(&key("a"), Some(&material("a", 1)), &[], "{}")
                .await
                .expect("create");
        }
        let s = SqliteStore::open(&path).expect("reopen");
        assert!(s.key("a").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn schema_3_moves_import_state_onto_material_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("meta.db");
        {
            // A database as schema version 2 left it: one imported key with material and a
            // ValidTo, one whose imported material was deleted (no row, fingerprint kept).
            let c = Connection::open(&path).expect("open");
            c.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .expect("table");
            for (i, sql) in MIGRATIONS[..2].iter().enumerate() {
                c.execute_batch(sql).expect("migrate");
                c.execute(
                    "INSERT INTO schema_migrations VALUES (?1, 0)",
                    [i as i64 + 1],
                )
                .expect("version");
            }
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
        let s = SqliteStore::open(&path).expect("upgrade");
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
    async fn due_keys() {
        let s = SqliteStore::in_memory().expect("open");
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

    #[tokio::test]
    async fn iam_entities_policies_and_key_policies() {
        let s = SqliteStore::in_memory().expect("open");
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
}
