//! Custom data identifiers (a regex with keywords, ignore words, a match distance and severity by
//! occurrence count) and allow lists (a regex, or a word list in an S3 object), as Macie's API
//! manages them; jobs name them by id.

use std::sync::Arc;

use coffer_kms::Caller;
use coffer_scan::{AllowList, CustomIdentifier, Prefilter, Scanner, Severity};
use serde_json::{Value, json};

use super::{MacieError, MacieResult, invalid, iso, now_ms, string_list as strings};
use crate::AppState;

const CDI: &str = "cdi:";
const ALLOW: &str = "allow:";
/// Macie's limits on a word list: 100,000 entries, 35 MiB.
const MAX_WORDS: usize = 100_000;
const MAX_WORDS_BYTES: u64 = 35 << 20;

/// The severity levels of a custom identifier, checked: up to three, thresholds rising, each
/// severity once. Macie's default is MEDIUM from the first occurrence.
fn severity_levels(v: Option<&Value>) -> MacieResult<Vec<(u64, Severity)>> {
    let Some(levels) = v.filter(|v| !v.is_null()) else {
        return Ok(vec![(1, Severity::Medium)]);
    };
    let levels = levels
        .as_array()
        .filter(|a| (1..=3).contains(&a.len()))
        .ok_or_else(|| invalid("severityLevels must list 1 to 3 levels."))?;
    let mut out = Vec::new();
    for l in levels {
        let n = l["occurrencesThreshold"]
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid("occurrencesThreshold must be a positive number."))?;
        let s = l["severity"]
            .as_str()
            .and_then(Severity::parse)
            .ok_or_else(|| invalid("severity must be LOW, MEDIUM or HIGH."))?;
        out.push((n, s));
    }
    out.sort_by_key(|(n, _)| *n);
    let mut thresholds: Vec<u64> = out.iter().map(|(n, _)| *n).collect();
    thresholds.dedup();
    let mut severities: Vec<Severity> = out.iter().map(|(_, s)| *s).collect();
    severities.sort();
    severities.dedup();
    if thresholds.len() != out.len() || severities.len() != out.len() {
        return Err(invalid(
            "Each severity level needs its own occurrencesThreshold and its own severity.",
        ));
    }
    Ok(out)
}

/// The severity of `count` occurrences under a custom identifier's levels (`None` below the
/// lowest threshold: no finding).
pub fn severity_for(levels: &Value, count: u64) -> Option<Severity> {
    let parsed = severity_levels(Some(levels)).ok()?;
    parsed
        .iter()
        .filter(|(n, _)| *n <= count)
        .map(|(_, s)| *s)
        .max()
}

fn identifier_of(input: &Value, name: &str) -> MacieResult<CustomIdentifier> {
    let c = CustomIdentifier {
        name: name.to_owned(),
        regex: input["regex"].as_str().unwrap_or_default().to_owned(),
        keywords: strings(input.get("keywords"), "keywords")?,
        ignore_words: strings(input.get("ignoreWords"), "ignoreWords")?,
        maximum_match_distance: match input.get("maximumMatchDistance") {
            None | Some(Value::Null) => 50,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| invalid("maximumMatchDistance must be a number."))?
                as usize,
        },
        severity: Severity::Low,
    };
    c.compile().map_err(|e| invalid(format!("{e}.")))?;
    Ok(c)
}

pub(super) async fn docs_under(state: &AppState, prefix: &str) -> MacieResult<Vec<Value>> {
    Ok(state
        .kms
        .meta()
        .discovery_settings_under(prefix)
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_str(&v).ok())
        .collect())
}

pub(super) async fn doc(
    state: &AppState,
    prefix: &str,
    id: &str,
    what: &str,
) -> MacieResult<Value> {
    state
        .kms
        .meta()
        .discovery_setting(&format!("{prefix}{id}"))
        .await?
        .and_then(|v| serde_json::from_str(&v).ok())
        .ok_or_else(|| MacieError::NotFound(format!("The {what} {id} does not exist.")))
}

