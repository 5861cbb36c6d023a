//! `coffer bench kms`: a load generator that speaks to a real Coffer exactly as an AWS SDK does —
//! keep-alive HTTPS connections, every request SigV4-signed — and reports throughput and latency
//! next to the throughput of `/_coffer/health` on the same server, the ceiling for this machine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{KmsBody, Target, call, connect, kms_call, kms_request, target};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use coffer_crypto::keys::{self, KeyMaterial, KeySpec, MacAlgorithm, MessageType};
use http_body_util::Full;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load-test the KMS API (Encrypt, Decrypt, GenerateDataKey) against the health endpoint.
    Kms(KmsBenchArgs),
    /// The cost of the audit log: Encrypt throughput of two Coffers started here, one with the
    /// audit log on and one with it off, measured in alternating rounds.
    Audit(AuditBenchArgs),
    /// Object storage: PUT and GET throughput for several object sizes on a Coffer started here,
    /// against the same paths with the package cipher swapped for a copy (an unencrypted
    /// baseline server started alongside), in alternating rounds; optionally one very large
    /// object streamed through, with the server's peak memory.
    S3(crate::bench_s3::S3BenchArgs),
    /// The sensitive-data scanner on one core over generated mixed text, beside a single-literal
    /// search over the same bytes (the ceiling), in alternating rounds.
    Scan(crate::bench_scan::ScanBenchArgs),
    /// A classification job over a bucket of generated mixed text on a Coffer started here, beside
    /// the same objects scanned in this process on every core, in alternating rounds.
    Discovery(crate::bench_discovery::DiscoveryBenchArgs),
    /// Findings queries (ListFindings criteria, orders and deep pages; GetFindingStatistics)
    /// over many stored findings, beside the same requests answered by reading every finding,
    /// in alternating rounds.
    Findings(crate::bench_findings::FindingsBenchArgs),
    /// The scanner's precision, recall and F1 per identifier over a generated corpus of
    /// documents with planted, labelled values and hard negatives.
    ScanAccuracy(crate::bench_scan_eval::AccuracyArgs),
    /// AWS Encryption SDK messages (0x0478, 0x0578) encrypted and decrypted in memory, beside raw
    /// AES-256-GCM over the same bytes in the same frame-sized pieces, in alternating rounds;
    /// optionally beside the Python AWS Encryption SDK.
    Esdk(crate::bench_esdk::EsdkBenchArgs),
    /// Field-level encryption: records/s of a 10-field record encrypted and decrypted, beside
    /// parsing and writing the same records (the ceiling), in alternating rounds.
    Fields(crate::bench_esdk::FieldsBenchArgs),
    /// The cost of the root of trust: Encrypt throughput of Coffers started here in dev-file,
    /// shamir and (given a token) pkcs11 mode, in alternating rounds, and the token's own AES-GCM
    /// rate measured in the same run.
    Root(RootBenchArgs),
    /// SQLite against PostgreSQL metadata: KMS Encrypt, ListAliases and TagResource, S3 PUT and
    /// GET, on two Coffers started here (one with --metadata URL, which must be an empty database)
    /// in alternating rounds, and the cost of a key-cache miss on each.
    Metadata(crate::bench_meta::MetaBenchArgs),
}

#[derive(Debug, Args)]
pub struct RootBenchArgs {
    #[command(flatten)]
    rounds: AuditBenchArgs,
    /// PKCS#11 module for the pkcs11 side (e.g. /usr/lib/softhsm/libsofthsm2.so); without it only
    /// dev-file and shamir are measured.
    #[arg(long, value_name = "PATH", requires_all = ["token_label", "pin_file"])]
    pkcs11_module: Option<PathBuf>,
    /// Label of an initialised token in that module (the bench adds and removes its own keys).
    #[arg(long, value_name = "LABEL")]
    token_label: Option<String>,
    /// File holding the token's user PIN.
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditBenchArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub(crate) clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) duration: f64,
    /// Rounds; each measures every side once (alternating which goes first).
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum BenchOp {
    Health,
    Encrypt,
    Decrypt,
    GenerateDataKey,
    SignRsa2048,
    SignRsa4096,
    SignP256,
    SignP384,
    SignP521,
    SignEd25519,
    VerifyP256,
    GenerateMac,
}

