//! Server settings: command-line flags, then `COFFER_*` environment variables, then an optional TOML
//! file, then built-in defaults — the first that says something wins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

pub const DEFAULT_DATA_DIR: &str = "./coffer-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_ACCOUNT_ID: &str = "111122223333";
pub const DEFAULT_REGION: &str = "us-east-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Directory for the metadata database, root key, TLS files and credentials.
    /// [default: ./coffer-data]
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where the metadata lives (keys, aliases, policies, grants, identities, object records):
    /// `sqlite` (DIR/meta.db) or a PostgreSQL URL, postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE,
    /// that several Coffer nodes share (see docs/operations.md). [default: sqlite]
    #[arg(
        long,
        env = "COFFER_METADATA",
        value_name = "sqlite|URL",
        hide_env_values = true
    )]
    pub metadata: Option<String>,

    /// With PostgreSQL metadata: a CA certificate (PEM) PostgreSQL's certificate may chain to,
    /// besides the system's. TLS is as the URL's sslmode asks: `require` insists on it, `prefer`
    /// (the default) uses it when the server offers it, `disable` never does; when TLS is used the
    /// certificate is always verified, host name included.
    #[arg(long, env = "COFFER_METADATA_CA", value_name = "PEM")]
    pub metadata_ca: Option<PathBuf>,

    /// With PostgreSQL metadata: how many connections this node keeps at most (at least 4).
    /// [default: 16]
    #[arg(long, env = "COFFER_METADATA_POOL_SIZE", value_name = "N")]
    pub metadata_pool_size: Option<usize>,

    /// With PostgreSQL metadata: the longest a node goes on using a cached key, key policy,
    /// identity policy, credential or bucket policy that another node changed, should the change
    /// notice not arrive (changes normally reach every node within milliseconds). [default: 5]
    #[arg(long, env = "COFFER_CACHE_STALENESS", value_name = "SECONDS")]
    pub cache_staleness: Option<u64>,

    /// Where object bytes live: `local` (DIR/objects) or s3://BUCKET[/PREFIX] in any
    /// S3-compatible store that several nodes share. Objects are sealed before they leave, so the
    /// store holds only ciphertext. Its credentials come from COFFER_BLOBS_ACCESS_KEY_ID and
    /// COFFER_BLOBS_SECRET_ACCESS_KEY. [default: local]
    #[arg(long, env = "COFFER_BLOBS", value_name = "local|s3://BUCKET[/PREFIX]")]
    pub blobs: Option<String>,

    /// The S3-compatible store's endpoint for --blobs s3://… (https:// only).
    /// [default: https://s3.<blobs region>.amazonaws.com]
    #[arg(long, env = "COFFER_BLOBS_ENDPOINT", value_name = "URL")]
    pub blobs_endpoint: Option<String>,

    /// The region requests to the blob store are signed for. [default: --region]
    #[arg(long, env = "COFFER_BLOBS_REGION", value_name = "REGION")]
    pub blobs_region: Option<String>,

    /// A CA certificate (PEM) the blob store's certificate may chain to, besides the system's.
    #[arg(long, env = "COFFER_BLOBS_CA", value_name = "PEM")]
    pub blobs_ca: Option<PathBuf>,

    /// Blobs no object names and multipart uploads never completed are removed at start once
    /// they are this old (another node may be writing a younger one), e.g. `1h`, `90m`.
    /// [default: 1h]
    #[arg(long, env = "COFFER_BLOBS_ORPHAN_GRACE", value_name = "DURATION")]
    pub blobs_orphan_grace: Option<String>,

    /// Address and port to serve HTTPS on (port 0 picks a free port). [default: 127.0.0.1:8443]
    #[arg(long, env = "COFFER_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// TOML file with any of the settings below (keys as the long flags, with `_` for `-`).
    #[arg(long, env = "COFFER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// AWS account id that appears in ARNs (12 digits). [default: 111122223333]
    #[arg(long, env = "COFFER_ACCOUNT_ID", value_name = "ID")]
    pub account_id: Option<String>,

    /// AWS region this Coffer serves; clients must sign for it. [default: us-east-1]
    #[arg(long, env = "COFFER_REGION", value_name = "REGION")]
    pub region: Option<String>,

    /// Log format on standard error. [default: human]
    #[arg(long, env = "COFFER_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter in tracing's EnvFilter syntax (e.g. `info`, `coffer_api=debug`). [default: info]
    #[arg(long, env = "COFFER_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// PEM certificate chain to serve instead of the generated one (needs --tls-key).
    #[arg(
        long,
        env = "COFFER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "COFFER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Extra DNS names or IP addresses for the generated server certificate (repeatable).
    #[arg(
        long = "tls-san",
        env = "COFFER_TLS_SANS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub tls_sans: Vec<String>,

    /// Seconds that in-flight requests get to finish after SIGTERM or SIGINT. [default: 30]
    #[arg(long, env = "COFFER_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,

    /// Seconds between runs of the key lifecycle clock (deletions at the end of their waiting
    /// period, automatic rotations, expiry of imported material); it also runs once at start.
    /// [default: 60]
    #[arg(long, env = "COFFER_LIFECYCLE_INTERVAL", value_name = "SECONDS")]
    pub lifecycle_interval: Option<u64>,

    /// Record every API request in the tamper-evident audit log (DIR/audit). Turning it off is for
    /// measuring its cost; a production Coffer keeps it on. [default: on]
    #[arg(long, env = "COFFER_AUDIT", value_enum, value_name = "ON|OFF")]
    pub audit: Option<Switch>,

    /// An audit segment file closes (with a signed digest) once it reaches this many MiB.
    /// [default: 64]
    #[arg(long, env = "COFFER_AUDIT_SEGMENT_MIB", value_name = "MIB")]
    pub audit_segment_mib: Option<u64>,

    /// Seconds between signed digests of the audit chain while requests flow. [default: 60]
    #[arg(long, env = "COFFER_AUDIT_DIGEST_INTERVAL", value_name = "SECONDS")]
    pub audit_digest_interval: Option<u64>,

    /// A PKCS#11 token custom key stores may use, as an HSM cluster:
    /// `cluster-<11 to 16 letters or digits 2-7>=<module path>#<token label>` (repeatable).
    /// CreateCustomKeyStore names the cluster id; the token's user PIN is its KeyStorePassword.
    #[arg(
        long = "hsm-cluster",
        env = "COFFER_HSM_CLUSTERS",
        value_delimiter = ',',
        value_name = "ID=MODULE#LABEL"
    )]
    pub hsm_clusters: Vec<String>,

    /// The domain for virtual-host-style S3 requests: a request to `<bucket>.<domain>` addresses
    /// that bucket (point `*.<domain>` at Coffer in DNS and add it to the certificate with
    /// --tls-san). Path-style requests (`/<bucket>/<key>`) always work. [default: none]
    #[arg(long, env = "COFFER_S3_DOMAIN", value_name = "DOMAIN")]
    pub s3_domain: Option<String>,

    /// POST every new or updated sensitive-data finding, as an EventBridge-shaped "Macie Finding"
    /// event (JSON), to this URL: http:// or https:// (trusting --findings-webhook-ca). Failed
    /// deliveries are retried with backoff for up to an hour. [default: none]
    #[arg(long, env = "COFFER_FINDINGS_WEBHOOK", value_name = "URL")]
    pub findings_webhook: Option<String>,

    /// The CA certificate (PEM) an https findings webhook's certificate must chain to.
    #[arg(long, env = "COFFER_FINDINGS_WEBHOOK_CA", value_name = "PEM")]
    pub findings_webhook_ca: Option<PathBuf>,

    /// Seconds between runs of access-anomaly detection over the audit log (per-principal
    /// baselines against the latest window; alerts become findings); 0 turns it off.
    /// [default: 300]
    #[arg(long, env = "COFFER_ANOMALY_INTERVAL", value_name = "SECONDS")]
    pub anomaly_interval: Option<u64>,

    /// Minutes in the window anomaly detection judges. [default: 60]
    #[arg(long, env = "COFFER_ANOMALY_WINDOW_MINUTES", value_name = "MINUTES")]
    pub anomaly_window_minutes: Option<i64>,

    /// Days of history before the window that make each principal's baseline. [default: 28]
    #[arg(long, env = "COFFER_ANOMALY_BASELINE_DAYS", value_name = "DAYS")]
    pub anomaly_baseline_days: Option<i64>,

    /// On an access anomaly by an IAM user, deactivate the access keys it used in the window
    /// (recorded in the audit log and on the finding). [default: off]
    #[arg(
        long,
        env = "COFFER_ANOMALY_REMEDIATE",
        value_enum,
        value_name = "ON|OFF"
    )]
    pub anomaly_remediate: Option<Switch>,

    /// A CloudTrail file (e.g. exported from AWS before moving to Coffer) read with the audit log
    /// at every run, to seed the baselines (repeatable).
    #[arg(
        long = "anomaly-history",
        env = "COFFER_ANOMALY_HISTORY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub anomaly_history: Vec<PathBuf>,

    /// For `coffer bench s3` only: store objects UNENCRYPTED (copied where they would be sealed)
    /// in a new, empty data dir that is marked so it can never be served normally, to measure
    /// what sealing costs. Hidden from --help.
    #[arg(long, hide = true)]
    pub insecure_bench_baseline: bool,

    /// For testing and drills only: run the key lifecycle clock this far ahead of the wall clock
    /// (e.g. `8d`, `36h`, `90m`, `30s`), so that scheduled deletions, rotations and expiries fall
    /// due now. Everything else keeps the real time. [default: 0s]
    #[arg(long, env = "COFFER_LIFECYCLE_CLOCK_OFFSET", value_name = "DURATION")]
    pub lifecycle_clock_offset: Option<String>,

    /// For testing and drills only: run the clock that decides when scheduled classification
    /// jobs are due this far ahead of the wall clock (e.g. `25h`), so that the next scheduled run
    /// happens now. Object times and everything else keep the real time. [default: 0s]
    #[arg(long, env = "COFFER_DISCOVERY_CLOCK_OFFSET", value_name = "DURATION")]
    pub discovery_clock_offset: Option<String>,

    /// For testing only: how many objects a classification job lists, reads and stores the
    /// findings of at a time (small values make a small bucket take several pages). Hidden from
    /// --help. [default: 500]
    #[arg(long, env = "COFFER_DISCOVERY_JOB_PAGE", value_name = "OBJECTS", hide = true,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub discovery_job_page: Option<u16>,

    /// How long sensitive-data findings are kept after their last update (e.g. `90d`, Macie's
    /// fixed period); older ones are deleted at start and hourly. At least 1d. [default: 90d]
    #[arg(long, env = "COFFER_FINDINGS_RETENTION", value_name = "DURATION")]
    pub findings_retention: Option<String>,
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    metadata: Option<String>,
    metadata_ca: Option<PathBuf>,
    metadata_pool_size: Option<usize>,
    cache_staleness: Option<u64>,
    blobs: Option<String>,
    blobs_endpoint: Option<String>,
    blobs_region: Option<String>,
    blobs_ca: Option<PathBuf>,
    blobs_orphan_grace: Option<String>,
    listen: Option<SocketAddr>,
    account_id: Option<String>,
    region: Option<String>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    tls_sans: Vec<String>,
    #[serde(default)]
    hsm_clusters: Vec<String>,
    shutdown_grace: Option<u64>,
    lifecycle_interval: Option<u64>,
    lifecycle_clock_offset: Option<String>,
    discovery_clock_offset: Option<String>,
    findings_retention: Option<String>,
    s3_domain: Option<String>,
    findings_webhook: Option<String>,
    findings_webhook_ca: Option<PathBuf>,
    anomaly_interval: Option<u64>,
    anomaly_window_minutes: Option<i64>,
    anomaly_baseline_days: Option<i64>,
    anomaly_remediate: Option<Switch>,
    #[serde(default)]
    anomaly_history: Vec<PathBuf>,
    audit: Option<Switch>,
    audit_segment_mib: Option<u64>,
    audit_digest_interval: Option<u64>,
}

