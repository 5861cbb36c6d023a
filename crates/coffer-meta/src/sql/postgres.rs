//! The PostgreSQL engine, for several Coffer nodes sharing one database.
//!
//! Transactions run SERIALIZABLE, so the rules the store relies on (one alias of a name, a key's
//! state, "no objects left" before a bucket goes) hold across nodes exactly as they do on one
//! SQLite connection; a transaction that loses a race is run again. Writes of one object key,
//! which many clients may make at once, queue on an advisory lock for that key instead and run
//! READ COMMITTED (the unique "latest version" index and the foreign keys still hold them to the
//! rules), which spares them SERIALIZABLE's false conflicts with their neighbours. Text columns
//! use the "C"
//! collation, so keys sort by their UTF-8 bytes as S3 and SQLite order them; IAM names are
//! `citext`, unique without regard to case as in AWS.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Dialect, Row, SqlError, SqlErrorKind, Tx, Value, now_ms};
use crate::{MetaError, Result};

/// Forward-only schema migrations; the index + 1 is the schema version. Version 1 is the SQLite
/// schema as of its version 8, in PostgreSQL's types.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;
CREATE TABLE kms_custom_key_stores (
    id                TEXT COLLATE "C" PRIMARY KEY,
    name              TEXT COLLATE "C" NOT NULL UNIQUE,
    cluster_id        TEXT COLLATE "C" NOT NULL,
    trust_anchor      TEXT NOT NULL,
    wrapped_password  BYTEA NOT NULL,
    connection_state  TEXT NOT NULL,
    connection_error  TEXT,
    created_ms        BIGINT NOT NULL
);
CREATE TABLE kms_keys (
    key_id               TEXT COLLATE "C" PRIMARY KEY,
    created_ms           BIGINT NOT NULL,
    description          TEXT NOT NULL,
    key_usage            TEXT NOT NULL,
    key_spec             TEXT NOT NULL,
    origin               TEXT NOT NULL,
    key_manager          TEXT NOT NULL,
    state                TEXT NOT NULL,
    deletion_ms          BIGINT,
    pending_window_days  BIGINT,
    rotation_enabled     BIGINT NOT NULL,
    rotation_period_days BIGINT,
    next_rotation_ms     BIGINT,
    current_version      BIGINT NOT NULL,
    expiration_model     TEXT,
    valid_to_ms          BIGINT,
    import_fingerprint   BYTEA,
    custom_key_store_id  TEXT COLLATE "C" REFERENCES kms_custom_key_stores(id)
);
CREATE INDEX kms_keys_by_custom_key_store ON kms_keys(custom_key_store_id) WHERE custom_key_store_id IS NOT NULL;
CREATE TABLE kms_key_materials (
    key_id           TEXT COLLATE "C" NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    version          BIGINT NOT NULL,
    wrapped          BYTEA NOT NULL,
    created_ms       BIGINT NOT NULL,
    rotation_type    TEXT,
    imported         BIGINT NOT NULL DEFAULT 1,
    pending_rotation BIGINT NOT NULL DEFAULT 0,
    expiration_model TEXT,
    valid_to_ms      BIGINT,
    description      TEXT,
    fingerprint      BYTEA,
    PRIMARY KEY (key_id, version)
);
CREATE INDEX kms_key_materials_by_expiry ON kms_key_materials(valid_to_ms) WHERE valid_to_ms IS NOT NULL;
CREATE TABLE kms_aliases (
    name          TEXT COLLATE "C" PRIMARY KEY,
    target_key_id TEXT COLLATE "C" NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);
CREATE INDEX kms_aliases_by_key ON kms_aliases(target_key_id);
CREATE TABLE kms_tags (
    key_id    TEXT COLLATE "C" NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    tag_key   TEXT COLLATE "C" NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);
