//! Server-side encryption as a request asks for it: SSE-S3, SSE-KMS (a Coffer key by id, ARN or
//! alias, or the `aws/s3` AWS managed key made on first use) and SSE-C (the customer's key, which
//! is checked against its MD5 and never kept). The bucket's default applies when a write asks
//! for nothing.
//!
//! SSE-KMS calls KMS as the caller, the way S3 does on a caller's behalf: the key policy,
//! grants and identity policies decide, with `kms:ViaService` set to this region's S3, and the
//! call is recorded in the audit log as a KMS event of its own. A key that is disabled, pending
//! deletion or denied fails the request with the error S3 returns.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use coffer_crypto::Key256;
use coffer_kms::{Caller, KeyRef, KmsError};
use coffer_meta::{BucketAttr, ObjectRecord, SseRecord};
use coffer_store::s3::{AES256, AWS_KMS, S3Error, SSE_C, SseRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Ctx, Fail};
use crate::ApiError;
use crate::kms::KmsOperation;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const CUSTOMER_ALGORITHM: &str = "x-amz-server-side-encryption-customer-algorithm";
const CUSTOMER_KEY: &str = "x-amz-server-side-encryption-customer-key";
const CUSTOMER_KEY_MD5: &str = "x-amz-server-side-encryption-customer-key-md5";
const COPY_CUSTOMER_ALGORITHM: &str = "x-amz-copy-source-server-side-encryption-customer-algorithm";
const COPY_CUSTOMER_KEY: &str = "x-amz-copy-source-server-side-encryption-customer-key";
const COPY_CUSTOMER_KEY_MD5: &str = "x-amz-copy-source-server-side-encryption-customer-key-md5";
/// The description AWS gives the S3 AWS managed key.
const MANAGED_KEY_DESCRIPTION: &str =
    "Default key that protects my S3 objects when no other key is defined";

/// A bucket's default encryption, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketEncryption {
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub bucket_key: bool,
    /// Encryption types writes may not use (S3's BlockedEncryptionTypes: `SSE-C`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
}

impl Default for BucketEncryption {
    fn default() -> Self {
        Self {
            algorithm: AES256.into(),
            kms_key_id: None,
            bucket_key: false,
            blocked: Vec::new(),
        }
    }
}

/// A bucket's default encryption (SSE-S3 when none was set).
pub async fn bucket_encryption(ctx: &Ctx<'_>, bucket: &str) -> Result<BucketEncryption, Fail> {
    Ok(ctx
        .objects()
        .bucket_attr(bucket, BucketAttr::Encryption)
        .await?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default())
}

fn kms_fail(e: KmsError) -> Fail {
    let bad = StatusCode::BAD_REQUEST;
    match e {
        KmsError::AccessDenied(m) => Fail::new(StatusCode::FORBIDDEN, "AccessDenied", m),
        KmsError::Disabled(m) => Fail::new(bad, "KMS.DisabledException", m),
        KmsError::InvalidState(m) => Fail::new(bad, "KMS.KMSInvalidStateException", m),
        KmsError::NotFound(m) => Fail::new(bad, "KMS.NotFoundException", m),
        KmsError::InvalidArn(m) | KmsError::Validation(m) => {
            Fail::new(bad, "KMS.ValidationException", m)
        }
        KmsError::InvalidKeyUsage(m) => Fail::new(bad, "KMS.InvalidKeyUsageException", m),
        KmsError::InvalidCiphertext(m) => Fail::internal(format!(
            "an SSE-KMS object's stored data key does not decrypt: {m}"
        )),
        KmsError::UnsupportedOperation(m) => Fail::new(bad, "KMS.UnsupportedOperationException", m),
        other => Fail::internal(other.to_string()),
    }
}

fn api_fail(e: ApiError) -> Fail {
    match e {
        ApiError::Kms(k) => kms_fail(k),
        ApiError::Validation(_) | ApiError::Serialization(_) => Fail::new(
            StatusCode::BAD_REQUEST,
            "KMS.ValidationException",
            e.to_string(),
        ),
        other => Fail::from(other),
    }
}

