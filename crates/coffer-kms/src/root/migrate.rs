//! Switching a data dir's root of trust to another mode (`coffer operator migrate-root`), with the
//! server stopped.
//!
//! 1. The new root is made with generations that continue the old root's numbering, so every
//!    wrapped record names the root that wrapped it; `root-migration.json` records the new
//!    configuration (nothing secret: the keyring is wrapped, HSM keys stay in the token).
//! 2. Files wrapped under the root (the audit signing key) are rewrapped beside the originals
//!    (`<file>.migrating`).
//! 3. Every wrapped secret in the metadata is rewrapped in one transaction: all, or none.
//! 4. The new configuration is installed: the `.migrating` files renamed over the originals,
//!    `root.json` written, the dev key file (if the old root was one) removed, the migration file
//!    removed.
//!
//! A crash anywhere leaves `root-migration.json`; [`resolve`] (run at every start) reads which
//! generation the metadata is under and finishes step 4 (the transaction committed) or rolls the
//! migration back (it did not). Neither needs the old root.

use std::path::{Path, PathBuf};

use coffer_meta::MetaStore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::config::{Mode, PinSource, RootConfig, root_config_path};
use super::{DEV_KEY_FILE, RootError, RootOfTrust, write_private_atomically};
use crate::root_rotation::failpoint;

pub const MIGRATION_FILE: &str = "root-migration.json";
const MIGRATING_SUFFIX: &str = ".migrating";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Migration {
    format: u32,
    from: Mode,
    /// The new root's first generation; a record at or above it is under the new root.
    first_generation: u32,
    to: RootConfig,
    /// Data-dir-relative files rewrapped beside the originals.
    files: Vec<PathBuf>,
}

/// The mode to migrate to.
#[derive(Debug)]
pub enum Target {
    Shamir {
        shares: u8,
        threshold: u8,
    },
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        pin: PinSource,
    },
}

/// What a migration made.
#[derive(Debug)]
pub struct Migrated {
    pub to: RootConfig,
    /// shamir: the new unseal shares (shown once).
    pub shares: Vec<Zeroizing<String>>,
    pub rewrapped: usize,
    pub first_generation: u32,
}

/// A wrapped file outside the metadata (path relative to the data dir, associated data).
#[derive(Debug, Clone)]
pub struct WrappedFile {
    pub path: PathBuf,
    pub aad: Vec<u8>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.to_owned(),
        source,
    }
}

fn migrating(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(MIGRATING_SUFFIX);
    PathBuf::from(s)
}

/// A new root made and recorded, before anything is rewrapped under it.
#[derive(Debug)]
pub struct Prepared {
    record: Migration,
    to: Box<dyn RootOfTrust>,
    files: Vec<WrappedFile>,
    /// shamir: the new unseal shares. Hand them out before [`complete`]: once the rewrap commits,
    /// only they open the data dir.
    pub shares: Vec<Zeroizing<String>>,
}

/// Makes the new root for migrating `data_dir` from `from` to `target`, and records the migration.
pub fn prepare(
    data_dir: &Path,
    from: &dyn RootOfTrust,
    from_mode: Mode,
    target: Target,
    files: &[WrappedFile],
) -> Result<Prepared, RootError> {
    let migration_path = data_dir.join(MIGRATION_FILE);
    if migration_path.exists() {
        return Err(RootError::Config(
            "a migration is already under way; start the server once to finish or roll it back"
                .into(),
        ));
    }
    let first_generation = from.generations().into_iter().max().unwrap_or(0) + 1;
    // The new root, configured in a scratch file until it is installed.
    let scratch = data_dir.join(format!("{}{MIGRATING_SUFFIX}", super::config::CONFIG_FILE));
    let (to_cfg, shares, to): (RootConfig, Vec<Zeroizing<String>>, Box<dyn RootOfTrust>) =
        match target {
            Target::Shamir { shares, threshold } => {
                let (cfg, texts, root) =
                    super::shamir::create_shamir(&scratch, shares, threshold, first_generation)?;
                (cfg, texts, Box::new(root))
            }
            Target::Pkcs11 {
                module,
                token_label,
                pin,
            } => {
                let cfg = super::pkcs11::create_pkcs11(
                    &scratch,
                    &module,
                    &token_label,
                    pin,
                    first_generation,
                )?;
                let root = super::pkcs11::Pkcs11Root::open_at(&scratch, &cfg)?;
                (cfg, Vec::new(), Box::new(root))
            }
        };
    let _ = std::fs::remove_file(&scratch);
    let record = Migration {
        format: 1,
        from: from_mode,
        first_generation,
        to: to_cfg.clone(),
        files: files.iter().map(|f| f.path.clone()).collect(),
    };
    let text = serde_json::to_vec_pretty(&record)
        .map_err(|e| RootError::Config(format!("cannot encode the migration: {e}")))?;
    write_private_atomically(&migration_path, &text).map_err(io(&migration_path))?;
    Ok(Prepared {
        record,
        to,
        files: files.to_vec(),
        shares,
    })
}