/// Settings after layering and checks.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub metadata: crate::metadata::MetadataSpec,
    pub metadata_ca: Option<PathBuf>,
    pub metadata_pool_size: usize,
    pub cache_staleness: std::time::Duration,
    /// Object bytes in a remote S3-compatible store; `None` for DIR/objects.
    pub remote_blobs: Option<crate::remote_blobs::RemoteConfig>,
    pub listen: SocketAddr,
    pub account_id: String,
    pub region: String,
    pub log_format: LogFormat,
    pub log: String,
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub tls_sans: Vec<String>,
    pub hsm_clusters: std::collections::BTreeMap<String, coffer_kms::custom_key_stores::HsmCluster>,
    pub shutdown_grace: std::time::Duration,
    pub lifecycle_interval: std::time::Duration,
    pub lifecycle_clock_offset: std::time::Duration,
    pub discovery_clock_offset: std::time::Duration,
    pub discovery_job_page: usize,
    pub findings_retention: std::time::Duration,
    pub audit: bool,
    pub audit_segment_bytes: u64,
    pub audit_digest_interval: std::time::Duration,
    pub s3_domain: Option<String>,
    /// Where findings are published, and the CA its certificate chains to.
    pub findings_webhook: Option<(String, Option<PathBuf>)>,
    pub anomaly: crate::anomaly_task::AnomalySettings,
    pub insecure_bench_baseline: bool,
}

