//! The server's front: every connection's requests pass here. While the root of trust is sealed
//! (shamir mode, before enough shares), only health and unseal answer; once it is unsealed the full
//! API (built around the root) takes every request. Sealing drops that API, and with it the root
//! and every key unwrapped under it.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use coffer_api::operator::{Action, ActionFuture, Operator};
use coffer_api::{AppState, Metrics};
use coffer_kms::root::{RootOfTrust, UnsealProgress, Unsealer};
use coffer_kms::{Identities, Kms, KmsConfig, KmsError};
use coffer_meta::MetaStore;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tracing::{error, info, warn};

use crate::config::Settings;

/// Largest unseal request body.
const MAX_UNSEAL_BODY: usize = 64 * 1024;

/// The API built around an unsealed root.
struct Unsealed {
    router: axum::Router,
    state: Arc<AppState>,
    /// References to `state` held by the API itself; more mean requests in flight.
    idle_refs: usize,
    sweeper: JoinHandle<()>,
    /// Sensitive-data discovery's job and automated loops, and anomaly detection.
    discovery: Vec<JoinHandle<()>>,
}

impl Unsealed {
    /// Stops the lifecycle clock, waits (up to `grace`) for requests in flight, then closes the
    /// audit log with a signed digest.
    async fn close(self, grace: Duration) {
        self.sweeper.abort();
        for task in self.discovery {
            task.abort();
            let _ = task.await;
        }
        let deadline = Instant::now() + grace;
        while Arc::strong_count(&self.state) > self.idle_refs && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(log) = &self.state.audit {
            match log.close().await {
                Ok(()) => info!("audit log closed with a signed digest"),
                Err(e) => {
                    error!(error = %e, "could not close the audit log cleanly; the next start repairs it")
                }
            }
        }
    }
}

pub struct Front {
    settings: Arc<Settings>,
    data_dir: PathBuf,
    meta: Arc<dyn MetaStore>,
    /// With shared PostgreSQL metadata: what other nodes change, for this node's caches.
    changes: Option<tokio::sync::broadcast::Sender<coffer_meta::Change>>,
    endpoint: String,
    ca_path: Option<PathBuf>,
    mode: &'static str,
    app: RwLock<Option<Arc<Unsealed>>>,
    unsealer: Mutex<Option<Unsealer>>,
    /// Serialises unsealing, sealing and root rotation.
    transitions: tokio::sync::Mutex<()>,
    started: Instant,
    me: Weak<Front>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("mode", &self.mode)
            .field("sealed", &self.is_sealed())
            .finish_non_exhaustive()
    }
}

/// The operator hook the API calls; weak, so the API does not keep the front alive.
#[derive(Debug)]
struct OperatorHandle(Weak<Front>);

impl Operator for OperatorHandle {
    fn act(&self, action: Action) -> ActionFuture<'_> {
        Box::pin(async move {
            let front = self
                .0
                .upgrade()
                .ok_or_else(|| KmsError::Internal("the server is shutting down".into()))?;
            match action {
                Action::Seal => front.seal().await,
                Action::RotateRoot => front.rotate_root().await,
                Action::CreateBackup => front.create_backup().await,
            }
        })
    }
}

