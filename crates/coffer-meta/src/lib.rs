//! Coffer's metadata: keys, key-material versions (wrapped), aliases, tags and access keys, behind one
//! interface ([`MetaStore`]) served by [`SqlStore`] on one of two engines: SQLite (a file in the
//! data dir, the embedded default) or PostgreSQL (shared by several Coffer nodes). The store's
//! logic is written once; the engines differ only in how they run a transaction.
//!
//! The store never sees a secret in the clear: key material and secret access keys arrive already
//! wrapped under the root key.

pub mod changes;
pub mod discovery;
pub mod objects;
mod records;
mod sql;
mod store;
#[cfg(test)]
mod testing;

pub use changes::Change;
pub use discovery::{
    DiscoveryMeta, FindingField, FindingQuery, FindingRecord, FindingTerms, FindingTest, JobRecord,
    Scalar,
};
pub use objects::{
    BucketAttr, BucketRecord, ListQuery, ObjectMeta, ObjectRecord, PartRef, SseRecord,
    UploadPartRecord, UploadRecord,
};
pub use records::{
    AccessKeyRecord, AliasRecord, CustomKeyStoreRecord, GrantRecord, IamEntityRecord, IamKind,
    ImportTokenRecord, KeyRecord, MaterialRecord, WrappedKind, WrappedSecret,
};
pub use sql::{SqlStore, check_postgres_url};

use async_trait::async_trait;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetaError {
    /// A uniqueness rule was broken (alias name taken, key id reused).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The row to change does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The row is still used by others (a custom key store that holds keys).
    #[error("in use by {0}")]
    InUse(String),
    /// The engine failed (I/O, corruption, lock). Details are for the log, not for clients.
    #[error("metadata store failure: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// A lock [`MetaStore::cluster_lock`] holds until dropped.
#[derive(Debug)]
pub struct ClusterLock {
    /// Released when dropped.
    _held: Option<sql::PgLock>,
}

impl ClusterLock {
    pub(crate) fn new(held: Option<sql::PgLock>) -> Self {
        Self { _held: held }
    }
}

/// One page of a listing: the rows and whether more follow.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub truncated: bool,
}

/// The metadata interface. Every method is one transaction: it happens whole or not at all, and once
/// it returns `Ok` it survives a crash of the process.
#[async_trait]
pub trait MetaStore: ObjectMeta + DiscoveryMeta + Send + Sync + std::fmt::Debug {
    /// The engine's name: `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;
    /// Holds `name` exclusively across every node on this store until the guard is dropped, for a
    /// read-modify-write that spans several transactions (read a key, check, write it back). On
    /// SQLite, with one node, the node's own locks already do this and the guard holds nothing.
    async fn cluster_lock(&self, name: &str) -> Result<ClusterLock>;
    /// [`MetaStore::cluster_lock`] without waiting: `None` while another node holds it (work only
    /// one node should do at a time, such as running classification jobs).
    async fn try_cluster_lock(&self, name: &str) -> Result<Option<ClusterLock>>;
    /// Checks that the database answers (for health reports).
    async fn ping(&self) -> Result<()>;

    /// Creates a key with its first material version (none for a key awaiting imported material),
    /// its tags and its key policy.
    async fn create_key(
        &self,
        key: &KeyRecord,
        material: Option<&MaterialRecord>,
        tags: &[(String, String)],
        policy: &str,
    ) -> Result<()>;
    /// The key's policy document; `None` for keys created before key policies were stored.
    async fn key_policy(&self, key_id: &str) -> Result<Option<String>>;
    async fn put_key_policy(&self, key_id: &str, policy: &str, now_ms: i64) -> Result<()>;
    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>>;
    /// Keys ordered by id, starting after `after`.
    async fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Page<KeyRecord>>;
    /// Replaces the mutable fields of a key (state, description, deletion and rotation settings).
    async fn update_key(&self, key: &KeyRecord) -> Result<()>;
    /// Removes a key and everything that hangs off it (material, aliases, tags).
    async fn delete_key(&self, key_id: &str) -> Result<()>;
    /// Keys whose deletion date, next automatic rotation or the expiry of an imported material is at
    /// or before `now_ms`.
    async fn keys_due(&self, now_ms: i64) -> Result<Vec<KeyRecord>>;

    /// All material versions of a key, oldest first.
    async fn materials(&self, key_id: &str) -> Result<Vec<MaterialRecord>>;
    /// Adds a material version and stores the key row (with its new current version) in one transaction.
    async fn add_material(&self, key: &KeyRecord, material: &MaterialRecord) -> Result<()>;

    /// Inserts or replaces the `put` material rows, removes the `remove` versions and stores the key
    /// row, in one transaction: import, re-import, deletion, expiry and rotation of imported material.
    async fn save_materials(
        &self,
        key: &KeyRecord,
        put: &[MaterialRecord],
        remove: &[u32],
    ) -> Result<()>;

    async fn put_import_token(&self, token: &ImportTokenRecord) -> Result<()>;
    async fn import_token(&self, token_hash: &[u8]) -> Result<Option<ImportTokenRecord>>;
    /// Removes a key's import tokens: all of them, or those that expired before the given time.
    async fn delete_import_tokens(
        &self,
        key_id: &str,
        expired_before_ms: Option<i64>,
    ) -> Result<()>;

