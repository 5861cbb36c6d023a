//! Classification jobs: CreateClassificationJob, DescribeClassificationJob,
//! ListClassificationJobs and UpdateClassificationJob, with Macie's validation; the job's scope
//! (buckets, object criteria, sampling) and schedule, which the runner applies.

use std::sync::Arc;

use coffer_kms::Caller;
use coffer_meta::{JobRecord, ObjectRecord};
use serde_json::{Map, Value, json};

use super::{MacieError, MacieResult, invalid, iso, now_ms, parse_iso, string_list as str_list};
use crate::AppState;

/// How long a job paused by its user stays paused before it is cancelled (Macie: 30 days).
pub const PAUSE_EXPIRY_MS: i64 = 30 * 24 * 3600 * 1000;

const SELECTORS: &[&str] = &["ALL", "EXCLUDE", "INCLUDE", "NONE", "RECOMMENDED"];
const DAYS: &[&str] = &[
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
    "SUNDAY",
];

/// Checks a CreateClassificationJob request and returns the job's document.
async fn new_job(state: &AppState, input: &Value, caller: &Caller) -> MacieResult<Value> {
    let cfg = state.kms.config();
    let name = input.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() || name.chars().count() > 500 {
        return Err(invalid(
            "name is required and must be 1 to 500 characters long.",
        ));
    }
    if let Some(d) = input.get("description").and_then(Value::as_str)
        && d.chars().count() > 200
    {
        return Err(invalid("description must be at most 200 characters long."));
    }
    let job_type = input.get("jobType").and_then(Value::as_str).unwrap_or("");
    let schedule = input.get("scheduleFrequency").filter(|v| !v.is_null());
    match (job_type, schedule) {
        ("ONE_TIME", None) => {}
        ("ONE_TIME", Some(_)) => {
            return Err(invalid(
                "scheduleFrequency can't be specified for a one-time job.",
            ));
        }
        ("SCHEDULED", Some(s)) => check_schedule(s)?,
        ("SCHEDULED", None) => {
            return Err(invalid("A scheduled job requires a scheduleFrequency."));
        }
        _ => return Err(invalid("jobType must be ONE_TIME or SCHEDULED.")),
    }
    let sampling = match input.get("samplingPercentage") {
        None | Some(Value::Null) => 100,
        Some(v) => match v.as_i64() {
            Some(n @ 1..=100) => n,
            _ => return Err(invalid("samplingPercentage must be between 1 and 100.")),
        },
    };
    let def = input
        .get("s3JobDefinition")
        .filter(|v| v.is_object())
        .ok_or_else(|| invalid("s3JobDefinition is required."))?;
    let criteria = def.get("bucketCriteria").filter(|v| !v.is_null());
    let defs = def.get("bucketDefinitions").filter(|v| !v.is_null());
    match (criteria, defs) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "A job's definition can contain a bucketCriteria object or a bucketDefinitions array, not both.",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "s3JobDefinition must specify bucketDefinitions or bucketCriteria.",
            ));
        }
        (Some(c), None) => check_bucket_criteria(c)?,
        (None, Some(defs)) => {
            let defs = defs
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| invalid("bucketDefinitions must list at least one account."))?;
            for d in defs {
                let account = d.get("accountId").and_then(Value::as_str).unwrap_or("");
                if account != cfg.account_id {
                    return Err(invalid(format!(
                        "The account {account:?} in bucketDefinitions is not this account ({}).",
                        cfg.account_id
                    )));
                }
                let buckets = str_list(d.get("buckets"), "buckets")?;
                if buckets.is_empty() {
                    return Err(invalid(
                        "Each bucket definition must name at least one bucket.",
                    ));
                }
                for b in &buckets {
                    if state.objects.bucket(b).await.is_err() {
                        return Err(invalid(format!("The bucket {b} does not exist.")));
                    }
                }
            }
        }
    }
    if let Some(s) = def.get("scoping").filter(|v| !v.is_null()) {
        check_scoping(s)?;
    }
    let selector = input
        .get("managedDataIdentifierSelector")
        .and_then(Value::as_str)
        .unwrap_or("RECOMMENDED");
    one_of("managedDataIdentifierSelector", selector, SELECTORS)?;
    let managed_ids = str_list(
        input.get("managedDataIdentifierIds"),
        "managedDataIdentifierIds",
    )?;
    let known = super::runner::managed_scanner();
    for id in &managed_ids {
        if !known.rules().iter().any(|r| &r.id == id) {
            return Err(invalid(format!(
                "{id} is not a managed data identifier; ListManagedDataIdentifiers lists them."
            )));
        }
    }
    match selector {
        "INCLUDE" | "EXCLUDE" if managed_ids.is_empty() => {
            return Err(invalid(format!(
                "managedDataIdentifierIds is required when managedDataIdentifierSelector is {selector}."
            )));
        }
        "ALL" | "NONE" | "RECOMMENDED" if !managed_ids.is_empty() => {
            return Err(invalid(format!(
                "managedDataIdentifierIds can't be specified when managedDataIdentifierSelector is {selector}."
            )));
        }
        _ => {}
    }
    let custom_ids = str_list(
        input.get("customDataIdentifierIds"),
        "customDataIdentifierIds",
    )?;
    let allow_ids = str_list(input.get("allowListIds"), "allowListIds")?;
    if custom_ids.len() > 30 || allow_ids.len() > 10 {
        return Err(invalid(
            "A job uses at most 30 custom data identifiers and 10 allow lists.",
        ));
    }
    super::custom::check_identifiers(state, &custom_ids).await?;
    super::custom::check_allow_lists(state, &allow_ids).await?;
    if selector == "NONE" && custom_ids.is_empty() {
        return Err(invalid(
            "A job with managedDataIdentifierSelector NONE needs custom data identifiers.",
        ));
    }
    if let Some(tags) = input.get("tags").filter(|v| !v.is_null()) {
        let ok = tags
            .as_object()
            .is_some_and(|m| m.len() <= 50 && m.values().all(Value::is_string));
        if !ok {
            return Err(invalid("tags must be a map of at most 50 string values."));
        }
    }
    let initial_run = input
        .get("initialRun")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let now = now_ms();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let scheduled = job_type == "SCHEDULED";
    let runs_now = !scheduled || initial_run;
    let mut doc = json!({
        "jobId": id,
        "jobArn": format!("arn:aws:macie2:{}:{}:classification-job/{id}", cfg.region, cfg.account_id),
        "name": name,
        "jobType": job_type,
        "jobStatus": if runs_now { "RUNNING" } else { "IDLE" },
        "clientToken": input.get("clientToken").and_then(Value::as_str).unwrap_or_default(),
        "createdAt": iso(now),
        "s3JobDefinition": def,
        "samplingPercentage": sampling,
        "managedDataIdentifierSelector": selector,
        "managedDataIdentifierIds": managed_ids,
        "customDataIdentifierIds": custom_ids,
        "allowListIds": allow_ids,
        "initialRun": initial_run,
        "tags": input.get("tags").filter(|v| !v.is_null()).cloned().unwrap_or_else(|| json!({})),
        "statistics": { "approximateNumberOfObjectsToProcess": 0.0, "numberOfRuns": 0.0 },
        "lastRunErrorStatus": { "code": "NONE" },
        "coffer": {
            "runAs": caller.principal.arn,
            "accessKeyId": caller.principal.access_key_id,
            // A scheduled job without an initial run looks only at objects newer than itself.
            "watermarkMs": if runs_now { Value::Null } else { json!(now) },
            "nextRunMs": if runs_now { Value::Null } else { json!(schedule.map(|s| next_run(s, now)).unwrap_or(now)) },
        },
    });
    if let Some(d) = input.get("description").and_then(Value::as_str) {
        doc["description"] = json!(d);
    }
    if let Some(s) = schedule {
        doc["scheduleFrequency"] = s.clone();
    }
    Ok(doc)
}