impl BenchOp {
    fn name(self) -> &'static str {
        match self {
            BenchOp::Health => "health",
            BenchOp::Encrypt => "Encrypt",
            BenchOp::Decrypt => "Decrypt",
            BenchOp::GenerateDataKey => "GenerateDataKey",
            BenchOp::SignRsa2048 => "Sign RSA_2048",
            BenchOp::SignRsa4096 => "Sign RSA_4096",
            BenchOp::SignP256 => "Sign P-256",
            BenchOp::SignP384 => "Sign P-384",
            BenchOp::SignP521 => "Sign P-521",
            BenchOp::SignEd25519 => "Sign Ed25519",
            BenchOp::VerifyP256 => "Verify P-256",
            BenchOp::GenerateMac => "GenerateMac",
        }
    }

    /// The key spec and algorithm of a signing, verifying or MAC operation.
    fn primitive(self) -> Option<(KeySpec, Primitive)> {
        use coffer_crypto::keys::SigningAlgorithm as S;
        match self {
            BenchOp::SignRsa2048 => Some((KeySpec::Rsa2048, Primitive::Sign(S::RsassaPssSha256))),
            BenchOp::SignRsa4096 => Some((KeySpec::Rsa4096, Primitive::Sign(S::RsassaPssSha256))),
            BenchOp::SignP256 => Some((KeySpec::EccNistP256, Primitive::Sign(S::EcdsaSha256))),
            BenchOp::SignP384 => Some((KeySpec::EccNistP384, Primitive::Sign(S::EcdsaSha384))),
            BenchOp::SignP521 => Some((KeySpec::EccNistP521, Primitive::Sign(S::EcdsaSha512))),
            BenchOp::SignEd25519 => Some((
                KeySpec::EccNistEdwards25519,
                Primitive::Sign(S::Ed25519Sha512),
            )),
            BenchOp::VerifyP256 => Some((KeySpec::EccNistP256, Primitive::Verify(S::EcdsaSha256))),
            BenchOp::GenerateMac => {
                Some((KeySpec::Hmac256, Primitive::Mac(MacAlgorithm::HmacSha256)))
            }
            _ => None,
        }
    }
}

/// The cryptographic primitive behind an operation, for the raw single-core baseline.
#[derive(Debug, Clone, Copy)]
enum Primitive {
    Sign(coffer_crypto::keys::SigningAlgorithm),
    Verify(coffer_crypto::keys::SigningAlgorithm),
    Mac(MacAlgorithm),
}

/// The primitive's own rate on one core, in this process, on the same message.
fn raw_rate(
    spec: KeySpec,
    primitive: Primitive,
    message: &[u8],
    duration: Duration,
) -> anyhow::Result<f64> {
    let stored = keys::generate(spec).context("generating a local key")?;
    let key = KeyMaterial::load(spec, stored.expose()).context("loading the local key")?;
    let signature = match primitive {
        Primitive::Verify(alg) => key
            .sign(alg, message, MessageType::Raw)
            .context("signing")?,
        _ => Vec::new(),
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        let ok = match primitive {
            Primitive::Sign(alg) => key.sign(alg, message, MessageType::Raw).is_ok(),
            Primitive::Verify(alg) => key
                .verify(alg, message, MessageType::Raw, &signature)
                .unwrap_or(false),
            Primitive::Mac(alg) => key.mac(alg, message).is_ok(),
        };
        if !ok {
            bail!("the local primitive failed");
        }
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

#[derive(Debug, Args)]
pub struct KmsBenchArgs {
    /// Coffer to measure. Without it, the bench starts its own `coffer server` on a free port with
    /// a temporary data dir, and stops it afterwards.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Data dir of the Coffer at --endpoint, for its CA (tls/ca.pem) and credentials file.
    #[arg(long, value_name = "DIR", default_value = "./coffer-data")]
    data_dir: PathBuf,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds to run each operation in each round.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Rounds of (health, operation) measurements; results are medians over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Plaintext size for Encrypt, in bytes (1–4096).
    #[arg(long, default_value_t = 256)]
    plaintext_size: usize,
    /// Operations to run, in order; health is always measured first as the baseline.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BenchOp::Encrypt, BenchOp::Decrypt, BenchOp::GenerateDataKey])]
    ops: Vec<BenchOp>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Kms(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(kms(args))
        }
        BenchCommand::Audit(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(audit_bench(args))
        }
        BenchCommand::S3(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::bench_s3::run(args))
        }
        BenchCommand::Scan(args) => crate::bench_scan::run(args),
        BenchCommand::Findings(args) => crate::bench_findings::run(args),
        BenchCommand::Esdk(args) => crate::bench_esdk::run(args),
        BenchCommand::Fields(args) => crate::bench_esdk::fields(args),
        BenchCommand::Discovery(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::bench_discovery::run(args))
        }
        BenchCommand::ScanAccuracy(args) => crate::bench_scan_eval::run(args),
        BenchCommand::Metadata(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::bench_meta::run(args))
        }
        BenchCommand::Root(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(root_bench(args))
        }
    }
}

