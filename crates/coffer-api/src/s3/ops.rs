//! The S3 operations: which one a request is, and each carried out.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use coffer_meta::objects::NULL_VERSION;
use coffer_meta::{BucketAttr, ObjectRecord};
use coffer_store::s3::{self as store, AES256, ObjectAttrs, S3Error};
use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

use super::xml::{self, Xml};
use super::{Ctx, Fail, Query, Target, access, arn, body, sse};

const URL_SAFE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Most keys a listing returns, and DeleteObjects takes.
const MAX_KEYS: usize = 1000;
/// Most tags on an object.
const MAX_TAGS: usize = 10;

/// An S3 operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ListBuckets,
    CreateBucket,
    HeadBucket,
    DeleteBucket,
    GetBucketLocation,
    PutBucketVersioning,
    GetBucketVersioning,
    PutBucketEncryption,
    GetBucketEncryption,
    DeleteBucketEncryption,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    DeleteObjects,
    PutObject,
    GetObject,
    HeadObject,
    DeleteObject,
    PutObjectTagging,
    GetObjectTagging,
    DeleteObjectTagging,
    PutBucketTagging,
    GetBucketTagging,
    DeleteBucketTagging,
    PutBucketPolicy,
    GetBucketPolicy,
    DeleteBucketPolicy,
    GetBucketPolicyStatus,
    PutPublicAccessBlock,
    GetPublicAccessBlock,
    DeletePublicAccessBlock,
    CopyObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
    /// An S3 operation Coffer does not serve yet.
    Unsupported(&'static str),
    /// Not an S3 operation at all.
    Unknown,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::ListBuckets => "ListBuckets",
            Op::CreateBucket => "CreateBucket",
            Op::HeadBucket => "HeadBucket",
            Op::DeleteBucket => "DeleteBucket",
            Op::GetBucketLocation => "GetBucketLocation",
            Op::PutBucketVersioning => "PutBucketVersioning",
            Op::GetBucketVersioning => "GetBucketVersioning",
            Op::PutBucketEncryption => "PutBucketEncryption",
            Op::GetBucketEncryption => "GetBucketEncryption",
            Op::DeleteBucketEncryption => "DeleteBucketEncryption",
            Op::ListObjects => "ListObjects",
            Op::ListObjectsV2 => "ListObjectsV2",
            Op::ListObjectVersions => "ListObjectVersions",
            Op::DeleteObjects => "DeleteObjects",
            Op::PutObject => "PutObject",
            Op::GetObject => "GetObject",
            Op::HeadObject => "HeadObject",
            Op::DeleteObject => "DeleteObject",
            Op::PutObjectTagging => "PutObjectTagging",
            Op::GetObjectTagging => "GetObjectTagging",
            Op::DeleteObjectTagging => "DeleteObjectTagging",
            Op::PutBucketTagging => "PutBucketTagging",
            Op::GetBucketTagging => "GetBucketTagging",
            Op::DeleteBucketTagging => "DeleteBucketTagging",
            Op::PutBucketPolicy => "PutBucketPolicy",
            Op::GetBucketPolicy => "GetBucketPolicy",
            Op::DeleteBucketPolicy => "DeleteBucketPolicy",
            Op::GetBucketPolicyStatus => "GetBucketPolicyStatus",
            Op::PutPublicAccessBlock => "PutPublicAccessBlock",
            Op::GetPublicAccessBlock => "GetPublicAccessBlock",
            Op::DeletePublicAccessBlock => "DeletePublicAccessBlock",
            Op::CopyObject => "CopyObject",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::UploadPartCopy => "UploadPartCopy",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::AbortMultipartUpload => "AbortMultipartUpload",
            Op::ListParts => "ListParts",
            Op::ListMultipartUploads => "ListMultipartUploads",
            Op::Unsupported(n) => n,
            Op::Unknown => "Unknown",
        }
    }
}

/// Bucket subresources Coffer does not serve yet, with the operation each names (GET form).
const UNSUPPORTED_BUCKET: &[(&str, &str)] = &[
    ("acl", "BucketAcl"),
    ("cors", "BucketCors"),
    ("lifecycle", "BucketLifecycleConfiguration"),
    ("logging", "BucketLogging"),
    ("notification", "BucketNotificationConfiguration"),
    ("object-lock", "ObjectLockConfiguration"),
    ("ownershipControls", "BucketOwnershipControls"),
    ("replication", "BucketReplication"),
    ("requestPayment", "BucketRequestPayment"),
    ("website", "BucketWebsite"),
    ("accelerate", "BucketAccelerateConfiguration"),
    ("analytics", "BucketAnalyticsConfiguration"),
    ("inventory", "BucketInventoryConfiguration"),
    ("metrics", "BucketMetricsConfiguration"),
    (
        "intelligent-tiering",
        "BucketIntelligentTieringConfiguration",
    ),
];

/// Which operation a request is.
pub fn resolve(method: &Method, target: &Target, q: &Query, headers: &HeaderMap) -> Op {
    let unsupported = || {
        UNSUPPORTED_BUCKET
            .iter()
            .find(|(sub, _)| q.has(sub))
            .map(|(_, name)| Op::Unsupported(name))
    };
    match (&target.bucket, &target.key) {
        (None, _) => match *method {
            Method::GET => Op::ListBuckets,
            _ => Op::Unknown,
        },
        (Some(_), None) => match *method {
            Method::PUT if q.has("versioning") => Op::PutBucketVersioning,
            Method::PUT if q.has("encryption") => Op::PutBucketEncryption,
            Method::PUT if q.has("tagging") => Op::PutBucketTagging,
            Method::GET if q.has("tagging") => Op::GetBucketTagging,
            Method::DELETE if q.has("tagging") => Op::DeleteBucketTagging,
            Method::PUT if q.has("policy") => Op::PutBucketPolicy,
            Method::GET if q.has("policy") => Op::GetBucketPolicy,
            Method::DELETE if q.has("policy") => Op::DeleteBucketPolicy,
            Method::GET if q.has("policyStatus") => Op::GetBucketPolicyStatus,
            Method::PUT if q.has("publicAccessBlock") => Op::PutPublicAccessBlock,
            Method::GET if q.has("publicAccessBlock") => Op::GetPublicAccessBlock,
            Method::DELETE if q.has("publicAccessBlock") => Op::DeletePublicAccessBlock,
            Method::GET if q.has("location") => Op::GetBucketLocation,
            Method::GET if q.has("versioning") => Op::GetBucketVersioning,
            Method::GET if q.has("encryption") => Op::GetBucketEncryption,
            Method::GET if q.has("versions") => Op::ListObjectVersions,
            Method::GET if q.has("uploads") => Op::ListMultipartUploads,
            Method::DELETE if q.has("encryption") => Op::DeleteBucketEncryption,
            Method::POST if q.has("delete") => Op::DeleteObjects,
            _ if unsupported().is_some() => unsupported().unwrap_or(Op::Unknown),
            Method::PUT => Op::CreateBucket,
            Method::HEAD => Op::HeadBucket,
            Method::DELETE => Op::DeleteBucket,
            Method::GET if q.get("list-type") == Some("2") => Op::ListObjectsV2,
            Method::GET => Op::ListObjects,
            _ => Op::Unknown,
        },
        (Some(_), Some(_)) => {
            let copy = headers.contains_key("x-amz-copy-source");
            match *method {
                Method::PUT if q.has("tagging") => Op::PutObjectTagging,
                Method::GET if q.has("tagging") => Op::GetObjectTagging,
                Method::DELETE if q.has("tagging") => Op::DeleteObjectTagging,
                Method::POST if q.has("uploads") => Op::CreateMultipartUpload,
                Method::PUT if q.has("uploadId") && copy => Op::UploadPartCopy,
                Method::PUT if q.has("uploadId") => Op::UploadPart,
                Method::POST if q.has("uploadId") => Op::CompleteMultipartUpload,
                Method::DELETE if q.has("uploadId") => Op::AbortMultipartUpload,
                Method::GET if q.has("uploadId") => Op::ListParts,
                _ if q.has("acl") => Op::Unsupported("ObjectAcl"),
                _ if q.has("attributes") => Op::Unsupported("GetObjectAttributes"),
                _ if q.has("retention") || q.has("legal-hold") => Op::Unsupported("ObjectLock"),
                _ if q.has("restore") || q.has("select") => Op::Unsupported("RestoreObject"),
                Method::PUT if copy => Op::CopyObject,
                Method::PUT => Op::PutObject,
                Method::GET => Op::GetObject,
                Method::HEAD => Op::HeadObject,
                Method::DELETE => Op::DeleteObject,
                _ => Op::Unknown,
            }
        }
    }
}

