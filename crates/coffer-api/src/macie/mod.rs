//! Sensitive-data discovery over the Amazon Macie API (`macie2`, REST-JSON) under
//! `/_coffer/macie2/`: classification jobs over buckets, automated discovery of new objects,
//! findings listed, fetched and counted as Macie shapes them, and the managed identifiers. So
//! `aws macie2 --endpoint-url https://<coffer>/_coffer/macie2` and boto3's `macie2` client work
//! unchanged. Requests are SigV4-signed for the service `macie2`; an IAM user needs an identity
//! policy that allows `macie2:<Operation>`; every request is an audit event. The work itself runs
//! in the background ([`runner`]), reading objects with the authority of whoever asked for it.

mod custom;
mod filters;
mod findings;
mod jobs;
pub mod runner;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use coffer_kms::{Caller, KmsError};
use serde_json::{Value, json};

pub use findings::{
    list_by_reading_all, list_in as list_findings, statistics_in as finding_statistics,
    store as store_findings, synthetic_finding, terms_of as finding_terms,
};
pub use runner::{Discovery, FINDINGS_RETENTION, JOB_PAGE};

use crate::AppState;
use crate::error::ApiError;

/// Where the API is mounted.
pub const PREFIX: &str = "/_coffer/macie2";
pub(crate) const EVENT_SOURCE: &str = "macie2.amazonaws.com";

/// A Macie API error: the code goes in `x-amzn-ErrorType` and `__type`, the text in `message`.
#[derive(Debug)]
pub enum MacieError {
    Validation(String),
    NotFound(String),
    Conflict(String),
    QuotaExceeded(String),
    Api(ApiError),
}

impl From<ApiError> for MacieError {
    fn from(e: ApiError) -> Self {
        MacieError::Api(e)
    }
}

impl From<KmsError> for MacieError {
    fn from(e: KmsError) -> Self {
        MacieError::Api(ApiError::Kms(e))
    }
}

impl From<coffer_meta::MetaError> for MacieError {
    fn from(e: coffer_meta::MetaError) -> Self {
        MacieError::Api(ApiError::Internal(e.to_string()))
    }
}

impl MacieError {
    fn code(&self) -> (StatusCode, &'static str) {
        match self {
            MacieError::Validation(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
            MacieError::NotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            MacieError::Conflict(_) => (StatusCode::CONFLICT, "ConflictException"),
            MacieError::QuotaExceeded(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "ServiceQuotaExceededException",
            ),
            MacieError::Api(ApiError::Kms(KmsError::AccessDenied(_))) => {
                (StatusCode::FORBIDDEN, "AccessDeniedException")
            }
            MacieError::Api(ApiError::Internal(_) | ApiError::Kms(KmsError::Internal(_))) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException")
            }
            MacieError::Api(ApiError::Auth(_)) => {
                (StatusCode::FORBIDDEN, "UnrecognizedClientException")
            }
            MacieError::Api(ApiError::Serialization(_)) => {
                (StatusCode::BAD_REQUEST, "ValidationException")
            }
            MacieError::Api(e) => e.code(),
        }
    }

    fn message(&self, request_id: &str) -> String {
        match self {
            MacieError::Validation(m)
            | MacieError::NotFound(m)
            | MacieError::Conflict(m)
            | MacieError::QuotaExceeded(m) => m.clone(),
            MacieError::Api(e) => e.client_message(request_id),
        }
    }

    fn is_internal(&self) -> bool {
        matches!(self, MacieError::Api(e) if e.is_internal())
    }
}

pub(crate) type MacieResult<T> = Result<T, MacieError>;

