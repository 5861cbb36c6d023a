//! The discovery worker: runs classification jobs when they are due, and classifies new objects
//! as they are written when automated discovery is on. It reads every object as the principal
//! who asked for the work (a job's creator, or whoever enabled automated discovery) through the
//! same authorization as a GetObject of theirs — bucket policy, identity policies, and the key
//! policy for SSE-KMS objects — so discovery never reads what its owner could not. Each object
//! read is an audit event; findings are stored and published (to the webhook, by the binary).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use coffer_kms::{Caller, Principal};
use coffer_meta::{BucketAttr, ObjectRecord};
use coffer_scan::Scanner;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use super::findings::{self, Origin};
use super::jobs;
use super::{MacieError, MacieResult, iso, now_ms};
use crate::AppState;
use crate::s3::{Ctx, Payload, Query, Target};

/// Objects this large or smaller are read whole; larger ones are streamed (text, CSV, JSON
/// Lines) or skipped.
const WHOLE: u64 = 64 << 20;
/// Objects listed per page of a job run; the run's progress is saved after each.
pub const JOB_PAGE: usize = 500;
/// New-object notices held before automated discovery falls back to a sweep.
const BACKLOG: usize = 10_000;
const SETTING_AUTOMATED: &str = "automated";
const SETTING_SCOPE: &str = "scope";

/// Every managed identifier, built once.
pub fn managed_scanner() -> Arc<Scanner> {
    static S: OnceLock<Arc<Scanner>> = OnceLock::new();
    S.get_or_init(|| Arc::new(Scanner::managed())).clone()
}

/// Threads that read and scan objects, one per core. Long-lived, so that each keeps its
/// scanner scratch space and allocator pages warm (a scan on whatever blocking thread is free
/// measured half as fast).
struct ScanPool {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for ScanPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanPool").finish_non_exhaustive()
    }
}

impl ScanPool {
    fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("coffer-scan-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a scanning thread");
            }
        }
        ScanPool { jobs: tx }
    }

    /// Runs `f` on a scanning thread; `None` if the pool is gone.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.await.ok()
    }
}

/// An object written, for automated discovery.
#[derive(Debug, Clone)]
struct Written {
    bucket: String,
    key: String,
    version_id: String,
}

/// The handle the API holds: wakes the job loop, queues new objects, publishes findings.
#[derive(Debug)]
pub struct Discovery {
    wake: Notify,
    written: mpsc::Sender<Written>,
    inbox: Mutex<Option<mpsc::Receiver<Written>>>,
    /// A notice was dropped (the backlog was full): the next pass sweeps instead.
    overflow: AtomicBool,
    publish: Option<mpsc::Sender<Value>>,
    pool: OnceLock<ScanPool>,
    /// How PDF text is extracted (the binary's resource-limited child process); `None` skips
    /// PDFs.
    pdf: Option<coffer_scan::read::PdfText>,
    /// How far ahead of the wall clock the schedule clock runs (tests and drills).
    clock_offset_ms: i64,
    /// How long a finding is kept after its last update (Macie: 90 days).
    retention_ms: i64,
    /// Objects a job reads per page (`JOB_PAGE`; fewer in tests).
    job_page: usize,
}

/// Macie keeps findings for 90 days.
pub const FINDINGS_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// How often expired findings are deleted.
const PURGE_EVERY_MS: i64 = 3600 * 1000;

impl Discovery {
    /// `publish` receives every new or updated finding as an EventBridge-shaped event.
    pub fn new(publish: Option<mpsc::Sender<Value>>) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        Discovery {
            wake: Notify::new(),
            written: tx,
            inbox: Mutex::new(Some(rx)),
            overflow: AtomicBool::new(false),
            publish,
            pool: OnceLock::new(),
            pdf: None,
            clock_offset_ms: 0,
            retention_ms: FINDINGS_RETENTION.as_millis() as i64,
            job_page: JOB_PAGE,
        }
    }

    /// Reads `objects` per page in classification jobs (for tests: several pages from a small
    /// bucket).
    pub fn with_job_page(mut self, objects: usize) -> Self {
        self.job_page = objects.clamp(1, 1000);
        self
    }

    /// Keeps findings this long after their last update (instead of Macie's 90 days).
    pub fn with_findings_retention(mut self, keep: Duration) -> Self {
        self.retention_ms = keep.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// Runs the clock that decides when scheduled jobs are due `offset` ahead of the wall clock
    /// (for tests and drills).
    pub fn with_schedule_clock_offset(mut self, offset: Duration) -> Self {
        self.clock_offset_ms = offset.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// Now, on the schedule clock.
    fn schedule_now(&self) -> i64 {
        now_ms().saturating_add(self.clock_offset_ms)
    }

    /// Extracts PDF text with `pdf`.
    pub fn with_pdf_text(mut self, pdf: coffer_scan::read::PdfText) -> Self {
        self.pdf = Some(pdf);
        self
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Tells automated discovery that an object version was written.
    pub fn object_written(&self, bucket: &str, key: &str, version_id: &str) {
        let w = Written {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: version_id.to_owned(),
        };
        if self.written.try_send(w).is_err() {
            self.overflow.store(true, Ordering::Relaxed);
        }
    }

    /// Hands a new or updated finding to the publisher (the webhook), if there is one.
    pub fn publish(&self, state: &AppState, finding: &Value) {
        let Some(tx) = &self.publish else {
            return;
        };
        let cfg = state.kms.config();
        let event = json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "Macie Finding",
            "source": "aws.macie",
            "account": cfg.account_id,
            "time": iso(now_ms()),
            "region": cfg.region,
            "resources": [],
            "detail": finding,
        });
        if tx.try_send(event).is_err() {
            tracing::warn!("the findings publisher is behind; a finding was not published");
        }
    }
}

