//! The service's one error type. It carries no transport types; the gRPC
//! adapter maps it to a `Status` in one place (`grpc::status`).

use crate::domain::InvalidValue;
use crate::domain::operation::Refusal;
use crate::domain::reason::{ErrorReason, Refused};
use crate::domain::usage::UsageRefusal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field failed validation.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (its scope, role or membership).
    #[error("{0}")]
    PermissionDenied(Refused),
    /// The request is valid but the system is not in a state to perform it.
    #[error("{0}")]
    FailedPrecondition(Refused),
    #[error("{0}")]
    AlreadyExists(Refused),
    /// A dependency (the database, Stripe) cannot be reached now; retrying
    /// later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A dependency asked us to slow down (Stripe's 429, after the
    /// client's own retries); retrying later will work.
    #[error("{0}")]
    RateLimited(String),
    /// Too many calls are in flight; this one was shed before it started.
    #[error("{0}")]
    Overloaded(String),
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

    pub fn denied(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::PermissionDenied(Refused::new(reason, message))
    }

    pub fn precondition(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::FailedPrecondition(Refused::new(reason, message))
    }

    pub fn exists(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::AlreadyExists(Refused::new(reason, message))
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // The database is down or restarting, or every connection stayed
            // busy: nothing is wrong with the call, and a retry (here or on
            // another replica) may well succeed.
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                database_unreachable(&error)
            }
            sqlx::Error::Database(ref db) if server_cannot_serve(db.as_ref()) => {
                database_unreachable(&error)
            }
            other => Self::Internal(other.into()),
        }
    }
}

fn database_unreachable(error: &sqlx::Error) -> Error {
    tracing::warn!(error = %error, "the database cannot be reached");
    Error::Unavailable("the database cannot be reached; retry shortly".into())
}

/// Whether the server refused because it cannot serve now, not because of
/// the statement: a connection exception (class 08), an operator's
/// intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
/// connect now), too many connections (53300), or a database closed to
/// connections (55000, which other refusals share, so with its message).
fn server_cannot_serve(error: &dyn sqlx::error::DatabaseError) -> bool {
    let code = error.code();
    let code = code.as_deref().unwrap_or("");
    code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        || (code == "55000"
            && error
                .message()
                .contains("not currently accepting connections"))
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
            Refusal::NotNow(refused) => Self::FailedPrecondition(refused),
        }
    }
}

/// A usage report or reservation the rules refused.
impl From<UsageRefusal> for Error {
    fn from(refusal: UsageRefusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            UsageRefusal::KeyReused(_) => Self::exists(ErrorReason::IdempotencyKeyReused, message),
            UsageRefusal::HoldNotFound(_) => Self::NotFound(message),
            UsageRefusal::ZeroWithoutHold => Self::invalid("amount_micros", message),
            UsageRefusal::CreditsLocked(_) => {
                Self::precondition(ErrorReason::CreditsLocked, message)
            }
            UsageRefusal::InsufficientCredits { available, wanted } => Self::FailedPrecondition(
                Refused::new(ErrorReason::InsufficientCredits, message)
                    .with("availableMicros", available.0)
                    .with("wantedMicros", wanted.get()),
            ),
            UsageRefusal::HoldAlreadySettled(_) => {
                Self::precondition(ErrorReason::HoldAlreadySettled, message)
            }
        }
    }
}
