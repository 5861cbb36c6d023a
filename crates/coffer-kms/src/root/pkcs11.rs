//! PKCS#11 mode: each root generation is a non-extractable AES-256 key inside a token, labelled
//! `coffer-root-<root id>-g<generation>`. Wrapping and unwrapping are AES-GCM run by the token, in
//! the same record format as the other modes (see `coffer_crypto::wrap`); Coffer never holds the
//! root key.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use coffer_crypto::{SecretBytes, wrap};
use coffer_hsm::{GCM_NONCE_LEN, Token};

use super::config::{Mode, PinSource, Pkcs11Config, RootConfig, root_config_path};
use super::{RootError, RootOfTrust};

fn key_label(root_id: &str, generation: u32) -> String {
    format!("coffer-root-{root_id}-g{generation}")
}

#[derive(Debug)]
struct Generations {
    current: u32,
    all: Vec<u32>,
}

/// A root of trust whose keys live in a PKCS#11 token.
#[derive(Debug)]
pub struct Pkcs11Root {
    token: Token,
    root_id: String,
    config_path: PathBuf,
    gens: RwLock<Generations>,
    /// What the token reported about the root keys at open and after each change of generations
    /// (health shows it; asking the token on every health request would put it on that path).
    protected: AtomicBool,
}

/// Initialises pkcs11 mode in `data_dir`: generates generation 1 inside the token and writes
/// `root.json`.
pub fn init_pkcs11(
    data_dir: &Path,
    module: &Path,
    token_label: &str,
    pin: PinSource,
) -> Result<RootConfig, RootError> {
    create_pkcs11(&root_config_path(data_dir), module, token_label, pin, 1)
}

/// Generates generation `first_generation` inside the token and writes the configuration to
/// `config_path`.
pub(crate) fn create_pkcs11(
    config_path: &Path,
    module: &Path,
    token_label: &str,
    pin: PinSource,
    first_generation: u32,
) -> Result<RootConfig, RootError> {
    let token = Token::open(module, token_label, &pin.read()?)?;
    let mut root_id = [0u8; 16];
    coffer_crypto::fill_random(&mut root_id)?;
    let mut cfg = RootConfig::new(Mode::Pkcs11, &root_id);
    let label = key_label(&cfg.root_id, first_generation);
    token.generate_aes256(&label)?;
    cfg.pkcs11 = Some(Pkcs11Config {
        module: module.to_owned(),
        token_label: token_label.to_owned(),
        pin,
        current_generation: first_generation,
        generations: vec![first_generation],
    });
    if let Err(e) = cfg.save_to(config_path) {
        let _ = token.destroy_key(&label);
        return Err(e);
    }
    Ok(cfg)
}

impl Pkcs11Root {
    /// Opens the token `cfg` names and checks that it holds every generation's key.
    pub fn open(data_dir: &Path, cfg: &RootConfig) -> Result<Self, RootError> {
        Self::open_at(&root_config_path(data_dir), cfg)
    }

    /// Opens the token `cfg` names; changes of generations are saved to `config_path`.
    pub(crate) fn open_at(config_path: &Path, cfg: &RootConfig) -> Result<Self, RootError> {
        let p = cfg
            .pkcs11
            .as_ref()
            .ok_or_else(|| RootError::Config("root.json has no pkcs11 section".into()))?;
        let token = Token::open(&p.module, &p.token_label, &p.pin.read()?)?;
        for g in &p.generations {
            let label = key_label(&cfg.root_id, *g);
            if !token.has_key(&label)? {
                return Err(RootError::Config(format!(
                    "the token {:?} does not hold the root key {label:?}; is this the token `coffer operator init` used?",
                    p.token_label
                )));
            }
        }
        let root = Self {
            token,
            root_id: cfg.root_id.clone(),
            config_path: config_path.to_owned(),
            gens: RwLock::new(Generations {
                current: p.current_generation,
                all: p.generations.clone(),
            }),
            protected: AtomicBool::new(false),
        };
        root.check_protection();
        Ok(root)
    }

