//! `coffer discovery`: the server's sensitive-data discovery from the command line — classification
//! jobs, findings (filtered by bucket, severity, identifier and job), counts, and automated
//! discovery — over the same Macie API (`/_coffer/macie2`) that boto3 and the aws CLI use.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::{self, Target};
use crate::operator_cmd::{ConnectArgs, connect_target};

#[derive(Debug, Subcommand)]
pub enum DiscoveryCommand {
    /// Classification jobs: create, list, show, pause, resume, cancel.
    #[command(subcommand)]
    Job(JobCommand),
    /// List findings, newest first, filtered by bucket, severity, identifier or job.
    Findings(FindingsArgs),
    /// Count findings by severity, bucket, type or job.
    Stats(StatsArgs),
    /// Automated discovery: classify every new object as it is written (buckets can be excluded).
    #[command(subcommand)]
    Automated(AutomatedCommand),
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job over buckets (and prefixes): one-time, or on a schedule.
    Create(CreateArgs),
    /// List jobs, newest first.
    List(ConnectOnly),
    /// Show one job: its definition, status, statistics and last run's counts.
    Show(JobIdArgs),
    /// Pause a running or scheduled job (for up to 30 days).
    Pause(JobIdArgs),
    /// Resume a paused job where it stopped.
    Resume(JobIdArgs),
    /// Cancel a job for good.
    Cancel(JobIdArgs),
}

#[derive(Debug, Args)]
pub struct ConnectOnly {
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// The job id (from `coffer discovery job list`).
    job_id: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The job's name.
    #[arg(long)]
    name: String,
    /// BUCKET or BUCKET/PREFIX to classify (repeatable; one prefix per job).
    #[arg(long = "bucket", value_name = "BUCKET[/PREFIX]", required = true)]
    buckets: Vec<String>,
    /// Run on a schedule instead of once: `daily`, `weekly:<DAY>` (e.g. weekly:monday) or
    /// `monthly:<1-31>`; each run after the first looks only at objects new since the last.
    #[arg(long, value_name = "SCHEDULE")]
    schedule: Option<String>,
    /// With --schedule: classify the existing objects now, too.
    #[arg(long)]
    initial_run: bool,
    /// Classify this percentage of the objects in scope (a stable sample). [default: 100]
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    sampling: Option<u8>,
    /// Use only these managed identifiers (comma-separated ids).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ID",
        conflicts_with = "exclude"
    )]
    only: Vec<String>,
    /// Use every managed identifier but these.
    #[arg(long, value_delimiter = ',', value_name = "ID")]
    exclude: Vec<String>,
    /// Skip objects whose key ends in one of these extensions (comma-separated, e.g. log,tmp).
    #[arg(long, value_delimiter = ',', value_name = "EXT")]
    skip_extension: Vec<String>,
    /// A description.
    #[arg(long)]
    description: Option<String>,
    /// Wait until the (first) run ends, showing progress, and print the job.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SeverityArg {
    Low,
    Medium,
    High,
}

#[derive(Debug, Args)]
pub struct FindingsArgs {
    /// Only findings about objects in this bucket.
    #[arg(long)]
    bucket: Option<String>,
    /// Only findings of this severity or higher.
    #[arg(long, value_enum)]
    severity: Option<SeverityArg>,
    /// Only findings with a detection of this identifier (e.g. CREDIT_CARD_NUMBER).
    #[arg(long, value_name = "ID")]
    identifier: Option<String>,
    /// Only findings of this job.
    #[arg(long, value_name = "JOB_ID")]
    job: Option<String>,
    /// Show at most this many findings.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GroupBy {
    Severity,
    Bucket,
    Type,
    Job,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// What to count findings by.
    #[arg(long, value_enum, default_value = "severity")]
    by: GroupBy,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
pub enum AutomatedCommand {
    /// Turn automated discovery on; it reads new objects with your authority.
    Enable(ConnectOnly),
    /// Turn automated discovery off.
    Disable(ConnectOnly),
    /// Show whether it is on and which buckets it leaves alone.
    Status(ConnectOnly),
    /// Leave these buckets alone.
    Exclude(BucketsArgs),
    /// Stop leaving these buckets alone.
    Include(BucketsArgs),
}

#[derive(Debug, Args)]
pub struct BucketsArgs {
    #[arg(required = true)]
    buckets: Vec<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn run(cmd: DiscoveryCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd))
}