pub(super) async fn put(state: &AppState, prefix: &str, doc: &Value) -> MacieResult<()> {
    let id = doc["id"].as_str().unwrap_or_default();
    Ok(state
        .kms
        .meta()
        .put_discovery_setting(&format!("{prefix}{id}"), &doc.to_string())
        .await?)
}

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn check_name_and_description(input: &Value) -> MacieResult<String> {
    let name = input["name"].as_str().unwrap_or_default();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(invalid(
            "name is required and must be 1 to 128 characters long.",
        ));
    }
    if input["description"]
        .as_str()
        .is_some_and(|d| d.chars().count() > 512)
    {
        return Err(invalid("description must be at most 512 characters long."));
    }
    Ok(name.to_owned())
}

// ---- custom data identifiers ----------------------------------------------------------------

pub async fn create_identifier(state: &AppState, input: &Value) -> MacieResult<Value> {
    let name = check_name_and_description(input)?;
    let token = input["clientToken"].as_str().unwrap_or_default();
    let existing = docs_under(state, CDI).await?;
    if !token.is_empty()
        && let Some(d) = existing.iter().find(|d| d["clientToken"] == token)
    {
        return Ok(json!({ "customDataIdentifierId": d["id"] }));
    }
    if existing
        .iter()
        .any(|d| d["name"] == name.as_str() && d["deleted"] != true)
    {
        return Err(MacieError::Conflict(format!(
            "A custom data identifier named {name} already exists."
        )));
    }
    let c = identifier_of(input, &name)?;
    let levels = severity_levels(input.get("severityLevels"))?;
    let cfg = state.kms.config();
    let id = new_id();
    let doc = json!({
        "id": id,
        "arn": format!("arn:aws:macie2:{}:{}:custom-data-identifier/{id}", cfg.region, cfg.account_id),
        "name": name,
        "description": input["description"].as_str().unwrap_or_default(),
        "regex": c.regex,
        "keywords": c.keywords,
        "ignoreWords": c.ignore_words,
        "maximumMatchDistance": c.maximum_match_distance,
        "severityLevels": levels.iter().map(|(n, s)| json!({ "occurrencesThreshold": n, "severity": s.as_str() })).collect::<Vec<_>>(),
        "tags": input.get("tags").filter(|t| t.is_object()).cloned().unwrap_or_else(|| json!({})),
        "createdAt": iso(now_ms()),
        "deleted": false,
        "clientToken": token,
    });
    put(state, CDI, &doc).await?;
    Ok(json!({ "customDataIdentifierId": id }))
}

pub async fn get_identifier(state: &AppState, id: &str) -> MacieResult<Value> {
    let mut d = doc(state, CDI, id, "custom data identifier").await?;
    if let Some(m) = d.as_object_mut() {
        m.remove("clientToken");
    }
    Ok(d)
}

pub async fn list_identifiers(state: &AppState, input: &Value) -> MacieResult<Value> {
    let size = super::max_results(input, 100, 500)?;
    let start = super::page_start(input)?;
    let mut docs = docs_under(state, CDI).await?;
    docs.retain(|d| d["deleted"] != true);
    docs.sort_by(|a, b| a["createdAt"].as_str().cmp(&b["createdAt"].as_str()));
    let items = docs
        .iter()
        .map(|d| {
            json!({ "arn": d["arn"], "createdAt": d["createdAt"], "description": d["description"],
            "id": d["id"], "name": d["name"] })
        })
        .collect();
    Ok(super::page_response("items", items, start, size))
}

pub async fn batch_get_identifiers(state: &AppState, input: &Value) -> MacieResult<Value> {
    let ids = strings(input.get("ids"), "ids")?;
    if ids.len() > 50 {
        return Err(invalid("ids lists at most 50 custom data identifiers."));
    }
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for id in ids {
        match doc(state, CDI, &id, "custom data identifier").await {
            Ok(d) => found.push(json!({ "arn": d["arn"], "createdAt": d["createdAt"],
                "deleted": d["deleted"], "description": d["description"], "id": d["id"], "name": d["name"] })),
            Err(MacieError::NotFound(_)) => missing.push(id),
            Err(e) => return Err(e),
        }
    }
    Ok(json!({ "customDataIdentifiers": found, "notFoundIdentifierIds": missing }))
}

