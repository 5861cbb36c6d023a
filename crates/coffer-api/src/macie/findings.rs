//! Findings in Macie's shape: built from what the scanner reported for one object, stored, and
//! served by ListFindings (criteria, sorting, pages), GetFindings and GetFindingStatistics.

use std::collections::BTreeMap;

use coffer_meta::{FindingRecord, ObjectRecord};
use coffer_scan::{Category, Place, Severity};
use serde_json::{Value, json};

use super::{MacieError, MacieResult, iso, macie_category, parse_iso, severity_words};
use crate::AppState;

/// Where a finding came from.
#[derive(Debug, Clone)]
pub enum Origin {
    Job { id: String, arn: String },
    Automated,
}

impl Origin {
    fn key(&self) -> &str {
        match self {
            Origin::Job { id, .. } => id,
            Origin::Automated => "AUTOMATED",
        }
    }
}

fn finding_type(categories: &[Category]) -> &'static str {
    let mut distinct: Vec<Category> = categories.to_vec();
    distinct.sort_by_key(|c| macie_category(*c));
    distinct.dedup();
    match distinct.as_slice() {
        [Category::FinancialInformation] => "SensitiveData:S3Object/Financial",
        [Category::PersonalInformation] => "SensitiveData:S3Object/Personal",
        [Category::Credentials] => "SensitiveData:S3Object/Credentials",
        [Category::CustomIdentifier] => "SensitiveData:S3Object/CustomIdentifier",
        _ => "SensitiveData:S3Object/Multiple",
    }
}

/// Macie's occurrences of one detection: line ranges, cells, records (with the archive member,
/// where there is one, as Coffer's addition).
fn occurrences(locations: &[coffer_scan::Location]) -> Value {
    let (mut lines, mut cells, mut records) = (Vec::new(), Vec::new(), Vec::new());
    for l in locations {
        let mut v = match &l.place {
            Place::Text {
                line,
                column,
                start,
                end,
            } => json!({ "start": line, "end": line, "startColumn": column,
                "cofferByteRange": [start, end] }),
            Place::Cell {
                row,
                column,
                column_name,
            } => json!({ "row": row, "column": column, "columnName": column_name,
                "cellReference": cell_reference(*row, *column) }),
            Place::Record { record, json_path } => {
                json!({ "recordIndex": record, "jsonPath": json_path })
            }
        };
        if let Some(m) = &l.member {
            v["cofferMember"] = json!(m);
        }
        match l.place {
            Place::Text { .. } => lines.push(v),
            Place::Cell { .. } => cells.push(v),
            Place::Record { .. } => records.push(v),
        }
    }
    let mut o = serde_json::Map::new();
    if !lines.is_empty() {
        o.insert("lineRanges".into(), json!(lines));
    }
    if !cells.is_empty() {
        o.insert("cells".into(), json!(cells));
    }
    if !records.is_empty() {
        o.insert("records".into(), json!(records));
    }
    Value::Object(o)
}

/// A spreadsheet cell name: column 3, row 2 is `C2`.
fn cell_reference(row: usize, column: usize) -> String {
    let mut name = Vec::new();
    let mut c = column;
    while c > 0 {
        c -= 1;
        name.push(b'A' + (c % 26) as u8);
        c /= 26;
    }
    name.reverse();
    format!("{}{row}", String::from_utf8_lossy(&name))
}

