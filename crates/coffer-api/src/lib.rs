//! Coffer's HTTP surface: the AWS KMS JSON protocol at `POST /` behind SigV4, and Coffer's own
//! endpoints under `/_coffer/` (health without authentication, Prometheus metrics), IAM and STS
//! over the query protocol, and the S3 REST API on every other path ([`s3`]). Every error becomes an AWS-shaped response in [`error`]; internal details
//! reach the log, never the client.

pub mod audit;
mod auth;
mod authorize;
pub mod error;
pub mod kms;
pub mod macie;
pub mod metrics;
pub mod operator;
pub mod query;
pub mod s3;
pub mod sigv4;
mod validate;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use coffer_kms::{Caller, Iam, Identities, Kms, Principal};
use http_body_util::BodyExt;
use serde_json::json;

pub use error::ApiError;
pub use metrics::Metrics;

/// Largest request body accepted (KMS's biggest legitimate request, a 128 KiB policy, fits easily).
pub const MAX_BODY: usize = 1024 * 1024;
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub kms: Arc<Kms>,
    pub identities: Arc<Identities>,
    pub iam: Arc<Iam>,
    pub metrics: Metrics,
    pub started: Instant,
    /// `None` when the operator turned auditing off.
    pub audit: Option<Arc<coffer_audit::AuditLog>>,
    /// Performs operator actions (seal, rotate-root); `None` refuses them.
    pub operator: Option<Arc<dyn operator::Operator>>,
    /// Buckets and objects (the S3 API).
    pub objects: Arc<coffer_store::s3::Objects>,
    /// The domain under which `bucket.<domain>` hosts address buckets (virtual-host style).
    pub s3_domain: Option<String>,
    /// Parsed bucket policies and public access blocks.
    pub s3_access: s3::access::AccessCache,
    /// S3 Bucket Keys in use, and decrypted for reads.
    pub s3_bucket_keys: s3::BucketKeys,
    /// Sensitive-data discovery: jobs, automated discovery, findings to publish.
    pub discovery: macie::Discovery,
}

/// The router for every endpoint Coffer serves.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/_coffer/health", get(health))
        .route("/_coffer/metrics", get(metrics_text))
        .route("/_coffer/macie2/{*rest}", axum::routing::any(macie::handle))
        .route("/_coffer/{*rest}", axum::routing::any(not_found))
        .route("/", post(post_root).fallback(s3_request))
        .fallback(s3_request)
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let cfg = state.kms.config();
    let (status, audit) = match &state.audit {
        None => ("ok", "off".to_owned()),
        Some(a) => match a.failure() {
            None => ("ok", "ok".to_owned()),
            Some(why) => ("degraded", format!("failing: {why}")),
        },
    };
    // A node that cannot reach its metadata (PostgreSQL restarting, say) answers nothing else
    // either: 503, so a load balancer sends requests to the other nodes meanwhile.
    let meta = state.kms.meta();
    let metadata = match tokio::time::timeout(std::time::Duration::from_secs(2), meta.ping()).await
    {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("failing: {e}"),
        Err(_) => "failing: no answer within 2 s".to_owned(),
    };
    let status = if metadata == "ok" {
        status
    } else {
        "unavailable"
    };
    let root = state.kms.root();
    let mut body = json!({
        "status": status,
        "audit": audit,
        "metadata": { "engine": meta.engine(), "status": metadata },
        "version": env!("CARGO_PKG_VERSION"),
        "root_of_trust": state.kms.root_mode(),
        "root_generation": root.current_generation(),
        "sealed": false,
        "region": cfg.region,
        "account_id": cfg.account_id,
        "uptime_seconds": state.started.elapsed().as_secs(),
    });
    if let Some(protected) = root.hardware_protected() {
        body["root_keys_non_extractable"] = json!(protected);
    }
    state.metrics.observe("Health", "ok", 0.0);
    let code = if status == "unavailable" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    let msg = format!(
        "Coffer has no endpoint for {} {}. Its own endpoints are GET /_coffer/health and GET /_coffer/metrics.",
        req.method(),
        req.uri().path()
    );
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "__type": "UnknownOperationException", "message": msg })),
    )
        .into_response()
}

/// Everything that is not KMS, IAM, STS or Coffer's own endpoints is S3.
async fn s3_request(State(state): State<Arc<AppState>>, req: Request) -> Response {
    s3::handle(state, req).await
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(MAX_BODY)),
        Err(e) => Err(ApiError::Serialization(format!(
            "The request body could not be read: {e}"
        ))),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kms::CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// Turns an error into AWS's JSON error shape, logging what the client must not see.
fn error_response(e: &ApiError, operation: &str, request_id: &str) -> Response {
    let (status, code) = e.code();
    if e.is_internal() {
        tracing::error!(request_id, operation, error = %e, "internal error");
    }
    let body = json!({ "__type": code, "message": e.client_message(request_id) });
    json_response(status, body.to_string().into_bytes(), request_id)
}