CREATE TABLE access_keys (
    access_key_id  TEXT COLLATE "C" PRIMARY KEY,
    wrapped_secret BYTEA NOT NULL,
    principal_arn  TEXT COLLATE "C" NOT NULL,
    status         TEXT NOT NULL,
    created_ms     BIGINT NOT NULL
);
CREATE INDEX access_keys_by_principal ON access_keys(principal_arn);
CREATE TABLE kms_import_tokens (
    token_hash       BYTEA PRIMARY KEY,
    key_id           TEXT COLLATE "C" NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    wrapping_alg     TEXT NOT NULL,
    wrapping_spec    TEXT NOT NULL,
    wrapped_private  BYTEA NOT NULL,
    valid_to_ms      BIGINT NOT NULL
);
CREATE INDEX kms_import_tokens_by_key ON kms_import_tokens(key_id);
CREATE TABLE kms_key_policies (
    key_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    policy     TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE iam_entities (
    kind       TEXT COLLATE "C" NOT NULL,
    name       public.citext NOT NULL,
    id         TEXT COLLATE "C" NOT NULL UNIQUE,
    path       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE iam_group_members (
    group_name public.citext NOT NULL,
    user_name  public.citext NOT NULL,
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX iam_group_members_by_user ON iam_group_members(user_name);
CREATE TABLE iam_policies (
    owner_kind  TEXT COLLATE "C" NOT NULL,
    owner_name  public.citext NOT NULL,
    policy_name public.citext NOT NULL,
    document    TEXT NOT NULL,
    PRIMARY KEY (owner_kind, owner_name, policy_name)
);
CREATE TABLE kms_grants (
    grant_id        TEXT COLLATE "C" PRIMARY KEY,
    key_id          TEXT COLLATE "C" NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    name            TEXT,
    grantee         TEXT COLLATE "C" NOT NULL,
    retiring        TEXT COLLATE "C",
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
CREATE TABLE s3_master_keys (
    id          BIGINT PRIMARY KEY,
    wrapped     BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE s3_buckets (
    name                TEXT COLLATE "C" PRIMARY KEY,
    owner_account       TEXT NOT NULL,
    region              TEXT NOT NULL,
    created_ms          BIGINT NOT NULL,
    versioning          TEXT NOT NULL,
    encryption          TEXT,
    policy              TEXT,
    public_access_block TEXT,
    tags                TEXT
);
CREATE SEQUENCE s3_object_seq;
CREATE TABLE s3_objects (
    bucket           TEXT COLLATE "C" NOT NULL REFERENCES s3_buckets(name),
    key              TEXT COLLATE "C" NOT NULL,
    version_id       TEXT COLLATE "C" NOT NULL,
    seq              BIGINT NOT NULL,
    is_latest        BIGINT NOT NULL,
    delete_marker    BIGINT NOT NULL,
    size             BIGINT NOT NULL,
    etag             TEXT NOT NULL,
    last_modified_ms BIGINT NOT NULL,
    blob             TEXT COLLATE "C",
    sse_mode         TEXT NOT NULL,
    sealed_key       BYTEA NOT NULL,
    sse_key_id       TEXT,
    sse_context      TEXT,
    sse_key_check    BYTEA,
    bucket_key       BIGINT NOT NULL,
    attrs            TEXT NOT NULL,
    tags             TEXT NOT NULL,
    PRIMARY KEY (bucket, key, version_id)
);
CREATE UNIQUE INDEX s3_objects_latest ON s3_objects(bucket, key) WHERE is_latest = 1;
CREATE INDEX s3_objects_by_seq ON s3_objects(bucket, key, seq);
CREATE INDEX s3_objects_by_blob ON s3_objects(blob) WHERE blob IS NOT NULL;
CREATE TABLE s3_object_parts (
    bucket       TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    version_id   TEXT COLLATE "C" NOT NULL,
    part_number  BIGINT NOT NULL,
    size         BIGINT NOT NULL,
    blob         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (bucket, key, version_id, part_number),
    FOREIGN KEY (bucket, key, version_id) REFERENCES s3_objects(bucket, key, version_id) ON DELETE CASCADE
);
CREATE INDEX s3_object_parts_by_blob ON s3_object_parts(blob);
CREATE TABLE s3_uploads (
    upload_id        TEXT COLLATE "C" PRIMARY KEY,
    bucket           TEXT COLLATE "C" NOT NULL REFERENCES s3_buckets(name),
    key              TEXT COLLATE "C" NOT NULL,
    initiated_ms     BIGINT NOT NULL,
    sse_mode         TEXT NOT NULL,
    sealed_key       BYTEA NOT NULL,
    sse_key_id       TEXT,
    sse_context      TEXT,
    sse_key_check    BYTEA,
    bucket_key       BIGINT NOT NULL,
    attrs            TEXT NOT NULL,
    tags             TEXT NOT NULL
);
CREATE INDEX s3_uploads_by_key ON s3_uploads(bucket, key, upload_id);
CREATE TABLE s3_upload_parts (
    upload_id        TEXT COLLATE "C" NOT NULL REFERENCES s3_uploads(upload_id) ON DELETE CASCADE,
    part_number      BIGINT NOT NULL,
    size             BIGINT NOT NULL,
    etag             TEXT NOT NULL,
    blob             TEXT COLLATE "C" NOT NULL,
    checksum         TEXT,
    last_modified_ms BIGINT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE INDEX s3_upload_parts_by_blob ON s3_upload_parts(blob);
CREATE TABLE s3_garbage (
    blob      TEXT COLLATE "C" PRIMARY KEY,
    since_ms  BIGINT NOT NULL
);
CREATE TABLE discovery_jobs (
    id            TEXT COLLATE "C" PRIMARY KEY,
    client_token  TEXT COLLATE "C" NOT NULL UNIQUE,
    created_ms    BIGINT NOT NULL,
    status        TEXT NOT NULL,
    doc           TEXT NOT NULL
);
CREATE TABLE discovery_findings (
    id            TEXT COLLATE "C" PRIMARY KEY,
    bucket        TEXT COLLATE "C" NOT NULL,
    key           TEXT COLLATE "C" NOT NULL,
    severity      TEXT NOT NULL,
    finding_type  TEXT NOT NULL,
    origin        TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL,
    archived      BIGINT NOT NULL,
    doc           TEXT NOT NULL
);
CREATE INDEX discovery_findings_by_bucket ON discovery_findings(bucket, updated_ms);
CREATE INDEX discovery_findings_by_time ON discovery_findings(updated_ms);
CREATE TABLE discovery_settings (
    name   TEXT COLLATE "C" PRIMARY KEY,
    value  TEXT NOT NULL
);
"#,
    // 2: findings indexed for queries: terms (detection types, tags, …), per-field indexes, and
    // the documents apart, so that scanning the rows reads only the columns.
    r#"
ALTER TABLE discovery_findings ADD COLUMN indexed BIGINT NOT NULL DEFAULT 0;
CREATE TABLE discovery_finding_terms (
    field       TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    finding_id  TEXT COLLATE "C" NOT NULL REFERENCES discovery_findings(id) ON DELETE CASCADE,
    PRIMARY KEY (field, value, finding_id)
);
CREATE INDEX discovery_finding_terms_by_finding ON discovery_finding_terms(finding_id);
CREATE TABLE discovery_finding_docs (
    id   TEXT COLLATE "C" PRIMARY KEY REFERENCES discovery_findings(id) ON DELETE CASCADE,
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

/// The advisory lock that serialises schema migrations between nodes starting together.
const MIGRATION_LOCK: i64 = 0x436f_6666_6572_4d31; // "CofferM1"

/// How often a transaction that lost a race is run again before the caller gets an error.
/// (SERIALIZABLE reports some conflicts that were not: its locks on index pages can cover rows
/// the other transaction never touched; a retry clears those.)
const MAX_ATTEMPTS: u32 = 20;

pub(crate) struct Postgres {
    pool: Pool,
    url: String,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.pool.status();
        f.debug_struct("Postgres")
            .field("connections", &s.size)
            .field("max_connections", &s.max_size)
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

/// A driver error as the store sees it, with the server's own message where there is one.
fn sql_error(e: &tokio_postgres::Error) -> SqlError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => SqlErrorKind::Unique,
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => SqlErrorKind::ForeignKey,
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            SqlErrorKind::Conflict
        }
        _ => SqlErrorKind::Other,
    };
    let message = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => format!("PostgreSQL: {}", with_causes(e)),
    };
    SqlError { kind, message }
}

/// An error and what caused it (a failed TLS handshake says why only in its source).
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A connection failure's message, with what to do when the server's certificate was the cause.
pub(crate) fn connect_hint(message: String) -> String {
    if message.contains("certificate") || message.contains("UnknownIssuer") {
        format!(
            "{message}: PostgreSQL's certificate is not trusted; give the CA that signed it with \
             --metadata-ca (or sslmode=disable, on a network you trust)"
        )
    } else {
        message
    }
}

impl Postgres {
    pub(super) async fn connect(
        url: &str,
        max_connections: usize,
        tls: rustls::ClientConfig,
    ) -> Result<Self> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            MetaError::Backend(format!(
                "the PostgreSQL URL is not valid ({e}); expected postgres://user:password@host:port/database"
            ))
        })?;
        let tls = MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            config,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(backend)?;
        let pg = Self {
            pool,
            url: url.to_owned(),
            tls,
        };
        pg.migrate().await?;
        Ok(pg)
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn tls(&self) -> &MakeRustlsConnect {
        &self.tls
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            MetaError::Backend(connect_hint(match e {
                deadpool_postgres::PoolError::Backend(e) => sql_error(&e).message,
                e => format!("PostgreSQL: {e}"),
            }))
        })
    }

    /// Brings the schema up to date under an advisory lock, so that of several nodes starting at
    /// once one migrates and the others find the work done.
    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| MetaError::from(sql_error(&e)))?;
        let run = async {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .await?;
            let current: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )
                .await?
                .get(0);
            Ok::<_, tokio_postgres::Error>(current)
        };
        let current = run.await.map_err(|e| MetaError::from(sql_error(&e)))?;
        if current > MIGRATIONS.len() as i64 {
            return Err(MetaError::Backend(format!(
                "the metadata schema is version {current}, newer than this build knows ({}); run a newer coffer",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await.map_err(|e| {
                let mut m = sql_error(&e).message;
                if m.contains("citext") {
                    m.push_str(
                        "; the citext extension must be installable by this role \
                         (PostgreSQL's contrib modules; or have the database owner run CREATE EXTENSION citext)",
                    );
                }
                MetaError::Backend(m)
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                &[&(i as i64 + 1), &now_ms()],
            )
            .await
            .map_err(|e| MetaError::from(sql_error(&e)))?;
            tracing::info!(
                version = i + 1,
                "applied PostgreSQL metadata schema migration"
            );
        }
        tx.commit()
            .await
            .map_err(|e| MetaError::from(sql_error(&e)))
    }

    pub(super) async fn run<T, F>(self: Arc<Self>, lock: Option<String>, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.attempt(&handle, lock.as_deref(), &mut f) {
                    Err((e, true)) if attempt < MAX_ATTEMPTS => {
                        tracing::debug!(attempt, error = %e, "transaction conflicted; running it again");
                        // Spread the retries so that the same racers do not meet again.
                        let ceiling = 1u64 << attempt.min(5);
                        std::thread::sleep(Duration::from_millis(ceiling + jitter() % (ceiling * 2)));
                    }
                    Err((e, true)) => {
                        return Err(MetaError::Backend(format!(
                            "gave up after {MAX_ATTEMPTS} attempts, each conflicting with concurrent changes: {e}"
                        )));
                    }
                    Err((e, false)) => return Err(e),
                    Ok(v) => return Ok(v),
                }
            }
        })
        .await
        .map_err(backend)?
    }

    /// One attempt at a transaction; the flag says whether it failed by conflicting with another.
    /// With a `lock`, a session advisory lock on it is held around the transaction, taken before
    /// the transaction's snapshot so that the holders run one after another.
    fn attempt<T, F>(
        &self,
        handle: &tokio::runtime::Handle,
        lock: Option<&str>,
        f: &mut F,
    ) -> std::result::Result<T, (MetaError, bool)>
    where
        F: FnMut(&mut dyn Tx) -> Result<T>,
    {
        let pg = failure;
        let mut client = handle.block_on(self.client()).map_err(|e| (e, false))?;
        let Some(lock) = lock else {
            return Self::attempt_tx(handle, &mut client, IsolationLevel::Serializable, f);
        };
        handle
            .block_on(client.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&lock]))
            .map_err(pg)?;
        // Writers of the same thing run one at a time under the lock, and what else they rely
        // on the database enforces (foreign keys, unique indexes): READ COMMITTED suffices, and
        // spares them SERIALIZABLE's false conflicts with writers of neighbouring rows.
        let out = Self::attempt_tx(handle, &mut client, IsolationLevel::ReadCommitted, f);
        let unlocked = handle.block_on(client.execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&lock],
        ));
        if unlocked.is_err() {
            // Closing the connection is what releases the lock then.
            drop(deadpool_postgres::Object::take(client));
        }
        out
    }

    fn attempt_tx<T, F>(
        handle: &tokio::runtime::Handle,
        client: &mut deadpool_postgres::Object,
        isolation: IsolationLevel,
        f: &mut F,
    ) -> std::result::Result<T, (MetaError, bool)>
    where
        F: FnMut(&mut dyn Tx) -> Result<T>,
    {
        let pg = failure;
        let tx = handle
            .block_on(
                client
                    .build_transaction()
                    .isolation_level(isolation)
                    .start(),
            )
            .map_err(pg)?;
        let mut t = PgTx {
            conn: &tx,
            handle,
            conflicted: false,
        };
        match f(&mut t) {
            Ok(v) => {
                handle.block_on(tx.commit()).map_err(pg)?;
                Ok(v)
            }
            Err(e) => {
                let conflicted = t.conflicted;
                // Dropping the transaction rolls it back.
                Err((e, conflicted))
            }
        }
    }

    /// Runs `f`'s statements each on its own (autocommit, READ COMMITTED), without BEGIN and
    /// COMMIT: for reads that are one statement, or several that need not agree with each other.
    pub(super) async fn read<T, F>(self: Arc<Self>, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let client = handle.block_on(self.client())?;
            let mut t = PgTx {
                conn: &client,
                handle: &handle,
                conflicted: false,
            };
            f(&mut t)
        })
        .await
        .map_err(backend)?
    }
}

