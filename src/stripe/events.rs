//! Stripe's event types mapped into the few billing events this service
//! acts on, in one place. A type we do not act on becomes
//! [`BillingEvent::Unsupported`]: acknowledged, stored and recorded as
//! having no effect.
//!
//! A subscription event only says *which* subscription changed: the worker
//! re-reads it from Stripe, so events in any order converge. A paid credit
//! purchase is the exception, read from the event, since a succeeded
//! payment never changes again.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::credits::SucceededPayment;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::metadata::{CREDIT_PURCHASE_TYPE, ORG_ID_KEY, PURCHASER_KEY, TYPE_KEY};

/// What a stored event asks of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingEvent {
    /// A subscription may have changed: re-read it from Stripe.
    SubscriptionChanged(SubscriptionRef),
    /// A credit purchase was paid.
    CreditPurchasePaid(SucceededPayment),
    /// A Checkout session can no longer be paid.
    CheckoutExpired { session_id: String },
    /// A type we act on, about nothing of ours (a payment that is not for
    /// credits, an invoice of no subscription).
    NotOurs,
    /// A type this service does not act on.
    Unsupported { event_type: String },
}

/// Which subscription an event is about, and what it says of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRef {
    pub subscription_id: String,
    pub customer_id: Option<String>,
    /// The organization the object's metadata names.
    pub org_id: Option<OrgId>,
    /// The Checkout session whose payment started it.
    pub completed_session: Option<String>,
}

impl BillingEvent {
    /// The subscription an event of `event_type` about `object` only asks
    /// us to read again, if that is all it does: one reading covers every
    /// such event stored before it. A completed Checkout session also
    /// closes the session, so it is not covered by another event's reading.
    /// Both ways in (the ingress, catch-up) have the object parsed already.
    pub fn coalescing_subject_of(event_type: &str, object: &Value) -> Option<String> {
        match Self::from_parts(event_type, object) {
            Self::SubscriptionChanged(named) if named.completed_session.is_none() => {
                Some(named.subscription_id)
            }
            Self::SubscriptionChanged(_)
            | Self::CreditPurchasePaid(_)
            | Self::CheckoutExpired { .. }
            | Self::Unsupported { .. }
            | Self::NotOurs => None,
        }
    }
}

/// The stored body is not an event at all.
#[derive(Debug, thiserror::Error)]
#[error("stored event is not an event: {0}")]
pub struct NotAnEvent(#[from] serde_json::Error);

#[derive(Deserialize)]
struct EventPayload {
    #[serde(rename = "type")]
    event_type: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: Value,
}

/// Every event type [`BillingEvent::parse`] acts on, for listing from the
/// Events API (which takes at most 20 types).
pub const ACTED_ON_TYPES: [&str; 16] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.expired",
    "payment_intent.succeeded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "subscription_schedule.aborted",
    "subscription_schedule.canceled",
    "subscription_schedule.completed",
    "subscription_schedule.created",
    "subscription_schedule.expiring",
    "subscription_schedule.released",
    "subscription_schedule.updated",
];

/// The event types we act on, by where their payload names the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CheckoutCompleted,
    /// A Checkout payment that settled after the session completed (bank
    /// debits).
    CheckoutPaymentSucceeded,
    CheckoutExpired,
    PaymentSucceeded,
    SubscriptionChanged,
    InvoiceSettled,
    ScheduleChanged,
}

impl Kind {
    fn from_type(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "checkout.session.completed" => Self::CheckoutCompleted,
            "checkout.session.async_payment_succeeded" => Self::CheckoutPaymentSucceeded,
            "checkout.session.expired" => Self::CheckoutExpired,
            "payment_intent.succeeded" => Self::PaymentSucceeded,
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => Self::SubscriptionChanged,
            "invoice.paid" | "invoice.payment_failed" => Self::InvoiceSettled,
            t if t.starts_with("subscription_schedule.") => Self::ScheduleChanged,
            _ => return None,
        })
    }
}

fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(id) => Some(id.clone()),
        Value::Object(map) => map.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl BillingEvent {
    /// Reads a stored event body.
    pub fn parse(raw_body: &str) -> Result<Self, NotAnEvent> {
        let payload: EventPayload = serde_json::from_str(raw_body)?;
        Ok(Self::from_parts(&payload.event_type, &payload.data.object))
    }

    /// What an event of `event_type` about `object` asks of the service.
    fn from_parts(event_type: &str, object: &Value) -> Self {
        let Some(kind) = Kind::from_type(event_type) else {
            return Self::Unsupported {
                event_type: event_type.to_owned(),
            };
        };
        if let Some(payment) = paid_credit_purchase(kind, object) {
            return Self::CreditPurchasePaid(payment);
        }
        if kind == Kind::CheckoutExpired {
            return object
                .get("id")
                .and_then(id_of)
                .map_or(Self::NotOurs, |session_id| Self::CheckoutExpired {
                    session_id,
                });
        }
        let Some(subscription_id) = subscription_id(kind, object) else {
            return Self::NotOurs;
        };
        Self::SubscriptionChanged(SubscriptionRef {
            subscription_id,
            customer_id: object.get("customer").and_then(id_of),
            org_id: object
                .pointer(&format!("/metadata/{ORG_ID_KEY}"))
                .and_then(Value::as_str)
                .and_then(|raw| OrgId::parse(raw).ok()),
            completed_session: (kind == Kind::CheckoutCompleted)
                .then(|| object.get("id").and_then(id_of))
                .flatten(),
        })
    }
}

/// The subscription the event is about; `None` when it is about none.
fn subscription_id(kind: Kind, object: &Value) -> Option<String> {
    match kind {
        Kind::CheckoutCompleted => object.get("subscription").and_then(id_of),
        Kind::CheckoutPaymentSucceeded | Kind::PaymentSucceeded | Kind::CheckoutExpired => None,
        Kind::SubscriptionChanged => object.get("id").and_then(id_of),
        // Since API version 2025-03-31 the subscription sits under
        // `parent`; older payloads had it at the top.
        Kind::InvoiceSettled => object
            .pointer("/parent/subscription_details/subscription")
            .and_then(id_of)
            .or_else(|| object.get("subscription").and_then(id_of)),
        Kind::ScheduleChanged => object
            .get("subscription")
            .and_then(id_of)
            .or_else(|| object.get("released_subscription").and_then(id_of)),
    }
}

