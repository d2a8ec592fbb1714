//! The KMS error type: AWS error names and messages.

use std::fmt;

/// AWS KMS error names. `Display` gives the exact AWS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    AccessDeniedException,
    AlreadyExistsException,
    CustomKeyStoreInvalidStateException,
    DependencyTimeoutException,
    DisabledException,
    DryRunOperationException,
    ExpiredImportTokenException,
    IncorrectKeyException,
    IncorrectKeyMaterialException,
    InvalidAliasNameException,
    InvalidArnException,
    InvalidCiphertextException,
    InvalidGrantIdException,
    InvalidGrantTokenException,
    InvalidImportTokenException,
    InvalidKeyUsageException,
    InvalidMarkerException,
    KMSInternalException,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    KMSInvalidStateException,
    KeyUnavailableException,
    LimitExceededException,
    MalformedPolicyDocumentException,
    NotFoundException,
    TagException,
    UnsupportedOperationException,
    ValidationException,
    // Authentication errors of the HTTP API.
    UnrecognizedClientException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    IncompleteSignatureException,
    UnknownOperationException,
    SerializationException,
    RequestEntityTooLargeException,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An error of a KMS operation: the AWS error name and a message that
/// never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct KmsError {
    pub code: ErrorCode,
    pub message: String,
}

impl KmsError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        KmsError {
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationException, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFoundException, message)
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::KMSInvalidStateException, message)
    }

    /// The one opaque ciphertext error: it never says which check failed.
    pub fn invalid_ciphertext() -> Self {
        Self::new(ErrorCode::InvalidCiphertextException, "")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::KMSInternalException, message)
    }

    /// True for faults of the service rather than of the request (HTTP 5xx).
    pub fn is_internal(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::KMSInternalException | ErrorCode::DependencyTimeoutException
        )
    }
}

pub type KmsResult<T> = Result<T, KmsError>;