/// A session advisory lock on a connection of its own, released when dropped.
pub(crate) struct PgLock {
    conn: Option<deadpool_postgres::Object>,
    name: String,
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLock").field("name", &self.name).finish()
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        let release = async move {
            if conn
                .execute(
                    "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                    &[&name],
                )
                .await
                .is_err()
            {
                // Closing the connection releases the lock.
                drop(deadpool_postgres::Object::take(conn));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(release);
            }
            // No runtime (the process is ending): dropping the connection closes it.
            Err(_) => drop(release),
        }
    }
}

impl Postgres {
    /// Takes the session advisory lock `name` if no one holds it.
    pub(super) async fn try_lock(&self, name: &str) -> Result<Option<PgLock>> {
        let conn = self.client().await?;
        let got: bool = conn
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&name],
            )
            .await
            .map_err(|e| MetaError::from(sql_error(&e)))?
            .get(0);
        Ok(got.then(|| PgLock {
            conn: Some(conn),
            name: name.to_owned(),
        }))
    }

    /// Waits for and takes the session advisory lock `name`.
    pub(super) async fn lock(&self, name: &str) -> Result<PgLock> {
        let conn = self.client().await?;
        conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&name])
            .await
            .map_err(|e| MetaError::from(sql_error(&e)))?;
        Ok(PgLock {
            conn: Some(conn),
            name: name.to_owned(),
        })
    }
}

