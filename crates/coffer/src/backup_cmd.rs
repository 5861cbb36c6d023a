//! `coffer backup`: an encrypted, authenticated archive of a running server's data dir, and its
//! restore into a new data dir (which checks the root first and writes nothing when it is wrong).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use coffer_kms::backup::{self, ArchiveHeader};
use coffer_kms::root::{
    self, DevFileRoot, PinSource, Pkcs11Root, RootConfig, RootOfTrust, Unsealer,
};
use coffer_meta::MetaStore;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::operator_cmd::ConnectArgs;

/// Files of the data dir an archive carries besides the metadata (when they exist). The TLS keys
/// and the administrator's credentials are secrets: the archive is encrypted.
const CARRIED: &[&str] = &[
    "audit/signing-key.wrapped",
    "audit/signing-key.pem",
    "tls/ca.pem",
    "tls/ca.key",
    "tls/server.pem",
    "tls/server.key",
    "credentials",
];
const META_ENTRY: &str = "meta.db";
/// Where a restore puts the audit chain head of the backup (the restored server starts a new chain).
const RESTORED_HEAD: &str = "audit/restored-from-head.json";

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Ask a running server for a backup and write it to FILE (mode 0600): the metadata with the
    /// wrapped key material as of one instant, the root configuration, the audit signing key and
    /// signed chain head, the TLS files and the administrator's credentials, encrypted under a
    /// one-use key wrapped by the root of trust. Signed with the administrator's credentials (or a
    /// user allowed `coffer:CreateBackup`).
    Create(CreateArgs),
    /// Restore FILE into a new, empty data dir. The root must open it: the dev root key file
    /// (--root-key), T unseal shares (--share-file or --stdin), or the PKCS#11 token named in the
    /// archive. With the wrong root, or a damaged archive, nothing is written.
    Restore(RestoreArgs),
    /// Show an archive's header (no root needed): when, which root, the audit chain head.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where to write the archive.
    file: PathBuf,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive.
    file: PathBuf,
    /// The new data dir (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// dev-file archives: the root key file of the data dir that was backed up.
    #[arg(long, value_name = "FILE")]
    root_key: Option<PathBuf>,
    /// shamir archives: a file holding one unseal share (repeat for T shares).
    #[arg(long = "share-file", value_name = "FILE")]
    share_files: Vec<PathBuf>,
    /// shamir archives: read unseal shares from standard input, one per line.
    #[arg(long)]
    stdin: bool,
    /// pkcs11 archives: read the token PIN from this file instead of the source named in the
    /// archive (and name it in the restored configuration).
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

/// An archive made by the server.
#[derive(Debug)]
pub struct Made {
    pub header: ArchiveHeader,
    pub bytes: Vec<u8>,
}

