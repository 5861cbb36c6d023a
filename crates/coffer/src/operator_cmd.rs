//! `coffer operator`: choosing the root of trust (init), unsealing and sealing a shamir-mode server,
//! and rotating the root.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use coffer_kms::root::{self, PinSource};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::client::{self, KmsBody, Target};
use crate::config::{DEFAULT_DATA_DIR, DEFAULT_REGION};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Choose the root of trust of a new, empty data dir (before the first `coffer server`).
    ///
    /// `shamir`: a root keyring sealed under an unseal key that exists only as N shares, any T of
    /// which unseal the server; the shares are printed once (or written one per file) and kept
    /// nowhere. `pkcs11`: root keys generated inside a PKCS#11 token, non-extractable; Coffer
    /// asks the token to wrap and unwrap. Without init, a data dir uses a dev key file.
    Init(InitArgs),
    /// Show whether a server is sealed and how many unseal shares it holds.
    Status(ConnectArgs),
    /// Submit unseal shares to a sealed server: from files, from standard input (one per line), or
    /// typed at a prompt that does not echo. A wrong, mistyped or foreign share is refused with the
    /// reason, and the good shares already submitted are kept.
    Unseal(UnsealArgs),
    /// Seal a running shamir-mode server: it drops its root and every unwrapped key, and answers
    /// only health and unseal until unsealed again. Signed with the administrator's credentials.
    Seal(ConnectArgs),
    /// Create a new root generation and rewrap every stored secret under it, then destroy the old
    /// generations. Data keys and ciphertexts are untouched and keep decrypting. Safe to interrupt:
    /// run it again to finish.
    RotateRoot(ConnectArgs),
    /// Switch a data dir's root of trust to another mode, with the server stopped: a new root
    /// (new shares, or a new key in the token), every stored secret rewrapped under it in one
    /// transaction, then the new configuration installed and the old dev key file removed. A crash
    /// at any point is finished or rolled back at the next start. Recorded in the audit log.
    MigrateRoot(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data dir (its server must be stopped).
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The mode to migrate to.
    #[arg(long, value_enum)]
    to: InitMode,
    /// shamir: how many unseal shares to make.
    #[arg(long, value_name = "N", required_if_eq("to", "shamir"))]
    shares: Option<u8>,
    /// shamir: how many shares unseal.
    #[arg(long, value_name = "T", required_if_eq("to", "shamir"))]
    threshold: Option<u8>,
    /// shamir: write each new share to DIR/share-<n>.txt (mode 0600) instead of printing it.
    #[arg(long, value_name = "DIR")]
    share_dir: Option<PathBuf>,
    /// pkcs11: path of the token's PKCS#11 module.
    #[arg(long, value_name = "PATH", required_if_eq("to", "pkcs11"))]
    pkcs11_module: Option<PathBuf>,
    /// pkcs11: label of the token.
    #[arg(long, value_name = "LABEL", required_if_eq("to", "pkcs11"))]
    token_label: Option<String>,
    /// pkcs11: file holding the token's user PIN.
    #[arg(long, value_name = "FILE", conflicts_with = "pin_env")]
    pin_file: Option<PathBuf>,
    /// pkcs11: environment variable holding the PIN.
    #[arg(long, value_name = "VAR")]
    pin_env: Option<String>,
    /// When the current root is shamir: a file holding one of its unseal shares (repeatable).
    #[arg(long = "current-share-file", value_name = "FILE")]
    current_share_files: Vec<PathBuf>,
    /// When the current root is shamir: read its unseal shares from standard input, one per line.
    #[arg(long)]
    current_shares_stdin: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitMode {
    Shamir,
    Pkcs11,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The data dir to initialise (it must not hold a root or metadata yet).
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Root of trust mode.
    #[arg(long, value_enum)]
    mode: InitMode,
    /// shamir: how many unseal shares to make (2 to 255).
    #[arg(long, value_name = "N", required_if_eq("mode", "shamir"))]
    shares: Option<u8>,
    /// shamir: how many shares unseal (2 to N).
    #[arg(long, value_name = "T", required_if_eq("mode", "shamir"))]
    threshold: Option<u8>,
    /// shamir: write each share to DIR/share-<n>.txt (mode 0600) instead of printing it.
    #[arg(long, value_name = "DIR")]
    share_dir: Option<PathBuf>,
    /// pkcs11: path of the token's PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "PATH", required_if_eq("mode", "pkcs11"))]
    pkcs11_module: Option<PathBuf>,
    /// pkcs11: label of the token (the slot is found by it at every start).
    #[arg(long, value_name = "LABEL", required_if_eq("mode", "pkcs11"))]
    token_label: Option<String>,
    /// pkcs11: file holding the token's user PIN; the server reads it at every start.
    #[arg(long, value_name = "FILE", conflicts_with = "pin_env")]
    pin_file: Option<PathBuf>,
    /// pkcs11: environment variable holding the PIN, for init and for every server start.
    #[arg(long, value_name = "VAR")]
    pin_env: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// The server's endpoint.
    #[arg(
        long,
        env = "COFFER_ENDPOINT",
        value_name = "URL",
        default_value = "https://127.0.0.1:8443"
    )]
    pub endpoint: String,
    /// The server's data dir, for its CA certificate and the administrator's credentials file.
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// CA certificate to trust. [default: DIR/tls/ca.pem]
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// Region to sign for.
    #[arg(long, env = "AWS_REGION", value_name = "REGION", default_value = DEFAULT_REGION)]
    region: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UnsealArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A file holding one share (repeatable).
    #[arg(long = "share-file", value_name = "FILE")]
    share_files: Vec<PathBuf>,
    /// Read shares from standard input, one per line.
    #[arg(long, conflicts_with = "share_files")]
    stdin: bool,
    /// Forget the shares submitted so far (to start over) before submitting any.
    #[arg(long)]
    reset: bool,
}

