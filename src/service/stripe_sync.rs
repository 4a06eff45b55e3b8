//! Bringing local subscription state in line with Stripe: for stored webhook
//! events (the inbox worker) and after our own Stripe writes.
//!
//! Delivery order is not guaranteed, so an event is never applied from its
//! own payload. The payload only says *which* subscription changed; we then
//! lock the organization and re-fetch the subscription from Stripe, and
//! store what Stripe says now. Applying events in any order, any number of
//! times, therefore converges on Stripe's latest state, and an old event
//! delivered late just re-reads the current state. (Comparing object
//! versions instead would need a version Stripe does not publish: `created`
//! on events has a one-second resolution.) Taking the organization's row
//! lock before the fetch orders concurrent syncs of one organization, so a
//! slower worker can never write an older fetch over a newer one.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::credits::{CREDIT_PURCHASE_TYPE, SucceededPayment};
use super::{Service, lock_org};
use crate::domain::ids::{OrgId, UserId};
use crate::domain::membership::Membership;
use crate::domain::role::Role;
use crate::domain::subscription::Subscription;
use crate::domain::subscription_sync::{
    ORG_ID_KEY, PURCHASER_KEY, ProviderSubscription, TYPE_KEY, reconcile,
};
use crate::error::{Error, Result};
use crate::store::audit::{self, NewAuditEvent};
use crate::store::stripe_events::{self, ClaimedEvent, Outcome};
use crate::store::{self};

/// How the audit trail names changes that came from Stripe.
pub(super) const STRIPE_ACTOR: &str = "stripe";

/// How a failing event is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the event is parked for an operator.
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles with each attempt.
    pub first_delay: std::time::Duration,
    pub max_delay: std::time::Duration,
}

impl RetryPolicy {
    /// When to try again after `attempts` failed attempts, or `None` to park.
    pub fn next_attempt(&self, attempts: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if attempts >= self.max_attempts {
            return None;
        }
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
        let delay = self.first_delay.saturating_mul(factor).min(self.max_delay);
        Some(now + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX))
    }
}

/// What the worker did with one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerStep {
    /// Nothing was due.
    Idle,
    Finished {
        event_id: String,
        outcome: Outcome,
    },
    Failed {
        event_id: String,
        parked: bool,
    },
}

/// The parts of an event's payload that say which subscription changed.
#[derive(Debug, Deserialize)]
struct EventPayload {
    #[serde(rename = "type")]
    event_type: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: Value,
}

/// The event types this service acts on, and where their payload names the
/// subscription or the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BillingEvent {
    CheckoutCompleted,
    /// A Checkout payment that settled after the session completed (bank
    /// debits).
    CheckoutPaymentSucceeded,
    PaymentSucceeded,
    SubscriptionChanged,
    InvoiceSettled,
    ScheduleChanged,
}

