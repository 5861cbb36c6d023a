//! `coffer audit anomalies`: per-principal baselines from the audit log (or CloudTrail files),
//! alerts for the latest window when it departs strongly from them, delivered to a webhook, and
//! optionally remediated by deactivating the principal's access keys through the IAM API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use coffer_scan::anomaly::{self, Alert, Config, Event};
use serde_json::{Value, json};

use crate::operator_cmd::ConnectArgs;

#[derive(Debug, Args)]
pub struct AnomalyArgs {
    /// Read events from these CloudTrail files (`{"Records": […]}`, as `coffer audit export`
    /// writes, or one event per line) instead of DIR/audit.
    #[arg(long = "events", value_name = "FILE")]
    events: Vec<PathBuf>,
    /// The end of the window judged (RFC 3339). [default: now]
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// Minutes in the window judged.
    #[arg(long, value_name = "MINUTES", default_value_t = 60)]
    window_minutes: i64,
    /// Days of history before the window that make each principal's baseline.
    #[arg(long, value_name = "DAYS", default_value_t = 28)]
    baseline_days: i64,
    /// Active hours a principal needs in its baseline before it is judged.
    #[arg(long, value_name = "HOURS", default_value_t = 24)]
    min_active_hours: usize,
    /// How many times its busiest baseline hour a volume must reach to count.
    #[arg(long, value_name = "X", default_value_t = 5.0)]
    factor: f64,
    /// POST each alert as JSON to this URL (http://, or https:// trusting --webhook-ca).
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// CA certificate (PEM) an https webhook's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    webhook_ca: Option<PathBuf>,
    /// Deactivate the access keys an alerted IAM user used in the window (IAM UpdateAccessKey on
    /// the server at --endpoint, signed with the administrator's credentials).
    #[arg(long)]
    remediate: bool,
    /// Exit with status 1 when there is any alert.
    #[arg(long)]
    fail_on_alert: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn read_events(args: &AnomalyArgs, data_dir: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    if args.events.is_empty() {
        let dir = data_dir.join("audit");
        if !dir.is_dir() {
            bail!(
                "no audit log at {} (point --data-dir at the server's data dir, or give --events)",
                dir.display()
            );
        }
        coffer_audit::query::for_each_event(
            &dir,
            &coffer_audit::query::Filter::default(),
            |_, v| {
                out.extend(Event::from_cloudtrail(&v));
                true
            },
        )?;
        return Ok(out);
    }
    for f in &args.events {
        out.extend(read_trail(f)?);
    }
    Ok(out)
}

/// The events of a CloudTrail file: `{"Records": […]}` (as `coffer audit export` and AWS write
/// it), a JSON array, or one event per line.
pub fn read_trail(f: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    let text =
        std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) if o.contains_key("Records") => {
            for r in o["Records"].as_array().into_iter().flatten() {
                out.extend(Event::from_cloudtrail(r));
            }
        }
        Ok(Value::Array(items)) => {
            out.extend(items.iter().filter_map(Event::from_cloudtrail));
        }
        _ => {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let v: Value = serde_json::from_str(line).with_context(|| {
                    format!(
                        "{} line {}: neither a CloudTrail file nor JSON Lines",
                        f.display(),
                        i + 1
                    )
                })?;
                out.extend(Event::from_cloudtrail(&v));
            }
        }
    }
    Ok(out)
}

pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn alert_json(a: &Alert, remediation: &[Value]) -> Value {
    json!({
        "type": "Policy:IAMUser/AnomalousBehavior",
        "principal": a.principal,
        "accessKeys": a.access_keys,
        "severity": a.severity,
        "windowStart": rfc3339(a.window_start),
        "windowEnd": rfc3339(a.window_end),
        "signals": a.signals,
        "remediation": remediation,
    })
}