/// Builds an archive of `data_dir` (run inside the server, which holds the root).
pub async fn make_archive(
    data_dir: &Path,
    meta: &dyn MetaStore,
    root: &dyn RootOfTrust,
    audit: Option<&coffer_audit::AuditLog>,
) -> anyhow::Result<Made> {
    let backup_id = uuid::Uuid::new_v4().simple().to_string();
    let snapshot = data_dir.join(format!(".backup-{backup_id}.db"));
    let taken = meta.snapshot_to(&snapshot).await;
    let db = taken
        .map_err(anyhow::Error::from)
        .and_then(|()| std::fs::read(&snapshot).context("cannot read the metadata snapshot"));
    let _ = std::fs::remove_file(&snapshot);
    let db = Zeroizing::new(db.context("cannot snapshot the metadata")?);
    // Signed right after the snapshot: the head covers every request acknowledged before it.
    let audit_head = match audit {
        Some(log) => {
            log.sign_head()
                .await
                .context("cannot sign the audit chain head")?;
            let text = std::fs::read(data_dir.join("audit").join("head.json"))
                .context("cannot read the audit chain head")?;
            Some(serde_json::from_slice::<Value>(&text).context("audit/head.json is not JSON")?)
        }
        None => None,
    };
    let root_config = match RootConfig::load(data_dir)? {
        Some(cfg) => Some(serde_json::to_value(cfg)?),
        None => None,
    };
    let mut entries = vec![(META_ENTRY.to_owned(), db.to_vec())];
    for name in CARRIED {
        match std::fs::read(data_dir.join(name)) {
            Ok(bytes) => entries.push(((*name).to_owned(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {name}")),
        }
    }
    let header = ArchiveHeader {
        format: 1,
        backup_id,
        created: coffer_audit::record::now_rfc3339(),
        coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
        root_mode: root.mode().to_owned(),
        root_generation: root.current_generation(),
        root_config,
        archive_key: String::new(),
        audit_head,
        entries: Vec::new(),
    };
    let bytes = backup::seal(header, &entries, root)?;
    for (_, data) in &mut entries {
        zeroize::Zeroize::zeroize(data);
    }
    let header = backup::parse(&bytes)?.header;
    Ok(Made { header, bytes })
}

pub fn run(cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Create(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(create(a)),
        BackupCommand::Restore(a) => restore(a),
        BackupCommand::Inspect(a) => inspect(a),
    }
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    let c = &a.connect;
    let t = crate::operator_cmd::connect_target(c, true)?;
    if !c.json {
        eprintln!("Asking {} for a backup…", c.endpoint);
    }
    let v = crate::operator_cmd::operator_action(&t, "CreateBackup").await?;
    let archive = B64
        .decode(
            v["Archive"]
                .as_str()
                .context("the answer holds no archive")?,
        )
        .context("the archive is not base64")?;
    backup::parse(&archive).context("the server sent something that is not an archive")?;
    root::write_private_atomically(&a.file, &archive)
        .with_context(|| format!("cannot write {}", a.file.display()))?;
    if c.json {
        println!(
            "{}",
            json!({ "file": a.file, "bytes": archive.len(), "backup_id": v["BackupId"],
                    "root_mode": v["RootMode"], "root_generation": v["RootGeneration"],
                    "audit_head": v["AuditHead"] })
        );
    } else {
        println!(
            "Backup {} written to {} ({} bytes; root {} generation {}{}).",
            v["BackupId"].as_str().unwrap_or("?"),
            a.file.display(),
            archive.len(),
            v["RootMode"].as_str().unwrap_or("?"),
            v["RootGeneration"],
            match v["AuditHead"]["lastSeq"].as_u64() {
                Some(seq) => format!("; audit chain signed up to record {seq}"),
                None => String::new(),
            }
        );
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let parsed = backup::parse(&bytes)?;
    let h = &parsed.header;
    if a.json {
        let mut v = serde_json::to_value(h)?;
        v.as_object_mut().map(|o| o.remove("archive_key"));
        println!("{v}");
    } else {
        println!(
            "backup {} made {} by Coffer {}",
            h.backup_id, h.created, h.coffer_version
        );
        println!(
            "root of trust: {} (generation {})",
            h.root_mode, h.root_generation
        );
        if let Some(id) = h.root_config.as_ref().and_then(|c| c["root_id"].as_str()) {
            println!("root id: {id}");
        }
        match &h.audit_head {
            Some(head) => println!(
                "audit chain head: segment {}, record {}, chain {}",
                head["segment"],
                head["lastSeq"],
                head["chain"].as_str().unwrap_or("?")
            ),
            None => println!("audit chain head: none (the audit log was off)"),
        }
        println!("entries: {}", h.entries.join(", "));
    }
    Ok(())
}

/// The root that should open an archive, from what the operator gave.
fn root_for(
    a: &RestoreArgs,
    header: &ArchiveHeader,
    scratch: &Path,
) -> anyhow::Result<Box<dyn RootOfTrust>> {
    match header.root_mode.as_str() {
        "dev-file" => {
            let path = a.root_key.as_ref().context(
                "this backup was made under a dev root key file: give it with --root-key (the root.key of the data dir that was backed up)",
            )?;
            if !path.exists() {
                bail!("the root key file {} does not exist", path.display());
            }
            let (root, _) = DevFileRoot::load_or_create(path)?;
            Ok(Box::new(root))
        }
        "shamir" | "pkcs11" => {
            let cfg_value = header
                .root_config
                .clone()
                .context("the archive names no root configuration")?;
            let mut cfg: RootConfig = serde_json::from_value(cfg_value)
                .context("the archive's root configuration is not valid")?;
            if let (Some(p), Some(pin)) = (cfg.pkcs11.as_mut(), &a.pin_file) {
                p.pin = PinSource::file(pin);
            }
            std::fs::write(
                root::root_config_path(scratch),
                serde_json::to_vec_pretty(&cfg)?,
            )?;
            if header.root_mode == "pkcs11" {
                return Ok(Box::new(Pkcs11Root::open(scratch, &cfg)?));
            }
            let unsealer = Unsealer::load(scratch)?;
            let mut shares: Vec<Zeroizing<String>> = Vec::new();
            for f in &a.share_files {
                shares.push(Zeroizing::new(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))?,
                ));
            }
            if a.stdin {
                for line in std::io::stdin().lock().lines() {
                    let line = Zeroizing::new(line.context("cannot read standard input")?);
                    if !line.trim().is_empty() {
                        shares.push(line);
                    }
                }
            }
            Ok(Box::new(crate::operator_cmd::unseal_offline(
                &unsealer,
                &shares,
                "the root of this backup (give its shares with --share-file or --stdin)",
            )?))
        }
        other => bail!("the archive names an unknown root of trust mode {other:?}"),
    }
}

fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let bytes = Zeroizing::new(
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?,
    );
    let parsed = backup::parse(&bytes)?;
    let target = &a.data_dir;
    if target.exists()
        && std::fs::read_dir(target)
            .with_context(|| format!("cannot read {}", target.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new data dir (nothing was written)",
            target.display()
        );
    }
    let parent = std::path::absolute(target)?
        .parent()
        .map(Path::to_path_buf)
        .context("the data dir has no parent directory")?;
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // Scratch space for the root configuration while the root is opened; removed on every path.
    let scratch = tempfile::Builder::new()
        .prefix(".coffer-restore-")
        .tempdir_in(&parent)
        .context("cannot make a scratch directory")?;
    let root = root_for(&a, &parsed.header, scratch.path())?;
    let entries = parsed.open(root.as_ref())?;

    // Everything is authenticated: stage the data dir next to its final place, then rename it in.
    let staging = tempfile::Builder::new()
        .prefix(".coffer-restoring-")
        .tempdir_in(&parent)
        .context("cannot make a staging directory")?;
    let stage = staging.path();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(stage, std::fs::Permissions::from_mode(0o700))?;
    }
    for (name, data) in &entries {
        write_entry(stage, name, data.expose())?;
    }
    if let Some(cfg) = &parsed.header.root_config {
        let mut cfg: RootConfig = serde_json::from_value(cfg.clone())?;
        if let (Some(p), Some(pin)) = (cfg.pkcs11.as_mut(), &a.pin_file) {
            p.pin = PinSource::file(pin);
        }
        let mut text = serde_json::to_vec_pretty(&cfg)?;
        text.push(b'\n');
        write_entry(stage, "root.json", &text)?;
    }
    if parsed.header.root_mode == "dev-file" {
        let key_path = a.root_key.as_ref().context("--root-key")?;
        let key = Zeroizing::new(std::fs::read(key_path)?);
        write_entry(stage, root::DEV_KEY_FILE, &key)?;
    }
    if let Some(head) = &parsed.header.audit_head {
        write_entry(stage, RESTORED_HEAD, &serde_json::to_vec_pretty(head)?)?;
    }
    if target.exists() {
        std::fs::remove_dir(target)
            .with_context(|| format!("cannot replace the empty {}", target.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, target).with_context(|| {
        format!(
            "cannot move the restored data dir into {}",
            target.display()
        )
    })?;
    std::fs::File::open(&parent)?.sync_all()?;
    if a.json {
        println!(
            "{}",
            json!({ "data_dir": target, "backup_id": parsed.header.backup_id,
                    "root_mode": parsed.header.root_mode, "entries": parsed.header.entries })
        );
    } else {
        println!(
            "Restored backup {} (made {}) into {}. Start it with `coffer server --data-dir {}`{}.",
            parsed.header.backup_id,
            parsed.header.created,
            target.display(),
            target.display(),
            if parsed.header.root_mode == "shamir" {
                "; it starts sealed, as always"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Writes one restored file (mode 0600, directories 0700), refusing names that leave the dir.
fn write_entry(stage: &Path, name: &str, data: &[u8]) -> anyhow::Result<()> {
    let rel = Path::new(name);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!("the archive names a file outside the data dir: {name:?}");
    }
    let path = stage.join(rel);
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    root::write_private_atomically(&path, data)
        .with_context(|| format!("cannot write {}", path.display()))
}
