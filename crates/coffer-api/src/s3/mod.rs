//! The S3 REST API on the same endpoint as KMS: path-style (`/bucket/key`) and virtual-host-style
//! (`bucket.<s3 domain>`) addressing, SigV4 in headers or in a presigned URL's query, signed,
//! unsigned and `aws-chunked` bodies with trailing checksums, and S3's XML errors.
//!
//! Every request is authenticated, authorized (the account root may do anything; users need an
//! identity policy allowing the `s3:` action on the bucket or object ARN), recorded in the audit
//! log (object operations as data events), then carried out by [`coffer_store::s3::Objects`].

pub mod access;
pub mod body;
pub mod chunked;
mod ops;
pub(crate) use ops::iso as iso_ms;
pub(crate) mod sse;
pub mod xml;

pub use sse::BucketKeys;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use coffer_kms::{Caller, IamError, Principal};
use coffer_store::s3::S3Error;
use percent_encoding::percent_decode_str;
use time::OffsetDateTime;

use crate::auth::{self, Claim, Verified};
use crate::error::ApiError;
use crate::sigv4::{self, AuthError};
use crate::{AppState, REQUEST_ID_HEADER, audit};

/// The principal ARN an unsigned (anonymous) request carries.
pub const ANONYMOUS: &str = "anonymous";

/// Longest a presigned URL may be valid (S3: seven days).
const MAX_PRESIGN_SECONDS: i64 = 604_800;
/// Largest XML request document read (policies are the largest, at 20 KiB).
pub const MAX_DOCUMENT: usize = 1024 * 1024;

/// An S3 error response: status, code, message and the extra elements S3 adds.
#[derive(Debug)]
pub struct Fail {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Vec<(&'static str, String)>,
    pub headers: Vec<(&'static str, String)>,
    /// The detail for the log, for internal errors.
    pub internal: Option<String>,
}

impl Fail {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Vec::new(),
            headers: Vec::new(),
            internal: None,
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!(
                "A header or query you provided implies functionality that is not implemented: {what} is not supported by Coffer yet."
            ),
        )
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub fn malformed_xml() -> Self {
        S3Error::MalformedXml.into()
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        let mut f = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        );
        f.internal = Some(detail.into());
        f
    }
}

impl From<S3Error> for Fail {
    fn from(e: S3Error) -> Self {
        let (status, code) = e.code();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if e.is_internal() {
            let mut f = Fail::internal(e.to_string());
            if let S3Error::Damaged(_) = e {
                f.message = "The stored object failed its integrity check and was not returned. It may have been altered or damaged on disk.".into();
            }
            return f;
        }
        let mut f = Fail::new(status, code, e.to_string());
        match &e {
            S3Error::NoSuchBucket(b)
            | S3Error::BucketNotEmpty(b)
            | S3Error::BucketAlreadyOwnedByYou(b)
            | S3Error::InvalidBucketName(b) => f.extra.push(("BucketName", b.clone())),
            S3Error::NoSuchKey { key, delete_marker } => {
                f.extra.push(("Key", key.clone()));
                if *delete_marker {
                    f.headers.push(("x-amz-delete-marker", "true".into()));
                }
            }
            S3Error::NoSuchVersion { key, version_id } => {
                f.extra.push(("Key", key.clone()));
                f.extra.push(("VersionId", version_id.clone()));
            }
            S3Error::MethodNotAllowed {
                delete_marker: true,
            } => f.headers.push(("x-amz-delete-marker", "true".into())),
            S3Error::InvalidRange { len } => {
                f.extra.push(("ActualObjectSize", len.to_string()));
            }
            _ => {}
        }
        f
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        use AuthError as A;
        let forbidden = StatusCode::FORBIDDEN;
        match e {
            ApiError::Auth(A::Missing) => Fail::new(forbidden, "AccessDenied", "Access Denied"),
            ApiError::Auth(A::UnknownAccessKey) => Fail::new(
                forbidden,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            ),
            ApiError::Auth(A::SignatureMismatch) => Fail::new(
                forbidden,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            ),
            ApiError::Auth(A::Expired(m)) => Fail::new(
                forbidden,
                "RequestTimeTooSkewed",
                format!(
                    "The difference between the request time and the current time is too large. {m}"
                ),
            ),
            ApiError::Auth(A::Malformed(m) | A::WrongScope(m)) => {
                Fail::new(StatusCode::BAD_REQUEST, "AuthorizationHeaderMalformed", m)
            }
            ApiError::TooLarge(_) => Fail::new(
                StatusCode::BAD_REQUEST,
                "MaxMessageLengthExceeded",
                "Your request was too big.",
            ),
            ApiError::AuditUnavailable(m) => {
                let mut f = Fail::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The audit log cannot be written, so Coffer refuses requests until it can (see the server log).",
                );
                f.internal = Some(m);
                f
            }
            other => Fail::internal(other.to_string()),
        }
    }
}