/// The finding for one object version, if the scan found anything.
pub fn build(
    state: &AppState,
    origin: &Origin,
    object: &ObjectRecord,
    report: &coffer_scan::Report,
    mime: &str,
    customs: &std::collections::HashMap<String, Value>,
) -> Option<FindingRecord> {
    let cfg = state.kms.config();
    let now = super::now_ms();
    let mut by_category: BTreeMap<&'static str, (Vec<Value>, u64)> = BTreeMap::new();
    let mut severity = Severity::Low;
    let mut categories = Vec::new();
    let mut total = 0;
    let mut custom_detections = Vec::new();
    let mut custom_total = 0;
    for f in &report.findings {
        if f.category == Category::CustomIdentifier {
            // A custom identifier's severity follows its levels; below the lowest threshold
            // its matches make no finding.
            let def = customs.get(&f.identifier);
            let levels = def
                .map(|d| d["severityLevels"].clone())
                .unwrap_or(Value::Null);
            let Some(s) = super::custom::severity_for(&levels, f.count) else {
                continue;
            };
            severity = severity.max(s);
            categories.push(f.category);
            total += f.count;
            custom_total += f.count;
            custom_detections.push(json!({
                "arn": def.map(|d| d["arn"].clone()).unwrap_or(Value::Null),
                "name": f.identifier,
                "count": f.count,
                "occurrences": occurrences(&f.locations),
                "cofferSeverity": s.as_str(),
                "cofferSample": f.sample,
            }));
            continue;
        }
        severity = severity.max(f.severity);
        categories.push(f.category);
        total += f.count;
        let entry = by_category.entry(macie_category(f.category)).or_default();
        entry.0.push(json!({
            "type": f.identifier,
            "count": f.count,
            "occurrences": occurrences(&f.locations),
            "cofferSeverity": f.severity.as_str(),
            "cofferSample": f.sample,
        }));
        entry.1 += f.count;
    }
    if categories.is_empty() {
        return None;
    }
    let sensitive: Vec<Value> = by_category
        .into_iter()
        .map(|(c, (detections, n))| json!({ "category": c, "detections": detections, "totalCount": n }))
        .collect();
    let (sev_word, score) = severity_words(severity);
    let ftype = finding_type(&categories);
    let id_input = format!(
        "{}\0{}\0{}\0{}",
        origin.key(),
        object.bucket,
        object.key,
        object.version_id
    );
    let id = coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(id_input.as_bytes()))[..32]
        .to_owned();
    let (origin_type, job_id, job_arn) = match origin {
        Origin::Job { id, arn } => ("SENSITIVE_DATA_DISCOVERY_JOB", json!(id), json!(arn)),
        Origin::Automated => (
            "AUTOMATED_SENSITIVE_DATA_DISCOVERY",
            Value::Null,
            Value::Null,
        ),
    };
    let encryption = match object.sse.mode.as_str() {
        "" => json!({ "encryptionType": "NONE" }),
        m => {
            let mut e = json!({ "encryptionType": m });
            if m == coffer_store::s3::AWS_KMS
                && let Some(k) = &object.sse.key_id
            {
                e["kmsMasterKeyId"] = json!(k);
            }
            e
        }
    };
    let status = if report.skipped.is_empty() {
        json!({ "code": "COMPLETE" })
    } else {
        json!({
            "code": "PARTIAL",
            "reason": format!("{} member(s) skipped: {}", report.skipped.len(),
                report.skipped.iter().take(3).map(|s| s.reason.as_str()).collect::<Vec<_>>().join("; ")),
        })
    };
    let additional = report
        .findings
        .iter()
        .any(|f| f.count as usize > f.locations.len());
    let tags: serde_json::Map<String, Value> =
        serde_json::from_str(&object.tags).unwrap_or_default();
    let mut doc = json!({
        "id": id,
        "category": "CLASSIFICATION",
        "type": ftype,
        "title": format!("The S3 object contains {}.", match ftype {
            "SensitiveData:S3Object/Financial" => "financial information",
            "SensitiveData:S3Object/Personal" => "personal information",
            "SensitiveData:S3Object/Credentials" => "credentials data",
            "SensitiveData:S3Object/CustomIdentifier" => "sensitive information detected by custom data identifiers",
            _ => "multiple types of sensitive information",
        }),
        "description": format!("The object contains {total} occurrence(s) of sensitive data."),
        "severity": { "description": sev_word, "score": score },
        "count": 1,
        "archived": false,
        "sample": false,
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "classificationDetails": {
            "originType": origin_type,
            "jobId": job_id,
            "jobArn": job_arn,
            "result": {
                "mimeType": mime,
                "sizeClassified": report.bytes_scanned,
                "status": status,
                "sensitiveData": sensitive,
                "customDataIdentifiers": { "detections": custom_detections, "totalCount": custom_total },
                "additionalOccurrences": additional,
            },
        },
        "resourcesAffected": {
            "s3Bucket": {
                "name": object.bucket,
                "arn": format!("arn:aws:s3:::{}", object.bucket),
                "owner": { "id": cfg.account_id },
            },
            "s3Object": {
                "bucketArn": format!("arn:aws:s3:::{}", object.bucket),
                "key": object.key,
                "path": format!("{}/{}", object.bucket, object.key),
                "extension": super::jobs::extension(&object.key),
                "size": object.size,
                "eTag": object.etag.trim_matches('"'),
                "versionId": object.version_id,
                "lastModified": iso(object.last_modified_ms),
                "serverSideEncryption": encryption,
                "storageClass": "STANDARD",
                "publicAccess": false,
                "tags": tags.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
            },
        },
    });
    super::stamp_finding(&mut doc, cfg);
    Some(FindingRecord {
        id,
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        severity: severity.as_str().to_owned(),
        finding_type: ftype.to_owned(),
        origin: origin.key().to_owned(),
        created_ms: now,
        updated_ms: now,
        archived: false,
        doc: doc.to_string(),
    })
}

