//! Buckets and objects as S3 defines them, on the metadata store and a blob store: names checked
//! as S3 checks them, versions and delete markers, listings with prefixes and delimiters, and
//! every object sealed under a key of its own that is kept sealed in turn (SSE-S3: under the S3
//! master key, which is wrapped under the root of trust).
//!
//! Domain only: the HTTP side (headers, XML, SigV4, streaming) lives in `coffer-api`.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_crypto::Key256;
use coffer_kms::Kms;
use coffer_meta::objects::NULL_VERSION;
use coffer_meta::{
    BucketAttr, BucketRecord, ListQuery, MetaError, MetaStore, ObjectRecord, PartRef, SseRecord,
    UploadPartRecord, UploadRecord,
};
use serde::{Deserialize, Serialize};

use crate::{BlobId, BlobStore, Piece, StoreError};

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest object a single PUT may store (S3: 5 GiB; larger objects go through multipart).
pub const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Smallest part of a multipart upload, but the last (S3: 5 MiB).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// SSE-S3's name for its algorithm.
pub const AES256: &str = "AES256";

/// An S3 error: the code, HTTP status and message S3 uses.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("The specified bucket does not exist")]
    NoSuchBucket(String),
    #[error("The specified key does not exist.")]
    NoSuchKey { key: String, delete_marker: bool },
    #[error("The specified version does not exist.")]
    NoSuchVersion { key: String, version_id: String },
    #[error("The specified method is not allowed against this resource.")]
    MethodNotAllowed { delete_marker: bool },
    #[error("The specified bucket is not valid.")]
    InvalidBucketName(String),
    #[error("Your previous request to create the named bucket succeeded and you already own it.")]
    BucketAlreadyOwnedByYou(String),
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty(String),
    #[error("Your key is too long")]
    KeyTooLong,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("The requested range is not satisfiable")]
    InvalidRange { len: u64 },
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error("Not Modified")]
    NotModified,
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    IllegalLocationConstraint(String),
    #[error("Your proposed upload exceeds the maximum allowed size")]
    EntityTooLarge,
    #[error("Your proposed upload is smaller than the minimum allowed object size.")]
    EntityTooSmall,
    #[error(
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )]
    NoSuchUpload(String),
    #[error(
        "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
    )]
    InvalidPart,
    #[error(
        "The list of parts was not in ascending order. The parts list must be specified in order by part number."
    )]
    InvalidPartOrder,
    #[error("{0}")]
    BadDigest(String),
    #[error(
        "The XML you provided was not well-formed or did not validate against our published schema"
    )]
    MalformedXml,
    #[error("The server side encryption configuration was not found")]
    NoEncryptionConfiguration,
    #[error("The bucket policy does not exist")]
    NoSuchBucketPolicy,
    #[error("The TagSet does not exist")]
    NoSuchTagSet,
    #[error("The public access block configuration was not found")]
    NoSuchPublicAccessBlockConfiguration,
    /// The stored object failed to authenticate: it was changed or damaged at rest.
    #[error("The stored object is damaged and cannot be returned; it was not read.")]
    Damaged(String),
    /// A failure of Coffer itself; the detail is for the log.
    #[error("{0}")]
    Internal(String),
}

impl S3Error {
    /// S3's error code and HTTP status.
    pub fn code(&self) -> (u16, &'static str) {
        use S3Error as E;
        match self {
            E::NoSuchBucket(_) => (404, "NoSuchBucket"),
            E::NoSuchKey { .. } => (404, "NoSuchKey"),
            E::NoSuchVersion { .. } => (404, "NoSuchVersion"),
            E::MethodNotAllowed { .. } => (405, "MethodNotAllowed"),
            E::InvalidBucketName(_) => (400, "InvalidBucketName"),
            E::BucketAlreadyOwnedByYou(_) => (409, "BucketAlreadyOwnedByYou"),
            E::BucketNotEmpty(_) => (409, "BucketNotEmpty"),
            E::KeyTooLong => (400, "KeyTooLongError"),
            E::InvalidArgument(_) => (400, "InvalidArgument"),
            E::InvalidRequest(_) => (400, "InvalidRequest"),
            E::InvalidRange { .. } => (416, "InvalidRange"),
            E::PreconditionFailed => (412, "PreconditionFailed"),
            E::NotModified => (304, "NotModified"),
            E::AccessDenied(_) => (403, "AccessDenied"),
            E::IllegalLocationConstraint(_) => (400, "IllegalLocationConstraintException"),
            E::EntityTooLarge => (400, "EntityTooLarge"),
            E::EntityTooSmall => (400, "EntityTooSmall"),
            E::NoSuchUpload(_) => (404, "NoSuchUpload"),
            E::InvalidPart => (400, "InvalidPart"),
            E::InvalidPartOrder => (400, "InvalidPartOrder"),
            E::BadDigest(_) => (400, "BadDigest"),
            E::MalformedXml => (400, "MalformedXML"),
            E::NoEncryptionConfiguration => (404, "ServerSideEncryptionConfigurationNotFoundError"),
            E::NoSuchBucketPolicy => (404, "NoSuchBucketPolicy"),
            E::NoSuchTagSet => (404, "NoSuchTagSet"),
            E::NoSuchPublicAccessBlockConfiguration => {
                (404, "NoSuchPublicAccessBlockConfiguration")
            }
            E::Damaged(_) | E::Internal(_) => (500, "InternalError"),
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(self, S3Error::Internal(_) | S3Error::Damaged(_))
    }
}

impl From<MetaError> for S3Error {
    fn from(e: MetaError) -> Self {
        S3Error::Internal(format!("metadata: {e}"))
    }
}

impl From<StoreError> for S3Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Damaged(what) => S3Error::Damaged(what),
            StoreError::InvalidRange { len, .. } => S3Error::InvalidRange { len },
            other => S3Error::Internal(other.to_string()),
        }
    }
}

