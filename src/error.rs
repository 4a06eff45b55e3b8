//! The service's one error type. It carries no transport types; the gRPC
//! adapter maps it to a `Status` in one place (`grpc::status`).

use crate::domain::InvalidValue;
use crate::domain::operation::Refusal;
use crate::domain::usage::UsageRefusal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field failed validation.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is valid but the system is not in a state to perform it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A dependency (the database, Stripe) cannot be reached now; retrying
    /// later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A dependency asked us to slow down (Stripe's 429, after the
    /// client's own retries); retrying later will work.
    #[error("{0}")]
    RateLimited(String),
    /// A conflicting change of the same organization is under way; retry.
    #[error("{0}")]
    Aborted(String),
    /// Anything the caller cannot fix; logged with its cause chain and
    /// answered without detail.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

/// Names the field a parsed value came from.
pub trait FieldContext<T> {
    fn field(self, name: &str) -> Result<T>;
}

impl<T> FieldContext<T> for std::result::Result<T, InvalidValue> {
    fn field(self, name: &str) -> Result<T> {
        self.map_err(|InvalidValue(reason)| Error::invalid(name, reason))
    }
}

/// A plan's refusal: a bad field, or valid but not now.
impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid { field, reason } => Self::invalid(field, reason),
            Refusal::NotNow(message) => Self::FailedPrecondition(message),
        }
    }
}

/// A usage report or reservation the rules refused.
impl From<UsageRefusal> for Error {
    fn from(refusal: UsageRefusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            UsageRefusal::KeyReused(_) => Self::AlreadyExists(message),
            UsageRefusal::HoldNotFound(_) => Self::NotFound(message),
            UsageRefusal::ZeroWithoutHold => Self::invalid("amount_micros", message),
            UsageRefusal::CreditsLocked(_)
            | UsageRefusal::InsufficientCredits { .. }
            | UsageRefusal::HoldAlreadySettled(_) => Self::FailedPrecondition(message),
        }
    }
}
