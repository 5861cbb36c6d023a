//! Reading events back: filters for `coffer audit query` and the CloudTrail export.

use std::io::{BufRead, Read};
use std::path::Path;

use serde_json::Value;

use crate::record::{MAX_LINE, Record, RecordBody};
use crate::{AuditError, Result, segment_name, segments};

/// Which events to return. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Inclusive bounds on `eventTime` (RFC 3339, UTC, as CloudTrail writes it).
    pub since: Option<String>,
    pub until: Option<String>,
    pub event_name: Option<String>,
    /// A key id or key ARN; matches events whose resources or `requestParameters.keyId` name it.
    pub key: Option<String>,
    /// A principal ARN, matched against `userIdentity.arn`.
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No error.
    Success,
    /// AccessDenied-type errors and failed authentication.
    Denied,
    /// Any error.
    Failure,
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

impl Filter {
    pub fn matches(&self, e: &Value) -> bool {
        let time = text(e, &["eventTime"]).unwrap_or_default();
        if self.since.as_deref().is_some_and(|s| time < s) {
            return false;
        }
        if self.until.as_deref().is_some_and(|u| time > u) {
            return false;
        }
        if let Some(n) = &self.event_name
            && text(e, &["eventName"]) != Some(n.as_str())
        {
            return false;
        }
        if let Some(p) = &self.principal
            && text(e, &["userIdentity", "arn"]) != Some(p.as_str())
        {
            return false;
        }
        if let Some(ip) = &self.source_ip
            && text(e, &["sourceIPAddress"]) != Some(ip.as_str())
        {
            return false;
        }
        if let Some(o) = self.outcome {
            let code = text(e, &["errorCode"]);
            let ok = match o {
                Outcome::Success => code.is_none(),
                Outcome::Failure => code.is_some(),
                Outcome::Denied => code.is_some_and(is_denial),
            };
            if !ok {
                return false;
            }
        }
        if let Some(k) = &self.key {
            let names = |s: &str| s == k || s.ends_with(&format!("/{k}"));
            let in_resources = e
                .get("resources")
                .and_then(Value::as_array)
                .is_some_and(|rs| rs.iter().any(|r| text(r, &["ARN"]).is_some_and(names)));
            let in_params = text(e, &["requestParameters", "keyId"]).is_some_and(names);
            if !in_resources && !in_params {
                return false;
            }
        }
        true
    }
}

/// Error codes that mean "not allowed" rather than "went wrong".
pub fn is_denial(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationTokenException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredTokenException"
    )
}

/// Calls `each(segment, event)` for every event matching `filter`, oldest first. Lines that cannot
/// be read are reported as errors (run `coffer audit verify` to locate tampering).
pub fn for_each_event(
    dir: &Path,
    filter: &Filter,
    mut each: impl FnMut(u64, Value) -> bool,
) -> Result<()> {
    for n in segments(dir)? {
        let path = dir.join(segment_name(n));
        let file = std::fs::File::open(&path).map_err(|e| AuditError::io(&path, e))?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            let read = reader
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| AuditError::io(&path, e))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            if line.last() != Some(&b'\n') {
                // An unfinished last line: a write in progress.
                break;
            }
            line.pop();
            let rec = Record::parse(&line).map_err(|e| {
                AuditError::Invalid(format!(
                    "{} line {line_no}: {e}; run `coffer audit verify`",
                    path.display()
                ))
            })?;
            if let RecordBody::Event(e) = rec.body
                && filter.matches(&e)
                && !each(n, e)
            {
                return Ok(());
            }
        }
    }
    Ok(())
}
