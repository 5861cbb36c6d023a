//! `root.json`: which root of trust a data dir uses, written once by `coffer operator init` and
//! updated when the root rotates. It holds nothing that alone can rebuild a root: in shamir mode the
//! keyring is wrapped under the unseal key (which only the shares rebuild), in pkcs11 mode the keys
//! never leave the token and the PIN is referenced, not stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{RootError, write_private_atomically};

pub const CONFIG_FILE: &str = "root.json";
const FORMAT: u32 = 1;

/// The path of `root.json` in `data_dir`.
pub fn root_config_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONFIG_FILE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    DevFile,
    Shamir,
    Pkcs11,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DevFile => "dev-file",
            Mode::Shamir => "shamir",
            Mode::Pkcs11 => "pkcs11",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    pub format: u32,
    pub mode: Mode,
    /// 32 hex digits naming this root of trust; unseal shares and HSM key labels carry it.
    pub root_id: String,
    /// When `coffer operator init` ran (RFC 3339).
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shamir: Option<ShamirConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Config>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShamirConfig {
    pub threshold: u8,
    pub shares: u8,
    /// Per share index, SHA-256 of the share as issued (hex): a submitted share is checked against
    /// it before it is kept. The shares are uniformly random, so the digests give nothing away.
    pub share_digests: BTreeMap<u8, String>,
    /// The keyring (root key generations), wrapped under the unseal key (base64).
    pub keyring: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token; the slot is found by it at every start.
    pub token_label: String,
    pub pin: PinSource,
    pub current_generation: u32,
    /// Every generation whose key the token holds, oldest first.
    pub generations: Vec<u32>,
}

/// Where the token's user PIN comes from; the PIN itself is never written to the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PinSource {
    /// A file holding the PIN (one line; mode 0600 or stricter).
    File(PathBuf),
    /// An environment variable of the server process.
    Env(String),
}

impl PinSource {
    /// A PIN file, named by its absolute path (the server may start in another directory).
    pub fn file(path: &Path) -> Self {
        PinSource::File(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
    }

    pub fn read(&self) -> Result<Zeroizing<String>, RootError> {
        match self {
            PinSource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    RootError::Config(format!(
                        "cannot read the PKCS#11 PIN file {}: {source}",
                        path.display()
                    ))
                })?);
                let pin = text.trim_end_matches(['\r', '\n']);
                if pin.is_empty() {
                    return Err(RootError::Config(format!(
                        "the PKCS#11 PIN file {} is empty",
                        path.display()
                    )));
                }
                Ok(Zeroizing::new(pin.to_owned()))
            }
            PinSource::Env(var) => match std::env::var(var) {
                Ok(pin) if !pin.is_empty() => Ok(Zeroizing::new(pin)),
                _ => Err(RootError::Config(format!(
                    "the PKCS#11 PIN is to come from the environment variable {var}, which is not set; set it, or re-run init with --pin-file"
                ))),
            },
        }
    }
}

impl RootConfig {
    pub(crate) fn new(mode: Mode, root_id: &[u8; 16]) -> Self {
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            format: FORMAT,
            mode,
            root_id: coffer_crypto::digest::hex(root_id),
            created,
            shamir: None,
            pkcs11: None,
        }
    }

    /// Reads `root.json` from `data_dir`; `None` when the data dir has none (dev-file mode).
    pub fn load(data_dir: &Path) -> Result<Option<Self>, RootError> {
        let path = root_config_path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RootError::Io { path, source }),
        }
    }

    pub(crate) fn load_from(path: &Path) -> Result<Self, RootError> {
        let bytes = std::fs::read(path).map_err(|source| RootError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses and checks the bytes of a `root.json` (`path` names it in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, RootError> {
        let cfg: RootConfig = serde_json::from_slice(bytes).map_err(|e| {
            RootError::Config(format!(
                "{} is not a valid root of trust configuration: {e}",
                path.display()
            ))
        })?;
        let bad = |why: &str| {
            RootError::Config(format!(
                "{} is not a valid root of trust configuration: {why}",
                path.display()
            ))
        };
        if cfg.format != FORMAT {
            return Err(bad("unknown format version"));
        }
        if cfg.root_id.len() != 32 || !cfg.root_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("root_id is not 32 hex digits"));
        }
        match cfg.mode {
            Mode::Shamir if cfg.shamir.is_none() => {
                Err(bad("shamir mode without a shamir section"))
            }
            Mode::Pkcs11 if cfg.pkcs11.is_none() => {
                Err(bad("pkcs11 mode without a pkcs11 section"))
            }
            Mode::DevFile => Err(bad("dev-file mode is not configured in root.json")),
            _ => Ok(cfg),
        }
    }

    /// Writes `root.json` atomically (mode 0600).
    pub(crate) fn save_to(&self, path: &Path) -> Result<(), RootError> {
        let mut text = serde_json::to_vec_pretty(self)
            .map_err(|e| RootError::Config(format!("cannot encode the root configuration: {e}")))?;
        text.push(b'\n');
        write_private_atomically(path, &text).map_err(|source| RootError::Io {
            path: path.to_owned(),
            source,
        })
    }

    pub(crate) fn root_id_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&self.root_id[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        out
    }
}
