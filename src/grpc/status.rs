//! The one mapping from the service's errors to gRPC statuses, with the
//! google.rpc details a program can act on (AIP-193):
//!
//! | error | code | details |
//! | --- | --- | --- |
//! | a field failed validation | INVALID_ARGUMENT | `BadRequest` with the field |
//! | refused for a reason | FAILED_PRECONDITION, ALREADY_EXISTS, PERMISSION_DENIED | `ErrorInfo`: reason, domain `billing.v1`, the numbers |
//! | a dependency is away or slowing us down | UNAVAILABLE | `RetryInfo` |
//! | too many calls in flight | RESOURCE_EXHAUSTED | `RetryInfo` |
//! | a conflicting change is under way | ABORTED | `RetryInfo` |

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::reason::{REASON_DOMAIN, Refused};
use crate::error::Error;

/// When to retry after the database or Stripe was unreachable: a restart
/// or failover takes seconds, and the client backs off from there.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);
/// Stripe's rate limit is per second; our own retries were already spent.
const RETRY_RATE_LIMITED: Duration = Duration::from_secs(2);
/// A shed call finds room as soon as calls in flight finish.
const RETRY_OVERLOADED: Duration = Duration::from_millis(100);
/// A conflicting change of the same organization commits in milliseconds.
const RETRY_ABORTED: Duration = Duration::from_millis(50);

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument { field, reason } => {
                let message = format!("{field}: {reason}");
                let details = ErrorDetails::with_bad_request_violation(field, reason);
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(message) => Status::not_found(message),
            Error::PermissionDenied(refused) => with_reason(Code::PermissionDenied, refused),
            Error::FailedPrecondition(refused) => with_reason(Code::FailedPrecondition, refused),
            Error::AlreadyExists(refused) => with_reason(Code::AlreadyExists, refused),
            Error::Unavailable(message) => {
                retry_after(Code::Unavailable, message, RETRY_UNAVAILABLE)
            }
            Error::RateLimited(message) => {
                retry_after(Code::Unavailable, message, RETRY_RATE_LIMITED)
            }
            Error::Overloaded(message) => {
                retry_after(Code::ResourceExhausted, message, RETRY_OVERLOADED)
            }
            Error::Aborted(message) => retry_after(Code::Aborted, message, RETRY_ABORTED),
            Error::Internal(cause) => {
                // The cause stays in our logs; callers learn nothing about internals.
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn with_reason(code: Code, refused: Refused) -> Status {
    let metadata: HashMap<String, String> = refused
        .metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    let details = ErrorDetails::with_error_info(refused.reason.as_str(), REASON_DOMAIN, metadata);
    Status::with_error_details(code, refused.message, details)
}

fn retry_after(code: Code, message: String, delay: Duration) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)))
}