fn check_schedule(s: &Value) -> MacieResult<()> {
    let set: Vec<&str> = ["dailySchedule", "weeklySchedule", "monthlySchedule"]
        .into_iter()
        .filter(|k| s.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if set.len() != 1 {
        return Err(invalid(
            "scheduleFrequency must specify exactly one of dailySchedule, weeklySchedule and monthlySchedule.",
        ));
    }
    match set[0] {
        "weeklySchedule" => {
            let day = s["weeklySchedule"]
                .get("dayOfWeek")
                .and_then(Value::as_str)
                .unwrap_or("");
            one_of("weeklySchedule.dayOfWeek", day, DAYS)?;
        }
        "monthlySchedule" => {
            let day = s["monthlySchedule"]
                .get("dayOfMonth")
                .and_then(Value::as_i64);
            if !matches!(day, Some(1..=31)) {
                return Err(invalid(
                    "monthlySchedule.dayOfMonth must be between 1 and 31.",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The next time a schedule runs after `now_ms`: midnight UTC of the next day that fits (the
/// last day of a month shorter than `dayOfMonth`).
pub fn next_run(schedule: &Value, now_ms: i64) -> i64 {
    use time::{Duration, OffsetDateTime};
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut day = now.date();
    for _ in 0..400 {
        day = day.next_day().unwrap_or(day);
        let fits = if let Some(w) = schedule.get("weeklySchedule").filter(|v| !v.is_null()) {
            let want = w
                .get("dayOfWeek")
                .and_then(Value::as_str)
                .unwrap_or("MONDAY");
            day.weekday().to_string().eq_ignore_ascii_case(want)
        } else if let Some(m) = schedule.get("monthlySchedule").filter(|v| !v.is_null()) {
            let want = m.get("dayOfMonth").and_then(Value::as_i64).unwrap_or(1) as u8;
            let last = time::util::days_in_month(day.month(), day.year());
            day.day() == want.min(last)
        } else {
            true
        };
        if fits {
            let t = day.midnight().assume_utc();
            return (t.unix_timestamp_nanos() / 1_000_000) as i64;
        }
    }
    now_ms + Duration::days(1).whole_milliseconds() as i64
}

const SCOPE_KEYS: &[&str] = &[
    "OBJECT_EXTENSION",
    "OBJECT_LAST_MODIFIED_DATE",
    "OBJECT_SIZE",
    "OBJECT_KEY",
];
const COMPARATORS: &[&str] = &[
    "EQ",
    "GT",
    "GTE",
    "LT",
    "LTE",
    "NE",
    "CONTAINS",
    "STARTS_WITH",
];

const BUCKET_KEYS: &[&str] = &[
    "ACCOUNT_ID",
    "S3_BUCKET_NAME",
    "S3_BUCKET_EFFECTIVE_PERMISSION",
    "S3_BUCKET_SHARED_ACCESS",
];

/// `value` is one of `allowed`, or a ValidationException naming them.
fn one_of(what: &str, value: &str, allowed: &[&str]) -> MacieResult<()> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(invalid(format!(
        "{what} must be one of {}.",
        allowed.join(", ")
    )))
}

/// Checks a job's bucketCriteria: includes and excludes, each an `and` list of simple (property)
/// or tag conditions compared with EQ or NE, values exact.
fn check_bucket_criteria(c: &Value) -> MacieResult<()> {
    let mut conditions = 0;
    for side in ["includes", "excludes"] {
        let Some(block) = c.get(side).filter(|v| !v.is_null()) else {
            continue;
        };
        let terms = block.get("and").and_then(Value::as_array).ok_or_else(|| {
            invalid(format!(
                "bucketCriteria.{side} must hold an 'and' list of conditions."
            ))
        })?;
        for t in terms {
            conditions += 1;
            let (cmp, what) = if let Some(simple) =
                t.get("simpleCriterion").filter(|v| !v.is_null())
            {
                let key = simple.get("key").and_then(Value::as_str).unwrap_or("");
                one_of("simpleCriterion.key", key, BUCKET_KEYS)?;
                let values = str_list(simple.get("values"), "values")?;
                if values.is_empty() {
                    return Err(invalid("A simpleCriterion needs at least one value."));
                }
                let allowed: &[&str] = match key {
                    "S3_BUCKET_EFFECTIVE_PERMISSION" => &["PUBLIC", "NOT_PUBLIC", "UNKNOWN"],
                    "S3_BUCKET_SHARED_ACCESS" => &["EXTERNAL", "INTERNAL", "NOT_SHARED", "UNKNOWN"],
                    _ => &[],
                };
                if let Some(v) = values
                    .iter()
                    .find(|v| !allowed.is_empty() && !allowed.contains(&v.as_str()))
                {
                    return Err(invalid(format!(
                        "{v:?} is not a value of {key}; use one of {}.",
                        allowed.join(", ")
                    )));
                }
                (simple.get("comparator"), "simpleCriterion")
            } else if let Some(tag) = t.get("tagCriterion").filter(|v| !v.is_null()) {
                let pairs = tag.get("tagValues").and_then(Value::as_array);
                if pairs.is_none_or(|p| p.is_empty()) {
                    return Err(invalid("A tagCriterion needs tagValues."));
                }
                (tag.get("comparator"), "tagCriterion")
            } else {
                return Err(invalid(
                    "Each bucket condition must be a simpleCriterion or a tagCriterion.",
                ));
            };
            if !matches!(cmp.and_then(Value::as_str).unwrap_or("EQ"), "EQ" | "NE") {
                return Err(invalid(format!("A {what}'s comparator must be EQ or NE.")));
            }
        }
    }
    if conditions == 0 {
        return Err(invalid(
            "bucketCriteria must hold at least one condition in includes or excludes.",
        ));
    }
    Ok(())
}

/// What a job's bucketCriteria look at in a bucket.
#[derive(Debug, Clone)]
pub struct BucketFacts {
    pub name: String,
    pub account: String,
    pub tags: Map<String, Value>,
    /// PUBLIC or NOT_PUBLIC (Macie's BucketPublicAccess.effectivePermission).
    pub effective_permission: &'static str,
    /// EXTERNAL or NOT_SHARED (Macie's BucketMetadata.sharedAccess).
    pub shared_access: &'static str,
}

/// Whether a job's bucketCriteria select a bucket: every `includes` condition holds (no
/// includes: every bucket), and not every `excludes` condition does (excludes win).
pub fn bucket_selected(criteria: &Value, b: &BucketFacts) -> bool {
    let holds = |t: &Value| {
        if let Some(s) = t.get("simpleCriterion").filter(|v| !v.is_null()) {
            let have = match s.get("key").and_then(Value::as_str).unwrap_or("") {
                "ACCOUNT_ID" => b.account.as_str(),
                "S3_BUCKET_NAME" => b.name.as_str(),
                "S3_BUCKET_EFFECTIVE_PERMISSION" => b.effective_permission,
                "S3_BUCKET_SHARED_ACCESS" => b.shared_access,
                _ => return false,
            };
            let any = s
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|v| v.as_str() == Some(have));
            let eq = s.get("comparator").and_then(Value::as_str).unwrap_or("EQ") == "EQ";
            return any == eq;
        }
        if let Some(t) = t.get("tagCriterion").filter(|v| !v.is_null()) {
            // A pair is a key, a value or both; Macie compares them exactly.
            let any = t
                .get("tagValues")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| {
                    let key = p
                        .get("key")
                        .and_then(Value::as_str)
                        .filter(|k| !k.is_empty());
                    let value = p
                        .get("value")
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty());
                    b.tags.iter().any(|(k, v)| {
                        key.is_none_or(|want| want == k)
                            && value.is_none_or(|want| v.as_str() == Some(want))
                            && (key.is_some() || value.is_some())
                    })
                });
            let eq = t.get("comparator").and_then(Value::as_str).unwrap_or("EQ") == "EQ";
            return any == eq;
        }
        false
    };
    let terms = |side: &str| {
        criteria
            .get(side)
            .and_then(|b| b.get("and"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (includes, excludes) = (terms("includes"), terms("excludes"));
    includes.iter().all(holds) && (excludes.is_empty() || !excludes.iter().all(holds))
}

fn check_scoping(s: &Value) -> MacieResult<()> {
    for side in ["includes", "excludes"] {
        let Some(block) = s.get(side).filter(|v| !v.is_null()) else {
            continue;
        };
        let terms = block
            .get("and")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(format!("scoping.{side} must hold an 'and' list of terms.")))?;
        for t in terms {
            if let Some(simple) = t.get("simpleScopeTerm").filter(|v| !v.is_null()) {
                let key = simple.get("key").and_then(Value::as_str).unwrap_or("");
                let cmp = simple
                    .get("comparator")
                    .and_then(Value::as_str)
                    .unwrap_or("EQ");
                one_of("simpleScopeTerm.key", key, SCOPE_KEYS)?;
                one_of("comparator", cmp, COMPARATORS)?;
                let values = str_list(simple.get("values"), "values")?;
                if values.is_empty() {
                    return Err(invalid("A simpleScopeTerm needs at least one value."));
                }
                for v in &values {
                    let ok = match key {
                        "OBJECT_SIZE" => v.parse::<u64>().is_ok(),
                        "OBJECT_LAST_MODIFIED_DATE" => parse_iso(v).is_some(),
                        _ => true,
                    };
                    if !ok {
                        return Err(invalid(format!("{v:?} is not a valid value for {key}.")));
                    }
                }
            } else if let Some(tag) = t.get("tagScopeTerm").filter(|v| !v.is_null()) {
                let cmp = tag
                    .get("comparator")
                    .and_then(Value::as_str)
                    .unwrap_or("EQ");
                if !matches!(cmp, "EQ" | "NE") {
                    return Err(invalid("A tagScopeTerm's comparator must be EQ or NE."));
                }
                let pairs = tag.get("tagValues").and_then(Value::as_array);
                if pairs.is_none_or(|p| p.is_empty()) {
                    return Err(invalid("A tagScopeTerm needs tagValues."));
                }
            } else {
                return Err(invalid(
                    "Each scope term must be a simpleScopeTerm or a tagScopeTerm.",
                ));
            }
        }
    }
    Ok(())
}

fn term_matches(t: &Value, o: &ObjectRecord) -> bool {
    if let Some(s) = t.get("simpleScopeTerm").filter(|v| !v.is_null()) {
        let key = s.get("key").and_then(Value::as_str).unwrap_or("");
        let cmp = s.get("comparator").and_then(Value::as_str).unwrap_or("EQ");
        let values = s
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        let ordered = |have: i64, want: i64| match cmp {
            "EQ" => have == want,
            "NE" => have != want,
            "GT" => have > want,
            "GTE" => have >= want,
            "LT" => have < want,
            "LTE" => have <= want,
            _ => false,
        };
        return match key {
            "OBJECT_SIZE" => values
                .iter()
                .filter_map(|v| v.parse::<i64>().ok())
                .any(|w| ordered(o.size as i64, w)),
            "OBJECT_LAST_MODIFIED_DATE" => values
                .iter()
                .filter_map(|v| parse_iso(v))
                .any(|w| ordered(o.last_modified_ms, w)),
            _ => {
                let have: String = if key == "OBJECT_EXTENSION" {
                    extension(&o.key).to_ascii_lowercase()
                } else {
                    o.key.clone()
                };
                let one = |v: &str| {
                    let v = if key == "OBJECT_EXTENSION" {
                        v.trim_start_matches('.').to_ascii_lowercase()
                    } else {
                        v.to_owned()
                    };
                    match cmp {
                        "EQ" | "NE" => have == v,
                        "CONTAINS" => have.contains(&v),
                        "STARTS_WITH" => have.starts_with(&v),
                        _ => false,
                    }
                };
                if cmp == "NE" {
                    !values.iter().any(|v| one(v))
                } else {
                    values.iter().any(|v| one(v))
                }
            }
        };
    }
    if let Some(t) = t.get("tagScopeTerm").filter(|v| !v.is_null()) {
        let tags: Map<String, Value> = serde_json::from_str(&o.tags).unwrap_or_default();
        let any = t
            .get("tagValues")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| {
                let k = p.get("key").and_then(Value::as_str).unwrap_or("");
                match p.get("value").and_then(Value::as_str) {
                    Some(v) => tags.get(k).and_then(Value::as_str) == Some(v),
                    None => tags.contains_key(k),
                }
            });
        let eq = t.get("comparator").and_then(Value::as_str).unwrap_or("EQ") == "EQ";
        return any == eq;
    }
    false
}

/// The part of a key after its last dot, if the last path segment has one.
pub fn extension(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.rsplit_once('.').map_or("", |(_, e)| e)
}

/// Whether an object is in a job's scope: every `includes` term holds, and not every
/// `excludes` term does.
pub fn in_scope(scoping: Option<&Value>, o: &ObjectRecord) -> bool {
    let Some(s) = scoping.filter(|v| !v.is_null()) else {
        return true;
    };
    let terms = |side: &str| {
        s.get(side)
            .and_then(|b| b.get("and"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let includes = terms("includes");
    if !includes.iter().all(|t| term_matches(t, o)) {
        return false;
    }
    let excludes = terms("excludes");
    excludes.is_empty() || !excludes.iter().all(|t| term_matches(t, o))
}

/// Whether an object falls in a job's sample: a stable choice, from a hash of the job and the
/// object, so a resumed or repeated run picks the same objects.
pub fn sampled(job_id: &str, bucket: &str, key: &str, percentage: i64) -> bool {
    if percentage >= 100 {
        return true;
    }
    let h = coffer_crypto::digest::sha256(format!("{job_id}\0{bucket}\0{key}").as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]));
    (n % 100) < percentage.max(0) as u64
}

fn record_of(doc: &Value) -> JobRecord {
    JobRecord {
        id: doc["jobId"].as_str().unwrap_or_default().to_owned(),
        client_token: doc["clientToken"].as_str().unwrap_or_default().to_owned(),
        created_ms: doc["createdAt"].as_str().and_then(parse_iso).unwrap_or(0),
        status: doc["jobStatus"].as_str().unwrap_or_default().to_owned(),
        doc: doc.to_string(),
    }
}

pub(crate) async fn save(state: &AppState, doc: &Value) -> MacieResult<()> {
    Ok(state.kms.meta().update_job(&record_of(doc)).await?)
}

pub(crate) async fn load(state: &AppState, id: &str) -> MacieResult<Value> {
    let r = state.kms.meta().job(id).await?.ok_or_else(|| {
        MacieError::NotFound(format!("The classification job {id} does not exist."))
    })?;
    serde_json::from_str(&r.doc)
        .map_err(|e| MacieError::Api(crate::ApiError::Internal(format!("job {id}: {e}"))))
}

pub async fn create(state: &Arc<AppState>, input: &Value, caller: &Caller) -> MacieResult<Value> {
    let token = input
        .get("clientToken")
        .and_then(Value::as_str)
        .unwrap_or("");
    if token.is_empty() {
        return Err(invalid("clientToken is required."));
    }
    let meta = state.kms.meta();
    if let Some(existing) = meta.job_by_token(token).await? {
        let doc: Value = serde_json::from_str(&existing.doc).unwrap_or_default();
        return Ok(json!({ "jobId": existing.id, "jobArn": doc["jobArn"] }));
    }
    let doc = new_job(state, input, caller).await?;
    match meta.create_job(&record_of(&doc)).await {
        Ok(()) => {}
        Err(coffer_meta::MetaError::AlreadyExists(_)) => {
            return Err(MacieError::Conflict(
                "Another job was created with this clientToken at the same time.".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    state.discovery.wake();
    Ok(json!({ "jobId": doc["jobId"], "jobArn": doc["jobArn"] }))
}

/// The job as DescribeClassificationJob answers.
pub async fn describe(state: &AppState, id: &str) -> MacieResult<Value> {
    let mut doc = load(state, id).await?;
    if let Some(c) = doc.as_object_mut().and_then(|m| m.remove("coffer")) {
        // What Coffer adds: who the job reads as, and its last run's counts.
        doc["cofferRunAs"] = c["runAs"].clone();
        if let Some(r) = c.get("lastRun") {
            doc["cofferLastRun"] = r.clone();
        }
    }
    Ok(doc)
}

pub async fn list(state: &AppState, input: &Value) -> MacieResult<Value> {
    let size = super::max_results(input, 100, 200)?;
    let start = super::page_start(input)?;
    let records = state.kms.meta().jobs().await?;
    let mut docs: Vec<Value> = records
        .iter()
        .filter_map(|r| serde_json::from_str(&r.doc).ok())
        .collect();
    let criteria = input.get("filterCriteria").filter(|v| !v.is_null());
    let term_holds = |doc: &Value, t: &Value| -> MacieResult<bool> {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let field = match key {
            "jobType" | "jobStatus" | "name" | "createdAt" => key,
            _ => {
                return Err(invalid(
                    "A filter term's key must be jobType, jobStatus, createdAt or name.",
                ));
            }
        };
        let have = doc[field].as_str().unwrap_or_default();
        let values = str_list(t.get("values"), "values")?;
        let cmp = t.get("comparator").and_then(Value::as_str).unwrap_or("EQ");
        Ok(match (field, cmp) {
            ("createdAt", c) => {
                let have = parse_iso(have).unwrap_or(0);
                values.iter().filter_map(|v| parse_iso(v)).any(|w| match c {
                    "GT" => have > w,
                    "GTE" => have >= w,
                    "LT" => have < w,
                    "LTE" => have <= w,
                    "NE" => have != w,
                    _ => have == w,
                })
            }
            (_, "NE") => !values.iter().any(|v| v == have),
            (_, "CONTAINS") => values.iter().any(|v| have.contains(v.as_str())),
            (_, "STARTS_WITH") => values.iter().any(|v| have.starts_with(v.as_str())),
            _ => values.iter().any(|v| v == have),
        })
    };
    if let Some(c) = criteria {
        let mut kept = Vec::new();
        for doc in docs {
            let mut keep = true;
            for t in c
                .get("includes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                keep &= term_holds(&doc, t)?;
            }
            for t in c
                .get("excludes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                keep &= !term_holds(&doc, t)?;
            }
            if keep {
                kept.push(doc);
            }
        }
        docs = kept;
    }
    if let Some(sort) = input.get("sortCriteria").filter(|v| !v.is_null()) {
        let attr = sort
            .get("attributeName")
            .and_then(Value::as_str)
            .unwrap_or("createdAt")
            .to_owned();
        if !matches!(
            attr.as_str(),
            "createdAt" | "jobStatus" | "name" | "jobType"
        ) {
            return Err(invalid(
                "sortCriteria.attributeName must be createdAt, jobStatus, name or jobType.",
            ));
        }
        let desc = sort.get("orderBy").and_then(Value::as_str) == Some("DESC");
        docs.sort_by(|a, b| {
            let o = a[&attr].as_str().cmp(&b[&attr].as_str());
            if desc { o.reverse() } else { o }
        });
    }
    let summaries: Vec<Value> = docs
        .iter()
        .map(|d| {
            let mut s = json!({
                "jobId": d["jobId"],
                "name": d["name"],
                "jobType": d["jobType"],
                "jobStatus": d["jobStatus"],
                "createdAt": d["createdAt"],
                "lastRunErrorStatus": d["lastRunErrorStatus"],
            });
            for key in ["bucketDefinitions", "bucketCriteria"] {
                if let Some(v) = d["s3JobDefinition"].get(key).filter(|v| !v.is_null()) {
                    s[key] = v.clone();
                }
            }
            if let Some(p) = d.get("userPausedDetails") {
                s["userPausedDetails"] = p.clone();
            }
            s
        })
        .collect();
    Ok(super::page_response("items", summaries, start, size))
}

/// UpdateClassificationJob: cancel, pause (USER_PAUSED) or resume (RUNNING) a job.
pub async fn update(state: &AppState, id: &str, input: &Value) -> MacieResult<Value> {
    let want = input.get("jobStatus").and_then(Value::as_str).unwrap_or("");
    let mut doc = load(state, id).await?;
    let status = doc["jobStatus"].as_str().unwrap_or_default().to_owned();
    let refuse = || {
        Err(invalid(format!(
            "A job whose status is {status} can't be changed to {want}."
        )))
    };
    let now = now_ms();
    match want {
        "CANCELLED" => {
            if matches!(status.as_str(), "COMPLETE" | "CANCELLED") {
                return refuse();
            }
            doc["jobStatus"] = json!("CANCELLED");
        }
        "USER_PAUSED" => {
            if !matches!(status.as_str(), "RUNNING" | "IDLE" | "PAUSED") {
                return refuse();
            }
            doc["jobStatus"] = json!("USER_PAUSED");
            doc["coffer"]["pausedFrom"] = json!(status);
            doc["userPausedDetails"] = json!({
                "jobPausedAt": iso(now),
                "jobExpiresAt": iso(now + PAUSE_EXPIRY_MS),
            });
        }
        "RUNNING" => {
            if status != "USER_PAUSED" {
                return refuse();
            }
            let back = doc["coffer"]["pausedFrom"]
                .as_str()
                .unwrap_or("RUNNING")
                .to_owned();
            doc["jobStatus"] = json!(if back == "IDLE" { "IDLE" } else { "RUNNING" });
            if let Some(m) = doc.as_object_mut() {
                m.remove("userPausedDetails");
            }
        }
        _ => {
            return Err(invalid(
                "jobStatus must be CANCELLED, USER_PAUSED or RUNNING.",
            ));
        }
    }
    save(state, &doc).await?;
    state.discovery.wake();
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64, tags: &str) -> ObjectRecord {
        ObjectRecord {
            bucket: "b".into(),
            key: key.into(),
            version_id: "null".into(),
            is_latest: true,
            delete_marker: false,
            size,
            etag: String::new(),
            last_modified_ms: parse_iso("2026-11-01T00:00:00Z").unwrap_or(0),
            blob: None,
            parts: Vec::new(),
            sse: Default::default(),
            attrs: "{}".into(),
            tags: tags.into(),
        }
    }

    #[test]
    fn scoping_terms() {
        let s = json!({
            "includes": {"and": [
                {"simpleScopeTerm": {"key": "OBJECT_KEY", "comparator": "STARTS_WITH", "values": ["hr/"]}},
                {"simpleScopeTerm": {"key": "OBJECT_SIZE", "comparator": "LT", "values": ["1000"]}}
            ]},
            "excludes": {"and": [
                {"simpleScopeTerm": {"key": "OBJECT_EXTENSION", "comparator": "EQ", "values": ["log", "tmp"]}}
            ]}
        });
        check_scoping(&s).expect("valid");
        assert!(in_scope(Some(&s), &obj("hr/people.csv", 10, "{}")));
        assert!(!in_scope(Some(&s), &obj("hr/app.LOG", 10, "{}")));
        assert!(!in_scope(Some(&s), &obj("hr/people.csv", 5000, "{}")));
        assert!(!in_scope(Some(&s), &obj("eng/people.csv", 10, "{}")));
        let tags = json!({"includes": {"and": [{"tagScopeTerm": {"comparator": "NE", "key": "TAG",
            "tagValues": [{"key": "public", "value": "yes"}], "target": "S3_OBJECT"}}]}});
        check_scoping(&tags).expect("valid");
        assert!(in_scope(Some(&tags), &obj("a", 1, "{}")));
        assert!(!in_scope(Some(&tags), &obj("a", 1, r#"{"public":"yes"}"#)));
        let dated = json!({"includes": {"and": [{"simpleScopeTerm": {"key": "OBJECT_LAST_MODIFIED_DATE",
            "comparator": "GT", "values": ["2026-10-01T00:00:00Z"]}}]}});
        assert!(in_scope(Some(&dated), &obj("a", 1, "{}")));
        assert!(check_scoping(&json!({"includes": {"and": [{"simpleScopeTerm": {"key": "OBJECT_SIZE", "values": ["big"]}}]}})).is_err());
        assert!(check_scoping(&json!({"includes": {"and": [{"simpleScopeTerm": {"key": "COLOUR", "values": ["x"]}}]}})).is_err());
    }

    #[test]
    fn sampling_is_stable_and_near_the_percentage() {
        let n = (0..10_000)
            .filter(|i| sampled("job", "b", &format!("k{i}"), 25))
            .count();
        assert!((2_200..2_800).contains(&n), "{n}");
        assert_eq!(sampled("job", "b", "k1", 25), sampled("job", "b", "k1", 25));
        assert!(sampled("job", "b", "k1", 100));
    }

    #[test]
    fn schedules() {
        // Sunday 2026-11-22 10:00 UTC.
        let now = parse_iso("2026-11-22T10:00:00Z").unwrap_or(0);
        let daily = next_run(&json!({"dailySchedule": {}}), now);
        assert_eq!(iso(daily), "2026-11-23T00:00:00.000Z");
        let weekly = next_run(&json!({"weeklySchedule": {"dayOfWeek": "WEDNESDAY"}}), now);
        assert_eq!(iso(weekly), "2026-11-25T00:00:00.000Z");
        let monthly = next_run(&json!({"monthlySchedule": {"dayOfMonth": 31}}), now);
        assert_eq!(iso(monthly), "2026-11-30T00:00:00.000Z");
        assert!(check_schedule(&json!({"weeklySchedule": {"dayOfWeek": "FUNDAY"}})).is_err());
        assert!(
            check_schedule(&json!({"dailySchedule": {}, "monthlySchedule": {"dayOfMonth": 2}}))
                .is_err()
        );
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("a/b.tar.gz"), "gz");
        assert_eq!(extension("a.d/readme"), "");
    }
}