/// Calls KMS operation `op` as the caller, through S3: authorized with `kms:ViaService`, and
/// recorded as a KMS event.
async fn via_s3<T>(
    ctx: &Ctx<'_>,
    op: KmsOperation,
    request: serde_json::Value,
    run: impl AsyncFnOnce(&coffer_kms::Kms) -> Result<(T, String), KmsError>,
) -> Result<T, Fail> {
    let state = ctx.state;
    let body = request.to_string();
    let mut caller: Caller = ctx.caller.clone();
    caller.context.set(
        "kms:ViaService",
        format!("s3.{}.amazonaws.com", state.kms.config().region),
    );
    let outcome =
        match crate::authorize::authorize(&state.kms, op, body.as_bytes(), &mut caller).await {
            Err(e) => Err(e),
            Ok(()) => run(&state.kms).await.map_err(ApiError::Kms),
        };
    let request_id = crate::request_id();
    let response = outcome
        .as_ref()
        .map(|(_, key_arn)| json!({ "KeyId": key_arn }));
    let recorded = crate::record_event(
        state,
        "kms.amazonaws.com",
        op.name(),
        &request_id,
        ctx.parts,
        Some(body.as_bytes()),
        Some(&caller.principal),
        response
            .as_ref()
            .map_err(|e| crate::audit::Failure::of(e, &request_id)),
    )
    .await;
    recorded.map_err(Fail::from)?;
    outcome.map(|(t, _)| t).map_err(api_fail)
}

/// The encryption context of an SSE-KMS object: the client's (base64 JSON in
/// `x-amz-server-side-encryption-context`) with `aws:s3:arn` set to the object's ARN.
fn kms_context(ctx: &Ctx<'_>, bucket: &str, key: &str) -> Result<BTreeMap<String, String>, Fail> {
    let mut c: BTreeMap<String, String> = match ctx.header("x-amz-server-side-encryption-context")
    {
        None => BTreeMap::new(),
        Some(v) => B64
            .decode(v.trim())
            .ok()
            .and_then(|j| serde_json::from_slice(&j).ok())
            .ok_or_else(|| {
                Fail::invalid_argument(
                    "The header 'x-amz-server-side-encryption-context' shall be Base64-encoded UTF-8 string holding JSON which represents a string-string map",
                )
                .with("ArgumentName", "x-amz-server-side-encryption-context")
            })?,
    };
    c.insert("aws:s3:arn".into(), super::arn(bucket, Some(key)));
    Ok(c)
}

/// GenerateDataKey as the caller, through S3: the plaintext key, its ciphertext and the key ARN.
async fn generate(
    ctx: &Ctx<'_>,
    key_id: &str,
    context: &BTreeMap<String, String>,
) -> Result<(Key256, Vec<u8>, String), Fail> {
    let request = json!({ "KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": context });
    let cfg = ctx.state.kms.config().clone();
    via_s3(
        ctx,
        KmsOperation::GenerateDataKey,
        request,
        async |kms: &coffer_kms::Kms| {
            let r = KeyRef::parse(key_id, &cfg.account_id, &cfg.region)?;
            let out = kms.generate_data_key(&r, context, 32, true, false).await?;
            let plain = out
                .plaintext
                .ok_or_else(|| KmsError::Internal("GenerateDataKey gave no plaintext".into()))?;
            let k = Key256::from_slice(plain.expose())
                .map_err(|e| KmsError::Internal(e.to_string()))?;
            let arn = out.key_arn.clone();
            Ok(((k, out.ciphertext, out.key_arn), arn))
        },
    )
    .await
}

/// Decrypt as the caller, through S3.
async fn decrypt(
    ctx: &Ctx<'_>,
    ciphertext: &[u8],
    context: &BTreeMap<String, String>,
    key_arn: &str,
) -> Result<Key256, Fail> {
    let request = json!({
        "CiphertextBlob": B64.encode(ciphertext),
        "EncryptionContext": context,
        "KeyId": key_arn,
    });
    let cfg = ctx.state.kms.config().clone();
    via_s3(
        ctx,
        KmsOperation::Decrypt,
        request,
        async |kms: &coffer_kms::Kms| {
            let r = KeyRef::parse(key_arn, &cfg.account_id, &cfg.region)?;
            let out = kms
                .decrypt(ciphertext, context, Some(&r), None, false)
                .await?;
            let k = Key256::from_slice(out.plaintext.expose())
                .map_err(|e| KmsError::Internal(e.to_string()))?;
            Ok((k, out.key_arn))
        },
    )
    .await
}