/// A stored finding as the API serves it (its first creation time from the row).
fn served(r: &FindingRecord) -> Value {
    let mut v: Value = serde_json::from_str(&r.doc).unwrap_or_default();
    v["createdAt"] = json!(iso(r.created_ms));
    v["updatedAt"] = json!(iso(r.updated_ms));
    v
}

/// Every value at a dotted path, arrays flattened on the way.
fn values_at<'a>(v: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    match path.split_once('.') {
        _ if v.is_array() => {
            for x in v.as_array().into_iter().flatten() {
                values_at(x, path, out);
            }
        }
        None => match v.get(path) {
            Some(Value::Array(a)) => out.extend(a.iter()),
            Some(x) if !x.is_null() => out.push(x),
            _ => {}
        },
        Some((head, rest)) => {
            if let Some(x) = v.get(head) {
                values_at(x, rest, out);
            }
        }
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A number to compare: numbers as they are, timestamps in epoch milliseconds.
fn as_number(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str().and_then(parse_iso))
}

/// Whether a finding meets every criterion of a FindingCriteria.
fn meets(finding: &Value, criteria: &serde_json::Map<String, Value>) -> MacieResult<bool> {
    for (field, cond) in criteria {
        let mut found = Vec::new();
        values_at(finding, field, &mut found);
        let texts: Vec<String> = found.iter().map(|v| as_text(v)).collect();
        let strs = |k: &str| -> Vec<String> {
            cond.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        if cond.get("eq").is_some() {
            let want = strs("eq");
            if !texts.iter().any(|t| want.contains(t)) {
                return Ok(false);
            }
        }
        if cond.get("eqExactMatch").is_some() {
            let want = strs("eqExactMatch");
            if !texts.iter().any(|t| want.contains(t)) {
                return Ok(false);
            }
        }
        if cond.get("neq").is_some() {
            let not = strs("neq");
            if texts.iter().any(|t| not.contains(t)) {
                return Ok(false);
            }
        }
        for (k, test) in [
            ("gt", (|a: i64, b: i64| a > b) as fn(i64, i64) -> bool),
            ("gte", |a, b| a >= b),
            ("lt", |a, b| a < b),
            ("lte", |a, b| a <= b),
        ] {
            if let Some(bound) = cond.get(k) {
                let bound = bound.as_i64().ok_or_else(|| {
                    MacieError::Validation(format!("{field}.{k} must be a number."))
                })?;
                if !found
                    .iter()
                    .filter_map(|v| as_number(v))
                    .any(|n| test(n, bound))
                {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// The findings that meet a request's `findingCriteria`, sorted by its `sortCriteria`.
async fn matching(state: &AppState, input: &Value) -> MacieResult<Vec<Value>> {
    let criteria = match input
        .get("findingCriteria")
        .and_then(|c| c.get("criterion"))
    {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(MacieError::Validation(
                "findingCriteria.criterion must be an object.".into(),
            ));
        }
    };
    // A bucket named in the criteria narrows the read.
    let bucket = criteria
        .get("resourcesAffected.s3Bucket.name")
        .and_then(|c| c.get("eq"))
        .and_then(Value::as_array)
        .filter(|a| a.len() == 1)
        .and_then(|a| a[0].as_str())
        .map(str::to_owned);
    let rows = state.kms.meta().findings(bucket.as_deref()).await?;
    let mut out = Vec::new();
    for r in &rows {
        let v = served(r);
        if meets(&v, &criteria)? {
            out.push(v);
        }
    }
    sort(&mut out, input.get("sortCriteria"));
    Ok(out)
}

fn sort(items: &mut [Value], criteria: Option<&Value>) {
    let Some(c) = criteria.filter(|v| !v.is_null()) else {
        return;
    };
    let attr = c
        .get("attributeName")
        .and_then(Value::as_str)
        .unwrap_or("updatedAt")
        .to_owned();
    let desc = c.get("orderBy").and_then(Value::as_str) == Some("DESC");
    items.sort_by(|a, b| {
        let key = |v: &Value| {
            let mut found = Vec::new();
            values_at(v, &attr, &mut found);
            found.first().map(|x| (as_number(x), as_text(x)))
        };
        let o = key(a).cmp(&key(b));
        if desc { o.reverse() } else { o }
    });
}

pub async fn list(state: &AppState, input: &Value) -> MacieResult<Value> {
    let size = super::max_results(input, 50, 50)?;
    let start = super::page_start(input)?;
    let found = matching(state, input).await?;
    let ids: Vec<Value> = found.iter().map(|f| f["id"].clone()).collect();
    let (ids, next) = super::page(ids, start, size);
    let mut out = json!({ "findingIds": ids });
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

pub async fn get(state: &AppState, input: &Value) -> MacieResult<Value> {
    let ids: Vec<String> = input
        .get("findingIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > 50 {
        return Err(MacieError::Validation(
            "findingIds must list 1 to 50 finding ids.".into(),
        ));
    }
    let rows = state.kms.meta().findings_by_id(&ids).await?;
    let mut findings: Vec<Value> = rows.iter().map(served).collect();
    sort(&mut findings, input.get("sortCriteria"));
    Ok(json!({ "findings": findings }))
}

pub async fn statistics(state: &AppState, input: &Value) -> MacieResult<Value> {
    let group_by = input.get("groupBy").and_then(Value::as_str).unwrap_or("");
    if !matches!(
        group_by,
        "resourcesAffected.s3Bucket.name"
            | "type"
            | "classificationDetails.jobId"
            | "severity.description"
    ) {
        return Err(MacieError::Validation(
            "groupBy must be resourcesAffected.s3Bucket.name, type, classificationDetails.jobId or severity.description.".into(),
        ));
    }
    let found = matching(state, input).await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for f in &found {
        let mut v = Vec::new();
        values_at(f, group_by, &mut v);
        let key = v.first().map(|x| as_text(x)).unwrap_or_default();
        *counts.entry(key).or_default() += 1;
    }
    let mut groups: Vec<Value> = counts
        .into_iter()
        .map(|(k, n)| json!({ "groupKey": k, "count": n }))
        .collect();
    if let Some(s) = input.get("sortCriteria").filter(|v| !v.is_null()) {
        let by_count = s.get("attributeName").and_then(Value::as_str) == Some("count");
        let desc = s.get("orderBy").and_then(Value::as_str) == Some("DESC");
        groups.sort_by(|a, b| {
            let o = if by_count {
                a["count"].as_u64().cmp(&b["count"].as_u64())
            } else {
                a["groupKey"].as_str().cmp(&b["groupKey"].as_str())
            };
            if desc { o.reverse() } else { o }
        });
    }
    if let Some(n) = input.get("size").and_then(Value::as_u64) {
        groups.truncate(n as usize);
    }
    Ok(json!({ "countsByGroup": groups }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_over_paths() {
        let f = json!({
            "severity": {"description": "High", "score": 3},
            "createdAt": "2026-11-23T10:00:00.000Z",
            "classificationDetails": {"result": {"sensitiveData": [
                {"category": "PERSONAL_INFORMATION", "detections": [{"type": "USA_SOCIAL_SECURITY_NUMBER"}, {"type": "EMAIL_ADDRESS"}]}
            ]}},
            "archived": false
        });
        let c = |j: Value| j.as_object().cloned().unwrap_or_default();
        assert!(
            meets(
                &f,
                &c(json!({"severity.description": {"eq": ["High", "Medium"]}}))
            )
            .unwrap_or(false)
        );
        assert!(!meets(&f, &c(json!({"severity.description": {"eq": ["Low"]}}))).unwrap_or(true));
        assert!(meets(&f, &c(json!({"classificationDetails.result.sensitiveData.detections.type": {"eq": ["EMAIL_ADDRESS"]}}))).unwrap_or(false));
        assert!(meets(&f, &c(json!({"archived": {"eq": ["false"]}}))).unwrap_or(false));
        assert!(meets(&f, &c(json!({"severity.score": {"gte": 3}}))).unwrap_or(false));
        let t = parse_iso("2026-11-23T00:00:00Z").unwrap_or(0);
        assert!(meets(&f, &c(json!({"createdAt": {"gt": t}}))).unwrap_or(false));
        assert!(!meets(&f, &c(json!({"type": {"eq": ["x"]}}))).unwrap_or(true));
        assert!(meets(&f, &c(json!({"severity.description": {"neq": ["Low"]}}))).unwrap_or(false));
    }

    #[test]
    fn cells_and_types() {
        assert_eq!(cell_reference(2, 3), "C2");
        assert_eq!(cell_reference(10, 28), "AB10");
        assert_eq!(
            finding_type(&[Category::Credentials, Category::Credentials]),
            "SensitiveData:S3Object/Credentials"
        );
        assert_eq!(
            finding_type(&[Category::Credentials, Category::PersonalInformation]),
            "SensitiveData:S3Object/Multiple"
        );
    }
}
