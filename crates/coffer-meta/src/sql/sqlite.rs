//! The embedded engine: one SQLite file in the data dir, in WAL mode with `synchronous=FULL`, so an
//! acknowledged transaction survives a crash of the process or the machine. One connection
//! serialises the transactions, which is what SQLite does with writers anyway.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params};

use super::{Dialect, Row, SqlError, SqlErrorKind, Tx, Value, now_ms};
use crate::{MetaError, Result};

/// Forward-only schema migrations; the index + 1 is the schema version.
pub(crate) const MIGRATIONS: &[&str] = &[
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
    // 9: findings indexed for queries: terms (detection types, tags, …), per-field indexes, and
    // the documents apart, so that scanning the rows reads only the columns.
    r#"
ALTER TABLE discovery_findings ADD COLUMN indexed INTEGER NOT NULL DEFAULT 0;
CREATE TABLE discovery_finding_terms (
    field       TEXT NOT NULL,
    value       TEXT NOT NULL,
    finding_id  TEXT NOT NULL REFERENCES discovery_findings(id) ON DELETE CASCADE,
    PRIMARY KEY (field, value, finding_id)
) WITHOUT ROWID;
CREATE INDEX discovery_finding_terms_by_finding ON discovery_finding_terms(finding_id);
CREATE TABLE discovery_finding_docs (
    id   TEXT PRIMARY KEY REFERENCES discovery_findings(id) ON DELETE CASCADE,
    doc  TEXT NOT NULL
);
INSERT INTO discovery_finding_docs (id, doc) SELECT id, doc FROM discovery_findings;
ALTER TABLE discovery_findings DROP COLUMN doc;
DROP INDEX discovery_findings_by_time;
CREATE INDEX discovery_findings_by_updated ON discovery_findings(updated_ms, id);
CREATE INDEX discovery_findings_by_created ON discovery_findings(created_ms, id);
CREATE INDEX discovery_findings_by_key ON discovery_findings(bucket, key, id);
CREATE INDEX discovery_findings_by_severity ON discovery_findings(severity, updated_ms);
CREATE INDEX discovery_findings_by_type ON discovery_findings(finding_type, updated_ms);
CREATE INDEX discovery_findings_by_origin ON discovery_findings(origin, updated_ms);
CREATE INDEX discovery_findings_unindexed ON discovery_findings(id) WHERE indexed = 0;
"#,
];

#[derive(Debug, Clone)]
pub(super) struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

impl Sqlite {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        Self::init(conn)
    }

    pub(super) fn in_memory() -> Result<Self> {
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
        // Up to 64 MiB of pages cached in the process (SQLite's default is 2 MiB): findings and
        // their term indexes are read back while being written, and every page SQLite does not
        // hold is copied in again from the kernel (BENCHMARKS.md, findings queries).
        conn.pragma_update(None, "cache_size", -65536)
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

    async fn with<T, F>(&self, f: F) -> Result<T>
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

    pub(super) async fn run<T, F>(&self, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let out = f(&mut SqliteTx(&tx))?;
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    /// Runs `f`'s statements without an explicit transaction (each its own, for reads).
    pub(super) async fn read<T, F>(&self, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        self.with(move |c| f(&mut SqliteTx(c))).await
    }

    /// VACUUM INTO reads in one transaction of its own: a copy as of one instant, compacted.
    pub(super) async fn vacuum_into(&self, path: String) -> Result<()> {
        self.with(move |c| {
            c.execute("VACUUM INTO ?1", [path]).map_err(backend)?;
            Ok(())
        })
        .await
    }
}

/// Statements on a transaction, or (for reads) straight on the connection.
struct SqliteTx<'a>(&'a Connection);

fn sql_error(e: rusqlite::Error) -> SqlError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
        {
            SqlErrorKind::Unique
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            SqlErrorKind::ForeignKey
        }
        _ => SqlErrorKind::Other,
    };
    SqlError {
        kind,
        message: e.to_string(),
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value(v: ValueRef<'_>) -> std::result::Result<Value, SqlError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|_| SqlError::other("a text column holds bytes that are not UTF-8"))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(_) => return Err(SqlError::other("unexpected REAL column")),
    })
}

impl Tx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> std::result::Result<usize, SqlError> {
        let mut st = self.0.prepare_cached(sql).map_err(sql_error)?;
        st.execute(rusqlite::params_from_iter(params.iter()))
            .map_err(sql_error)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> std::result::Result<Vec<Row>, SqlError> {
        let mut st = self.0.prepare_cached(sql).map_err(sql_error)?;
        let n = st.column_count();
        let mut rows = st
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(sql_error)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql_error)? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(value(r.get_ref(i).map_err(sql_error)?)?);
            }
            out.push(Row(vals));
        }
        Ok(out)
    }
}
