//! The webhook ingress: `POST /stripe/webhook` on its own listener.
//!
//! It only verifies, stores and acknowledges. The signature is checked with
//! async-stripe's verification against every configured secret (so a secret
//! can be rotated); the event is then written to the inbox in one statement
//! and only then answered 200. Workers apply stored events later, so a
//! redelivery, or a crash between storing and answering, does no harm.
//!
//! | situation | answer |
//! | --- | --- |
//! | bad, missing or stale (> 5 min) signature | 400, nothing stored |
//! | body over 1 MiB | 413 |
//! | valid signature, malformed JSON | 400, logged |
//! | stored, or already stored | 200 |
//! | database unreachable | 503, so Stripe retries |

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::DateTime;
use serde::Deserialize;
use stripe_webhook::{Webhook, WebhookError};
use tokio::sync::Notify;

use crate::store::Store;
use crate::store::stripe_events::{self, ReceivedEvent};

/// Largest body accepted; Stripe's events are far smaller.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub const WEBHOOK_PATH: &str = "/stripe/webhook";

/// The endpoint's signing secrets (`whsec_...`). `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecrets(Vec<String>);

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecrets({} configured)", self.0.len())
    }
}

impl WebhookSecrets {
    /// Parses a comma-separated list.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let secrets: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if secrets.is_empty() {
            return Err("no webhook secret given".into());
        }
        Ok(Self(secrets))
    }

    pub fn none() -> Self {
        Self(Vec::new())
    }
}

#[derive(Debug)]
struct Ingress {
    store: Store,
    secrets: WebhookSecrets,
    /// Wakes the inbox worker when a new event is stored.
    stored: Arc<Notify>,
}

/// The fields the inbox needs, read from the JSON when the typed client
/// cannot parse an otherwise well-formed, correctly signed event.
#[derive(Deserialize)]
struct EventEnvelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
}

pub fn webhook_router(store: Store, secrets: WebhookSecrets, stored: Arc<Notify>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(Ingress {
            store,
            secrets,
            stored,
        }))
}

/// The event's envelope when one of the secrets verifies the signature, or
/// why none did (a stale timestamp is reported before a mismatch).
fn verify(
    secrets: &WebhookSecrets,
    payload: &str,
    signature: &str,
) -> Result<EventEnvelope, Rejection> {
    let mut last = Rejection::NoSecret;
    for secret in &secrets.0 {
        match Webhook::construct_event(payload, signature, secret) {
            Ok(event) => {
                return Ok(EventEnvelope {
                    id: event.id.as_str().to_owned(),
                    event_type: event.type_.as_str().to_owned(),
                    created: event.created,
                });
            }
            // The signature and timestamp were good; only the typed parse
            // failed. Keep the event if it is still well-formed JSON: the
            // worker reads what it needs from Stripe itself.
            Err(WebhookError::BadParse(reason)) => {
                return serde_json::from_str::<EventEnvelope>(payload)
                    .map_err(|json| Rejection::Malformed(format!("{reason}; {json}")));
            }
            Err(WebhookError::BadTimestamp(at)) => last = Rejection::Stale(at),
            Err(WebhookError::BadSignature | WebhookError::BadKey | WebhookError::BadHeader(_)) => {
                if !matches!(last, Rejection::Stale(_)) {
                    last = Rejection::BadSignature;
                }
            }
        }
    }
    Err(last)
}

#[derive(Debug)]
enum Rejection {
    NoSecret,
    BadSignature,
    Stale(i64),
    Malformed(String),
}

async fn receive(
    State(ingress): State<Arc<Ingress>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(signature) = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return (StatusCode::BAD_REQUEST, "missing Stripe-Signature");
    };
    let Ok(payload) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not UTF-8");
    };
    let envelope = match verify(&ingress.secrets, payload, signature) {
        Ok(envelope) => envelope,
        Err(Rejection::NoSecret) => {
            tracing::error!("webhook received but no STRIPE_WEBHOOK_SECRET is configured");
            return (StatusCode::BAD_REQUEST, "webhook secret not configured");
        }
        Err(Rejection::BadSignature) => {
            tracing::warn!("webhook with an invalid signature rejected");
            return (StatusCode::BAD_REQUEST, "invalid signature");
        }
        Err(Rejection::Stale(at)) => {
            tracing::warn!(signed_at = at, "webhook with a stale signature rejected");
            return (StatusCode::BAD_REQUEST, "stale signature");
        }
        Err(Rejection::Malformed(reason)) => {
            tracing::warn!(%reason, "correctly signed webhook with a malformed body rejected");
            return (StatusCode::BAD_REQUEST, "malformed event");
        }
    };
    let Some(created) = DateTime::from_timestamp(envelope.created, 0) else {
        return (StatusCode::BAD_REQUEST, "malformed event");
    };
    let received = ReceivedEvent {
        id: &envelope.id,
        event_type: &envelope.event_type,
        raw_body: payload,
        stripe_created_at: created,
    };
    let stored = async {
        let mut conn = ingress.store.pool().acquire().await?;
        stripe_events::insert_if_new(&mut conn, &received).await
    };
    match stored.await {
        Ok(true) => {
            tracing::info!(event_id = %envelope.id, event_type = %envelope.event_type, "webhook stored");
            ingress.stored.notify_one();
            (StatusCode::OK, "stored")
        }
        Ok(false) => {
            tracing::info!(event_id = %envelope.id, "duplicate webhook acknowledged");
            (StatusCode::OK, "already stored")
        }
        Err(error) => {
            // Not stored, so not acknowledged: Stripe will deliver it again.
            tracing::error!(event_id = %envelope.id, error = %error, "webhook could not be stored");
            (StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}