pub fn run(cmd: OperatorCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCommand::Init(a) => init(a),
        OperatorCommand::MigrateRoot(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(migrate_root(a)),
        other => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(remote(other)),
    }
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&a.data_dir)
            .with_context(|| format!("cannot create the data dir {}", a.data_dir.display()))?;
    }
    root::check_uninitialised(&a.data_dir)?;
    match a.mode {
        InitMode::Shamir => {
            let (shares, threshold) = (a.shares.unwrap_or(0), a.threshold.unwrap_or(0));
            let (cfg, texts) = root::init_shamir(&a.data_dir, shares, threshold)?;
            let files = match &a.share_dir {
                Some(dir) => Some(write_share_files(dir, &texts)?),
                None => None,
            };
            if a.json {
                let mut out = json!({
                    "mode": "shamir",
                    "root_id": cfg.root_id,
                    "data_dir": a.data_dir,
                    "shares": shares,
                    "threshold": threshold,
                });
                match &files {
                    Some(f) => out["share_files"] = json!(f),
                    None => {
                        out["share_values"] =
                            json!(texts.iter().map(|t| t.as_str()).collect::<Vec<_>>())
                    }
                }
                println!("{out}");
                return Ok(());
            }
            println!(
                "Coffer's root of trust in {} is now shamir (root id {}).\n",
                a.data_dir.display(),
                cfg.root_id
            );
            match &files {
                Some(f) => {
                    println!(
                        "{shares} unseal shares were written, one per file (mode 0600); any {threshold} unseal Coffer:\n"
                    );
                    for p in f {
                        println!("  {}", p.display());
                    }
                    println!(
                        "\nHand each file to a different operator and delete it here once it is safe elsewhere."
                    );
                }
                None => {
                    println!(
                        "{shares} unseal shares were made; any {threshold} of them unseal Coffer. They are shown this once and kept nowhere:\n"
                    );
                    for (i, t) in texts.iter().enumerate() {
                        println!("  share {}: {}", i + 1, t.as_str());
                    }
                    println!("\nGive each share to a different operator.");
                }
            }
            println!(
                "Then start the server (`coffer server --data-dir {}`); it starts sealed until {threshold} shares are submitted with `coffer operator unseal`.",
                a.data_dir.display()
            );
        }
        InitMode::Pkcs11 => {
            let pin = pin_source(&a.pin_file, &a.pin_env)?;
            let module = a.pkcs11_module.clone().unwrap_or_default();
            let label = a.token_label.clone().unwrap_or_default();
            let cfg = root::init_pkcs11(&a.data_dir, &module, &label, pin)?;
            if a.json {
                println!(
                    "{}",
                    json!({ "mode": "pkcs11", "root_id": cfg.root_id, "data_dir": a.data_dir,
                            "module": module, "token_label": label })
                );
            } else {
                println!(
                    "Coffer's root of trust in {} is now pkcs11 (root id {}): an AES-256 key generated inside the token {label:?}, non-extractable.\nStart the server with `coffer server --data-dir {}`; it opens the token at every start.",
                    a.data_dir.display(),
                    cfg.root_id,
                    a.data_dir.display()
                );
            }
        }
    }
    Ok(())
}