/// Rewraps everything under the prepared root and installs it.
pub async fn complete(
    data_dir: &Path,
    meta: &dyn MetaStore,
    from: &dyn RootOfTrust,
    prepared: Prepared,
) -> Result<Migrated, RootError> {
    failpoint("migrate-root:after-prepare");
    let Prepared {
        record,
        to,
        files,
        shares,
    } = prepared;
    for f in &files {
        let path = data_dir.join(&f.path);
        let wrapped = match std::fs::read(&path) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        let plain = from.unwrap(&f.aad, &wrapped)?;
        let rewrapped = to.wrap(&f.aad, plain.expose())?;
        let side = migrating(&path);
        write_private_atomically(&side, &rewrapped).map_err(io(&side))?;
    }

    let mut changes = Vec::new();
    for s in meta
        .wrapped_secrets()
        .await
        .map_err(|e| RootError::Config(format!("cannot read the metadata: {e}")))?
    {
        let aad = crate::root_rotation::aad_of(&s.kind);
        let plain = from.unwrap(&aad, &s.wrapped)?;
        let new = to.wrap(&aad, plain.expose())?;
        changes.push((s, new));
    }
    failpoint("migrate-root:before-commit");
    let rewrapped = meta
        .replace_wrapped_all(changes)
        .await
        .map_err(|e| RootError::Config(format!("cannot rewrap the metadata: {e}")))?;
    failpoint("migrate-root:after-commit");
    finish(data_dir, &record)?;
    Ok(Migrated {
        first_generation: record.first_generation,
        to: record.to,
        shares,
        rewrapped,
    })
}

/// Installs the new root (idempotent: a resumed finish repeats what was done).
fn finish(data_dir: &Path, m: &Migration) -> Result<(), RootError> {
    for f in &m.files {
        let path = data_dir.join(f);
        let side = migrating(&path);
        if side.exists() {
            std::fs::rename(&side, &path).map_err(io(&path))?;
        }
    }
    failpoint("migrate-root:during-install");
    m.to.save_to(&root_config_path(data_dir))?;
    if m.from == Mode::DevFile {
        let key = data_dir.join(DEV_KEY_FILE);
        match std::fs::remove_file(&key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&key)(e)),
        }
    }
    let migration_path = data_dir.join(MIGRATION_FILE);
    std::fs::remove_file(&migration_path).map_err(io(&migration_path))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(data_dir))
}

/// What [`resolve`] did with an unfinished migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Finished,
    RolledBack,
}

/// Finishes or rolls back a migration a crash interrupted; `None` when there was none.
pub async fn resolve(
    data_dir: &Path,
    meta: &dyn MetaStore,
) -> Result<Option<Resolution>, RootError> {
    let migration_path = data_dir.join(MIGRATION_FILE);
    let text = match std::fs::read(&migration_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&migration_path)(e)),
    };
    let m: Migration = serde_json::from_slice(&text).map_err(|e| {
        RootError::Config(format!("{} is not readable: {e}", migration_path.display()))
    })?;
    let secrets = meta
        .wrapped_secrets()
        .await
        .map_err(|e| RootError::Config(format!("cannot read the metadata: {e}")))?;
    // The rewrap is one transaction: the first record tells for all.
    let committed = match secrets.first() {
        Some(s) => coffer_crypto::wrap::parse(&s.wrapped)?.generation >= m.first_generation,
        // Nothing in the metadata: committed once every wrapped file has its rewrapped twin.
        None => m.files.iter().all(|f| {
            let path = data_dir.join(f);
            migrating(&path).exists() || !path.exists()
        }),
    };
    if committed {
        finish(data_dir, &m)?;
        return Ok(Some(Resolution::Finished));
    }
    for f in &m.files {
        let side = migrating(&data_dir.join(f));
        let _ = std::fs::remove_file(side);
    }
    std::fs::remove_file(&migration_path).map_err(io(&migration_path))?;
    Ok(Some(Resolution::RolledBack))
}
