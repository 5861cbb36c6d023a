//! Roots held in memory as a keyring of generations: the dev key file, and the keyring a Shamir
//! unseal opens.
//!
//! Keyring encoding, version 1 (see `docs/formats.md`):
//!
//! ```text
//! 0x01 | current generation (u32 BE) | count (u16 BE) | count × (generation (u32 BE) | key (32))
//! ```
//!
//! The dev key file is the ASCII magic `CFRK`, the file version `0x02`, then the keyring encoding.
//! File version `0x01` (one key, read as generation 1) is still read and rewritten as version 2 on the
//! next rotation.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use coffer_crypto::{Key256, SecretBytes, wrap};
use zeroize::Zeroizing;

use super::{RootError, RootOfTrust, write_private_atomically};

const MAGIC: &[u8; 4] = b"CFRK";
const FILE_V1: u8 = 1;
const FILE_V2: u8 = 2;
const KEYRING_VERSION: u8 = 1;
const ENTRY_LEN: usize = 4 + 32;

/// Root key generations held in memory.
#[derive(Debug)]
pub(crate) struct Keyring {
    current: u32,
    keys: BTreeMap<u32, Key256>,
}

impl Keyring {
    pub(crate) fn generate() -> Result<Self, RootError> {
        Self::generate_at(1)
    }

