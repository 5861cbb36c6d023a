//! Findings filters: saved finding criteria, and with the action `ARCHIVE`, Macie's suppression
//! rules. An archiving filter archives the findings that already meet its criteria when it is
//! created or changed, and every later finding that meets them as it is stored (suppressed
//! findings are not sent to the webhook). Deleting a filter, or changing it to `NOOP`, leaves
//! what it archived archived, as in Macie.

use serde_json::{Map, Value, json};

use super::custom::{doc, docs_under, new_id, put};
use super::findings::{check_criteria, ids_meeting};
use super::{MacieError, MacieResult, iso, now_ms};
use crate::AppState;

const FILTER: &str = "filter:";
/// Macie's quota of findings filters per account and Region.
const MAX_FILTERS: usize = 1000;
const MAX_TAGS: usize = 50;

fn invalid(m: impl Into<String>) -> MacieError {
    MacieError::Validation(m.into())
}

fn check_name(v: &Value) -> MacieResult<String> {
    match v.as_str() {
        Some(n) if (3..=64).contains(&n.chars().count()) => Ok(n.to_owned()),
        _ => Err(invalid("name must be 3 to 64 characters long.")),
    }
}

fn check_description(v: &Value) -> MacieResult<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(d) if d.chars().count() <= 512 => Ok(d.clone()),
        _ => Err(invalid("description must be at most 512 characters long.")),
    }
}

fn check_action(v: &Value) -> MacieResult<String> {
    match v.as_str() {
        Some(a @ ("ARCHIVE" | "NOOP")) => Ok(a.to_owned()),
        _ => Err(invalid("action must be ARCHIVE or NOOP.")),
    }
}

fn check_position(v: &Value) -> MacieResult<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        v => v
            .as_i64()
            .filter(|p| *p >= 1)
            .map(Some)
            .ok_or_else(|| invalid("position must be a whole number of at least 1.")),
    }
}

fn check_tags(v: &Value) -> MacieResult<Value> {
    match v {
        Value::Null => Ok(json!({})),
        Value::Object(m) => {
            if m.len() > MAX_TAGS {
                return Err(invalid(format!(
                    "A findings filter can have at most {MAX_TAGS} tags."
                )));
            }
            for (k, v) in m {
                let ok = (1..=128).contains(&k.chars().count())
                    && v.as_str().is_some_and(|v| v.chars().count() <= 256);
                if !ok {
                    return Err(invalid(
                        "Tag keys must be 1 to 128 characters and tag values at most 256 characters.",
                    ));
                }
            }
            Ok(v.clone())
        }
        _ => Err(invalid("tags must be a map of strings.")),
    }
}

/// The findingCriteria of a request, required and checked.
fn criteria_of(input: &Value) -> MacieResult<Map<String, Value>> {
    match input.get("findingCriteria") {
        Some(c) if c.is_object() => check_criteria(Some(c)),
        _ => Err(invalid("findingCriteria is required.")),
    }
}

/// Archives the findings that meet an archiving filter's criteria now.
async fn apply(state: &AppState, d: &Value) -> MacieResult<()> {
    if d["action"] != "ARCHIVE" {
        return Ok(());
    }
    let criteria = check_criteria(Some(&d["findingCriteria"]))?;
    let meta = state.kms.meta();
    let ids = ids_meeting(&**meta, &criteria).await?;
    let mut archived = 0;
    for chunk in ids.chunks(500) {
        archived += meta.archive_findings(chunk).await?;
    }
    tracing::info!(
        filter = d["id"].as_str().unwrap_or_default(),
        archived,
        "findings filter archived existing findings"
    );
    Ok(())
}

/// Every findings filter, in the order they apply (position, then creation).
async fn all(state: &AppState) -> MacieResult<Vec<Value>> {
    let mut docs = docs_under(state, FILTER).await?;
    docs.sort_by(|a, b| {
        (a["position"].as_i64(), a["createdAt"].as_str())
            .cmp(&(b["position"].as_i64(), b["createdAt"].as_str()))
    });
    Ok(docs)
}

/// The criteria of every archiving filter, in the order they apply.
pub(crate) async fn archive_rules(state: &AppState) -> MacieResult<Vec<Map<String, Value>>> {
    all(state)
        .await?
        .iter()
        .filter(|d| d["action"] == "ARCHIVE")
        .map(|d| check_criteria(Some(&d["findingCriteria"])))
        .collect()
}