fn pin_source(file: &Option<PathBuf>, env: &Option<String>) -> anyhow::Result<PinSource> {
    Ok(match (file, env) {
        (Some(f), _) => PinSource::file(f),
        (None, Some(v)) => PinSource::Env(v.clone()),
        (None, None) => {
            bail!("pkcs11 mode needs the token's PIN: give --pin-file FILE or --pin-env VARIABLE")
        }
    })
}

/// Opens a shamir root in this process from `shares` (for offline work: restore, migration). A
/// refused share is an error with its reason; too few good shares say how many are needed.
pub fn unseal_offline(
    unsealer: &root::Unsealer,
    shares: &[Zeroizing<String>],
    which: &str,
) -> anyhow::Result<root::KeyringRoot> {
    if shares.is_empty() {
        bail!(
            "{which} is shamir: give {} of its unseal shares",
            unsealer.threshold()
        );
    }
    for s in shares {
        if let root::UnsealProgress::Unsealed(r) = unsealer
            .submit(s.trim())
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            return Ok(r);
        }
    }
    bail!(
        "{} good share(s) given; {which} needs {}",
        unsealer.progress(),
        unsealer.threshold()
    )
}

/// Shares from files and standard input, trimmed.
fn read_shares(files: &[PathBuf], stdin: bool) -> anyhow::Result<Vec<Zeroizing<String>>> {
    let mut out = Vec::new();
    for f in files {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the share file {}", f.display()))?,
        );
        out.push(Zeroizing::new(text.trim().to_owned()));
    }
    if stdin {
        for line in std::io::stdin().lock().lines() {
            let line = Zeroizing::new(line.context("cannot read standard input")?);
            if !line.trim().is_empty() {
                out.push(Zeroizing::new(line.trim().to_owned()));
            }
        }
    }
    Ok(out)
}