/// Deleting is soft, as in Macie: jobs that use the identifier keep using it.
pub async fn delete_identifier(state: &AppState, id: &str) -> MacieResult<Value> {
    let mut d = doc(state, CDI, id, "custom data identifier").await?;
    if d["deleted"] == true {
        return Err(MacieError::NotFound(format!(
            "The custom data identifier {id} does not exist."
        )));
    }
    d["deleted"] = json!(true);
    put(state, CDI, &d).await?;
    Ok(json!({}))
}

/// TestCustomDataIdentifier: how many matches the identifier finds in a sample.
pub fn test_identifier(input: &Value) -> MacieResult<Value> {
    let sample = input["sampleText"].as_str().unwrap_or_default();
    if sample.is_empty() || sample.len() > 1000 {
        return Err(invalid("sampleText must be 1 to 1,000 characters long."));
    }
    let c = identifier_of(input, "test")?;
    // A sample of at most 1,000 characters: the automaton, not a Vectorscan database, is built.
    let scanner = Scanner::builder()
        .prefilter(Prefilter::Rust)
        .only(Vec::new())
        .custom(c)
        .build()
        .map_err(|e| invalid(format!("{e}.")))?;
    Ok(json!({ "matchCount": scanner.scan(sample, None).len() }))
}

/// The identifiers a job names, as the scanner takes them (deleted ones included, as Macie
/// keeps using them), with each one's ARN and severity levels by name.
pub async fn for_job(
    state: &AppState,
    ids: &[String],
) -> MacieResult<Vec<(CustomIdentifier, Value)>> {
    let mut out = Vec::new();
    for id in ids {
        let d = doc(state, CDI, id, "custom data identifier").await?;
        let c = identifier_of(&d, d["name"].as_str().unwrap_or_default())?;
        out.push((c, d));
    }
    Ok(out)
}

/// Checks that every id names a custom data identifier that is not deleted.
pub async fn check_identifiers(state: &AppState, ids: &[String]) -> MacieResult<()> {
    for id in ids {
        if doc(state, CDI, id, "custom data identifier").await?["deleted"] == true {
            return Err(MacieError::NotFound(format!(
                "The custom data identifier {id} does not exist."
            )));
        }
    }
    Ok(())
}

// ---- allow lists ----------------------------------------------------------------------------

fn check_criteria(c: &Value) -> MacieResult<()> {
    match (
        c.get("regex").filter(|v| !v.is_null()),
        c.get("s3WordsList").filter(|v| !v.is_null()),
    ) {
        (Some(r), None) => {
            let r = r.as_str().unwrap_or_default();
            if r.is_empty() || r.len() > 512 {
                return Err(invalid("criteria.regex must be 1 to 512 characters long."));
            }
            AllowList::default()
                .add_regex(r)
                .map_err(|e| invalid(format!("criteria.regex is not a valid regex: {e}.")))
        }
        (None, Some(w)) => {
            if w["bucketName"].as_str().is_none_or(str::is_empty)
                || w["objectKey"].as_str().is_none_or(str::is_empty)
            {
                return Err(invalid(
                    "criteria.s3WordsList needs a bucketName and an objectKey.",
                ));
            }
            Ok(())
        }
        _ => Err(invalid(
            "criteria must specify either a regex or an s3WordsList, not both.",
        )),
    }
}

pub async fn create_allow_list(
    state: &AppState,
    input: &Value,
    caller: &Caller,
) -> MacieResult<Value> {
    let name = check_name_and_description(input)?;
    let token = input["clientToken"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(invalid("clientToken is required."));
    }
    let existing = docs_under(state, ALLOW).await?;
    if let Some(d) = existing.iter().find(|d| d["clientToken"] == token) {
        return Ok(json!({ "id": d["id"], "arn": d["arn"] }));
    }
    let criteria = input.get("criteria").cloned().unwrap_or(Value::Null);
    check_criteria(&criteria)?;
    let cfg = state.kms.config();
    let id = new_id();
    let now = iso(now_ms());
    let doc = json!({
        "id": id,
        "arn": format!("arn:aws:macie2:{}:{}:allow-list/{id}", cfg.region, cfg.account_id),
        "name": name,
        "description": input["description"].as_str().unwrap_or_default(),
        "criteria": criteria,
        "tags": input.get("tags").filter(|t| t.is_object()).cloned().unwrap_or_else(|| json!({})),
        "createdAt": now,
        "updatedAt": now,
        "clientToken": token,
        "runAs": caller.principal.arn,
        "accessKeyId": caller.principal.access_key_id,
    });
    put(state, ALLOW, &doc).await?;
    Ok(json!({ "id": id, "arn": doc["arn"] }))
}

