//! Metadata of the object store: buckets, object versions (with the sealed per-object key), the
//! S3 master key (wrapped under the root) and blobs waiting to be deleted.
//!
//! Object bytes are never here: a row names its blob, which the caller wrote and made durable
//! before the row was committed. A row that replaces or removes another moves the old blob's id to
//! the garbage list in the same transaction, so a crash between the commit and the blob's deletion
//! leaves a blob the next start deletes, never a row naming a missing blob.

use async_trait::async_trait;

use crate::{Page, Result};

/// The `version_id` of an object written while versioning is off or suspended.
pub const NULL_VERSION: &str = "null";

/// A bucket and its settings. Settings are stored as the documents S3 accepts (XML or JSON), each
/// validated by the API before it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRecord {
    pub name: String,
    pub owner_account: String,
    pub region: String,
    pub created_ms: i64,
    /// Empty (never enabled), `Enabled` or `Suspended`.
    pub versioning: String,
}

/// A bucket setting kept as one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketAttr {
    /// Default encryption (ServerSideEncryptionConfiguration, as JSON).
    Encryption,
    /// The bucket policy (JSON).
    Policy,
    /// PublicAccessBlockConfiguration (JSON).
    PublicAccessBlock,
    /// Tag set (JSON object).
    Tags,
}

impl BucketAttr {
    pub(crate) fn column(self) -> &'static str {
        match self {
            BucketAttr::Encryption => "encryption",
            BucketAttr::Policy => "policy",
            BucketAttr::PublicAccessBlock => "public_access_block",
            BucketAttr::Tags => "tags",
        }
    }
}

/// How an object's key is kept.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SseRecord {
    /// `AES256` (SSE-S3), `aws:kms` (SSE-KMS) or `SSE-C`.
    pub mode: String,
    /// The object key sealed under what `mode` names: the S3 master key, a KMS data key's
    /// ciphertext, or (SSE-C) nothing, as the customer brings the key.
    pub sealed_key: Vec<u8>,
    /// SSE-KMS: the key ARN; SSE-S3: the master key id.
    pub key_id: Option<String>,
    /// SSE-KMS: the encryption context (JSON); SSE-C: the key's MD5 (base64).
    pub context: Option<String>,
    /// SSE-C: an HMAC of the customer key, to recognise it again without storing it.
    pub key_check: Option<Vec<u8>>,
    pub bucket_key: bool,
}

impl std::fmt::Debug for SseRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseRecord")
            .field("mode", &self.mode)
            .field("key_id", &self.key_id)
            .field("bucket_key", &self.bucket_key)
            .finish_non_exhaustive()
    }
}

/// One version of an object, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
    pub size: u64,
    /// Quoted, as S3 sends it.
    pub etag: String,
    pub last_modified_ms: i64,
    /// The blob holding the sealed bytes (none for a delete marker or a multipart object).
    pub blob: Option<String>,
    /// A multipart object's parts, in order (each sealed in a blob of its own). Filled when
    /// one object is read; empty in listings.
    pub parts: Vec<PartRef>,
    pub sse: SseRecord,
    /// Content headers, user metadata and checksums (JSON object), as the API keeps them.
    pub attrs: String,
    /// The tag set (JSON object).
    pub tags: String,
}

/// One part of a multipart object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    pub part_number: u32,
    pub size: u64,
    pub blob: String,
}

/// A multipart upload in progress: what the object will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated_ms: i64,
    /// The object key, sealed as for an object but bound to the upload.
    pub sse: SseRecord,
    pub attrs: String,
    pub tags: String,
}

/// An uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPartRecord {
    pub part_number: u32,
    pub size: u64,
    /// Quoted MD5 of the part.
    pub etag: String,
    pub blob: String,
    /// The part's checksum (`ALGORITHM:base64`), when one was sent or computed.
    pub checksum: Option<String>,
    pub last_modified_ms: i64,
}

/// What a listing of the current objects asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<'a> {
    pub prefix: &'a str,
    /// Only keys after this one.
    pub after: Option<&'a str>,
    pub limit: usize,
}

