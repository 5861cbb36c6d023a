//! The SQL layer under the store: values, rows and transactions, with two engines behind them.
//!
//! The store's logic ([`crate::store`]) is written once, as transactions over [`Tx`]; an engine
//! runs each one whole. Statements use SQLite's numbered placeholders (`?1`, `?2`, …) and the SQL
//! both engines share: `INSERT … ON CONFLICT`, `COALESCE`, `substr`, no `LIKE`. What differs
//! (DDL, sequences, snapshots) is asked of [`Tx::dialect`].

use std::sync::Arc;

use crate::{MetaError, Result};

mod postgres;
pub(crate) use postgres::{PgLock, connect_hint, with_causes};
mod sqlite;

#[cfg(test)]
pub(crate) use sqlite::MIGRATIONS as SQLITE_MIGRATIONS;

/// One SQL value, as both engines exchange it. Booleans travel as integers (0 or 1).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

// Blobs hold wrapped secrets and sealed keys: never printed.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Blob(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

/// What can be bound as a statement parameter.
pub(crate) trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Statement parameters: `p![a, b]` binds `?1 = a`, `?2 = b` (by reference, like `rusqlite::params!`).
macro_rules! p {
    ($($e:expr),* $(,)?) => {
        [$($crate::sql::ToValue::to_value(&$e)),*]
    };
}
pub(crate) use p;

/// One result row.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    /// Column `i` as `T`; a type mismatch is a backend error naming the column.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).ok_or_else(|| {
            MetaError::Backend(format!(
                "column {i} holds {}, not {}",
                match v {
                    Value::Null => "NULL",
                    Value::Int(_) => "an integer",
                    Value::Text(_) => "text",
                    Value::Blob(_) => "a blob",
                },
                std::any::type_name::<T>()
            ))
        })
    }
}

/// What a column can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for i32 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| i32::try_from(i).ok())
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u32::try_from(i).ok())
    }
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u64::try_from(i).ok())
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// How a statement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlErrorKind {
    /// A unique or primary-key constraint.
    Unique,
    /// A foreign key: the row named is gone (a bucket deleted by another node meanwhile).
    ForeignKey,
    /// A concurrent transaction got in the way (serialization failure, deadlock): the whole
    /// transaction may be run again.
    Conflict,
    Other,
}

#[derive(Debug)]
pub(crate) struct SqlError {
    pub(crate) kind: SqlErrorKind,
    pub(crate) message: String,
}

impl SqlError {
    pub(crate) fn other(message: impl std::fmt::Display) -> Self {
        Self {
            kind: SqlErrorKind::Other,
            message: message.to_string(),
        }
    }

    /// A foreign-key violation as `err()`, anything else as a backend error.
    pub(crate) fn foreign_key_as(self, err: impl FnOnce() -> MetaError) -> MetaError {
        if self.kind == SqlErrorKind::ForeignKey {
            err()
        } else {
            self.into()
        }
    }

    /// A unique violation as `err()`, anything else as a backend error.
    pub(crate) fn unique_as(self, err: impl FnOnce() -> MetaError) -> MetaError {
        if self.kind == SqlErrorKind::Unique {
            err()
        } else {
            self.into()
        }
    }
}

impl From<SqlError> for MetaError {
    fn from(e: SqlError) -> Self {
        MetaError::Backend(e.message)
    }
}

/// Which SQL engine a transaction runs on, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One transaction. Everything done through it commits together when the closure given to
/// [`SqlStore::tx`] returns `Ok`, and is rolled back when it returns an error.
pub(crate) trait Tx {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> std::result::Result<usize, SqlError>;
    fn query(&mut self, sql: &str, params: &[Value]) -> std::result::Result<Vec<Row>, SqlError>;
}

impl dyn Tx + '_ {
    /// The first row, mapped, if there is one.
    pub(crate) fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        f: impl Fn(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    /// Every row, mapped.
    pub(crate) fn query_map<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        f: impl Fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// The first column of the only row (`COUNT(*)` and the like).
    pub(crate) fn query_scalar<T: FromValue>(&mut self, sql: &str, params: &[Value]) -> Result<T> {
        self.query_opt(sql, params, |r| r.get(0))?
            .ok_or_else(|| MetaError::Backend(format!("no row from {sql}")))
    }
}

/// Coffer's metadata in a SQL database: SQLite (a file in the data dir, the embedded default) or
/// PostgreSQL (shared by several nodes). Cloning shares the connection(s).
#[derive(Debug, Clone)]
pub struct SqlStore {
    engine: Engine,
}

