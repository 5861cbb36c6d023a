//! The audit log: one CloudTrail-shaped event per API request, in append-only segment files where
//! every record carries the hash of the one before it, with the chain's head signed (ECDSA P-384) at
//! intervals and whenever a segment closes. Anyone with the public key can check that nothing was
//! changed, removed, inserted, reordered or cut off ([`verify`]).
//!
//! On disk (`<data dir>/audit/`):
//! - `segment-00000001.log`, … — JSON lines, one [`record::Record`] each;
//! - `head.json` — the newest signed digest, so that cutting the tail or removing the newest segment
//!   is detected too;
//! - `signing-key.pem` — the public key that checks the digests (the private key is stored wrapped
//!   under the root key by the server).
//!
//! The format is in `docs/formats.md`.

pub mod query;
pub mod record;
pub mod verify;
mod writer;

pub use record::{Digest, Record, RecordBody};
pub use verify::{Break, VerifyReport};
pub use writer::{AuditLog, AuditOptions, DigestSigner};

/// Why the audit log could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit log is not writable: {0}")]
    Unavailable(String),
    #[error("audit log: {0}")]
    Invalid(String),
}

impl AuditError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, AuditError>;

/// File name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("segment-{n:08}.log")
}

/// The segment numbers present in `dir`, ascending.
pub fn segments(dir: &std::path::Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(AuditError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("segment-")
            .and_then(|r| r.strip_suffix(".log"))
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub const HEAD_FILE: &str = "head.json";
pub const PUBLIC_KEY_FILE: &str = "signing-key.pem";

/// PEM text of a DER SubjectPublicKeyInfo.
pub fn public_key_pem(spki_der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// The DER inside a `PUBLIC KEY` PEM block.
pub fn public_key_from_pem(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PUBLIC KEY-----")
        .collect();
    if body.is_empty() {
        return Err(AuditError::Invalid(
            "no '-----BEGIN PUBLIC KEY-----' block in the public key file".into(),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| AuditError::Invalid(format!("the public key PEM is not valid base64: {e}")))
}