impl BillingEvent {
    fn from_type(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "checkout.session.completed" => Self::CheckoutCompleted,
            "checkout.session.async_payment_succeeded" => Self::CheckoutPaymentSucceeded,
            "payment_intent.succeeded" => Self::PaymentSucceeded,
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => Self::SubscriptionChanged,
            "invoice.paid" | "invoice.payment_failed" => Self::InvoiceSettled,
            t if t.starts_with("subscription_schedule.") => Self::ScheduleChanged,
            _ => return None,
        })
    }

    /// The subscription the event is about; `None` when it is about none
    /// (a one-off payment's checkout, an invoice without subscription).
    fn subscription_id(self, object: &Value) -> Option<String> {
        let id_of = |value: &Value| match value {
            Value::String(id) => Some(id.clone()),
            Value::Object(map) => map.get("id").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        match self {
            Self::CheckoutCompleted => object.get("subscription").and_then(id_of),
            Self::CheckoutPaymentSucceeded | Self::PaymentSucceeded => None,
            Self::SubscriptionChanged => object.get("id").and_then(id_of),
            // Since API version 2025-03-31 the subscription sits under
            // `parent`; older payloads had it at the top.
            Self::InvoiceSettled => object
                .pointer("/parent/subscription_details/subscription")
                .and_then(id_of)
                .or_else(|| object.get("subscription").and_then(id_of)),
            Self::ScheduleChanged => object
                .get("subscription")
                .and_then(id_of)
                .or_else(|| object.get("released_subscription").and_then(id_of)),
        }
    }

    /// The credit purchase the event reports paid, if it is one. A payment
    /// is applied from the event itself: unlike a subscription it never
    /// changes once succeeded, so order does not matter, and its id keys
    /// the credit so it is added once.
    fn paid_credit_purchase(self, object: &Value) -> Option<SucceededPayment> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
        if text(&format!("/metadata/{TYPE_KEY}")) != Some(CREDIT_PURCHASE_TYPE) {
            return None;
        }
        let (payment_id, amount_minor) = match self {
            Self::CheckoutCompleted | Self::CheckoutPaymentSucceeded => {
                if text("/mode") != Some("payment") || text("/payment_status") != Some("paid") {
                    return None;
                }
                let payment = match object.get("payment_intent")? {
                    Value::String(id) => id.clone(),
                    other => other.get("id")?.as_str()?.to_owned(),
                };
                (payment, object.get("amount_total")?.as_i64()?)
            }
            Self::PaymentSucceeded => (
                text("/id")?.to_owned(),
                object.get("amount_received")?.as_i64()?,
            ),
            Self::SubscriptionChanged | Self::InvoiceSettled | Self::ScheduleChanged => {
                return None;
            }
        };
        Some(SucceededPayment {
            payment_id,
            org: OrgId::parse(text(&format!("/metadata/{ORG_ID_KEY}"))?).ok()?,
            amount_minor,
            purchaser: text(&format!("/metadata/{PURCHASER_KEY}"))
                .and_then(|raw| UserId::parse(raw).ok()),
        })
    }
}

