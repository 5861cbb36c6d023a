//! Shamir mode: the keyring of root keys is wrapped under an unseal key that exists only as shares.
//!
//! `init` draws the unseal key and the first root key, splits the unseal key into N shares of which T
//! rebuild it (vsss-rs, GF(256)), and keeps in `root.json` only the wrapped keyring and a digest of
//! each share. An [`Unsealer`] takes shares one at a time, refuses any share that is malformed,
//! mistyped, from another root or not as issued, and once it holds T good ones rebuilds the unseal
//! key and opens the keyring.
//!
//! Share text, version 1: `cfs1-` then hex of
//!
//! ```text
//! root id (16) | threshold (1) | share: index (1) | 32 bytes | checksum (4)
//! ```
//!
//! where the checksum is the first four bytes of SHA-256 over what precedes it (after the prefix),
//! so a typo is caught before anything else is said about the share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use coffer_crypto::digest::{hex, sha256};
use coffer_crypto::{Key256, SecretBytes, ct_eq, shamir, wrap};
use zeroize::Zeroizing;

use super::RootError;
use super::config::{Mode, RootConfig, ShamirConfig, root_config_path};
use super::keyring::{Keyring, KeyringRoot};

const PREFIX: &str = "cfs1-";
const SHARE_LEN: usize = 1 + 32;
const BODY_LEN: usize = 16 + 1 + SHARE_LEN;
const CHECKSUM_LEN: usize = 4;

fn keyring_aad(root_id: &str) -> Vec<u8> {
    format!("coffer/root/keyring/v1/{root_id}").into_bytes()
}

fn share_digest(root_id: &[u8; 16], share: &[u8]) -> String {
    let mut input = Zeroizing::new(Vec::with_capacity(64));
    input.extend_from_slice(b"coffer/root/share/v1\0");
    input.extend_from_slice(root_id);
    input.extend_from_slice(share);
    hex(&sha256(&input))
}

fn encode_share(root_id: &[u8; 16], threshold: u8, share: &[u8]) -> Zeroizing<String> {
    let mut body = Zeroizing::new(Vec::with_capacity(BODY_LEN + CHECKSUM_LEN));
    body.extend_from_slice(root_id);
    body.push(threshold);
    body.extend_from_slice(share);
    let sum = sha256(&body);
    body.extend_from_slice(&sum[..CHECKSUM_LEN]);
    Zeroizing::new(format!("{PREFIX}{}", hex(&body)))
}

/// A share as submitted, after its shape and checksum were checked.
#[derive(Debug)]
pub struct DecodedShare {
    pub root_id: [u8; 16],
    pub threshold: u8,
    /// Participant index, 1-based.
    pub index: u8,
    share: SecretBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error(
        "this is not a Coffer unseal share: shares are the {} characters starting with `{PREFIX}` that `coffer operator init` printed",
        PREFIX.len() + 2 * (BODY_LEN + CHECKSUM_LEN)
    )]
    NotAShare,
    #[error(
        "the share has a typo: its checksum does not match; compare it with the copy `coffer operator init` printed"
    )]
    Checksum,
    #[error(
        "this share belongs to another Coffer root (root id {share_root}); this server's root id is {this_root}"
    )]
    OtherRoot {
        share_root: String,
        this_root: String,
    },
    #[error(
        "share {index} is not the share issued for this root at init (it was altered or forged)"
    )]
    NotIssued { index: u8 },
    #[error("share {index} was already submitted; {needed} more different share(s) needed")]
    Duplicate { index: u8, needed: usize },
    #[error(
        "the submitted shares rebuild a key that does not open this root's keyring; root.json may have been altered — restore it from backup"
    )]
    KeyringDoesNotOpen,
    #[error("Coffer is already unsealed")]
    AlreadyUnsealed,
}

/// Checks a share's text form: prefix, hex, length, checksum. Whitespace and dashes inside are
/// ignored (shares are often copied from paper in groups).
pub fn decode_share(text: &str) -> Result<DecodedShare, ShareError> {
    let text = text.trim();
    let rest = text
        .strip_prefix(PREFIX)
        .or_else(|| text.strip_prefix("CFS1-"))
        .ok_or(ShareError::NotAShare)?;
    let digits: Zeroizing<String> = Zeroizing::new(
        rest.chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect(),
    );
    if digits.len() != 2 * (BODY_LEN + CHECKSUM_LEN) || !digits.is_ascii() {
        return Err(ShareError::NotAShare);
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(BODY_LEN + CHECKSUM_LEN));
    for pair in digits.as_bytes().chunks_exact(2) {
        let s = std::str::from_utf8(pair).map_err(|_| ShareError::NotAShare)?;
        bytes.push(u8::from_str_radix(s, 16).map_err(|_| ShareError::NotAShare)?);
    }
    let (body, sum) = bytes.split_at(BODY_LEN);
    if !ct_eq(&sha256(body)[..CHECKSUM_LEN], sum) {
        return Err(ShareError::Checksum);
    }
    let mut root_id = [0u8; 16];
    root_id.copy_from_slice(&body[..16]);
    let share = &body[17..];
    if share[0] == 0 {
        return Err(ShareError::NotAShare);
    }
    Ok(DecodedShare {
        root_id,
        threshold: body[16],
        index: share[0],
        share: SecretBytes::new(share.to_vec()),
    })
}