/// How long a bucket key is used for new objects, and kept decrypted for reads.
const BUCKET_KEY_LIFETIME: Duration = Duration::from_secs(300);
/// Most bucket keys held at once.
const BUCKET_KEY_CACHE: usize = 1024;

/// S3 Bucket Keys: a data key per bucket, KMS key and caller, generated with the bucket's ARN as
/// its encryption context and used for a few minutes to seal the keys of many objects, so that
/// KMS is asked once per period rather than once per object. Decrypted bucket keys are kept for
/// as long (bounded in number and age); a change to the KMS key's policy or state reaches
/// objects under a cached bucket key when it expires, as with S3.
#[derive(Default)]
pub struct BucketKeys {
    entries: std::sync::Mutex<HashMap<Vec<u8>, BucketKey>>,
}

impl std::fmt::Debug for BucketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketKeys").finish_non_exhaustive()
    }
}

struct BucketKey {
    key: Key256,
    ciphertext: Vec<u8>,
    key_arn: String,
    made: Instant,
}

impl BucketKeys {
    fn get(&self, id: &[u8]) -> Option<(Key256, Vec<u8>, String)> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = map
            .get(id)
            .filter(|e| e.made.elapsed() < BUCKET_KEY_LIFETIME)?;
        Some((
            Key256::from_slice(e.key.expose()).ok()?,
            e.ciphertext.clone(),
            e.key_arn.clone(),
        ))
    }

    fn put(&self, id: Vec<u8>, key: &Key256, ciphertext: &[u8], key_arn: &str) {
        let Ok(copy) = Key256::from_slice(key.expose()) else {
            return;
        };
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= BUCKET_KEY_CACHE {
            map.retain(|_, e| e.made.elapsed() < BUCKET_KEY_LIFETIME);
            if map.len() >= BUCKET_KEY_CACHE
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.made)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id,
            BucketKey {
                key: copy,
                ciphertext: ciphertext.to_vec(),
                key_arn: key_arn.to_owned(),
                made: Instant::now(),
            },
        );
    }
}

