//! IAM's and STS's errors, by the names those services answer with
//! (`NoSuchEntity`, `EntityAlreadyExists`, `ValidationError`, ...), not
//! the KMS's. The KMS and the control plane see them through `From`.

use std::fmt;

use crate::kms::{ErrorCode, KmsError};

/// The error codes of IAM and STS that keyvol answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IamErrorCode {
    NoSuchEntity,
    EntityAlreadyExists,
    ValidationError,
    MalformedPolicyDocument,
    LimitExceeded,
    AccessDenied,
    ExpiredToken,
    InvalidClientTokenId,
    InvalidAction,
    SignatureDoesNotMatch,
    IncompleteSignature,
    MissingAuthenticationToken,
    ServiceFailure,
}

impl IamErrorCode {
    /// The name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            IamErrorCode::NoSuchEntity => "NoSuchEntity",
            IamErrorCode::EntityAlreadyExists => "EntityAlreadyExists",
            IamErrorCode::ValidationError => "ValidationError",
            IamErrorCode::MalformedPolicyDocument => "MalformedPolicyDocument",
            IamErrorCode::LimitExceeded => "LimitExceeded",
            IamErrorCode::AccessDenied => "AccessDenied",
            IamErrorCode::ExpiredToken => "ExpiredToken",
            IamErrorCode::InvalidClientTokenId => "InvalidClientTokenId",
            IamErrorCode::InvalidAction => "InvalidAction",
            IamErrorCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            IamErrorCode::IncompleteSignature => "IncompleteSignature",
            IamErrorCode::MissingAuthenticationToken => "MissingAuthenticationToken",
            IamErrorCode::ServiceFailure => "ServiceFailure",
        }
    }

    /// The KMS code closest in meaning (for callers that answer as the KMS).
    fn kms(self) -> ErrorCode {
        match self {
            IamErrorCode::NoSuchEntity => ErrorCode::NotFoundException,
            IamErrorCode::EntityAlreadyExists => ErrorCode::AlreadyExistsException,
            IamErrorCode::ValidationError => ErrorCode::ValidationException,
            IamErrorCode::MalformedPolicyDocument => ErrorCode::MalformedPolicyDocumentException,
            IamErrorCode::LimitExceeded => ErrorCode::LimitExceededException,
            IamErrorCode::AccessDenied => ErrorCode::AccessDeniedException,
            IamErrorCode::ExpiredToken => ErrorCode::ExpiredTokenException,
            IamErrorCode::InvalidClientTokenId => ErrorCode::UnrecognizedClientException,
            IamErrorCode::InvalidAction => ErrorCode::UnknownOperationException,
            IamErrorCode::SignatureDoesNotMatch => ErrorCode::InvalidSignatureException,
            IamErrorCode::IncompleteSignature => ErrorCode::IncompleteSignatureException,
            IamErrorCode::MissingAuthenticationToken => {
                ErrorCode::MissingAuthenticationTokenException
            }
            IamErrorCode::ServiceFailure => ErrorCode::KMSInternalException,
        }
    }
}

impl fmt::Display for IamErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IAM or STS error: its code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamError {
    pub code: IamErrorCode,
    pub message: String,
}

pub type IamResult<T> = Result<T, IamError>;

impl IamError {
    pub fn new(code: IamErrorCode, message: impl Into<String>) -> Self {
        IamError {
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(IamErrorCode::ValidationError, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(IamErrorCode::NoSuchEntity, message)
    }

    /// A failure of keyvol itself (the state database): a 5xx.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(IamErrorCode::ServiceFailure, message)
    }

    pub fn is_internal(&self) -> bool {
        self.code == IamErrorCode::ServiceFailure
    }
}

impl fmt::Display for IamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for IamError {}

impl From<IamError> for KmsError {
    fn from(e: IamError) -> Self {
        if e.is_internal() {
            return KmsError::internal(e.message);
        }
        KmsError::new(e.code.kms(), e.message)
    }
}

/// A KMS-side failure inside an IAM operation (the policy engine, a
/// shared validation): its closest IAM name.
impl From<KmsError> for IamError {
    fn from(e: KmsError) -> Self {
        if e.is_internal() {
            return IamError::internal(e.message);
        }
        let code = match e.code {
            ErrorCode::NotFoundException => IamErrorCode::NoSuchEntity,
            ErrorCode::AlreadyExistsException => IamErrorCode::EntityAlreadyExists,
            ErrorCode::MalformedPolicyDocumentException => IamErrorCode::MalformedPolicyDocument,
            ErrorCode::LimitExceededException => IamErrorCode::LimitExceeded,
            ErrorCode::AccessDeniedException => IamErrorCode::AccessDenied,
            ErrorCode::ExpiredTokenException => IamErrorCode::ExpiredToken,
            ErrorCode::UnrecognizedClientException => IamErrorCode::InvalidClientTokenId,
            ErrorCode::UnknownOperationException => IamErrorCode::InvalidAction,
            ErrorCode::InvalidSignatureException => IamErrorCode::SignatureDoesNotMatch,
            ErrorCode::IncompleteSignatureException => IamErrorCode::IncompleteSignature,
            ErrorCode::MissingAuthenticationTokenException => {
                IamErrorCode::MissingAuthenticationToken
            }
            _ => IamErrorCode::ValidationError,
        };
        IamError::new(code, e.message)
    }
}

impl From<crate::validate::Violation> for IamError {
    fn from(v: crate::validate::Violation) -> Self {
        IamError::validation(crate::validate::ValidationErrors::from(v).to_string())
    }
}

impl From<crate::validate::ValidationErrors> for IamError {
    fn from(v: crate::validate::ValidationErrors) -> Self {
        IamError::validation(v.to_string())
    }
}

impl From<IamError> for crate::api_error::ApiError {
    fn from(e: IamError) -> Self {
        if e.is_internal() {
            return crate::api_error::ApiError::internal(e.message);
        }
        crate::api_error::ApiError::new(e.code.as_str(), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_meaning_across_the_kms() {
        for code in [
            IamErrorCode::NoSuchEntity,
            IamErrorCode::EntityAlreadyExists,
            IamErrorCode::ValidationError,
            IamErrorCode::MalformedPolicyDocument,
            IamErrorCode::LimitExceeded,
            IamErrorCode::AccessDenied,
            IamErrorCode::ExpiredToken,
            IamErrorCode::InvalidClientTokenId,
            IamErrorCode::InvalidAction,
            IamErrorCode::SignatureDoesNotMatch,
            IamErrorCode::IncompleteSignature,
            IamErrorCode::MissingAuthenticationToken,
        ] {
            let back = IamError::from(KmsError::from(IamError::new(code, "m")));
            assert_eq!(back.code, code);
            assert_eq!(back.message, "m");
        }
        let internal = KmsError::from(IamError::internal("disk"));
        assert!(internal.is_internal());
        let api = crate::api_error::ApiError::from(IamError::not_found("no user"));
        assert_eq!(api.code, "NoSuchEntity");
    }
}