    fn check_protection(&self) {
        let ok = self.keys_are_protected().unwrap_or(false);
        self.protected.store(ok, Ordering::Relaxed);
    }

    /// Whether every root key is sensitive and non-extractable, as the token reports.
    pub fn keys_are_protected(&self) -> Result<bool, RootError> {
        for g in self.generations() {
            if !self.token.key_is_protected(&key_label(&self.root_id, g))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Generations> {
        self.gens.read().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, gens: &Generations) -> Result<(), RootError> {
        let mut cfg = RootConfig::load_from(&self.config_path)?;
        let p = cfg
            .pkcs11
            .as_mut()
            .ok_or_else(|| RootError::Config("root.json lost its pkcs11 section".into()))?;
        p.current_generation = gens.current;
        p.generations = gens.all.clone();
        cfg.save_to(&self.config_path)
    }
}

impl RootOfTrust for Pkcs11Root {
    fn mode(&self) -> &'static str {
        "pkcs11"
    }

    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, RootError> {
        let generation = self.read().current;
        let header = wrap::header(generation);
        let mut nonce = [0u8; GCM_NONCE_LEN];
        coffer_crypto::fill_random(&mut nonce)?;
        let sealed = self.token.gcm_seal(
            &key_label(&self.root_id, generation),
            &nonce,
            &wrap::gcm_aad(&header, aad),
            secret,
        )?;
        let mut out = Vec::with_capacity(header.len() + nonce.len() + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, RootError> {
        let p = wrap::parse(wrapped)?;
        if !self.read().all.contains(&p.generation) {
            return Err(RootError::UnknownGeneration(p.generation));
        }
        let nonce: &[u8; GCM_NONCE_LEN] = p
            .nonce
            .try_into()
            .map_err(|_| coffer_crypto::CryptoError::Malformed("wrapped key"))?;
        match self.token.gcm_open(
            &key_label(&self.root_id, p.generation),
            nonce,
            &wrap::gcm_aad(p.header, aad),
            p.sealed,
        ) {
            Ok(plain) => Ok(SecretBytes::new(plain.to_vec())),
            Err(coffer_hsm::HsmError::Decrypt) => Err(coffer_crypto::CryptoError::Decrypt.into()),
            Err(e) => Err(e.into()),
        }
    }

    fn current_generation(&self) -> u32 {
        self.read().current
    }

    fn hardware_protected(&self) -> Option<bool> {
        Some(self.protected.load(Ordering::Relaxed))
    }

    fn generations(&self) -> Vec<u32> {
        self.read().all.clone()
    }

    fn add_generation(&self) -> Result<u32, RootError> {
        let mut gens = self.gens.write().unwrap_or_else(|p| p.into_inner());
        let next = gens.all.iter().max().copied().unwrap_or(0) + 1;
        let label = key_label(&self.root_id, next);
        // A key left by a rotation that crashed before root.json named it is never used: replace it.
        self.token.destroy_key(&label)?;
        self.token.generate_aes256(&label)?;
        let updated = Generations {
            current: next,
            all: gens.all.iter().copied().chain([next]).collect(),
        };
        self.save(&updated)?;
        *gens = updated;
        drop(gens);
        self.check_protection();
        Ok(next)
    }

    fn remove_generation(&self, generation: u32) -> Result<(), RootError> {
        let mut gens = self.gens.write().unwrap_or_else(|p| p.into_inner());
        if generation == gens.current {
            return Err(RootError::Config(format!(
                "root generation {generation} is the current one and cannot be removed"
            )));
        }
        if !gens.all.contains(&generation) {
            return Ok(());
        }
        let updated = Generations {
            current: gens.current,
            all: gens
                .all
                .iter()
                .copied()
                .filter(|g| *g != generation)
                .collect(),
        };
        // root.json first: a crash after it leaves an unused key in the token, never a named one missing.
        self.save(&updated)?;
        *gens = updated;
        self.token
            .destroy_key(&key_label(&self.root_id, generation))?;
        Ok(())
    }
}