/// Initialises shamir mode in `data_dir`: writes `root.json` and returns the share texts, which
/// exist nowhere else.
pub fn init_shamir(
    data_dir: &Path,
    shares: u8,
    threshold: u8,
) -> Result<(RootConfig, Vec<Zeroizing<String>>), RootError> {
    let (cfg, texts, _) = create_shamir(&root_config_path(data_dir), shares, threshold, 1)?;
    Ok((cfg, texts))
}

/// Makes a shamir root whose first generation is `first_generation`, writes its configuration to
/// `config_path`, and returns it unsealed with the share texts.
pub(crate) fn create_shamir(
    config_path: &Path,
    shares: u8,
    threshold: u8,
    first_generation: u32,
) -> Result<(RootConfig, Vec<Zeroizing<String>>, KeyringRoot), RootError> {
    if threshold < 2 || threshold > shares {
        return Err(RootError::Config(format!(
            "--threshold must be at least 2 and at most --shares ({shares}); got {threshold}"
        )));
    }
    let unseal_key = Key256::generate()?;
    let ring = Keyring::generate_at(first_generation)?;
    let mut root_id = [0u8; 16];
    coffer_crypto::fill_random(&mut root_id)?;
    let parts = shamir::split(unseal_key.expose(), threshold as usize, shares as usize)?;
    let mut cfg = RootConfig::new(Mode::Shamir, &root_id);
    let mut digests = BTreeMap::new();
    let mut texts = Vec::with_capacity(parts.len());
    for p in &parts {
        digests.insert(p.expose()[0], share_digest(&root_id, p.expose()));
        texts.push(encode_share(&root_id, threshold, p.expose()));
    }
    cfg.shamir = Some(ShamirConfig {
        threshold,
        shares,
        share_digests: digests,
        keyring: wrap_keyring(&cfg.root_id, &unseal_key, &ring)?,
    });
    cfg.save_to(config_path)?;
    let root = KeyringRoot::unsealed(ring, config_path.to_owned(), unseal_key);
    Ok((cfg, texts, root))
}

fn wrap_keyring(root_id: &str, unseal_key: &Key256, ring: &Keyring) -> Result<String, RootError> {
    let wrapped = wrap::wrap(unseal_key, 1, &keyring_aad(root_id), &ring.encode())?;
    Ok(B64.encode(wrapped))
}

/// Rewrites the wrapped keyring in `root.json` (after a rotation changed it).
pub(crate) fn store_keyring(
    config_path: &Path,
    unseal_key: &Key256,
    ring: &Keyring,
) -> Result<(), RootError> {
    let mut cfg = RootConfig::load_from(config_path)?;
    let wrapped = wrap_keyring(&cfg.root_id, unseal_key, ring)?;
    let shamir = cfg
        .shamir
        .as_mut()
        .ok_or_else(|| RootError::Config("root.json lost its shamir section".into()))?;
    shamir.keyring = wrapped;
    cfg.save_to(config_path)
}

/// Where an unseal stands after a share was accepted.
#[derive(Debug)]
pub enum UnsealProgress {
    /// More shares are needed.
    NeedMore { have: usize, threshold: u8 },
    /// The keyring is open: the root of trust.
    Unsealed(KeyringRoot),
}

/// Collects unseal shares for a sealed data dir.
#[derive(Debug)]
pub struct Unsealer {
    config_path: PathBuf,
    root_id: [u8; 16],
    cfg: RootConfig,
    submitted: Mutex<Vec<DecodedShare>>,
}