/// One server of a comparison, with the KMS request it is measured with.
pub(crate) struct Side {
    label: String,
    target: Arc<Target>,
    body: KmsBody,
}

impl Side {
    pub(crate) fn new(label: &str, target: Arc<Target>, body: KmsBody) -> Self {
        Self {
            label: label.to_owned(),
            target,
            body,
        }
    }
}

/// Makes a symmetric key through the API; returns its id.
pub(crate) async fn create_key(
    t: &Target,
    sender: &mut crate::client::Sender,
    description: &str,
) -> anyhow::Result<String> {
    let key = kms_call(
        t,
        sender,
        "CreateKey",
        json!({ "Description": description }),
    )
    .await?;
    Ok(key["KeyMetadata"]["KeyId"]
        .as_str()
        .context("CreateKey returned no KeyId")?
        .to_owned())
}

/// A key on `endpoint` and the Encrypt request the benches measure with.
async fn encrypt_side(label: &str, endpoint: &str, dir: &Path) -> anyhow::Result<Side> {
    let t = Arc::new(target(endpoint, dir, "us-east-1")?);
    let mut setup = connect(&t).await?;
    let key_id = create_key(&t, &mut setup, &format!("coffer bench {label}")).await?;
    let body = KmsBody::new(
        "Encrypt",
        &json!({ "KeyId": key_id, "Plaintext": B64.encode([0x42u8; 256]), "EncryptionContext": { "purpose": "bench" } }),
    )?;
    Ok(Side {
        label: label.to_owned(),
        target: t,
        body,
    })
}

/// Per side: median ops/s and p99 over rounds; and per side after the first, the median of its
/// per-round ratio to the first side, with the range. The order rotates every round.
pub(crate) struct Compared {
    pub(crate) rates: Vec<f64>,
    pub(crate) p99: Vec<f64>,
    pub(crate) ratios: Vec<Vec<f64>>,
    pub(crate) errors: u64,
}

pub(crate) async fn compare(sides: &[Side], args: &AuditBenchArgs) -> anyhow::Result<Compared> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let n = sides.len();
    let mut rates = vec![Vec::new(); n];
    let mut p99 = vec![Vec::new(); n];
    let mut ratios = vec![Vec::new(); n];
    let mut errors = 0u64;
    for round in 0..args.rounds {
        let mut this = vec![0.0f64; n];
        for k in 0..n {
            let i = (round + k) % n;
            let s = &sides[i];
            let (ok, err, secs, lat) = measure(
                s.target.clone(),
                Prepared::Kms(s.body.clone()),
                args.clients,
                warmup,
                duration,
            )
            .await?;
            errors += err;
            this[i] = ok as f64 / secs;
            rates[i].push(this[i]);
            p99[i].push(percentile(&lat, 0.99));
        }
        for i in 1..n {
            if this[0] > 0.0 {
                ratios[i].push(this[i] / this[0]);
            }
        }
    }
    Ok(Compared {
        rates: rates
            .into_iter()
            .map(|r| median(r).unwrap_or(0.0))
            .collect(),
        p99: p99.into_iter().map(|r| median(r).unwrap_or(0.0)).collect(),
        ratios,
        errors,
    })
}

pub(crate) fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)))
}

pub(crate) fn check_rounds(args: &AuditBenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.duration <= 0.0 || args.rounds == 0 {
        bail!("--clients, --duration and --rounds must be positive");
    }
    Ok(())
}

