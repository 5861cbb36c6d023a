//! The audit log's signing key (ECDSA P-384, stored wrapped under the root key) and the
//! `coffer audit` commands: verify, query, export, public-key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use coffer_audit::query::{Filter, Outcome};
use coffer_audit::{DigestSigner, PUBLIC_KEY_FILE, verify};
use coffer_crypto::keys::{self, KeyMaterial, KeySpec, MessageType, SigningAlgorithm};
use coffer_kms::root::{RootOfTrust, write_private_atomically};
use serde_json::Value;

use crate::config::DEFAULT_DATA_DIR;

pub const WRAPPED_KEY_FILE: &str = "signing-key.wrapped";
pub const KEY_AAD: &[u8] = b"coffer/audit/signing-key/v1";

/// Signs digests with the audit key, unwrapped in memory.
#[derive(Debug)]
pub struct RootSigner {
    key: KeyMaterial,
    public: Vec<u8>,
}

impl DigestSigner for RootSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.key
            .sign(SigningAlgorithm::EcdsaSha384, message, MessageType::Raw)
            .map_err(|e| e.to_string())
    }

    fn public_key_der(&self) -> &[u8] {
        &self.public
    }
}

/// Loads the audit signing key from `audit_dir`, creating it on first start, and keeps the public
/// key file next to it.
pub fn load_or_create_signer(
    audit_dir: &Path,
    root: &dyn RootOfTrust,
) -> anyhow::Result<Arc<RootSigner>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(audit_dir)
        .with_context(|| format!("cannot create the audit dir {}", audit_dir.display()))?;
    let wrapped_path = audit_dir.join(WRAPPED_KEY_FILE);
    let private = match std::fs::read(&wrapped_path) {
        Ok(wrapped) => root.unwrap(KEY_AAD, &wrapped).with_context(|| {
            format!(
                "cannot unwrap the audit signing key {} with this root key",
                wrapped_path.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let private = keys::generate(KeySpec::EccNistP384)
                .map_err(|e| anyhow::anyhow!("cannot generate the audit signing key: {e}"))?;
            let wrapped = root
                .wrap(KEY_AAD, private.expose())
                .context("cannot wrap the audit signing key")?;
            write_private_atomically(&wrapped_path, &wrapped)
                .with_context(|| format!("cannot write {}", wrapped_path.display()))?;
            tracing::info!(path = %wrapped_path.display(), "generated the audit signing key");
            private
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", wrapped_path.display()));
        }
    };
    let key = KeyMaterial::load(KeySpec::EccNistP384, private.expose())
        .map_err(|e| anyhow::anyhow!("the audit signing key is not a P-384 key: {e}"))?;
    let public = key
        .public_key_der()
        .map_err(|e| anyhow::anyhow!("the audit signing key has no public key: {e}"))?;
    let pem = coffer_audit::public_key_pem(&public);
    let pem_path = audit_dir.join(PUBLIC_KEY_FILE);
    if std::fs::read_to_string(&pem_path).ok().as_deref() != Some(pem.as_str()) {
        write_private_atomically(&pem_path, pem.as_bytes())
            .with_context(|| format!("cannot write {}", pem_path.display()))?;
    }
    Ok(Arc::new(RootSigner { key, public }))
}

/// Rewraps the audit signing key file under the root's current generation (after a root rotation
/// added one). The file is replaced atomically: a crash leaves the old or the new wrapping, both
/// of which the root still opens.
pub fn rewrap_signer(wrapped_path: &Path, root: &Arc<dyn RootOfTrust>) -> anyhow::Result<()> {
    let wrapped = match std::fs::read(wrapped_path) {
        Ok(w) => w,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", wrapped_path.display())),
    };
    let generation = coffer_crypto::wrap::parse(&wrapped)
        .map(|p| p.generation)
        .map_err(|e| anyhow::anyhow!("{} is malformed: {e}", wrapped_path.display()))?;
    if generation == root.current_generation() {
        return Ok(());
    }
    let private = root
        .unwrap(KEY_AAD, &wrapped)
        .context("cannot unwrap the audit signing key")?;
    let rewrapped = root
        .wrap(KEY_AAD, private.expose())
        .context("cannot wrap the audit signing key")?;
    write_private_atomically(wrapped_path, &rewrapped)
        .with_context(|| format!("cannot write {}", wrapped_path.display()))
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole log: every record's hash chain, every signed digest, every segment, and the
    /// signed head. Exits 1 and names the first break when anything was changed, removed, inserted,
    /// reordered or cut off.
    Verify(VerifyArgs),
    /// Show events, newest last, filtered by time, operation, key, principal, source IP or outcome.
    Query(QueryArgs),
    /// Write the events as CloudTrail log files (`{"Records": [...]}`), one per segment.
    Export(ExportArgs),
    /// Print the audit public key (PEM), to keep somewhere the data dir's owner cannot change.
    PublicKey(DirArgs),
    /// Access anomalies: a baseline per principal from the log (requests, bytes read, distinct
    /// objects and keys, errors and denials per hour, source IPs, keys and hours used), and an
    /// alert when the latest window departs strongly from it; alerts go to a webhook, and with
    /// --remediate the principal's access keys are deactivated.
    Anomalies(crate::anomaly_cmd::AnomalyArgs),
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// The server's data dir (the log is in DIR/audit).
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The server's data dir (the log is in DIR/audit). Nodes that share one PostgreSQL database
    /// each keep a chain of their own: give every node's data dir (repeat the flag) to check them
    /// all together.
    #[arg(
        long = "data-dir",
        env = "COFFER_DATA_DIR",
        value_name = "DIR",
        default_value = DEFAULT_DATA_DIR
    )]
    pub data_dirs: Vec<PathBuf>,
    /// PEM public key to check the digests with (one per --data-dir, in the same order). Default:
    /// DIR/audit/signing-key.pem — give a copy kept elsewhere, or whoever can write the data dir can
    /// also replace the key.
    #[arg(long, value_name = "PEM")]
    pub public_key: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutcomeArg {
    Success,
    Failure,
    Denied,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Events at or after this time (RFC 3339, e.g. 2026-11-22T00:00:00Z, or a date 2026-11-22).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Events at or before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Operation name, e.g. Decrypt.
    #[arg(long = "event", value_name = "NAME")]
    pub event_name: Option<String>,
    /// Key id or key ARN.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Principal ARN (userIdentity.arn).
    #[arg(long, value_name = "ARN")]
    pub principal: Option<String>,
    /// Source IP address.
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<String>,
    /// success, failure (any error) or denied (refused authentication or authorization).
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON event per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Directory to write the CloudTrail files into (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

fn audit_dir(d: &DirArgs) -> anyhow::Result<PathBuf> {
    let dir = d.data_dir.join("audit");
    if !dir.is_dir() {
        bail!(
            "no audit log at {} (is --data-dir the server's data dir?)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Widens a date to a time bound: `2026-11-22` → the start (or end) of that day.
fn time_bound(t: &str, end: bool) -> String {
    if t.len() == 10 {
        format!("{t}T{}Z", if end { "23:59:59" } else { "00:00:00" })
    } else {
        t.to_owned()
    }
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        AuditCommand::Verify(a) => verify_cmd(a),
        AuditCommand::Query(a) => query_cmd(a).map(|()| std::process::ExitCode::SUCCESS),
        AuditCommand::Export(a) => export_cmd(a).map(|()| std::process::ExitCode::SUCCESS),
        AuditCommand::Anomalies(a) => crate::anomaly_cmd::run(a),
        AuditCommand::PublicKey(d) => {
            let path = audit_dir(&d)?.join(PUBLIC_KEY_FILE);
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            print!("{pem}");
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

fn verify_cmd(a: VerifyArgs) -> anyhow::Result<std::process::ExitCode> {
    if !a.public_key.is_empty() && a.public_key.len() != a.data_dirs.len() {
        bail!(
            "give one --public-key per --data-dir ({} data dirs, {} keys), or none to use each dir's own",
            a.data_dirs.len(),
            a.public_key.len()
        );
    }
    let mut reports = Vec::new();
    for (i, data_dir) in a.data_dirs.iter().enumerate() {
        let dir = audit_dir(&DirArgs {
            data_dir: data_dir.clone(),
        })?;
        let pem_path = a
            .public_key
            .get(i)
            .cloned()
            .unwrap_or_else(|| dir.join(PUBLIC_KEY_FILE));
        let pem = std::fs::read_to_string(&pem_path)
            .with_context(|| format!("cannot read the public key {}", pem_path.display()))?;
        let public = coffer_audit::public_key_from_pem(&pem)?;
        reports.push((data_dir, verify::verify(&dir, &public)?));
    }
    let all_ok = reports.iter().all(|(_, r)| r.ok());
    if a.json {
        let out = match reports.as_slice() {
            [(_, only)] => serde_json::to_value(only)?,
            many => serde_json::json!({
                "ok": all_ok,
                "chains": many
                    .iter()
                    .map(|(d, r)| Ok(serde_json::json!({ "data_dir": d, "report": serde_json::to_value(r)? })))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let several = reports.len() > 1;
        for (data_dir, report) in &reports {
            let who = if several {
                format!("{}: ", data_dir.display())
            } else {
                String::new()
            };
            match &report.problem {
                None => {
                    println!(
                        "{who}audit log intact: {}, {} ({}, {}), up to seq {}",
                        count(report.segments, "segment"),
                        count(report.records, "record"),
                        count(report.events, "event"),
                        count(report.digests, "signed digest"),
                        report.last_seq
                    );
                    if report.open {
                        println!(
                            "{who}the last segment is open (the server is running, or stopped without closing it); \
                             {} records after the last digest are chained but not yet signed",
                            report.unsigned_tail
                        );
                    }
                }
                Some(b) => {
                    println!(
                        "{who}audit log BROKEN after {} intact records",
                        report.records
                    );
                    println!("  {b}");
                }
            }
        }
        if several {
            let broken = reports.iter().filter(|(_, r)| !r.ok()).count();
            if broken == 0 {
                println!("all {} chains intact", reports.len());
            } else {
                println!("{broken} of {} chains BROKEN", reports.len());
            }
        }
    }
    Ok(if all_ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

fn filter_of(a: &QueryArgs) -> Filter {
    Filter {
        since: a.since.as_deref().map(|t| time_bound(t, false)),
        until: a.until.as_deref().map(|t| time_bound(t, true)),
        event_name: a.event_name.clone(),
        key: a.key.clone(),
        principal: a.principal.clone(),
        source_ip: a.source_ip.clone(),
        outcome: a.outcome.map(|o| match o {
            OutcomeArg::Success => Outcome::Success,
            OutcomeArg::Failure => Outcome::Failure,
            OutcomeArg::Denied => Outcome::Denied,
        }),
    }
}

fn field<'a>(e: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = e;
    for p in path {
        match cur.get(p) {
            Some(v) => cur = v,
            None => return "-",
        }
    }
    cur.as_str().unwrap_or("-")
}

fn query_cmd(a: QueryArgs) -> anyhow::Result<()> {
    let dir = audit_dir(&a.dir)?;
    let filter = filter_of(&a);
    let limit = a.limit.unwrap_or(usize::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !a.json {
        writeln!(
            out,
            "{:<20}  {:<32}  {:<28}  {:<15}  {:<40}  KEY",
            "TIME", "EVENT", "OUTCOME", "SOURCE IP", "PRINCIPAL"
        )?;
    }
    let mut n = 0usize;
    let mut io_err = None;
    coffer_audit::query::for_each_event(&dir, &filter, |_, e| {
        let r = if a.json {
            writeln!(out, "{e}")
        } else {
            let key = e
                .get("resources")
                .and_then(|r| r.get(0))
                .map(|r| field(r, &["ARN"]))
                .unwrap_or("-");
            let outcome = e.get("errorCode").and_then(Value::as_str).unwrap_or("OK");
            writeln!(
                out,
                "{:<20}  {:<32}  {:<28}  {:<15}  {:<40}  {}",
                field(&e, &["eventTime"]),
                field(&e, &["eventName"]),
                outcome,
                field(&e, &["sourceIPAddress"]),
                field(&e, &["userIdentity", "arn"]),
                key
            )
        };
        if let Err(err) = r {
            io_err = Some(err);
            return false;
        }
        n += 1;
        n < limit
    })?;
    match io_err {
        // A closed pipe (`| head`) is a normal way to stop reading.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Some(e) => return Err(e.into()),
        None => {}
    }
    out.flush().or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}

fn export_cmd(a: ExportArgs) -> anyhow::Result<()> {
    let dir = audit_dir(&a.dir)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut by_segment: Vec<(u64, Vec<Value>)> = Vec::new();
    coffer_audit::query::for_each_event(&dir, &Filter::default(), |seg, e| {
        match by_segment.last_mut() {
            Some((s, events)) if *s == seg => events.push(e),
            _ => by_segment.push((seg, vec![e])),
        }
        true
    })?;
    let mut files = 0;
    let mut events = 0;
    for (seg, records) in by_segment {
        let first = records.first();
        let account = first
            .map(|e| field(e, &["recipientAccountId"]))
            .unwrap_or("-");
        let region = first.map(|e| field(e, &["awsRegion"])).unwrap_or("-");
        let stamp: String = first
            .map(|e| field(e, &["eventTime"]))
            .unwrap_or("-")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(13)
            .collect();
        let name = format!("{account}_CloudTrail_{region}_{stamp}Z_coffer-{seg:08}.json");
        let path = a.out.join(&name);
        events += records.len();
        let body = serde_json::json!({ "Records": records });
        std::fs::write(&path, serde_json::to_vec(&body)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        files += 1;
    }
    eprintln!(
        "wrote {events} events in {files} CloudTrail files to {}",
        a.out.display()
    );
    Ok(())
}

/// `1 record`, `2 records`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
