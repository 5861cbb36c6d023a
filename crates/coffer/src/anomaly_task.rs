//! Access-anomaly detection inside the server: every interval, per-principal baselines from the
//! audit log (and any CloudTrail history given to seed them) are compared with the latest window;
//! an alert becomes a finding (category POLICY, listed with the others through the Macie API),
//! is published to the findings webhook, and — when remediation is on — the IAM user's access
//! keys used in the window are deactivated, which the audit log records.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coffer_api::AppState;
use coffer_meta::FindingRecord;
use coffer_scan::anomaly::{self, Alert, Config, Event};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How the server watches for anomalies.
#[derive(Debug, Clone)]
pub struct AnomalySettings {
    /// Between runs; zero turns detection off.
    pub interval: Duration,
    pub window_minutes: i64,
    pub baseline_days: i64,
    /// Deactivate the access keys an alerted IAM user used in the window.
    pub remediate: bool,
    /// CloudTrail files read at every run beside the audit log (history from before Coffer).
    pub history: Vec<PathBuf>,
}

/// Starts detection (unless its interval is zero).
pub fn spawn(
    state: Arc<AppState>,
    audit_dir: PathBuf,
    s: AnomalySettings,
) -> Option<JoinHandle<()>> {
    if s.interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        loop {
            if let Err(e) = run_once(&state, &audit_dir, &s).await {
                error!(error = format!("{e:#}"), "access-anomaly detection failed");
            }
            tokio::time::sleep(s.interval).await;
        }
    }))
}

async fn run_once(
    state: &Arc<AppState>,
    audit_dir: &std::path::Path,
    s: &AnomalySettings,
) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cfg = Config {
        baseline: s.baseline_days * 86_400,
        window: s.window_minutes * 60,
        ..Config::default()
    };
    let since = now - cfg.window - cfg.baseline;
    let (dir, history) = (audit_dir.to_path_buf(), s.history.clone());
    let events = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Event>> {
        let mut out = Vec::new();
        for f in &history {
            out.extend(crate::anomaly_cmd::read_trail(f)?);
        }
        if dir.is_dir() {
            let filter = coffer_audit::query::Filter {
                since: Some(crate::anomaly_cmd::rfc3339(since)),
                ..Default::default()
            };
            coffer_audit::query::for_each_event(&dir, &filter, |_, v| {
                out.extend(Event::from_cloudtrail(&v));
                true
            })?;
        }
        Ok(out)
    })
    .await??;
    for alert in anomaly::detect(events, now, &cfg) {
        handle(state, &alert, s).await?;
    }
    Ok(())
}

fn iso(t: i64) -> String {
    coffer_api::macie::iso(t * 1000)
}