impl From<IamError> for Fail {
    fn from(e: IamError) -> Self {
        match e {
            IamError::AccessDenied(m) => Fail::new(StatusCode::FORBIDDEN, "AccessDenied", m),
            other => Fail::internal(other.to_string()),
        }
    }
}

impl From<xml::Malformed> for Fail {
    fn from(_: xml::Malformed) -> Self {
        Fail::malformed_xml()
    }
}

/// The bucket and key a request addresses.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub bucket: Option<String>,
    pub key: Option<String>,
}

/// Finds the bucket and key: from the host (`bucket.<domain>`) when an S3 domain is set and the
/// host is under it, else from the path (`/bucket/key`).
fn target(parts: &http::request::Parts, s3_domain: Option<&str>) -> Result<Target, Fail> {
    let path = percent_decode_str(parts.uri.path())
        .decode_utf8()
        .map_err(|_| Fail::invalid_argument("The request path is not valid UTF-8."))?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let vhost_bucket = s3_domain.and_then(|d| {
        host.strip_suffix(d)
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
    });
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(match vhost_bucket {
        Some(b) => Target {
            bucket: Some(b.to_owned()),
            key: non_empty(path),
        },
        None => match path.split_once('/') {
            Some((b, k)) => Target {
                bucket: non_empty(b),
                key: non_empty(k),
            },
            None => Target {
                bucket: non_empty(path),
                key: None,
            },
        },
    })
}

/// The query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Query(
            raw.map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// How the body is sent, from `x-amz-content-sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The hex SHA-256 of the body, which must match.
    Signed(String),
    Unsigned,
    /// `aws-chunked`, unsigned chunks, checksum in a trailer.
    StreamingUnsignedTrailer,
    /// `aws-chunked`, signed chunks (and signed trailers when `trailer`).
    StreamingSigned {
        trailer: bool,
    },
}

impl Payload {
    fn parse(value: &str) -> Result<Self, Fail> {
        Ok(match value {
            "UNSIGNED-PAYLOAD" => Payload::Unsigned,
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Payload::StreamingUnsignedTrailer,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Payload::StreamingSigned { trailer: false },
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => {
                Payload::StreamingSigned { trailer: true }
            }
            v if v.starts_with("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD") => {
                return Err(Fail::not_implemented("SigV4a (ECDSA) signed payloads"));
            }
            v if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Payload::Signed(v.to_ascii_lowercase())
            }
            _ => {
                return Err(Fail::invalid_argument(format!(
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value, not '{value}'."
                )));
            }
        })
    }

    pub fn is_chunked(&self) -> bool {
        matches!(
            self,
            Payload::StreamingUnsignedTrailer | Payload::StreamingSigned { .. }
        )
    }
}

/// An authenticated S3 request.
#[derive(Debug)]
pub struct Authed {
    pub principal: Principal,
    pub payload: Payload,
    /// For signed chunks.
    pub signing: Option<chunked::ChunkSigning>,
}