#[derive(Debug, Clone)]
enum Engine {
    Sqlite(sqlite::Sqlite),
    Postgres(Arc<postgres::Postgres>),
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    pub fn open_sqlite(path: &std::path::Path) -> Result<Self> {
        Ok(Self {
            engine: Engine::Sqlite(sqlite::Sqlite::open(path)?),
        })
    }

    /// An in-memory SQLite database, for tests.
    pub fn in_memory() -> Result<Self> {
        Ok(Self {
            engine: Engine::Sqlite(sqlite::Sqlite::in_memory()?),
        })
    }

    /// Connects to PostgreSQL (`postgres://user:password@host:port/database?options`, the libpq
    /// URL form) and brings the schema up to date; safe when several nodes start at once.
    /// `max_connections` bounds this node's pool. Whether TLS is used is the URL's `sslmode`
    /// (`require` insists, `prefer` — the default — uses it when the server offers it, `disable`
    /// never does); when it is, the server is verified as `tls` says.
    pub async fn connect_postgres(
        url: &str,
        max_connections: usize,
        tls: rustls::ClientConfig,
    ) -> Result<Self> {
        Ok(Self {
            engine: Engine::Postgres(Arc::new(
                postgres::Postgres::connect(url, max_connections, tls).await?,
            )),
        })
    }

    /// `sqlite` or `postgres`.
    pub(crate) fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// Runs `f` as one transaction on the blocking thread pool. On PostgreSQL a transaction that
    /// lost a race with another node's (a serialization failure) is run again, so `f` may run more
    /// than once and must not have effects outside the transaction.
    pub(crate) async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(e) => e.run(f).await,
            Engine::Postgres(e) => e.clone().run(None, f).await,
        }
    }

    /// Runs `f`'s statements each on its own, without BEGIN and COMMIT: for reads that are one
    /// statement, or several that need not see one instant. Saves two round trips on PostgreSQL.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(e) => e.read(f).await,
            Engine::Postgres(e) => e.clone().read(f).await,
        }
    }

    /// [`SqlStore::tx`] for a change that many writers may make to the same thing at once (PUTs
    /// of one object key): on PostgreSQL, transactions with the same `lock` run one after another
    /// across all nodes instead of racing and retrying.
    pub(crate) async fn tx_serialized<T, F>(&self, lock: String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(e) => e.run(f).await,
            Engine::Postgres(e) => e.clone().run(Some(lock), f).await,
        }
    }

    /// Whether any secret wrapped under a root of trust is stored (key material, access keys, the
    /// S3 master key, custom key store passwords): a node that brings a new root must not join.
    pub async fn holds_wrapped_secrets(&self) -> Result<bool> {
        self.tx(|t| {
            t.query_scalar::<bool>(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM kms_key_materials) \
                 OR EXISTS (SELECT 1 FROM access_keys) OR EXISTS (SELECT 1 FROM s3_master_keys) \
                 OR EXISTS (SELECT 1 FROM kms_custom_key_stores) THEN 1 ELSE 0 END",
                &[],
            )
        })
        .await
    }

    /// See [`crate::MetaStore::cluster_lock`].
    pub(crate) async fn cluster_lock(&self, name: &str) -> Result<crate::ClusterLock> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(crate::ClusterLock::new(None)),
            Engine::Postgres(p) => Ok(crate::ClusterLock::new(Some(p.lock(name).await?))),
        }
    }

    /// See [`crate::MetaStore::try_cluster_lock`].
    pub(crate) async fn try_cluster_lock(&self, name: &str) -> Result<Option<crate::ClusterLock>> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(Some(crate::ClusterLock::new(None))),
            Engine::Postgres(p) => Ok(p
                .try_lock(name)
                .await?
                .map(|l| crate::ClusterLock::new(Some(l)))),
        }
    }

    /// The PostgreSQL URL and TLS setup, for the change listener; `None` on SQLite.
    pub(crate) fn postgres_connection(
        &self,
    ) -> Option<(&str, &tokio_postgres_rustls::MakeRustlsConnect)> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(p) => Some((p.url(), p.tls())),
        }
    }

    /// SQLite only: a consistent copy of the whole database, as of one instant, in the new file
    /// `path`. PostgreSQL is backed up with its own tools.
    pub(crate) async fn sqlite_snapshot(&self, path: String) -> Result<()> {
        match &self.engine {
            Engine::Sqlite(e) => e.vacuum_into(path).await,
            Engine::Postgres(_) => Err(MetaError::Backend(
                "the metadata is in PostgreSQL: back it up with pg_dump or pg_basebackup \
                 (see docs/operations.md); coffer backup covers the SQLite engine"
                    .into(),
            )),
        }
    }
}

/// Checks a PostgreSQL URL without connecting; the error says what is wrong with it.
pub fn check_postgres_url(url: &str) -> std::result::Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
