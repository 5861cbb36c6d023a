//! `coffer scan PATH… | s3://bucket/prefix`: finds sensitive data with the managed identifiers of
//! `coffer-scan` (and custom ones), in local files and in a Coffer server's buckets, on every
//! core, and reports where: a table, `--json`, or SARIF. Never the values.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use coffer_scan::{
    AllowList, Category, CustomIdentifier, Finding, Limits, Location, Place, Scanner, Severity,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::operator_cmd::ConnectArgs;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files and directories (searched recursively) to scan, and s3://BUCKET[/PREFIX] locations
    /// on the Coffer server given by --endpoint.
    #[arg(value_name = "PATH", required_unless_present = "list_identifiers")]
    paths: Vec<String>,
    /// Exit with status 1 when any finding is at least this severe (low, medium, high).
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    fail_on: Option<Severity>,
    /// Print the findings as SARIF 2.1.0 (for code-scanning tools) instead of a table.
    #[arg(long, conflicts_with = "json")]
    sarif: bool,
    /// Custom identifiers: a JSON file holding one object or an array of them, each as Macie's
    /// CreateCustomDataIdentifier takes it: name, regex, and optionally keywords, ignoreWords,
    /// maximumMatchDistance (1-300, default 50) and severity (LOW, MEDIUM, HIGH).
    #[arg(long, value_name = "FILE")]
    custom: Vec<PathBuf>,
    /// An allow list: a text file of values (one per line) never reported.
    #[arg(long, value_name = "FILE")]
    allow_list: Vec<PathBuf>,
    /// A regex; values it matches in full are never reported.
    #[arg(long, value_name = "REGEX")]
    allow_regex: Vec<String>,
    /// Run only these managed identifiers (comma-separated ids; see --list-identifiers).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    only: Vec<String>,
    /// Do not run these managed identifiers (comma-separated ids).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    exclude: Vec<String>,
    /// List the identifiers (with --json, as JSON) and exit.
    #[arg(long)]
    list_identifiers: bool,
    /// Files scanned at once. [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Show progress on standard error even when it is not a terminal.
    #[arg(long, conflicts_with = "no_progress")]
    progress: bool,
    /// Never show progress.
    #[arg(long)]
    no_progress: bool,
    /// Files larger than this many MiB are read as a stream if they are text, CSV or JSON Lines,
    /// and skipped (with the reason) otherwise; objects larger than this are skipped.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    max_file_mib: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s).ok_or_else(|| format!("'{s}' is not a severity; use low, medium or high"))
}

/// What one identifier found in one file or object.
#[derive(Debug, Serialize)]
struct FileFinding {
    path: String,
    #[serde(flatten)]
    finding: Finding,
}

#[derive(Debug, Serialize)]
struct Skipped {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<String>,
    reason: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "snake_case")]
struct Report {
    files_scanned: usize,
    bytes_scanned: u64,
    findings: Vec<FileFinding>,
    skipped: Vec<Skipped>,
}

/// Something to scan: a local file or an object.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Object {
        bucket: String,
        key: String,
        size: u64,
    },
}

impl Source {
    fn display(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Object { bucket, key, .. } => format!("s3://{bucket}/{key}"),
        }
    }
}

fn collect(path: &Path, out: &mut Vec<Source>) -> anyhow::Result<()> {
    let mut files = Vec::new();
    crate::fsutil::files_under(path, &mut files)?;
    out.extend(files.into_iter().map(Source::File));
    Ok(())
}