/// Parses `cluster-<id>=<module path>#<token label>`.
fn parse_hsm_cluster(
    spec: &str,
) -> anyhow::Result<(String, coffer_kms::custom_key_stores::HsmCluster)> {
    let usage = || {
        format!(
            "'{spec}' is not an HSM cluster; write cluster-<11 to 16 of a-z, A-Z, 2-7>=<module path>#<token label>, \
             e.g. cluster-softhsmtoken1=/usr/lib/softhsm/libsofthsm2.so#keys"
        )
    };
    let (id, rest) = spec.split_once('=').with_context(usage)?;
    let (module, label) = rest.rsplit_once('#').with_context(usage)?;
    let suffix = id.strip_prefix("cluster-").with_context(usage)?;
    if !(11..=16).contains(&suffix.len())
        || !suffix
            .chars()
            .all(|c| c.is_ascii_alphabetic() || ('2'..='7').contains(&c))
        || module.is_empty()
        || label.is_empty()
    {
        bail!(usage());
    }
    Ok((
        id.to_owned(),
        coffer_kms::custom_key_stores::HsmCluster {
            module: PathBuf::from(module),
            token_label: label.to_owned(),
        },
    ))
}

/// Parses a duration such as `8d`, `36h`, `90m` or `30s` (a bare number is seconds).
fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("'{text}' is not a duration; write a whole number with s, m, h or d, like 8d"),
    };
    let n: u64 = digits.parse().with_context(|| {
        format!("'{text}' is not a duration; write a whole number with s, m, h or d, like 8d")
    })?;
    n.checked_mul(scale)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .with_context(|| format!("the duration '{text}' is longer than 100 years"))
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("the config file {} is not valid", path.display()))
}