/// Carries out an operation.
pub async fn run(ctx: &mut Ctx<'_>, op: Op, body: Body) -> Result<Response, Fail> {
    match op {
        Op::ListBuckets => list_buckets(ctx).await,
        Op::CreateBucket => create_bucket(ctx, body).await,
        Op::HeadBucket => head_bucket(ctx).await,
        Op::DeleteBucket => delete_bucket(ctx).await,
        Op::GetBucketLocation => get_bucket_location(ctx).await,
        Op::PutBucketVersioning => put_bucket_versioning(ctx, body).await,
        Op::GetBucketVersioning => get_bucket_versioning(ctx).await,
        Op::PutBucketEncryption => put_bucket_encryption(ctx, body).await,
        Op::GetBucketEncryption => get_bucket_encryption(ctx).await,
        Op::DeleteBucketEncryption => delete_bucket_encryption(ctx).await,
        Op::ListObjects => list_objects(ctx, false).await,
        Op::ListObjectsV2 => list_objects(ctx, true).await,
        Op::ListObjectVersions => list_object_versions(ctx).await,
        Op::DeleteObjects => delete_objects(ctx, body).await,
        Op::PutObject => put_object(ctx, body).await,
        Op::GetObject => get_object(ctx, false).await,
        Op::HeadObject => get_object(ctx, true).await,
        Op::DeleteObject => delete_object(ctx).await,
        Op::PutObjectTagging => put_object_tagging(ctx, body).await,
        Op::GetObjectTagging => get_object_tagging(ctx).await,
        Op::DeleteObjectTagging => delete_object_tagging(ctx).await,
        Op::PutBucketTagging => put_bucket_tagging(ctx, body).await,
        Op::GetBucketTagging => get_bucket_tagging(ctx).await,
        Op::DeleteBucketTagging => delete_bucket_tagging(ctx).await,
        Op::PutBucketPolicy => put_bucket_policy(ctx, body).await,
        Op::GetBucketPolicy => get_bucket_policy(ctx).await,
        Op::DeleteBucketPolicy => delete_bucket_policy(ctx).await,
        Op::GetBucketPolicyStatus => get_bucket_policy_status(ctx).await,
        Op::PutPublicAccessBlock => put_public_access_block(ctx, body).await,
        Op::GetPublicAccessBlock => get_public_access_block(ctx).await,
        Op::DeletePublicAccessBlock => delete_public_access_block(ctx).await,
        Op::CopyObject => copy_object(ctx).await,
        Op::CreateMultipartUpload => create_multipart_upload(ctx).await,
        Op::UploadPart => upload_part(ctx, body).await,
        Op::UploadPartCopy => upload_part_copy(ctx).await,
        Op::CompleteMultipartUpload => complete_multipart_upload(ctx, body).await,
        Op::AbortMultipartUpload => abort_multipart_upload(ctx).await,
        Op::ListParts => list_parts(ctx).await,
        Op::ListMultipartUploads => list_multipart_uploads(ctx).await,
        Op::Unsupported(name) => Err(Fail::not_implemented(name)),
        Op::Unknown => Err(Fail::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The specified method is not allowed against this resource: {} {}.",
                ctx.parts.method,
                ctx.parts.uri.path()
            ),
        )),
    }
}

// ---- responses ------------------------------------------------------------------------------

fn respond(status: StatusCode, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

fn xml_ok(doc: String) -> Response {
    let mut r = respond(StatusCode::OK, Body::from(doc));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

fn set(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// S3's timestamp in XML: `2009-10-12T17:50:30.000Z`.
pub(crate) fn iso(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// An HTTP date: `Wed, 12 Oct 2009 17:50:00 GMT`.
fn http_date(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // RFC 2822 gives "+0000"; HTTP wants "GMT".
    t.format(&Rfc2822)
        .map(|s| s.replace("+0000", "GMT"))
        .unwrap_or_default()
}

/// Parses an HTTP date (RFC 7231 IMF-fixdate, or RFC 3339 as some clients send).
fn parse_http_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let t = OffsetDateTime::parse(&s.replace("GMT", "+0000"), &Rfc2822)
        .or_else(|_| OffsetDateTime::parse(s, &Rfc3339))
        .ok()?;
    Some(t.unix_timestamp() * 1000)
}

fn owner(x: &mut Xml, account: &str) {
    x.open("Owner")
        .elem("ID", account)
        .elem("DisplayName", account)
        .close("Owner");
}

// ---- buckets ---------------------------------------------------------------------------------

async fn list_buckets(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    ctx.authorize("s3:ListAllMyBuckets", "*").await?;
    let buckets = ctx.objects().list_buckets().await?;
    let prefix = ctx.query.get("prefix").unwrap_or_default();
    let mut x = Xml::new("ListAllMyBucketsResult");
    owner(&mut x, ctx.objects().account_id());
    x.open("Buckets");
    for b in buckets.iter().filter(|b| b.name.starts_with(prefix)) {
        x.open("Bucket")
            .elem("Name", &b.name)
            .elem("CreationDate", &iso(b.created_ms))
            .elem("BucketRegion", &b.region)
            .close("Bucket");
    }
    x.close("Buckets");
    if !prefix.is_empty() {
        x.elem("Prefix", prefix);
    }
    Ok(xml_ok(x.finish("ListAllMyBucketsResult")))
}

async fn create_bucket(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    store::check_bucket_name(&bucket)?;
    ctx.authorize("s3:CreateBucket", &arn(&bucket, None))
        .await?;
    let doc = ctx.read_document(body).await?;
    let location = if doc.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let d = xml::parse(&doc)?;
        if d.name != "CreateBucketConfiguration" {
            return Err(Fail::malformed_xml());
        }
        Some(
            d.child_text("LocationConstraint")
                .unwrap_or_default()
                .to_owned(),
        )
    };
    if ctx.header("x-amz-bucket-object-lock-enabled") == Some("true") {
        return Err(Fail::not_implemented("S3 Object Lock"));
    }
    let account = ctx.caller.principal.account_id.clone();
    let created = ctx
        .objects()
        .create_bucket(&bucket, location.as_deref(), &account)
        .await?;
    if created == store::Created::New {
        // New buckets block public access, as in S3 since 2023.
        let json = serde_json::to_string(&access::PublicAccessBlock::ALL_ON)
            .map_err(|e| Fail::internal(e.to_string()))?;
        ctx.objects()
            .set_bucket_attr(&bucket, BucketAttr::PublicAccessBlock, Some(&json))
            .await?;
        ctx.state.s3_access.forget(&bucket);
    }
    let mut r = respond(StatusCode::OK, Body::empty());
    set(&mut r, "location", &format!("/{bucket}"));
    Ok(r)
}

async fn head_bucket(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:ListBucket", &arn(&bucket, None)).await?;
    let b = ctx.objects().bucket(&bucket).await?;
    let mut r = respond(StatusCode::OK, Body::empty());
    set(&mut r, "x-amz-bucket-region", &b.region);
    set(&mut r, "x-amz-access-point-alias", "false");
    Ok(r)
}

async fn delete_bucket(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:DeleteBucket", &arn(&bucket, None))
        .await?;
    ctx.objects().delete_bucket(&bucket).await?;
    ctx.state.s3_access.forget(&bucket);
    Ok(respond(StatusCode::NO_CONTENT, Body::empty()))
}

async fn get_bucket_location(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:GetBucketLocation", &arn(&bucket, None))
        .await?;
    let b = ctx.objects().bucket(&bucket).await?;
    // us-east-1 is the empty constraint, as S3 answers.
    let region = if b.region == "us-east-1" {
        ""
    } else {
        &b.region
    };
    Ok(xml_ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{}\">{}</LocationConstraint>",
        xml::NS,
        xml::escape(region)
    )))
}

async fn put_bucket_versioning(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:PutBucketVersioning", &arn(&bucket, None))
        .await?;
    let doc = xml::parse(&ctx.read_document(body).await?)?;
    if doc.name != "VersioningConfiguration" {
        return Err(Fail::malformed_xml());
    }
    if doc.child_text("MfaDelete") == Some("Enabled") {
        return Err(Fail::not_implemented("MFA delete"));
    }
    let b = ctx.objects().bucket(&bucket).await?;
    match doc.child_text("Status") {
        Some(s @ ("Enabled" | "Suspended")) if s != b.versioning => {
            ctx.objects().set_versioning(&bucket, s).await?;
        }
        Some("Enabled" | "Suspended") | None => {}
        Some(_) => return Err(Fail::malformed_xml()),
    }
    Ok(respond(StatusCode::OK, Body::empty()))
}

async fn get_bucket_versioning(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:GetBucketVersioning", &arn(&bucket, None))
        .await?;
    let b = ctx.objects().bucket(&bucket).await?;
    let mut x = Xml::new("VersioningConfiguration");
    if !b.versioning.is_empty() {
        x.elem("Status", &b.versioning);
    }
    Ok(xml_ok(x.finish("VersioningConfiguration")))
}