/// Starts the job loop and the automated-discovery loop; abort the tasks to stop them.
pub fn spawn(state: Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
    let inbox = state
        .discovery
        .inbox
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let s = state.clone();
    let mut tasks = vec![tokio::spawn(async move {
        let mut purged_at: Option<i64> = None;
        let mut old_indexed = false;
        loop {
            // One node at a time runs classification jobs (when several share the metadata);
            // the others skip the round, and take over when that node goes.
            match s
                .kms
                .meta()
                .try_cluster_lock("coffer:classification-jobs")
                .await
            {
                Ok(Some(_running)) => {
                    // Findings stored by a Coffer before findings were indexed are indexed
                    // once, so that criteria on indexed fields find them.
                    if !old_indexed {
                        match super::findings::index_old_findings(&**s.kms.meta()).await {
                            Ok(0) => old_indexed = true,
                            Ok(n) => {
                                tracing::info!(
                                    findings = n,
                                    "indexed findings stored before indexing"
                                );
                                old_indexed = true;
                            }
                            Err(e) => tracing::error!(error = ?e, "cannot index old findings"),
                        }
                    }
                    if let Err(e) = run_due_jobs(&s).await {
                        tracing::error!(error = ?e, "classification jobs failed to run");
                    }
                    // Findings past their retention go, at start and hourly after (on the
                    // schedule clock, so that a drill can age them).
                    let now = s.discovery.schedule_now();
                    if purged_at.is_none_or(|t| now - t >= PURGE_EVERY_MS) {
                        let cut = now.saturating_sub(s.discovery.retention_ms);
                        match s.kms.meta().purge_findings(cut).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                deleted = n,
                                older_than = %iso(cut),
                                "findings past their retention deleted"
                            ),
                            Err(e) => tracing::error!(error = %e, "cannot delete expired findings"),
                        }
                        if let Err(e) = s.kms.meta().optimize_findings().await {
                            tracing::warn!(error = %e, "cannot refresh the findings query statistics");
                        }
                        purged_at = Some(now);
                    }
                }
                Ok(None) => tracing::debug!("another node is running classification jobs"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot tell whether another node runs classification jobs")
                }
            }
            tokio::select! {
                _ = s.discovery.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    })];
    if let Some(inbox) = inbox {
        tasks.push(tokio::spawn(automated_loop(state, inbox)));
    }
    tasks
}

// ---- reading one object ---------------------------------------------------------------------

/// What classifying one object came to.
#[derive(Debug)]
enum Outcome {
    Classified {
        bytes: u64,
        /// The finding, not stored yet: a batch's findings are stored in one transaction.
        finding: Option<coffer_meta::FindingRecord>,
    },
    /// Not classified: a reason code (Macie's vocabulary where it has one) and the detail.
    Skipped(&'static str, String),
}

fn mime_of(key: &str) -> &'static str {
    match jobs::extension(key).to_ascii_lowercase().as_str() {
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "json" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "gz" | "gzip" => "application/gzip",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "pdf" => "application/pdf",
        "htm" | "html" => "text/html",
        "xml" => "application/xml",
        _ => "text/plain",
    }
}

/// A reader over bytes that another thread sends.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The request parts discovery's reads go through: no network request behind them, the
/// discovery user agent, the object as target.
struct Synthetic {
    parts: http::request::Parts,
    query: Query,
    target: Target,
    request_id: String,
}

impl Synthetic {
    fn new(agent: &str, bucket: &str, key: &str) -> Self {
        let mut req = http::Request::new(());
        if let Ok(v) = http::HeaderValue::from_str(agent) {
            req.headers_mut().insert(http::header::USER_AGENT, v);
        }
        Synthetic {
            parts: req.into_parts().0,
            query: Query::default(),
            target: Target {
                bucket: Some(bucket.to_owned()),
                key: Some(key.to_owned()),
            },
            request_id: crate::request_id(),
        }
    }

    fn ctx<'a>(&'a self, state: &'a AppState, caller: &Caller) -> Ctx<'a> {
        Ctx {
            state,
            parts: &self.parts,
            query: &self.query,
            target: &self.target,
            caller: caller.clone(),
            payload: Payload::Unsigned,
            signing: None,
            request_id: &self.request_id,
            audit_request: serde_json::Map::new(),
            audit_response: serde_json::Map::new(),
        }
    }
}

