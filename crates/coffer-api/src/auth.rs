//! Authenticating a request: SigV4 against the access keys Coffer holds.

use coffer_crypto::digest::sha256;
use coffer_kms::Principal;
use http::request::Parts;
use time::OffsetDateTime;

use crate::AppState;
use crate::error::ApiError;
use crate::sigv4::{self, AuthError, RequestParts};

/// What a signed request claims: from its `Authorization` header, or from the query of a
/// presigned URL.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    pub auth: sigv4::Authorization<'a>,
    pub amz_date: &'a str,
}

/// A verified request: who signed it, and what signs its chunks when the body is streamed in
/// signed chunks.
#[derive(Debug)]
pub(crate) struct Verified {
    pub principal: Principal,
    pub signing_key: zeroize::Zeroizing<[u8; 32]>,
    pub scope: String,
    pub amz_date: String,
    pub signature: String,
}

/// Reads the claim of an `Authorization` header.
pub(crate) fn header_claim(parts: &Parts) -> Result<Claim<'_>, ApiError> {
    let headers = &parts.headers;
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed("The Authorization header is not valid ASCII.".into()))?;
    let auth = sigv4::parse_authorization(value)?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AuthError::Malformed(
                "Authorization header requires existence of a 'X-Amz-Date' header.".into(),
            )
        })?;
    Ok(Claim { auth, amz_date })
}

/// Verifies the SigV4 signature of a request to `service` and returns who signed it.
pub async fn authenticate(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
    service: &str,
) -> Result<Principal, ApiError> {
    let claim = header_claim(parts)?;
    let payload_hash = coffer_crypto::digest::hex(&sha256(body));
    verify(state, parts, &claim, service, &payload_hash, true, true)
        .await
        .map(|v| v.principal)
}

/// Verifies a claimed signature. `double_encode_path` is false for S3; `check_skew` is false
/// for presigned URLs, whose validity the caller checks against their expiry.
pub(crate) async fn verify(
    state: &AppState,
    parts: &Parts,
    claim: &Claim<'_>,
    service: &str,
    payload_hash: &str,
    double_encode_path: bool,
    check_skew: bool,
) -> Result<Verified, ApiError> {
    let auth = &claim.auth;
    let amz_date = claim.amz_date;
    let headers = &parts.headers;
    let cfg = state.kms.config();
    if auth.service != service {
        return Err(AuthError::WrongScope(format!(
            "Credential should be scoped to correct service: '{service}'."
        ))
        .into());
    }
    // IAM is global and signed for us-east-1; STS takes its global endpoint's region too.
    let global = matches!(service, "iam" | "sts") && auth.region == "us-east-1";
    if auth.region != cfg.region && !global {
        return Err(AuthError::WrongScope(format!(
            "Credential should be scoped to a valid region, not '{}'. This Coffer serves region '{}'.",
            auth.region, cfg.region
        ))
        .into());
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(AuthError::Malformed(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        )
        .into());
    }
    let request_time = sigv4::parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::Malformed(format!(
            "X-Amz-Date '{amz_date}' is not in the ISO 8601 basic form YYYYMMDD'T'HHMMSS'Z'."
        ))
    })?;
    if !amz_date.starts_with(auth.date) {
        return Err(AuthError::WrongScope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
            auth.date,
            &amz_date[..8]
        ))
        .into());
    }
    if check_skew {
        sigv4::check_time(request_time, amz_date, OffsetDateTime::now_utc())?;
    }
    if headers.contains_key("x-amz-security-token") {
        // Coffer issues no temporary credentials yet, so no session token can be valid.
        return Err(AuthError::UnknownAccessKey.into());
    }
    let cred = state
        .identities
        .credential(auth.access_key_id)
        .await?
        .filter(|c| c.active)
        .ok_or(AuthError::UnknownAccessKey)?;

    let request = RequestParts {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query(),
        headers,
        authority: parts.uri.authority().map(|a| a.as_str()),
        payload_hash,
        double_encode_path,
    };
    let canonical = sigv4::canonical_request(&request, &auth.signed_headers)?;
    let scope = sigv4::scope(auth.date, auth.region, auth.service);
    let key = cred.derived_key(&scope, |secret| {
        sigv4::signing_key(secret, auth.date, auth.region, auth.service)
    });
    let expected = sigv4::sign_with_key(&key, &scope, amz_date, &canonical);
    if !coffer_crypto::ct_eq(
        expected.as_bytes(),
        auth.signature.to_ascii_lowercase().as_bytes(),
    ) {
        return Err(AuthError::SignatureMismatch.into());
    }
    Ok(Verified {
        principal: Principal {
            arn: cred.principal_arn.clone(),
            account_id: cfg.account_id.clone(),
            access_key_id: cred.access_key_id.clone(),
        },
        signing_key: key,
        scope,
        amz_date: amz_date.to_owned(),
        signature: expected,
    })
}
