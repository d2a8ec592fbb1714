//! The error of a volume or snapshot operation: an EC2-style error code
//! (`InvalidVolume.NotFound`, `IncorrectState`, ...) or a KMS error passed
//! through with its AWS name, and a message that names what to fix.

use crate::kms::KmsError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", message)
    }

    pub fn incorrect_state(message: impl Into<String>) -> Self {
        Self::new("IncorrectState", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("InternalError", message)
    }
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        ApiError {
            code: e.code.to_string(),
            message: e.message,
        }
    }
}

impl From<crate::volume::VolumeError> for ApiError {
    fn from(e: crate::volume::VolumeError) -> Self {
        ApiError::new("VolumeError", e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