    async fn create_alias(&self, alias: &AliasRecord) -> Result<()>;
    async fn alias(&self, name: &str) -> Result<Option<AliasRecord>>;
    /// Points an existing alias at another key.
    async fn update_alias(&self, name: &str, target_key_id: &str, now_ms: i64) -> Result<()>;
    async fn delete_alias(&self, name: &str) -> Result<()>;
    /// Aliases ordered by name, optionally only those of one key.
    async fn list_aliases(
        &self,
        key_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AliasRecord>>;

    /// Sets tags, replacing the value of any tag key already present.
    async fn put_tags(&self, key_id: &str, tags: &[(String, String)]) -> Result<()>;
    async fn remove_tags(&self, key_id: &str, tag_keys: &[String]) -> Result<()>;
    /// Tags of a key ordered by tag key.
    async fn tags(&self, key_id: &str) -> Result<Vec<(String, String)>>;

    async fn put_access_key(&self, record: &AccessKeyRecord) -> Result<()>;
    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKeyRecord>>;
    /// Access keys of a principal, oldest first.
    async fn access_keys_of(&self, principal_arn: &str) -> Result<Vec<AccessKeyRecord>>;
    /// `NotFound` when there is no such key.
    async fn set_access_key_status(&self, access_key_id: &str, status: &str) -> Result<()>;
    /// `NotFound` when there is no such key.
    async fn delete_access_key(&self, access_key_id: &str) -> Result<()>;

    /// `AlreadyExists` when an entity of that kind has the name in any case.
    async fn create_iam_entity(&self, entity: &IamEntityRecord) -> Result<()>;
    /// Looks a user or group up by name, without regard to case.
    async fn iam_entity(&self, kind: IamKind, name: &str) -> Result<Option<IamEntityRecord>>;
    /// Users or groups ordered by name, starting after `after`.
    async fn list_iam_entities(
        &self,
        kind: IamKind,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<IamEntityRecord>>;
    /// Deletes a user or group with its memberships and inline policies.
    async fn delete_iam_entity(&self, kind: IamKind, name: &str) -> Result<()>;
    /// Idempotent.
    async fn add_group_member(&self, group: &str, user: &str) -> Result<()>;
    /// `NotFound` when the user is not in the group.
    async fn remove_group_member(&self, group: &str, user: &str) -> Result<()>;
    /// The groups a user is in, ordered by name.
    async fn groups_of(&self, user: &str) -> Result<Vec<IamEntityRecord>>;
    /// The user names in a group.
    async fn group_members(&self, group: &str) -> Result<Vec<String>>;
    /// Creates or replaces an inline policy of a user or group.
    async fn put_iam_policy(
        &self,
        kind: IamKind,
        owner: &str,
        name: &str,
        document: &str,
    ) -> Result<()>;
    /// `NotFound` when there is no such policy.
    async fn delete_iam_policy(&self, kind: IamKind, owner: &str, name: &str) -> Result<()>;
    /// Inline policies of a user or group as (name, document), ordered by name.
    async fn iam_policies(&self, kind: IamKind, owner: &str) -> Result<Vec<(String, String)>>;

    async fn create_grant(&self, grant: &GrantRecord) -> Result<()>;
    async fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>>;
    /// Grants of a key ordered by grant id, starting after `after`.
    async fn grants_of_key(
        &self,
        key_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>>;
    /// Grants that `retiring` may retire, ordered by grant id, starting after `after`.
    async fn grants_retirable_by(
        &self,
        retiring: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>>;
    /// Grants on a key whose grantee is `grantee`.
    async fn grants_for(&self, key_id: &str, grantee: &str) -> Result<Vec<GrantRecord>>;
    /// How many grants a key has.
    async fn grant_count(&self, key_id: &str) -> Result<usize>;
    /// `NotFound` when there is no such grant.
    async fn delete_grant(&self, grant_id: &str) -> Result<()>;

    /// `AlreadyExists` (carrying the name) when another store has the name.
    async fn create_custom_key_store(&self, r: &CustomKeyStoreRecord) -> Result<()>;
    /// Every custom key store, oldest first.
    async fn custom_key_stores(&self) -> Result<Vec<CustomKeyStoreRecord>>;
    /// `NotFound` when there is no such store; `AlreadyExists` when the new name is taken.
    async fn update_custom_key_store(&self, r: &CustomKeyStoreRecord) -> Result<()>;
    /// `InUse` while keys are in the store; `NotFound` when there is no such store.
    async fn delete_custom_key_store(&self, id: &str) -> Result<()>;

    /// Writes a consistent copy of the whole store, as of one instant, to the new file `path`
    /// (while other calls go on).
    async fn snapshot_to(&self, path: &std::path::Path) -> Result<()>;

    /// Every secret stored wrapped under the root of trust (key material, secret access keys,
    /// import wrapping keys), for root rotation. Deleted material (an empty value) is left out.
    async fn wrapped_secrets(&self) -> Result<Vec<WrappedSecret>>;
    /// Replaces one wrapped secret if it still holds `old.wrapped`; `false` when it changed or went
    /// away meanwhile.
    async fn replace_wrapped(&self, old: &WrappedSecret, new_wrapped: &[u8]) -> Result<bool>;
    /// Replaces many wrapped secrets in one transaction: all of them, or (when any changed
    /// meanwhile) none. Returns how many were replaced.
    async fn replace_wrapped_all(&self, changes: Vec<(WrappedSecret, Vec<u8>)>) -> Result<usize>;
}
