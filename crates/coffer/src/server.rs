//! `coffer server`: first-start setup of the data dir, then the HTTPS listener with graceful
//! shutdown and the lifecycle clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use coffer_kms::Identities;
use coffer_kms::root;
use coffer_meta::MetaStore;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};
use zeroize::Zeroizing;

use crate::config::{LogFormat, ServerArgs, Settings};
use crate::front::Front;
use crate::{credentials, tls};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Held (flock) by the server for its life; offline commands take it too.
pub const LOCK_FILE: &str = ".lock";

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    init_logging(&settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(settings))
}

fn init_logging(s: &Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log).with_context(|| {
        format!(
            "'{}' is not a valid log filter (try 'info' or 'coffer_api=debug')",
            s.log
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match s.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))
}

/// How clients get the administrator's credentials.
pub(crate) enum AdminCredentials {
    File(PathBuf),
    Environment(String),
}

pub(crate) async fn ensure_admin(
    identities: &Identities,
    data_dir: &Path,
    account_id: &str,
) -> anyhow::Result<AdminCredentials> {
    let root_arn = format!("arn:aws:iam::{account_id}:root");
    let env_id = std::env::var("COFFER_ADMIN_ACCESS_KEY_ID").ok();
    let env_secret = std::env::var("COFFER_ADMIN_SECRET_ACCESS_KEY")
        .ok()
        .map(Zeroizing::new);
    match (env_id, env_secret) {
        (Some(id), Some(secret)) => {
            identities
                .import_access_key(&id, secret.as_bytes(), &root_arn)
                .await
                .context(
                    "COFFER_ADMIN_ACCESS_KEY_ID / COFFER_ADMIN_SECRET_ACCESS_KEY were refused",
                )?;
            info!(access_key_id = %id, "administrator credentials taken from the environment");
            return Ok(AdminCredentials::Environment(id));
        }
        (None, None) => {}
        _ => bail!(
            "set both COFFER_ADMIN_ACCESS_KEY_ID and COFFER_ADMIN_SECRET_ACCESS_KEY, or neither"
        ),
    }
    let path = data_dir.join("credentials");
    match credentials::read(&path)? {
        Some((id, secret)) => {
            if identities.credential(&id).await?.is_none() {
                // The file is the administrator's own copy; the metadata store lost the key (for
                // example a fresh database next to an old file), so take it back in.
                identities
                    .import_access_key(&id, secret.as_bytes(), &root_arn)
                    .await
                    .with_context(|| {
                        format!("the credentials in {} were refused", path.display())
                    })?;
                warn!(access_key_id = %id, "re-registered the administrator key from the credentials file");
            }
        }
        None => {
            let (id, secret) = identities.create_access_key(&root_arn).await?;
            credentials::write(&path, &id, secret.expose())?;
            info!(access_key_id = %id, path = %path.display(), "created administrator credentials");
        }
    }
    Ok(AdminCredentials::File(path))
}

fn certificate_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    names
}

fn endpoint_for(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("https://[{v6}]:{}", addr.port()),
    }
}