/// One Macie API call; the error names the server's code and message.
async fn call(t: &Target, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let mut sender = client::connect(t).await?;
    let (status, bytes) = client::call(
        &mut sender,
        client::macie_request(t, method, path, body.as_ref())?,
    )
    .await?;
    let v: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{method} {path}: the server's answer is not JSON"))?;
    if status != 200 {
        bail!(
            "{} ({status}): {}",
            v["__type"].as_str().unwrap_or("error"),
            v["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(v)
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run_async(cmd: DiscoveryCommand) -> anyhow::Result<()> {
    match cmd {
        DiscoveryCommand::Job(JobCommand::Create(a)) => create(a).await,
        DiscoveryCommand::Job(JobCommand::List(a)) => {
            let t = connect_target(&a.connect, true)?;
            let v = call(&t, "POST", "/jobs/list", Some(json!({ "maxResults": 200 }))).await?;
            if a.connect.json {
                return print_json(&v["items"]);
            }
            println!(
                "{:<32}  {:<10}  {:<11}  {:<24}  NAME",
                "JOB ID", "TYPE", "STATUS", "CREATED"
            );
            for j in v["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<32}  {:<10}  {:<11}  {:<24}  {}",
                    j["jobId"].as_str().unwrap_or(""),
                    j["jobType"].as_str().unwrap_or(""),
                    j["jobStatus"].as_str().unwrap_or(""),
                    j["createdAt"].as_str().unwrap_or(""),
                    j["name"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        DiscoveryCommand::Job(JobCommand::Show(a)) => {
            let t = connect_target(&a.connect, true)?;
            let v = call(&t, "GET", &format!("/jobs/{}", a.job_id), None).await?;
            if a.connect.json {
                return print_json(&v);
            }
            print_job(&v);
            Ok(())
        }
        DiscoveryCommand::Job(JobCommand::Pause(a)) => set_status(a, "USER_PAUSED").await,
        DiscoveryCommand::Job(JobCommand::Resume(a)) => set_status(a, "RUNNING").await,
        DiscoveryCommand::Job(JobCommand::Cancel(a)) => set_status(a, "CANCELLED").await,
        DiscoveryCommand::Findings(a) => findings(a).await,
        DiscoveryCommand::Stats(a) => {
            let t = connect_target(&a.connect, true)?;
            let group = match a.by {
                GroupBy::Severity => "severity.description",
                GroupBy::Bucket => "resourcesAffected.s3Bucket.name",
                GroupBy::Type => "type",
                GroupBy::Job => "classificationDetails.jobId",
            };
            let v = call(
                &t,
                "POST",
                "/findings/statistics",
                Some(json!({ "groupBy": group,
                    "sortCriteria": { "attributeName": "count", "orderBy": "DESC" } })),
            )
            .await?;
            if a.connect.json {
                return print_json(&v["countsByGroup"]);
            }
            for g in v["countsByGroup"].as_array().into_iter().flatten() {
                println!(
                    "{:>8}  {}",
                    g["count"],
                    g["groupKey"]
                        .as_str()
                        .filter(|k| !k.is_empty())
                        .unwrap_or("(none)")
                );
            }
            Ok(())
        }
        DiscoveryCommand::Automated(c) => automated(c).await,
    }
}

/// `BUCKET/PREFIX` into its parts.
fn split_bucket(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('/') {
        Some((b, p)) if !p.is_empty() => (b, Some(p)),
        Some((b, _)) => (b, None),
        None => (spec, None),
    }
}

fn schedule_of(spec: &str) -> anyhow::Result<Value> {
    let lower = spec.to_ascii_lowercase();
    Ok(match lower.split_once(':') {
        None if lower == "daily" => json!({ "dailySchedule": {} }),
        Some(("weekly", day)) => {
            json!({ "weeklySchedule": { "dayOfWeek": day.to_ascii_uppercase() } })
        }
        Some(("monthly", n)) => json!({ "monthlySchedule": {
            "dayOfMonth": n.parse::<u8>().with_context(|| format!("{n:?} is not a day of the month"))? } }),
        _ => bail!("a schedule is daily, weekly:<day> or monthly:<1-31>, not {spec:?}"),
    })
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    let t = connect_target(&a.connect, true)?;
    let who = call_sts_account(&t).await?;
    let mut buckets = Vec::new();
    let mut prefixes: Vec<&str> = Vec::new();
    for spec in &a.buckets {
        let (b, p) = split_bucket(spec);
        buckets.push(b.to_owned());
        if let Some(p) = p {
            prefixes.push(p);
        }
    }
    prefixes.sort_unstable();
    prefixes.dedup();
    if prefixes.len() > 1 {
        bail!(
            "a job takes one prefix (its scope is the same in every bucket); create one job per prefix"
        );
    }
    let mut includes = Vec::new();
    if let Some(p) = prefixes.first() {
        includes.push(json!({ "simpleScopeTerm": {
            "key": "OBJECT_KEY", "comparator": "STARTS_WITH", "values": [p] } }));
    }
    let mut definition = json!({ "bucketDefinitions": [{ "accountId": who, "buckets": buckets }] });
    let mut scoping = serde_json::Map::new();
    if !includes.is_empty() {
        scoping.insert("includes".into(), json!({ "and": includes }));
    }
    if !a.skip_extension.is_empty() {
        scoping.insert(
            "excludes".into(),
            json!({ "and": [{ "simpleScopeTerm": { "key": "OBJECT_EXTENSION",
                "comparator": "EQ", "values": a.skip_extension } }] }),
        );
    }
    if !scoping.is_empty() {
        definition["scoping"] = Value::Object(scoping);
    }
    let mut body = json!({
        "name": a.name,
        "clientToken": uuid::Uuid::new_v4().to_string(),
        "jobType": if a.schedule.is_some() { "SCHEDULED" } else { "ONE_TIME" },
        "s3JobDefinition": definition,
        "initialRun": a.initial_run,
    });
    if let Some(s) = &a.schedule {
        body["scheduleFrequency"] = schedule_of(s)?;
    }
    if let Some(p) = a.sampling {
        body["samplingPercentage"] = json!(p);
    }
    if !a.only.is_empty() {
        body["managedDataIdentifierSelector"] = json!("INCLUDE");
        body["managedDataIdentifierIds"] = json!(a.only);
    } else if !a.exclude.is_empty() {
        body["managedDataIdentifierSelector"] = json!("EXCLUDE");
        body["managedDataIdentifierIds"] = json!(a.exclude);
    }
    if let Some(d) = &a.description {
        body["description"] = json!(d);
    }
    let created = call(&t, "POST", "/jobs", Some(body)).await?;
    let id = created["jobId"].as_str().unwrap_or_default().to_owned();
    if !a.wait {
        if a.connect.json {
            return print_json(&created);
        }
        println!("created job {id}");
        return Ok(());
    }
    let job = wait(&t, &id).await?;
    if a.connect.json {
        return print_json(&job);
    }
    print_job(&job);
    Ok(())
}

/// The account the caller signs for (STS GetCallerIdentity).
async fn call_sts_account(t: &Target) -> anyhow::Result<String> {
    let mut sender = client::connect(t).await?;
    let (status, body) = client::call(
        &mut sender,
        client::query_request(t, "sts", "2011-06-15", &[("Action", "GetCallerIdentity")])?,
    )
    .await?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        bail!("GetCallerIdentity failed ({status}): {text}");
    }
    text.split("<Account>")
        .nth(1)
        .and_then(|r| r.split("</Account>").next())
        .map(str::to_owned)
        .context("GetCallerIdentity gave no account")
}

/// Polls a job until its run ends, with progress on stderr.
async fn wait(t: &Target, id: &str) -> anyhow::Result<Value> {
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        let job = call(t, "GET", &format!("/jobs/{id}"), None).await?;
        let status = job["jobStatus"].as_str().unwrap_or("").to_owned();
        let total = job["statistics"]["approximateNumberOfObjectsToProcess"]
            .as_f64()
            .unwrap_or(0.0);
        if show {
            eprint!("\r{status:<11} about {total} objects in scope   ");
        }
        if status != "RUNNING" {
            if show {
                eprintln!();
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_job(v: &Value) {
    println!("job        {}", v["jobId"].as_str().unwrap_or(""));
    println!("name       {}", v["name"].as_str().unwrap_or(""));
    println!(
        "type       {}{}",
        v["jobType"].as_str().unwrap_or(""),
        if v["scheduleFrequency"].is_object() {
            format!(" {}", v["scheduleFrequency"])
        } else {
            String::new()
        }
    );
    println!("status     {}", v["jobStatus"].as_str().unwrap_or(""));
    println!("created    {}", v["createdAt"].as_str().unwrap_or(""));
    if let Some(t) = v["lastRunTime"].as_str() {
        println!("last run   {t}");
    }
    println!(
        "runs       {}   objects in scope (last estimate) {}",
        v["statistics"]["numberOfRuns"], v["statistics"]["approximateNumberOfObjectsToProcess"]
    );
    if let Some(r) = v.get("cofferLastRun") {
        println!(
            "last run   {} classified ({} bytes), {} with findings, {} skipped {}",
            r["objectsClassified"],
            r["bytesClassified"],
            r["objectsWithFindings"],
            r["objectsSkipped"],
            if r["skipped"].as_object().is_some_and(|m| !m.is_empty()) {
                r["skipped"].to_string()
            } else {
                String::new()
            }
        );
    }
    if let Some(who) = v["cofferRunAs"].as_str() {
        println!("reads as   {who}");
    }
}

async fn set_status(a: JobIdArgs, status: &str) -> anyhow::Result<()> {
    let t = connect_target(&a.connect, true)?;
    call(
        &t,
        "PATCH",
        &format!("/jobs/{}", a.job_id),
        Some(json!({ "jobStatus": status })),
    )
    .await?;
    let v = call(&t, "GET", &format!("/jobs/{}", a.job_id), None).await?;
    if a.connect.json {
        return print_json(&v);
    }
    println!(
        "job {} is {}",
        a.job_id,
        v["jobStatus"].as_str().unwrap_or("?")
    );
    Ok(())
}

async fn findings(a: FindingsArgs) -> anyhow::Result<()> {
    let t = connect_target(&a.connect, true)?;
    let mut criterion = serde_json::Map::new();
    if let Some(b) = &a.bucket {
        criterion.insert(
            "resourcesAffected.s3Bucket.name".into(),
            json!({ "eq": [b] }),
        );
    }
    if let Some(s) = a.severity {
        let at_least: &[&str] = match s {
            SeverityArg::Low => &["Low", "Medium", "High"],
            SeverityArg::Medium => &["Medium", "High"],
            SeverityArg::High => &["High"],
        };
        criterion.insert("severity.description".into(), json!({ "eq": at_least }));
    }
    if let Some(i) = &a.identifier {
        criterion.insert(
            "classificationDetails.result.sensitiveData.detections.type".into(),
            json!({ "eq": [i] }),
        );
    }
    if let Some(j) = &a.job {
        criterion.insert("classificationDetails.jobId".into(), json!({ "eq": [j] }));
    }
    let mut ids: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    while ids.len() < a.limit {
        let mut req = json!({
            "findingCriteria": { "criterion": criterion },
            "sortCriteria": { "attributeName": "updatedAt", "orderBy": "DESC" },
            "maxResults": 50,
        });
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let page = call(&t, "POST", "/findings", Some(req)).await?;
        ids.extend(page["findingIds"].as_array().cloned().unwrap_or_default());
        token = page["nextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    ids.truncate(a.limit);
    let mut findings = Vec::new();
    for chunk in ids.chunks(50) {
        let got = call(
            &t,
            "POST",
            "/findings/describe",
            Some(json!({ "findingIds": chunk,
                "sortCriteria": { "attributeName": "updatedAt", "orderBy": "DESC" } })),
        )
        .await?;
        findings.extend(got["findings"].as_array().cloned().unwrap_or_default());
    }
    if a.connect.json {
        return print_json(&Value::Array(findings));
    }
    if findings.is_empty() {
        println!("no findings");
        return Ok(());
    }
    for f in &findings {
        let detections: Vec<String> = f["classificationDetails"]["result"]["sensitiveData"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["detections"].as_array().cloned().unwrap_or_default())
            .map(|d| format!("{}×{}", d["type"].as_str().unwrap_or("?"), d["count"]))
            .collect();
        println!(
            "{:<6}  {}  s3://{}  {}",
            f["severity"]["description"].as_str().unwrap_or(""),
            f["updatedAt"].as_str().unwrap_or(""),
            f["resourcesAffected"]["s3Object"]["path"]
                .as_str()
                .unwrap_or(""),
            detections.join(", ")
        );
    }
    println!("{} finding(s)", findings.len());
    Ok(())
}

async fn automated(c: AutomatedCommand) -> anyhow::Result<()> {
    let (connect, action) = match &c {
        AutomatedCommand::Enable(a) => (&a.connect, "enable"),
        AutomatedCommand::Disable(a) => (&a.connect, "disable"),
        AutomatedCommand::Status(a) => (&a.connect, "status"),
        AutomatedCommand::Exclude(a) => (&a.connect, "exclude"),
        AutomatedCommand::Include(a) => (&a.connect, "include"),
    };
    let t = connect_target(connect, true)?;
    let scope =
        call(&t, "GET", "/classification-scopes", None).await?["classificationScopes"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    match (&c, action) {
        (_, "enable" | "disable") => {
            let status = if action == "enable" {
                "ENABLED"
            } else {
                "DISABLED"
            };
            call(
                &t,
                "PUT",
                "/automated-discovery/configuration",
                Some(json!({ "status": status })),
            )
            .await?;
        }
        (AutomatedCommand::Exclude(a) | AutomatedCommand::Include(a), _) => {
            let op = if action == "exclude" { "ADD" } else { "REMOVE" };
            call(
                &t,
                "PATCH",
                &format!("/classification-scopes/{scope}"),
                Some(
                    json!({ "s3": { "excludes": { "bucketNames": a.buckets, "operation": op } } }),
                ),
            )
            .await?;
        }
        _ => {}
    }
    let config = call(&t, "GET", "/automated-discovery/configuration", None).await?;
    let scoped = call(&t, "GET", &format!("/classification-scopes/{scope}"), None).await?;
    let excluded = scoped["s3"]["excludes"]["bucketNames"].clone();
    if connect.json {
        return print_json(
            &json!({ "status": config["status"], "excludedBuckets": excluded,
            "firstEnabledAt": config["firstEnabledAt"], "lastUpdatedAt": config["lastUpdatedAt"] }),
        );
    }
    println!(
        "automated discovery is {}",
        config["status"]
            .as_str()
            .unwrap_or("?")
            .to_ascii_lowercase()
    );
    let names: Vec<&str> = excluded
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if names.is_empty() {
        println!("no bucket is excluded");
    } else {
        println!("excluded buckets: {}", names.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_and_buckets() {
        assert_eq!(
            schedule_of("daily").ok(),
            Some(json!({ "dailySchedule": {} }))
        );
        assert_eq!(
            schedule_of("weekly:Monday").ok(),
            Some(json!({ "weeklySchedule": { "dayOfWeek": "MONDAY" } }))
        );
        assert!(schedule_of("monthly:x").is_err());
        assert!(schedule_of("hourly").is_err());
        assert_eq!(split_bucket("b/hr/"), ("b", Some("hr/")));
        assert_eq!(split_bucket("b/"), ("b", None));
        assert_eq!(split_bucket("b"), ("b", None));
    }
}