/// The credit purchase the event reports paid, if it is one.
fn paid_credit_purchase(kind: Kind, object: &Value) -> Option<SucceededPayment> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    if text(&format!("/metadata/{TYPE_KEY}")) != Some(CREDIT_PURCHASE_TYPE) {
        return None;
    }
    let (payment_id, amount_minor) = match kind {
        Kind::CheckoutCompleted | Kind::CheckoutPaymentSucceeded => {
            if text("/mode") != Some("payment") || text("/payment_status") != Some("paid") {
                return None;
            }
            (
                object.get("payment_intent").and_then(id_of)?,
                object.get("amount_total")?.as_i64()?,
            )
        }
        Kind::PaymentSucceeded => (
            text("/id")?.to_owned(),
            object.get("amount_received")?.as_i64()?,
        ),
        Kind::CheckoutExpired
        | Kind::SubscriptionChanged
        | Kind::InvoiceSettled
        | Kind::ScheduleChanged => return None,
    };
    Some(SucceededPayment {
        payment_id,
        org: OrgId::parse(text(&format!("/metadata/{ORG_ID_KEY}"))?).ok()?,
        amount_minor,
        purchaser: text(&format!("/metadata/{PURCHASER_KEY}"))
            .and_then(|raw| UserId::parse(raw).ok()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(event_type: &str, object: Value) -> String {
        json!({ "id": "evt_1", "type": event_type, "data": { "object": object } }).to_string()
    }

    fn subscription_of(event_type: &str, object: Value) -> Option<String> {
        match BillingEvent::parse(&event(event_type, object)).unwrap() {
            BillingEvent::SubscriptionChanged(r) => Some(r.subscription_id),
            _ => None,
        }
    }

    #[test]
    fn catch_up_lists_exactly_the_types_acted_on() {
        for event_type in ACTED_ON_TYPES {
            assert!(Kind::from_type(event_type).is_some(), "{event_type}");
        }
        for ignored in ["charge.refunded", "customer.updated", "invoice.created"] {
            assert!(!ACTED_ON_TYPES.contains(&ignored), "{ignored}");
            assert!(Kind::from_type(ignored).is_none(), "{ignored}");
        }
    }

    #[test]
    fn paid_credit_purchases_are_read_from_sessions_and_payments() {
        let org = OrgId::generate();
        let metadata = json!({ "org_id": org.to_string(), "type": "credit_purchase", "purchaser_user_id": "ada" });
        let session = json!({
            "id": "cs_1", "mode": "payment", "payment_status": "paid", "payment_intent": "pi_1",
            "amount_total": 2500, "metadata": metadata,
        });
        let BillingEvent::CreditPurchasePaid(paid) =
            BillingEvent::parse(&event("checkout.session.completed", session.clone())).unwrap()
        else {
            panic!("a purchase");
        };
        assert_eq!(
            (paid.payment_id.as_str(), paid.amount_minor, paid.org),
            ("pi_1", 2500, org)
        );
        assert_eq!(paid.purchaser.unwrap().as_str(), "ada");
        let mut unpaid = session;
        unpaid["payment_status"] = json!("unpaid");
        assert_eq!(
            BillingEvent::parse(&event("checkout.session.completed", unpaid)).unwrap(),
            BillingEvent::NotOurs
        );
        let intent = json!({ "id": "pi_1", "amount_received": 2500, "metadata": metadata });
        assert!(matches!(
            BillingEvent::parse(&event("payment_intent.succeeded", intent)).unwrap(),
            BillingEvent::CreditPurchasePaid(p) if p.payment_id == "pi_1"
        ));
        let other = json!({ "id": "pi_2", "amount_received": 100, "metadata": {} });
        assert_eq!(
            BillingEvent::parse(&event("payment_intent.succeeded", other)).unwrap(),
            BillingEvent::NotOurs
        );
    }

    #[test]
    fn each_event_kind_finds_its_subscription() {
        let cases = [
            (
                "checkout.session.completed",
                json!({"id": "cs_1", "subscription": "sub_1"}),
            ),
            ("customer.subscription.deleted", json!({"id": "sub_1"})),
            (
                "invoice.paid",
                json!({"parent": {"subscription_details": {"subscription": "sub_1"}}}),
            ),
            (
                "invoice.payment_failed",
                json!({"subscription": {"id": "sub_1"}}),
            ),
            (
                "subscription_schedule.released",
                json!({"subscription": null, "released_subscription": "sub_1"}),
            ),
        ];
        for (event_type, object) in cases {
            assert_eq!(
                subscription_of(event_type, object).as_deref(),
                Some("sub_1"),
                "{event_type}"
            );
        }
        let payment_mode = json!({"mode": "payment", "subscription": null});
        assert_eq!(
            subscription_of("checkout.session.completed", payment_mode),
            None
        );
    }

    #[test]
    fn a_completed_checkout_names_its_session_and_other_types_are_unsupported() {
        let completed = event(
            "checkout.session.completed",
            json!({"id": "cs_9", "subscription": "sub_1", "customer": "cus_1"}),
        );
        let BillingEvent::SubscriptionChanged(r) = BillingEvent::parse(&completed).unwrap() else {
            panic!("a subscription event");
        };
        assert_eq!(r.completed_session.as_deref(), Some("cs_9"));
        assert_eq!(r.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(
            BillingEvent::parse(&event("checkout.session.expired", json!({"id": "cs_9"}))).unwrap(),
            BillingEvent::CheckoutExpired {
                session_id: "cs_9".into()
            }
        );
        assert_eq!(
            BillingEvent::parse(&event("charge.refunded", json!({}))).unwrap(),
            BillingEvent::Unsupported {
                event_type: "charge.refunded".into()
            }
        );
        assert!(BillingEvent::parse("not json").is_err());
    }
}