impl Service {
    /// Claims one due inbox event and applies it in its own transaction.
    pub async fn apply_next_stripe_event(&self, retry: RetryPolicy) -> Result<WorkerStep> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let Some(event) = stripe_events::claim_due(&mut tx, now).await? else {
            return Ok(WorkerStep::Idle);
        };
        // A savepoint: a failure undoes the event's effects but keeps the
        // claim, so the failure is recorded on the row we hold.
        let mut effects = sqlx::Connection::begin(&mut *tx).await?;
        let step = match self.apply_event(&mut effects, &event).await {
            Ok(outcome) => {
                effects.commit().await?;
                stripe_events::finish(&mut tx, &event.id, outcome, self.now()).await?;
                WorkerStep::Finished {
                    event_id: event.id,
                    outcome,
                }
            }
            Err(error) => {
                effects.rollback().await?;
                let attempts = u32::try_from(event.attempts).unwrap_or(0) + 1;
                let retry_at = retry.next_attempt(attempts, self.now());
                tracing::warn!(
                    event_id = %event.id,
                    event_type = %event.event_type,
                    attempts,
                    parked = retry_at.is_none(),
                    error = %error,
                    "applying a Stripe event failed"
                );
                stripe_events::record_failure(
                    &mut tx,
                    &event.id,
                    &error.to_string(),
                    retry_at,
                    self.now(),
                )
                .await?;
                WorkerStep::Failed {
                    event_id: event.id,
                    parked: retry_at.is_none(),
                }
            }
        };
        self.commit(tx).await?;
        Ok(step)
    }

    async fn apply_event(&self, conn: &mut PgConnection, event: &ClaimedEvent) -> Result<Outcome> {
        let payload: EventPayload = serde_json::from_str(&event.raw_body)
            .map_err(|e| Error::internal(anyhow::anyhow!("stored event is not an event: {e}")))?;
        let Some(kind) = BillingEvent::from_type(&payload.event_type) else {
            return Ok(Outcome::NoEffect);
        };
        let object = &payload.data.object;
        if let Some(payment) = kind.paid_credit_purchase(object) {
            return self.credit_payment(conn, payment).await;
        }
        let Some(subscription_id) = kind.subscription_id(object) else {
            return Ok(Outcome::NoEffect);
        };
        let Some(org) = self.org_for(conn, &subscription_id, object).await? else {
            tracing::info!(
                event_id = %event.id,
                subscription = %subscription_id,
                "Stripe event for a subscription of no organization of ours"
            );
            return Ok(Outcome::NoEffect);
        };
        self.sync_subscription(conn, org, &subscription_id).await?;
        Ok(Outcome::Applied)
    }

    /// Which organization a subscription belongs to: the one we stored it
    /// under, else the owner of its customer, else the one its metadata names.
    async fn org_for(
        &self,
        conn: &mut PgConnection,
        subscription_id: &str,
        object: &Value,
    ) -> Result<Option<OrgId>> {
        // A deleted organization keeps its rows but is ours no more.
        if let Some(org) = store::subscriptions::org_of(conn, subscription_id).await? {
            return Ok(store::organizations::get(conn, org)
                .await?
                .map(|org| org.id));
        }
        if let Some(customer) = object.get("customer").and_then(|c| match c {
            Value::String(id) => Some(id.as_str()),
            other => other.get("id").and_then(Value::as_str),
        }) && let Some(org) = store::organizations::by_stripe_customer(conn, customer).await?
        {
            return Ok(Some(org));
        }
        let named = object
            .pointer(&format!("/metadata/{ORG_ID_KEY}"))
            .and_then(Value::as_str)
            .and_then(|raw| OrgId::parse(raw).ok());
        match named {
            Some(org) if store::organizations::get(conn, org).await?.is_some() => Ok(Some(org)),
            Some(_) | None => Ok(None),
        }
    }

    /// Locks the organization, reads the subscription from Stripe and stores
    /// what it now means.
    pub(super) async fn sync_subscription(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        subscription_id: &str,
    ) -> Result<Subscription> {
        lock_org(conn, org).await?;
        let live = self.stripe()?.subscription(subscription_id).await?;
        self.store_live(conn, org, &live).await
    }

    /// Stores `live` for the organization, whose row the caller has locked.
    pub(super) async fn store_live(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        live: &ProviderSubscription,
    ) -> Result<Subscription> {
        let now = self.now();
        let known = store::subscriptions::list_for_org(conn, org).await?;
        let previous = known.iter().find(|s| s.stripe_subscription_id == live.id);
        let organization = super::load_org(conn, org).await?;
        let catalog = self.catalog();
        let synced = reconcile(previous, live, &organization.plan, now, &|price| {
            catalog.seat_price(price)
        });
        if previous == Some(&synced) {
            return Ok(synced);
        }
        store::subscriptions::upsert(conn, org, &synced).await?;
        let another_runs = known
            .iter()
            .any(|s| s.stripe_subscription_id != live.id && !s.is_over(now));
        if synced.is_over(now) && previous.is_none_or(|p| !p.is_over(now)) && !another_runs {
            self.cancel_org_instances(conn, org).await?;
        }
        if synced.counts_at(now) && previous.is_none_or(|p| !p.counts_at(now)) {
            self.reconcile_unit_items(conn, org, &synced).await?;
        }
        // The organization's plan follows the live seat price for as long as
        // the subscription lasts.
        if !synced.is_over(now) && synced.plan != organization.plan {
            store::organizations::set_plan(conn, org, &synced.plan).await?;
        }
        if previous.is_none() {
            self.make_purchaser_owner(conn, org, live, now).await?;
        }
        audit::record(
            conn,
            NewAuditEvent {
                org_id: org,
                actor: STRIPE_ACTOR,
                action: "subscription.synced",
                before: previous.map(subscription_snapshot),
                after: Some(subscription_snapshot(&synced)),
                occurred_at: now,
            },
        )
        .await?;
        Ok(synced)
    }

    /// The user who bought the subscription becomes an owner, unless they
    /// were removed from the organization since.
    async fn make_purchaser_owner(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        live: &ProviderSubscription,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(user) = live
            .purchaser
            .as_deref()
            .and_then(|raw| UserId::parse(raw).ok())
        else {
            return Ok(());
        };
        if store::members::has_removal(conn, org, &user).await? {
            return Ok(());
        }
        let before = store::members::role_of(conn, org, &user).await?;
        match before {
            Some(Role::Owner) => return Ok(()),
            Some(Role::BillingManager | Role::Member) => {
                store::members::update_role(conn, org, &user, Role::Owner).await?;
            }
            None => {
                store::members::insert_member(
                    conn,
                    &Membership {
                        org_id: org,
                        user_id: user.clone(),
                        role: Role::Owner,
                        joined_at: now,
                    },
                )
                .await?;
            }
        }
        audit::record(
            conn,
            NewAuditEvent {
                org_id: org,
                actor: STRIPE_ACTOR,
                action: "member.purchaser_made_owner",
                before: before
                    .map(|role| json!({ "user_id": user.as_str(), "role": role.as_str() })),
                after: Some(json!({ "user_id": user.as_str(), "role": "owner" })),
                occurred_at: now,
            },
        )
        .await
    }
}

