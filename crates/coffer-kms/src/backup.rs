//! Backup archives: one file holding a consistent copy of a data dir's metadata (with the wrapped key
//! material), its root configuration and audit signing key, its TLS files and the signed audit chain
//! head, encrypted and authenticated under a one-use archive key that is itself wrapped under the
//! root of trust. Without the root the archive opens to nothing; with another root it fails before
//! anything is written.
//!
//! File format, version 1 (see `docs/formats.md`):
//!
//! ```text
//! "CFBK" | 0x01 | header length (u32 BE) | header (JSON) | encrypted stream (coffer_crypto::stream)
//! stream plaintext: entries of  name length (u16 BE) | name (UTF-8) | data length (u64 BE) | data
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use coffer_crypto::{Key256, SecretBytes, stream};
use serde::{Deserialize, Serialize};

use crate::root::{RootError, RootOfTrust};

const MAGIC: &[u8; 4] = b"CFBK";
const VERSION: u8 = 1;
/// Largest header accepted (the header is a small JSON object).
const MAX_HEADER: usize = 1 << 20;

/// The clear, authenticated part of an archive: what is needed to find the root that opens it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveHeader {
    pub format: u32,
    pub backup_id: String,
    pub created: String,
    pub coffer_version: String,
    /// `dev-file`, `shamir` or `pkcs11`.
    pub root_mode: String,
    /// The root generation the archive key (and every secret inside) is wrapped under.
    pub root_generation: u32,
    /// `root.json` of the data dir (shamir, pkcs11): it holds nothing secret, and restoring needs
    /// it to find the root before the archive opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_config: Option<serde_json::Value>,
    /// The archive key, wrapped under the root (base64).
    pub archive_key: String,
    /// The signed audit chain head at backup time (`head.json`), if the log was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<serde_json::Value>,
    /// The names of the entries, in order.
    pub entries: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("this is not a Coffer backup archive ({0})")]
    NotAnArchive(&'static str),
    #[error("this backup archive has format version {0}, which this Coffer does not read")]
    UnknownVersion(u8),
    #[error(
        "the root of trust given does not open this backup (it was made under another root, or under root generation {generation}, which this root no longer holds): {source}"
    )]
    WrongRoot {
        generation: u32,
        #[source]
        source: RootError,
    },
    #[error("the backup archive is damaged or was altered: it does not authenticate")]
    Damaged,
    #[error("cannot make the archive: {0}")]
    Make(String),
}

fn key_aad(backup_id: &str) -> Vec<u8> {
    format!("coffer/backup/archive-key/v1/{backup_id}").into_bytes()
}

/// Builds an archive of `entries` (name, bytes) under `root`. `header` gives everything but the
/// archive key and the entry names, which this fills in.
pub fn seal(
    mut header: ArchiveHeader,
    entries: &[(String, Vec<u8>)],
    root: &dyn RootOfTrust,
) -> Result<Vec<u8>, BackupError> {
    let key = Key256::generate().map_err(|e| BackupError::Make(e.to_string()))?;
    header.archive_key = B64.encode(
        root.wrap(&key_aad(&header.backup_id), key.expose())
            .map_err(|e| BackupError::Make(e.to_string()))?,
    );
    header.entries = entries.iter().map(|(n, _)| n.clone()).collect();
    let header_bytes = serde_json::to_vec(&header).map_err(|e| BackupError::Make(e.to_string()))?;
    let mut plain = SecretBytes::new(Vec::with_capacity(
        entries.iter().map(|(n, d)| n.len() + d.len() + 10).sum(),
    ));
    for (name, data) in entries {
        plain.extend_from_slice(&(name.len() as u16).to_be_bytes());
        plain.extend_from_slice(name.as_bytes());
        plain.extend_from_slice(&(data.len() as u64).to_be_bytes());
        plain.extend_from_slice(data);
    }
    let sealed = stream::seal(&key, &header_bytes, plain.expose())
        .map_err(|e| BackupError::Make(e.to_string()))?;
    let mut out = Vec::with_capacity(9 + header_bytes.len() + sealed.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// An archive whose header was read (not yet authenticated: that needs the root).
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: ArchiveHeader,
    header_bytes: &'a [u8],
    sealed: &'a [u8],
}

/// Reads an archive's header.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, BackupError> {
    if bytes.len() < 9 || &bytes[..4] != MAGIC {
        return Err(BackupError::NotAnArchive("no CFBK magic"));
    }
    if bytes[4] != VERSION {
        return Err(BackupError::UnknownVersion(bytes[4]));
    }
    let len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    if len > MAX_HEADER || bytes.len() < 9 + len {
        return Err(BackupError::NotAnArchive("truncated header"));
    }
    let header_bytes = &bytes[9..9 + len];
    let header: ArchiveHeader = serde_json::from_slice(header_bytes)
        .map_err(|_| BackupError::NotAnArchive("unreadable header"))?;
    if header.format != 1 {
        return Err(BackupError::NotAnArchive("unknown header format"));
    }
    Ok(Parsed {
        header,
        header_bytes,
        sealed: &bytes[9 + len..],
    })
}