/// A cache id: what the entry is for, and who asked (each caller's own KMS authorization made it).
fn cache_id(kind: &str, caller: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut h = coffer_crypto::digest::Sha256::new();
    for p in [kind.as_bytes(), caller.as_bytes()]
        .into_iter()
        .chain(parts.iter().copied())
    {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finish().to_vec()
}

/// What an object key is bound to when wrapped under a bucket key.
fn bucket_key_aad(bucket: &str, key: &str) -> Vec<u8> {
    format!(
        "coffer:s3-bucket-key-object:{}:{bucket}:{}:{key}",
        bucket.len(),
        key.len()
    )
    .into_bytes()
}

/// `sealed_key` of an object under a bucket key: version 1, the length of the bucket key's KMS
/// ciphertext (u16), that ciphertext, then the object key wrapped under the bucket key.
fn pack_bucket_sealed(kms_ciphertext: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, Fail> {
    let n = u16::try_from(kms_ciphertext.len())
        .map_err(|_| Fail::internal("a bucket key ciphertext is too long"))?;
    let mut out = Vec::with_capacity(3 + kms_ciphertext.len() + wrapped.len());
    out.push(1);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(kms_ciphertext);
    out.extend_from_slice(wrapped);
    Ok(out)
}

fn unpack_bucket_sealed(sealed: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&version, rest) = sealed.split_first()?;
    if version != 1 || rest.len() < 2 {
        return None;
    }
    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    (rest.len() > n).then(|| rest.split_at(n))
}

/// Generates an SSE-KMS data key for a new object (or, with a bucket key, makes the object key
/// and seals it under the bucket's current bucket key).
async fn kms_data_key(
    ctx: &Ctx<'_>,
    key_id: Option<&str>,
    bucket: &str,
    key: &str,
    bucket_key: bool,
) -> Result<SseRequest, Fail> {
    let kms = &ctx.state.kms;
    let key_id = match key_id {
        Some(k) => k.to_owned(),
        None => kms
            .aws_managed_key("s3", MANAGED_KEY_DESCRIPTION)
            .await
            .map_err(kms_fail)?,
    };
    let to_json = |c: &BTreeMap<String, String>| {
        serde_json::to_string(c).map_err(|e| Fail::internal(e.to_string()))
    };
    if !bucket_key {
        let context = kms_context(ctx, bucket, key)?;
        let (data_key, ciphertext, key_arn) = generate(ctx, &key_id, &context).await?;
        return Ok(SseRequest::Kms {
            data_key,
            ciphertext,
            key_arn,
            context: to_json(&context)?,
            bucket_key: false,
        });
    }
    // The bucket key's context is the bucket's ARN (S3 does the same).
    let context = BTreeMap::from([("aws:s3:arn".to_owned(), super::arn(bucket, None))]);
    let id = cache_id(
        "generate",
        &ctx.caller.principal.arn,
        &[bucket.as_bytes(), key_id.as_bytes()],
    );
    let (bucket_key, kms_ciphertext, key_arn) = match ctx.state.s3_bucket_keys.get(&id) {
        Some(hit) => hit,
        None => {
            let (k, c, arn) = generate(ctx, &key_id, &context).await?;
            ctx.state.s3_bucket_keys.put(id, &k, &c, &arn);
            // Reads by this caller need not ask KMS again for the same bucket key.
            let read_id = cache_id("decrypt", &ctx.caller.principal.arn, &[&c]);
            ctx.state.s3_bucket_keys.put(read_id, &k, &c, &arn);
            (k, c, arn)
        }
    };
    let object_key = Key256::generate().map_err(|e| Fail::internal(e.to_string()))?;
    let wrapped = coffer_crypto::wrap::wrap(
        &bucket_key,
        0,
        &bucket_key_aad(bucket, key),
        object_key.expose(),
    )
    .map_err(|e| Fail::internal(e.to_string()))?;
    Ok(SseRequest::Kms {
        data_key: object_key,
        ciphertext: pack_bucket_sealed(&kms_ciphertext, &wrapped)?,
        key_arn,
        context: to_json(&context)?,
        bucket_key: true,
    })
}

/// Opens an SSE-KMS object's (or upload's) key with KMS, as the caller: its data key, or the
/// bucket key its key is sealed under (decrypted bucket keys are reused for a while).
async fn kms_open(ctx: &Ctx<'_>, sse: &SseRecord, bucket: &str, key: &str) -> Result<Key256, Fail> {
    let context: BTreeMap<String, String> = sse
        .context
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    let key_arn = sse.key_id.clone().unwrap_or_default();
    if !sse.bucket_key {
        return decrypt(ctx, &sse.sealed_key, &context, &key_arn).await;
    }
    let (kms_ciphertext, wrapped) = unpack_bucket_sealed(&sse.sealed_key)
        .ok_or_else(|| Fail::internal(format!("{bucket}/{key}: a malformed bucket-key record")))?;
    let id = cache_id("decrypt", &ctx.caller.principal.arn, &[kms_ciphertext]);
    let bucket_key = match ctx.state.s3_bucket_keys.get(&id) {
        Some((k, _, _)) => k,
        None => {
            let k = decrypt(ctx, kms_ciphertext, &context, &key_arn).await?;
            ctx.state
                .s3_bucket_keys
                .put(id, &k, kms_ciphertext, &key_arn);
            k
        }
    };
    let plain = coffer_crypto::wrap::unwrap(&bucket_key, &bucket_key_aad(bucket, key), wrapped)
        .map_err(|_| {
            Fail::internal(format!(
                "{bucket}/{key}: the object key does not open under its bucket key"
            ))
        })?;
    Key256::from_slice(plain.expose()).map_err(|e| Fail::internal(e.to_string()))
}

/// A customer key from SSE-C headers (or the copy-source ones), checked against its MD5.
fn customer_key(ctx: &Ctx<'_>, copy_source: bool) -> Result<Option<(Key256, String)>, Fail> {
    let (alg, key, md5) = if copy_source {
        (
            COPY_CUSTOMER_ALGORITHM,
            COPY_CUSTOMER_KEY,
            COPY_CUSTOMER_KEY_MD5,
        )
    } else {
        (CUSTOMER_ALGORITHM, CUSTOMER_KEY, CUSTOMER_KEY_MD5)
    };
    let (a, k, m) = (ctx.header(alg), ctx.header(key), ctx.header(md5));
    if a.is_none() && k.is_none() && m.is_none() {
        return Ok(None);
    }
    let a = a.ok_or_else(|| {
        Fail::invalid_argument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
        )
        .with("ArgumentName", alg)
    })?;
    if a != AES256 {
        return Err(Fail::invalid_argument(
            "The encryption algorithm specified is not valid (use AES256).",
        )
        .with("ArgumentName", alg)
        .with("ArgumentValue", a));
    }
    let raw = k
        .and_then(|k| B64.decode(k.trim()).ok())
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            Fail::invalid_argument(
                "The secret key was invalid for the specified algorithm (a 256-bit key, base64-encoded).",
            )
            .with("ArgumentName", key)
        })?;
    let digest = B64.encode(coffer_crypto::digest::md5(&raw));
    match m {
        Some(m) if m.trim() == digest => {}
        Some(_) => {
            return Err(Fail::invalid_argument(
                "The calculated MD5 hash of the key did not match the hash that was provided.",
            )
            .with("ArgumentName", md5));
        }
        None => {
            return Err(Fail::invalid_argument(
                "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
            )
            .with("ArgumentName", md5));
        }
    }
    let customer = Key256::from_slice(&raw).map_err(|e| Fail::internal(e.to_string()))?;
    Ok(Some((customer, digest)))
}