async fn migrate_root(a: MigrateArgs) -> anyhow::Result<()> {
    use coffer_kms::root::migrate::{self, Target};
    use coffer_meta::MetaStore;
    use std::sync::Arc;

    if !a.data_dir.join("meta.db").exists() {
        bail!(
            "{} is not a Coffer data dir with SQLite metadata (no meta.db); a node whose metadata is in \
             PostgreSQL cannot migrate its root offline",
            a.data_dir.display()
        );
    }
    let _lock = crate::server::lock_data_dir(&a.data_dir)?;
    let meta: Arc<dyn MetaStore> = Arc::new(coffer_meta::SqlStore::open_sqlite(
        &a.data_dir.join("meta.db"),
    )?);
    if let Some(r) = migrate::resolve(&a.data_dir, meta.as_ref()).await? {
        eprintln!("an earlier, interrupted migration was {r:?}");
    }
    let current: Arc<dyn root::RootOfTrust> = match root::open(&a.data_dir)? {
        root::Opened::Ready { root, .. } => root,
        root::Opened::Sealed(unsealer) => {
            let shares = read_shares(&a.current_share_files, a.current_shares_stdin)?;
            Arc::new(unseal_offline(
                &unsealer,
                &shares,
                "the current root (give its shares with --current-share-file or --current-shares-stdin)",
            )?)
        }
    };
    let from_mode = match current.mode() {
        "dev-file" => root::Mode::DevFile,
        "shamir" => root::Mode::Shamir,
        _ => root::Mode::Pkcs11,
    };
    if a.json && a.to == InitMode::Shamir && a.share_dir.is_none() {
        bail!(
            "with --json, give --share-dir: the new shares must be kept before the rewrap starts"
        );
    }
    let target = match a.to {
        InitMode::Shamir => Target::Shamir {
            shares: a.shares.unwrap_or(0),
            threshold: a.threshold.unwrap_or(0),
        },
        InitMode::Pkcs11 => Target::Pkcs11 {
            module: a.pkcs11_module.clone().unwrap_or_default(),
            token_label: a.token_label.clone().unwrap_or_default(),
            pin: pin_source(&a.pin_file, &a.pin_env)?,
        },
    };
    let to_mode = match a.to {
        InitMode::Shamir => "shamir",
        InitMode::Pkcs11 => "pkcs11",
    };
    if !a.json {
        eprintln!(
            "Migrating the root of {} from {} to {to_mode}: rewrapping every stored secret…",
            a.data_dir.display(),
            current.mode()
        );
    }
    let files = [migrate::WrappedFile {
        path: PathBuf::from("audit").join(crate::audit_cmd::WRAPPED_KEY_FILE),
        aad: crate::audit_cmd::KEY_AAD.to_vec(),
    }];
    let prepared = migrate::prepare(&a.data_dir, current.as_ref(), from_mode, target, &files)?;
    // The new shares go out before anything is rewrapped: once the rewrap commits, only they
    // open this data dir, even if this command is killed a moment later.
    let share_files = match (&a.share_dir, prepared.shares.is_empty()) {
        (Some(dir), false) => Some(write_share_files(dir, &prepared.shares)?),
        _ => None,
    };
    if share_files.is_none() && !prepared.shares.is_empty() && !a.json {
        println!("The new unseal shares, shown this once (the old ones will no longer unseal):\n");
        for (i, t) in prepared.shares.iter().enumerate() {
            println!("  share {}: {}", i + 1, t.as_str());
        }
        println!();
        use std::io::Write;
        std::io::stdout().flush()?;
    }
    let done = migrate::complete(&a.data_dir, meta.as_ref(), current.as_ref(), prepared).await?;
    drop(current);
    record_migration(&a.data_dir, from_mode.as_str(), &done).await?;

    let files = share_files;
    if a.json {
        let mut out = json!({
            "data_dir": a.data_dir, "from": from_mode.as_str(), "to": to_mode,
            "root_id": done.to.root_id, "root_generation": done.first_generation, "rewrapped": done.rewrapped,
        });
        match &files {
            Some(f) => out["share_files"] = json!(f),
            None if !done.shares.is_empty() => {
                out["share_values"] =
                    json!(done.shares.iter().map(|t| t.as_str()).collect::<Vec<_>>())
            }
            None => {}
        }
        println!("{out}");
    } else {
        println!(
            "The root of {} is now {to_mode} (root id {}, generation {}); {} stored secret(s) rewrapped.",
            a.data_dir.display(),
            done.to.root_id,
            done.first_generation,
            done.rewrapped
        );
        if let Some(f) = &files {
            println!(
                "The new unseal shares were written, one per file (the old ones no longer unseal):"
            );
            for p in f {
                println!("  {}", p.display());
            }
        }
    }
    Ok(())
}