/// Encrypt on two servers, audit off and on, in alternating rounds.
async fn audit_bench(args: AuditBenchArgs) -> anyhow::Result<()> {
    check_rounds(&args)?;
    let (_off_server, off_endpoint, off_dir) = start_own_server(&["--audit", "off"])?;
    let (_on_server, on_endpoint, on_dir) = start_own_server(&["--audit", "on"])?;
    let sides = vec![
        encrypt_side("audit off", &off_endpoint, &off_dir).await?,
        encrypt_side("audit on", &on_endpoint, &on_dir).await?,
    ];
    if !args.json {
        eprintln!(
            "coffer bench audit: Encrypt, {} clients, {} rounds of {:.1}s per side (after {:.1}s warm-up)",
            args.clients, args.rounds, args.duration, args.warmup
        );
    }
    let c = compare(&sides, &args).await?;
    let ratio = median(c.ratios[1].clone()).unwrap_or(0.0);
    let (lo, hi) = range(&c.ratios[1]);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "operation": "Encrypt",
                "clients": args.clients,
                "rounds": args.rounds,
                "duration_seconds": args.duration,
                "audit_off_ops_per_sec": c.rates[0],
                "audit_on_ops_per_sec": c.rates[1],
                "audit_off_p99_ms": c.p99[0],
                "audit_on_p99_ms": c.p99[1],
                "on_vs_off": ratio,
                "on_vs_off_per_round": c.ratios[1],
                "errors": c.errors,
            }))?
        );
    } else {
        print_sides(&sides, &c);
        println!(
            "audit on keeps {:.0}% of the audit-off throughput (median of per-round ratios; range {:.0}–{:.0}%)",
            ratio * 100.0,
            lo * 100.0,
            hi * 100.0
        );
    }
    if c.errors > 0 {
        bail!("{} requests failed during the measurement", c.errors);
    }
    Ok(())
}

fn print_sides(sides: &[Side], c: &Compared) {
    println!(
        "{:<12} {:>12} {:>9} {:>16}",
        "Encrypt", "ops/s", "p99 ms", "vs first"
    );
    for (i, s) in sides.iter().enumerate() {
        let vs = if i == 0 {
            "1.00".to_owned()
        } else {
            let (lo, hi) = range(&c.ratios[i]);
            format!(
                "{:.2} ({:.2}–{:.2})",
                median(c.ratios[i].clone()).unwrap_or(0.0),
                lo,
                hi
            )
        };
        println!(
            "{:<12} {:>12.0} {:>9.2} {:>16}",
            s.label, c.rates[i], c.p99[i], vs
        );
    }
}

/// Encrypt in dev-file, shamir and pkcs11 mode; and the token's raw AES-GCM rate.
async fn root_bench(a: RootBenchArgs) -> anyhow::Result<()> {
    let args = &a.rounds;
    check_rounds(args)?;
    let mut servers = Vec::new();
    let mut sides = Vec::new();

    let (dev, endpoint, dir) = start_own_server(&[])?;
    sides.push(encrypt_side("dev-file", &endpoint, &dir).await?);
    servers.push(dev);

    let shamir_dir = tempfile::tempdir().context("cannot create a temporary data dir")?;
    let (_, shares) = coffer_kms::root::init_shamir(shamir_dir.path(), 3, 2)?;
    let (server, endpoint) = start_server_in(shamir_dir, &[])?;
    let dir = server.dir().to_owned();
    let t = crate::client::tls_target(
        &endpoint,
        &dir.join("tls").join("ca.pem"),
        None,
        "us-east-1",
    )?;
    for share in shares.iter().take(2) {
        let mut sender = connect(&t).await?;
        let req = crate::client::plain_request(
            &t,
            http::Method::POST,
            "/_coffer/unseal",
            Some(&json!({ "share": share.as_str() })),
        )?;
        let (status, body) = call(&mut sender, req).await?;
        if status != 200 {
            bail!(
                "unsealing the shamir bench server failed: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    sides.push(encrypt_side("shamir", &endpoint, &dir).await?);
    servers.push(server);

    let mut raw = None;
    if let (Some(module), Some(label), Some(pin_file)) =
        (&a.pkcs11_module, &a.token_label, &a.pin_file)
    {
        let hsm_dir = tempfile::tempdir().context("cannot create a temporary data dir")?;
        coffer_kms::root::init_pkcs11(
            hsm_dir.path(),
            module,
            label,
            coffer_kms::root::PinSource::file(pin_file),
        )?;
        let cluster = format!("{HSM_CLUSTER}={}#{label}", module.display());
        let (server, endpoint) = start_server_in(hsm_dir, &["--hsm-cluster", &cluster])?;
        let dir = server.dir().to_owned();
        sides.push(encrypt_side("pkcs11", &endpoint, &dir).await?);
        let pin = coffer_kms::root::PinSource::file(pin_file).read()?;
        let pin = pin.as_str();
        // Keys in a custom key store on the same token: every Encrypt runs in the token.
        if (7..=32).contains(&pin.len()) {
            sides.push(hsm_key_side(&endpoint, &dir, pin).await?);
        } else {
            eprintln!(
                "(the PIN is not 7 to 32 characters, AWS's KeyStorePassword length: HSM-resident keys are not measured)"
            );
        }
        servers.push(server);
        raw = Some(raw_token_gcm(module, label, pin, args.duration)?);
    }

    if !args.json {
        eprintln!(
            "coffer bench root: Encrypt, {} clients, {} rounds of {:.1}s per side (after {:.1}s warm-up)",
            args.clients, args.rounds, args.duration, args.warmup
        );
    }
    let c = compare(&sides, args).await?;
    if args.json {
        let per: Vec<_> = sides
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({ "root_of_trust": s.label, "ops_per_sec": c.rates[i], "p99_ms": c.p99[i],
                        "vs_dev_file": if i == 0 { Some(1.0) } else { median(c.ratios[i].clone()) },
                        "vs_dev_file_per_round": c.ratios[i] })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "operation": "Encrypt", "clients": args.clients, "rounds": args.rounds,
                "duration_seconds": args.duration, "sides": per,
                "token_raw_aes_gcm_ops_per_sec": raw, "errors": c.errors,
            }))?
        );
    } else {
        print_sides(&sides, &c);
        if let Some(r) = raw {
            println!("token AES-256-GCM (256 B, one session, one thread): {r:.0} ops/s");
            if let Some(i) = sides.iter().position(|s| s.label == "HSM key") {
                println!(
                    "Encrypt with a key in the HSM runs at {:.2} of the token's raw rate",
                    c.rates[i] / r
                );
            }
        }
        println!(
            "key material is unwrapped once and cached: the root's cost falls on first use, not on each Encrypt"
        );
    }
    drop(servers);
    if c.errors > 0 {
        bail!("{} requests failed during the measurement", c.errors);
    }
    Ok(())
}