impl Parsed<'_> {
    /// Unwraps the archive key with `root`, then authenticates and decrypts every entry.
    pub fn open(&self, root: &dyn RootOfTrust) -> Result<Vec<(String, SecretBytes)>, BackupError> {
        let wrapped = B64
            .decode(&self.header.archive_key)
            .map_err(|_| BackupError::Damaged)?;
        let raw = root
            .unwrap(&key_aad(&self.header.backup_id), &wrapped)
            .map_err(|source| BackupError::WrongRoot {
                generation: self.header.root_generation,
                source,
            })?;
        let key = Key256::from_slice(raw.expose()).map_err(|_| BackupError::Damaged)?;
        let plain =
            stream::open(&key, self.header_bytes, self.sealed).map_err(|_| BackupError::Damaged)?;
        let mut rest = plain.expose();
        let mut out = Vec::new();
        while !rest.is_empty() {
            let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, BackupError> {
                if rest.len() < n {
                    return Err(BackupError::Damaged);
                }
                let (a, b) = rest.split_at(n);
                *rest = b;
                Ok(a.to_vec())
            };
            let n = take(&mut rest, 2)?;
            let name =
                String::from_utf8(take(&mut rest, u16::from_be_bytes([n[0], n[1]]) as usize)?)
                    .map_err(|_| BackupError::Damaged)?;
            let l = take(&mut rest, 8)?;
            let len = u64::from_be_bytes(l.try_into().map_err(|_| BackupError::Damaged)?);
            let len = usize::try_from(len).map_err(|_| BackupError::Damaged)?;
            out.push((name, SecretBytes::new(take(&mut rest, len)?)));
        }
        let names: Vec<&String> = out.iter().map(|(n, _)| n).collect();
        if names != self.header.entries.iter().collect::<Vec<_>>() {
            return Err(BackupError::Damaged);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::DevFileRoot;

    fn header() -> ArchiveHeader {
        ArchiveHeader {
            format: 1,
            backup_id: "b1".into(),
            created: "2026-01-01T00:00:00Z".into(),
            coffer_version: "0".into(),
            root_mode: "dev-file".into(),
            root_generation: 1,
            root_config: None,
            archive_key: String::new(),
            audit_head: None,
            entries: Vec::new(),
        }
    }

    #[test]
    fn round_trip_wrong_root_and_tampering() {
        let dir = tempfile::tempdir().expect("tmp");
        let (root, _) = DevFileRoot::load_or_create(&dir.path().join("a.key")).expect("root");
        let (other, _) = DevFileRoot::load_or_create(&dir.path().join("b.key")).expect("root");
        let entries = vec![
            ("meta.db".to_owned(), vec![1u8; 200_000]),
            ("empty".to_owned(), Vec::new()),
        ];
        let archive = seal(header(), &entries, &root).expect("seal");
        let parsed = parse(&archive).expect("parse");
        let opened = parsed.open(&root).expect("open");
        assert_eq!(opened.len(), 2);
        assert_eq!(opened[0].1.expose(), &entries[0].1[..]);
        assert!(matches!(
            parsed.open(&other),
            Err(BackupError::WrongRoot { .. })
        ));
        // A changed header (here: the recorded generation) no longer authenticates the stream.
        let text = String::from_utf8_lossy(&archive[9..]).into_owned();
        assert!(text.contains("\"root_generation\":1"));
        let mut altered = archive.clone();
        let at = 9 + text.find("\"root_generation\":1").expect("field") + 18;
        altered[at] = b'2';
        assert!(matches!(
            parse(&altered).expect("parse").open(&root),
            Err(BackupError::Damaged)
        ));
        let mut flipped = archive.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            parse(&flipped).expect("parse").open(&root),
            Err(BackupError::Damaged)
        ));
        assert!(matches!(parse(b"nope"), Err(BackupError::NotAnArchive(_))));
        for n in 0..archive.len().min(400) {
            let _ = parse(&archive[..n]).map(|p| p.open(&root));
        }
    }
}