/// Records the migration in the audit log (the server is stopped, so this command writes it).
async fn record_migration(
    data_dir: &Path,
    from: &str,
    done: &coffer_kms::root::migrate::Migrated,
) -> anyhow::Result<()> {
    let audit_dir = data_dir.join("audit");
    if !audit_dir.join(crate::audit_cmd::WRAPPED_KEY_FILE).exists() {
        return Ok(());
    }
    // The new root opens the rewrapped signing key; shamir roots come unsealed from the migration.
    let root: std::sync::Arc<dyn root::RootOfTrust> = match root::open(data_dir)? {
        root::Opened::Ready { root, .. } => root,
        // A fresh shamir root: unseal it with the new shares we hold.
        root::Opened::Sealed(unsealer) => {
            std::sync::Arc::new(unseal_offline(&unsealer, &done.shares, "the new root")?)
        }
    };
    let signer = crate::audit_cmd::load_or_create_signer(&audit_dir, root.as_ref())?;
    let log =
        coffer_audit::AuditLog::open(&audit_dir, signer, coffer_audit::AuditOptions::default())?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let event = coffer_api::audit::operator_event(
        &coffer_kms::KmsConfig::default(),
        "MigrateRoot",
        &user,
        "local",
        "coffer operator migrate-root",
        json!({ "from": from, "to": done.to.mode.as_str() }),
        json!({ "rootId": done.to.root_id, "rootGeneration": done.first_generation, "rewrapped": done.rewrapped }),
    );
    log.record(event).await?;
    log.close().await?;
    Ok(())
}

