//! The root of trust: the one key that wraps all key material and stored secrets.
//!
//! [`RootOfTrust`] is the seam. Three modes implement it: the dev key file ([`DevFileRoot`]), a keyring
//! sealed behind Shamir shares of an unseal key ([`KeyringRoot`] once unsealed by an [`Unsealer`]),
//! and non-extractable keys inside a PKCS#11 token ([`Pkcs11Root`]). Nothing above this module knows
//! where the root lives. `root.json` in the data dir names the mode ([`RootConfig`]); without it the
//! data dir is in dev-file mode.

mod config;
mod keyring;
pub mod migrate;
mod pkcs11;
mod shamir;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer_crypto::{CryptoError, SecretBytes};

pub use config::{Mode, PinSource, RootConfig, root_config_path};
pub use keyring::{DevFileRoot, KeyringRoot};
pub use pkcs11::{Pkcs11Root, init_pkcs11};
pub use shamir::{ShareError, UnsealProgress, Unsealer, decode_share, init_shamir};

/// Decodes a keyring encoding (see `docs/formats.md`); returns its generations. For tools and fuzzing:
/// the keyring itself stays inside this module.
pub fn decode_keyring(bytes: &[u8]) -> Result<Vec<u32>, &'static str> {
    keyring::Keyring::decode(bytes).map(|k| k.generation_numbers())
}

/// The dev root key file's name in the data dir.
pub const DEV_KEY_FILE: &str = "root.key";

/// A data dir's root of trust, as found at start.
#[derive(Debug)]
pub enum Opened {
    /// Usable now (dev-file, pkcs11). `created` when a dev root key was generated just now.
    Ready {
        root: std::sync::Arc<dyn RootOfTrust>,
        created: bool,
    },
    /// Shamir mode: nothing can be unwrapped until enough shares are submitted.
    Sealed(Box<Unsealer>),
}

/// Opens the root of trust of `data_dir` as `root.json` names it, or the dev key file (created if
/// the data dir has neither and no metadata yet).
pub fn open(data_dir: &Path) -> Result<Opened, RootError> {
    open_with(data_dir, !data_dir.join("meta.db").exists())
}

/// [`open`], saying whether the data dir is new (holds no metadata from before this process), so
/// that creating a dev root key is allowed.
pub fn open_with(data_dir: &Path, new_data_dir: bool) -> Result<Opened, RootError> {
    match RootConfig::load(data_dir)? {
        None => {
            let key = data_dir.join(DEV_KEY_FILE);
            // A new root next to existing metadata would open none of it, and would be the root
            // everything written from then on is wrapped under: refuse instead.
            if !key.exists() && !new_data_dir {
                return Err(RootError::Config(format!(
                    "{} holds metadata but no root of trust (neither {DEV_KEY_FILE} nor root.json): restore the root key file from where it is kept, or restore a backup with `coffer backup restore`",
                    data_dir.display()
                )));
            }
            let (root, created) = DevFileRoot::load_or_create(&key)?;
            Ok(Opened::Ready {
                root: std::sync::Arc::new(root),
                created,
            })
        }
        Some(cfg) => match cfg.mode {
            Mode::Shamir => Ok(Opened::Sealed(Box::new(Unsealer::load(data_dir)?))),
            Mode::Pkcs11 => Ok(Opened::Ready {
                root: std::sync::Arc::new(Pkcs11Root::open(data_dir, &cfg)?),
                created: false,
            }),
            Mode::DevFile => Err(RootError::Config(
                "root.json cannot name dev-file mode".into(),
            )),
        },
    }
}

/// Refuses to initialise a root of trust where one (or data wrapped under one) already exists.
pub fn check_uninitialised(data_dir: &Path) -> Result<(), RootError> {
    for existing in [config::CONFIG_FILE, DEV_KEY_FILE, "meta.db"] {
        if data_dir.join(existing).exists() {
            return Err(RootError::Config(format!(
                "{} already has a root of trust ({existing} exists); init works on a new, empty data dir — to change the mode of this one, use `coffer operator migrate-root`",
                data_dir.display()
            )));
        }
    }
    Ok(())
}

/// Wraps and unwraps secrets under the root key. `aad` names what is wrapped (purpose, key id,
/// version) so a wrapped value cannot be swapped for another.
///
/// A root has generations: rotation adds one and makes it current; every wrapped record names the
/// generation that wrapped it (see `coffer_crypto::wrap`), and every generation the root still
/// holds keeps unwrapping.
pub trait RootOfTrust: Send + Sync + std::fmt::Debug {
    /// The mode name shown in health output and logs (`dev-file`, `shamir`, `pkcs11`).
    fn mode(&self) -> &'static str;
    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, RootError>;
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, RootError>;
    /// The generation new wraps use.
    fn current_generation(&self) -> u32;
    /// Every generation this root can unwrap, oldest first.
    fn generations(&self) -> Vec<u32>;
    /// Creates a new generation, makes it current and persists that; returns its number.
    fn add_generation(&self) -> Result<u32, RootError>;
    /// Destroys a generation that nothing is wrapped under any more (never the current one).
    fn remove_generation(&self, generation: u32) -> Result<(), RootError>;
    /// For roots kept in hardware: whether the hardware reports every root key as sensitive and
    /// never extractable. `None` for roots held in Coffer's memory.
    fn hardware_protected(&self) -> Option<bool> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("root key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "root key file {path} is not a Coffer root key file ({reason}); restore it from backup, or start with an empty data dir"
    )]
    BadFile { path: PathBuf, reason: &'static str },
    #[error("root key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("a secret wrapped under the root key could not be opened: {0}")]
    Crypto(#[from] CryptoError),
    #[error(
        "this secret is wrapped under root generation {0}, which this root no longer holds (restore the keyring from a backup taken before it was removed)"
    )]
    UnknownGeneration(u32),
    #[error("the root of trust's HSM: {0}")]
    Hsm(#[from] coffer_hsm::HsmError),
    #[error("{0}")]
    Config(String),
}

/// Writes `contents` to `path` with mode 0600: to a temporary file first, fsynced, then renamed over
/// `path` and the directory fsynced, so a crash leaves either no file or the whole file.
pub fn write_private_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("coffer")
    ));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}