pub type S3Result<T> = std::result::Result<T, S3Error>;

/// Checks a bucket name against S3's rules for general purpose buckets.
pub fn check_bucket_name(name: &str) -> S3Result<()> {
    let bad = || S3Error::InvalidBucketName(name.to_owned());
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len())
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
        || name.contains("..")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || ["xn--", "sthree-", "amzn-s3-demo-"]
            .iter()
            .any(|p| name.starts_with(p))
        || ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]
            .iter()
            .any(|s| name.ends_with(s))
    {
        return Err(bad());
    }
    Ok(())
}

/// Checks an object key: not empty, at most 1024 bytes of UTF-8.
pub fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(S3Error::InvalidArgument(
            "The object key must not be empty.".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(S3Error::KeyTooLong);
    }
    Ok(())
}

/// The content headers, user metadata and checksum stored with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// `x-amz-meta-*`, names lowercased and without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The checksum the client sent (and Coffer verified): algorithm name and base64 value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<(String, String)>,
}

impl ObjectAttrs {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads stored attributes; a row that does not parse yields none (and is logged).
    pub fn from_json(s: &str) -> Self {
        serde_json::from_str(s).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored object attributes do not parse");
            Self::default()
        })
    }
}

/// How the client asked for an object to be encrypted.
#[derive(Debug, Default)]
pub enum SseRequest {
    /// Nothing asked: the bucket's default encryption, else SSE-S3 (the API resolves the
    /// bucket default before it gets here).
    #[default]
    Default,
    /// `x-amz-server-side-encryption: AES256`.
    S3,
    /// SSE-KMS: the data key KMS generated for this object (it is the object key) and its
    /// ciphertext, which is all that is stored.
    Kms {
        data_key: Key256,
        ciphertext: Vec<u8>,
        key_arn: String,
        /// The encryption context the data key is bound to (JSON object).
        context: String,
        /// With an S3 Bucket Key: `ciphertext` holds the bucket key's KMS ciphertext and the
        /// object key wrapped under it (see `docs/formats.md`).
        bucket_key: bool,
    },
    /// SSE-C: the customer's key (never stored) and its MD5 (base64).
    Customer { key: Key256, key_md5: String },
}

/// SSE-KMS's and SSE-C's names.
pub const AWS_KMS: &str = "aws:kms";
pub const SSE_C: &str = "SSE-C";

/// A write in progress: the version it will be, and the key its bytes are sealed under.
#[derive(Debug)]
pub struct PutPlan {
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    /// Whether this write replaces the key's `null` version (versioning off or suspended).
    replace_null: bool,
    pub object_key: Key256,
    pub sse: SseRecord,
}

/// An object opened for reading: its row and its key.
#[derive(Debug)]
pub struct Opened {
    pub record: ObjectRecord,
    pub object_key: Key256,
}

/// What a DeleteObject did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The version removed or the delete marker made (none for an unversioned bucket).
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

/// One page of a listing (objects, versions or uploads) with keys rolled up by a delimiter.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts, when truncated: the last key (and version or upload id) or
    /// common prefix returned.
    pub next: Option<(String, Option<String>)>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            common_prefixes: Vec::new(),
            truncated: false,
            next: None,
        }
    }
}

/// A listing cursor: after this key (and, with a second part, after that version or upload of
/// it; without, after all of them).
type Cursor = Option<(String, Option<String>)>;

/// One page of a listing's source, being read.
type Fetch<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = S3Result<coffer_meta::Page<T>>> + Send + 'a>,
>;

/// Lists `max` entries under `prefix` from a source read a page at a time (`fetch(cursor,
/// limit)`, in key order), rolling keys that contain `delimiter` past the prefix into common
/// prefixes. A common prefix counts as one entry; one at or before the client's marker key was
/// returned on an earlier page and is skipped.
async fn roll_up<'a, T>(
    prefix: &str,
    delimiter: Option<&str>,
    after: Cursor,
    max: usize,
    key_of: impl Fn(&T) -> (&str, Option<&str>),
    fetch: impl Fn(Cursor, usize) -> Fetch<'a, T>,
) -> S3Result<Listing<T>> {
    let mut out = Listing::default();
    if max == 0 {
        return Ok(out);
    }
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let marker_key = after.as_ref().map(|(k, _)| k.clone());
    let mut cursor = after;
    let mut n = 0;
    'pages: loop {
        let page = fetch(cursor.clone(), max - n + 1).await?;
        for item in page.items {
            if n == max {
                out.truncated = true;
                break 'pages;
            }
            let (key, sub) = key_of(&item);
            let rolled_up = delimiter.and_then(|d| {
                key.get(prefix.len()..)
                    .and_then(|rest| rest.find(d))
                    .map(|at| key[..prefix.len() + at + d.len()].to_owned())
            });
            if let Some(cp) = rolled_up {
                if marker_key.as_deref().is_none_or(|m| cp.as_str() > m)
                    && out.common_prefixes.last() != Some(&cp)
                {
                    out.common_prefixes.push(cp.clone());
                    out.next = Some((cp.clone(), None));
                    n += 1;
                }
                // Skip the rest of the keys under it.
                cursor = Some((format!("{cp}\u{10FFFF}"), None));
                continue 'pages;
            }
            out.next = Some((key.to_owned(), sub.map(str::to_owned)));
            cursor = out.next.clone();
            out.items.push(item);
            n += 1;
        }
        if !page.truncated {
            break;
        }
    }
    if !out.truncated {
        out.next = None;
    }
    Ok(out)
}