async fn put_bucket_encryption(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:PutEncryptionConfiguration", &arn(&bucket, None))
        .await?;
    let doc = xml::parse(&ctx.read_document(body).await?)?;
    if doc.name != "ServerSideEncryptionConfiguration" {
        return Err(Fail::malformed_xml());
    }
    let rule = doc.child("Rule").ok_or_else(Fail::malformed_xml)?;
    let default = rule
        .child("ApplyServerSideEncryptionByDefault")
        .ok_or_else(Fail::malformed_xml)?;
    let algorithm = default
        .child_text("SSEAlgorithm")
        .ok_or_else(Fail::malformed_xml)?;
    let kms_key_id = default
        .child_text("KMSMasterKeyID")
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    match algorithm {
        AES256 if kms_key_id.is_some() => {
            return Err(Fail::invalid_argument(
                "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms or aws:kms:dsse",
            ));
        }
        AES256 | store::AWS_KMS => {}
        "aws:kms:dsse" => return Err(Fail::not_implemented("DSSE-KMS default bucket encryption")),
        _ => return Err(Fail::malformed_xml()),
    }
    let mut blocked = Vec::new();
    if let Some(b) = rule.child("BlockedEncryptionTypes") {
        for t in b.children("EncryptionType") {
            match t.text.trim() {
                "SSE-C" => blocked.push(store::SSE_C.to_owned()),
                "NONE" => {}
                _ => return Err(Fail::malformed_xml()),
            }
        }
    }
    let config = sse::BucketEncryption {
        algorithm: algorithm.to_owned(),
        kms_key_id,
        bucket_key: rule.child_text("BucketKeyEnabled") == Some("true"),
        blocked,
    };
    let json = serde_json::to_string(&config).map_err(|e| Fail::internal(e.to_string()))?;
    ctx.objects()
        .set_bucket_attr(&bucket, BucketAttr::Encryption, Some(&json))
        .await?;
    Ok(respond(StatusCode::OK, Body::empty()))
}

async fn get_bucket_encryption(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:GetEncryptionConfiguration", &arn(&bucket, None))
        .await?;
    ctx.objects().bucket(&bucket).await?;
    // Every bucket encrypts by default (SSE-S3), as in S3 since 2023.
    let config = sse::bucket_encryption(ctx, &bucket).await?;
    let mut x = Xml::new("ServerSideEncryptionConfiguration");
    x.open("Rule")
        .open("ApplyServerSideEncryptionByDefault")
        .elem("SSEAlgorithm", &config.algorithm);
    if let Some(k) = &config.kms_key_id {
        x.elem("KMSMasterKeyID", k);
    }
    x.close("ApplyServerSideEncryptionByDefault").elem(
        "BucketKeyEnabled",
        if config.bucket_key { "true" } else { "false" },
    );
    if !config.blocked.is_empty() {
        x.open("BlockedEncryptionTypes");
        for b in &config.blocked {
            x.elem("EncryptionType", b);
        }
        x.close("BlockedEncryptionTypes");
    }
    x.close("Rule");
    Ok(xml_ok(x.finish("ServerSideEncryptionConfiguration")))
}

/// The Delete… operation of a bucket setting: `action` authorizes it; the setting is removed.
async fn clear_bucket_attr(
    ctx: &mut Ctx<'_>,
    action: &str,
    attr: BucketAttr,
) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize(action, &arn(&bucket, None)).await?;
    ctx.objects().set_bucket_attr(&bucket, attr, None).await?;
    if matches!(attr, BucketAttr::Policy | BucketAttr::PublicAccessBlock) {
        ctx.state.s3_access.forget(&bucket);
    }
    Ok(respond(StatusCode::NO_CONTENT, Body::empty()))
}

async fn delete_bucket_encryption(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    clear_bucket_attr(ctx, "s3:PutEncryptionConfiguration", BucketAttr::Encryption).await
}

// ---- bucket policy and public access block ----------------------------------------------------

async fn put_bucket_policy(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:PutBucketPolicy", &arn(&bucket, None))
        .await?;
    ctx.objects().bucket(&bucket).await?;
    let doc = ctx.read_document(body).await?;
    let text = std::str::from_utf8(&doc).map_err(|_| {
        Fail::new(
            StatusCode::BAD_REQUEST,
            "MalformedPolicy",
            "The policy is not valid UTF-8.",
        )
    })?;
    let access_now = ctx
        .state
        .s3_access
        .get(ctx.state.kms.meta().as_ref(), &bucket)
        .await?;
    access::check_policy(
        ctx.state.kms.meta().as_ref(),
        ctx.objects().account_id(),
        &bucket,
        text,
        access_now.block,
        &ctx.caller.principal.arn,
    )
    .await?;
    ctx.objects()
        .set_bucket_attr(&bucket, BucketAttr::Policy, Some(text))
        .await?;
    ctx.state.s3_access.forget(&bucket);
    Ok(respond(StatusCode::NO_CONTENT, Body::empty()))
}

async fn get_bucket_policy(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:GetBucketPolicy", &arn(&bucket, None))
        .await?;
    let text = ctx
        .objects()
        .bucket_attr(&bucket, BucketAttr::Policy)
        .await?
        .ok_or(S3Error::NoSuchBucketPolicy)?;
    let mut r = respond(StatusCode::OK, Body::from(text));
    set(&mut r, "content-type", "application/json");
    Ok(r)
}

async fn delete_bucket_policy(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    clear_bucket_attr(ctx, "s3:DeleteBucketPolicy", BucketAttr::Policy).await
}

async fn get_bucket_policy_status(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:GetBucketPolicyStatus", &arn(&bucket, None))
        .await?;
    ctx.objects().bucket(&bucket).await?;
    let a = ctx
        .state
        .s3_access
        .get(ctx.state.kms.meta().as_ref(), &bucket)
        .await?;
    let public = a.policy.as_ref().is_some_and(access::is_public);
    let mut x = Xml::new("PolicyStatus");
    x.elem("IsPublic", if public { "true" } else { "false" });
    Ok(xml_ok(x.finish("PolicyStatus")))
}

async fn put_public_access_block(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:PutBucketPublicAccessBlock", &arn(&bucket, None))
        .await?;
    let doc = xml::parse(&ctx.read_document(body).await?)?;
    if doc.name != "PublicAccessBlockConfiguration" {
        return Err(Fail::malformed_xml());
    }
    let flag = |name: &str| -> Result<bool, Fail> {
        match doc.child_text(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(Fail::malformed_xml()),
        }
    };
    let block = access::PublicAccessBlock {
        block_public_acls: flag("BlockPublicAcls")?,
        ignore_public_acls: flag("IgnorePublicAcls")?,
        block_public_policy: flag("BlockPublicPolicy")?,
        restrict_public_buckets: flag("RestrictPublicBuckets")?,
    };
    let json = serde_json::to_string(&block).map_err(|e| Fail::internal(e.to_string()))?;
    ctx.objects()
        .set_bucket_attr(&bucket, BucketAttr::PublicAccessBlock, Some(&json))
        .await?;
    ctx.state.s3_access.forget(&bucket);
    Ok(respond(StatusCode::OK, Body::empty()))
}

async fn get_public_access_block(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:GetBucketPublicAccessBlock", &arn(&bucket, None))
        .await?;
    let block: access::PublicAccessBlock = ctx
        .objects()
        .bucket_attr(&bucket, BucketAttr::PublicAccessBlock)
        .await?
        .and_then(|j| serde_json::from_str(&j).ok())
        .ok_or(S3Error::NoSuchPublicAccessBlockConfiguration)?;
    let b = |v: bool| if v { "true" } else { "false" };
    let mut x = Xml::new("PublicAccessBlockConfiguration");
    x.elem("BlockPublicAcls", b(block.block_public_acls))
        .elem("IgnorePublicAcls", b(block.ignore_public_acls))
        .elem("BlockPublicPolicy", b(block.block_public_policy))
        .elem("RestrictPublicBuckets", b(block.restrict_public_buckets));
    Ok(xml_ok(x.finish("PublicAccessBlockConfiguration")))
}

async fn delete_public_access_block(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    clear_bucket_attr(
        ctx,
        "s3:PutBucketPublicAccessBlock",
        BucketAttr::PublicAccessBlock,
    )
    .await
}

// ---- listings --------------------------------------------------------------------------------

fn max_keys(ctx: &Ctx<'_>) -> Result<usize, Fail> {
    match ctx.query.get("max-keys") {
        None => Ok(MAX_KEYS),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(MAX_KEYS))
            .ok_or_else(|| {
                Fail::invalid_argument("Provided max-keys not an integer or within integer range")
                    .with("ArgumentName", "max-keys")
                    .with("ArgumentValue", v)
            }),
    }
}

/// Encodes a key for a listing: as is, or URL-encoded when `encoding-type=url`.
fn encoder(ctx: &Ctx<'_>) -> Result<impl Fn(&str) -> String, Fail> {
    let url = match ctx.query.get("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(
                Fail::invalid_argument("Invalid Encoding Method specified in Request")
                    .with("ArgumentName", "encoding-type"),
            );
        }
    };
    Ok(move |s: &str| {
        if url {
            percent_encoding::utf8_percent_encode(s, ENCODE_KEY).to_string()
        } else {
            s.to_owned()
        }
    })
}

/// What `encoding-type=url` encodes: everything but unreserved characters and `/`.
const ENCODE_KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn checksum_algorithm(o: &ObjectRecord) -> Option<String> {
    ObjectAttrs::from_json(&o.attrs).checksum.map(|(a, _)| a)
}