fn build_scanner(args: &ScanArgs) -> anyhow::Result<Scanner> {
    let mut b = Scanner::builder();
    if !args.only.is_empty() {
        b = b.only(args.only.clone());
    }
    b = b.exclude(args.exclude.clone());
    for f in &args.custom {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read custom identifiers from {}", f.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        let items = match v {
            Value::Array(items) => items,
            other => vec![other],
        };
        for item in items {
            let c: CustomIdentifier = serde_json::from_value(item).with_context(|| {
                format!(
                    "{}: a custom identifier needs \"name\" and \"regex\", and may have \"keywords\", \"ignoreWords\", \"maximumMatchDistance\" and \"severity\"",
                    f.display()
                )
            })?;
            b = b.custom(c);
        }
    }
    let mut allow = AllowList::default();
    for f in &args.allow_list {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read allow list {}", f.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            allow.add_exact(line);
        }
    }
    for r in &args.allow_regex {
        allow.add_regex(r).map_err(anyhow::Error::msg)?;
    }
    Ok(b.allow(allow).build()?)
}

fn list_identifiers(scanner: &Scanner, json: bool) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    let mut rows = Vec::new();
    for r in scanner.rules() {
        if seen.contains(&r.id) {
            continue;
        }
        seen.push(r.id.clone());
        rows.push(json!({
            "id": r.id,
            "category": r.category,
            "severity": r.severity,
            "keywords": r.keywords(),
            "keywordRequired": r.keyword_required(),
            "validated": r.validated(),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{:<45} {:<22} {:<6} {}",
                r["id"].as_str().unwrap_or_default(),
                r["category"].as_str().unwrap_or_default(),
                r["severity"].as_str().unwrap_or_default(),
                match (r["validated"].as_bool(), r["keywordRequired"].as_bool()) {
                    (Some(true), Some(true)) => "validated, keyword required",
                    (Some(true), _) => "validated",
                    (_, Some(true)) => "keyword required",
                    _ => "",
                }
            );
        }
        println!("{} identifiers", rows.len());
    }
    Ok(())
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Progress {
    done: AtomicUsize,
    bytes: AtomicU64,
    findings: AtomicU64,
}

fn spawn_progress(
    total: usize,
    p: Arc<Progress>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut last = String::new();
        loop {
            let finished = stop.load(Ordering::Relaxed);
            let done = p.done.load(Ordering::Relaxed);
            let mib = p.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let line = format!(
                "scanned {done}/{total} files, {mib:.1} MiB ({:.1} MiB/s), {} findings",
                mib / secs,
                p.findings.load(Ordering::Relaxed)
            );
            if line != last {
                if tty {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
                last = line;
            }
            if finished {
                if tty {
                    eprintln!();
                }
                return;
            }
            std::thread::sleep(if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(2)
            });
        }
    })
}

/// What scanning one source gave, and whether it was streamed (its bytes counted as read).
type SourceResult = Result<(coffer_scan::Report, bool), String>;

pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let scanner = build_scanner(&args)?;
    if args.list_identifiers {
        list_identifiers(&scanner, args.connect.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut sources = Vec::new();
    let mut s3_locations = Vec::new();
    for p in &args.paths {
        match p.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    bail!("'{p}' names no bucket; write s3://BUCKET or s3://BUCKET/PREFIX");
                }
                s3_locations.push((bucket.to_owned(), prefix.to_owned()));
            }
            None => collect(Path::new(p), &mut sources)?,
        }
    }
    let s3 = if s3_locations.is_empty() {
        None
    } else {
        let target = crate::operator_cmd::connect_target(&args.connect, true)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        for (bucket, prefix) in &s3_locations {
            let objects = rt.block_on(s3::list(&target, bucket, prefix))?;
            sources.extend(objects.into_iter().map(|(key, size)| Source::Object {
                bucket: bucket.clone(),
                key,
                size,
            }));
        }
        Some((Arc::new(target), rt))
    };

    let max_file = args.max_file_mib.saturating_mul(1 << 20);
    let limits = Limits {
        pdf: Some(crate::pdf_text::extract),
        ..Limits::default()
    };
    let workers = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256)
        .min(sources.len().max(1));
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let show = !args.no_progress && (args.progress || std::io::stderr().is_terminal());
    let reporter = show.then(|| spawn_progress(sources.len(), progress.clone(), stop.clone()));

    let next = AtomicUsize::new(0);
    let scan_one = |src: &Source| -> SourceResult {
        let (name, bytes) = match src {
            Source::File(path) => {
                let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
                if len > max_file {
                    // Too large to hold: text, CSV and JSON Lines are read as a stream.
                    let file =
                        std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
                    let name = path.display().to_string();
                    let mut on_bytes = |n: u64| {
                        progress.bytes.fetch_add(n, Ordering::Relaxed);
                    };
                    return coffer_scan::read::scan_stream(
                        &scanner,
                        &name,
                        file,
                        &limits,
                        &mut on_bytes,
                    )
                    .map(|rep| (rep, true))
                    .map_err(|e| format!("larger than {} MiB and {e}", args.max_file_mib));
                }
                (
                    path.display().to_string(),
                    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?,
                )
            }
            Source::Object { bucket, key, size } => {
                if *size > max_file {
                    return Err(format!(
                        "larger than {} MiB (see --max-file-mib)",
                        args.max_file_mib
                    ));
                }
                let Some((target, rt)) = &s3 else {
                    return Err("no server to read from".into());
                };
                let body = rt
                    .block_on(s3::get(target, bucket, key, max_file))
                    .map_err(|e| format!("{e:#}"))?;
                (key.clone(), body)
            }
        };
        coffer_scan::read::scan_bytes(&scanner, &name, &bytes, &limits).map(|r| (r, false))
    };
    let results: Vec<(usize, SourceResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(src) = sources.get(i) else { break };
                        let r = scan_one(src);
                        if let Ok((rep, streamed)) = &r {
                            if !streamed {
                                progress
                                    .bytes
                                    .fetch_add(rep.bytes_scanned, Ordering::Relaxed);
                            }
                            progress.findings.fetch_add(
                                rep.findings.iter().map(|f| f.count).sum(),
                                Ordering::Relaxed,
                            );
                        }
                        progress.done.fetch_add(1, Ordering::Relaxed);
                        mine.push((i, r));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    stop.store(true, Ordering::Relaxed);
    if let Some(r) = reporter {
        let _ = r.join();
    }

    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    let mut report = Report::default();
    for (i, r) in results {
        let path = sources[i].display();
        match r {
            Ok((rep, _)) => {
                report.files_scanned += 1;
                report.bytes_scanned += rep.bytes_scanned;
                report
                    .findings
                    .extend(rep.findings.into_iter().map(|finding| FileFinding {
                        path: path.clone(),
                        finding,
                    }));
                report
                    .skipped
                    .extend(rep.skipped.into_iter().map(|s| Skipped {
                        path: path.clone(),
                        member: s.member,
                        reason: s.reason,
                    }));
            }
            Err(reason) => report.skipped.push(Skipped {
                path,
                member: None,
                reason,
            }),
        }
    }
    let failed = args
        .fail_on
        .is_some_and(|t| report.findings.iter().any(|f| f.finding.severity >= t));
    if args.sarif {
        println!(
            "{}",
            serde_json::to_string_pretty(&sarif(&scanner, &report))?
        );
    } else if args.connect.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn place_text(l: &Location) -> String {
    let at = match &l.place {
        Place::Text { line, column, .. } => format!("{line}:{column}"),
        Place::Cell {
            row, column_name, ..
        } => format!("row {row} column '{column_name}'"),
        Place::Record { record, json_path } => format!("record {record} {json_path}"),
    };
    match &l.member {
        Some(m) => format!("{m} {at}"),
        None => at,
    }
}

fn print_human(report: &Report) {
    for f in &report.findings {
        let at: Vec<String> = f.finding.locations.iter().map(place_text).collect();
        println!(
            "{:<6} {:<40} {:>5}  {}  at {}  e.g. {}",
            f.finding.severity.as_str(),
            f.finding.identifier,
            f.finding.count,
            f.path,
            at.join(", "),
            f.finding.sample
        );
    }
    for s in &report.skipped {
        match &s.member {
            Some(m) => println!("skipped {} ({m}): {}", s.path, s.reason),
            None => println!("skipped {}: {}", s.path, s.reason),
        }
    }
    println!(
        "{} file(s), {} byte(s) scanned; {} value(s) found, {} finding(s); {} skipped",
        report.files_scanned,
        report.bytes_scanned,
        report.findings.iter().map(|f| f.finding.count).sum::<u64>(),
        report.findings.len(),
        report.skipped.len()
    );
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

fn category_text(c: Category) -> &'static str {
    match c {
        Category::FinancialInformation => "financial information",
        Category::PersonalInformation => "personal information",
        Category::Credentials => "credentials",
        Category::CustomIdentifier => "custom identifier",
    }
}

/// The report as a SARIF 2.1.0 log: one rule per identifier, one result per finding.
fn sarif(scanner: &Scanner, report: &Report) -> Value {
    let mut rules: Vec<Value> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for r in scanner.rules() {
        if ids.contains(&r.id) {
            continue;
        }
        ids.push(r.id.clone());
        rules.push(json!({
            "id": r.id,
            "name": r.id,
            "shortDescription": {"text": format!("{} ({})", r.id, category_text(r.category))},
            "defaultConfiguration": {"level": level(r.severity)},
            "properties": {"category": r.category, "severity": r.severity},
        }));
    }
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let locations: Vec<Value> = f
                .finding
                .locations
                .iter()
                .map(|l| {
                    let mut physical = json!({"artifactLocation": {"uri": sarif_uri(&f.path)}});
                    if let Place::Text { line, column, .. } = &l.place
                        && l.member.is_none()
                    {
                        physical["region"] = json!({"startLine": line, "startColumn": column});
                    }
                    let mut loc = json!({"physicalLocation": physical});
                    if l.member.is_some() || !matches!(l.place, Place::Text { .. }) {
                        loc["logicalLocations"] = json!([{"fullyQualifiedName": place_text(l)}]);
                    }
                    loc
                })
                .collect();
            json!({
                "ruleId": f.finding.identifier,
                "ruleIndex": ids.iter().position(|i| *i == f.finding.identifier),
                "level": level(f.finding.severity),
                "message": {"text": format!(
                    "{} value(s) of {} found (e.g. {})",
                    f.finding.count, f.finding.identifier, f.finding.sample
                )},
                "locations": locations,
                "properties": {"count": f.finding.count, "category": f.finding.category},
                // Stable across runs, so code-scanning tools track one finding over time.
                "partialFingerprints": {"cofferFinding/v1": coffer_crypto::digest::hex(
                    &coffer_crypto::digest::sha256(
                        format!("{}\n{}", f.path, f.finding.identifier).as_bytes()
                    )
                )},
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "coffer-scan",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/coffer/coffer",
                "rules": rules,
            }},
            "results": results,
            "properties": {
                "filesScanned": report.files_scanned,
                "bytesScanned": report.bytes_scanned,
                "skipped": report.skipped.len(),
            },
        }],
    })
}