type Refusal = (&'static str, String);

/// Opens an object version (the latest when `version_id` is `None`) as the context's caller:
/// authorized as a GetObject of theirs, its key opened as they would open it.
async fn open_object(
    ctx: &Ctx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<(ObjectRecord, Vec<coffer_store::Piece>), Refusal> {
    let state = ctx.state;
    let action = if version_id.is_some() {
        "s3:GetObjectVersion"
    } else {
        "s3:GetObject"
    };
    ctx.authorize(action, &crate::s3::arn(bucket, Some(key)))
        .await
        .map_err(|f| ("ACCESS_DENIED", f.message))?;
    let record = state
        .objects
        .head(bucket, key, version_id)
        .await
        .map_err(|e| ("OBJECT_NOT_FOUND", e.to_string()))?;
    if record.sse.mode == coffer_store::s3::SSE_C {
        return Err((
            "UNABLE_TO_DECRYPT",
            "the object is encrypted with a customer-provided key (SSE-C), which Coffer does not keep"
                .to_owned(),
        ));
    }
    let object_key = crate::s3::sse::object_key(ctx, &record, false)
        .await
        .map_err(|f| ("UNABLE_TO_DECRYPT", f.message))?;
    let pieces = state
        .objects
        .pieces(&record, &object_key)
        .map_err(|e| ("INTERNAL_ERROR", e.to_string()))?;
    Ok((record, pieces))
}

/// Reads a whole object (its latest version, at most `max` bytes) as `caller`, recorded as a
/// GetObject in the audit log.
pub(crate) async fn read_object(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    bucket: &str,
    key: &str,
    max: u64,
) -> Result<Vec<u8>, Refusal> {
    let s = Synthetic::new(agent, bucket, key);
    let ctx = s.ctx(state, caller);
    let opened = open_object(&ctx, bucket, key, None)
        .await
        .and_then(|(r, p)| {
            if r.size > max {
                Err((
                    "OBJECT_EXCEEDS_SIZE_QUOTA",
                    format!("the object is {} bytes; at most {max} are read", r.size),
                ))
            } else {
                Ok((r, p))
            }
        });
    let (record, pieces) = match opened {
        Ok(o) => o,
        Err((code, why)) => {
            let _ = audit_read(&ctx, bucket, key, "", 0, Some((code, &why))).await;
            return Err((code, why));
        }
    };
    let blobs = state.objects.blobs().clone();
    let data = tokio::task::spawn_blocking(move || {
        let mut data = Vec::with_capacity(record.size as usize);
        coffer_store::read_pieces(blobs.as_ref(), &pieces, None, &mut |b| {
            data.extend_from_slice(b);
            Ok(())
        })
        .map(|()| data)
    })
    .await
    .map_err(|e| ("INTERNAL_ERROR", e.to_string()))?
    .map_err(|e| ("INTERNAL_ERROR", e.to_string()))?;
    audit_read(&ctx, bucket, key, "", data.len() as u64, None)
        .await
        .map_err(|e| ("INTERNAL_ERROR", format!("{e:?}")))?;
    Ok(data)
}

/// What a job's or automated discovery's scan uses: the scanner, and the custom identifiers'
/// definitions by name (for their ARNs and severity levels in findings).
pub(crate) struct Plan {
    pub scanner: Arc<Scanner>,
    pub customs: std::collections::HashMap<String, Value>,
}

/// Reads and scans one object version as `caller`, recording the read as an audit event.
#[allow(clippy::too_many_arguments)]
async fn classify(
    state: &Arc<AppState>,
    caller: &Caller,
    user_agent: &str,
    plan: &Plan,
    origin: &Origin,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> MacieResult<Outcome> {
    let s = Synthetic::new(user_agent, bucket, key);
    let ctx = s.ctx(state, caller);
    let (record, pieces) = match open_object(&ctx, bucket, key, Some(version_id)).await {
        Ok(r) => r,
        Err((code, detail)) => {
            audit_read(&ctx, bucket, key, version_id, 0, Some((code, &detail))).await?;
            return Ok(Outcome::Skipped(code, detail));
        }
    };
    let blobs = state.objects.blobs().clone();
    let scanner = plan.scanner.clone();
    let pdf = state.discovery.pdf;
    let name = key.to_owned();
    let size = record.size;
    let pool = state.discovery.pool.get_or_init(ScanPool::new);
    let scanned = pool
        .run(
            move || -> Result<coffer_scan::Report, (&'static str, String)> {
                let limits = coffer_scan::Limits {
                    pdf,
                    ..coffer_scan::Limits::default()
                };
                if size <= WHOLE {
                    let mut data = Vec::with_capacity(size as usize);
                    coffer_store::read_pieces(blobs.as_ref(), &pieces, None, &mut |b| {
                        data.extend_from_slice(b);
                        Ok(())
                    })
                    .map_err(|e| ("INTERNAL_ERROR", e.to_string()))?;
                    return coffer_scan::read::scan_bytes(&scanner, &name, &data, &limits)
                        .map_err(|why| ("UNSUPPORTED_FILE_TYPE", why));
                }
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
                let producer = std::thread::spawn(move || {
                    coffer_store::read_pieces(blobs.as_ref(), &pieces, None, &mut |b| {
                        tx.send(b.to_vec())
                            .map_err(|_| coffer_store::StoreError::Io {
                                what: "the scanner".into(),
                                source: std::io::Error::other("the scanner stopped reading"),
                            })
                    })
                });
                let reader = ChannelReader {
                    rx,
                    buf: Vec::new(),
                    pos: 0,
                };
                let report =
                    coffer_scan::read::scan_stream(&scanner, &name, reader, &limits, &mut |_| {});
                let produced = producer.join();
                let report = report.map_err(|why| ("UNSUPPORTED_FILE_TYPE", why))?;
                match produced {
                    Ok(Ok(())) => Ok(report),
                    Ok(Err(e)) => Err(("INTERNAL_ERROR", e.to_string())),
                    Err(_) => Err(("INTERNAL_ERROR", "the object reader failed".to_owned())),
                }
            },
        )
        .await
        .ok_or_else(|| {
            MacieError::Api(crate::ApiError::Internal(
                "the scanning threads are gone".into(),
            ))
        })?;
    let report = match scanned {
        Ok(r) => r,
        Err((code, detail)) => {
            audit_read(&ctx, bucket, key, version_id, 0, Some((code, &detail))).await?;
            return Ok(Outcome::Skipped(code, detail));
        }
    };
    audit_read(&ctx, bucket, key, version_id, record.size, None).await?;
    let bytes = report.bytes_scanned;
    let finding = findings::build(state, origin, &record, &report, mime_of(key), &plan.customs);
    Ok(Outcome::Classified { bytes, finding })
}

/// Classifies objects: many at a time, so that key unwrapping and the audit log's group commits
/// overlap, with the reading and scanning on the scanning threads (one per core).
async fn classify_all(
    state: &Arc<AppState>,
    caller: &Caller,
    agent: &str,
    plan: &Plan,
    origin: &Origin,
    todo: Vec<(String, String, String)>,
) -> Vec<MacieResult<Outcome>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let one = |(b, k, v): (String, String, String)| async move {
        classify(state, caller, agent, plan, origin, &b, &k, &v).await
    };
    let outcomes: Vec<MacieResult<Outcome>> = futures_util::stream::iter(todo)
        .map(one)
        .buffer_unordered(cores * 8)
        .collect()
        .await;
    // One transaction (one fsync) for the batch's findings, then publish them.
    let found: Vec<coffer_meta::FindingRecord> = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(Outcome::Classified {
                finding: Some(f), ..
            }) => Some(f.clone()),
            _ => None,
        })
        .collect();
    let suppressed = match super::findings::store(state, found.clone()).await {
        Ok(s) => s,
        Err(e) => return vec![Err(e)],
    };
    // Findings an archiving filter suppressed are stored but not published.
    for (f, _) in found.iter().zip(&suppressed).filter(|(_, s)| !**s) {
        let doc: Value = serde_json::from_str(&f.doc).unwrap_or_default();
        state.discovery.publish(state, &doc);
    }
    outcomes
}