/// Whether CreateBucket made the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// Already there and owned by the caller, in us-east-1 (S3 answers 200 there).
    AlreadyOwned,
}

/// The S3 master key, held unwrapped while the server runs.
struct MasterKey {
    id: u32,
    key: Key256,
}

/// Buckets and objects.
pub struct Objects {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    kms: Arc<Kms>,
    master: tokio::sync::OnceCell<MasterKey>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What an object key is bound to when sealed under the master key: the object's bucket, key and
/// version, length-prefixed so that no two objects share a binding.
fn object_key_aad(bucket: &str, key: &str, version_id: &str) -> Vec<u8> {
    format!(
        "coffer:s3-object-key:{}:{bucket}:{}:{key}:{version_id}",
        bucket.len(),
        key.len()
    )
    .into_bytes()
}

/// The CRC of a multipart object from its parts' CRCs, when they all use one CRC algorithm.
fn full_object_checksum(
    uploaded: &[UploadPartRecord],
    kept: &[PartRef],
) -> Option<(String, String)> {
    use coffer_crypto::checksum::{Algorithm, combine};
    let mut algorithm = None;
    let mut pieces = Vec::with_capacity(kept.len());
    for k in kept {
        let p = uploaded.iter().find(|p| p.part_number == k.part_number)?;
        let (name, value) = p.checksum.as_deref()?.split_once(':')?;
        let a = Algorithm::from_name(name)?;
        if *algorithm.get_or_insert(a) != a {
            return None;
        }
        pieces.push((value, p.size));
    }
    let a = algorithm?;
    combine(a, &pieces).map(|v| (a.name().to_owned(), v))
}

/// What an upload's object key is bound to while the upload is in progress.
fn upload_key_aad(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    format!(
        "coffer:s3-upload-key:{}:{bucket}:{}:{key}:{upload_id}",
        bucket.len(),
        key.len()
    )
    .into_bytes()
}

/// What an object key is bound to when sealed under a customer's key (SSE-C): the bucket and
/// key only, as neither an upload's completion nor a new version brings the key again.
fn customer_key_aad(bucket: &str, key: &str) -> Vec<u8> {
    format!(
        "coffer:s3-customer-key:{}:{bucket}:{}:{key}",
        bucket.len(),
        key.len()
    )
    .into_bytes()
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    S3Error::Internal(e.to_string())
}

impl Objects {
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, kms: Arc<Kms>) -> Self {
        Self {
            meta,
            blobs,
            kms,
            master: tokio::sync::OnceCell::new(),
        }
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn region(&self) -> &str {
        &self.kms.config().region
    }

    pub fn account_id(&self) -> &str {
        &self.kms.config().account_id
    }

    /// The S3 master key: loaded and unwrapped once, made (and wrapped under the root) the first
    /// time an object is stored.
    async fn master(&self) -> S3Result<&MasterKey> {
        self.master
            .get_or_try_init(|| async {
                const ID: u32 = 1;
                let wrapped = match self.meta.s3_master_key().await? {
                    Some((_, w)) => w,
                    None => {
                        let key =
                            Key256::generate().map_err(|e| S3Error::Internal(e.to_string()))?;
                        let root = self.kms.root().clone();
                        let wrapped = tokio::task::spawn_blocking(move || {
                            root.wrap(&coffer_kms::s3_master_key_aad(ID), key.expose())
                        })
                        .await
                        .map_err(|e| S3Error::Internal(e.to_string()))?
                        .map_err(|e| S3Error::Internal(format!("wrap the S3 master key: {e}")))?;
                        match self.meta.create_s3_master_key(ID, &wrapped).await {
                            Ok(()) => wrapped,
                            // Another request made it first: use that one.
                            Err(MetaError::AlreadyExists(_)) => self
                                .meta
                                .s3_master_key()
                                .await?
                                .map(|(_, w)| w)
                                .ok_or_else(|| {
                                    S3Error::Internal("S3 master key vanished".into())
                                })?,
                            Err(e) => return Err(e.into()),
                        }
                    }
                };
                let root = self.kms.root().clone();
                let plain = tokio::task::spawn_blocking(move || {
                    root.unwrap(&coffer_kms::s3_master_key_aad(ID), &wrapped)
                })
                .await
                .map_err(|e| S3Error::Internal(e.to_string()))?
                .map_err(|e| S3Error::Internal(format!("unwrap the S3 master key: {e}")))?;
                let key = Key256::from_slice(plain.expose())
                    .map_err(|e| S3Error::Internal(e.to_string()))?;
                Ok(MasterKey { id: ID, key })
            })
            .await
    }

    // ---- buckets ----------------------------------------------------------------------------

    pub async fn create_bucket(
        &self,
        name: &str,
        location: Option<&str>,
        owner: &str,
    ) -> S3Result<Created> {
        check_bucket_name(name)?;
        let region = self.region().to_owned();
        match location {
            Some(l) if l != region && !(l.is_empty() && region == "us-east-1") => {
                return Err(S3Error::IllegalLocationConstraint(format!(
                    "The {l} location constraint is incompatible for the region specific endpoint this request was sent to."
                )));
            }
            None if region != "us-east-1" => {
                return Err(S3Error::IllegalLocationConstraint(
                    "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to.".into(),
                ));
            }
            _ => {}
        }
        let record = BucketRecord {
            name: name.to_owned(),
            owner_account: owner.to_owned(),
            region: region.clone(),
            created_ms: now_ms(),
            versioning: String::new(),
        };
        match self.meta.create_bucket(&record).await {
            Ok(()) => Ok(Created::New),
            Err(MetaError::AlreadyExists(_)) if region == "us-east-1" => Ok(Created::AlreadyOwned),
            Err(MetaError::AlreadyExists(_)) => {
                Err(S3Error::BucketAlreadyOwnedByYou(name.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The bucket, or `NoSuchBucket`.
    pub async fn bucket(&self, name: &str) -> S3Result<BucketRecord> {
        self.meta
            .bucket(name)
            .await?
            .ok_or_else(|| S3Error::NoSuchBucket(name.to_owned()))
    }

    pub async fn list_buckets(&self) -> S3Result<Vec<BucketRecord>> {
        Ok(self.meta.list_buckets().await?)
    }

    pub async fn delete_bucket(&self, name: &str) -> S3Result<()> {
        match self.meta.delete_bucket(name).await {
            Ok(()) => Ok(()),
            Err(MetaError::NotFound(_)) => Err(S3Error::NoSuchBucket(name.to_owned())),
            Err(MetaError::InUse(_)) => Err(S3Error::BucketNotEmpty(name.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn set_versioning(&self, name: &str, status: &str) -> S3Result<()> {
        match self.meta.set_bucket_versioning(name, status).await {
            Err(MetaError::NotFound(_)) => Err(S3Error::NoSuchBucket(name.to_owned())),
            r => Ok(r?),
        }
    }

    pub async fn bucket_attr(&self, name: &str, attr: BucketAttr) -> S3Result<Option<String>> {
        self.bucket(name).await?;
        Ok(self.meta.bucket_attr(name, attr).await?)
    }

    pub async fn set_bucket_attr(
        &self,
        name: &str,
        attr: BucketAttr,
        value: Option<&str>,
    ) -> S3Result<()> {
        match self.meta.set_bucket_attr(name, attr, value).await {
            Err(MetaError::NotFound(_)) => Err(S3Error::NoSuchBucket(name.to_owned())),
            r => Ok(r?),
        }
    }

    // ---- writing ----------------------------------------------------------------------------

    /// Decides the version and the encryption of a new object, and makes its key.
    pub async fn plan_put(&self, bucket: &str, key: &str, sse: SseRequest) -> S3Result<PutPlan> {
        check_key(key)?;
        let b = self.bucket(bucket).await?;
        let (version_id, replace_null) = match b.versioning.as_str() {
            "Enabled" => (new_version_id(), false),
            _ => (NULL_VERSION.to_owned(), true),
        };
        let (object_key, sse) = self
            .new_key(sse, bucket, key, &object_key_aad(bucket, key, &version_id))
            .await?;
        Ok(PutPlan {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id,
            replace_null,
            object_key,
            sse,
        })
    }

    /// The key a new object (or upload) is sealed under, and how it is kept: SSE-S3 and SSE-C
    /// make a fresh key and seal it (under the master key bound to `aad`, or under the
    /// customer's key bound to the bucket and key); SSE-KMS's key is the data key KMS made.
    async fn new_key(
        &self,
        sse: SseRequest,
        bucket: &str,
        key: &str,
        aad: &[u8],
    ) -> S3Result<(Key256, SseRecord)> {
        match sse {
            SseRequest::Default | SseRequest::S3 => {
                let object_key = Key256::generate().map_err(internal)?;
                let record = self.seal_s3(&object_key, aad).await?;
                Ok((object_key, record))
            }
            SseRequest::Kms {
                data_key,
                ciphertext,
                key_arn,
                context,
                bucket_key,
            } => Ok((
                data_key,
                SseRecord {
                    mode: AWS_KMS.into(),
                    sealed_key: ciphertext,
                    key_id: Some(key_arn),
                    context: Some(context),
                    key_check: None,
                    bucket_key,
                },
            )),
            SseRequest::Customer {
                key: customer,
                key_md5,
            } => {
                let object_key = Key256::generate().map_err(internal)?;
                let sealed = coffer_crypto::wrap::wrap(
                    &customer,
                    0,
                    &customer_key_aad(bucket, key),
                    object_key.expose(),
                )
                .map_err(internal)?;
                Ok((
                    object_key,
                    SseRecord {
                        mode: SSE_C.into(),
                        sealed_key: sealed,
                        context: Some(key_md5),
                        ..SseRecord::default()
                    },
                ))
            }
        }
    }

    /// Seals a key under the S3 master key, bound to `aad`.
    async fn seal_s3(&self, key: &Key256, aad: &[u8]) -> S3Result<SseRecord> {
        let master = self.master().await?;
        let sealed = coffer_crypto::wrap::wrap(&master.key, master.id, aad, key.expose())
            .map_err(internal)?;
        Ok(SseRecord {
            mode: AES256.into(),
            sealed_key: sealed,
            key_id: Some(master.id.to_string()),
            ..SseRecord::default()
        })
    }

    /// Opens a key sealed under the S3 master key with the same binding.
    async fn unseal_s3(&self, sse: &SseRecord, aad: &[u8], what: &str) -> S3Result<Key256> {
        if sse.mode != AES256 {
            return Err(S3Error::Internal(format!(
                "{what} uses {}, whose key the caller must open",
                sse.mode
            )));
        }
        let master = self.master().await?;
        let plain = coffer_crypto::wrap::unwrap(&master.key, aad, &sse.sealed_key)
            .map_err(|_| S3Error::Damaged(what.to_owned()))?;
        Key256::from_slice(plain.expose()).map_err(internal)
    }

    /// Opens an SSE-C object's (or upload's) key with the customer's key; a different key is
    /// `AccessDenied`, as in S3.
    pub fn unseal_customer(
        &self,
        sse: &SseRecord,
        bucket: &str,
        key: &str,
        customer: &Key256,
    ) -> S3Result<Key256> {
        let plain =
            coffer_crypto::wrap::unwrap(customer, &customer_key_aad(bucket, key), &sse.sealed_key)
                .map_err(|_| S3Error::AccessDenied("Access Denied".into()))?;
        Key256::from_slice(plain.expose()).map_err(internal)
    }

    /// Records a written object; it becomes visible now. What it replaced is deleted.
    pub async fn commit_put(
        &self,
        plan: PutPlan,
        written: &crate::Written,
        etag: String,
        attrs: &ObjectAttrs,
        tags: &BTreeMap<String, String>,
    ) -> S3Result<ObjectRecord> {
        let record = ObjectRecord {
            bucket: plan.bucket,
            key: plan.key,
            version_id: plan.version_id,
            is_latest: true,
            delete_marker: false,
            size: written.plaintext_len,
            etag,
            last_modified_ms: now_ms(),
            blob: Some(written.blob.to_string()),
            parts: Vec::new(),
            sse: plan.sse,
            attrs: attrs.to_json(),
            tags: serde_json::to_string(tags).unwrap_or_else(|_| "{}".into()),
        };
        let result = self.meta.put_object(&record, plan.replace_null).await;
        let garbage = match result {
            Ok(g) => g,
            Err(e) => {
                // The blob was never named by a row: remove it now.
                let _ = self.blobs.delete(&written.blob);
                return Err(match e {
                    MetaError::NotFound(b) => S3Error::NoSuchBucket(b),
                    e => e.into(),
                });
            }
        };
        self.delete_blobs(garbage).await;
        Ok(record)
    }

    /// Deletes blobs no row names any more and takes them off the garbage list. Failures are
    /// logged; the blobs stay listed and the next sweep tries again.
    async fn delete_blobs(&self, blobs: Vec<String>) {
        if blobs.is_empty() {
            return;
        }
        let store = self.blobs.clone();
        let gone = tokio::task::spawn_blocking(move || {
            blobs
                .into_iter()
                .filter(|b| match BlobId::parse(b) {
                    Some(id) => match store.delete(&id) {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(blob = %b, error = %e, "cannot delete a discarded blob");
                            false
                        }
                    },
                    None => true,
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if let Err(e) = self.meta.forget_garbage(&gone).await {
            tracing::warn!(error = %e, "cannot update the blob garbage list");
        }
    }

    /// At start: removes half-written blobs, blobs on the garbage list, and blobs no row names
    /// (written just before a crash, never committed). Returns how many were removed.
    pub async fn sweep(&self) -> S3Result<usize> {
        let store = self.blobs.clone();
        let (tmp, on_disk) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((store.clean_temporary()?, store.list()?))
        })
        .await
        .map_err(|e| S3Error::Internal(e.to_string()))??;
        let mut removed = tmp;
        loop {
            let garbage = self.meta.garbage_blobs(1000).await?;
            if garbage.is_empty() {
                break;
            }
            removed += garbage.len();
            let n = garbage.len();
            self.delete_blobs(garbage).await;
            if n < 1000 {
                break;
            }
        }
        for chunk in on_disk.chunks(1000) {
            let names: Vec<String> = chunk.iter().map(|b| b.to_string()).collect();
            let used: std::collections::HashSet<String> = self
                .meta
                .referenced_blobs(&names)
                .await?
                .into_iter()
                .collect();
            for id in chunk {
                if !used.contains(id.as_str()) && self.blobs.delete(id)? {
                    tracing::info!(blob = %id, "removed a blob no object names (a write cut short)");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    // ---- reading ----------------------------------------------------------------------------

    /// The row of an object version (the latest when `version_id` is `None`), refusing delete
    /// markers as S3 does.
    pub async fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<ObjectRecord> {
        self.bucket(bucket).await?;
        let found = self.meta.object(bucket, key, version_id).await?;
        match (found, version_id) {
            (None, None) => Err(S3Error::NoSuchKey {
                key: key.to_owned(),
                delete_marker: false,
            }),
            (None, Some(v)) => Err(S3Error::NoSuchVersion {
                key: key.to_owned(),
                version_id: v.to_owned(),
            }),
            (Some(r), None) if r.delete_marker => Err(S3Error::NoSuchKey {
                key: key.to_owned(),
                delete_marker: true,
            }),
            (Some(r), Some(_)) if r.delete_marker => Err(S3Error::MethodNotAllowed {
                delete_marker: true,
            }),
            (Some(r), _) => Ok(r),
        }
    }

    /// The key an SSE-S3 object's bytes are sealed under (SSE-KMS and SSE-C keys are opened
    /// by the caller, with KMS or the customer's key).
    pub async fn object_key(&self, record: &ObjectRecord) -> S3Result<Key256> {
        self.unseal_s3(
            &record.sse,
            &object_key_aad(&record.bucket, &record.key, &record.version_id),
            &format!("{}/{}", record.bucket, record.key),
        )
        .await
    }

    /// Where an object's plaintext is kept, piece by piece, with the keys to open each.
    pub fn pieces(&self, record: &ObjectRecord, object_key: &Key256) -> S3Result<Vec<Piece>> {
        let blob = |b: &str| {
            BlobId::parse(b).ok_or_else(|| {
                S3Error::Internal(format!(
                    "object {}/{} names an invalid blob",
                    record.bucket, record.key
                ))
            })
        };
        if record.parts.is_empty() {
            let b = record.blob.as_deref().ok_or_else(|| {
                S3Error::Internal(format!(
                    "object {}/{} has no data",
                    record.bucket, record.key
                ))
            })?;
            return Ok(vec![Piece {
                blob: blob(b)?,
                key: Key256::from_slice(object_key.expose()).map_err(internal)?,
                len: record.size,
            }]);
        }
        record
            .parts
            .iter()
            .map(|p| {
                Ok(Piece {
                    blob: blob(&p.blob)?,
                    key: coffer_crypto::package::part_key(object_key, p.part_number)
                        .map_err(internal)?,
                    len: p.size,
                })
            })
            .collect()
    }

    pub async fn open(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<Opened> {
        let record = self.head(bucket, key, version_id).await?;
        let object_key = self.object_key(&record).await?;
        Ok(Opened { record, object_key })
    }

    /// An object version's tag set.
    pub async fn tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<(ObjectRecord, BTreeMap<String, String>)> {
        let r = self.head(bucket, key, version_id).await?;
        let tags = serde_json::from_str(&r.tags).unwrap_or_default();
        Ok((r, tags))
    }

    /// Replaces an object version's tag set; returns the version id.
    pub async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> S3Result<String> {
        let r = self.head(bucket, key, version_id).await?;
        let json = serde_json::to_string(tags).unwrap_or_else(|_| "{}".into());
        match self
            .meta
            .set_object_tags(bucket, key, &r.version_id, &json)
            .await
        {
            Err(MetaError::NotFound(_)) => Err(S3Error::NoSuchKey {
                key: key.to_owned(),
                delete_marker: false,
            }),
            other => {
                other?;
                Ok(r.version_id)
            }
        }
    }

    // ---- multipart uploads ------------------------------------------------------------------

    /// Starts a multipart upload: its object key is made and sealed now, bound to the upload.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        sse: SseRequest,
        attrs: &ObjectAttrs,
        tags: &BTreeMap<String, String>,
    ) -> S3Result<UploadRecord> {
        check_key(key)?;
        self.bucket(bucket).await?;
        let upload_id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let (_, sse) = self
            .new_key(sse, bucket, key, &upload_key_aad(bucket, key, &upload_id))
            .await?;
        let upload = UploadRecord {
            upload_id,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            initiated_ms: now_ms(),
            sse,
            attrs: attrs.to_json(),
            tags: serde_json::to_string(tags).unwrap_or_else(|_| "{}".into()),
        };
        match self.meta.create_upload(&upload).await {
            Err(MetaError::NotFound(b)) => Err(S3Error::NoSuchBucket(b)),
            r => r.map(|()| upload).map_err(Into::into),
        }
    }

    /// An upload in progress for this bucket and key, or `NoSuchUpload`.
    pub async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<UploadRecord> {
        self.bucket(bucket).await?;
        self.meta
            .upload(upload_id)
            .await?
            .filter(|u| u.bucket == bucket && u.key == key)
            .ok_or_else(|| S3Error::NoSuchUpload(upload_id.to_owned()))
    }

    /// The object key of an SSE-S3 upload (SSE-KMS and SSE-C keys are opened by the caller).
    pub async fn upload_key(&self, upload: &UploadRecord) -> S3Result<Key256> {
        self.unseal_s3(
            &upload.sse,
            &upload_key_aad(&upload.bucket, &upload.key, &upload.upload_id),
            &format!("upload {}", upload.upload_id),
        )
        .await
    }

    /// Records an uploaded part (replacing an earlier one of the same number).
    pub async fn record_part(
        &self,
        upload: &UploadRecord,
        part_number: u32,
        written: &crate::Written,
        checksum: Option<String>,
    ) -> S3Result<UploadPartRecord> {
        let part = UploadPartRecord {
            part_number,
            size: written.plaintext_len,
            etag: format!("\"{}\"", coffer_crypto::digest::hex(&written.md5)),
            blob: written.blob.to_string(),
            checksum,
            last_modified_ms: now_ms(),
        };
        match self.meta.put_upload_part(&upload.upload_id, &part).await {
            Ok(old) => {
                self.delete_blobs(old.into_iter().collect()).await;
                Ok(part)
            }
            Err(e) => {
                let _ = self.blobs.delete(&written.blob);
                Err(match e {
                    MetaError::NotFound(id) => S3Error::NoSuchUpload(id),
                    e => e.into(),
                })
            }
        }
    }

    /// Every part uploaded so far, by number.
    pub async fn all_parts(&self, upload_id: &str) -> S3Result<Vec<UploadPartRecord>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.meta.upload_parts(upload_id, after, 1000).await?;
            after = page.items.last().map_or(after, |p| p.part_number);
            out.extend(page.items);
            if !page.truncated {
                return Ok(out);
            }
        }
    }

    pub async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        max: usize,
    ) -> S3Result<coffer_meta::Page<UploadPartRecord>> {
        Ok(self.meta.upload_parts(upload_id, after, max).await?)
    }

    /// Uploads in progress by key then upload id, rolled up by `delimiter` as in
    /// [`Objects::list`].
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<(&str, Option<&str>)>,
        max: usize,
    ) -> S3Result<Listing<UploadRecord>> {
        self.bucket(bucket).await?;
        let meta = &self.meta;
        roll_up(
            prefix,
            delimiter,
            after.map(|(k, v)| (k.to_owned(), v.map(str::to_owned))),
            max,
            |u: &UploadRecord| (u.key.as_str(), Some(u.upload_id.as_str())),
            |cursor: Cursor, limit| {
                Box::pin(async move {
                    let after = cursor.as_ref().map(|(k, v)| (k.as_str(), v.as_deref()));
                    Ok(meta.list_uploads(bucket, prefix, after, limit).await?)
                })
            },
        )
        .await
    }

    /// Completes an upload from the parts the client lists (number and ETag, ascending): each
    /// must have been uploaded with that ETag, and all but the last must be at least 5 MiB.
    /// The object's ETag is S3's: the MD5 of the parts' MD5s, a dash and the part count.
    /// `expected` is a full-object checksum the client sent (algorithm name, base64); it is
    /// checked when the parts' checksums can be combined into one of that algorithm.
    pub async fn complete_upload(
        &self,
        upload: &UploadRecord,
        listed: &[(u32, String)],
        expected: Option<(String, String)>,
    ) -> S3Result<ObjectRecord> {
        if listed.is_empty() {
            return Err(S3Error::InvalidRequest(
                "You must specify at least one part".into(),
            ));
        }
        if !listed.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(S3Error::InvalidPartOrder);
        }
        let uploaded = self.all_parts(&upload.upload_id).await?;
        let mut parts = Vec::with_capacity(listed.len());
        let mut md5s = Vec::with_capacity(listed.len() * 16);
        let mut size = 0u64;
        for (i, (n, etag)) in listed.iter().enumerate() {
            let p = uploaded
                .iter()
                .find(|p| p.part_number == *n)
                .filter(|p| p.etag.trim_matches('"') == etag.trim().trim_matches('"'))
                .ok_or(S3Error::InvalidPart)?;
            if i + 1 < listed.len() && p.size < MIN_PART_BYTES {
                return Err(S3Error::EntityTooSmall);
            }
            let hex = p.etag.trim_matches('"');
            for k in (0..hex.len()).step_by(2) {
                md5s.push(u8::from_str_radix(&hex[k..k + 2], 16).map_err(internal)?);
            }
            size += p.size;
            parts.push(PartRef {
                part_number: p.part_number,
                size: p.size,
                blob: p.blob.clone(),
            });
        }
        let etag = format!(
            "\"{}-{}\"",
            coffer_crypto::digest::hex(&coffer_crypto::digest::md5(&md5s)),
            listed.len()
        );
        // With every part's CRC of one algorithm, the object's own checksum is their
        // combination (S3's FULL_OBJECT checksum); otherwise the object has none.
        let mut attrs = ObjectAttrs::from_json(&upload.attrs);
        attrs.checksum = full_object_checksum(&uploaded, &parts);
        if let (Some((alg, want)), Some((have_alg, have))) = (&expected, &attrs.checksum)
            && alg.eq_ignore_ascii_case(have_alg)
            && want.trim() != have
        {
            return Err(S3Error::BadDigest(format!(
                "The x-amz-checksum-{} you specified did not match the checksum of the parts.",
                alg.to_ascii_lowercase()
            )));
        }
        let b = self.bucket(&upload.bucket).await?;
        let (version_id, replace_null) = match b.versioning.as_str() {
            "Enabled" => (new_version_id(), false),
            _ => (NULL_VERSION.to_owned(), true),
        };
        // An SSE-S3 key moves from the upload's binding to the object's; SSE-KMS and SSE-C
        // keys are bound to the object's name already.
        let sse = if upload.sse.mode == AES256 {
            let object_key = self.upload_key(upload).await?;
            self.seal_s3(
                &object_key,
                &object_key_aad(&upload.bucket, &upload.key, &version_id),
            )
            .await?
        } else {
            upload.sse.clone()
        };
        let record = ObjectRecord {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            version_id,
            is_latest: true,
            delete_marker: false,
            size,
            etag,
            last_modified_ms: now_ms(),
            blob: None,
            parts,
            sse,
            attrs: attrs.to_json(),
            tags: upload.tags.clone(),
        };
        let garbage = match self
            .meta
            .complete_upload(&upload.upload_id, &record, replace_null)
            .await
        {
            Err(MetaError::NotFound(id)) => return Err(S3Error::NoSuchUpload(id)),
            r => r?,
        };
        self.delete_blobs(garbage).await;
        Ok(record)
    }

    pub async fn abort_upload(&self, upload: &UploadRecord) -> S3Result<()> {
        match self.meta.abort_upload(&upload.upload_id).await {
            Err(MetaError::NotFound(id)) => Err(S3Error::NoSuchUpload(id)),
            Ok(garbage) => {
                self.delete_blobs(garbage).await;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---- deleting ---------------------------------------------------------------------------

    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<Deleted> {
        check_key(key)?;
        let b = self.bucket(bucket).await?;
        if let Some(v) = version_id {
            let removed = self.meta.delete_object_version(bucket, key, v).await?;
            if let Some(r) = &removed {
                self.delete_blobs(r.blob.iter().cloned().collect()).await;
            }
            return Ok(Deleted {
                version_id: Some(v.to_owned()),
                delete_marker: removed.is_some_and(|r| r.delete_marker),
            });
        }
        match b.versioning.as_str() {
            "" => {
                let removed = self
                    .meta
                    .delete_object_version(bucket, key, NULL_VERSION)
                    .await?;
                if let Some(r) = removed {
                    self.delete_blobs(r.blob.into_iter().collect()).await;
                }
                Ok(Deleted::default())
            }
            state => {
                let version_id = if state == "Enabled" {
                    new_version_id()
                } else {
                    NULL_VERSION.to_owned()
                };
                let marker = ObjectRecord {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    version_id: version_id.clone(),
                    is_latest: true,
                    delete_marker: true,
                    size: 0,
                    etag: String::new(),
                    last_modified_ms: now_ms(),
                    blob: None,
                    parts: Vec::new(),
                    sse: SseRecord::default(),
                    attrs: "{}".into(),
                    tags: "{}".into(),
                };
                let garbage = self.meta.put_object(&marker, state != "Enabled").await?;
                self.delete_blobs(garbage).await;
                Ok(Deleted {
                    version_id: Some(version_id),
                    delete_marker: true,
                })
            }
        }
    }

    // ---- listing ----------------------------------------------------------------------------

    /// The current objects under `prefix`, keys after `after`, with keys that contain
    /// `delimiter` past the prefix rolled up into common prefixes. At most `max_keys` entries
    /// (contents and common prefixes together).
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: usize,
    ) -> S3Result<Listing<ObjectRecord>> {
        self.bucket(bucket).await?;
        let meta = &self.meta;
        roll_up(
            prefix,
            delimiter,
            after.map(|a| (a.to_owned(), None)),
            max_keys,
            |o: &ObjectRecord| (o.key.as_str(), None),
            |cursor: Cursor, limit| {
                Box::pin(async move {
                    let q = ListQuery {
                        prefix,
                        after: cursor.as_ref().map(|(k, _)| k.as_str()),
                        limit,
                    };
                    Ok(meta.list_objects(bucket, &q).await?)
                })
            },
        )
        .await
    }

    /// Every version and delete marker under `prefix`, by key then newest first, resuming after
    /// `after` (a key, and a version of it); with a delimiter, keys that contain it past the
    /// prefix are rolled up into common prefixes as in [`Objects::list`].
    pub async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<(&str, Option<&str>)>,
        max_keys: usize,
    ) -> S3Result<Listing<ObjectRecord>> {
        self.bucket(bucket).await?;
        let meta = &self.meta;
        roll_up(
            prefix,
            delimiter,
            after.map(|(k, v)| (k.to_owned(), v.map(str::to_owned))),
            max_keys,
            |o: &ObjectRecord| (o.key.as_str(), Some(o.version_id.as_str())),
            |cursor: Cursor, limit| {
                Box::pin(async move {
                    let after = cursor.as_ref().map(|(k, v)| (k.as_str(), v.as_deref()));
                    Ok(meta
                        .list_object_versions(bucket, prefix, after, limit)
                        .await?)
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.logs", "a1b", "x".repeat(63).as_str()] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "abc-s3alias",
            "a_b",
            &"x".repeat(64),
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_key_bindings_differ() {
        assert_ne!(
            object_key_aad("ab", "c:d", "null"),
            object_key_aad("ab:c", "d", "null")
        );
    }
}