impl Unsealer {
    /// Prepares to unseal the shamir-mode data dir `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Self, RootError> {
        let config_path = root_config_path(data_dir);
        let cfg = RootConfig::load_from(&config_path)?;
        if cfg.mode != Mode::Shamir {
            return Err(RootError::Config(format!(
                "{} is in {} mode, not shamir",
                data_dir.display(),
                cfg.mode.as_str()
            )));
        }
        Ok(Self {
            config_path,
            root_id: cfg.root_id_bytes(),
            cfg,
            submitted: Mutex::new(Vec::new()),
        })
    }

    fn shamir(&self) -> &ShamirConfig {
        self.cfg
            .shamir
            .as_ref()
            .expect("checked by RootConfig::parse")
    }

    pub fn threshold(&self) -> u8 {
        self.shamir().threshold
    }

    pub fn shares(&self) -> u8 {
        self.shamir().shares
    }

    pub fn root_id(&self) -> &str {
        &self.cfg.root_id
    }

    /// How many good shares are held.
    pub fn progress(&self) -> usize {
        self.submitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Forgets the shares submitted so far.
    pub fn reset(&self) {
        self.submitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Takes one share. A bad share is refused and the good ones held so far are kept.
    pub fn submit(&self, text: &str) -> Result<UnsealProgress, ShareError> {
        let share = decode_share(text)?;
        if share.root_id != self.root_id {
            return Err(ShareError::OtherRoot {
                share_root: hex(&share.root_id),
                this_root: self.cfg.root_id.clone(),
            });
        }
        let issued = self.shamir().share_digests.get(&share.index);
        let digest = share_digest(&self.root_id, share.share.expose());
        if share.threshold != self.threshold()
            || !issued.is_some_and(|d| ct_eq(d.as_bytes(), digest.as_bytes()))
        {
            return Err(ShareError::NotIssued { index: share.index });
        }
        let mut held = self.submitted.lock().unwrap_or_else(|p| p.into_inner());
        let threshold = self.threshold() as usize;
        if held.iter().any(|s| s.index == share.index) {
            return Err(ShareError::Duplicate {
                index: share.index,
                needed: threshold - held.len(),
            });
        }
        held.push(share);
        if held.len() < threshold {
            return Ok(UnsealProgress::NeedMore {
                have: held.len(),
                threshold: self.threshold(),
            });
        }
        let parts: Vec<&[u8]> = held.iter().map(|s| s.share.expose()).collect();
        let rebuilt = shamir::combine(&parts).map_err(|_| ShareError::KeyringDoesNotOpen);
        held.clear();
        let unseal_key =
            Key256::from_slice(rebuilt?.expose()).map_err(|_| ShareError::KeyringDoesNotOpen)?;
        let ring = self
            .open_keyring(&unseal_key)
            .ok_or(ShareError::KeyringDoesNotOpen)?;
        Ok(UnsealProgress::Unsealed(KeyringRoot::unsealed(
            ring,
            self.config_path.clone(),
            unseal_key,
        )))
    }

    fn open_keyring(&self, unseal_key: &Key256) -> Option<Keyring> {
        // Re-read: a rotation while unsealed may have rewritten the keyring since this was loaded.
        let cfg = RootConfig::load_from(&self.config_path).ok()?;
        let wrapped = B64.decode(&cfg.shamir?.keyring).ok()?;
        let plain = wrap::unwrap(unseal_key, &keyring_aad(&cfg.root_id), &wrapped).ok()?;
        Keyring::decode(plain.expose()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::RootOfTrust;

    #[test]
    fn unseal_with_any_threshold_refusing_bad_shares() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_, shares) = init_shamir(dir.path(), 5, 3).expect("init");
        let other = tempfile::tempdir().expect("tmp");
        let (_, foreign) = init_shamir(other.path(), 5, 3).expect("init");
        assert_eq!(shares.len(), 5);
        let config = std::fs::read_to_string(root_config_path(dir.path())).expect("read");
        for s in &shares {
            assert!(
                !config.contains(&s[PREFIX.len()..]),
                "a share reached root.json"
            );
        }

        let u = Unsealer::load(dir.path()).expect("load");
        assert!(matches!(u.submit("hello"), Err(ShareError::NotAShare)));
        let mut typo = shares[0].to_string();
        let last = typo.pop().expect("char");
        typo.push(if last == '0' { '1' } else { '0' });
        assert_eq!(u.submit(&typo).unwrap_err(), ShareError::Checksum);
        assert!(matches!(
            u.submit(&foreign[0]),
            Err(ShareError::OtherRoot { .. })
        ));
        // A share of the right root whose bytes were changed and checksum recomputed.
        let mut forged = decode_share(&shares[1]).expect("decode");
        let mut bytes = forged.share.expose().to_vec();
        bytes[5] ^= 0x40;
        forged.share = SecretBytes::new(bytes);
        let forged_text = encode_share(&forged.root_id, forged.threshold, forged.share.expose());
        assert_eq!(
            u.submit(&forged_text).unwrap_err(),
            ShareError::NotIssued { index: 2 }
        );
        assert!(matches!(
            u.submit(&shares[4]).expect("good"),
            UnsealProgress::NeedMore { have: 1, .. }
        ));
        assert!(matches!(
            u.submit(&shares[4]),
            Err(ShareError::Duplicate {
                index: 5,
                needed: 2
            })
        ));
        // Grouped with dashes and spaces, as copied from paper.
        let grouped: String = shares[2]
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 5 && i % 8 == 0).then_some(' ').into_iter().chain([c]))
            .collect();
        assert!(matches!(
            u.submit(&grouped).expect("good"),
            UnsealProgress::NeedMore { have: 2, .. }
        ));
        let UnsealProgress::Unsealed(root) = u.submit(&shares[0]).expect("third") else {
            panic!("three shares should unseal");
        };
        let w = root.wrap(b"aad", b"secret").expect("wrap");

        // Rotation persists the keyring; a later unseal with other shares sees both generations.
        assert_eq!(root.add_generation().expect("rotate"), 2);
        let u2 = Unsealer::load(dir.path()).expect("load");
        for s in [&shares[1], &shares[3]] {
            u2.submit(s).expect("good");
        }
        let UnsealProgress::Unsealed(again) = u2.submit(&shares[2]).expect("third") else {
            panic!("three shares should unseal");
        };
        assert_eq!(again.generations(), vec![1, 2]);
        assert_eq!(again.unwrap(b"aad", &w).expect("open").expose(), b"secret");
    }
}