const HSM_CLUSTER: &str = "cluster-coffrbenchhsm";

/// A custom key store on the bench token, connected, with one key in it; the Encrypt side for it.
async fn hsm_key_side(endpoint: &str, dir: &Path, pin: &str) -> anyhow::Result<Side> {
    let t = Arc::new(target(endpoint, dir, "us-east-1")?);
    let mut s = connect(&t).await?;
    let anchor = std::fs::read_to_string(dir.join("tls").join("ca.pem"))?;
    let store = kms_call(
        &t,
        &mut s,
        "CreateCustomKeyStore",
        json!({ "CustomKeyStoreName": format!("bench-{}", uuid::Uuid::new_v4().simple()),
                "CloudHsmClusterId": HSM_CLUSTER, "TrustAnchorCertificate": anchor.trim(),
                "KeyStorePassword": pin }),
    )
    .await?;
    let id = store["CustomKeyStoreId"]
        .as_str()
        .context("no CustomKeyStoreId")?;
    kms_call(
        &t,
        &mut s,
        "ConnectCustomKeyStore",
        json!({ "CustomKeyStoreId": id }),
    )
    .await?;
    let key = kms_call(
        &t,
        &mut s,
        "CreateKey",
        json!({ "Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": id, "Description": "coffer bench hsm key" }),
    )
    .await?;
    let key_id = key["KeyMetadata"]["KeyId"].as_str().context("no KeyId")?;
    let body = KmsBody::new(
        "Encrypt",
        &json!({ "KeyId": key_id, "Plaintext": B64.encode([0x42u8; 256]), "EncryptionContext": { "purpose": "bench" } }),
    )?;
    Ok(Side {
        label: "HSM key".to_owned(),
        target: t,
        body,
    })
}

/// The token's own AES-256-GCM encryption rate for 256-byte messages, one thread.
fn raw_token_gcm(module: &Path, label: &str, pin: &str, seconds: f64) -> anyhow::Result<f64> {
    let token = coffer_hsm::Token::open(module, label, pin)?;
    let key = format!("coffer-bench-{}", uuid::Uuid::new_v4().simple());
    token.generate_aes256(&key)?;
    let result = (|| {
        let data = [0x42u8; 256];
        let mut n = 0u64;
        let start = Instant::now();
        let until = Duration::from_secs_f64(seconds);
        let mut nonce = [0u8; 12];
        while start.elapsed() < until {
            nonce[4..].copy_from_slice(&n.to_be_bytes());
            token.gcm_seal(&key, &nonce, b"bench", &data)?;
            n += 1;
        }
        Ok::<f64, anyhow::Error>(n as f64 / start.elapsed().as_secs_f64())
    })();
    token.destroy_key(&key)?;
    result
}