/// A request id in UUID form: a random per-process prefix and a counter, unique without drawing
/// randomness (a system call) for every request.
fn request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    uuid::Uuid::from_u64_pair(prefix, COUNTER.fetch_add(1, Ordering::Relaxed))
        .hyphenated()
        .to_string()
}

/// `POST /`: the KMS JSON protocol (an `X-Amz-Target` header) or the IAM/STS query protocol (a
/// form-encoded body).
async fn post_root(state: State<Arc<AppState>>, req: Request) -> Response {
    let is_form = req.headers().get("x-amz-target").is_none()
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        query_request(state, req).await
    } else {
        kms_request(state, req).await
    }
}

/// The caller of an authenticated request, with the condition keys of its connection.
fn caller_of(principal: &Principal, parts: &http::request::Parts) -> Caller {
    Caller::new(
        principal.clone(),
        parts
            .extensions
            .get::<audit::ConnInfo>()
            .map(|c| c.peer.ip()),
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Records the event of one request; `Err` carries the response to send instead when the audit
/// log cannot take it (fail closed).
#[allow(clippy::too_many_arguments)]
async fn record_event(
    state: &AppState,
    event_source: &'static str,
    op_name: &str,
    request_id: &str,
    parts: &http::request::Parts,
    request: Option<&[u8]>,
    principal: Option<&Principal>,
    outcome: Result<&serde_json::Value, audit::Failure<'_>>,
) -> Result<(), ApiError> {
    record_event_with(
        state,
        event_source,
        op_name,
        request_id,
        parts,
        request,
        principal,
        outcome,
        None,
    )
    .await
}

/// [`record_event`] with CloudTrail's `additionalEventData` (an S3 data event's byte counts).
#[allow(clippy::too_many_arguments)]
async fn record_event_with(
    state: &AppState,
    event_source: &'static str,
    op_name: &str,
    request_id: &str,
    parts: &http::request::Parts,
    request: Option<&[u8]>,
    principal: Option<&Principal>,
    outcome: Result<&serde_json::Value, audit::Failure<'_>>,
    additional: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    let Some(log) = &state.audit else {
        return Ok(());
    };
    let event_id = self::request_id();
    let event = audit::event(
        state.kms.config(),
        &audit::RequestRecord {
            event_source,
            operation: op_name,
            request_id,
            event_id: &event_id,
            headers: &parts.headers,
            conn: parts.extensions.get::<audit::ConnInfo>(),
            request,
            principal,
            outcome,
            additional,
        },
    );
    log.record(event)
        .await
        .map_err(|e| ApiError::AuditUnavailable(e.to_string()))
}

/// What an `X-Amz-Target` names.
enum Resolved {
    Kms(kms::KmsOperation),
    Operator(operator::Action),
}

async fn kms_request(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = request_id();
    let (parts, body) = req.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    let operator_action = operator::Action::from_target(target);
    let event_source = if operator_action.is_some() {
        "coffer.operator"
    } else {
        "kms.amazonaws.com"
    };
    let resolved = match operator_action {
        Some(a) => a.map(Resolved::Operator),
        None => kms::operation(target).map(Resolved::Kms),
    };
    let op_name = match &resolved {
        Ok(Resolved::Kms(o)) => o.name(),
        Ok(Resolved::Operator(a)) => a.name(),
        Err(_) => "Unknown",
    };

    let mut bytes = None;
    let mut who = None;
    let result = async {
        let body = read_body(body).await?;
        bytes = Some(body.clone());
        let principal = auth::authenticate(&state, &parts, &body, "kms").await?;
        who = Some(principal);
        let resolved = resolved?;
        // Fail closed: while the audit log cannot be written, nothing is done unrecorded.
        if let Some(log) = &state.audit {
            log.check_writable()
                .await
                .map_err(|e| ApiError::AuditUnavailable(e.to_string()))?;
        }
        let mut caller = caller_of(who.as_ref().expect("set above"), &parts);
        let op = match resolved {
            Resolved::Kms(op) => op,
            Resolved::Operator(action) => return operator::run(&state, action, &caller).await,
        };
        let mut gate = match authorize::authorize(&state.kms, op, &body, &mut caller).await {
            Ok(()) => kms::Gate::open(),
            Err(e) => kms::Gate::refused(e),
        };
        kms::dispatch(&state.kms, op, &body, &caller, &mut gate).await
    }
    .await;

    if let Err(e) = record_event(
        &state,
        event_source,
        op_name,
        &request_id,
        &parts,
        bytes.as_deref(),
        who.as_ref(),
        result
            .as_ref()
            .map_err(|e| audit::Failure::of(e, &request_id)),
    )
    .await
    {
        state
            .metrics
            .observe(op_name, e.code().1, started.elapsed().as_secs_f64());
        return error_response(&e, op_name, &request_id);
    }

    let elapsed = started.elapsed();
    match result {
        Ok(value) => {
            state.metrics.observe(op_name, "ok", elapsed.as_secs_f64());
            tracing::debug!(
                request_id,
                operation = op_name,
                access_key_id = who
                    .as_ref()
                    .map(|p| p.access_key_id.as_str())
                    .unwrap_or_default(),
                latency_us = elapsed.as_micros() as u64,
                "ok"
            );
            json_response(StatusCode::OK, value.to_string().into_bytes(), &request_id)
        }
        Err(e) => {
            let (status, code) = e.code();
            state.metrics.observe(op_name, code, elapsed.as_secs_f64());
            tracing::info!(
                request_id,
                operation = op_name,
                status = status.as_u16(),
                error = code,
                latency_us = elapsed.as_micros() as u64,
                "request refused"
            );
            error_response(&e, op_name, &request_id)
        }
    }
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// The query error for an error of the shared request path (authentication, body, audit).
fn query_error(e: &ApiError, request_id: &str) -> query::QueryError {
    use query::QueryError as Q;
    use sigv4::AuthError as A;
    match e {
        ApiError::Auth(A::Missing) => Q::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ),
        ApiError::Auth(A::UnknownAccessKey) => {
            Q::new(StatusCode::FORBIDDEN, "InvalidClientTokenId", e.to_string())
        }
        ApiError::Auth(A::SignatureMismatch) => Q::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            e.to_string(),
        ),
        ApiError::Auth(A::Expired(_)) => {
            Q::new(StatusCode::FORBIDDEN, "RequestExpired", e.to_string())
        }
        ApiError::Auth(_) => Q::new(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            e.to_string(),
        ),
        ApiError::TooLarge(_) => Q::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            e.to_string(),
        ),
        ApiError::Kms(coffer_kms::KmsError::AccessDenied(m)) => {
            Q::new(StatusCode::FORBIDDEN, "AccessDenied", m.clone())
        }
        other => Q::new(
            other.code().0,
            if other.code().0.is_server_error() {
                "ServiceFailure"
            } else {
                "InvalidInput"
            },
            other.client_message(request_id),
        ),
    }
}