pub async fn create(state: &AppState, input: &Value) -> MacieResult<Value> {
    let name = check_name(&input["name"])?;
    let description = check_description(&input["description"])?;
    let action = check_action(&input["action"])?;
    criteria_of(input)?;
    let position = check_position(&input["position"])?;
    let tags = check_tags(&input["tags"])?;
    let token = input["clientToken"].as_str().unwrap_or_default();
    let existing = all(state).await?;
    if !token.is_empty()
        && let Some(d) = existing.iter().find(|d| d["clientToken"] == token)
    {
        return Ok(json!({ "id": d["id"], "arn": d["arn"] }));
    }
    if existing.len() >= MAX_FILTERS {
        return Err(MacieError::QuotaExceeded(format!(
            "The account already has {MAX_FILTERS} findings filters, the most it can have; delete one first."
        )));
    }
    if existing.iter().any(|d| d["name"] == name) {
        return Err(MacieError::Conflict(format!(
            "A findings filter named {name} already exists."
        )));
    }
    let cfg = state.kms.config();
    let id = new_id();
    let now = iso(now_ms());
    let next_position = existing
        .iter()
        .filter_map(|d| d["position"].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    let d = json!({
        "id": id,
        "arn": format!("arn:aws:macie2:{}:{}:findings-filter/{id}", cfg.region, cfg.account_id),
        "name": name,
        "description": description,
        "action": action,
        "findingCriteria": input["findingCriteria"],
        "position": position.unwrap_or(next_position),
        "tags": tags,
        "createdAt": now,
        "clientToken": token,
    });
    put(state, FILTER, &d).await?;
    apply(state, &d).await?;
    Ok(json!({ "id": id, "arn": d["arn"] }))
}

pub async fn get(state: &AppState, id: &str) -> MacieResult<Value> {
    let d = doc(state, FILTER, id, "findings filter").await?;
    Ok(json!({
        "id": d["id"], "arn": d["arn"], "name": d["name"], "description": d["description"],
        "action": d["action"], "findingCriteria": d["findingCriteria"],
        "position": d["position"], "tags": d["tags"],
    }))
}

pub async fn list(state: &AppState, query: &crate::s3::Query) -> MacieResult<Value> {
    let input = super::paging_from_query(query);
    let size = super::max_results(&input, 25, 25)?;
    let start = super::page_start(&input)?;
    let items = all(state)
        .await?
        .iter()
        .map(|d| {
            json!({ "id": d["id"], "arn": d["arn"], "name": d["name"], "action": d["action"],
                "tags": d["tags"] })
        })
        .collect();
    Ok(super::page_response(
        "findingsFilterListItems",
        items,
        start,
        size,
    ))
}

pub async fn update(state: &AppState, id: &str, input: &Value) -> MacieResult<Value> {
    let mut d = doc(state, FILTER, id, "findings filter").await?;
    if !input["name"].is_null() {
        let name = check_name(&input["name"])?;
        if all(state)
            .await?
            .iter()
            .any(|o| o["name"] == name && o["id"] != id)
        {
            return Err(MacieError::Conflict(format!(
                "A findings filter named {name} already exists."
            )));
        }
        d["name"] = json!(name);
    }
    if !input["description"].is_null() {
        d["description"] = json!(check_description(&input["description"])?);
    }
    if !input["action"].is_null() {
        d["action"] = json!(check_action(&input["action"])?);
    }
    if !input["findingCriteria"].is_null() {
        criteria_of(input)?;
        d["findingCriteria"] = input["findingCriteria"].clone();
    }
    if let Some(p) = check_position(&input["position"])? {
        d["position"] = json!(p);
    }
    put(state, FILTER, &d).await?;
    apply(state, &d).await?;
    Ok(json!({ "id": id, "arn": d["arn"] }))
}

pub async fn delete(state: &AppState, id: &str) -> MacieResult<Value> {
    doc(state, FILTER, id, "findings filter").await?;
    state
        .kms
        .meta()
        .delete_discovery_setting(&format!("{FILTER}{id}"))
        .await?;
    Ok(json!({}))
}
