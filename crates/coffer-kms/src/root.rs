//! The root of trust: the one key that wraps all key material and stored secrets.
//!
//! [`RootOfTrust`] is the seam: the dev key file implements it today; Shamir-sealed and PKCS#11 roots
//! implement the same two calls, so nothing above this module knows where the root lives.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer_crypto::{CryptoError, Key256, SecretBytes, wrap};

/// Wraps and unwraps secrets under the root key. `aad` names what is wrapped (purpose, key id,
/// version) so a wrapped value cannot be swapped for another.
pub trait RootOfTrust: Send + Sync + std::fmt::Debug {
    /// The mode name shown in health output and logs (`dev-file`, later `shamir`, `pkcs11`).
    fn mode(&self) -> &'static str;
    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, RootError>;
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, RootError>;
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
        "root key file {path} is not a Coffer dev root key ({reason}); restore it from backup, or start with an empty data dir"
    )]
    BadFile { path: PathBuf, reason: &'static str },
    #[error("root key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("a secret wrapped under the root key could not be opened: {0}")]
    Crypto(#[from] CryptoError),
}

/// Dev-mode root: a 256-bit key in a file of the data dir (mode 0600). Anyone who can read the data
/// dir can read every key, which is why every start warns about it.
///
/// File format, version 1: the ASCII magic `CFRK`, a version byte `0x01`, then the 32 key bytes.
#[derive(Debug)]
pub struct DevFileRoot {
    key: Key256,
}

const MAGIC: &[u8; 4] = b"CFRK";
const FILE_VERSION: u8 = 1;
const FILE_LEN: usize = 4 + 1 + 32;

impl DevFileRoot {
    /// Loads the root key from `path`, creating it (atomically, mode 0600) if the file does not exist.
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), RootError> {
        let io = |source| RootError::Io {
            path: path.to_owned(),
            source,
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
                let bytes = zeroize::Zeroizing::new(bytes);
                Ok((Self::parse(path, &bytes)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Key256::generate()?;
                let mut contents = zeroize::Zeroizing::new(Vec::with_capacity(FILE_LEN));
                contents.extend_from_slice(MAGIC);
                contents.push(FILE_VERSION);
                contents.extend_from_slice(key.expose());
                write_private_atomically(path, &contents).map_err(io)?;
                Ok((Self { key }, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, RootError> {
        let bad = |reason| RootError::BadFile {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() != FILE_LEN {
            return Err(bad("wrong length"));
        }
        if &bytes[..4] != MAGIC {
            return Err(bad("wrong magic"));
        }
        if bytes[4] != FILE_VERSION {
            return Err(bad("unknown version"));
        }
        Ok(Self {
            key: Key256::from_slice(&bytes[5..])?,
        })
    }
}

impl RootOfTrust for DevFileRoot {
    fn mode(&self) -> &'static str {
        "dev-file"
    }

    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, RootError> {
        Ok(wrap::wrap(&self.key, aad, secret)?)
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, RootError> {
        Ok(wrap::unwrap(&self.key, aad, wrapped)?)
    }
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
}
