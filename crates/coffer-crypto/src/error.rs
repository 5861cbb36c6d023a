use thiserror::Error;

/// Errors from the crypto layer. Decryption failures are deliberately coarse: a caller learns that a
/// ciphertext did not open, never why, so the error cannot serve as an oracle.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The bytes are not a well-formed record of the expected format.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The record has a version this build does not know.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: u8 },
    /// Authentication failed: wrong key, wrong associated data, or tampered bytes.
    #[error("decryption failed")]
    Decrypt,
    /// The crypto library reported a failure it does not explain (e.g. the RNG).
    #[error("cryptographic operation failed")]
    Unspecified,
}