fn subscription_snapshot(subscription: &Subscription) -> Value {
    json!({
        "stripe_subscription_id": subscription.stripe_subscription_id,
        "status": subscription.status_raw,
        "plan": subscription.plan.as_str(),
        "billing_cycle": subscription.billing_cycle.map(|c| c.as_str()),
        "paid_seats": subscription.paid_seats,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "pending_seats": subscription.pending_seat_decrease.as_ref().map(|p| p.seats),
        "pending_cycle": subscription.pending_cycle_change.as_ref().map(|p| p.cycle.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retries_back_off_then_park() {
        let policy = RetryPolicy {
            max_attempts: 4,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        };
        let now = Utc::now();
        let waits: Vec<Option<i64>> = (1..=4)
            .map(|n| {
                policy
                    .next_attempt(n, now)
                    .map(|at| (at - now).num_seconds())
            })
            .collect();
        assert_eq!(waits, [Some(1), Some(2), Some(3), None]);
    }

    #[test]
    fn paid_credit_purchases_are_read_from_sessions_and_payments() {
        let org = OrgId::generate();
        let metadata = json!({ "org_id": org.to_string(), "type": "credit_purchase", "purchaser_user_id": "ada" });
        let session = json!({
            "mode": "payment", "payment_status": "paid", "payment_intent": "pi_1",
            "amount_total": 2500, "metadata": metadata,
        });
        let paid = BillingEvent::CheckoutCompleted
            .paid_credit_purchase(&session)
            .unwrap();
        assert_eq!(
            (paid.payment_id.as_str(), paid.amount_minor, paid.org),
            ("pi_1", 2500, org)
        );
        assert_eq!(paid.purchaser.unwrap().as_str(), "ada");
        let mut unpaid = session.clone();
        unpaid["payment_status"] = json!("unpaid");
        assert!(
            BillingEvent::CheckoutCompleted
                .paid_credit_purchase(&unpaid)
                .is_none()
        );
        let intent = json!({ "id": "pi_1", "amount_received": 2500, "metadata": metadata });
        let paid = BillingEvent::PaymentSucceeded
            .paid_credit_purchase(&intent)
            .unwrap();
        assert_eq!(paid.payment_id, "pi_1");
        let other = json!({ "id": "pi_2", "amount_received": 100, "metadata": {} });
        assert!(
            BillingEvent::PaymentSucceeded
                .paid_credit_purchase(&other)
                .is_none()
        );
    }

    #[test]
    fn each_event_kind_finds_its_subscription() {
        let cases = [
            (
                "checkout.session.completed",
                json!({"subscription": "sub_1"}),
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
            let kind = BillingEvent::from_type(event_type).unwrap();
            assert_eq!(
                kind.subscription_id(&object).as_deref(),
                Some("sub_1"),
                "{event_type}"
            );
        }
        assert_eq!(BillingEvent::from_type("charge.refunded"), None);
        assert_eq!(
            BillingEvent::PaymentSucceeded.subscription_id(&json!({"id": "pi_1"})),
            None
        );
        let payment_mode = json!({"mode": "payment", "subscription": null});
        assert_eq!(
            BillingEvent::CheckoutCompleted.subscription_id(&payment_mode),
            None
        );
    }
}
