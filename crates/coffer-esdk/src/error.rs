use thiserror::Error;

/// Why a message could not be written or read. Failures of authentication are deliberately
/// coarse (which frame, not why), so an error is no oracle.
#[derive(Debug, Error)]
pub enum Error {
    /// The bytes are not a message of the format.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The input ends inside the message.
    #[error("the message is truncated (the input ends inside it)")]
    Truncated,
    /// Bytes follow the end of the message.
    #[error("the input has bytes after the end of the message")]
    TrailingBytes,
    #[error("unsupported algorithm suite 0x{0:04X}")]
    UnsupportedSuite(u16),
    /// The commitment policy forbids the suite.
    #[error("{0}")]
    CommitmentPolicy(String),
    /// The data key does not match the key commitment in the header.
    #[error(
        "key commitment does not match: the data key is not the one this message was encrypted with"
    )]
    CommitmentMismatch,
    #[error(
        "the message has {found} encrypted data keys, more than the limit of {max} (raise --max-encrypted-data-keys if it is expected)"
    )]
    TooManyEncryptedDataKeys { found: usize, max: usize },
    /// No keyring could decrypt any encrypted data key.
    #[error("no keyring could decrypt any of the message's encrypted data keys: {0}")]
    NoDataKey(String),
    #[error("the message header does not authenticate (tampered header or wrong data key)")]
    HeaderAuthentication,
    #[error("frame {0} of the message body does not authenticate (tampered or reordered data)")]
    BodyAuthentication(u32),
    #[error("the message signature does not verify (tampered message or wrong signing key)")]
    Signature,
    /// The encryption context is not what the caller required, or breaks a rule of the format.
    #[error("encryption context: {0}")]
    Context(String),
    /// A frame or non-framed body is larger than the caller allows in memory.
    #[error(
        "a frame of {len} bytes is larger than the limit of {max} bytes held in memory (raise the limit if the message is trusted)"
    )]
    FrameTooLarge { len: u64, max: u64 },
    /// A keyring failed (a KMS call, a missing key).
    #[error("{0}")]
    Keyring(String),
    /// A record that field-level encryption cannot process (never holds a value).
    #[error("{0}")]
    Record(String),
    #[error("invalid options: {0}")]
    Options(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Crypto(#[from] coffer_crypto::CryptoError),
}

pub(crate) fn malformed(what: impl Into<String>) -> Error {
    Error::Malformed(what.into())
}
