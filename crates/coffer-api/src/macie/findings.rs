//! Findings in Macie's shape: built from what the scanner reported for one object, stored, and
//! served by ListFindings (criteria, sorting, pages), GetFindings and GetFindingStatistics.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use coffer_meta::{
    DiscoveryMeta, FindingField, FindingQuery, FindingRecord, FindingTerms, FindingTest,
    ObjectRecord, Scalar,
};
use coffer_scan::{Category, Place, Severity};
use serde_json::{Map, Value, json};

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

/// A stored finding as the API serves it (its first creation time and archived state from the
/// row).
fn served(r: &FindingRecord) -> Value {
    let mut v: Value = serde_json::from_str(&r.doc).unwrap_or_default();
    v["createdAt"] = json!(iso(r.created_ms));
    v["updatedAt"] = json!(iso(r.updated_ms));
    v["archived"] = json!(r.archived);
    v
}

/// The finding fields indexed as terms, so that criteria on them are answered by the database.
/// Criteria on any other field are checked on each finding the indexed ones leave.
pub(crate) const INDEXED_FIELDS: &[&str] = &[
    "category",
    "classificationDetails.originType",
    "classificationDetails.result.mimeType",
    "classificationDetails.result.status.code",
    "classificationDetails.result.sensitiveData.category",
    "classificationDetails.result.sensitiveData.detections.type",
    "classificationDetails.result.customDataIdentifiers.detections.arn",
    "classificationDetails.result.customDataIdentifiers.detections.name",
    "resourcesAffected.s3Object.extension",
    "resourcesAffected.s3Object.path",
    "resourcesAffected.s3Object.serverSideEncryption.encryptionType",
    "resourcesAffected.s3Object.serverSideEncryption.kmsMasterKeyId",
    "resourcesAffected.s3Object.tags.key",
    "resourcesAffected.s3Object.tags.value",
];