/// Records an alert as a finding: a new one, or — while the principal's last alert is recent —
/// the same finding with its count raised.
async fn handle(state: &Arc<AppState>, a: &Alert, s: &AnomalySettings) -> anyhow::Result<()> {
    let meta = state.kms.meta();
    let cfg = state.kms.config();
    let incident_key = format!("anomaly:{}", a.principal);
    let last: Option<Value> = meta
        .discovery_setting(&incident_key)
        .await?
        .and_then(|v| serde_json::from_str(&v).ok());
    let ongoing = last
        .as_ref()
        .and_then(|l| l["lastAlert"].as_i64())
        .is_some_and(|t| a.window_end - t <= 2 * (a.window_end - a.window_start));
    let (id, created, count) = match (&last, ongoing) {
        (Some(l), true) => (
            l["findingId"].as_str().unwrap_or_default().to_owned(),
            l["created"].as_i64().unwrap_or(a.window_end),
            l["count"].as_u64().unwrap_or(1) + 1,
        ),
        _ => {
            let input = format!("ANOMALY\0{}\0{}", a.principal, a.window_end);
            let id = coffer_crypto::digest::hex(&coffer_crypto::digest::sha256(input.as_bytes()))
                [..32]
                .to_owned();
            (id, a.window_end, 1)
        }
    };
    let remediation = if s.remediate && count == 1 {
        remediate(state, a).await
    } else {
        Vec::new()
    };
    let user = coffer_kms::authz::user_name(&a.principal);
    let identity = match user {
        Some(name) => json!({ "type": "IAMUser", "iamUser": {
            "accountId": cfg.account_id, "arn": a.principal, "userName": name,
            "principalId": a.access_keys.first() } }),
        None => {
            json!({ "type": "Root", "root": { "accountId": cfg.account_id, "arn": a.principal } })
        }
    };
    let (words, score) = coffer_api::macie::severity_words(a.severity);
    let details: Vec<&str> = a.signals.iter().map(|s| s.detail.as_str()).collect();
    let mut doc = json!({
        "id": id,
        "category": "POLICY",
        "type": "Policy:IAMUser/AnomalousBehavior",
        "title": format!("Unusual activity by {}", a.principal),
        "description": details.join("; "),
        "severity": { "description": words, "score": score },
        "count": count,
        "archived": false,
        "sample": false,
        "createdAt": iso(created),
        "updatedAt": iso(a.window_end),
        "policyDetails": {
            "action": { "actionType": "AWS_API_CALL", "apiCallDetails": {
                "firstSeen": iso(a.window_start), "lastSeen": iso(a.window_end) } },
            "actor": { "userIdentity": identity },
        },
        "resourcesAffected": {},
        "cofferAlert": a,
        "cofferRemediation": remediation,
    });
    coffer_api::macie::stamp_finding(&mut doc, cfg);
    let suppressed = coffer_api::macie::store_findings(
        state,
        vec![FindingRecord {
            id: id.clone(),
            bucket: String::new(),
            key: String::new(),
            severity: a.severity.as_str().to_owned(),
            finding_type: "Policy:IAMUser/AnomalousBehavior".into(),
            origin: "ANOMALY".into(),
            created_ms: created * 1000,
            updated_ms: a.window_end * 1000,
            archived: false,
            doc: doc.to_string(),
        }],
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot store the alert's finding: {e:?}"))?
    .first()
    .copied()
    .unwrap_or(false);
    meta.put_discovery_setting(
        &incident_key,
        &json!({ "findingId": id, "lastAlert": a.window_end, "created": created, "count": count })
            .to_string(),
    )
    .await?;
    if count == 1 {
        warn!(principal = a.principal, severity = a.severity.as_str(), signals = ?details, suppressed, "access anomaly");
        // A finding an archiving filter suppressed is not published.
        if !suppressed {
            state.discovery.publish(state, &doc);
        }
    }
    Ok(())
}

/// Deactivates the access keys an alerted IAM user used in the window, recording each in the
/// audit log. The account root's keys are left alone: deactivating them would lock the
/// administrator out.
async fn remediate(state: &Arc<AppState>, a: &Alert) -> Vec<Value> {
    if coffer_kms::authz::user_name(&a.principal).is_none() {
        return vec![json!({ "action": "none",
            "result": "not an IAM user; the account root's keys are never deactivated automatically" })];
    }
    let mut out = Vec::new();
    for key in &a.access_keys {
        let owned = state
            .kms
            .meta()
            .access_key(key)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.principal_arn == a.principal);
        let result = if !owned {
            format!("{key} is not an access key of {}", a.principal)
        } else {
            match state.identities.set_status(key, false).await {
                Ok(()) => format!("deactivated access key {key}"),
                Err(e) => format!("could not deactivate {key}: {e}"),
            }
        };
        if let Some(log) = &state.audit {
            let event = coffer_api::audit::operator_event(
                state.kms.config(),
                "UpdateAccessKey",
                "coffer-anomaly-remediation",
                "coffer",
                "coffer-anomaly-remediation",
                json!({ "accessKeyId": key, "status": "Inactive", "principal": a.principal }),
                json!({ "result": result }),
            );
            if let Err(e) = log.record(event).await {
                error!(error = %e, "could not record a remediation in the audit log");
            }
        }
        info!(
            principal = a.principal,
            access_key_id = key,
            result,
            "anomaly remediation"
        );
        out.push(json!({ "action": "UpdateAccessKey", "accessKeyId": key, "result": result }));
    }
    out
}