/// A `coffer server` started for the bench; killed when dropped.
pub(crate) struct OwnServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl OwnServer {
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's peak resident memory so far (VmHWM), in bytes.
    pub(crate) fn peak_rss(&self) -> Option<u64> {
        peak_rss_of(self.child.id())
    }
}

/// A process's peak resident memory so far (VmHWM), in bytes.
pub(crate) fn peak_rss_of(pid: u32) -> Option<u64> {
    crate::fsutil::proc_status_bytes(&pid.to_string(), "VmHWM")
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_own_server(extra: &[&str]) -> anyhow::Result<(OwnServer, String, PathBuf)> {
    let dir = tempfile::tempdir().context("cannot create a temporary data dir")?;
    let (server, endpoint) = start_server_in(dir, extra)?;
    let data_dir = server.dir().to_owned();
    Ok((server, endpoint, data_dir))
}

/// Starts a server on `dir`; returns once it is ready or sealed (waiting for shares).
fn start_server_in(dir: tempfile::TempDir, extra: &[&str]) -> anyhow::Result<(OwnServer, String)> {
    let exe = std::env::current_exe().context("cannot find the coffer binary")?;
    let mut child = Command::new(exe)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(extra)
        .env_remove("COFFER_ADMIN_ACCESS_KEY_ID")
        .env_remove("COFFER_ADMIN_SECRET_ACCESS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start coffer server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let endpoint = loop {
        let Some(line) = lines.next() else {
            bail!("coffer server exited before it was ready");
        };
        let line = line?;
        let found = line
            .split_once(" is ready at ")
            .or_else(|| line.split_once(" is sealed at "));
        if let Some((_, rest)) = found {
            break rest
                .split_whitespace()
                .next()
                .context("ready line")?
                .to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((OwnServer { child, dir }, endpoint))
}

/// The request one operation sends, prepared once.
#[derive(Clone)]
enum Prepared {
    Health,
    Kms(KmsBody),
}

#[derive(Debug, Clone, serde::Serialize)]
struct OpResult {
    operation: &'static str,
    requests: u64,
    errors: u64,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio_to_health: Option<f64>,
    ratio_range: Option<(f64, f64)>,
    /// The primitive alone on one core (signing, verifying and MAC operations).
    raw_ops_per_sec: Option<f64>,
    ratio_to_raw: Option<f64>,
}

/// One measurement of one operation.
#[derive(Debug)]
struct Sample {
    op: BenchOp,
    requests: u64,
    errors: u64,
    rate: f64,
    latencies: Vec<u32>,
    ratio: Option<f64>,
    raw: Option<f64>,
}

async fn sample(
    t: &Arc<Target>,
    op: BenchOp,
    prepared: Prepared,
    args: &KmsBenchArgs,
    warmup: Duration,
    duration: Duration,
    round: usize,
) -> anyhow::Result<Sample> {
    if !args.json {
        eprintln!("  round {round}: {} ...", op.name());
    }
    let (requests, errors, secs, latencies) =
        measure(t.clone(), prepared, args.clients, warmup, duration).await?;
    Ok(Sample {
        op,
        requests,
        errors,
        rate: requests as f64 / secs,
        latencies,
        ratio: None,
        raw: None,
    })
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians over rounds for one operation; latency percentiles over every request of every round.
fn summarise(op: BenchOp, samples: &[Sample]) -> OpResult {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.op == op).collect();
    let mut lat: Vec<u32> = mine
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    lat.sort_unstable();
    OpResult {
        operation: op.name(),
        requests: mine.iter().map(|s| s.requests).sum(),
        errors: mine.iter().map(|s| s.errors).sum(),
        ops_per_sec: median(mine.iter().map(|s| s.rate).collect()).unwrap_or(0.0),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        ratio_to_health: median(mine.iter().filter_map(|s| s.ratio).collect()),
        raw_ops_per_sec: median(mine.iter().filter_map(|s| s.raw).collect()),
        ratio_to_raw: median(
            mine.iter()
                .filter_map(|s| s.raw.filter(|r| *r > 0.0).map(|r| s.rate / r))
                .collect(),
        ),
        ratio_range: {
            let r: Vec<f64> = mine.iter().filter_map(|s| s.ratio).collect();
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (!r.is_empty()).then_some((lo, hi))
        },
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn measure(
    t: Arc<Target>,
    prepared: Prepared,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(u64, u64, f64, Vec<u32>)> {
    let mut tasks = Vec::with_capacity(clients);
    let start = Instant::now() + warmup;
    let end = start + duration;
    for _ in 0..clients {
        let t = t.clone();
        let prepared = prepared.clone();
        let mut sender = connect(&t).await?;
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let req = match &prepared {
                    Prepared::Health => hyper::Request::get("/_coffer/health")
                        .header("host", &t.host)
                        .body(Full::new(Bytes::new()))
                        .map_err(anyhow::Error::from),
                    Prepared::Kms(body) => kms_request(&t, body),
                };
                let result = match req {
                    Ok(req) => call(&mut sender, req).await,
                    Err(e) => Err(e),
                };
                let took = now.elapsed();
                if now >= start {
                    match result {
                        Ok((200, _)) => {
                            ok += 1;
                            lat.push(took.as_micros().min(u32::MAX as u128) as u32);
                        }
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            match connect(&t).await {
                                Ok(s) => sender = s,
                                Err(_) => break,
                            }
                        }
                    }
                } else if result.is_err() {
                    match connect(&t).await {
                        Ok(s) => sender = s,
                        Err(_) => break,
                    }
                }
            }
            (ok, errors, lat)
        }));
    }
    let (mut ok, mut errors, mut lat) = (0, 0, Vec::new());
    for task in tasks {
        let (o, e, l) = task.await?;
        ok += o;
        errors += e;
        lat.extend(l);
    }
    lat.sort_unstable();
    Ok((ok, errors, duration.as_secs_f64(), lat))
}

async fn kms(args: KmsBenchArgs) -> anyhow::Result<()> {
    if !(1..=4096).contains(&args.plaintext_size) {
        bail!("--plaintext-size must be 1 to 4096 bytes");
    }
    if args.clients == 0 || args.duration <= 0.0 || args.rounds == 0 {
        bail!("--clients, --duration and --rounds must be positive");
    }
    let (_own, endpoint, data_dir) = match &args.endpoint {
        Some(e) => (None, e.clone(), args.data_dir.clone()),
        None => {
            let (own, endpoint, dir) = start_own_server(&[])?;
            (Some(own), endpoint, dir)
        }
    };
    let t = Arc::new(target(&endpoint, &data_dir, &args.region)?);

    // One key and one ciphertext to work with, made through the API itself.
    let mut setup = connect(&t).await?;
    let key_id = create_key(&t, &mut setup, "coffer bench").await?;
    let plaintext = B64.encode(vec![0x42u8; args.plaintext_size]);
    let ctx = json!({ "purpose": "bench" });
    let sealed = kms_call(
        &t,
        &mut setup,
        "Encrypt",
        json!({ "KeyId": key_id, "Plaintext": plaintext, "EncryptionContext": ctx }),
    )
    .await?;
    let blob = sealed["CiphertextBlob"]
        .as_str()
        .context("Encrypt returned no blob")?
        .to_owned();

    // Keys and request bodies for the signing and MAC operations asked for.
    let message = B64.encode(vec![0x5au8; 256]);
    let mut primitive_bodies = std::collections::HashMap::new();
    for &op in &args.ops {
        let Some((spec, primitive)) = op.primitive() else {
            continue;
        };
        let usage = if spec.is_hmac() {
            "GENERATE_VERIFY_MAC"
        } else {
            "SIGN_VERIFY"
        };
        let created = kms_call(
            &t,
            &mut setup,
            "CreateKey",
            json!({ "KeySpec": spec.as_str(), "KeyUsage": usage }),
        )
        .await?;
        let id = created["KeyMetadata"]["KeyId"]
            .as_str()
            .context("CreateKey returned no KeyId")?
            .to_owned();
        let body = match primitive {
            Primitive::Sign(alg) => KmsBody::new(
                "Sign",
                &json!({ "KeyId": id, "Message": message, "SigningAlgorithm": alg.as_str() }),
            )?,
            Primitive::Verify(alg) => {
                let signed = kms_call(
                    &t,
                    &mut setup,
                    "Sign",
                    json!({ "KeyId": id, "Message": message, "SigningAlgorithm": alg.as_str() }),
                )
                .await?;
                KmsBody::new(
                    "Verify",
                    &json!({ "KeyId": id, "Message": message, "Signature": signed["Signature"], "SigningAlgorithm": alg.as_str() }),
                )?
            }
            Primitive::Mac(alg) => KmsBody::new(
                "GenerateMac",
                &json!({ "KeyId": id, "Message": message, "MacAlgorithm": alg.as_str() }),
            )?,
        };
        primitive_bodies.insert(op, body);
    }
    let raw_message = vec![0x5au8; 256];

    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let ops: Vec<BenchOp> = args
        .ops
        .iter()
        .copied()
        .filter(|o| *o != BenchOp::Health)
        .collect();
    if !args.json {
        eprintln!(
            "coffer bench kms: {} clients, {} rounds of {:.1}s per operation (after {:.1}s warm-up), against {endpoint}",
            args.clients, args.rounds, args.duration, args.warmup
        );
    }
    // The machine is noisy, so health is measured right before and after every operation, and each
    // operation's ratio is taken against the mean of the two ceilings around it. Rounds repeat the
    // whole sequence; the table shows medians over rounds.
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_health: Option<f64> = None;
    for round in 1..=args.rounds {
        let health = || {
            sample(
                &t,
                BenchOp::Health,
                Prepared::Health,
                &args,
                warmup,
                duration,
                round,
            )
        };
        for &op in &ops {
            let health_before = match last_health {
                Some(h) => h,
                None => {
                    let s = health().await?;
                    let rate = s.rate;
                    samples.push(s);
                    rate
                }
            };
            let prepared = match op {
                BenchOp::Health => Prepared::Health,
                BenchOp::Encrypt => Prepared::Kms(KmsBody::new(
                    "Encrypt",
                    &json!({ "KeyId": key_id, "Plaintext": plaintext, "EncryptionContext": ctx }),
                )?),
                BenchOp::Decrypt => Prepared::Kms(KmsBody::new(
                    "Decrypt",
                    &json!({ "CiphertextBlob": blob, "EncryptionContext": ctx }),
                )?),
                BenchOp::GenerateDataKey => Prepared::Kms(KmsBody::new(
                    "GenerateDataKey",
                    &json!({ "KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": ctx }),
                )?),
                other => Prepared::Kms(
                    primitive_bodies
                        .get(&other)
                        .context("no request prepared for this operation")?
                        .clone(),
                ),
            };
            let raw = match op.primitive() {
                Some((spec, primitive)) => {
                    let message = raw_message.clone();
                    Some(
                        tokio::task::spawn_blocking(move || {
                            raw_rate(spec, primitive, &message, duration)
                        })
                        .await??,
                    )
                }
                None => None,
            };
            let mut s = sample(&t, op, prepared, &args, warmup, duration, round).await?;
            s.raw = raw;
            let h = health().await?;
            let ceiling = (health_before + h.rate) / 2.0;
            s.ratio = (ceiling > 0.0).then(|| s.rate / ceiling);
            last_health = Some(h.rate);
            samples.push(s);
            samples.push(h);
        }
    }
    let results: Vec<OpResult> = std::iter::once(BenchOp::Health)
        .chain(ops.iter().copied())
        .map(|op| summarise(op, &samples))
        .collect();
    let ceiling = results.first().map(|r| r.ops_per_sec).unwrap_or(0.0);

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "endpoint": endpoint,
                "clients": args.clients,
                "duration_seconds": args.duration,
                "rounds": args.rounds,
                "plaintext_size": args.plaintext_size,
                "health_ceiling_ops_per_sec": ceiling,
                "results": results,
            }))?
        );
    } else {
        println!(
            "{:<16} {:>10} {:>8} {:>12} {:>9} {:>9} {:>14} {:>12} {:>8}",
            "operation",
            "requests",
            "errors",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "vs health",
            "raw 1-core",
            "vs raw"
        );
        for r in &results {
            let ratio = match (r.ratio_to_health, r.ratio_range) {
                (Some(m), Some((lo, hi))) => {
                    format!("{:.0}% ({:.0}–{:.0})", m * 100.0, lo * 100.0, hi * 100.0)
                }
                _ => "ceiling".into(),
            };
            let raw = r
                .raw_ops_per_sec
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into());
            let vs_raw = r
                .ratio_to_raw
                .map(|x| format!("{:.0}%", x * 100.0))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<16} {:>10} {:>8} {:>12.0} {:>9.2} {:>9.2} {:>14} {:>12} {:>8}",
                r.operation,
                r.requests,
                r.errors,
                r.ops_per_sec,
                r.p50_ms,
                r.p99_ms,
                ratio,
                raw,
                vs_raw
            );
        }
        println!(
            "(medians over {} rounds; range of the health ratio in brackets; raw 1-core: the primitive alone on one core, same run)",
            args.rounds
        );
    }
    if results.iter().any(|r| r.errors > 0) {
        bail!("some requests failed; see the errors column");
    }
    Ok(())
}
