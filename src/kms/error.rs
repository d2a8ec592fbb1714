//! The KMS error type: AWS error names and messages.

use std::fmt;

/// Declares [`ErrorCode`] and the list of all its values once.
macro_rules! error_codes {
    ($($(#[$vmeta:meta])* $variant:ident),+ $(,)?) => {
        /// AWS KMS error names. `Display` gives the exact AWS name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$vmeta])* $variant),+
        }

        impl ErrorCode {
            /// Every error name, for lookups by name.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];
        }
    };
}

error_codes! {
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
    // Features this KMS does not offer, answered as AWS answers an
    // account without them.
    CustomKeyStoreNotFoundException,
    CloudHsmClusterNotFoundException,
    XksProxyUriUnreachableException,
    // Authentication errors of the HTTP API.
    UnrecognizedClientException,
    ExpiredTokenException,
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

impl From<crate::policy::PolicyError> for KmsError {
    /// MalformedPolicyDocumentException, except the size quota
    /// (LimitExceededException, as KMS reports its 32 KB key policy quota).
    fn from(e: crate::policy::PolicyError) -> Self {
        let code = match e {
            crate::policy::PolicyError::TooLarge(_) => ErrorCode::LimitExceededException,
            _ => ErrorCode::MalformedPolicyDocumentException,
        };
        KmsError::new(code, e.to_string())
    }
}

impl From<crate::policy::Denial> for KmsError {
    fn from(d: crate::policy::Denial) -> Self {
        KmsError::new(ErrorCode::AccessDeniedException, d.message())
    }
}

impl From<crate::validate::Violation> for KmsError {
    /// ValidationException with AWS's message for the member.
    fn from(v: crate::validate::Violation) -> Self {
        KmsError::validation(v.to_string())
    }
}

impl From<crate::validate::ValidationErrors> for KmsError {
    /// ValidationException naming every member that failed.
    fn from(e: crate::validate::ValidationErrors) -> Self {
        KmsError::validation(e.to_string())
    }
}