/// Authenticates from the `Authorization` header or a presigned URL's query.
async fn authenticate(
    state: &AppState,
    parts: &http::request::Parts,
    query: &Query,
) -> Result<Authed, Fail> {
    if query.has("X-Amz-Signature") || query.has("X-Amz-Credential") {
        return authenticate_presigned(state, parts, query).await;
    }
    let sigv2 = (query.has("Signature") && query.has("AWSAccessKeyId"))
        || parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("AWS "));
    if sigv2 {
        // Signature Version 2 is retired in S3 for all new buckets; Coffer never took it.
        return Err(Fail::invalid_request(
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256. \
             (Coffer accepts only Signature Version 4. For presigned URLs from the aws CLI v1 run \
             `aws configure set default.s3.signature_version s3v4`; in boto3 pass \
             Config(signature_version='s3v4').)",
        ));
    }
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        // Anonymous: only a bucket policy can let it through.
        let payload = parts
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("UNSIGNED-PAYLOAD");
        let payload = match Payload::parse(payload)? {
            Payload::StreamingSigned { .. } => {
                return Err(Fail::invalid_request(
                    "An anonymous request cannot carry signed chunks.",
                ));
            }
            p => p,
        };
        return Ok(Authed {
            principal: Principal {
                arn: ANONYMOUS.into(),
                account_id: String::new(),
                access_key_id: String::new(),
            },
            payload,
            signing: None,
        });
    }
    let claim = auth::header_claim(parts).map_err(Fail::from)?;
    let payload = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Fail::invalid_request("Missing required header for this request: x-amz-content-sha256")
        })?;
    let payload_mode = Payload::parse(payload)?;
    let v: Verified = auth::verify(state, parts, &claim, "s3", payload, false, true)
        .await
        .map_err(Fail::from)?;
    let signing =
        matches!(payload_mode, Payload::StreamingSigned { .. }).then(|| chunked::ChunkSigning {
            key: v.signing_key.clone(),
            scope: v.scope.clone(),
            amz_date: v.amz_date.clone(),
            seed_signature: v.signature.clone(),
        });
    Ok(Authed {
        principal: v.principal,
        payload: payload_mode,
        signing,
    })
}

fn query_error(message: impl Into<String>) -> Fail {
    Fail::new(
        StatusCode::BAD_REQUEST,
        "AuthorizationQueryParametersError",
        message,
    )
}