/// A failed statement, and whether it failed by conflicting with another transaction.
fn failure(e: tokio_postgres::Error) -> (MetaError, bool) {
    let e = sql_error(&e);
    let conflict = e.kind == SqlErrorKind::Conflict;
    (MetaError::from(e), conflict)
}

/// A few random bits for retry jitter.
fn jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Statements on a transaction, or (for single reads) straight on a connection.
struct PgTx<'a, C: deadpool_postgres::GenericClient> {
    conn: &'a C,
    handle: &'a tokio::runtime::Handle,
    conflicted: bool,
}

/// `?1` placeholders as PostgreSQL's `$1`. The store's statements have no `?` in string literals.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl<C: deadpool_postgres::GenericClient> PgTx<'_, C> {
    fn prepare(&mut self, sql: &str) -> std::result::Result<tokio_postgres::Statement, SqlError> {
        let sql = placeholders(sql);
        let r = self.handle.block_on(self.conn.prepare_cached(&sql));
        self.check(r)
    }

    fn check<T>(
        &mut self,
        r: std::result::Result<T, tokio_postgres::Error>,
    ) -> std::result::Result<T, SqlError> {
        r.map_err(|e| {
            let e = sql_error(&e);
            if e.kind == SqlErrorKind::Conflict {
                self.conflicted = true;
            }
            e
        })
    }
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl<C: deadpool_postgres::GenericClient> Tx for PgTx<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> std::result::Result<usize, SqlError> {
        let st = self.prepare(sql)?;
        let r = self
            .handle
            .block_on(self.conn.execute(&st, &params(values)));
        self.check(r).map(|n| n as usize)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> std::result::Result<Vec<Row>, SqlError> {
        let st = self.prepare(sql)?;
        let r = self.handle.block_on(self.conn.query(&st, &params(values)));
        let rows = self.check(r)?;
        rows.iter().map(row).collect()
    }
}

/// A result row as [`Value`]s, by each column's type.
fn row(r: &tokio_postgres::Row) -> std::result::Result<Row, SqlError> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let get_err = |e: tokio_postgres::Error| SqlError::other(format!("PostgreSQL: {e}"));
        let v = match *col.type_() {
            Type::INT8 => r
                .try_get::<_, Option<i64>>(i)
                .map_err(get_err)?
                .map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map_err(get_err)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map_err(get_err)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)
                .map_err(get_err)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => r
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(get_err)?
                .map(Value::Blob),
            // TEXT, VARCHAR, NAME and citext.
            _ => r
                .try_get::<_, Option<String>>(i)
                .map_err(get_err)?
                .map(Value::Text),
        };
        vals.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(vals))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
            },
            Value::Text(t) => t.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    /// Checked per value in `to_sql`, which knows what the value holds.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn numbered_placeholders_become_dollars() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND (?2 IS NULL OR c = ?2) LIMIT ?10"),
            "SELECT a FROM t WHERE b = $1 AND ($2 IS NULL OR c = $2) LIMIT $10"
        );
    }
}