/// A SARIF artifact URI: s3:// locations as they are, local paths relative as written with
/// characters outside URI syntax escaped.
fn sarif_uri(path: &str) -> String {
    if path.starts_with("s3://") {
        return path.to_owned();
    }
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Listing and reading objects of a Coffer server over S3.
mod s3 {
    use anyhow::{Context, bail};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use crate::client::{self, Target};

    /// Encodes as SigV4 and S3 expect (unreserved characters kept; `/` kept in keys).
    fn encode(s: &str, keep_slash: bool) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    async fn get_raw(t: &Target, path: &str, query: Option<&str>) -> anyhow::Result<(u16, Bytes)> {
        let mut sender = client::connect(t).await?;
        let uri = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(uri)
            .body(Full::new(Bytes::new()))?;
        *req.headers_mut() = client::s3_headers(t, "GET", path, query)?;
        sender.ready().await.context("connection closed")?;
        let resp = sender.send_request(req).await.context("request failed")?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    fn s3_error(status: u16, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let tag = |t: &str| {
            text.split_once(&format!("<{t}>"))
                .and_then(|(_, r)| r.split_once(&format!("</{t}>")))
                .map(|(v, _)| v.to_owned())
        };
        match (tag("Code"), tag("Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            _ => format!("HTTP {status}"),
        }
    }

    /// Every object under the prefix, with its size (ListObjectsV2, page by page).
    pub async fn list(
        t: &Target,
        bucket: &str,
        prefix: &str,
    ) -> anyhow::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // The canonical query: names sorted.
            let mut q = String::new();
            if let Some(tok) = &token {
                q.push_str(&format!("continuation-token={}&", encode(tok, false)));
            }
            q.push_str("list-type=2");
            if !prefix.is_empty() {
                q.push_str(&format!("&prefix={}", encode(prefix, false)));
            }
            let path = format!("/{}", encode(bucket, false));
            let (status, body) = get_raw(t, &path, Some(&q)).await?;
            if status != 200 {
                bail!(
                    "cannot list s3://{bucket}/{prefix}: {}",
                    s3_error(status, &body)
                );
            }
            let page = parse_list(&body).with_context(|| format!("listing s3://{bucket}"))?;
            out.extend(page.objects);
            match page.next {
                Some(n) => token = Some(n),
                None => return Ok(out),
            }
        }
    }

    struct Page {
        objects: Vec<(String, u64)>,
        next: Option<String>,
    }

    fn parse_list(body: &[u8]) -> anyhow::Result<Page> {
        use quick_xml::events::Event;
        let mut r = quick_xml::Reader::from_reader(body);
        let mut buf = Vec::new();
        let mut path: Vec<String> = Vec::new();
        let mut objects = Vec::new();
        let (mut key, mut size) = (String::new(), 0u64);
        let mut next = None;
        let mut truncated = false;
        loop {
            match r.read_event_into(&mut buf)? {
                Event::Start(e) => {
                    path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                }
                Event::End(_) => {
                    if path.last().map(String::as_str) == Some("Contents") {
                        objects.push((std::mem::take(&mut key), size));
                        size = 0;
                    }
                    path.pop();
                }
                Event::Text(t) => {
                    let raw = String::from_utf8_lossy(t.as_ref()).into_owned();
                    let v = quick_xml::escape::unescape(&raw)?.into_owned();
                    match path
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice()
                    {
                        [_, "Contents", "Key"] => key.push_str(&v),
                        [_, "Contents", "Size"] => size = v.trim().parse().unwrap_or(0),
                        [_, "NextContinuationToken"] => next = Some(v),
                        [_, "IsTruncated"] => truncated = v.trim() == "true",
                        _ => {}
                    }
                }
                Event::GeneralRef(g) => {
                    let entity = format!("&{};", String::from_utf8_lossy(g.as_ref()));
                    let v = quick_xml::escape::unescape(&entity)?.into_owned();
                    if path.last().map(String::as_str) == Some("Key") {
                        key.push_str(&v);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        Ok(Page {
            objects,
            next: if truncated { next } else { None },
        })
    }

    /// An object's bytes (at most `max` of them).
    pub async fn get(t: &Target, bucket: &str, key: &str, max: u64) -> anyhow::Result<Vec<u8>> {
        let path = format!("/{}/{}", encode(bucket, false), encode(key, true));
        let (status, body) = get_raw(t, &path, None).await?;
        if status != 200 {
            bail!("cannot read: {}", s3_error(status, &body));
        }
        if body.len() as u64 > max {
            bail!("larger than {} MiB", max >> 20);
        }
        Ok(body.to_vec())
    }
}
