//! Replies of the operators' Stripe RPCs: parked inbox events,
//! reconciliation reports and customer imports.

use super::convert;
use super::proto;
use crate::service::{ImportOutcome, ImportedCustomer, ReconcileReport};
use crate::store::stripe_events::ParkedEvent;

pub(super) fn parked_event(event: ParkedEvent) -> proto::ParkedStripeEvent {
    proto::ParkedStripeEvent {
        event_id: event.id,
        event_type: event.event_type,
        attempts: event.attempts,
        last_error: event.last_error.unwrap_or_default(),
        received_at: Some(convert::timestamp(event.received_at)),
        parked_at: convert::optional_timestamp(event.parked_at),
    }
}

pub(super) fn reconciliation(report: ReconcileReport) -> proto::ReconcileStripeResponse {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    proto::ReconcileStripeResponse {
        checked: count(report.checked),
        in_sync: count(report.in_sync),
        repaired: count(report.repaired),
        unknown_at_stripe: count(report.unknown_at_stripe),
        drifted: report
            .drifted
            .into_iter()
            .map(|(subscription_id, fields)| proto::DriftedSubscription {
                subscription_id,
                fields: fields.into_iter().map(str::to_owned).collect(),
            })
            .collect(),
        missing_at_stripe: report.missing_at_stripe,
        purchases_checked: count(report.purchases_checked),
        purchases_verified: count(report.purchases_verified),
        flagged_purchases: report
            .flagged_purchases
            .into_iter()
            .map(|flagged| proto::FlaggedPurchase {
                org_id: flagged.org.to_string(),
                payment_id: flagged.payment_id,
                reason: flagged.reason,
            })
            .collect(),
    }
}

pub(super) fn import(imported: Vec<ImportedCustomer>) -> proto::ImportStripeCustomersResponse {
    let customers = imported
        .into_iter()
        .map(|one| {
            let (outcome, subscription, reason) = match one.outcome {
                ImportOutcome::Adopted { subscription } => {
                    (proto::ImportOutcome::Adopted, subscription, None)
                }
                ImportOutcome::WouldAdopt { subscription } => {
                    (proto::ImportOutcome::WouldAdopt, subscription, None)
                }
                ImportOutcome::LinkedAlready => (proto::ImportOutcome::LinkedAlready, None, None),
                ImportOutcome::Refused(reason) => {
                    (proto::ImportOutcome::Refused, None, Some(reason))
                }
            };
            proto::ImportedStripeCustomer {
                customer_id: one.customer,
                org_id: one.org.to_string(),
                outcome: outcome.into(),
                subscription_id: subscription.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            }
        })
        .collect();
    proto::ImportStripeCustomersResponse { customers }
}