/// The operations served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GetMacieSession,
    CreateClassificationJob,
    DescribeClassificationJob,
    ListClassificationJobs,
    UpdateClassificationJob,
    ListFindings,
    GetFindings,
    GetFindingStatistics,
    GetAutomatedDiscoveryConfiguration,
    UpdateAutomatedDiscoveryConfiguration,
    ListClassificationScopes,
    GetClassificationScope,
    UpdateClassificationScope,
    ListManagedDataIdentifiers,
    CreateCustomDataIdentifier,
    GetCustomDataIdentifier,
    ListCustomDataIdentifiers,
    BatchGetCustomDataIdentifiers,
    DeleteCustomDataIdentifier,
    TestCustomDataIdentifier,
    CreateAllowList,
    GetAllowList,
    ListAllowLists,
    UpdateAllowList,
    DeleteAllowList,
    CreateFindingsFilter,
    GetFindingsFilter,
    ListFindingsFilters,
    UpdateFindingsFilter,
    DeleteFindingsFilter,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GetMacieSession => "GetMacieSession",
            Op::CreateClassificationJob => "CreateClassificationJob",
            Op::DescribeClassificationJob => "DescribeClassificationJob",
            Op::ListClassificationJobs => "ListClassificationJobs",
            Op::UpdateClassificationJob => "UpdateClassificationJob",
            Op::ListFindings => "ListFindings",
            Op::GetFindings => "GetFindings",
            Op::GetFindingStatistics => "GetFindingStatistics",
            Op::GetAutomatedDiscoveryConfiguration => "GetAutomatedDiscoveryConfiguration",
            Op::UpdateAutomatedDiscoveryConfiguration => "UpdateAutomatedDiscoveryConfiguration",
            Op::ListClassificationScopes => "ListClassificationScopes",
            Op::GetClassificationScope => "GetClassificationScope",
            Op::UpdateClassificationScope => "UpdateClassificationScope",
            Op::ListManagedDataIdentifiers => "ListManagedDataIdentifiers",
            Op::CreateCustomDataIdentifier => "CreateCustomDataIdentifier",
            Op::GetCustomDataIdentifier => "GetCustomDataIdentifier",
            Op::ListCustomDataIdentifiers => "ListCustomDataIdentifiers",
            Op::BatchGetCustomDataIdentifiers => "BatchGetCustomDataIdentifiers",
            Op::DeleteCustomDataIdentifier => "DeleteCustomDataIdentifier",
            Op::TestCustomDataIdentifier => "TestCustomDataIdentifier",
            Op::CreateAllowList => "CreateAllowList",
            Op::GetAllowList => "GetAllowList",
            Op::ListAllowLists => "ListAllowLists",
            Op::UpdateAllowList => "UpdateAllowList",
            Op::DeleteAllowList => "DeleteAllowList",
            Op::CreateFindingsFilter => "CreateFindingsFilter",
            Op::GetFindingsFilter => "GetFindingsFilter",
            Op::ListFindingsFilters => "ListFindingsFilters",
            Op::UpdateFindingsFilter => "UpdateFindingsFilter",
            Op::DeleteFindingsFilter => "DeleteFindingsFilter",
        }
    }
}

/// The operation a method and path (below [`PREFIX`]) name, with the path parameter if any.
fn route(method: &Method, path: &str) -> Option<(Op, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let param = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let m = method.as_str();
    Some(match (m, segs.as_slice()) {
        ("GET", ["macie"]) => (Op::GetMacieSession, None),
        ("POST", ["jobs"]) => (Op::CreateClassificationJob, None),
        ("POST", ["jobs", "list"]) => (Op::ListClassificationJobs, None),
        ("GET", ["jobs", id]) => (Op::DescribeClassificationJob, Some(param(id)?)),
        ("PATCH", ["jobs", id]) => (Op::UpdateClassificationJob, Some(param(id)?)),
        ("POST", ["findings"]) => (Op::ListFindings, None),
        ("POST", ["findings", "describe"]) => (Op::GetFindings, None),
        ("POST", ["findings", "statistics"]) => (Op::GetFindingStatistics, None),
        ("GET", ["automated-discovery", "configuration"]) => {
            (Op::GetAutomatedDiscoveryConfiguration, None)
        }
        ("PUT", ["automated-discovery", "configuration"]) => {
            (Op::UpdateAutomatedDiscoveryConfiguration, None)
        }
        ("GET", ["classification-scopes"]) => (Op::ListClassificationScopes, None),
        ("GET", ["classification-scopes", id]) => (Op::GetClassificationScope, Some(param(id)?)),
        ("PATCH", ["classification-scopes", id]) => {
            (Op::UpdateClassificationScope, Some(param(id)?))
        }
        ("POST", ["managed-data-identifiers", "list"]) => (Op::ListManagedDataIdentifiers, None),
        ("POST", ["custom-data-identifiers"]) => (Op::CreateCustomDataIdentifier, None),
        ("POST", ["custom-data-identifiers", "list"]) => (Op::ListCustomDataIdentifiers, None),
        ("POST", ["custom-data-identifiers", "get"]) => (Op::BatchGetCustomDataIdentifiers, None),
        ("POST", ["custom-data-identifiers", "test"]) => (Op::TestCustomDataIdentifier, None),
        ("GET", ["custom-data-identifiers", id]) => (Op::GetCustomDataIdentifier, Some(param(id)?)),
        ("DELETE", ["custom-data-identifiers", id]) => {
            (Op::DeleteCustomDataIdentifier, Some(param(id)?))
        }
        ("POST", ["allow-lists"]) => (Op::CreateAllowList, None),
        ("GET", ["allow-lists"]) => (Op::ListAllowLists, None),
        ("GET", ["allow-lists", id]) => (Op::GetAllowList, Some(param(id)?)),
        ("PUT", ["allow-lists", id]) => (Op::UpdateAllowList, Some(param(id)?)),
        ("DELETE", ["allow-lists", id]) => (Op::DeleteAllowList, Some(param(id)?)),
        ("POST", ["findingsfilters"]) => (Op::CreateFindingsFilter, None),
        ("GET", ["findingsfilters"]) => (Op::ListFindingsFilters, None),
        ("GET", ["findingsfilters", id]) => (Op::GetFindingsFilter, Some(param(id)?)),
        ("PATCH", ["findingsfilters", id]) => (Op::UpdateFindingsFilter, Some(param(id)?)),
        ("DELETE", ["findingsfilters", id]) => (Op::DeleteFindingsFilter, Some(param(id)?)),
        _ => return None,
    })
}

