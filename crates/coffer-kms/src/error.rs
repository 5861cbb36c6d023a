use thiserror::Error;

/// Errors of the key service. Each variant is one AWS KMS exception; the API layer maps them to the
/// wire in one place. Messages follow AWS's wording where AWS has one, and never carry key material
/// or plaintext.
#[derive(Debug, Error)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
    /// A policy refused the request; the message names who, what, on which resource and why.
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    InvalidGrantToken(String),
    #[error("{0}")]
    Disabled(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    InvalidCiphertext(String),
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    NotAuthorized(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Tag(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("{0}")]
    InvalidKeyUsage(String),
    #[error("{0}")]
    InvalidMarker(String),
    #[error("{0}")]
    InvalidArn(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    InvalidImportToken(String),
    #[error("{0}")]
    ExpiredImportToken(String),
    #[error("{0}")]
    IncorrectKeyMaterial(String),
    /// Verify found the signature invalid (AWS gives no message).
    #[error("{0}")]
    InvalidSignature(String),
    /// VerifyMac found the MAC invalid (AWS gives no message).
    #[error("{0}")]
    InvalidMac(String),
    /// The custom key store errors, by AWS exception name.
    #[error("{0}")]
    CustomKeyStoreNotFound(String),
    #[error("{0}")]
    CustomKeyStoreNameInUse(String),
    #[error("{0}")]
    CustomKeyStoreInvalidState(String),
    #[error("{0}")]
    CustomKeyStoreHasCmks(String),
    #[error("{0}")]
    CloudHsmClusterNotFound(String),
    #[error("{0}")]
    CloudHsmClusterInUse(String),
    #[error("{0}")]
    IncorrectTrustAnchor(String),
    #[error("The request would have succeeded, but the DryRun option is set.")]
    DryRun,
    /// A failure inside Coffer (storage, root of trust). The message is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<coffer_meta::MetaError> for KmsError {
    fn from(e: coffer_meta::MetaError) -> Self {
        KmsError::Internal(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, KmsError>;