/// The encryption of a new object (PutObject, CopyObject, CreateMultipartUpload): from the
/// request's headers, else the bucket's default.
pub async fn for_write(ctx: &Ctx<'_>, bucket: &str, key: &str) -> Result<SseRequest, Fail> {
    let defaults = bucket_encryption(ctx, bucket).await?;
    let header = ctx.header("x-amz-server-side-encryption");
    if let Some((customer, key_md5)) = customer_key(ctx, false)? {
        if header.is_some() {
            return Err(Fail::invalid_argument(
                "Server Side Encryption with Customer provided key is incompatible with the encryption method specified",
            )
            .with("ArgumentName", "x-amz-server-side-encryption"));
        }
        if defaults.blocked.iter().any(|b| b == SSE_C) {
            return Err(Fail::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Requests specifying Server Side Encryption with Customer provided keys are blocked for this bucket (BlockedEncryptionTypes).",
            ));
        }
        return Ok(SseRequest::Customer {
            key: customer,
            key_md5,
        });
    }
    let kms_key = ctx.header("x-amz-server-side-encryption-aws-kms-key-id");
    match header {
        Some(AES256) => {
            if kms_key.is_some() {
                return Err(Fail::invalid_argument(
                    "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
                ));
            }
            Ok(SseRequest::S3)
        }
        Some(AWS_KMS) => {
            let bucket_key = match ctx.header("x-amz-server-side-encryption-bucket-key-enabled") {
                Some(v) => v.eq_ignore_ascii_case("true"),
                None => defaults.bucket_key,
            };
            kms_data_key(ctx, kms_key, bucket, key, bucket_key).await
        }
        Some("aws:kms:dsse") => Err(Fail::not_implemented(
            "DSSE-KMS (dual-layer server-side encryption)",
        )),
        Some(other) => Err(Fail::invalid_argument(format!(
            "The encryption method specified is not supported: {other}"
        ))
        .with("ArgumentName", "x-amz-server-side-encryption")
        .with("ArgumentValue", other)),
        None if kms_key.is_some() => Err(Fail::invalid_argument(
            "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
        )),
        None if defaults.algorithm == AWS_KMS => {
            let bucket_key = ctx
                .header("x-amz-server-side-encryption-bucket-key-enabled")
                .map_or(defaults.bucket_key, |v| v.eq_ignore_ascii_case("true"));
            kms_data_key(ctx, defaults.kms_key_id.as_deref(), bucket, key, bucket_key).await
        }
        None => Ok(SseRequest::Default),
    }
}