/// Serves one Macie API request.
pub async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = crate::request_id();
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .to_owned();
    let routed = route(&parts.method, &path);
    let op_name = routed.as_ref().map_or("Unknown", |(op, _)| op.name());
    let mut bytes = None;
    let mut who = None;
    let result: MacieResult<Value> = async {
        let body = crate::read_body(body).await?;
        bytes = Some(body.clone());
        let principal = crate::auth::authenticate(&state, &parts, &body, "macie2").await?;
        who = Some(principal);
        let (op, param) = routed.clone().ok_or_else(|| {
            MacieError::Api(ApiError::UnknownOperation(format!(
                "Coffer's Macie API has no operation {} {path}.",
                parts.method
            )))
        })?;
        if let Some(log) = &state.audit {
            log.check_writable()
                .await
                .map_err(|e| ApiError::AuditUnavailable(e.to_string()))?;
        }
        let caller = crate::caller_of(who.as_ref().expect("set above"), &parts);
        state
            .kms
            .authorize_account(&caller, &format!("macie2:{}", op.name()))
            .await?;
        let input: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                MacieError::Validation(format!("The request body is not valid JSON: {e}"))
            })?
        };
        if !input.is_object() {
            return Err(MacieError::Validation(
                "The request body must be a JSON object.".into(),
            ));
        }
        let query = crate::s3::Query::parse(parts.uri.query());
        dispatch(&state, op, param.as_deref(), &input, &query, &caller).await
    }
    .await;

    let audit_outcome = result.as_ref().map(|_| &Value::Null);
    let failure = match &result {
        Err(e) => Some(crate::audit::Failure {
            code: e.code().1,
            message: e.message(&request_id),
        }),
        Ok(_) => None,
    };
    let recorded = crate::record_event(
        &state,
        EVENT_SOURCE,
        op_name,
        &request_id,
        &parts,
        bytes.as_deref(),
        who.as_ref(),
        match failure {
            Some(f) => Err(f),
            None => Ok(audit_outcome.unwrap_or(&Value::Null)),
        },
    )
    .await;
    let result = match recorded {
        Err(e) => Err(MacieError::Api(e)),
        Ok(()) => result,
    };
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(v) => {
            state.metrics.observe(op_name, "ok", elapsed);
            respond(StatusCode::OK, v.to_string(), None, &request_id)
        }
        Err(e) => {
            let (status, code) = e.code();
            if e.is_internal() {
                tracing::error!(request_id, operation = op_name, error = ?e, "internal error");
            }
            state.metrics.observe(op_name, code, elapsed);
            let body = json!({ "__type": code, "message": e.message(&request_id) });
            respond(status, body.to_string(), Some(code), &request_id)
        }
    }
}