async fn authenticate_presigned(
    state: &AppState,
    parts: &http::request::Parts,
    query: &Query,
) -> Result<Authed, Fail> {
    let need = |name: &str| {
        query.get(name).ok_or_else(|| {
            query_error(format!(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters; {name} is missing."
            ))
        })
    };
    if need("X-Amz-Algorithm")? != sigv4::ALGORITHM {
        return Err(query_error(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let credential = need("X-Amz-Credential")?;
    let signed = need("X-Amz-SignedHeaders")?;
    let signature = need("X-Amz-Signature")?;
    let amz_date = need("X-Amz-Date")?;
    let expires: i64 = need("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|e| *e >= 0)
        .ok_or_else(|| query_error("X-Amz-Expires should be a number"))?;
    if expires > MAX_PRESIGN_SECONDS {
        return Err(query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    // Rebuild the header form, so one parser checks both.
    let header = format!(
        "{} Credential={credential}, SignedHeaders={signed}, Signature={signature}",
        sigv4::ALGORITHM
    );
    let auth = sigv4::parse_authorization(&header).map_err(|e| query_error(e.to_string()))?;
    let t = sigv4::parse_amz_date(amz_date).ok_or_else(|| {
        query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;
    let now = OffsetDateTime::now_utc();
    if now > t + time::Duration::seconds(expires) {
        return Err(
            Fail::new(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
                .with("X-Amz-Expires", expires.to_string())
                .with(
                    "Expires",
                    sigv4::format_amz_date(t + time::Duration::seconds(expires)),
                )
                .with("ServerTime", sigv4::format_amz_date(now)),
        );
    }
    if t > now + sigv4::MAX_SKEW {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Request is not valid yet",
        ));
    }
    let payload = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("UNSIGNED-PAYLOAD");
    let payload_mode = Payload::parse(payload)?;
    if payload_mode.is_chunked() {
        return Err(Fail::invalid_request(
            "A presigned URL cannot carry an aws-chunked body.",
        ));
    }
    let claim = Claim { auth, amz_date };
    let v = auth::verify(state, parts, &claim, "s3", payload, false, false)
        .await
        .map_err(Fail::from)?;
    Ok(Authed {
        principal: v.principal,
        payload: payload_mode,
        signing: None,
    })
}

/// One S3 request being served: what the handlers share.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub parts: &'a http::request::Parts,
    pub query: &'a Query,
    pub target: &'a Target,
    pub caller: Caller,
    pub payload: Payload,
    pub signing: Option<chunked::ChunkSigning>,
    pub request_id: &'a str,
    /// What the audit event records of the request and response.
    pub audit_request: serde_json::Map<String, serde_json::Value>,
    pub audit_response: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("target", &self.target)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Ctx<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn objects(&self) -> &coffer_store::s3::Objects {
        &self.state.objects
    }

    pub fn is_anonymous(&self) -> bool {
        self.caller.principal.arn == ANONYMOUS
    }

    /// Whether the caller may perform `action` on `resource` (an S3 ARN), with the request's
    /// condition keys: bucket policy, identity policies and public access block together.
    pub async fn authorize(&self, action: &str, resource: &str) -> Result<(), Fail> {
        access::authorize(
            self.state,
            &self.caller,
            self.is_anonymous(),
            action,
            resource,
        )
        .await
    }

    pub fn bucket(&self) -> &str {
        self.target.bucket.as_deref().unwrap_or_default()
    }

    pub fn key(&self) -> &str {
        self.target.key.as_deref().unwrap_or_default()
    }

    /// Reads a small request body (an XML document), checking its payload hash, `Content-MD5`
    /// and checksum headers.
    pub async fn read_document(&self, body: Body) -> Result<bytes::Bytes, Fail> {
        body::read_small(self, body, MAX_DOCUMENT, true).await
    }

    /// Reads a request document whose `x-amz-checksum-*` headers describe something else (the
    /// object a CompleteMultipartUpload makes).
    pub async fn read_document_only(&self, body: Body) -> Result<bytes::Bytes, Fail> {
        body::read_small(self, body, MAX_DOCUMENT, false).await
    }
}

/// The ARN of a bucket, or of an object in it.
pub fn arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

/// Adds S3's request headers to a response (`x-amz-request-id`, `x-amz-id-2`).
fn stamp(resp: &mut Response, request_id: &str) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amz-request-id", v.clone());
        h.insert(REQUEST_ID_HEADER, v);
    }
    h.insert("x-amz-id-2", HeaderValue::from_static("coffer"));
    h.insert(header::SERVER, HeaderValue::from_static("Coffer"));
}

/// The XML error response (headers only for HEAD, as S3 sends).
pub fn error_response(f: &Fail, resource: &str, request_id: &str, head: bool) -> Response {
    let mut x = xml::Xml::bare("Error");
    x.elem("Code", f.code).elem("Message", &f.message);
    for (k, v) in &f.extra {
        x.elem(k, v);
    }
    x.elem("Resource", resource).elem("RequestId", request_id);
    let body = x.finish("Error");
    let mut resp = if head || f.status == StatusCode::NOT_MODIFIED {
        Response::new(Body::empty())
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        r
    };
    *resp.status_mut() = f.status;
    for (k, v) in &f.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    stamp(&mut resp, request_id);
    resp
}

/// Serves one S3 request.
pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = crate::request_id();
    let (parts, body) = req.into_parts();
    let head = parts.method == http::Method::HEAD;
    let query = Query::parse(parts.uri.query());
    let resource = parts.uri.path().to_owned();
    let target = match target(&parts, state.s3_domain.as_deref()) {
        Ok(t) => t,
        Err(f) => return error_response(&f, &resource, &request_id, head),
    };
    let op = ops::resolve(&parts.method, &target, &query, &parts.headers);
    let op_name = op.name();

    let mut audit_request = serde_json::Map::new();
    if let Some(b) = &target.bucket {
        audit_request.insert("bucketName".into(), b.clone().into());
    }
    if let Some(k) = &target.key {
        audit_request.insert("key".into(), k.clone().into());
    }
    if let Some(v) = query.get("versionId") {
        audit_request.insert("versionId".into(), v.into());
    }
    if let Some(h) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        audit_request.insert("Host".into(), h.into());
    }

    let mut who: Option<Principal> = None;
    let mut audit_response = serde_json::Map::new();
    let result: Result<Response, Fail> = async {
        let authed = authenticate(&state, &parts, &query).await?;
        who = Some(authed.principal.clone());
        if let Some(log) = &state.audit {
            log.check_writable()
                .await
                .map_err(|e| Fail::from(ApiError::AuditUnavailable(e.to_string())))?;
        }
        let caller = crate::caller_of(&authed.principal, &parts);
        let mut ctx = Ctx {
            state: &state,
            parts: &parts,
            query: &query,
            target: &target,
            caller,
            payload: authed.payload,
            signing: authed.signing,
            request_id: &request_id,
            audit_request: std::mem::take(&mut audit_request),
            audit_response: serde_json::Map::new(),
        };
        let r = ops::run(&mut ctx, op, body).await;
        audit_request = std::mem::take(&mut ctx.audit_request);
        audit_response = std::mem::take(&mut ctx.audit_response);
        r
    }
    .await;

    let params = serde_json::Value::Object(audit_request).to_string();
    let response_elements = serde_json::Value::Object(audit_response);
    let failure = result.as_ref().err().map(|f| audit::Failure {
        code: f.code,
        message: f.message.clone(),
    });
    // As CloudTrail's S3 data events: the bytes that crossed the wire each way.
    let length = |h: &http::HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let bytes_in = match length(&parts.headers, "x-amz-decoded-content-length") {
        0 => length(&parts.headers, "content-length"),
        n => n,
    };
    let bytes_out = match &result {
        Ok(r) if !head => length(r.headers(), "content-length"),
        _ => 0,
    };
    let recorded = crate::record_event_with(
        &state,
        audit::S3_EVENT_SOURCE,
        op_name,
        &request_id,
        &parts,
        Some(params.as_bytes()),
        who.as_ref(),
        match failure {
            None => Ok(&response_elements),
            Some(f) => Err(f),
        },
        Some(serde_json::json!({
            "bytesTransferredIn": bytes_in,
            "bytesTransferredOut": bytes_out,
        })),
    )
    .await;
    let elapsed = started.elapsed();
    let (resp, code) = match (recorded, result) {
        (Err(e), _) => {
            let f = Fail::from(e);
            (error_response(&f, &resource, &request_id, head), f.code)
        }
        (Ok(()), Ok(mut r)) => {
            stamp(&mut r, &request_id);
            (r, "ok")
        }
        (Ok(()), Err(f)) => {
            if let Some(detail) = &f.internal {
                tracing::error!(request_id, operation = op_name, error = %detail, "internal error");
            } else {
                tracing::info!(
                    request_id,
                    operation = op_name,
                    status = f.status.as_u16(),
                    error = f.code,
                    "request refused"
                );
            }
            (error_response(&f, &resource, &request_id, head), f.code)
        }
    };
    state.metrics.observe(op_name, code, elapsed.as_secs_f64());
    resp
}