/// Applies other nodes' changes to this node's caches for as long as the API is open.
async fn forget_changes(
    mut changes: tokio::sync::broadcast::Receiver<coffer_meta::Change>,
    state: Weak<AppState>,
) {
    use coffer_meta::Change;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let change = match changes.recv().await {
            Ok(c) => c,
            // Too many to keep up with: forget everything.
            Err(RecvError::Lagged(_)) => Change::All,
            Err(RecvError::Closed) => return,
        };
        let Some(state) = state.upgrade() else {
            return;
        };
        state.kms.forget(&change);
        state.identities.forget(&change);
        match &change {
            Change::Bucket(b) => state.s3_access.forget(b),
            Change::All => state.s3_access.forget_all(),
            _ => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn json_reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

impl Front {
    pub fn new(
        settings: Arc<Settings>,
        data_dir: PathBuf,
        meta: Arc<dyn MetaStore>,
        changes: Option<tokio::sync::broadcast::Sender<coffer_meta::Change>>,
        endpoint: String,
        ca_path: Option<PathBuf>,
        mode: &'static str,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Front {
            settings,
            data_dir,
            meta,
            changes,
            endpoint,
            ca_path,
            mode,
            app: RwLock::new(None),
            unsealer: Mutex::new(None),
            transitions: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            me: me.clone(),
        })
    }

    pub fn is_sealed(&self) -> bool {
        self.app.read().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Waits for shares from `unsealer`.
    pub fn wait_for_unseal(&self, unsealer: Unsealer) {
        let msg = format!(
            "Coffer {} is sealed at {} (root of trust: shamir, {} of {} shares needed)\n\n\
             Only health and unseal answer until enough unseal shares are submitted:\n\n  \
             coffer operator unseal --endpoint {}{}\n",
            env!("CARGO_PKG_VERSION"),
            self.endpoint,
            unsealer.threshold(),
            unsealer.shares(),
            self.endpoint,
            self.ca_path
                .as_ref()
                .map(|c| format!(" --ca-bundle {}", c.display()))
                .unwrap_or_default(),
        );
        *lock(&self.unsealer) = Some(unsealer);
        print!("{msg}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        warn!("the root of trust is sealed; waiting for unseal shares");
    }

    /// Builds the full API around `root` and starts taking requests with it. `unsealed_by` (the
    /// address that submitted the last share) records the unseal in the audit log.
    pub async fn open(
        &self,
        root: Arc<dyn RootOfTrust>,
        unsealed_by: Option<String>,
    ) -> anyhow::Result<()> {
        let s = &self.settings;
        let cfg = KmsConfig {
            account_id: s.account_id.clone(),
            region: s.region.clone(),
            hsm_clusters: s.hsm_clusters.clone(),
        };
        let kms = Arc::new(Kms::new(cfg, self.meta.clone(), root.clone()));
        kms.reconnect_custom_key_stores()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reconnect the custom key stores: {e}"))?;
        let identities = Arc::new(Identities::new(self.meta.clone(), root.clone()));
        let admin = crate::server::ensure_admin(&identities, &self.data_dir, &s.account_id).await?;
        let audit = if s.audit {
            let dir = self.data_dir.join("audit");
            let signer = crate::audit_cmd::load_or_create_signer(&dir, root.as_ref())?;
            let log = coffer_audit::AuditLog::open(
                &dir,
                signer,
                coffer_audit::AuditOptions {
                    segment_bytes: s.audit_segment_bytes,
                    digest_interval: s.audit_digest_interval,
                },
            )
            .map_err(|e| anyhow::anyhow!("cannot open the audit log in {}: {e}", dir.display()))?;
            info!(dir = %dir.display(), "audit log open");
            Some(Arc::new(log))
        } else {
            warn!("the audit log is OFF (--audit off): requests are not recorded");
            None
        };
        if let (Some(log), Some(from)) = (&audit, unsealed_by) {
            let event = coffer_api::audit::operator_event(
                kms.config(),
                "Unseal",
                "unseal-shares",
                &from,
                "coffer operator unseal",
                json!({ "rootId": self.unseal_root_id() }),
                json!({ "sealed": false }),
            );
            log.record(event)
                .await
                .map_err(|e| anyhow::anyhow!("cannot record the unseal in the audit log: {e}"))?;
        }
        let iam = Arc::new(coffer_kms::Iam::new(
            self.meta.clone(),
            identities.clone(),
            &s.account_id,
            kms.identity_cache(),
        ));
        let blob_dir = self.data_dir.join("objects");
        let (blobs, blob_place): (Arc<dyn coffer_store::BlobStore>, String) = match &s.remote_blobs
        {
            Some(cfg) if !s.insecure_bench_baseline => {
                let place = format!("s3://{}/{} at {}", cfg.bucket, cfg.prefix, cfg.endpoint);
                let remote = crate::remote_blobs::RemoteBlobs::connect(cfg.clone()).await?;
                info!(blobs = %place, "object bytes in a remote S3-compatible store");
                (Arc::new(remote), place)
            }
            _ => {
                let local = if s.insecure_bench_baseline {
                        warn!(
                            "BENCHMARK BASELINE: objects are stored UNENCRYPTED in {}; never use this data dir for data",
                            blob_dir.display()
                        );
                        coffer_store::DiskBlobs::open_unencrypted_baseline(&blob_dir)
                    } else {
                        coffer_store::DiskBlobs::open(&blob_dir)
                    }
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot open the object store in {}: {e}",
                            blob_dir.display()
                        )
                    })?;
                (Arc::new(local), blob_dir.display().to_string())
            }
        };
        let objects = Arc::new(coffer_store::s3::Objects::new(
            self.meta.clone(),
            blobs,
            kms.clone(),
        ));
        match objects.sweep().await {
            Ok(0) => {}
            Ok(n) => info!(
                removed = n,
                "removed object data that no object names (writes cut short, deletions unfinished)"
            ),
            Err(e) => anyhow::bail!("cannot check the object store in {blob_place}: {e}"),
        }
        let publish = match &s.findings_webhook {
            None => None,
            Some((url, ca)) => {
                let hook = crate::webhook::Webhook::new(url, ca.as_deref())?
                    .with_agent("coffer-findings-webhook");
                let (tx, rx) = tokio::sync::mpsc::channel(10_000);
                tokio::spawn(crate::webhook::deliver(hook, rx));
                Some(tx)
            }
        };
        let state = Arc::new(AppState {
            discovery: coffer_api::macie::Discovery::new(publish)
                .with_pdf_text(crate::pdf_text::extract)
                .with_schedule_clock_offset(s.discovery_clock_offset)
                .with_job_page(s.discovery_job_page)
                .with_findings_retention(s.findings_retention),
            objects,
            s3_domain: s.s3_domain.clone(),
            s3_access: Default::default(),
            s3_bucket_keys: Default::default(),
            kms: kms.clone(),
            identities,
            iam,
            metrics: Metrics::new(),
            started: self.started,
            audit,
            operator: Some(Arc::new(OperatorHandle(self.me.clone()))),
        });
        if let Some(changes) = &self.changes {
            tokio::spawn(forget_changes(changes.subscribe(), Arc::downgrade(&state)));
        }
        let router = coffer_api::router(state.clone());
        let mut discovery = coffer_api::macie::runner::spawn(state.clone());
        discovery.extend(crate::anomaly_task::spawn(
            state.clone(),
            self.data_dir.join("audit"),
            s.anomaly.clone(),
        ));
        let idle_refs = Arc::strong_count(&state);
        let sweeper = tokio::spawn(crate::server::lifecycle_clock(
            kms,
            s.lifecycle_interval,
            s.lifecycle_clock_offset,
        ));
        *self.app.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Unsealed {
            router,
            state,
            idle_refs,
            sweeper,
            discovery,
        }));
        crate::server::print_ready(
            &self.endpoint,
            self.ca_path.as_deref(),
            &admin,
            &s.region,
            root.mode(),
        );
        Ok(())
    }

    fn unseal_root_id(&self) -> Option<String> {
        lock(&self.unsealer)
            .as_ref()
            .map(|u| u.root_id().to_owned())
    }

    /// Closes the API (audit log last) at shutdown.
    pub async fn shutdown(&self) {
        let taken = self.app.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(app) = taken.and_then(Arc::into_inner) {
            app.close(Duration::from_secs(5)).await;
        }
    }

    /// Serves one request.
    pub async fn handle(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
    ) -> Result<Response, Infallible> {
        if req.uri().path() == "/_coffer/unseal" {
            let from = req
                .extensions()
                .get::<coffer_api::audit::ConnInfo>()
                .map(|c| c.peer.ip().to_string())
                .unwrap_or_default();
            return Ok(self.unseal_endpoint(req, from).await);
        }
        let app = self.app.read().unwrap_or_else(|p| p.into_inner()).clone();
        match app {
            Some(app) => {
                let router = app.router.clone();
                drop(app);
                router.oneshot(req.map(Body::new)).await
            }
            None => Ok(self.sealed_reply(&req)),
        }
    }

    fn unseal_status(&self) -> Value {
        let unsealer = lock(&self.unsealer);
        match unsealer.as_ref() {
            Some(u) => json!({
                "sealed": true,
                "root_of_trust": self.mode,
                "root_id": u.root_id(),
                "threshold": u.threshold(),
                "shares": u.shares(),
                "progress": u.progress(),
            }),
            None => json!({ "sealed": self.is_sealed(), "root_of_trust": self.mode }),
        }
    }

    fn sealed_reply(&self, req: &http::Request<hyper::body::Incoming>) -> Response {
        if req.uri().path() == "/_coffer/health" {
            let mut body = self.unseal_status();
            body["status"] = json!("sealed");
            body["version"] = json!(env!("CARGO_PKG_VERSION"));
            body["uptime_seconds"] = json!(self.started.elapsed().as_secs());
            return json_reply(StatusCode::SERVICE_UNAVAILABLE, body);
        }
        let message = "Coffer is sealed: its root of trust is locked until operators submit enough unseal shares (`coffer operator unseal`). Retry once it is unsealed.";
        let is_form = req.headers().get("x-amz-target").is_none()
            && req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            let xml = format!(
                "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>{message}</Message></Error><RequestId></RequestId></ErrorResponse>"
            );
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::CONTENT_TYPE, "text/xml")],
                xml,
            )
                .into_response();
        }
        let mut resp = json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "__type": "ServiceUnavailableException", "message": message }),
        );
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        resp
    }

    /// `GET /_coffer/unseal`: progress. `POST` with `{"share": "cfs1-…"}` submits a share, with
    /// `{"reset": true}` forgets the shares submitted so far.
    async fn unseal_endpoint(
        &self,
        req: http::Request<hyper::body::Incoming>,
        from: String,
    ) -> Response {
        let error = |status: StatusCode, code: &str, message: String| {
            json_reply(status, json!({ "__type": code, "message": message }))
        };
        if req.method() == http::Method::GET {
            return json_reply(StatusCode::OK, self.unseal_status());
        }
        if req.method() != http::Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "use GET for unseal progress and POST to submit a share".into(),
            );
        }
        let body = match http_body_util::Limited::new(req.into_body(), MAX_UNSEAL_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    "an unseal request is a small JSON object".into(),
                );
            }
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct UnsealRequest {
            share: Option<String>,
            #[serde(default)]
            reset: bool,
        }
        let parsed: UnsealRequest = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    "the body must be {\"share\": \"cfs1-…\"} or {\"reset\": true}".into(),
                );
            }
        };
        let _transition = self.transitions.lock().await;
        if !self.is_sealed() {
            return error(
                StatusCode::CONFLICT,
                "AlreadyUnsealedException",
                "Coffer is already unsealed".into(),
            );
        }
        let progress = {
            let unsealer = lock(&self.unsealer);
            let Some(u) = unsealer.as_ref() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidStateException",
                    format!(
                        "this Coffer's root of trust is {}; there is nothing to unseal",
                        self.mode
                    ),
                );
            };
            if parsed.reset {
                u.reset();
                info!("unseal progress reset");
                return json_reply(
                    StatusCode::OK,
                    json!({ "sealed": true, "progress": 0, "threshold": u.threshold() }),
                );
            }
            let Some(share) = parsed.share else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "the body names no share".into(),
                );
            };
            let share = zeroize::Zeroizing::new(share);
            match u.submit(&share) {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "unseal share refused");
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidShareException",
                        e.to_string(),
                    );
                }
            }
        };
        match progress {
            UnsealProgress::NeedMore { have, threshold } => {
                info!(have, threshold, "unseal share accepted");
                json_reply(StatusCode::OK, self.unseal_status())
            }
            UnsealProgress::Unsealed(root) => match self.open(Arc::new(root), Some(from)).await {
                Ok(()) => {
                    lock(&self.unsealer).take();
                    info!("unsealed");
                    json_reply(StatusCode::OK, json!({ "sealed": false }))
                }
                Err(e) => {
                    error!(error = %format!("{e:#}"), "unsealed, but the service could not start");
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "UnsealFailedException",
                        format!("the shares are right, but the service could not start: {e:#}"),
                    )
                }
            },
        }
    }

    async fn seal(&self) -> Result<Value, KmsError> {
        if self.mode != "shamir" {
            return Err(KmsError::UnsupportedOperation(format!(
                "Sealing applies to a Coffer whose root of trust is shamir; this one's is {}.",
                self.mode
            )));
        }
        let _transition = self.transitions.lock().await;
        let unsealer = Unsealer::load(&self.data_dir)
            .map_err(|e| KmsError::Internal(format!("cannot prepare to unseal again: {e}")))?;
        let taken = self.app.write().unwrap_or_else(|p| p.into_inner()).take();
        *lock(&self.unsealer) = Some(unsealer);
        warn!("sealed by an operator: the root of trust and every unwrapped key are dropped");
        if let Some(app) = taken {
            // This request still holds the API; close it once the response is recorded.
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut app = app;
                loop {
                    match Arc::try_unwrap(app) {
                        Ok(unsealed) => {
                            unsealed.close(Duration::from_secs(30)).await;
                            break;
                        }
                        Err(still) if Instant::now() < deadline => {
                            app = still;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => {
                            error!(
                                "the sealed API is still referenced after 30 s; its audit log stays open"
                            );
                            break;
                        }
                    }
                }
            });
        }
        Ok(json!({ "Sealed": true }))
    }

    /// The API of the unsealed root, for an operator action.
    fn unsealed_app(&self) -> Result<Arc<Unsealed>, KmsError> {
        self.app
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| KmsError::InvalidState("Coffer is sealed".into()))
    }

    async fn create_backup(&self) -> Result<Value, KmsError> {
        let _transition = self.transitions.lock().await;
        let app = self.unsealed_app()?;
        if self.settings.metadata.is_shared() {
            return Err(KmsError::UnsupportedOperation(
                "This Coffer keeps its metadata in PostgreSQL, which coffer backup does not copy: back the \
                 database up with PostgreSQL's tools (pg_basebackup with WAL archiving, or pg_dump), and \
                 keep the root of trust apart from it (see docs/operations.md)."
                    .into(),
            ));
        }
        let archive = crate::backup_cmd::make_archive(
            &self.data_dir,
            self.meta.as_ref(),
            app.state.kms.root().as_ref(),
            app.state.audit.as_deref(),
        )
        .await
        .map_err(|e| KmsError::Internal(format!("{e:#}")))?;
        info!(backup_id = %archive.header.backup_id, bytes = archive.bytes.len(), "backup made");
        use base64::Engine;
        Ok(json!({
            "BackupId": archive.header.backup_id,
            "RootMode": archive.header.root_mode,
            "RootGeneration": archive.header.root_generation,
            "AuditHead": archive.header.audit_head,
            "Archive": base64::engine::general_purpose::STANDARD.encode(&archive.bytes),
        }))
    }

    async fn rotate_root(&self) -> Result<Value, KmsError> {
        let _transition = self.transitions.lock().await;
        let app = self.unsealed_app()?;
        if self.settings.metadata.is_shared() {
            // A new generation would exist on this node only, while every secret the nodes share
            // is rewrapped under it: the other nodes could open none of them.
            return Err(KmsError::UnsupportedOperation(
                "Root rotation is not available while several nodes share PostgreSQL metadata: the new \
                 root generation would exist on this node only, and the other nodes could open nothing \
                 rewrapped under it (see docs/operations.md)."
                    .into(),
            ));
        }
        let report = app.state.kms.rotate_root().await?;
        crate::audit_cmd::rewrap_signer(
            &self.data_dir.join("audit").join("signing-key.wrapped"),
            app.state.kms.root(),
        )
        .map_err(|e| KmsError::Internal(format!("{e:#}")))?;
        coffer_kms::failpoint("rotate-root:before-retire");
        let removed = app.state.kms.retire_root_generations().await?;
        info!(
            generation = report.generation,
            rewrapped = report.rewrapped,
            ?removed,
            "root rotated"
        );
        Ok(json!({
            "RootGeneration": report.generation,
            "Rewrapped": report.rewrapped,
            "RemovedGenerations": removed,
        }))
    }
}