async fn list_objects(ctx: &mut Ctx<'_>, v2: bool) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    let prefix = ctx.query.get("prefix").unwrap_or_default().to_owned();
    let delimiter = ctx.query.get("delimiter").map(str::to_owned);
    ctx.caller.context.set("s3:prefix", prefix.clone());
    if let Some(d) = &delimiter {
        ctx.caller.context.set("s3:delimiter", d.clone());
    }
    ctx.authorize("s3:ListBucket", &arn(&bucket, None)).await?;
    let max = max_keys(ctx)?;
    let enc = encoder(ctx)?;
    let (marker, token, start_after) = if v2 {
        let token = ctx.query.get("continuation-token").map(str::to_owned);
        let start_after = ctx.query.get("start-after").map(str::to_owned);
        (None, token, start_after)
    } else {
        (ctx.query.get("marker").map(str::to_owned), None, None)
    };
    let token_key = match &token {
        Some(t) => Some(
            URL_SAFE
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Fail::invalid_argument("The continuation token provided is incorrect")
                        .with("ArgumentName", "continuation-token")
                })?,
        ),
        None => None,
    };
    let after = [marker.clone(), token_key, start_after.clone()]
        .into_iter()
        .flatten()
        .max();
    let listing = ctx
        .objects()
        .list(
            &bucket,
            &prefix,
            delimiter.as_deref(),
            after.as_deref(),
            max,
        )
        .await?;
    let mut x = Xml::new("ListBucketResult");
    x.elem("Name", &bucket).elem("Prefix", &enc(&prefix));
    if v2 {
        if let Some(t) = &token {
            x.elem("ContinuationToken", t);
        }
        if let Some(s) = &start_after {
            x.elem("StartAfter", &enc(s));
        }
        x.elem(
            "KeyCount",
            &(listing.items.len() + listing.common_prefixes.len()).to_string(),
        );
    } else {
        x.elem("Marker", &enc(marker.as_deref().unwrap_or_default()));
    }
    x.elem("MaxKeys", &max.to_string());
    if let Some(d) = &delimiter {
        x.elem("Delimiter", &enc(d));
    }
    x.elem(
        "IsTruncated",
        if listing.truncated { "true" } else { "false" },
    );
    if listing.truncated
        && let Some((next, _)) = &listing.next
    {
        if v2 {
            x.elem("NextContinuationToken", &URL_SAFE.encode(next));
        } else if delimiter.is_some() {
            x.elem("NextMarker", &enc(next));
        }
    }
    if ctx.query.get("encoding-type") == Some("url") {
        x.elem("EncodingType", "url");
    }
    let fetch_owner = !v2 || ctx.query.get("fetch-owner") == Some("true");
    for o in &listing.items {
        x.open("Contents")
            .elem("Key", &enc(&o.key))
            .elem("LastModified", &iso(o.last_modified_ms))
            .elem("ETag", &o.etag);
        if let Some(a) = checksum_algorithm(o) {
            x.elem("ChecksumAlgorithm", &a);
        }
        x.elem("Size", &o.size.to_string())
            .elem("StorageClass", "STANDARD");
        if fetch_owner {
            owner(&mut x, ctx.objects().account_id());
        }
        x.close("Contents");
    }
    for p in &listing.common_prefixes {
        x.open("CommonPrefixes")
            .elem("Prefix", &enc(p))
            .close("CommonPrefixes");
    }
    Ok(xml_ok(x.finish("ListBucketResult")))
}

async fn list_object_versions(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    let prefix = ctx.query.get("prefix").unwrap_or_default().to_owned();
    let delimiter = ctx
        .query
        .get("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    ctx.caller.context.set("s3:prefix", prefix.clone());
    ctx.authorize("s3:ListBucketVersions", &arn(&bucket, None))
        .await?;
    let max = max_keys(ctx)?;
    let enc = encoder(ctx)?;
    let key_marker = ctx.query.get("key-marker").filter(|k| !k.is_empty());
    let version_marker = ctx.query.get("version-id-marker").filter(|v| !v.is_empty());
    if version_marker.is_some() && key_marker.is_none() {
        return Err(Fail::invalid_argument(
            "A version-id marker cannot be specified without a key marker.",
        ));
    }
    let page = ctx
        .objects()
        .list_versions(
            &bucket,
            &prefix,
            delimiter.as_deref(),
            key_marker.map(|k| (k, version_marker)),
            max,
        )
        .await?;
    let mut x = Xml::new("ListVersionsResult");
    x.elem("Name", &bucket)
        .elem("Prefix", &enc(&prefix))
        .elem("KeyMarker", &enc(key_marker.unwrap_or_default()))
        .elem("VersionIdMarker", version_marker.unwrap_or_default())
        .elem("MaxKeys", &max.to_string());
    if let Some(d) = &delimiter {
        x.elem("Delimiter", &enc(d));
    }
    x.elem("IsTruncated", if page.truncated { "true" } else { "false" });
    if let Some((k, v)) = &page.next {
        x.elem("NextKeyMarker", &enc(k));
        if let Some(v) = v {
            x.elem("NextVersionIdMarker", v);
        }
    }
    if ctx.query.get("encoding-type") == Some("url") {
        x.elem("EncodingType", "url");
    }
    for o in &page.items {
        let tag = if o.delete_marker {
            "DeleteMarker"
        } else {
            "Version"
        };
        x.open(tag)
            .elem("Key", &enc(&o.key))
            .elem("VersionId", &o.version_id)
            .elem("IsLatest", if o.is_latest { "true" } else { "false" })
            .elem("LastModified", &iso(o.last_modified_ms));
        if !o.delete_marker {
            x.elem("ETag", &o.etag)
                .elem("Size", &o.size.to_string())
                .elem("StorageClass", "STANDARD");
        }
        owner(&mut x, ctx.objects().account_id());
        x.close(tag);
    }
    for p in &page.common_prefixes {
        x.open("CommonPrefixes")
            .elem("Prefix", &enc(p))
            .close("CommonPrefixes");
    }
    Ok(xml_ok(x.finish("ListVersionsResult")))
}

// ---- objects ---------------------------------------------------------------------------------

/// The condition keys a write's encryption headers supply to policies.
fn encryption_conditions(ctx: &mut Ctx<'_>) {
    for (header, key) in [
        (
            "x-amz-server-side-encryption",
            "s3:x-amz-server-side-encryption",
        ),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            "s3:x-amz-server-side-encryption-aws-kms-key-id",
        ),
        (
            "x-amz-server-side-encryption-customer-algorithm",
            "s3:x-amz-server-side-encryption-customer-algorithm",
        ),
    ] {
        if let Some(v) = ctx.header(header) {
            let v = v.to_owned();
            ctx.caller.context.set(key, v);
        }
    }
}

fn sse_headers(r: &mut Response, sse_record: &coffer_meta::SseRecord) {
    for (name, value) in sse::headers(sse_record) {
        set(r, name, &value);
    }
}

/// The key part `n` of an upload is sealed under.
async fn part_key(
    ctx: &Ctx<'_>,
    upload: &coffer_meta::UploadRecord,
    n: u32,
) -> Result<coffer_crypto::Key256, Fail> {
    let object_key = sse::upload_key(ctx, upload).await?;
    coffer_crypto::package::part_key(&object_key, n).map_err(|e| Fail::internal(e.to_string()))
}

/// Content headers and user metadata of a PutObject.
fn object_attrs(ctx: &Ctx<'_>) -> Result<ObjectAttrs, Fail> {
    let mut a = ObjectAttrs {
        content_type: ctx.header("content-type").map(str::to_owned),
        content_encoding: ctx.header("content-encoding").and_then(|e| {
            // `aws-chunked` describes the transfer, not the object.
            let kept: Vec<&str> = e
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && *p != "aws-chunked")
                .collect();
            (!kept.is_empty()).then(|| kept.join(","))
        }),
        content_disposition: ctx.header("content-disposition").map(str::to_owned),
        content_language: ctx.header("content-language").map(str::to_owned),
        cache_control: ctx.header("cache-control").map(str::to_owned),
        expires: ctx.header("expires").map(str::to_owned),
        ..ObjectAttrs::default()
    };
    let mut size = 0;
    for (name, value) in &ctx.parts.headers {
        if let Some(m) = name.as_str().strip_prefix("x-amz-meta-") {
            let v = value
                .to_str()
                .map_err(|_| Fail::invalid_argument("User metadata values must be US-ASCII."))?;
            size += m.len() + v.len();
            a.metadata.insert(m.to_owned(), v.to_owned());
        }
    }
    if size > 2048 {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size.",
        ));
    }
    Ok(a)
}

/// Tags from `x-amz-tagging` (a URL-encoded query string).
fn tagging_header(ctx: &Ctx<'_>) -> Result<BTreeMap<String, String>, Fail> {
    let Some(h) = ctx.header("x-amz-tagging") else {
        return Ok(BTreeMap::new());
    };
    let mut tags = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(h.as_bytes()) {
        tags.insert(k.into_owned(), v.into_owned());
    }
    check_tags(&tags)?;
    Ok(tags)
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), Fail> {
    if tags.len() > MAX_TAGS {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Object tags cannot be greater than 10",
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return Err(Fail::new(
                StatusCode::BAD_REQUEST,
                "InvalidTag",
                "The TagKey you have provided is invalid",
            ));
        }
    }
    Ok(())
}