/// The key an existing object's bytes are sealed under: opened with the S3 master key, with
/// KMS as the caller, or with the customer's key from the request (`copy_source`: from the
/// copy-source SSE-C headers).
pub async fn object_key(
    ctx: &Ctx<'_>,
    record: &ObjectRecord,
    copy_source: bool,
) -> Result<Key256, Fail> {
    open_key(
        ctx,
        &record.sse,
        &record.bucket,
        &record.key,
        copy_source,
        || futures_util::FutureExt::boxed(ctx.objects().object_key(record)),
    )
    .await
}

/// The object key of an upload in progress.
pub async fn upload_key(ctx: &Ctx<'_>, upload: &coffer_meta::UploadRecord) -> Result<Key256, Fail> {
    open_key(ctx, &upload.sse, &upload.bucket, &upload.key, false, || {
        futures_util::FutureExt::boxed(ctx.objects().upload_key(upload))
    })
    .await
}

async fn open_key<'a>(
    ctx: &'a Ctx<'_>,
    sse: &SseRecord,
    bucket: &str,
    key: &str,
    copy_source: bool,
    s3_key: impl FnOnce() -> futures_util::future::BoxFuture<'a, Result<Key256, S3Error>>,
) -> Result<Key256, Fail> {
    let customer = customer_key(ctx, copy_source)?;
    match sse.mode.as_str() {
        SSE_C => {
            let (customer, md5) = customer.ok_or_else(|| {
                Fail::invalid_request(
                    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
                )
            })?;
            if sse.context.as_deref().is_some_and(|stored| stored != md5) {
                return Err(Fail::new(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "Access Denied",
                ));
            }
            Ok(ctx.objects().unseal_customer(sse, bucket, key, &customer)?)
        }
        _ if customer.is_some() => Err(Fail::invalid_request(
            "The encryption parameters are not applicable to this object.",
        )),
        AWS_KMS => kms_open(ctx, sse, bucket, key).await,
        _ => Ok(s3_key().await?),
    }
}

/// The response headers that describe an object's encryption.
pub fn headers(sse: &SseRecord) -> Vec<(&'static str, String)> {
    match sse.mode.as_str() {
        AWS_KMS => {
            let mut h = vec![("x-amz-server-side-encryption", AWS_KMS.to_owned())];
            if let Some(k) = &sse.key_id {
                h.push(("x-amz-server-side-encryption-aws-kms-key-id", k.clone()));
            }
            if sse.bucket_key {
                h.push((
                    "x-amz-server-side-encryption-bucket-key-enabled",
                    "true".into(),
                ));
            }
            h
        }
        SSE_C => vec![
            (CUSTOMER_ALGORITHM, AES256.to_owned()),
            (
                "x-amz-server-side-encryption-customer-key-MD5",
                sse.context.clone().unwrap_or_default(),
            ),
        ],
        _ => vec![("x-amz-server-side-encryption", AES256.to_owned())],
    }
}

/// The ETag of a single-part object: S3's MD5 for SSE-S3; for SSE-KMS and SSE-C, as in S3, not
/// the MD5 of the data (which would say something about it), but a digest keyed by the object
/// key.
pub fn etag(sse: &SseRecord, object_key: &Key256, md5: &[u8; 16]) -> String {
    if sse.mode == AES256 {
        return format!("\"{}\"", coffer_crypto::digest::hex(md5));
    }
    let mac = coffer_crypto::digest::hmac_sha256(object_key.expose(), md5);
    format!("\"{}\"", coffer_crypto::digest::hex(&mac[..16]))
}