fn respond(status: StatusCode, body: String, error: Option<&str>, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(crate::REQUEST_ID_HEADER, v);
    }
    if let Some(code) = error.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("x-amzn-errortype", code);
    }
    r
}

async fn dispatch(
    state: &Arc<AppState>,
    op: Op,
    param: Option<&str>,
    input: &Value,
    query: &crate::s3::Query,
    caller: &Caller,
) -> MacieResult<Value> {
    let id = || param.unwrap_or_default();
    match op {
        Op::GetMacieSession => Ok(session(state)),
        Op::CreateClassificationJob => jobs::create(state, input, caller).await,
        Op::DescribeClassificationJob => jobs::describe(state, id()).await,
        Op::ListClassificationJobs => jobs::list(state, input).await,
        Op::UpdateClassificationJob => jobs::update(state, id(), input).await,
        Op::ListFindings => findings::list(state, input).await,
        Op::GetFindings => findings::get(state, input).await,
        Op::GetFindingStatistics => findings::statistics(state, input).await,
        Op::GetAutomatedDiscoveryConfiguration => runner::get_automated(state).await,
        Op::UpdateAutomatedDiscoveryConfiguration => {
            runner::update_automated(state, input, caller).await
        }
        Op::ListClassificationScopes => runner::list_scopes(state).await,
        Op::GetClassificationScope => runner::get_scope(state, id()).await,
        Op::UpdateClassificationScope => runner::update_scope(state, id(), input).await,
        Op::ListManagedDataIdentifiers => Ok(managed_identifiers()),
        Op::CreateCustomDataIdentifier => custom::create_identifier(state, input).await,
        Op::GetCustomDataIdentifier => custom::get_identifier(state, id()).await,
        Op::ListCustomDataIdentifiers => custom::list_identifiers(state, input).await,
        Op::BatchGetCustomDataIdentifiers => custom::batch_get_identifiers(state, input).await,
        Op::DeleteCustomDataIdentifier => custom::delete_identifier(state, id()).await,
        Op::TestCustomDataIdentifier => custom::test_identifier(input),
        Op::CreateAllowList => custom::create_allow_list(state, input, caller).await,
        Op::GetAllowList => custom::get_allow_list(state, id()).await,
        Op::ListAllowLists => custom::list_allow_lists(state, query).await,
        Op::UpdateAllowList => custom::update_allow_list(state, id(), input).await,
        Op::DeleteAllowList => custom::delete_allow_list(state, id(), query).await,
        Op::CreateFindingsFilter => filters::create(state, input).await,
        Op::GetFindingsFilter => filters::get(state, id()).await,
        Op::ListFindingsFilters => filters::list(state, query).await,
        Op::UpdateFindingsFilter => filters::update(state, id(), input).await,
        Op::DeleteFindingsFilter => filters::delete(state, id()).await,
    }
}

/// GetMacieSession: Coffer's discovery is always on.
fn session(state: &AppState) -> Value {
    let cfg = state.kms.config();
    let started = time::OffsetDateTime::now_utc()
        - time::Duration::seconds(state.started.elapsed().as_secs() as i64);
    json!({
        "createdAt": iso(started.unix_timestamp() * 1000),
        "updatedAt": iso(started.unix_timestamp() * 1000),
        "findingPublishingFrequency": "FIFTEEN_MINUTES",
        "serviceRole": format!(
            "arn:aws:iam::{}:role/aws-service-role/macie.amazonaws.com/AWSServiceRoleForAmazonMacie",
            cfg.account_id
        ),
        "status": "ENABLED",
    })
}

fn managed_identifiers() -> Value {
    let items: Vec<Value> = runner::managed_scanner()
        .rules()
        .iter()
        .map(|r| json!({ "id": r.id, "category": macie_category(r.category) }))
        .collect();
    json!({ "items": items })
}

/// Macie's name for a category of sensitive data.
pub(crate) fn macie_category(c: coffer_scan::Category) -> &'static str {
    match c {
        coffer_scan::Category::FinancialInformation => "FINANCIAL_INFORMATION",
        coffer_scan::Category::PersonalInformation => "PERSONAL_INFORMATION",
        coffer_scan::Category::Credentials => "CREDENTIALS",
        coffer_scan::Category::CustomIdentifier => "CUSTOM_IDENTIFIER",
    }
}

