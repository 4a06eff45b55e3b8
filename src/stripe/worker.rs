//! The inbox worker: applies stored webhook events one by one, each in its
//! own transaction (see `service::stripe_sync`). It sleeps until the
//! ingress stores something or the poll interval passes; the poll also
//! picks up retries whose backoff has run out and events stored by other
//! replicas.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::service::{RetryPolicy, Service, WorkerStep};

/// How the inbox is worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxSettings {
    pub retry: RetryPolicy,
    /// The longest the worker sleeps when the inbox looks empty.
    pub poll_interval: Duration,
}

impl Default for InboxSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: 8,
                first_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(3600),
            },
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// Works the inbox until `stop` turns true.
pub async fn run_inbox_worker(
    service: Service,
    settings: InboxSettings,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let idle = match service.apply_next_stripe_event(settings.retry).await {
            Ok(WorkerStep::Idle) => true,
            Ok(WorkerStep::Finished { event_id, outcome }) => {
                tracing::info!(%event_id, ?outcome, "Stripe event applied");
                false
            }
            // Already logged with its cause; move on to the next event.
            Ok(WorkerStep::Failed { .. }) => false,
            Err(error) => {
                // The inbox itself is unreachable (database down): wait.
                tracing::error!(error = %error, "the webhook inbox could not be read");
                true
            }
        };
        if idle {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(settings.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