/// IAM and STS over the query protocol, on the same endpoint and credentials as KMS.
async fn query_request(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = request_id();
    let (parts, body) = req.into_parts();
    // The credential scope names the service; GetCallerIdentity alone is STS.
    let scoped = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| sigv4::parse_authorization(v).ok())
        .map(|a| a.service.to_owned());
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => {
            let q = query_error(&e, &request_id);
            return xml_response(
                q.status,
                query::error_xml(query::Service::Iam, &q, &request_id),
                &request_id,
            );
        }
    };
    let form = query::Form::parse(&body);
    let service = match scoped.as_deref() {
        Some("sts") => query::Service::Sts,
        Some("iam") => query::Service::Iam,
        _ if form.action() == Some("GetCallerIdentity") => query::Service::Sts,
        _ => query::Service::Iam,
    };
    // A label for metrics and the audit log: a known action name, or "Unknown".
    let action: &'static str = form
        .action()
        .and_then(|a| {
            query::IAM_ACTIONS
                .iter()
                .chain(&["GetCallerIdentity"])
                .find(|k| **k == a)
                .copied()
        })
        .unwrap_or("Unknown");
    let mut who = None;
    let result: Result<query::Outcome, query::QueryError> = async {
        let principal = auth::authenticate(&state, &parts, &body, service.signing_name())
            .await
            .map_err(|e| query_error(&e, &request_id))?;
        who = Some(principal);
        if let Some(log) = &state.audit {
            log.check_writable().await.map_err(|e| {
                query_error(&ApiError::AuditUnavailable(e.to_string()), &request_id)
            })?;
        }
        let caller = caller_of(who.as_ref().expect("set above"), &parts);
        match service {
            query::Service::Iam => query::iam(&state.iam, &caller, &form, &request_id).await,
            query::Service::Sts => query::sts(&state.iam, &caller, &form, &request_id).await,
        }
    }
    .await;
    let params = form.audit_params().to_string();
    let recorded = record_event(
        &state,
        service.event_source(),
        action,
        &request_id,
        &parts,
        Some(params.as_bytes()),
        who.as_ref(),
        match &result {
            Ok(o) => Ok(&o.audit),
            Err(q) => Err(audit::Failure {
                code: q.code,
                message: q.message.clone(),
            }),
        },
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (status, xml, code) = match (recorded, result) {
        (Err(e), _) => {
            let q = query_error(&e, &request_id);
            (q.status, query::error_xml(service, &q, &request_id), q.code)
        }
        (Ok(()), Ok(o)) => (StatusCode::OK, o.xml, "ok"),
        (Ok(()), Err(q)) => (q.status, query::error_xml(service, &q, &request_id), q.code),
    };
    state.metrics.observe(action, code, elapsed);
    xml_response(status, xml, &request_id)
}