fn content_length(ctx: &Ctx<'_>) -> Result<u64, Fail> {
    let name = if ctx.payload.is_chunked() {
        "x-amz-decoded-content-length"
    } else {
        "content-length"
    };
    ctx.header(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Fail::new(
                StatusCode::LENGTH_REQUIRED,
                "MissingContentLength",
                "You must provide the Content-Length HTTP header.",
            )
        })
}

async fn put_object(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    store::check_key(&key)?;
    encryption_conditions(ctx);
    ctx.authorize("s3:PutObject", &arn(&bucket, Some(&key)))
        .await?;
    let len = content_length(ctx)?;
    if len > store::MAX_PUT_BYTES {
        return Err(S3Error::EntityTooLarge.into());
    }
    let attrs = object_attrs(ctx)?;
    let tags = tagging_header(ctx)?;
    let objects = ctx.objects();
    if let Some(cond) = ctx.header("if-none-match") {
        if cond.trim() != "*" {
            return Err(Fail::not_implemented(
                "If-None-Match other than '*' on PutObject",
            ));
        }
        match objects.head(&bucket, &key, None).await {
            Ok(_) => return Err(S3Error::PreconditionFailed.into()),
            Err(S3Error::NoSuchKey { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let sse = sse::for_write(ctx, &bucket, &key).await?;
    let plan = objects.plan_put(&bucket, &key, sse).await?;
    let (written, checksum) = body::put_stream(
        ctx,
        body,
        len,
        objects.blobs().clone(),
        coffer_crypto::Key256::from_slice(plan.object_key.expose())
            .map_err(|e| Fail::internal(e.to_string()))?,
    )
    .await?;
    let etag = sse::etag(&plan.sse, &plan.object_key, &written.md5);
    let mut attrs = attrs;
    attrs.checksum = Some(checksum.clone());
    let record = objects
        .commit_put(plan, &written, etag.clone(), &attrs, &tags)
        .await?;
    ctx.state
        .discovery
        .object_written(&record.bucket, &record.key, &record.version_id);
    let mut r = respond(StatusCode::OK, Body::empty());
    set(&mut r, "etag", &etag);
    sse_headers(&mut r, &record.sse);
    if record.version_id != NULL_VERSION {
        set(&mut r, "x-amz-version-id", &record.version_id);
    }
    if let Some(a) = coffer_crypto::checksum::Algorithm::from_name(&checksum.0) {
        set(&mut r, a.header(), &checksum.1);
    }
    ctx.audit_response.insert(
        "x-amz-server-side-encryption".into(),
        record.sse.mode.clone().into(),
    );
    if record.version_id != NULL_VERSION {
        ctx.audit_response
            .insert("x-amz-version-id".into(), record.version_id.clone().into());
    }
    Ok(r)
}

/// A byte range of an object: `None` for the whole object.
fn range(ctx: &Ctx<'_>, len: u64) -> Result<Option<(u64, u64)>, Fail> {
    let Some(h) = ctx.header("range") else {
        return Ok(None);
    };
    // Syntax S3 does not understand (several ranges, other units) is ignored: the whole object.
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || -> Fail {
        let mut f: Fail = S3Error::InvalidRange { len }.into();
        f.extra.insert(0, ("RangeRequested", h.to_owned()));
        f.headers.push(("content-range", format!("bytes */{len}")));
        f
    };
    match (a.trim(), b.trim()) {
        ("", "") => Ok(None),
        ("", n) => {
            let Ok(n) = n.parse::<u64>() else {
                return Ok(None);
            };
            if n == 0 || len == 0 {
                return Err(unsatisfiable());
            }
            Ok(Some((len.saturating_sub(n), len - 1)))
        }
        (a, b) => {
            let Ok(first) = a.parse::<u64>() else {
                return Ok(None);
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match b.parse::<u64>() {
                    Ok(l) if l >= first => l,
                    _ => return Ok(None),
                }
            };
            if first >= len {
                return Err(unsatisfiable());
            }
            Ok(Some((first, last.min(len - 1))))
        }
    }
}

/// RFC 7232's order: If-Match, else If-Unmodified-Since (412); If-None-Match, else
/// If-Modified-Since (304).
fn preconditions(ctx: &Ctx<'_>, o: &ObjectRecord) -> Result<(), Fail> {
    let etag_matches = |list: &str| {
        list.split(',').map(str::trim).any(|t| {
            t == "*" || t.trim_start_matches("W/").trim_matches('"') == o.etag.trim_matches('"')
        })
    };
    let modified = o.last_modified_ms.div_euclid(1000) * 1000;
    if let Some(m) = ctx.header("if-match") {
        if !etag_matches(m) {
            return Err(S3Error::PreconditionFailed.into());
        }
    } else if let Some(t) = ctx.header("if-unmodified-since").and_then(parse_http_date)
        && modified > t
    {
        return Err(S3Error::PreconditionFailed.into());
    }
    let not_modified = || {
        let mut f: Fail = S3Error::NotModified.into();
        f.headers.push(("etag", o.etag.clone()));
        f.headers
            .push(("last-modified", http_date(o.last_modified_ms)));
        f
    };
    if let Some(m) = ctx.header("if-none-match") {
        if etag_matches(m) {
            return Err(not_modified());
        }
    } else if let Some(t) = ctx.header("if-modified-since").and_then(parse_http_date)
        && modified <= t
    {
        return Err(not_modified());
    }
    Ok(())
}

/// The headers every GET and HEAD of an object carries.
fn object_headers(ctx: &Ctx<'_>, r: &mut Response, o: &ObjectRecord) {
    let attrs = ObjectAttrs::from_json(&o.attrs);
    let q = |name: &str| ctx.query.get(name);
    let pick = |over: &str, stored: &Option<String>| q(over).map(str::to_owned).or(stored.clone());
    set(r, "etag", &o.etag);
    set(r, "last-modified", &http_date(o.last_modified_ms));
    set(r, "accept-ranges", "bytes");
    set(
        r,
        "content-type",
        &pick("response-content-type", &attrs.content_type)
            .unwrap_or_else(|| "binary/octet-stream".into()),
    );
    for (over, stored, name) in [
        (
            "response-content-encoding",
            &attrs.content_encoding,
            "content-encoding",
        ),
        (
            "response-content-disposition",
            &attrs.content_disposition,
            "content-disposition",
        ),
        (
            "response-content-language",
            &attrs.content_language,
            "content-language",
        ),
        (
            "response-cache-control",
            &attrs.cache_control,
            "cache-control",
        ),
        ("response-expires", &attrs.expires, "expires"),
    ] {
        if let Some(v) = pick(over, stored) {
            set(r, name, &v);
        }
    }
    for (k, v) in &attrs.metadata {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    sse_headers(r, &o.sse);
    if o.version_id != NULL_VERSION {
        set(r, "x-amz-version-id", &o.version_id);
    }
    let tags: BTreeMap<String, String> = serde_json::from_str(&o.tags).unwrap_or_default();
    if !tags.is_empty() {
        set(r, "x-amz-tagging-count", &tags.len().to_string());
    }
    // The stored checksum is the whole object's: not sent with a range or a single part.
    if ctx
        .header("x-amz-checksum-mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("ENABLED"))
        && ctx.header("range").is_none()
        && ctx.query.get("partNumber").is_none()
        && let Some((alg, value)) = &attrs.checksum
        && let Some(a) = coffer_crypto::checksum::Algorithm::from_name(alg)
    {
        set(r, a.header(), value);
        set(r, "x-amz-checksum-type", "FULL_OBJECT");
    }
}

async fn get_object(ctx: &mut Ctx<'_>, head: bool) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    let version = ctx.query.get("versionId").map(str::to_owned);
    let action = if version.is_some() {
        "s3:GetObjectVersion"
    } else {
        "s3:GetObject"
    };
    ctx.authorize(action, &arn(&bucket, Some(&key))).await?;
    let part_number = ctx
        .query
        .get("partNumber")
        .map(|p| part_number(Some(p)))
        .transpose()?;
    let objects = ctx.objects();
    let record = objects.head(&bucket, &key, version.as_deref()).await?;
    preconditions(ctx, &record)?;
    let range = match part_number {
        None => range(ctx, record.size)?,
        Some(n) if record.parts.is_empty() => {
            if n != 1 {
                return Err(S3Error::InvalidRange { len: record.size }.into());
            }
            None
        }
        Some(n) => {
            let i = record
                .parts
                .iter()
                .position(|p| p.part_number == n)
                .ok_or(S3Error::InvalidRange { len: record.size })?;
            let start: u64 = record.parts[..i].iter().map(|p| p.size).sum();
            let len = record.parts[i].size;
            (len > 0).then(|| (start, start + len - 1))
        }
    };
    let (status, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, b - a + 1),
        None => (StatusCode::OK, record.size),
    };
    let body = if head {
        // S3 wants an SSE-C object's key on HEAD too, and checks it.
        if record.sse.mode == store::SSE_C {
            sse::object_key(ctx, &record, false).await?;
        }
        Body::empty()
    } else {
        let object_key = sse::object_key(ctx, &record, false).await?;
        let pieces = objects.pieces(&record, &object_key)?;
        body::get_stream(objects.blobs().clone(), pieces, range).await?
    };
    let mut r = respond(status, body);
    object_headers(ctx, &mut r, &record);
    set(&mut r, "content-length", &len.to_string());
    if let Some((a, b)) = range {
        set(
            &mut r,
            "content-range",
            &format!("bytes {a}-{b}/{}", record.size),
        );
    }
    if part_number.is_some() {
        set(
            &mut r,
            "x-amz-mp-parts-count",
            &record.parts.len().max(1).to_string(),
        );
    }
    Ok(r)
}

async fn delete_object(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    let version = ctx.query.get("versionId").map(str::to_owned);
    let action = if version.is_some() {
        "s3:DeleteObjectVersion"
    } else {
        "s3:DeleteObject"
    };
    ctx.authorize(action, &arn(&bucket, Some(&key))).await?;
    let d = ctx
        .objects()
        .delete_object(&bucket, &key, version.as_deref())
        .await?;
    let mut r = respond(StatusCode::NO_CONTENT, Body::empty());
    if d.delete_marker {
        set(&mut r, "x-amz-delete-marker", "true");
    }
    if let Some(v) = &d.version_id {
        set(&mut r, "x-amz-version-id", v);
        ctx.audit_response
            .insert("x-amz-version-id".into(), v.clone().into());
    }
    Ok(r)
}

async fn delete_objects(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    let has_digest = ctx.header("content-md5").is_some()
        || coffer_crypto::checksum::Algorithm::ALL
            .iter()
            .any(|a| ctx.header(a.header()).is_some())
        || ctx.header("x-amz-trailer").is_some()
        || ctx.header("x-amz-sdk-checksum-algorithm").is_some();
    if !has_digest {
        return Err(Fail::invalid_request(
            "Missing required header for this request: Content-MD5 (or an x-amz-checksum- header)",
        ));
    }
    let doc = xml::parse(&ctx.read_document(body).await?)?;
    if doc.name != "Delete" {
        return Err(Fail::malformed_xml());
    }
    let quiet = doc.child_text("Quiet") == Some("true");
    let targets: Vec<(String, Option<String>)> = doc
        .children("Object")
        .map(|o| {
            (
                o.child("Key").map(|k| k.text.clone()).unwrap_or_default(),
                o.child_text("VersionId").map(str::to_owned),
            )
        })
        .collect();
    if targets.is_empty() || targets.len() > MAX_KEYS {
        return Err(Fail::malformed_xml());
    }
    ctx.objects().bucket(&bucket).await?;
    let mut x = Xml::new("DeleteResult");
    let mut deleted = 0;
    for (key, version) in &targets {
        let action = if version.is_some() {
            "s3:DeleteObjectVersion"
        } else {
            "s3:DeleteObject"
        };
        let outcome = match ctx.authorize(action, &arn(&bucket, Some(key))).await {
            Err(f) => Err(f),
            Ok(()) => ctx
                .objects()
                .delete_object(&bucket, key, version.as_deref())
                .await
                .map_err(Fail::from),
        };
        match outcome {
            Ok(d) => {
                deleted += 1;
                if quiet {
                    continue;
                }
                x.open("Deleted").elem("Key", key);
                if let Some(v) = version {
                    x.elem("VersionId", v);
                }
                if d.delete_marker {
                    x.elem("DeleteMarker", "true");
                    if version.is_none()
                        && let Some(v) = &d.version_id
                    {
                        x.elem("DeleteMarkerVersionId", v);
                    }
                }
                x.close("Deleted");
            }
            Err(f) => {
                if let Some(detail) = &f.internal {
                    tracing::error!(request_id = ctx.request_id, key, error = %detail, "DeleteObjects: one object failed");
                }
                x.open("Error").elem("Key", key);
                if let Some(v) = version {
                    x.elem("VersionId", v);
                }
                x.elem("Code", f.code)
                    .elem("Message", &f.message)
                    .close("Error");
            }
        }
    }
    ctx.audit_request
        .insert("objects".into(), (targets.len() as u64).into());
    ctx.audit_response
        .insert("deleted".into(), (deleted as u64).into());
    Ok(xml_ok(x.finish("DeleteResult")))
}

// ---- copies ---------------------------------------------------------------------------------

/// The source a copy names: `x-amz-copy-source: [/]bucket/key[?versionId=…]`, URL-encoded.
struct CopySource {
    bucket: String,
    key: String,
    version_id: Option<String>,
}

fn copy_source(ctx: &Ctx<'_>) -> Result<CopySource, Fail> {
    let raw = ctx.header("x-amz-copy-source").unwrap_or_default();
    let (path, version) = match raw.split_once("?versionId=") {
        Some((p, v)) => (p, Some(v.to_owned())),
        None => (raw, None),
    };
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| Fail::invalid_argument("Invalid copy source encoding."))?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    match path.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok(CopySource {
            bucket: b.to_owned(),
            key: k.to_owned(),
            version_id: version,
        }),
        _ => Err(Fail::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
        .with("ArgumentName", "x-amz-copy-source")),
    }
}

/// Opens a copy's source: authorized for the caller, its `x-amz-copy-source-if-*` conditions
/// checked.
async fn open_copy_source(
    ctx: &Ctx<'_>,
    src: &CopySource,
) -> Result<(ObjectRecord, Vec<coffer_store::Piece>), Fail> {
    let action = if src.version_id.is_some() {
        "s3:GetObjectVersion"
    } else {
        "s3:GetObject"
    };
    ctx.authorize(action, &arn(&src.bucket, Some(&src.key)))
        .await?;
    let objects = ctx.objects();
    let record = objects
        .head(&src.bucket, &src.key, src.version_id.as_deref())
        .await?;
    let etag_matches = |list: &str| {
        list.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_matches('"') == record.etag.trim_matches('"'))
    };
    let modified = record.last_modified_ms.div_euclid(1000) * 1000;
    let failed = ctx
        .header("x-amz-copy-source-if-match")
        .is_some_and(|m| !etag_matches(m))
        || ctx
            .header("x-amz-copy-source-if-none-match")
            .is_some_and(etag_matches)
        || ctx
            .header("x-amz-copy-source-if-unmodified-since")
            .and_then(parse_http_date)
            .is_some_and(|t| modified > t)
        || ctx
            .header("x-amz-copy-source-if-modified-since")
            .and_then(parse_http_date)
            .is_some_and(|t| modified <= t);
    if failed {
        return Err(S3Error::PreconditionFailed.into());
    }
    let key = sse::object_key(ctx, &record, true).await?;
    let pieces = objects.pieces(&record, &key)?;
    Ok((record, pieces))
}

fn copy_result(root: &str, etag: &str, modified_ms: i64) -> String {
    let mut x = Xml::new(root);
    x.elem("ETag", etag).elem("LastModified", &iso(modified_ms));
    x.finish(root)
}

async fn copy_object(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    store::check_key(&key)?;
    let src = copy_source(ctx)?;
    encryption_conditions(ctx);
    ctx.authorize("s3:PutObject", &arn(&bucket, Some(&key)))
        .await?;
    let replace_meta = match ctx.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(other) => {
            return Err(
                Fail::invalid_argument(format!("Unknown metadata directive: {other}"))
                    .with("ArgumentName", "x-amz-metadata-directive"),
            );
        }
    };
    let replace_tags = match ctx.header("x-amz-tagging-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(other) => {
            return Err(
                Fail::invalid_argument(format!("Unknown tagging directive: {other}"))
                    .with("ArgumentName", "x-amz-tagging-directive"),
            );
        }
    };
    let onto_itself = src.bucket == bucket && src.key == key && src.version_id.is_none();
    let asks_encryption = ctx.header("x-amz-server-side-encryption").is_some()
        || ctx
            .header("x-amz-server-side-encryption-customer-algorithm")
            .is_some();
    if onto_itself && !replace_meta && !asks_encryption {
        return Err(Fail::invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let (source, pieces) = open_copy_source(ctx, &src).await?;
    if source.size > store::MAX_PUT_BYTES {
        return Err(Fail::invalid_request(
            "The specified copy source is larger than the maximum allowable size for a copy source: 5368709120",
        ));
    }
    let mut attrs = if replace_meta {
        object_attrs(ctx)?
    } else {
        ObjectAttrs::from_json(&source.attrs)
    };
    // A copy is one part now; a multipart source's part checksums do not describe it.
    if !source.parts.is_empty() {
        attrs.checksum = None;
    }
    let tags: BTreeMap<String, String> = if replace_tags {
        tagging_header(ctx)?
    } else {
        serde_json::from_str(&source.tags).unwrap_or_default()
    };
    let sse = sse::for_write(ctx, &bucket, &key).await?;
    let objects = ctx.objects();
    let plan = objects.plan_put(&bucket, &key, sse).await?;
    let written = body::copy(
        objects.blobs().clone(),
        pieces,
        None,
        coffer_crypto::Key256::from_slice(plan.object_key.expose())
            .map_err(|e| Fail::internal(e.to_string()))?,
    )
    .await?;
    let etag = sse::etag(&plan.sse, &plan.object_key, &written.md5);
    let record = objects
        .commit_put(plan, &written, etag.clone(), &attrs, &tags)
        .await?;
    ctx.state
        .discovery
        .object_written(&record.bucket, &record.key, &record.version_id);
    let mut r = xml_ok(copy_result(
        "CopyObjectResult",
        &etag,
        record.last_modified_ms,
    ));
    set(&mut r, "x-amz-server-side-encryption", &record.sse.mode);
    if record.version_id != NULL_VERSION {
        set(&mut r, "x-amz-version-id", &record.version_id);
    }
    if source.version_id != NULL_VERSION {
        set(&mut r, "x-amz-copy-source-version-id", &source.version_id);
    }
    ctx.audit_request.insert(
        "x-amz-copy-source".into(),
        format!("{}/{}", src.bucket, src.key).into(),
    );
    Ok(r)
}

// ---- multipart uploads ---------------------------------------------------------------------

fn part_number(v: Option<&str>) -> Result<u32, Fail> {
    v.and_then(|p| p.parse::<u32>().ok())
        .filter(|n| (1..=store::MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            Fail::invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
                .with("ArgumentName", "partNumber")
        })
}

fn upload_id(ctx: &Ctx<'_>) -> String {
    ctx.query.get("uploadId").unwrap_or_default().to_owned()
}

async fn create_multipart_upload(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    store::check_key(&key)?;
    encryption_conditions(ctx);
    ctx.authorize("s3:PutObject", &arn(&bucket, Some(&key)))
        .await?;
    let attrs = object_attrs(ctx)?;
    let tags = tagging_header(ctx)?;
    let sse = sse::for_write(ctx, &bucket, &key).await?;
    let upload = ctx
        .objects()
        .create_upload(&bucket, &key, sse, &attrs, &tags)
        .await?;
    let mut x = Xml::new("InitiateMultipartUploadResult");
    x.elem("Bucket", &bucket)
        .elem("Key", &key)
        .elem("UploadId", &upload.upload_id);
    let mut r = xml_ok(x.finish("InitiateMultipartUploadResult"));
    sse_headers(&mut r, &upload.sse);
    if let Some(a) = ctx.header("x-amz-checksum-algorithm") {
        set(&mut r, "x-amz-checksum-algorithm", a);
    }
    ctx.audit_response
        .insert("uploadId".into(), upload.upload_id.clone().into());
    Ok(r)
}

async fn upload_part(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:PutObject", &arn(&bucket, Some(&key)))
        .await?;
    let n = part_number(ctx.query.get("partNumber"))?;
    let len = content_length(ctx)?;
    if len > store::MAX_PUT_BYTES {
        return Err(S3Error::EntityTooLarge.into());
    }
    let objects = ctx.objects();
    let upload = objects.upload(&bucket, &key, &upload_id(ctx)).await?;
    let part_key = part_key(ctx, &upload, n).await?;
    let (written, checksum) =
        body::put_stream(ctx, body, len, objects.blobs().clone(), part_key).await?;
    let part = objects
        .record_part(
            &upload,
            n,
            &written,
            Some(format!("{}:{}", checksum.0, checksum.1)),
        )
        .await?;
    let mut r = respond(StatusCode::OK, Body::empty());
    set(&mut r, "etag", &part.etag);
    sse_headers(&mut r, &upload.sse);
    if let Some(a) = coffer_crypto::checksum::Algorithm::from_name(&checksum.0) {
        set(&mut r, a.header(), &checksum.1);
    }
    ctx.audit_request.insert("partNumber".into(), n.into());
    ctx.audit_request
        .insert("uploadId".into(), upload.upload_id.clone().into());
    Ok(r)
}

async fn upload_part_copy(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:PutObject", &arn(&bucket, Some(&key)))
        .await?;
    let n = part_number(ctx.query.get("partNumber"))?;
    let src = copy_source(ctx)?;
    let objects = ctx.objects();
    let upload = objects.upload(&bucket, &key, &upload_id(ctx)).await?;
    let (source, pieces) = open_copy_source(ctx, &src).await?;
    let range = match ctx.header("x-amz-copy-source-range") {
        None => None,
        Some(r) => {
            let bad = || {
                Fail::invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
                    .with("ArgumentName", "x-amz-copy-source-range")
            };
            let (a, b) = r
                .trim()
                .strip_prefix("bytes=")
                .and_then(|s| s.split_once('-'))
                .ok_or_else(bad)?;
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a > b {
                return Err(bad());
            }
            if b >= source.size {
                return Err(Fail::invalid_request(format!(
                    "Range specified is not valid for source object of size: {}",
                    source.size
                )));
            }
            Some((a, b))
        }
    };
    let part_key = part_key(ctx, &upload, n).await?;
    let written = body::copy(objects.blobs().clone(), pieces, range, part_key).await?;
    let part = objects.record_part(&upload, n, &written, None).await?;
    let mut r = xml_ok(copy_result(
        "CopyPartResult",
        &part.etag,
        part.last_modified_ms,
    ));
    set(&mut r, "x-amz-server-side-encryption", &upload.sse.mode);
    if source.version_id != NULL_VERSION {
        set(&mut r, "x-amz-copy-source-version-id", &source.version_id);
    }
    Ok(r)
}

async fn complete_multipart_upload(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:PutObject", &arn(&bucket, Some(&key)))
        .await?;
    let doc = xml::parse(&ctx.read_document_only(body).await?)?;
    if doc.name != "CompleteMultipartUpload" {
        return Err(Fail::malformed_xml());
    }
    let mut listed = Vec::new();
    for p in doc.children("Part") {
        let n = p
            .child_text("PartNumber")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(Fail::malformed_xml)?;
        let etag = p.child_text("ETag").ok_or_else(Fail::malformed_xml)?;
        listed.push((n, etag.to_owned()));
    }
    let objects = ctx.objects();
    let upload = objects.upload(&bucket, &key, &upload_id(ctx)).await?;
    if let Some(cond) = ctx.header("if-none-match") {
        if cond.trim() != "*" {
            return Err(Fail::not_implemented(
                "If-None-Match other than '*' on CompleteMultipartUpload",
            ));
        }
        match objects.head(&bucket, &key, None).await {
            Ok(_) => return Err(S3Error::PreconditionFailed.into()),
            Err(S3Error::NoSuchKey { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A full-object checksum the client sends (not a composite one, "value-N") is checked.
    let expected = coffer_crypto::checksum::Algorithm::ALL
        .iter()
        .find_map(|a| {
            ctx.header(a.header())
                .map(|v| (a.name().to_owned(), v.to_owned()))
        })
        .filter(|(_, v)| !v.contains('-'));
    let record = objects.complete_upload(&upload, &listed, expected).await?;
    ctx.state
        .discovery
        .object_written(&record.bucket, &record.key, &record.version_id);
    let host = ctx.header("host").unwrap_or_default();
    let checksum = ObjectAttrs::from_json(&record.attrs)
        .checksum
        .and_then(|(alg, v)| coffer_crypto::checksum::Algorithm::from_name(&alg).map(|a| (a, v)));
    let mut x = Xml::new("CompleteMultipartUploadResult");
    x.elem("Location", &format!("https://{host}/{bucket}/{key}"))
        .elem("Bucket", &bucket)
        .elem("Key", &key)
        .elem("ETag", &record.etag);
    if let Some((a, v)) = &checksum {
        x.elem(&format!("Checksum{}", a.name()), v)
            .elem("ChecksumType", "FULL_OBJECT");
    }
    let mut r = xml_ok(x.finish("CompleteMultipartUploadResult"));
    sse_headers(&mut r, &record.sse);
    if record.version_id != NULL_VERSION {
        set(&mut r, "x-amz-version-id", &record.version_id);
        ctx.audit_response
            .insert("x-amz-version-id".into(), record.version_id.clone().into());
    }
    ctx.audit_request
        .insert("uploadId".into(), upload.upload_id.clone().into());
    Ok(r)
}

async fn abort_multipart_upload(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:AbortMultipartUpload", &arn(&bucket, Some(&key)))
        .await?;
    let objects = ctx.objects();
    let upload = objects.upload(&bucket, &key, &upload_id(ctx)).await?;
    objects.abort_upload(&upload).await?;
    ctx.audit_request
        .insert("uploadId".into(), upload.upload_id.clone().into());
    Ok(respond(StatusCode::NO_CONTENT, Body::empty()))
}

async fn list_parts(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:ListMultipartUploadParts", &arn(&bucket, Some(&key)))
        .await?;
    let max = match ctx.query.get("max-parts") {
        None => MAX_KEYS,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| {
                Fail::invalid_argument("Provided max-parts not an integer or within integer range")
                    .with("ArgumentName", "max-parts")
            })?
            .min(MAX_KEYS),
    };
    let marker: u32 = match ctx.query.get("part-number-marker") {
        None | Some("") => 0,
        Some(v) => v.parse().map_err(|_| {
            Fail::invalid_argument(
                "Provided part-number-marker not an integer or within integer range",
            )
            .with("ArgumentName", "part-number-marker")
        })?,
    };
    let objects = ctx.objects();
    let upload = objects.upload(&bucket, &key, &upload_id(ctx)).await?;
    let page = objects.list_parts(&upload.upload_id, marker, max).await?;
    let account = objects.account_id().to_owned();
    let mut x = Xml::new("ListPartsResult");
    x.elem("Bucket", &bucket)
        .elem("Key", &key)
        .elem("UploadId", &upload.upload_id);
    x.open("Initiator")
        .elem("ID", &account)
        .elem("DisplayName", &account)
        .close("Initiator");
    owner(&mut x, &account);
    x.elem("StorageClass", "STANDARD")
        .elem("PartNumberMarker", &marker.to_string());
    if let Some(last) = page.items.last() {
        x.elem("NextPartNumberMarker", &last.part_number.to_string());
    }
    x.elem("MaxParts", &max.to_string())
        .elem("IsTruncated", if page.truncated { "true" } else { "false" });
    for p in &page.items {
        x.open("Part")
            .elem("PartNumber", &p.part_number.to_string())
            .elem("LastModified", &iso(p.last_modified_ms))
            .elem("ETag", &p.etag)
            .elem("Size", &p.size.to_string());
        if let Some((alg, value)) = p.checksum.as_deref().and_then(|c| c.split_once(':')) {
            x.elem(&format!("Checksum{alg}"), value);
        }
        x.close("Part");
    }
    Ok(xml_ok(x.finish("ListPartsResult")))
}

async fn list_multipart_uploads(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:ListBucketMultipartUploads", &arn(&bucket, None))
        .await?;
    let max = match ctx.query.get("max-uploads") {
        None => MAX_KEYS,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| {
                Fail::invalid_argument(
                    "Provided max-uploads not an integer or within integer range",
                )
                .with("ArgumentName", "max-uploads")
            })?
            .min(MAX_KEYS),
    };
    let enc = encoder(ctx)?;
    let prefix = ctx.query.get("prefix").unwrap_or_default().to_owned();
    let key_marker = ctx.query.get("key-marker").filter(|k| !k.is_empty());
    let id_marker = ctx.query.get("upload-id-marker").filter(|k| !k.is_empty());
    let delimiter = ctx
        .query
        .get("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let page = ctx
        .objects()
        .list_uploads(
            &bucket,
            &prefix,
            delimiter.as_deref(),
            key_marker.map(|k| (k, id_marker)),
            max,
        )
        .await?;
    let account = ctx.objects().account_id().to_owned();
    let mut x = Xml::new("ListMultipartUploadsResult");
    x.elem("Bucket", &bucket)
        .elem("KeyMarker", &enc(key_marker.unwrap_or_default()))
        .elem("UploadIdMarker", id_marker.unwrap_or_default());
    if let Some((k, id)) = &page.next {
        x.elem("NextKeyMarker", &enc(k));
        if let Some(id) = id {
            x.elem("NextUploadIdMarker", id);
        }
    }
    x.elem("Prefix", &enc(&prefix));
    if let Some(d) = &delimiter {
        x.elem("Delimiter", &enc(d));
    }
    x.elem("MaxUploads", &max.to_string())
        .elem("IsTruncated", if page.truncated { "true" } else { "false" });
    if ctx.query.get("encoding-type") == Some("url") {
        x.elem("EncodingType", "url");
    }
    for u in &page.items {
        x.open("Upload")
            .elem("Key", &enc(&u.key))
            .elem("UploadId", &u.upload_id);
        x.open("Initiator")
            .elem("ID", &account)
            .elem("DisplayName", &account)
            .close("Initiator");
        owner(&mut x, &account);
        x.elem("StorageClass", "STANDARD")
            .elem("Initiated", &iso(u.initiated_ms))
            .close("Upload");
    }
    for p in &page.common_prefixes {
        x.open("CommonPrefixes")
            .elem("Prefix", &enc(p))
            .close("CommonPrefixes");
    }
    Ok(xml_ok(x.finish("ListMultipartUploadsResult")))
}

// ---- tagging ---------------------------------------------------------------------------------

/// A `Tagging` document's tag set.
fn tag_set(doc: &xml::Element) -> Result<BTreeMap<String, String>, Fail> {
    if doc.name != "Tagging" {
        return Err(Fail::malformed_xml());
    }
    let set_el = doc.child("TagSet").ok_or_else(Fail::malformed_xml)?;
    let mut tags = BTreeMap::new();
    for t in set_el.children("Tag") {
        let k = t.child("Key").ok_or_else(Fail::malformed_xml)?.text.clone();
        let v = t.child("Value").map(|v| v.text.clone()).unwrap_or_default();
        if tags.insert(k, v).is_some() {
            return Err(Fail::new(
                StatusCode::BAD_REQUEST,
                "InvalidTag",
                "Cannot provide multiple Tags with the same key",
            ));
        }
    }
    Ok(tags)
}

fn tagging_doc(tags: &BTreeMap<String, String>) -> String {
    let mut x = Xml::new("Tagging");
    x.open("TagSet");
    for (k, v) in tags {
        x.open("Tag").elem("Key", k).elem("Value", v).close("Tag");
    }
    x.close("TagSet");
    x.finish("Tagging")
}

/// Most tags on a bucket.
const MAX_BUCKET_TAGS: usize = 50;

async fn put_bucket_tagging(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:PutBucketTagging", &arn(&bucket, None))
        .await?;
    let tags = tag_set(&xml::parse(&ctx.read_document(body).await?)?)?;
    if tags.len() > MAX_BUCKET_TAGS {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "InvalidTag",
            "Bucket tag count cannot be greater than 50",
        ));
    }
    for (k, v) in &tags {
        if k.is_empty()
            || k.chars().count() > 128
            || v.chars().count() > 256
            || k.starts_with("aws:")
        {
            return Err(Fail::new(
                StatusCode::BAD_REQUEST,
                "InvalidTag",
                "The TagKey you have provided is invalid",
            ));
        }
    }
    let json = serde_json::to_string(&tags).map_err(|e| Fail::internal(e.to_string()))?;
    ctx.objects()
        .set_bucket_attr(&bucket, BucketAttr::Tags, Some(&json))
        .await?;
    Ok(respond(StatusCode::NO_CONTENT, Body::empty()))
}

async fn get_bucket_tagging(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let bucket = ctx.bucket().to_owned();
    ctx.authorize("s3:GetBucketTagging", &arn(&bucket, None))
        .await?;
    let tags: BTreeMap<String, String> = ctx
        .objects()
        .bucket_attr(&bucket, BucketAttr::Tags)
        .await?
        .and_then(|j| serde_json::from_str(&j).ok())
        .ok_or(S3Error::NoSuchTagSet)?;
    Ok(xml_ok(tagging_doc(&tags)))
}

async fn delete_bucket_tagging(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    clear_bucket_attr(ctx, "s3:PutBucketTagging", BucketAttr::Tags).await
}

async fn put_object_tagging(ctx: &mut Ctx<'_>, body: Body) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:PutObjectTagging", &arn(&bucket, Some(&key)))
        .await?;
    let tags = tag_set(&xml::parse(&ctx.read_document(body).await?)?)?;
    check_tags(&tags)?;
    let version = ctx.query.get("versionId").map(str::to_owned);
    let v = ctx
        .objects()
        .set_tags(&bucket, &key, version.as_deref(), &tags)
        .await?;
    let mut r = respond(StatusCode::OK, Body::empty());
    if v != NULL_VERSION {
        set(&mut r, "x-amz-version-id", &v);
    }
    Ok(r)
}

async fn get_object_tagging(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:GetObjectTagging", &arn(&bucket, Some(&key)))
        .await?;
    let version = ctx.query.get("versionId").map(str::to_owned);
    let (record, tags) = ctx
        .objects()
        .tags(&bucket, &key, version.as_deref())
        .await?;
    let mut r = xml_ok(tagging_doc(&tags));
    if record.version_id != NULL_VERSION {
        set(&mut r, "x-amz-version-id", &record.version_id);
    }
    Ok(r)
}

async fn delete_object_tagging(ctx: &mut Ctx<'_>) -> Result<Response, Fail> {
    let (bucket, key) = (ctx.bucket().to_owned(), ctx.key().to_owned());
    ctx.authorize("s3:DeleteObjectTagging", &arn(&bucket, Some(&key)))
        .await?;
    let version = ctx.query.get("versionId").map(str::to_owned);
    let v = ctx
        .objects()
        .set_tags(&bucket, &key, version.as_deref(), &BTreeMap::new())
        .await?;
    let mut r = respond(StatusCode::NO_CONTENT, Body::empty());
    if v != NULL_VERSION {
        set(&mut r, "x-amz-version-id", &v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso(1_255_369_830_123), "2009-10-12T17:50:30.123Z");
        assert_eq!(
            http_date(1_255_369_830_123),
            "Mon, 12 Oct 2009 17:50:30 GMT"
        );
        assert_eq!(
            parse_http_date("Mon, 12 Oct 2009 17:50:30 GMT"),
            Some(1_255_369_830_000)
        );
    }
}