pub async fn get_allow_list(state: &Arc<AppState>, id: &str) -> MacieResult<Value> {
    let d = doc(state, ALLOW, id, "allow list").await?;
    // The status says whether the list can be used now: a word list is read as its creator.
    let status = match load_list(state, &d).await {
        Ok(_) => json!({ "code": "OK" }),
        Err((code, why)) => json!({ "code": code, "description": why }),
    };
    Ok(json!({
        "id": d["id"], "arn": d["arn"], "name": d["name"], "description": d["description"],
        "criteria": d["criteria"], "tags": d["tags"], "createdAt": d["createdAt"],
        "updatedAt": d["updatedAt"], "status": status,
    }))
}

pub async fn list_allow_lists(state: &AppState, query: &crate::s3::Query) -> MacieResult<Value> {
    let input = super::paging_from_query(query);
    let size = super::max_results(&input, 100, 1000)?;
    let start = super::page_start(&input)?;
    let mut docs = docs_under(state, ALLOW).await?;
    docs.sort_by(|a, b| a["createdAt"].as_str().cmp(&b["createdAt"].as_str()));
    let items = docs
        .iter()
        .map(|d| {
            json!({ "arn": d["arn"], "createdAt": d["createdAt"], "description": d["description"],
            "id": d["id"], "name": d["name"], "updatedAt": d["updatedAt"] })
        })
        .collect();
    Ok(super::page_response("allowLists", items, start, size))
}

pub async fn update_allow_list(state: &AppState, id: &str, input: &Value) -> MacieResult<Value> {
    let mut d = doc(state, ALLOW, id, "allow list").await?;
    let name = check_name_and_description(input)?;
    let criteria = input.get("criteria").cloned().unwrap_or(Value::Null);
    check_criteria(&criteria)?;
    d["name"] = json!(name);
    d["criteria"] = criteria;
    if let Some(desc) = input["description"].as_str() {
        d["description"] = json!(desc);
    }
    d["updatedAt"] = json!(iso(now_ms()));
    put(state, ALLOW, &d).await?;
    Ok(json!({ "id": id, "arn": d["arn"] }))
}

/// Refused while a job that is not complete or cancelled uses the list, unless
/// `ignoreJobChecks=true`.
pub async fn delete_allow_list(
    state: &AppState,
    id: &str,
    query: &crate::s3::Query,
) -> MacieResult<Value> {
    doc(state, ALLOW, id, "allow list").await?;
    if query.get("ignoreJobChecks") != Some("true") {
        for j in state.kms.meta().jobs().await? {
            let Ok(job) = serde_json::from_str::<Value>(&j.doc) else {
                continue;
            };
            let uses = job["allowListIds"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == id));
            if uses && !matches!(j.status.as_str(), "COMPLETE" | "CANCELLED") {
                return Err(invalid(format!(
                    "The allow list is used by the job {}; cancel the job or set ignoreJobChecks.",
                    j.id
                )));
            }
        }
    }
    state
        .kms
        .meta()
        .delete_discovery_setting(&format!("{ALLOW}{id}"))
        .await?;
    Ok(json!({}))
}

