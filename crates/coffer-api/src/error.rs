//! Every error the API returns, mapped to AWS's error code and HTTP status in one place.

use axum::http::StatusCode;
use coffer_kms::KmsError;

use crate::sigv4::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The body is not JSON of the expected shape (AWS's SerializationException).
    #[error("{0}")]
    Serialization(String),
    /// Parameter constraints failed; each entry is one AWS-style clause.
    #[error("{}", validation_message(.0))]
    Validation(Vec<String>),
    /// The X-Amz-Target names no operation AWS KMS has.
    #[error("{0}")]
    UnknownOperation(String),
    /// The body is larger than the server accepts.
    #[error("The request body is larger than {0} bytes.")]
    TooLarge(usize),
    /// A failure inside Coffer. The detail goes to the log; the client sees only the request id.
    #[error("{0}")]
    Internal(String),
    /// The audit log cannot be written, so the request is refused (fail closed).
    #[error("the audit log cannot be written: {0}")]
    AuditUnavailable(String),
}

fn validation_message(clauses: &[String]) -> String {
    let n = clauses.len();
    format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        clauses.join("; ")
    )
}

impl ApiError {
    /// The HTTP status and AWS error code (`__type`) for this error.
    pub fn code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Kms(e) => match e {
                KmsError::NotFound(_) => (S::BAD_REQUEST, "NotFoundException"),
                KmsError::AccessDenied(_) => (S::BAD_REQUEST, "AccessDeniedException"),
                KmsError::InvalidGrantToken(_) => (S::BAD_REQUEST, "InvalidGrantTokenException"),
                KmsError::MalformedPolicyDocument(_) => {
                    (S::BAD_REQUEST, "MalformedPolicyDocumentException")
                }
                KmsError::Disabled(_) => (S::BAD_REQUEST, "DisabledException"),
                KmsError::InvalidState(_) => (S::BAD_REQUEST, "KMSInvalidStateException"),
                KmsError::InvalidCiphertext(_) => (S::BAD_REQUEST, "InvalidCiphertextException"),
                KmsError::IncorrectKey(_) => (S::BAD_REQUEST, "IncorrectKeyException"),
                KmsError::AlreadyExists(_) => (S::BAD_REQUEST, "AlreadyExistsException"),
                KmsError::InvalidAliasName(_) => (S::BAD_REQUEST, "InvalidAliasNameException"),
                KmsError::NotAuthorized(_) => (S::BAD_REQUEST, "NotAuthorizedException"),
                KmsError::LimitExceeded(_) => (S::BAD_REQUEST, "LimitExceededException"),
                KmsError::Tag(_) => (S::BAD_REQUEST, "TagException"),
                KmsError::UnsupportedOperation(_) => {
                    (S::BAD_REQUEST, "UnsupportedOperationException")
                }
                KmsError::InvalidKeyUsage(_) => (S::BAD_REQUEST, "InvalidKeyUsageException"),
                KmsError::InvalidMarker(_) => (S::BAD_REQUEST, "InvalidMarkerException"),
                KmsError::InvalidArn(_) => (S::BAD_REQUEST, "InvalidArnException"),
                KmsError::Validation(_) => (S::BAD_REQUEST, "ValidationException"),
                KmsError::InvalidImportToken(_) => (S::BAD_REQUEST, "InvalidImportTokenException"),
                KmsError::ExpiredImportToken(_) => (S::BAD_REQUEST, "ExpiredImportTokenException"),
                KmsError::IncorrectKeyMaterial(_) => {
                    (S::BAD_REQUEST, "IncorrectKeyMaterialException")
                }
                KmsError::InvalidSignature(_) => (S::BAD_REQUEST, "KMSInvalidSignatureException"),
                KmsError::InvalidMac(_) => (S::BAD_REQUEST, "KMSInvalidMacException"),
                KmsError::CustomKeyStoreNotFound(_) => {
                    (S::BAD_REQUEST, "CustomKeyStoreNotFoundException")
                }
                KmsError::CustomKeyStoreNameInUse(_) => {
                    (S::BAD_REQUEST, "CustomKeyStoreNameInUseException")
                }
                KmsError::CustomKeyStoreInvalidState(_) => {
                    (S::BAD_REQUEST, "CustomKeyStoreInvalidStateException")
                }
                KmsError::CustomKeyStoreHasCmks(_) => {
                    (S::BAD_REQUEST, "CustomKeyStoreHasCMKsException")
                }
                KmsError::CloudHsmClusterNotFound(_) => {
                    (S::BAD_REQUEST, "CloudHsmClusterNotFoundException")
                }
                KmsError::CloudHsmClusterInUse(_) => {
                    (S::BAD_REQUEST, "CloudHsmClusterInUseException")
                }
                KmsError::IncorrectTrustAnchor(_) => {
                    (S::BAD_REQUEST, "IncorrectTrustAnchorException")
                }
                KmsError::DryRun => (S::PRECONDITION_FAILED, "DryRunOperationException"),
                KmsError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "KMSInternalException"),
            },
            ApiError::Auth(e) => match e {
                AuthError::Missing => (S::BAD_REQUEST, "MissingAuthenticationTokenException"),
                AuthError::Malformed(_) => (S::BAD_REQUEST, "IncompleteSignatureException"),
                AuthError::UnknownAccessKey => (S::BAD_REQUEST, "UnrecognizedClientException"),
                AuthError::SignatureMismatch | AuthError::Expired(_) | AuthError::WrongScope(_) => {
                    (S::BAD_REQUEST, "InvalidSignatureException")
                }
            },
            ApiError::Serialization(_) => (S::BAD_REQUEST, "SerializationException"),
            ApiError::Validation(_) => (S::BAD_REQUEST, "ValidationException"),
            ApiError::UnknownOperation(_) => (S::BAD_REQUEST, "UnknownOperationException"),
            ApiError::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException"),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "KMSInternalException"),
            ApiError::AuditUnavailable(_) => (S::SERVICE_UNAVAILABLE, "KMSInternalException"),
        }
    }

    /// The message the client sees. Internal details are replaced by a pointer to the log.
    pub fn client_message(&self, request_id: &str) -> String {
        match self {
            ApiError::Kms(KmsError::Internal(_)) | ApiError::Internal(_) => format!(
                "Coffer hit an internal error; the server log has the details under request id {request_id}."
            ),
            ApiError::AuditUnavailable(_) => format!(
                "Coffer refused the request because it cannot record it in its audit log; an operator must \
                 check the disk that holds DATA_DIR/audit (the server log has the details under request id \
                 {request_id})."
            ),
            other => other.to_string(),
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            ApiError::Kms(KmsError::Internal(_))
                | ApiError::Internal(_)
                | ApiError::AuditUnavailable(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_message_form() {
        let e = ApiError::Validation(vec!["a".into()]);
        assert_eq!(e.to_string(), "1 validation error detected: a");
        let e = ApiError::Validation(vec!["a".into(), "b".into()]);
        assert_eq!(e.to_string(), "2 validation errors detected: a; b");
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let e = ApiError::Kms(KmsError::Internal("disk /secret/path failed".into()));
        assert!(!e.client_message("r1").contains("/secret/path"));
        assert_eq!(e.code().0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