/// The audit event of one object read by discovery (an S3 GetObject by the job's principal).
async fn audit_read(
    ctx: &Ctx<'_>,
    bucket: &str,
    key: &str,
    version_id: &str,
    bytes: u64,
    failed: Option<(&str, &str)>,
) -> MacieResult<()> {
    let request = json!({ "bucketName": bucket, "key": key, "versionId": version_id }).to_string();
    let ok = json!({});
    let outcome = match failed {
        None => Ok(&ok),
        Some((code, message)) => Err(crate::audit::Failure {
            code,
            message: message.to_owned(),
        }),
    };
    crate::record_event_with(
        ctx.state,
        "s3.amazonaws.com",
        "GetObject",
        ctx.request_id,
        ctx.parts,
        Some(request.as_bytes()),
        Some(&ctx.caller.principal),
        outcome,
        Some(json!({ "bytesTransferredIn": 0, "bytesTransferredOut": bytes })),
    )
    .await
    .map_err(MacieError::Api)
}

/// The caller a job or automated discovery reads as; an error when that principal is gone.
pub(crate) async fn caller_for(
    state: &AppState,
    arn: &str,
    access_key_id: &str,
    agent: &str,
) -> Result<Caller, String> {
    let account = state.kms.config().account_id.clone();
    if let Some(name) = coffer_kms::authz::user_name(arn) {
        let exists = state
            .kms
            .meta()
            .iam_entity(coffer_meta::IamKind::User, name)
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        if !exists {
            return Err(format!(
                "{arn}, whose authority the work runs with, no longer exists"
            ));
        }
    } else if arn != format!("arn:aws:iam::{account}:root") {
        return Err(format!("{arn} is not a principal of this account"));
    }
    Ok(Caller::new(
        Principal {
            arn: arn.to_owned(),
            account_id: account,
            access_key_id: access_key_id.to_owned(),
        },
        None,
        Some(agent),
    ))
}

// ---- jobs -----------------------------------------------------------------------------------