pub(crate) fn print_ready(
    endpoint: &str,
    ca: Option<&Path>,
    admin: &AdminCredentials,
    region: &str,
    root_mode: &str,
) {
    let mut out = String::new();
    out.push_str(&format!(
        "Coffer {} is ready at {endpoint} (root of trust: {root_mode})\n\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str("Point the aws CLI, boto3 or any AWS SDK at it:\n\n");
    out.push_str(&format!("  export AWS_ENDPOINT_URL={endpoint}\n"));
    if let Some(ca) = ca {
        out.push_str(&format!("  export AWS_CA_BUNDLE={}\n", ca.display()));
    }
    match admin {
        AdminCredentials::File(path) => {
            out.push_str(&format!(
                "  export AWS_SHARED_CREDENTIALS_FILE={}\n",
                path.display()
            ));
            out.push_str("  export AWS_PROFILE=default\n");
        }
        AdminCredentials::Environment(id) => {
            out.push_str(&format!("  export AWS_ACCESS_KEY_ID={id}\n"));
            out.push_str("  export AWS_SECRET_ACCESS_KEY=\"$COFFER_ADMIN_SECRET_ACCESS_KEY\"\n");
        }
    }
    // AWS_REGION for the SDKs, AWS_DEFAULT_REGION for the aws CLI v1 and older boto3.
    out.push_str(&format!(
        "  export AWS_REGION={region} AWS_DEFAULT_REGION={region}\n\n"
    ));
    out.push_str("  aws kms create-key --description \"my first Coffer key\"\n");
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn warn_dev_root(path: &Path) {
    let msg = format!(
        "\n\
         ******************************************************************************\n\
         *  DEVELOPMENT MODE: the root key is a plain file ({})\n\
         *  Anyone who can read the data dir can read every key. Do not keep real data\n\
         *  here; sealed roots (Shamir unseal, PKCS#11 HSM) are for production.\n\
         ******************************************************************************\n",
        path.display()
    );
    eprintln!("{msg}");
    warn!(root_key = %path.display(), "root of trust is a development key file");
}

/// Takes the data dir's lock (`flock` on DIR/.lock), held for as long as the file stays open: a
/// server holds it for its life, offline commands that change the data dir for theirs.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another Coffer is using the data dir {} (a running server, or an offline operator command); stop it first",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

async fn serve(s: Settings) -> anyhow::Result<()> {
    create_private_dir(&s.data_dir)?;
    let data_dir = std::fs::canonicalize(&s.data_dir)
        .with_context(|| format!("cannot resolve the data dir {}", s.data_dir.display()))?;

    let lock = lock_data_dir(&data_dir)?;

    let (store, fresh) = crate::metadata::open(
        &s.metadata,
        &data_dir,
        s.metadata_pool_size,
        s.metadata_ca.as_deref(),
    )
    .await?;
    if s.metadata.is_shared() {
        info!(metadata = %s.metadata, "metadata in PostgreSQL, shared with any other nodes");
        if !fresh
            && !data_dir.join(root::DEV_KEY_FILE).exists()
            && !root::root_config_path(&data_dir).exists()
        {
            bail!(
                "the shared metadata ({}) holds secrets wrapped under a root of trust, and this node's data dir \
                 {} has none: every node must use the same root. Copy root.key (dev-file mode), or root.json \
                 and its keyring (Shamir, PKCS#11), from the data dir of a node that serves this database",
                s.metadata,
                data_dir.display()
            );
        }
    }
    let changes = store.watch_changes(s.cache_staleness);
    let meta: Arc<dyn MetaStore> = store.clone();
    match root::migrate::resolve(&data_dir, meta.as_ref()).await {
        Ok(Some(r)) => warn!(resolution = ?r, "an interrupted root migration was resolved"),
        Ok(None) => {}
        Err(e) => return Err(e).context("cannot resolve an interrupted root migration"),
    }
    let opened = root::open_with(&data_dir, fresh).context("cannot open the root of trust")?;

    let (tls_config, ca_path) = match &s.tls_files {
        Some((cert, key)) => (tls::server_config(cert, key)?, None),
        None => {
            let paths = tls::TlsPaths::new(&data_dir);
            if tls::ensure_generated(&paths, &certificate_names(s.listen, &s.tls_sans))? {
                info!(ca = %paths.ca_cert.display(), "generated TLS certificates");
            }
            (
                tls::server_config(&paths.server_cert, &paths.server_key)?,
                Some(paths.ca_cert),
            )
        }
    };

    let listener = TcpListener::bind(s.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another Coffer running? try --listen 127.0.0.1:0)",
            s.listen
        )
    })?;
    let local = listener.local_addr().context("listener address")?;

    if !s.lifecycle_clock_offset.is_zero() {
        warn!(
            offset_seconds = s.lifecycle_clock_offset.as_secs(),
            "the key lifecycle clock runs ahead of the wall clock (--lifecycle-clock-offset): \
             scheduled deletions, rotations and expiries happen early; for testing only"
        );
    }
    if !s.discovery_clock_offset.is_zero() {
        warn!(
            offset_seconds = s.discovery_clock_offset.as_secs(),
            "the classification-job schedule clock runs ahead of the wall clock \
             (--discovery-clock-offset): scheduled jobs run early; for testing only"
        );
    }
    let settings = Arc::new(s);
    let s = settings.clone();
    let mode = match &opened {
        root::Opened::Ready { root, .. } => root.mode(),
        root::Opened::Sealed(_) => "shamir",
    };
    let front = Front::new(
        settings,
        data_dir.clone(),
        meta,
        changes,
        endpoint_for(local),
        ca_path,
        mode,
    );
    info!(listen = %local, root_of_trust = mode, "serving HTTPS");
    match opened {
        root::Opened::Ready { root, created } => {
            if root.mode() == "dev-file" {
                let root_path = data_dir.join(root::DEV_KEY_FILE);
                if created {
                    info!(path = %root_path.display(), "generated a new root key");
                }
                warn_dev_root(&root_path);
            }
            front.open(root, None).await?;
        }
        root::Opened::Sealed(unsealer) => front.wait_for_unseal(*unsealer),
    }

    let acceptor = TlsAcceptor::from(tls_config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually out of file descriptors; back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let front = front.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let info = connection_info(peer, tls.get_ref().1);
                    let service = hyper::service::service_fn(
                        move |mut req: http::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(info.clone());
                            front.clone().handle(req)
                        },
                    );
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    info!(
        grace_seconds = s.shutdown_grace.as_secs(),
        "shutting down: no new connections; finishing in-flight requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => info!("all connections closed"),
        _ = tokio::time::sleep(s.shutdown_grace) => warn!("grace period over; closing the remaining connections"),
    }
    front.shutdown().await;
    drop(lock);
    info!("stopped");
    Ok(())
}

/// What the audit log records about a connection.
fn connection_info(
    peer: SocketAddr,
    tls: &rustls::ServerConnection,
) -> coffer_api::audit::ConnInfo {
    let tls_version = match tls.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    let cipher_suite = tls
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .map(|name| name.replacen("TLS13_", "TLS_", 1))
        .unwrap_or_default();
    coffer_api::audit::ConnInfo {
        peer,
        tls_version,
        cipher_suite,
    }
}

/// Runs the key lifecycle on the clock: deletions at the end of their waiting period, automatic
/// rotations and the expiry of imported key material.
pub(crate) async fn lifecycle_clock(
    kms: Arc<coffer_kms::Kms>,
    interval: Duration,
    offset: Duration,
) {
    let offset_ms = i64::try_from(offset.as_millis()).unwrap_or(i64::MAX / 2);
    loop {
        match kms
            .sweep(coffer_kms::now_ms().saturating_add(offset_ms))
            .await
        {
            Ok(r) if r.deleted > 0 || r.rotated > 0 || r.expired > 0 => {
                info!(
                    deleted = r.deleted,
                    rotated = r.rotated,
                    expired = r.expired,
                    "key lifecycle sweep"
                )
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "key lifecycle sweep failed; will retry"),
        }
        tokio::time::sleep(interval).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}