/// A finding's terms: every value of every indexed field, as criteria compare them.
pub fn terms_of(doc: &Value) -> FindingTerms {
    let mut out = Vec::new();
    for field in INDEXED_FIELDS {
        let mut found = Vec::new();
        values_at(doc, field, &mut found);
        for v in found {
            let t = ((*field).to_owned(), as_text(v));
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// Stores findings: each suppressed (archived) if an archiving findings filter matches it, and
/// indexed. Returns, for each, whether it was suppressed (suppressed findings are not published).
pub async fn store(state: &AppState, records: Vec<FindingRecord>) -> MacieResult<Vec<bool>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let before = super::filters::archive_rules(state).await?;
    let mut rows = Vec::with_capacity(records.len());
    let mut suppressed = Vec::with_capacity(records.len());
    for mut r in records {
        let doc = served(&r);
        r.archived = r.archived || meets_any(&doc, &before)?;
        suppressed.push(r.archived);
        rows.push((r, terms_of(&doc)));
    }
    let meta = state.kms.meta();
    meta.put_findings(&rows).await?;
    // A rule saved while these were being stored archived what was stored before it looked; it
    // is read now, so that these are archived by it too.
    let after = super::filters::archive_rules(state).await?;
    let new: Vec<_> = after.into_iter().filter(|r| !before.contains(r)).collect();
    if !new.is_empty() {
        let mut late = Vec::new();
        for ((r, _), s) in rows.iter().zip(suppressed.iter_mut()) {
            if !*s && meets_any(&served(r), &new)? {
                *s = true;
                late.push(r.id.clone());
            }
        }
        if !late.is_empty() {
            meta.archive_findings(&late).await?;
        }
    }
    Ok(suppressed)
}

/// Whether a finding meets any of these criteria.
fn meets_any(doc: &Value, rules: &[Map<String, Value>]) -> MacieResult<bool> {
    for rule in rules {
        if meets(doc, rule)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Indexes findings an older Coffer stored without terms (a few hundred at a time); how many.
pub async fn index_old_findings(meta: &dyn DiscoveryMeta) -> MacieResult<u64> {
    let mut n = 0;
    loop {
        let rows = meta.unindexed_findings(500).await?;
        if rows.is_empty() {
            return Ok(n);
        }
        let terms: Vec<(String, FindingTerms)> = rows
            .iter()
            .map(|r| (r.id.clone(), terms_of(&served(r))))
            .collect();
        meta.index_findings(&terms).await?;
        n += rows.len() as u64;
    }
}

/// A small deterministic generator (xorshift), so that a failure can be replayed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    pub(crate) fn some<'a>(&mut self, xs: &[&'a str]) -> Vec<&'a str> {
        let n = 1 + self.below(2);
        (0..n).map(|_| self.pick(xs)).collect()
    }
}

/// A made-up finding of the shape the runner and the anomaly task store (one in eight an access
/// alert), from a seed: for tests and `coffer bench findings`.
pub fn synthetic_finding(seed: u64) -> FindingRecord {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let rng = &mut rng;
    for _ in 0..4 {
        rng.next();
    }
    let severity = rng.pick(&["LOW", "MEDIUM", "HIGH"]);
    let words = match severity {
        "LOW" => ("Low", 1),
        "MEDIUM" => ("Medium", 2),
        _ => ("High", 3),
    };
    let created = 1_700_000_000_000 + rng.below(50) as i64 * 1000;
    let updated = created + rng.below(3) as i64 * 1000;
    let id = format!("{:016x}{seed:016x}", rng.next());
    if rng.below(8) == 0 {
        let doc = json!({ "id": id, "category": "POLICY", "type": "Policy:IAMUser/AnomalousBehavior",
            "severity": { "description": words.0, "score": words.1 }, "count": 1 + rng.below(4),
            "resourcesAffected": {}, "accountId": "111122223333" });
        return FindingRecord {
            id,
            bucket: String::new(),
            key: String::new(),
            severity: severity.into(),
            finding_type: "Policy:IAMUser/AnomalousBehavior".into(),
            origin: "ANOMALY".into(),
            created_ms: created,
            updated_ms: updated,
            archived: rng.below(4) == 0,
            doc: doc.to_string(),
        };
    }
    let bucket = rng.pick(&["a", "b", "c"]);
    let key = format!(
        "{}/{}.{}",
        rng.pick(&["x", "y"]),
        rng.below(5),
        rng.pick(&["csv", "txt"])
    );
    let origin = rng.pick(&["AUTOMATED", "j1", "j2", "j3"]);
    let ftype = rng.pick(&[
        "SensitiveData:S3Object/Personal",
        "SensitiveData:S3Object/Multiple",
    ]);
    let detections: Vec<Value> = rng
        .some(&[
            "USA_SOCIAL_SECURITY_NUMBER",
            "EMAIL_ADDRESS",
            "CREDIT_CARD_NUMBER",
        ])
        .iter()
        .map(|t| json!({ "type": t, "count": 1 }))
        .collect();
    let tags: Vec<Value> = (0..rng.below(3))
        .map(|_| json!({ "key": rng.pick(&["team", "env"]), "value": rng.pick(&["red", "prod"]) }))
        .collect();
    let (origin_type, job) = if origin == "AUTOMATED" {
        ("AUTOMATED_SENSITIVE_DATA_DISCOVERY", Value::Null)
    } else {
        ("SENSITIVE_DATA_DISCOVERY_JOB", json!(origin))
    };
    let doc = json!({
        "id": id, "category": "CLASSIFICATION", "type": ftype,
        "severity": { "description": words.0, "score": words.1 }, "count": 1,
        "accountId": "111122223333",
        "classificationDetails": { "jobId": job, "originType": origin_type, "result": {
            "mimeType": "text/plain",
            "sensitiveData": [{ "category": "PERSONAL_INFORMATION", "detections": detections }] } },
        "resourcesAffected": {
            "s3Bucket": { "name": bucket },
            "s3Object": { "key": key, "path": format!("{bucket}/{key}"), "tags": tags } },
    });
    FindingRecord {
        id,
        bucket: bucket.into(),
        key,
        severity: severity.into(),
        finding_type: ftype.into(),
        origin: origin.into(),
        created_ms: created,
        updated_ms: updated,
        archived: rng.below(4) == 0,
        doc: doc.to_string(),
    }
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

const COMPARISONS: [(&str, &[Ordering]); 4] = [
    ("gt", &[Ordering::Greater]),
    ("gte", &[Ordering::Greater, Ordering::Equal]),
    ("lt", &[Ordering::Less]),
    ("lte", &[Ordering::Less, Ordering::Equal]),
];

/// The strings of a condition's list operator (checked by [`check_criteria`]).
fn strings(cond: &Value, k: &str) -> Vec<String> {
    cond.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a finding meets every criterion of a FindingCriteria (checked by [`check_criteria`]).
/// This is what every criterion means; the database answers those it can ([`plan`]) and must
/// agree with it.
fn meets(finding: &Value, criteria: &Map<String, Value>) -> MacieResult<bool> {
    for (field, cond) in criteria {
        let mut found = Vec::new();
        values_at(finding, field, &mut found);
        let texts: Vec<String> = found.iter().map(|v| as_text(v)).collect();
        for k in ["eq", "eqExactMatch"] {
            if cond.get(k).is_some_and(|v| !v.is_null()) {
                let want = strings(cond, k);
                if !texts.iter().any(|t| want.contains(t)) {
                    return Ok(false);
                }
            }
        }
        if cond.get("neq").is_some_and(|v| !v.is_null()) {
            let not = strings(cond, "neq");
            if texts.iter().any(|t| not.contains(t)) {
                return Ok(false);
            }
        }
        for (k, allowed) in COMPARISONS {
            if let Some(bound) = cond.get(k).and_then(Value::as_i64)
                && !found
                    .iter()
                    .filter_map(|v| as_number(v))
                    .any(|n| allowed.contains(&n.cmp(&bound)))
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A FindingCriteria's `criterion` map, checked: each condition an object of Macie's operators,
/// lists of strings for `eq`, `eqExactMatch` and `neq`, whole numbers for the comparisons.
pub(crate) fn check_criteria(input: Option<&Value>) -> MacieResult<Map<String, Value>> {
    let criteria = match input.and_then(|c| c.get("criterion")) {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(MacieError::Validation(
                "findingCriteria.criterion must be an object.".into(),
            ));
        }
    };
    for (field, cond) in &criteria {
        let Some(ops) = cond.as_object() else {
            return Err(MacieError::Validation(format!(
                "The condition for {field} must be an object."
            )));
        };
        for (k, v) in ops {
            match k.as_str() {
                _ if v.is_null() => {}
                "eq" | "eqExactMatch" | "neq" => {
                    if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                        return Err(MacieError::Validation(format!(
                            "{field}.{k} must be a list of strings."
                        )));
                    }
                }
                "gt" | "gte" | "lt" | "lte" => {
                    if v.as_i64().is_none() {
                        return Err(MacieError::Validation(format!(
                            "{field}.{k} must be a number."
                        )));
                    }
                }
                other => {
                    return Err(MacieError::Validation(format!(
                        "{field} has an unknown operator {other}: use eq, eqExactMatch, neq, gt, gte, lt or lte."
                    )));
                }
            }
        }
    }
    Ok(criteria)
}

/// The stored field a finding property maps to, where there is one.
fn column(path: &str) -> Option<FindingField> {
    Some(match path {
        "id" => FindingField::Id,
        "type" => FindingField::FindingType,
        "severity.description" => FindingField::Severity,
        "severity.score" => FindingField::SeverityRank,
        "archived" => FindingField::Archived,
        "classificationDetails.jobId" => FindingField::JobId,
        "resourcesAffected.s3Bucket.name" => FindingField::Bucket,
        "resourcesAffected.s3Object.key" => FindingField::Key,
        "createdAt" => FindingField::CreatedMs,
        "updatedAt" => FindingField::UpdatedMs,
        p if INDEXED_FIELDS.contains(&p) => FindingField::Term(p.to_owned()),
        _ => return None,
    })
}

/// A property's text as the stored field holds it; `None` where no finding can have it.
fn stored_value(field: &FindingField, text: &str) -> Option<Scalar> {
    match field {
        FindingField::Severity => match text {
            "Low" => Some(Scalar::Text("LOW".into())),
            "Medium" => Some(Scalar::Text("MEDIUM".into())),
            "High" => Some(Scalar::Text("HIGH".into())),
            _ => None,
        },
        FindingField::SeverityRank => match text {
            "1" | "2" | "3" => text.parse().ok().map(Scalar::Int),
            _ => None,
        },
        FindingField::Archived => match text {
            "true" => Some(Scalar::Int(1)),
            "false" => Some(Scalar::Int(0)),
            _ => None,
        },
        _ => Some(Scalar::Text(text.to_owned())),
    }
}

/// Criteria split into the tests the database runs and the rest, checked on what it returns.
struct Plan {
    tests: Vec<FindingTest>,
    residual: Map<String, Value>,
}

fn plan(criteria: &Map<String, Value>) -> Plan {
    let mut tests = Vec::new();
    let mut residual = Map::new();
    for (path, cond) in criteria {
        let Some(field) = column(path) else {
            residual.insert(path.clone(), cond.clone());
            continue;
        };
        let timestamp = matches!(field, FindingField::CreatedMs | FindingField::UpdatedMs);
        let numeric = timestamp || field == FindingField::SeverityRank;
        let mut left = Map::new();
        for (op, v) in cond.as_object().into_iter().flatten() {
            if v.is_null() {
                continue;
            }
            match op.as_str() {
                // Timestamps in a list are compared as the text Macie shows.
                "eq" | "eqExactMatch" | "neq" if !timestamp => {
                    let values: Vec<Scalar> = strings(cond, op)
                        .iter()
                        .filter_map(|t| stored_value(&field, t))
                        .collect();
                    tests.push(if op == "neq" {
                        FindingTest::NotIn(field.clone(), values)
                    } else {
                        FindingTest::In(field.clone(), values)
                    });
                }
                op if numeric && COMPARISONS.iter().any(|(k, _)| *k == op) => {
                    let allowed = COMPARISONS
                        .iter()
                        .find(|(k, _)| *k == op)
                        .map(|(_, a)| a.to_vec())
                        .unwrap_or_default();
                    tests.push(FindingTest::Compare(
                        field.clone(),
                        allowed,
                        v.as_i64().unwrap_or_default(),
                    ));
                }
                _ => {
                    left.insert(op.clone(), v.clone());
                }
            }
        }
        if !left.is_empty() {
            residual.insert(path.clone(), Value::Object(left));
        }
    }
    Plan { tests, residual }
}

/// How findings are ordered: by a stored field in the database, or (any other property) here.
enum Order {
    Stored(FindingField, bool),
    Here(String, bool),
}

fn order(sort: Option<&Value>) -> MacieResult<(Order, String)> {
    let Some(c) = sort.filter(|v| !v.is_null()) else {
        return Ok((Order::Stored(FindingField::UpdatedMs, true), String::new()));
    };
    let attr = c
        .get("attributeName")
        .and_then(Value::as_str)
        .unwrap_or("updatedAt")
        .to_owned();
    let desc = match c.get("orderBy").and_then(Value::as_str) {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(o) => {
            return Err(MacieError::Validation(format!(
                "sortCriteria.orderBy must be ASC or DESC, not {o}."
            )));
        }
    };
    let tag = format!("{attr}:{desc}");
    Ok(match column(&attr) {
        Some(f) if f.sortable() => (Order::Stored(f, desc), tag),
        _ => (Order::Here(attr, desc), tag),
    })
}

/// A page token: where the next page starts, and the order it belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    /// The order (`attribute:descending`), so that a token is not used with another.
    s: String,
    /// Keyset: the last finding's sort value (a number or a text) and id.
    v: Option<Value>,
    i: Option<String>,
    /// Offset, for orders kept here.
    o: Option<usize>,
}

fn encode(t: &Token) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode(input: &Value, order_tag: &str) -> MacieResult<Option<Token>> {
    use base64::Engine;
    let Some(t) = input
        .get("nextToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    let bad = || MacieError::Validation("The nextToken is not valid for this request.".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .map_err(|_| bad())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.s != order_tag {
        return Err(bad());
    }
    Ok(Some(token))
}

/// One page of the findings that meet `criteria`, in `order`, after `token`: the page and the
/// next page's token (when there are more).
async fn page(
    meta: &dyn DiscoveryMeta,
    criteria: &Map<String, Value>,
    order: &Order,
    order_tag: &str,
    token: Option<Token>,
    size: usize,
) -> MacieResult<(Vec<Value>, Option<String>)> {
    let plan = plan(criteria);
    match order {
        Order::Stored(field, desc) => {
            let mut after = match token {
                Some(Token {
                    v: Some(v),
                    i: Some(i),
                    ..
                }) => Some((
                    match v {
                        Value::String(t) => Scalar::Text(t),
                        n => Scalar::Int(n.as_i64().unwrap_or_default()),
                    },
                    i,
                )),
                Some(_) => {
                    return Err(MacieError::Validation(
                        "The nextToken is not valid for this request.".into(),
                    ));
                }
                None => None,
            };
            // One more than a page, to know whether another follows; more per read where some
            // criteria are checked here.
            let batch = if plan.residual.is_empty() {
                size + 1
            } else {
                (size + 1).max(256)
            };
            let mut out: Vec<(Scalar, String, Value)> = Vec::new();
            loop {
                let rows = meta
                    .query_findings(&FindingQuery {
                        tests: plan.tests.clone(),
                        order: field.clone(),
                        descending: *desc,
                        after: after.clone(),
                        limit: batch,
                    })
                    .await?;
                let done = rows.len() < batch;
                for (v, r) in rows {
                    after = Some((v.clone(), r.id.clone()));
                    let doc = served(&r);
                    if meets(&doc, &plan.residual)? {
                        out.push((v, r.id, doc));
                        if out.len() > size {
                            break;
                        }
                    }
                }
                if done || out.len() > size {
                    break;
                }
            }
            let next = if out.len() > size {
                out.truncate(size);
                out.last().map(|(v, i, _)| {
                    encode(&Token {
                        s: order_tag.to_owned(),
                        v: Some(match v {
                            Scalar::Int(n) => json!(n),
                            Scalar::Text(t) => json!(t),
                        }),
                        i: Some(i.clone()),
                        o: None,
                    })
                })
            } else {
                None
            };
            Ok((out.into_iter().map(|(_, _, d)| d).collect(), next))
        }
        Order::Here(attr, desc) => {
            let start = match token {
                Some(Token { o: Some(o), .. }) => o,
                Some(_) => {
                    return Err(MacieError::Validation(
                        "The nextToken is not valid for this request.".into(),
                    ));
                }
                None => 0,
            };
            let mut all = every(meta, &plan).await?;
            sort_here(&mut all, attr, *desc);
            let total = all.len();
            let end = start.saturating_add(size).min(total);
            let next = (end < total).then(|| {
                encode(&Token {
                    s: order_tag.to_owned(),
                    v: None,
                    i: None,
                    o: Some(end),
                })
            });
            Ok((all.into_iter().skip(start).take(size).collect(), next))
        }
    }
}

/// Every finding that meets a plan, read from the database a few hundred at a time.
async fn every(meta: &dyn DiscoveryMeta, plan: &Plan) -> MacieResult<Vec<Value>> {
    const BATCH: usize = 500;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let rows = meta
            .query_findings(&FindingQuery {
                tests: plan.tests.clone(),
                order: FindingField::Id,
                descending: false,
                after: after.take(),
                limit: BATCH,
            })
            .await?;
        let done = rows.len() < BATCH;
        for (v, r) in rows {
            after = Some((v, r.id.clone()));
            let doc = served(&r);
            if meets(&doc, &plan.residual)? {
                out.push(doc);
            }
        }
        if done {
            return Ok(out);
        }
    }
}

/// Sorts served findings by a property (its first value: numbers and timestamps as numbers),
/// then id, both in the same direction.
fn sort_here(items: &mut [Value], attr: &str, desc: bool) {
    let key = |v: &Value| {
        let mut found = Vec::new();
        values_at(v, attr, &mut found);
        (
            found.first().map(|x| (as_number(x), as_text(x))),
            v["id"].as_str().unwrap_or_default().to_owned(),
        )
    };
    items.sort_by_cached_key(key);
    if desc {
        items.reverse();
    }
}

/// The ids of every finding that meets `criteria` (for a findings filter to archive them).
pub(crate) async fn ids_meeting(
    meta: &dyn DiscoveryMeta,
    criteria: &Map<String, Value>,
) -> MacieResult<Vec<String>> {
    let all = every(meta, &plan(criteria)).await?;
    Ok(all
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect())
}

pub async fn list(state: &AppState, input: &Value) -> MacieResult<Value> {
    list_in(&**state.kms.meta(), input).await
}

/// ListFindings over a store.
pub async fn list_in(meta: &dyn DiscoveryMeta, input: &Value) -> MacieResult<Value> {
    let size = super::max_results(input, 50, 50)?;
    let criteria = check_criteria(input.get("findingCriteria"))?;
    let (order, tag) = order(input.get("sortCriteria"))?;
    let token = decode(input, &tag)?;
    let (found, next) = page(meta, &criteria, &order, &tag, token, size).await?;
    let ids: Vec<Value> = found.iter().map(|f| f["id"].clone()).collect();
    let mut out = json!({ "findingIds": ids });
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

/// ListFindings' first `page + 1` pages the slow way, for `coffer bench findings` to measure the
/// indexed queries against: every finding read and parsed, every criterion checked here, all
/// of them sorted. Returns the ids of the last of those pages.
pub async fn list_by_reading_all(
    meta: &dyn DiscoveryMeta,
    input: &Value,
    page: usize,
) -> MacieResult<Vec<String>> {
    let size = super::max_results(input, 50, 50)?;
    let criteria = check_criteria(input.get("findingCriteria"))?;
    let mut all = Vec::new();
    for r in meta.findings(None).await? {
        let doc = served(&r);
        if meets(&doc, &criteria)? {
            all.push(doc);
        }
    }
    match input.get("sortCriteria").filter(|v| !v.is_null()) {
        None => sort_here(&mut all, "updatedAt", true),
        Some(s) => sort_here(
            &mut all,
            s["attributeName"].as_str().unwrap_or("updatedAt"),
            s["orderBy"].as_str() == Some("DESC"),
        ),
    }
    Ok(all
        .iter()
        .skip(page * size)
        .take(size)
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect())
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
    if let Some(s) = input.get("sortCriteria").filter(|v| !v.is_null()) {
        let attr = s["attributeName"].as_str().unwrap_or("updatedAt");
        sort_here(&mut findings, attr, s["orderBy"].as_str() == Some("DESC"));
    }
    Ok(json!({ "findings": findings }))
}

/// GetFindingStatistics' groups, as the database holds them, to Macie's group keys.
fn group_field(group_by: &str) -> MacieResult<FindingField> {
    Ok(match group_by {
        "resourcesAffected.s3Bucket.name" => FindingField::Bucket,
        "type" => FindingField::FindingType,
        "classificationDetails.jobId" => FindingField::JobId,
        "severity.description" => FindingField::Severity,
        _ => {
            return Err(MacieError::Validation(
                "groupBy must be resourcesAffected.s3Bucket.name, type, classificationDetails.jobId or severity.description.".into(),
            ));
        }
    })
}

pub async fn statistics(state: &AppState, input: &Value) -> MacieResult<Value> {
    statistics_in(&**state.kms.meta(), input).await
}

/// GetFindingStatistics over a store.
pub async fn statistics_in(meta: &dyn DiscoveryMeta, input: &Value) -> MacieResult<Value> {
    let group_by = input.get("groupBy").and_then(Value::as_str).unwrap_or("");
    let group = group_field(group_by)?;
    let criteria = check_criteria(input.get("findingCriteria"))?;
    let plan = plan(&criteria);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    if plan.residual.is_empty() {
        for (k, n) in meta.count_findings(&plan.tests, &group).await? {
            let key = match k {
                Scalar::Text(t) => match (&group, t.as_str()) {
                    (FindingField::Severity, "LOW") => "Low".to_owned(),
                    (FindingField::Severity, "MEDIUM") => "Medium".to_owned(),
                    (FindingField::Severity, "HIGH") => "High".to_owned(),
                    _ => t,
                },
                Scalar::Int(i) => i.to_string(),
            };
            *counts.entry(key).or_default() += n;
        }
    } else {
        for f in every(meta, &plan).await? {
            let mut v = Vec::new();
            values_at(&f, group_by, &mut v);
            let key = v.first().map(|x| as_text(x)).unwrap_or_default();
            *counts.entry(key).or_default() += 1;
        }
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

    fn random_criteria(rng: &mut Rng) -> Map<String, Value> {
        let mut c = Map::new();
        for _ in 0..1 + rng.below(3) {
            let (field, values): (&str, &[&str]) = match rng.below(14) {
                0 => ("severity.description", &["Low", "Medium", "High", "high"]),
                1 => ("severity.score", &["1", "2", "3", "5"]),
                2 => (
                    "type",
                    &[
                        "SensitiveData:S3Object/Personal",
                        "Policy:IAMUser/AnomalousBehavior",
                    ],
                ),
                3 => ("archived", &["true", "false", "yes"]),
                4 => (
                    "classificationDetails.jobId",
                    &["j1", "j2", "j3", "AUTOMATED"],
                ),
                5 => ("resourcesAffected.s3Bucket.name", &["a", "b", "c", ""]),
                6 => (
                    "resourcesAffected.s3Object.key",
                    &["x/1.csv", "y/2.txt", "x/3.txt"],
                ),
                7 => ("createdAt", &["2023-11-14T22:13:20.000Z", "x"]),
                8 => (
                    "classificationDetails.result.sensitiveData.detections.type",
                    &[
                        "USA_SOCIAL_SECURITY_NUMBER",
                        "EMAIL_ADDRESS",
                        "CREDIT_CARD_NUMBER",
                    ],
                ),
                9 => (
                    "classificationDetails.originType",
                    &[
                        "AUTOMATED_SENSITIVE_DATA_DISCOVERY",
                        "SENSITIVE_DATA_DISCOVERY_JOB",
                    ],
                ),
                10 => ("resourcesAffected.s3Object.tags.key", &["team", "env", "x"]),
                11 => ("count", &["1", "2"]),
                12 => ("accountId", &["111122223333", "0"]),
                _ => ("updatedAt", &["2023-11-14T22:13:21.000Z"]),
            };
            let numeric = matches!(
                field,
                "severity.score" | "createdAt" | "updatedAt" | "count"
            );
            let mut cond = Map::new();
            for _ in 0..1 + rng.below(2) {
                let op = if numeric && rng.below(2) == 0 {
                    rng.pick(&["gt", "gte", "lt", "lte"])
                } else {
                    rng.pick(&["eq", "neq", "eqExactMatch"])
                };
                let v = match op {
                    "gt" | "gte" | "lt" | "lte" => match field {
                        "createdAt" | "updatedAt" => {
                            json!(1_700_000_000_000_i64 + rng.below(52) as i64 * 1000)
                        }
                        _ => json!(rng.below(5)),
                    },
                    _ => json!(rng.some(values)),
                };
                cond.insert(op.into(), v);
            }
            c.insert(field.into(), Value::Object(cond));
        }
        c
    }

    /// Criteria and orders answered by the database (with what is left checked here) give the
    /// pages that checking every finding here gives, on random findings and random criteria.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_finds_what_the_criteria_mean() {
        let store = coffer_meta::SqlStore::in_memory().expect("SQLite");
        let meta: &dyn DiscoveryMeta = &store;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let records: Vec<FindingRecord> = (0..300).map(synthetic_finding).collect();
        let rows: Vec<(FindingRecord, FindingTerms)> = records
            .iter()
            .map(|r| (r.clone(), terms_of(&served(r))))
            .collect();
        meta.put_findings(&rows).await.expect("put");
        let docs: Vec<Value> = records.iter().map(served).collect();
        let sorts = [
            None,
            Some(("updatedAt", "ASC")),
            Some(("createdAt", "DESC")),
            Some(("severity.score", "DESC")),
            Some(("severity.description", "ASC")),
            Some(("type", "ASC")),
            Some(("resourcesAffected.s3Bucket.name", "DESC")),
            Some(("resourcesAffected.s3Object.key", "ASC")),
            Some(("classificationDetails.jobId", "ASC")),
            Some(("count", "DESC")),
            Some(("id", "ASC")),
        ];
        let mut nonempty = 0;
        for round in 0..400 {
            let criteria = random_criteria(&mut rng);
            let sort = sorts[rng.below(sorts.len())]
                .map(|(a, o)| json!({ "attributeName": a, "orderBy": o }));
            let mut want: Vec<Value> = docs
                .iter()
                .filter(|d| meets(d, &criteria).expect("criteria"))
                .cloned()
                .collect();
            match &sort {
                None => sort_here(&mut want, "updatedAt", true),
                Some(s) => sort_here(
                    &mut want,
                    s["attributeName"].as_str().unwrap_or_default(),
                    s["orderBy"] == "DESC",
                ),
            }
            let want: Vec<String> = want
                .iter()
                .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
                .collect();
            let (ord, tag) = order(sort.as_ref()).expect("order");
            let size = 1 + rng.below(40);
            let mut got = Vec::new();
            let mut token = None;
            loop {
                let (page_docs, next) = page(meta, &criteria, &ord, &tag, token.take(), size)
                    .await
                    .expect("page");
                assert!(page_docs.len() <= size);
                got.extend(
                    page_docs
                        .iter()
                        .map(|d| d["id"].as_str().unwrap_or_default().to_owned()),
                );
                let Some(n) = next else { break };
                token = decode(&json!({ "nextToken": n }), &tag).expect("token");
                assert!(
                    !page_docs.is_empty(),
                    "a page with a next token is never empty"
                );
            }
            assert_eq!(
                got, want,
                "round {round}: criteria {criteria:?}, sort {sort:?}"
            );
            nonempty += usize::from(!want.is_empty());
            let ids = ids_meeting(meta, &criteria).await.expect("ids");
            assert_eq!(ids.len(), want.len(), "round {round}");
        }
        assert!(
            nonempty > 150,
            "the criteria should often match something: {nonempty}"
        );
    }

    #[test]
    fn criteria_are_checked() {
        let bad = [
            json!({"criterion": []}),
            json!({"criterion": {"type": "x"}}),
            json!({"criterion": {"type": {"eq": "x"}}}),
            json!({"criterion": {"type": {"eq": [1]}}}),
            json!({"criterion": {"createdAt": {"gt": "soon"}}}),
            json!({"criterion": {"type": {"like": ["x"]}}}),
        ];
        for b in bad {
            assert!(check_criteria(Some(&b)).is_err(), "{b}");
        }
        assert!(
            check_criteria(Some(
                &json!({"criterion": {"type": {"eq": ["x"], "gt": null}}})
            ))
            .is_ok()
        );
    }

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
