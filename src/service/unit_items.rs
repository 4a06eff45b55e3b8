//! Quantity-billed items: the platform reports how many units an
//! organization uses (hosted instances), and the plan's per-unit item on
//! its Stripe subscription follows, past the included allowance and never
//! under the minimum.
//!
//! Each report is recorded. While no subscription runs that is all; when
//! one starts, the recorded counts are applied to it. We remember the
//! quantity Stripe was last set to per subscription, so repeating a count
//! makes no Stripe call, and each Stripe write is keyed by a per-item write
//! number taken in the same transaction: a retry after a failure repeats
//! the same write, a later change makes a new one.

use sqlx::PgConnection;

use super::audit_trail::{AuditAction, record};
use super::subscriptions::derived_key;
use super::{Actor, Service, lock_org};
use crate::domain::add_ons::UnitItem;
use crate::domain::ids::OrgId;
use crate::domain::subscription::Subscription;
use crate::error::{Error, Result};
use crate::store;
use crate::store::usage_quantities::UsageQuantity;
use crate::stripe::api::UnitItemChange;

/// The most units one report may name.
pub const MAX_REPORTED_COUNT: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityReport {
    pub item: String,
    pub count: i64,
}

/// What a report led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantitySync {
    pub billed_quantity: i64,
    /// The subscription the quantity is billed on; `None` while none runs.
    pub subscription_id: Option<String>,
}

impl Service {
    pub async fn report_usage_quantity(
        &self,
        actor: &Actor,
        org: OrgId,
        report: QuantityReport,
    ) -> Result<QuantitySync> {
        match actor {
            Actor::Gateway | Actor::Operator => {}
            Actor::User(_) => {
                return Err(Error::PermissionDenied(
                    "usage quantities are reported by the gateway and operators".into(),
                ));
            }
        }
        if !(0..=MAX_REPORTED_COUNT).contains(&report.count) {
            return Err(Error::invalid(
                "count",
                format!("must be from 0 to {MAX_REPORTED_COUNT}"),
            ));
        }
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let organization = lock_org(&mut tx, org).await?;
        let plan = self.plan_of(&organization)?;
        let item = plan.unit_item(&report.item).cloned().ok_or_else(|| {
            Error::invalid(
                "item",
                format!(
                    "the {} plan has no per-unit item {:?}",
                    plan.display_name, report.item
                ),
            )
        })?;
        let recorded =
            store::usage_quantities::record(&mut tx, org, &item.id, report.count, now).await?;
        let billed_quantity = item.billed_quantity(report.count);
        let running = running_subscription(&mut tx, org, now).await?;
        let subscription_id = match (&running, self.stripe_configured()) {
            (Some(subscription), true) => {
                if self
                    .sync_unit_item(&mut tx, org, &item, &recorded, subscription)
                    .await?
                {
                    record(
                        &mut tx,
                        org,
                        actor,
                        AuditAction::UsageQuantityReported,
                        recorded
                            .synced
                            .as_ref()
                            .map(|(_, q)| serde_json::json!({ "item": item.id, "quantity": q })),
                        Some(serde_json::json!({
                            "item": item.id,
                            "count": report.count,
                            "quantity": billed_quantity,
                        })),
                        now,
                    )
                    .await?;
                    // Our copy of the subscription (its next payment) follows now
                    // rather than when the webhook arrives.
                    self.sync_subscription(&mut tx, org, &subscription.stripe_subscription_id)
                        .await?;
                }
                Some(subscription.stripe_subscription_id.clone())
            }
            (Some(_) | None, _) => None,
        };
        self.commit(tx).await?;
        Ok(QuantitySync {
            billed_quantity,
            subscription_id,
        })
    }

    /// Applies every recorded count to a subscription that has just
    /// started. The caller holds the organization's lock.
    pub(super) async fn reconcile_unit_items(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        subscription: &Subscription,
    ) -> Result<()> {
        let Some(plan) = self.catalog().plan(&subscription.plan) else {
            return Ok(());
        };
        for recorded in store::usage_quantities::lock_all(conn, org).await? {
            let Some(item) = plan.unit_item(&recorded.item) else {
                continue;
            };
            // A deployment that has not configured the item's price should
            // not hold up the subscription itself; the next report retries.
            match self
                .sync_unit_item(conn, org, item, &recorded, subscription)
                .await
            {
                Ok(_) => {}
                Err(Error::FailedPrecondition(reason)) => tracing::warn!(
                    org = %org,
                    item = %item.id,
                    %reason,
                    "a reported quantity could not be applied to the new subscription"
                ),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Sets the subscription's item for `recorded`'s count; returns whether
    /// Stripe was written to.
    async fn sync_unit_item(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        item: &UnitItem,
        recorded: &UsageQuantity,
        subscription: &Subscription,
    ) -> Result<bool> {
        let desired = item.billed_quantity(recorded.reported_count);
        let subscription_id = subscription.stripe_subscription_id.as_str();
        if recorded
            .synced
            .as_ref()
            .is_some_and(|(id, quantity)| id == subscription_id && *quantity == desired)
        {
            return Ok(false);
        }
        let cycle = subscription.billing_cycle.ok_or_else(|| {
            Error::FailedPrecondition("the subscription's billing cycle is not known yet".into())
        })?;
        let price_id = item
            .price(cycle)
            .and_then(|price| price.stripe_price_id.as_deref())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "no Stripe price is configured for {} billed {}",
                    item.id,
                    cycle.as_str()
                ))
            })?;
        let stripe = self.stripe()?;
        let live = stripe.subscription(subscription_id).await?;
        let current = live.items.iter().find(|line| line.price_id == price_id);
        let current_quantity = current.map_or(0, |line| line.quantity);
        let quantity = u64::try_from(desired).unwrap_or(0);
        let change = match (current.and_then(|line| line.item_id.as_deref()), desired) {
            (None, 0) => None,
            (None, _) => Some(UnitItemChange::Add {
                subscription_id,
                price_id,
                quantity,
            }),
            (Some(item_id), 0) => Some(UnitItemChange::Remove { item_id }),
            (Some(_), _) if current_quantity == desired => None,
            (Some(item_id), _) => Some(UnitItemChange::SetQuantity { item_id, quantity }),
        };
        if let Some(change) = change {
            let seq = store::usage_quantities::next_sync_seq(conn, org, &item.id).await?;
            let key = derived_key("unit-item", &[subscription_id, &item.id, &seq.to_string()]);
            stripe
                .change_unit_item(change, item.proration(current_quantity, desired), key)
                .await?;
        }
        store::usage_quantities::mark_synced(conn, org, &item.id, subscription_id, desired).await?;
        Ok(change.is_some())
    }
}

/// The organization's subscription that has not ended, newest first.
async fn running_subscription(
    conn: &mut PgConnection,
    org: OrgId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Subscription>> {
    Ok(store::subscriptions::list_for_org(conn, org)
        .await?
        .into_iter()
        .filter(|s| !s.is_over(now))
        .max_by_key(|s| s.created_at))
}