fn write_share_files(dir: &Path, texts: &[Zeroizing<String>]) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let path = dir.join(format!("share-{}.txt", i + 1));
        let mut line = Zeroizing::new(t.as_bytes().to_vec());
        line.push(b'\n');
        root::write_private_atomically(&path, &line)
            .with_context(|| format!("cannot write {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
}

impl ConnectArgs {
    /// The server's data dir (its CA, the administrator's credentials, its audit log).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }
}

pub fn connect_target(c: &ConnectArgs, signed: bool) -> anyhow::Result<Target> {
    let ca = c
        .ca_bundle
        .clone()
        .unwrap_or_else(|| c.data_dir.join("tls").join("ca.pem"));
    let creds = if signed {
        Some(client::credentials(&c.data_dir)?)
    } else {
        None
    };
    client::tls_target(&c.endpoint, &ca, creds, &c.region)
}

/// Sends an unsigned request to Coffer's own endpoints; returns the status and JSON body.
async fn plain(
    t: &Target,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut sender = client::connect(t).await?;
    let (status, bytes) =
        client::call(&mut sender, client::plain_request(t, method, path, body)?).await?;
    let v = serde_json::from_slice(&bytes)
        .with_context(|| format!("{path}: the server's answer is not JSON"))?;
    Ok((status, v))
}

pub async fn operator_action(t: &Target, action: &str) -> anyhow::Result<Value> {
    let mut sender = client::connect(t).await?;
    let body = KmsBody::with_target(&format!("CofferOperator.{action}"), &json!({}))?;
    let (status, bytes) = client::call(&mut sender, client::kms_request(t, &body)?).await?;
    let v: Value = serde_json::from_slice(&bytes).context("the server's answer is not JSON")?;
    if status != 200 {
        bail!(
            "{action} was refused ({}): {}",
            v["__type"].as_str().unwrap_or("error"),
            v["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(v)
}

fn describe_status(v: &Value) -> String {
    if v["sealed"] == json!(false) {
        return format!(
            "Coffer is unsealed (root of trust: {}).",
            v["root_of_trust"].as_str().unwrap_or("?")
        );
    }
    format!(
        "Coffer is sealed: {} of {} shares submitted ({} exist).",
        v["progress"], v["threshold"], v["shares"]
    )
}

async fn remote(cmd: OperatorCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCommand::Init(_) | OperatorCommand::MigrateRoot(_) => {
            unreachable!("handled before")
        }
        OperatorCommand::Status(c) => {
            let t = connect_target(&c, false)?;
            let (_, v) = plain(&t, http::Method::GET, "/_coffer/unseal", None).await?;
            if c.json {
                println!("{v}");
            } else {
                println!("{}", describe_status(&v));
            }
            Ok(())
        }
        OperatorCommand::Seal(c) => {
            let t = connect_target(&c, true)?;
            let v = operator_action(&t, "Seal").await?;
            if c.json {
                println!("{v}");
            } else {
                println!(
                    "Coffer is sealed: it answers only health and unseal until unsealed with `coffer operator unseal`."
                );
            }
            Ok(())
        }
        OperatorCommand::RotateRoot(c) => {
            let t = connect_target(&c, true)?;
            if !c.json {
                eprintln!(
                    "Rotating the root: rewrapping every stored secret under a new root generation…"
                );
            }
            let v = operator_action(&t, "RotateRoot").await?;
            if c.json {
                println!("{v}");
            } else {
                println!(
                    "The root is now generation {}; {} secret(s) rewrapped; generations removed: {}.",
                    v["RootGeneration"], v["Rewrapped"], v["RemovedGenerations"]
                );
            }
            Ok(())
        }
        OperatorCommand::Unseal(a) => unseal(a).await,
    }
}

async fn unseal(a: UnsealArgs) -> anyhow::Result<()> {
    let c = &a.connect;
    let t = connect_target(c, false)?;
    if a.reset {
        let (status, v) = plain(
            &t,
            http::Method::POST,
            "/_coffer/unseal",
            Some(&json!({ "reset": true })),
        )
        .await?;
        if status != 200 {
            bail!("{}", v["message"].as_str().unwrap_or("reset refused"));
        }
        if !c.json {
            println!("Unseal progress reset.");
        }
    }
    let (_, status) = plain(&t, http::Method::GET, "/_coffer/unseal", None).await?;
    if status["sealed"] == json!(false) {
        if c.json {
            println!("{status}");
        } else {
            println!("{}", describe_status(&status));
        }
        return Ok(());
    }

    // Shares from files or standard input are all submitted; a prompt asks until unsealed.
    let interactive = a.share_files.is_empty() && !a.stdin;
    if interactive && !std::io::stdin().is_terminal() {
        bail!(
            "no shares given: use --share-file FILE, --stdin, or run in a terminal to be prompted"
        );
    }
    let mut from_input: Vec<(String, Zeroizing<String>)> = Vec::new();
    for f in &a.share_files {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the share file {}", f.display()))?,
        );
        from_input.push((
            f.display().to_string(),
            Zeroizing::new(text.trim().to_owned()),
        ));
    }
    if a.stdin {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = Zeroizing::new(line.context("cannot read standard input")?);
            if !line.trim().is_empty() {
                from_input.push((
                    format!("line {}", i + 1),
                    Zeroizing::new(line.trim().to_owned()),
                ));
            }
        }
    }
    let mut last = status;
    let mut refused = 0;
    let mut queue = from_input.into_iter();
    loop {
        let (origin, share) = if interactive {
            let prompt = format!(
                "Unseal share ({} of {} held; input hidden): ",
                last["progress"], last["threshold"]
            );
            let typed = Zeroizing::new(
                rpassword::prompt_password(prompt).context("cannot read the share")?,
            );
            if typed.trim().is_empty() {
                break;
            }
            (
                "typed share".to_owned(),
                Zeroizing::new(typed.trim().to_owned()),
            )
        } else {
            match queue.next() {
                Some(s) => s,
                None => break,
            }
        };
        let (code, v) = plain(
            &t,
            http::Method::POST,
            "/_coffer/unseal",
            Some(&json!({ "share": share.as_str() })),
        )
        .await?;
        match code {
            200 => {
                if v["sealed"] == json!(false) {
                    last = v;
                    break;
                }
                if !c.json {
                    println!(
                        "{origin}: accepted ({} of {}).",
                        v["progress"], v["threshold"]
                    );
                }
                last = v;
            }
            409 => {
                last = json!({ "sealed": false, "root_of_trust": "shamir" });
                break;
            }
            _ => {
                refused += 1;
                eprintln!(
                    "{origin}: refused: {}",
                    v["message"].as_str().unwrap_or("no reason given")
                );
                if v["__type"] == "UnsealFailedException" {
                    break;
                }
            }
        }
    }
    if c.json {
        println!("{last}");
    } else if last["sealed"] == json!(false) {
        println!("Coffer is unsealed.");
    } else {
        println!("{}", describe_status(&last));
    }
    // Each operator may submit only their own share: still sealed is not a failure, a refused
    // share is.
    if refused > 0 {
        bail!("{refused} share(s) were refused");
    }
    Ok(())
}