/// A job's scanner: its managed identifiers, custom identifiers and allow lists. Allow lists
/// that cannot be read are left out; the second value says why.
async fn plan_for(state: &Arc<AppState>, doc: &Value) -> MacieResult<(Plan, Vec<String>)> {
    let list = |k: &str| -> Vec<String> {
        doc[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let ids = list("managedDataIdentifierIds");
    let customs = super::custom::for_job(state, &list("customDataIdentifierIds")).await?;
    let (allow, problems) = super::custom::allow_for_job(state, &list("allowListIds")).await?;
    let mut builder = match doc["managedDataIdentifierSelector"].as_str() {
        Some("INCLUDE") => Scanner::builder().only(ids),
        Some("EXCLUDE") => Scanner::builder().exclude(ids),
        Some("NONE") => Scanner::builder().only(Vec::new()),
        _ if customs.is_empty() && allow.is_empty() => {
            return Ok((
                Plan {
                    scanner: managed_scanner(),
                    customs: Default::default(),
                },
                problems,
            ));
        }
        _ => Scanner::builder(),
    };
    let mut by_name = std::collections::HashMap::new();
    for (c, d) in customs {
        by_name.insert(c.name.clone(), d);
        builder = builder.custom(c);
    }
    let scanner = builder
        .allow(allow)
        .build()
        .map_err(|e| MacieError::Validation(e.to_string()))?;
    Ok((
        Plan {
            scanner: Arc::new(scanner),
            customs: by_name,
        },
        problems,
    ))
}

async fn run_due_jobs(state: &Arc<AppState>) -> MacieResult<()> {
    let now = state.discovery.schedule_now();
    for r in state.kms.meta().jobs().await? {
        let Ok(mut doc) = serde_json::from_str::<Value>(&r.doc) else {
            continue;
        };
        let due = match r.status.as_str() {
            "RUNNING" => true,
            "IDLE" => doc["coffer"]["nextRunMs"]
                .as_i64()
                .is_some_and(|t| t <= now),
            "USER_PAUSED" => {
                let expires = doc["userPausedDetails"]["jobExpiresAt"]
                    .as_str()
                    .and_then(super::parse_iso);
                if expires.is_some_and(|t| t <= now) {
                    doc["jobStatus"] = json!("CANCELLED");
                    jobs::save(state, &doc).await?;
                }
                false
            }
            _ => false,
        };
        if due {
            run_job(state, doc).await?;
        }
    }
    Ok(())
}

/// A job's buckets, in order: those it names, or those its bucketCriteria select now (by name).
async fn buckets_of(state: &AppState, doc: &Value) -> MacieResult<Vec<String>> {
    let def = &doc["s3JobDefinition"];
    if let Some(criteria) = def.get("bucketCriteria").filter(|v| !v.is_null()) {
        let account = state.kms.config().account_id.clone();
        let mut out = Vec::new();
        let mut all = state.objects.list_buckets().await.map_err(|e| {
            MacieError::Api(crate::ApiError::Internal(format!(
                "cannot list buckets: {e}"
            )))
        })?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        for b in all {
            let facts = bucket_facts(state, &account, b.name, b.owner_account).await;
            if jobs::bucket_selected(criteria, &facts) {
                out.push(facts.name);
            }
        }
        return Ok(out);
    }
    Ok(def["bucketDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["buckets"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b.as_str().map(str::to_owned))
        .collect())
}

/// A bucket's tags, and whether its policy makes it public or shares it with another account.
async fn bucket_facts(
    state: &AppState,
    account: &str,
    name: String,
    owner: String,
) -> jobs::BucketFacts {
    // A setting kept as JSON, or null when it is absent or unreadable.
    let attr = async |a| -> Value {
        state
            .objects
            .bucket_attr(&name, a)
            .await
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let tags: Map<String, Value> = attr(BucketAttr::Tags)
        .await
        .as_object()
        .cloned()
        .unwrap_or_default();
    let policy = attr(BucketAttr::Policy).await;
    let block = attr(BucketAttr::PublicAccessBlock).await;
    let restricted = block["RestrictPublicBuckets"] == json!(true);
    let (mut public, mut external) = (false, false);
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    };
    for st in statements.iter().filter(|s| s["Effect"] == "Allow") {
        let principals: Vec<String> = match &st["Principal"] {
            Value::String(p) => vec![p.clone()],
            Value::Object(m) => m
                .get("AWS")
                .map(|v| match v {
                    Value::String(p) => vec![p.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for p in principals {
            if p == "*" {
                // Granted to anyone unless a condition narrows it (S3's own public test).
                public |= st.get("Condition").is_none_or(Value::is_null);
            } else {
                let other = p
                    .strip_prefix("arn:aws:iam::")
                    .map_or(p.as_str(), |rest| rest.split(':').next().unwrap_or(""));
                external |= other != account;
            }
        }
    }
    jobs::BucketFacts {
        name,
        account: owner,
        tags,
        effective_permission: if public && !restricted {
            "PUBLIC"
        } else {
            "NOT_PUBLIC"
        },
        shared_access: if external { "EXTERNAL" } else { "NOT_SHARED" },
    }
}

/// The listing prefix a job's scope allows: its one `OBJECT_KEY STARTS_WITH` include, if any.
fn list_prefix(doc: &Value) -> String {
    doc["s3JobDefinition"]["scoping"]["includes"]["and"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("simpleScopeTerm"))
        .find(|t| t["key"] == "OBJECT_KEY" && t["comparator"] == "STARTS_WITH")
        .and_then(|t| t["values"].as_array())
        .filter(|v| v.len() == 1)
        .and_then(|v| v[0].as_str())
        .unwrap_or("")
        .to_owned()
}

/// Whether a job still wants to run (nobody paused or cancelled it meanwhile).
async fn still_running(state: &AppState, id: &str) -> MacieResult<bool> {
    Ok(jobs::load(state, id).await?["jobStatus"] == "RUNNING")
}

async fn run_job(state: &Arc<AppState>, mut doc: Value) -> MacieResult<()> {
    let id = doc["jobId"].as_str().unwrap_or_default().to_owned();
    let started = doc["coffer"]["runStartedMs"]
        .as_i64()
        .unwrap_or_else(now_ms);
    if doc["jobStatus"] != "RUNNING" {
        doc["jobStatus"] = json!("RUNNING");
    }
    doc["coffer"]["runStartedMs"] = json!(started);
    doc["lastRunTime"] = json!(iso(started));
    let agent = format!(
        "{}{} job/{id}",
        coffer_scan::anomaly::DISCOVERY_AGENT,
        env!("CARGO_PKG_VERSION")
    );
    let caller = match caller_for(
        state,
        doc["coffer"]["runAs"].as_str().unwrap_or_default(),
        doc["coffer"]["accessKeyId"].as_str().unwrap_or_default(),
        &agent,
    )
    .await
    {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(job = id, reason = why, "a classification job could not run");
            doc["lastRunErrorStatus"] = json!({ "code": "ERROR" });
            doc["coffer"]["lastError"] = json!(why);
            return finish(state, doc, started, false).await;
        }
    };
    let (plan, problems) = plan_for(state, &doc).await?;
    if !problems.is_empty() {
        tracing::warn!(job = id, problems = ?problems, "a job runs without allow lists it names");
    }
    let origin = Origin::Job {
        id: id.clone(),
        arn: doc["jobArn"].as_str().unwrap_or_default().to_owned(),
    };
    let sampling = doc["samplingPercentage"].as_i64().unwrap_or(100);
    let watermark = doc["coffer"]["watermarkMs"].as_i64();
    let scoping = doc["s3JobDefinition"].get("scoping").cloned();
    let prefix = list_prefix(&doc);
    let buckets = buckets_of(state, &doc).await?;
    let wanted = |o: &ObjectRecord| {
        !o.delete_marker
            && watermark.is_none_or(|w| o.last_modified_ms > w)
            && jobs::in_scope(scoping.as_ref(), o)
            && jobs::sampled(&id, &o.bucket, &o.key, sampling)
    };
    // The estimate Macie gives before a run: how many objects it will look at.
    if doc["coffer"]["cursor"].is_null() {
        let mut n = 0u64;
        for b in &buckets {
            let mut after: Option<String> = None;
            loop {
                let Ok(page) = state
                    .objects
                    .list(b, &prefix, None, after.as_deref(), 1000)
                    .await
                else {
                    break;
                };
                n += page.items.iter().filter(|o| wanted(o)).count() as u64;
                after = page.items.last().map(|o| o.key.clone());
                if !page.truncated || after.is_none() {
                    break;
                }
            }
        }
        doc["statistics"]["approximateNumberOfObjectsToProcess"] = json!(n as f64);
        doc["coffer"]["cursor"] = json!({ "bucket": 0, "after": Value::Null });
        doc["coffer"]["run"] = json!({ "objectsClassified": 0, "objectsSkipped": 0,
            "objectsWithFindings": 0, "bytesClassified": 0, "skipped": {}, "warnings": problems });
        jobs::save(state, &doc).await?;
    }
    let first_bucket = doc["coffer"]["cursor"]["bucket"].as_u64().unwrap_or(0) as usize;
    for (bi, bucket) in buckets.iter().enumerate().skip(first_bucket) {
        let mut after = if bi == first_bucket {
            doc["coffer"]["cursor"]["after"].as_str().map(str::to_owned)
        } else {
            None
        };
        loop {
            let page = match state
                .objects
                .list(
                    bucket,
                    &prefix,
                    None,
                    after.as_deref(),
                    state.discovery.job_page,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    // The bucket went away: nothing left to read in it.
                    tracing::warn!(job = id, bucket, error = %e, "a job's bucket could not be listed");
                    break;
                }
            };
            let todo: Vec<(String, String, String)> = page
                .items
                .iter()
                .filter(|o| wanted(o))
                .map(|o| (o.bucket.clone(), o.key.clone(), o.version_id.clone()))
                .collect();
            let outcomes = classify_all(state, &caller, &agent, &plan, &origin, todo).await;
            let run = &mut doc["coffer"]["run"];
            for o in outcomes {
                match o? {
                    Outcome::Classified { bytes, finding } => {
                        bump(&mut run["objectsClassified"], 1);
                        bump(&mut run["bytesClassified"], bytes);
                        if finding.is_some() {
                            bump(&mut run["objectsWithFindings"], 1);
                        }
                    }
                    Outcome::Skipped(code, detail) => {
                        bump(&mut run["objectsSkipped"], 1);
                        bump(&mut run["skipped"][code], 1);
                        if run["skippedExample"].get(code).is_none() {
                            run["skippedExample"][code] = json!(detail);
                        }
                    }
                }
            }
            after = page.items.last().map(|o| o.key.clone()).or(after);
            doc["coffer"]["cursor"] = json!({ "bucket": bi, "after": after });
            if !still_running(state, &id).await? {
                // Paused or cancelled: keep the progress, leave the status as it was set.
                let mut current = jobs::load(state, &id).await?;
                current["coffer"]["cursor"] = doc["coffer"]["cursor"].clone();
                current["coffer"]["run"] = doc["coffer"]["run"].clone();
                current["coffer"]["runStartedMs"] = json!(started);
                return jobs::save(state, &current).await;
            }
            jobs::save(state, &doc).await?;
            if !page.truncated || page.items.is_empty() {
                break;
            }
        }
    }
    finish(state, doc, started, true).await
}

fn bump(v: &mut Value, by: u64) {
    *v = json!(v.as_u64().unwrap_or(0) + by);
}

/// Ends a run: a one-time job is complete, a scheduled one idles until its next run.
async fn finish(state: &AppState, mut doc: Value, started: i64, ran: bool) -> MacieResult<()> {
    let id = doc["jobId"].as_str().unwrap_or_default().to_owned();
    let current = jobs::load(state, &id).await?;
    if current["jobStatus"] != "RUNNING" {
        return Ok(());
    }
    let scheduled = doc["jobType"] == "SCHEDULED";
    let runs = doc["statistics"]["numberOfRuns"].as_f64().unwrap_or(0.0);
    doc["statistics"]["numberOfRuns"] = json!(runs + 1.0);
    let coffer = doc["coffer"]
        .as_object_mut()
        .expect("a job has Coffer state");
    coffer.remove("cursor");
    coffer.remove("runStartedMs");
    if let Some(run) = coffer.remove("run") {
        coffer.insert("lastRun".into(), run);
    }
    if ran {
        coffer.insert("watermarkMs".into(), json!(started));
    }
    if scheduled {
        let next = jobs::next_run(&doc["scheduleFrequency"], state.discovery.schedule_now());
        doc["coffer"]["nextRunMs"] = json!(next);
        doc["jobStatus"] = json!("IDLE");
    } else {
        doc["jobStatus"] = json!(if ran { "COMPLETE" } else { "CANCELLED" });
    }
    tracing::info!(job = id, status = %doc["jobStatus"], run = %doc["coffer"]["lastRun"], "classification job run ended");
    jobs::save(state, &doc).await
}

// ---- automated discovery --------------------------------------------------------------------

fn scope_id(account: &str) -> String {
    let h = coffer_crypto::digest::sha256(format!("classification-scope\0{account}").as_bytes());
    coffer_crypto::digest::hex(&h)[..32].to_owned()
}

async fn setting(state: &AppState, name: &str) -> MacieResult<Value> {
    Ok(state
        .kms
        .meta()
        .discovery_setting(name)
        .await?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| json!({})))
}

async fn put_setting(state: &AppState, name: &str, v: &Value) -> MacieResult<()> {
    Ok(state
        .kms
        .meta()
        .put_discovery_setting(name, &v.to_string())
        .await?)
}

async fn excluded_buckets(state: &AppState) -> MacieResult<Vec<String>> {
    Ok(setting(state, SETTING_SCOPE).await?["excludes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str().map(str::to_owned))
        .collect())
}

pub async fn get_automated(state: &AppState) -> MacieResult<Value> {
    let a = setting(state, SETTING_AUTOMATED).await?;
    let cfg = state.kms.config();
    let mut out = json!({
        "status": a["status"].as_str().unwrap_or("DISABLED"),
        "classificationScopeId": scope_id(&cfg.account_id),
        "sensitivityInspectionTemplateId": scope_id(&format!("template\0{}", cfg.account_id)),
        "autoEnableOrganizationMembers": "NONE",
    });
    for k in ["firstEnabledAt", "lastUpdatedAt", "disabledAt"] {
        if let Some(t) = a.get(k) {
            out[k] = t.clone();
        }
    }
    Ok(out)
}

pub async fn update_automated(
    state: &AppState,
    input: &Value,
    caller: &Caller,
) -> MacieResult<Value> {
    let status = input.get("status").and_then(Value::as_str).unwrap_or("");
    if !matches!(status, "ENABLED" | "DISABLED") {
        return Err(MacieError::Validation(
            "status must be ENABLED or DISABLED.".into(),
        ));
    }
    let mut a = setting(state, SETTING_AUTOMATED).await?;
    let now = now_ms();
    let was = a["status"].as_str().unwrap_or("DISABLED").to_owned();
    a["status"] = json!(status);
    a["lastUpdatedAt"] = json!(iso(now));
    if status == "ENABLED" {
        if a.get("firstEnabledAt").is_none() {
            a["firstEnabledAt"] = json!(iso(now));
        }
        // Automated discovery reads as whoever turned it on.
        a["runAs"] = json!(caller.principal.arn);
        a["accessKeyId"] = json!(caller.principal.access_key_id);
        if was != "ENABLED" {
            a["watermarkMs"] = json!(now);
        }
    } else {
        a["disabledAt"] = json!(iso(now));
    }
    put_setting(state, SETTING_AUTOMATED, &a).await?;
    Ok(json!({}))
}

pub async fn list_scopes(state: &AppState) -> MacieResult<Value> {
    let id = scope_id(&state.kms.config().account_id);
    Ok(
        json!({ "classificationScopes": [{ "id": id, "name": "automated-sensitive-data-discovery" }] }),
    )
}

fn check_scope_id(state: &AppState, id: &str) -> MacieResult<()> {
    if id != scope_id(&state.kms.config().account_id) {
        return Err(MacieError::NotFound(format!(
            "The classification scope {id} does not exist; ListClassificationScopes gives its id."
        )));
    }
    Ok(())
}

pub async fn get_scope(state: &AppState, id: &str) -> MacieResult<Value> {
    check_scope_id(state, id)?;
    Ok(json!({
        "id": id,
        "name": "automated-sensitive-data-discovery",
        "s3": { "excludes": { "bucketNames": excluded_buckets(state).await? } },
    }))
}

pub async fn update_scope(state: &AppState, id: &str, input: &Value) -> MacieResult<Value> {
    check_scope_id(state, id)?;
    let ex = &input["s3"]["excludes"];
    let names: Vec<String> = ex["bucketNames"]
        .as_array()
        .ok_or_else(|| MacieError::Validation("s3.excludes.bucketNames is required.".into()))?
        .iter()
        .filter_map(|b| b.as_str().map(str::to_owned))
        .collect();
    let mut current = excluded_buckets(state).await?;
    match ex["operation"].as_str().unwrap_or("") {
        "ADD" => current.extend(names),
        "REMOVE" => current.retain(|b| !names.contains(b)),
        "REPLACE" => current = names,
        _ => {
            return Err(MacieError::Validation(
                "s3.excludes.operation must be ADD, REMOVE or REPLACE.".into(),
            ));
        }
    }
    current.sort();
    current.dedup();
    if current.len() > 1000 {
        return Err(MacieError::Validation(
            "A classification scope excludes at most 1,000 buckets.".into(),
        ));
    }
    put_setting(state, SETTING_SCOPE, &json!({ "excludes": current })).await?;
    Ok(json!({}))
}

/// Classifies new objects as their notices arrive, and sweeps the buckets for objects written
/// since the last pass after a restart or when notices were dropped.
async fn automated_loop(state: Arc<AppState>, mut inbox: mpsc::Receiver<Written>) {
    let mut sweep = true;
    loop {
        let mut batch = Vec::new();
        if !sweep {
            tokio::select! {
                w = inbox.recv() => match w {
                    Some(w) => batch.push(w),
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
        while batch.len() < 1000 {
            match inbox.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if state.discovery.overflow.swap(false, Ordering::Relaxed) {
            sweep = true;
        }
        match automated_pass(&state, batch, sweep).await {
            Ok(()) => sweep = false,
            Err(e) => {
                tracing::error!(error = ?e, "automated discovery failed; retrying with a sweep");
                sweep = true;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

async fn automated_pass(
    state: &Arc<AppState>,
    batch: Vec<Written>,
    sweep: bool,
) -> MacieResult<()> {
    let mut a = setting(state, SETTING_AUTOMATED).await?;
    if a["status"] != "ENABLED" {
        return Ok(());
    }
    // Everything written before this instant (less a margin for notices in flight) is covered
    // once this pass ends.
    let covered_to = now_ms() - 5_000;
    let watermark = a["watermarkMs"].as_i64().unwrap_or(covered_to);
    let agent = format!(
        "{}{} automated",
        coffer_scan::anomaly::DISCOVERY_AGENT,
        env!("CARGO_PKG_VERSION")
    );
    let caller = match caller_for(
        state,
        a["runAs"].as_str().unwrap_or_default(),
        a["accessKeyId"].as_str().unwrap_or_default(),
        &agent,
    )
    .await
    {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(
                reason = why,
                "automated discovery is enabled but cannot run"
            );
            return Ok(());
        }
    };
    let excluded = excluded_buckets(state).await?;
    let mut todo: BTreeMap<(String, String, String), ()> = BTreeMap::new();
    for w in batch {
        if !excluded.contains(&w.bucket) {
            todo.insert((w.bucket, w.key, w.version_id), ());
        }
    }
    if sweep {
        for b in state
            .objects
            .list_buckets()
            .await
            .map_err(|e| MacieError::Api(crate::ApiError::Internal(e.to_string())))?
        {
            if excluded.contains(&b.name) {
                continue;
            }
            let mut after: Option<String> = None;
            loop {
                let page = state
                    .objects
                    .list(&b.name, "", None, after.as_deref(), 1000)
                    .await
                    .map_err(|e| MacieError::Api(crate::ApiError::Internal(e.to_string())))?;
                for o in &page.items {
                    if !o.delete_marker && o.last_modified_ms > watermark {
                        todo.insert((o.bucket.clone(), o.key.clone(), o.version_id.clone()), ());
                    }
                }
                after = page.items.last().map(|o| o.key.clone());
                if !page.truncated || after.is_none() {
                    break;
                }
            }
        }
    }
    let plan = Plan {
        scanner: managed_scanner(),
        customs: Default::default(),
    };
    let todo: Vec<(String, String, String)> = todo.into_keys().collect();
    let outcomes = classify_all(state, &caller, &agent, &plan, &Origin::Automated, todo).await;
    let mut classified = 0u64;
    for o in outcomes {
        if let Outcome::Classified { .. } = o? {
            classified += 1;
        }
    }
    bump(&mut a["objectsClassified"], classified);
    if covered_to > watermark {
        a["watermarkMs"] = json!(covered_to);
    }
    // Re-read the status so that a concurrent disable is not undone.
    let latest = setting(state, SETTING_AUTOMATED).await?;
    for k in [
        "status",
        "runAs",
        "accessKeyId",
        "lastUpdatedAt",
        "disabledAt",
        "firstEnabledAt",
    ] {
        if let Some(v) = latest.get(k) {
            a[k] = v.clone();
        }
    }
    put_setting(state, SETTING_AUTOMATED, &a).await
}