    /// A keyring whose one key is generation `generation` (a migrated root continues the numbering
    /// of the root it replaces, so every record names the root that wrapped it).
    pub(crate) fn generate_at(generation: u32) -> Result<Self, RootError> {
        let mut keys = BTreeMap::new();
        keys.insert(generation, Key256::generate()?);
        Ok(Self {
            current: generation,
            keys,
        })
    }

    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(7 + self.keys.len() * ENTRY_LEN));
        out.push(KEYRING_VERSION);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&(self.keys.len() as u16).to_be_bytes());
        for (g, k) in &self.keys {
            out.extend_from_slice(&g.to_be_bytes());
            out.extend_from_slice(k.expose());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let (&version, rest) = bytes.split_first().ok_or("empty keyring")?;
        if version != KEYRING_VERSION {
            return Err("unknown keyring version");
        }
        if rest.len() < 6 {
            return Err("truncated keyring");
        }
        let current = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let count = u16::from_be_bytes([rest[4], rest[5]]) as usize;
        let entries = &rest[6..];
        if count == 0 || entries.len() != count * ENTRY_LEN {
            return Err("keyring length does not match its count");
        }
        let mut keys = BTreeMap::new();
        for e in entries.chunks_exact(ENTRY_LEN) {
            let g = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let key = Key256::from_slice(&e[4..]).map_err(|_| "bad key")?;
            if g == 0 || keys.insert(g, key).is_some() {
                return Err("keyring repeats a generation");
            }
        }
        if !keys.contains_key(&current) {
            return Err("keyring's current generation is missing");
        }
        Ok(Self { current, keys })
    }

    pub(crate) fn generation_numbers(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, RootError> {
        let key = &self.keys[&self.current];
        Ok(wrap::wrap(key, self.current, aad, secret)?)
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, RootError> {
        let generation = wrap::parse(wrapped)?.generation;
        let key = self
            .keys
            .get(&generation)
            .ok_or(RootError::UnknownGeneration(generation))?;
        Ok(wrap::unwrap(key, aad, wrapped)?)
    }
}

/// Where a keyring root persists its keyring when it changes.
#[derive(Debug)]
enum Store {
    /// The dev key file, in plain.
    DevFile(PathBuf),
    /// `root.json`, wrapped under the unseal key the Shamir shares rebuilt.
    Shamir {
        config_path: PathBuf,
        unseal_key: Key256,
    },
}

/// A root whose generations are keys in Coffer's memory (zeroized when it is dropped).
#[derive(Debug)]
pub struct KeyringRoot {
    ring: RwLock<Keyring>,
    store: Store,
}

/// The dev-mode root: a keyring in a file of the data dir (mode 0600). Anyone who can read the data
/// dir can read every key, which is why every start warns about it.
pub type DevFileRoot = KeyringRoot;

impl KeyringRoot {
    pub(crate) fn unsealed(ring: Keyring, config_path: PathBuf, unseal_key: Key256) -> Self {
        Self {
            ring: RwLock::new(ring),
            store: Store::Shamir {
                config_path,
                unseal_key,
            },
        }
    }

    /// Loads the dev root key file at `path`, creating it (atomically, mode 0600) if it does not
    /// exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), RootError> {
        let io = |source| RootError::Io {
            path: path.to_owned(),
            source,
        };
        let dev = |ring| Self {
            ring: RwLock::new(ring),
            store: Store::DevFile(path.to_owned()),
        };
        match fs::read(path) {
            Ok(bytes) => {
                let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(RootError::Permissions {
                        path: path.to_owned(),
                        mode,
                    });
                }
                let bytes = Zeroizing::new(bytes);
                Ok((dev(Self::parse_file(path, &bytes)?), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ring = Keyring::generate()?;
                write_dev_file(path, &ring).map_err(io)?;
                Ok((dev(ring), true))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn parse_file(path: &Path, bytes: &[u8]) -> Result<Keyring, RootError> {
        let bad = |reason| RootError::BadFile {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() < 5 || &bytes[..4] != MAGIC {
            return Err(bad("wrong magic"));
        }
        match bytes[4] {
            FILE_V1 if bytes.len() == 5 + 32 => {
                let mut keys = BTreeMap::new();
                keys.insert(1, Key256::from_slice(&bytes[5..])?);
                Ok(Keyring { current: 1, keys })
            }
            FILE_V1 => Err(bad("wrong length")),
            FILE_V2 => Keyring::decode(&bytes[5..]).map_err(bad),
            _ => Err(bad("unknown version")),
        }
    }

    fn persist(&self, ring: &Keyring) -> Result<(), RootError> {
        match &self.store {
            Store::DevFile(path) => write_dev_file(path, ring).map_err(|source| RootError::Io {
                path: path.clone(),
                source,
            }),
            Store::Shamir {
                config_path,
                unseal_key,
            } => super::shamir::store_keyring(config_path, unseal_key, ring),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_dev_file(path: &Path, ring: &Keyring) -> std::io::Result<()> {
    let mut contents = Zeroizing::new(Vec::new());
    contents.extend_from_slice(MAGIC);
    contents.push(FILE_V2);
    contents.extend_from_slice(&ring.encode());
    write_private_atomically(path, &contents)
}

impl RootOfTrust for KeyringRoot {
    fn mode(&self) -> &'static str {
        match self.store {
            Store::DevFile(_) => "dev-file",
            Store::Shamir { .. } => "shamir",
        }
    }

    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, RootError> {
        self.read().wrap(aad, secret)
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, RootError> {
        self.read().unwrap(aad, wrapped)
    }

    fn current_generation(&self) -> u32 {
        self.read().current
    }

    fn generations(&self) -> Vec<u32> {
        self.read().keys.keys().copied().collect()
    }

    fn add_generation(&self) -> Result<u32, RootError> {
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        let next = ring.keys.keys().next_back().copied().unwrap_or(0) + 1;
        let previous = ring.current;
        ring.keys.insert(next, Key256::generate()?);
        ring.current = next;
        if let Err(e) = self.persist(&ring) {
            ring.keys.remove(&next);
            ring.current = previous;
            return Err(e);
        }
        Ok(next)
    }

    fn remove_generation(&self, generation: u32) -> Result<(), RootError> {
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        if generation == ring.current {
            return Err(RootError::Config(format!(
                "root generation {generation} is the current one and cannot be removed"
            )));
        }
        let Some(old) = ring.keys.remove(&generation) else {
            return Ok(());
        };
        if let Err(e) = self.persist(&ring) {
            ring.keys.insert(generation, old);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_reload_and_refuse_bad_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("root.key");
        let (root, created) = DevFileRoot::load_or_create(&path).expect("create");
        assert!(created);
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let w = root.wrap(b"aad", b"secret").expect("wrap");
        let (again, created) = DevFileRoot::load_or_create(&path).expect("reload");
        assert!(!created);
        assert_eq!(
            again.unwrap(b"aad", &w).expect("unwrap").expose(),
            b"secret"
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            DevFileRoot::load_or_create(&path),
            Err(RootError::Permissions { .. })
        ));
        fs::write(&path, b"nonsense").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            DevFileRoot::load_or_create(&path),
            Err(RootError::BadFile { .. })
        ));
    }

    #[test]
    fn generations_rotate_persist_and_retire() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("root.key");
        let (root, _) = DevFileRoot::load_or_create(&path).expect("create");
        let old = root.wrap(b"a", b"one").expect("wrap");
        assert_eq!(root.add_generation().expect("rotate"), 2);
        let new = root.wrap(b"a", b"two").expect("wrap");
        assert_eq!(wrap::parse(&new).expect("parse").generation, 2);
        let (again, _) = DevFileRoot::load_or_create(&path).expect("reload");
        assert_eq!(again.generations(), vec![1, 2]);
        assert_eq!(again.current_generation(), 2);
        assert_eq!(again.unwrap(b"a", &old).expect("old").expose(), b"one");
        assert!(again.remove_generation(2).is_err());
        again.remove_generation(1).expect("retire");
        assert!(matches!(
            again.unwrap(b"a", &old),
            Err(RootError::UnknownGeneration(1))
        ));
        let (third, _) = DevFileRoot::load_or_create(&path).expect("reload");
        assert_eq!(third.generations(), vec![2]);
        assert_eq!(third.unwrap(b"a", &new).expect("new").expose(), b"two");
    }

    #[test]
    fn version_1_key_files_still_load() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("root.key");
        let mut v1 = MAGIC.to_vec();
        v1.push(FILE_V1);
        v1.extend_from_slice(&[5u8; 32]);
        write_private_atomically(&path, &v1).expect("write");
        let (root, created) = DevFileRoot::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(root.generations(), vec![1]);
    }

    #[test]
    fn keyring_decoding_refuses_malformed_input() {
        let ring = Keyring::generate().expect("ring");
        let good = ring.encode();
        assert!(Keyring::decode(&good).is_ok());
        for n in 0..good.len() {
            assert!(Keyring::decode(&good[..n]).is_err(), "prefix {n}");
        }
        let mut wrong_current = good.to_vec();
        wrong_current[4] = 9;
        assert!(Keyring::decode(&wrong_current).is_err());
    }
}