pub fn run(args: AnomalyArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.connect.data_dir().to_path_buf();
    let events = read_events(&args, &data_dir)?;
    let now = match &args.now {
        Some(t) => anomaly::parse_time(t).with_context(|| {
            format!("--now {t:?} is not an RFC 3339 time (2026-11-23T10:00:00Z)")
        })?,
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    if args.window_minutes <= 0 || args.baseline_days <= 0 {
        bail!("--window-minutes and --baseline-days must be positive");
    }
    let cfg = Config {
        baseline: args.baseline_days * 86_400,
        window: args.window_minutes * 60,
        min_active_hours: args.min_active_hours,
        factor: args.factor,
    };
    let principals = events
        .iter()
        .map(|e| e.principal.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let alerts = anomaly::detect(events.iter().cloned(), now, &cfg);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for a in &alerts {
        let mut remediation = Vec::new();
        if args.remediate {
            remediation = rt.block_on(remediate(&args.connect, a));
        }
        let v = alert_json(a, &remediation);
        if let Some(url) = &args.webhook {
            let delivered = rt.block_on(post_webhook(url, args.webhook_ca.as_deref(), &v));
            if let Err(e) = delivered {
                eprintln!("warning: webhook {url}: {e:#}");
            }
        }
        out.push(v);
    }
    if args.connect.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "eventsRead": events.len(),
                "principals": principals,
                "windowStart": rfc3339(now - cfg.window),
                "windowEnd": rfc3339(now),
                "alerts": out,
            }))?
        );
    } else {
        for (a, v) in alerts.iter().zip(&out) {
            println!(
                "{:<6} {}  keys {}",
                a.severity.as_str(),
                a.principal,
                if a.access_keys.is_empty() {
                    "-".into()
                } else {
                    a.access_keys.join(", ")
                }
            );
            for s in &a.signals {
                println!("         {} {}", if s.strong { "!" } else { "·" }, s.detail);
            }
            for r in v["remediation"].as_array().into_iter().flatten() {
                println!(
                    "         remediation: {}",
                    r["result"].as_str().unwrap_or_default()
                );
            }
        }
        println!(
            "{} event(s), {} principal(s); window {} to {}: {} alert(s)",
            events.len(),
            principals,
            rfc3339(now - cfg.window),
            rfc3339(now),
            alerts.len()
        );
    }
    Ok(if args.fail_on_alert && !alerts.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Deactivates the access keys an IAM user used in the window; the root's keys are left alone
/// (deactivating them would lock the administrator out), and say so.
async fn remediate(connect: &ConnectArgs, a: &Alert) -> Vec<Value> {
    let Some(user) = a
        .principal
        .split_once(":user/")
        .map(|(_, u)| u.rsplit('/').next().unwrap_or(u).to_owned())
    else {
        return vec![json!({
            "action": "none",
            "result": format!("{} is not an IAM user; nothing deactivated", a.principal),
        })];
    };
    let target = match crate::operator_cmd::connect_target(connect, true) {
        Ok(t) => t,
        Err(e) => {
            return vec![
                json!({"action": "none", "result": format!("cannot reach the server: {e:#}")}),
            ];
        }
    };
    let mut out = Vec::new();
    for key in &a.access_keys {
        let result = async {
            let mut sender = crate::client::connect(&target).await?;
            let req = crate::client::iam_request(
                &target,
                &[
                    ("Action", "UpdateAccessKey"),
                    ("UserName", &user),
                    ("AccessKeyId", key),
                    ("Status", "Inactive"),
                ],
            )?;
            let (status, body) = crate::client::call(&mut sender, req).await?;
            if status != 200 {
                bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            anyhow::Ok(())
        }
        .await;
        out.push(match result {
            Ok(()) => json!({
                "action": "UpdateAccessKey",
                "accessKeyId": key,
                "userName": user,
                "result": format!("deactivated access key {key} of {user}"),
            }),
            Err(e) => json!({
                "action": "UpdateAccessKey",
                "accessKeyId": key,
                "userName": user,
                "result": format!("could not deactivate {key}: {e:#}"),
            }),
        });
    }
    out
}

/// POSTs `body` to `url` (http, or https trusting `ca`).
async fn post_webhook(url: &str, ca: Option<&std::path::Path>, body: &Value) -> anyhow::Result<()> {
    crate::webhook::Webhook::new(url, ca)?
        .with_agent("coffer-anomaly-webhook")
        .post(body)
        .await
}
