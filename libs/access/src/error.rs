//! Why a request is refused.

/// A refusal: the caller is not known, or may not do this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No credential, or one that names nobody (gRPC UNAUTHENTICATED, HTTP 401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A known caller without the right (gRPC PERMISSION_DENIED, HTTP 403).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
}

impl AccessError {
    pub(crate) fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::Unauthenticated(reason.into())
    }

    pub(crate) fn denied(reason: impl Into<String>) -> Self {
        Self::PermissionDenied(reason.into())
    }
}