/// The metadata of the object store. Each method is one transaction.
#[async_trait]
pub trait ObjectMeta: Send + Sync {
    /// The S3 master key (id, wrapped under the root), if one was made.
    async fn s3_master_key(&self) -> Result<Option<(u32, Vec<u8>)>>;
    /// Stores the S3 master key; `AlreadyExists` if another was stored first.
    async fn create_s3_master_key(&self, id: u32, wrapped: &[u8]) -> Result<()>;

    /// `AlreadyExists` when the name is taken.
    async fn create_bucket(&self, bucket: &BucketRecord) -> Result<()>;
    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>>;
    /// Every bucket, by name.
    async fn list_buckets(&self) -> Result<Vec<BucketRecord>>;
    /// `InUse` while it holds object versions, delete markers or uploads; `NotFound` if absent.
    async fn delete_bucket(&self, name: &str) -> Result<()>;
    /// `NotFound` if there is no such bucket.
    async fn set_bucket_versioning(&self, name: &str, state: &str) -> Result<()>;
    async fn bucket_attr(&self, name: &str, attr: BucketAttr) -> Result<Option<String>>;
    /// Sets (or with `None` removes) a bucket setting; `NotFound` if there is no such bucket.
    async fn set_bucket_attr(
        &self,
        name: &str,
        attr: BucketAttr,
        value: Option<&str>,
    ) -> Result<()>;

    /// Adds a version and makes it the latest. When `replace_null` (versioning off or
    /// suspended), the key's `null` version is replaced: its blob goes to the garbage list and its
    /// id is returned. `NotFound` if the bucket is gone.
    async fn put_object(&self, object: &ObjectRecord, replace_null: bool) -> Result<Vec<String>>;
    /// The named version, or the latest (which may be a delete marker).
    async fn object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectRecord>>;
    /// Removes one version; the newest remaining version becomes the latest. Returns the removed
    /// row (its blob is on the garbage list).
    async fn delete_object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectRecord>>;
    /// Replaces the tag set of one version; `NotFound` if there is no such version.
    async fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &str,
    ) -> Result<()>;
    /// The latest versions that are not delete markers, by key.
    async fn list_objects(&self, bucket: &str, q: &ListQuery<'_>) -> Result<Page<ObjectRecord>>;
    /// Every version and delete marker, by key then newest first, starting after
    /// (`key`, `version_id`) when given.
    async fn list_object_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        limit: usize,
    ) -> Result<Page<ObjectRecord>>;

    async fn create_upload(&self, upload: &UploadRecord) -> Result<()>;
    async fn upload(&self, upload_id: &str) -> Result<Option<UploadRecord>>;
    /// Records a part (replacing one of the same number, whose blob goes to the garbage list and
    /// is returned). `NotFound` if the upload is gone.
    async fn put_upload_part(
        &self,
        upload_id: &str,
        part: &UploadPartRecord,
    ) -> Result<Option<String>>;
    /// Parts by number, after `after`.
    async fn upload_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Page<UploadPartRecord>>;
    /// Uploads in a bucket by key then upload id, after (`key`, `upload_id`).
    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        limit: usize,
    ) -> Result<Page<UploadRecord>>;
    /// Removes an upload; its parts' blobs go to the garbage list and are returned. `NotFound`
    /// if there is no such upload.
    async fn abort_upload(&self, upload_id: &str) -> Result<Vec<String>>;
    /// Turns an upload into an object in one transaction: the object row (whose `parts` name
    /// the upload's parts it keeps) is added as in [`ObjectMeta::put_object`], the upload and the
    /// parts it does not keep are removed. Returns the blobs discarded. `NotFound` if the
    /// upload is gone.
    async fn complete_upload(
        &self,
        upload_id: &str,
        object: &ObjectRecord,
        replace_null: bool,
    ) -> Result<Vec<String>>;

    /// Blobs no row names any more, waiting to be deleted.
    async fn garbage_blobs(&self, limit: usize) -> Result<Vec<String>>;
    /// Takes blobs off the garbage list once they are deleted.
    async fn forget_garbage(&self, blobs: &[String]) -> Result<()>;
    /// Of `candidates`, those that some object row names.
    async fn referenced_blobs(&self, candidates: &[String]) -> Result<Vec<String>>;
}
