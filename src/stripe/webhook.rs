//! The webhook ingress: `POST /stripe/webhook` on its own listener
//! (`http_listener`: timeouts and caps).
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
//! | valid signature, malformed JSON, or JSON that is not a Stripe event | 400, logged |
//! | valid signature, but nothing PostgreSQL can store (a NUL byte, an id or type that no Stripe event has) | 400, logged |
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

use super::events::BillingEvent;
use super::intake::{Delivery, Intake};
use crate::store::Store;

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
    /// Stores verified events in group commits, and wakes the inbox worker
    /// when one is new.
    intake: Intake,
    secrets: WebhookSecrets,
}

/// The fields the inbox needs, and what makes a body a Stripe event at
/// all, read from the JSON whether or not the typed client parses it.
#[derive(Deserialize)]
struct EventEnvelope {
    id: String,
    object: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    /// Every event carries its object; it names the subscription the event
    /// is about, so the body is parsed once.
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Map<String, serde_json::Value>,
}

/// Longest event id or type stored. Stripe's are a few dozen characters;
/// the bound keeps a signed but absurd one out of the primary key.
const MAX_NAME_LEN: usize = 255;

/// Why a correctly signed body is refused at the door, or `None` when it
/// is an event the inbox can store. PostgreSQL's `text` cannot hold a NUL
/// character, and an id outside Stripe's alphabet is no Stripe event;
/// answering 400 keeps Stripe from retrying what could never be stored.
fn unstorable(envelope: &EventEnvelope, payload: &str) -> Option<&'static str> {
    let name_ok = |name: &str, extra: &[char]| {
        !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
    };
    if envelope.object != "event" {
        Some("the body is not a Stripe event")
    } else if payload.contains('\0') {
        Some("the body contains a NUL character")
    } else if !name_ok(&envelope.id, &[]) {
        Some("the event id is not a Stripe id")
    } else if !name_ok(&envelope.event_type, &['.']) {
        Some("the event type is not a Stripe event type")
    } else if DateTime::from_timestamp(envelope.created, 0).is_none() {
        Some("the event's creation time is out of range")
    } else {
        None
    }
}

pub fn webhook_router(store: Store, secrets: WebhookSecrets, stored: Arc<Notify>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(Ingress {
            intake: Intake::start(store, stored),
            secrets,
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
            // The signature and timestamp are good. The typed parse may
            // fail on a well-formed event (a field this client version does
            // not know); the event is kept all the same, since the worker
            // reads what it needs from Stripe itself.
            Ok(_) => return envelope(payload, None),
            Err(WebhookError::BadParse(reason)) => return envelope(payload, Some(reason)),
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

/// The verified body's envelope, if it is a storable Stripe event.
fn envelope(payload: &str, typed_parse: Option<String>) -> Result<EventEnvelope, Rejection> {
    let envelope = serde_json::from_str::<EventEnvelope>(payload).map_err(|json| {
        Rejection::Malformed(match typed_parse {
            Some(typed) => format!("{typed}; {json}"),
            None => json.to_string(),
        })
    })?;
    match unstorable(&envelope, payload) {
        Some(reason) => Err(Rejection::Unstorable(reason)),
        None => Ok(envelope),
    }
}

#[derive(Debug)]
enum Rejection {
    NoSecret,
    BadSignature,
    Stale(i64),
    Malformed(String),
    Unstorable(&'static str),
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
        Err(Rejection::Unstorable(reason)) => {
            tracing::warn!(
                reason,
                "correctly signed webhook that cannot be stored rejected"
            );
            return (StatusCode::BAD_REQUEST, reason);
        }
    };
    let Some(created) = DateTime::from_timestamp(envelope.created, 0) else {
        return (StatusCode::BAD_REQUEST, "malformed event");
    };
    let EventEnvelope {
        id,
        event_type,
        data,
        ..
    } = envelope;
    let subscription_id =
        BillingEvent::coalescing_subject_of(&event_type, &serde_json::Value::Object(data.object));
    let delivery = Delivery {
        id,
        event_type,
        raw_body: payload.to_owned(),
        stripe_created_at: created,
        subscription_id,
    };
    let (id, event_type) = (delivery.id.clone(), delivery.event_type.clone());
    match ingress.intake.store(delivery).await {
        Ok(true) => {
            tracing::info!(event_id = %id, %event_type, "webhook stored");
            (StatusCode::OK, "stored")
        }
        Ok(false) => {
            tracing::info!(event_id = %id, "duplicate webhook acknowledged");
            (StatusCode::OK, "already stored")
        }
        Err(error) => {
            // Not stored, so not acknowledged: Stripe will deliver it again.
            tracing::error!(event_id = %id, error = %error, "webhook could not be stored");
            (StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, object: &str, event_type: &str, created: i64) -> EventEnvelope {
        EventEnvelope {
            id: id.into(),
            object: object.into(),
            event_type: event_type.into(),
            created,
            data: EventData {
                object: serde_json::Map::new(),
            },
        }
    }

    #[test]
    fn only_storable_stripe_events_pass_the_door() {
        let long = "e".repeat(MAX_NAME_LEN + 1);
        let cases: [(EventEnvelope, &str, Option<&str>); 9] = [
            (
                event("evt_1", "event", "customer.subscription.updated", 1),
                "{}",
                None,
            ),
            (
                event("evt_1", "event", "v1.billing.meter.no_meter_found", 1),
                "{}",
                None,
            ),
            (
                event("evt_1", "charge", "charge.succeeded", 1),
                "{}",
                Some("the body is not a Stripe event"),
            ),
            (
                event("evt_1", "event", "x.y", 1),
                "{\"a\": \"\0\"}",
                Some("the body contains a NUL character"),
            ),
            (
                event("evt_\0", "event", "x.y", 1),
                "{}",
                Some("the event id is not a Stripe id"),
            ),
            (
                event(&long, "event", "x.y", 1),
                "{}",
                Some("the event id is not a Stripe id"),
            ),
            (
                event("", "event", "x.y", 1),
                "{}",
                Some("the event id is not a Stripe id"),
            ),
            (
                event("evt_1", "event", "x y", 1),
                "{}",
                Some("the event type is not a Stripe event type"),
            ),
            (
                event("evt_1", "event", "x.y", i64::MAX),
                "{}",
                Some("the event's creation time is out of range"),
            ),
        ];
        for (envelope, payload, want) in cases {
            assert_eq!(unstorable(&envelope, payload), want, "{}", envelope.id);
        }
    }
}