/// What an allow list lets through: a regex, or the words of an S3 object read as the list's
/// creator. The error is the status code and why.
async fn load_list(state: &Arc<AppState>, d: &Value) -> Result<AllowList, (&'static str, String)> {
    let mut list = AllowList::default();
    let c = &d["criteria"];
    if let Some(r) = c["regex"].as_str() {
        list.add_regex(r).map_err(|e| ("UNKNOWN_ERROR", e))?;
        return Ok(list);
    }
    let bucket = c["s3WordsList"]["bucketName"].as_str().unwrap_or_default();
    let key = c["s3WordsList"]["objectKey"].as_str().unwrap_or_default();
    let agent = format!(
        "{}{} allow-list",
        coffer_scan::anomaly::DISCOVERY_AGENT,
        env!("CARGO_PKG_VERSION")
    );
    let caller = super::runner::caller_for(
        state,
        d["runAs"].as_str().unwrap_or_default(),
        d["accessKeyId"].as_str().unwrap_or_default(),
        &agent,
    )
    .await
    .map_err(|why| ("S3_USER_ACCESS_DENIED", why))?;
    let bytes = super::runner::read_object(state, &caller, &agent, bucket, key, MAX_WORDS_BYTES)
        .await
        .map_err(|(code, why)| {
            let status = match code {
                "OBJECT_NOT_FOUND" => "S3_OBJECT_NOT_FOUND",
                "ACCESS_DENIED" => "S3_USER_ACCESS_DENIED",
                "UNABLE_TO_DECRYPT" => "S3_OBJECT_ACCESS_DENIED",
                "OBJECT_EXCEEDS_SIZE_QUOTA" => "S3_OBJECT_OVERSIZE",
                _ => "UNKNOWN_ERROR",
            };
            (status, why)
        })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut n = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        n += 1;
        if n > MAX_WORDS {
            return Err((
                "S3_OBJECT_OVERSIZE",
                format!("the list has more than {MAX_WORDS} entries"),
            ));
        }
        list.add_exact(line);
    }
    if n == 0 {
        return Err((
            "S3_OBJECT_EMPTY",
            format!("s3://{bucket}/{key} holds no words"),
        ));
    }
    Ok(list)
}

/// The allow lists a job names, merged; lists that cannot be used now are left out and
/// reported.
pub async fn allow_for_job(
    state: &Arc<AppState>,
    ids: &[String],
) -> MacieResult<(AllowList, Vec<String>)> {
    let mut merged = AllowList::default();
    let mut problems = Vec::new();
    for id in ids {
        let d = match doc(state, ALLOW, id, "allow list").await {
            Ok(d) => d,
            Err(MacieError::NotFound(m)) => {
                problems.push(m);
                continue;
            }
            Err(e) => return Err(e),
        };
        match load_list(state, &d).await {
            Ok(l) => merged.extend(l),
            Err((code, why)) => problems.push(format!("allow list {id}: {code}: {why}")),
        }
    }
    Ok((merged, problems))
}

/// Checks that every id names an allow list.
pub async fn check_allow_lists(state: &AppState, ids: &[String]) -> MacieResult<()> {
    for id in ids {
        doc(state, ALLOW, id, "allow list").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_by_count() {
        let levels = json!([{"occurrencesThreshold": 1, "severity": "LOW"},
                            {"occurrencesThreshold": 10, "severity": "HIGH"}]);
        assert_eq!(severity_for(&levels, 1), Some(Severity::Low));
        assert_eq!(severity_for(&levels, 25), Some(Severity::High));
        let from_five = json!([{"occurrencesThreshold": 5, "severity": "MEDIUM"}]);
        assert_eq!(severity_for(&from_five, 4), None);
        assert!(
            severity_levels(Some(
                &json!([{"occurrencesThreshold": 1, "severity": "LOW"},
            {"occurrencesThreshold": 1, "severity": "HIGH"}])
            ))
            .is_err()
        );
        assert!(severity_levels(Some(&json!([]))).is_err());
    }

    #[test]
    fn testing_an_identifier() {
        let n = test_identifier(
            &json!({"regex": "EMP-[0-9]{6}", "sampleText": "EMP-123456 and EMP-654321, EMP-12"}),
        );
        assert_eq!(n.ok(), Some(json!({"matchCount": 2})));
        let kw = test_identifier(&json!({"regex": "[0-9]{6}", "keywords": ["employee"],
            "maximumMatchDistance": 10, "sampleText": "employee 123456; order 654321"}));
        assert_eq!(kw.ok(), Some(json!({"matchCount": 1})));
        assert!(test_identifier(&json!({"regex": "(", "sampleText": "x"})).is_err());
    }
}