/// Macie's timestamps: ISO 8601 with milliseconds, UTC (as S3 writes them).
pub fn iso(ms: i64) -> String {
    crate::s3::iso_ms(ms)
}

pub(crate) fn invalid(m: impl Into<String>) -> MacieError {
    MacieError::Validation(m.into())
}

/// A request member that must be a list of strings (absent or null: empty).
pub(crate) fn string_list(v: Option<&Value>, what: &str) -> MacieResult<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(format!("{what} must be a list of strings.")))
            })
            .collect(),
        Some(_) => Err(invalid(format!("{what} must be a list of strings."))),
    }
}

/// Sets the members every finding carries about where it was made: account, partition, region
/// and schema version.
pub fn stamp_finding(doc: &mut Value, cfg: &coffer_kms::KmsConfig) {
    doc["accountId"] = json!(cfg.account_id);
    doc["partition"] = json!("aws");
    doc["region"] = json!(cfg.region);
    doc["schemaVersion"] = json!("1.0");
}

/// Macie's words and score for a severity.
pub fn severity_words(s: coffer_scan::Severity) -> (&'static str, u8) {
    match s {
        coffer_scan::Severity::Low => ("Low", 1),
        coffer_scan::Severity::Medium => ("Medium", 2),
        coffer_scan::Severity::High => ("High", 3),
    }
}

/// Milliseconds since the epoch of an ISO 8601 timestamp.
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A page token: the offset of the next item.
pub(crate) fn page_start(input: &Value) -> MacieResult<usize> {
    match input.get("nextToken").and_then(Value::as_str) {
        None | Some("") => Ok(0),
        Some(t) => t
            .strip_prefix("o")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| MacieError::Validation("The nextToken is not valid.".into())),
    }
}

/// `maxResults` between 1 and `max`, `default` when absent.
pub(crate) fn max_results(input: &Value, default: usize, max: usize) -> MacieResult<usize> {
    match input.get("maxResults") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=max as u64).contains(&n) => Ok(n as usize),
            _ => Err(MacieError::Validation(format!(
                "maxResults must be between 1 and {max}."
            ))),
        },
    }
}

/// A response of one page of `items` (under `member`) from `start`, with the next page's token.
pub(crate) fn page_response(member: &str, items: Vec<Value>, start: usize, size: usize) -> Value {
    let (items, next) = page(items, start, size);
    let mut out = json!({ member: items });
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    out
}

/// The paging parameters of a request that takes them in the query string, as a body would.
pub(crate) fn paging_from_query(query: &crate::s3::Query) -> Value {
    let mut input = json!({});
    if let Some(n) = query.get("maxResults") {
        input["maxResults"] = json!(n.parse::<u64>().unwrap_or(0));
    }
    if let Some(t) = query.get("nextToken") {
        input["nextToken"] = json!(t);
    }
    input
}

/// One page of `items` from `start`, with the token of the next.
pub(crate) fn page(items: Vec<Value>, start: usize, size: usize) -> (Vec<Value>, Option<String>) {
    let total = items.len();
    let end = start.saturating_add(size).min(total);
    let next = (end < total).then(|| format!("o{end}"));
    let items = items.into_iter().skip(start).take(size).collect();
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::GET, "/jobs/abc"),
            Some((Op::DescribeClassificationJob, Some("abc".into())))
        );
        assert_eq!(
            route(&Method::POST, "/jobs/list"),
            Some((Op::ListClassificationJobs, None))
        );
        assert_eq!(route(&Method::DELETE, "/jobs/abc"), None);
        assert_eq!(
            route(&Method::POST, "/findings"),
            Some((Op::ListFindings, None))
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let ms = 1_790_000_000_123;
        assert_eq!(parse_iso(&iso(ms)), Some(ms));
    }

    #[test]
    fn pages() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let (p, next) = page(items.clone(), 0, 2);
        assert_eq!((p.len(), next.as_deref()), (2, Some("o2")));
        let (p, next) = page(items, 4, 2);
        assert_eq!((p.len(), next), (1, None));
    }
}
