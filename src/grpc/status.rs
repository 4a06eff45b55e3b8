//! The one mapping from the service's errors to gRPC statuses.

use tonic::Status;

use crate::error::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument { field, reason } => {
                Status::invalid_argument(format!("{field}: {reason}"))
            }
            Error::NotFound(message) => Status::not_found(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::Unavailable(message) | Error::RateLimited(message) => {
                Status::unavailable(message)
            }
            Error::Aborted(message) => Status::aborted(message),
            Error::Internal(cause) => {
                // The cause stays in our logs; callers learn nothing about internals.
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}