impl Settings {
    pub fn resolve(args: ServerArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let account_id = args
            .account_id
            .or(file.account_id)
            .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.into());
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            bail!(
                "the account id must be 12 digits, not '{account_id}' (set --account-id or COFFER_ACCOUNT_ID)"
            );
        }
        let region = args
            .region
            .or(file.region)
            .unwrap_or_else(|| DEFAULT_REGION.into());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!(
                "the region must be lowercase letters, digits and '-', like us-east-1, not '{region}'"
            );
        }
        let tls_files = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key must be given together"),
        };
        let lifecycle_interval = args
            .lifecycle_interval
            .or(file.lifecycle_interval)
            .unwrap_or(60);
        if lifecycle_interval == 0 {
            bail!("the lifecycle interval must be at least 1 second");
        }
        let discovery_clock_offset =
            match args.discovery_clock_offset.or(file.discovery_clock_offset) {
                Some(text) => parse_duration(&text).context("discovery_clock_offset")?,
                None => std::time::Duration::ZERO,
            };
        let findings_retention = match args.findings_retention.or(file.findings_retention) {
            Some(text) => parse_duration(&text).context("findings_retention")?,
            None => coffer_api::macie::FINDINGS_RETENTION,
        };
        if findings_retention < std::time::Duration::from_secs(86_400) {
            bail!("findings must be kept at least 1d (--findings-retention)");
        }
        let lifecycle_clock_offset =
            match args.lifecycle_clock_offset.or(file.lifecycle_clock_offset) {
                Some(text) => parse_duration(&text).context("lifecycle_clock_offset")?,
                None => std::time::Duration::ZERO,
            };
        let audit_segment_mib = args
            .audit_segment_mib
            .or(file.audit_segment_mib)
            .unwrap_or(64);
        let audit_digest_interval = args
            .audit_digest_interval
            .or(file.audit_digest_interval)
            .unwrap_or(60);
        if audit_segment_mib == 0 || audit_digest_interval == 0 {
            bail!("audit_segment_mib and audit_digest_interval must be at least 1");
        }
        let mut tls_sans = file.tls_sans;
        tls_sans.extend(args.tls_sans);
        let mut hsm_clusters = std::collections::BTreeMap::new();
        for spec in file.hsm_clusters.iter().chain(&args.hsm_clusters) {
            let (id, cluster) = parse_hsm_cluster(spec)?;
            hsm_clusters.insert(id, cluster);
        }
        let s3_domain = args
            .s3_domain
            .or(file.s3_domain)
            .map(|d| d.trim_matches('.').to_ascii_lowercase());
        if let Some(d) = &s3_domain
            && (d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        {
            bail!("the S3 domain must be a DNS name like s3.example.internal, not '{d}'");
        }
        let findings_webhook = match args.findings_webhook.or(file.findings_webhook) {
            None => None,
            Some(url) => {
                let ca = args.findings_webhook_ca.or(file.findings_webhook_ca);
                crate::webhook::Webhook::new(&url, ca.as_deref()).context("findings_webhook")?;
                Some((url, ca))
            }
        };
        let window_minutes = args
            .anomaly_window_minutes
            .or(file.anomaly_window_minutes)
            .unwrap_or(60);
        let baseline_days = args
            .anomaly_baseline_days
            .or(file.anomaly_baseline_days)
            .unwrap_or(28);
        if window_minutes <= 0 || baseline_days <= 0 {
            bail!("anomaly_window_minutes and anomaly_baseline_days must be positive");
        }
        let mut history = file.anomaly_history;
        history.extend(args.anomaly_history);
        let anomaly = crate::anomaly_task::AnomalySettings {
            interval: std::time::Duration::from_secs(
                args.anomaly_interval
                    .or(file.anomaly_interval)
                    .unwrap_or(300),
            ),
            window_minutes,
            baseline_days,
            remediate: args.anomaly_remediate.or(file.anomaly_remediate) == Some(Switch::On),
            history,
        };
        let metadata = crate::metadata::MetadataSpec::parse(
            args.metadata
                .or(file.metadata)
                .as_deref()
                .unwrap_or("sqlite"),
        )?;
        let metadata_pool_size = args
            .metadata_pool_size
            .or(file.metadata_pool_size)
            .unwrap_or(16);
        let cache_staleness = args.cache_staleness.or(file.cache_staleness).unwrap_or(5);
        if cache_staleness == 0 {
            bail!("cache_staleness must be at least 1 second");
        }
        // A cluster lock holds one connection while the change under it needs others.
        if metadata_pool_size < 4 {
            bail!("metadata_pool_size must be at least 4, not {metadata_pool_size}");
        }
        let remote_blobs = match args.blobs.or(file.blobs) {
            None => None,
            Some(b) if b.trim().eq_ignore_ascii_case("local") => None,
            Some(b) => {
                let (bucket, prefix) = crate::remote_blobs::parse_location(b.trim())?;
                let blobs_region = args
                    .blobs_region
                    .or(file.blobs_region)
                    .unwrap_or_else(|| region.clone());
                let (Ok(access_key_id), Ok(secret)) = (
                    std::env::var("COFFER_BLOBS_ACCESS_KEY_ID"),
                    std::env::var("COFFER_BLOBS_SECRET_ACCESS_KEY"),
                ) else {
                    bail!(
                        "--blobs {b} needs the store's credentials in COFFER_BLOBS_ACCESS_KEY_ID and \
                         COFFER_BLOBS_SECRET_ACCESS_KEY (environment only, so that the secret is in no file or command line)"
                    );
                };
                let orphan_grace = match args.blobs_orphan_grace.or(file.blobs_orphan_grace) {
                    Some(text) => parse_duration(&text).context("blobs_orphan_grace")?,
                    None => std::time::Duration::from_secs(3600),
                };
                Some(crate::remote_blobs::RemoteConfig {
                    bucket,
                    prefix,
                    endpoint: args
                        .blobs_endpoint
                        .or(file.blobs_endpoint)
                        .unwrap_or_else(|| format!("https://s3.{blobs_region}.amazonaws.com")),
                    region: blobs_region,
                    ca: args.blobs_ca.or(file.blobs_ca),
                    access_key_id,
                    secret: zeroize::Zeroizing::new(secret),
                    orphan_grace,
                })
            }
        };
        Ok(Self {
            remote_blobs,
            metadata_ca: args.metadata_ca.or(file.metadata_ca),
            metadata,
            metadata_pool_size,
            cache_staleness: std::time::Duration::from_secs(cache_staleness),
            anomaly,
            findings_webhook,
            insecure_bench_baseline: args.insecure_bench_baseline,
            s3_domain,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            listen: match args.listen.or(file.listen) {
                Some(l) => l,
                None => DEFAULT_LISTEN.parse().context("built-in listen address")?,
            },
            account_id,
            region,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Human),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            tls_files,
            tls_sans,
            hsm_clusters,
            shutdown_grace: std::time::Duration::from_secs(
                args.shutdown_grace.or(file.shutdown_grace).unwrap_or(30),
            ),
            lifecycle_interval: std::time::Duration::from_secs(lifecycle_interval),
            lifecycle_clock_offset,
            discovery_clock_offset,
            discovery_job_page: args
                .discovery_job_page
                .map_or(coffer_api::macie::JOB_PAGE, usize::from),
            findings_retention,
            audit: args.audit.or(file.audit).unwrap_or(Switch::On) == Switch::On,
            audit_segment_bytes: audit_segment_mib * 1024 * 1024,
            audit_digest_interval: std::time::Duration::from_secs(audit_digest_interval),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ServerArgs,
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "region = \"eu-west-1\"\naccount_id = \"000000000001\"\n",
        )
        .expect("write");
        let t = T::try_parse_from([
            "t",
            "--config",
            file.to_str().expect("utf8"),
            "--region",
            "ap-south-1",
        ])
        .expect("parse");
        let s = Settings::resolve(t.args).expect("resolve");
        assert_eq!(s.region, "ap-south-1");
        assert_eq!(s.account_id, "000000000001");
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn bad_settings_are_explained() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "nonsense = 1\n").expect("write");
        let t = T::try_parse_from(["t", "--config", file.to_str().expect("utf8")]).expect("parse");
        let e = Settings::resolve(t.args).expect_err("unknown key");
        assert!(format!("{e:#}").contains("nonsense"), "{e:#}");
        let t = T::try_parse_from(["t", "--account-id", "12"]).expect("parse");
        assert!(Settings::resolve(t.args).is_err());
        let t = T::try_parse_from(["t", "--lifecycle-clock-offset", "8 days"]).expect("parse");
        let e = Settings::resolve(t.args).expect_err("bad duration");
        assert!(format!("{e:#}").contains("like 8d"), "{e:#}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8d").expect("d").as_secs(), 8 * 86_400);
        assert_eq!(parse_duration("36h").expect("h").as_secs(), 36 * 3_600);
        assert_eq!(parse_duration("90m").expect("m").as_secs(), 5_400);
        assert_eq!(parse_duration("45").expect("s").as_secs(), 45);
        for bad in [
            "",
            "d",
            "-1d",
            "1w",
            "1.5d",
            "99999999999999999999d",
            "40000d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
