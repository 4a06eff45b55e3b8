//! Quantity-billed items: the platform reports how many units an
//! organization uses (hosted instances), and the plan's per-unit item on
//! its Stripe subscription follows (the rule is `UnitItem::billed_quantity`).
//!
//! Each report is recorded. While no subscription runs that is all; when
//! one starts, the upkeep its sync queues applies the recorded counts.
//! We remember what Stripe was last set to, so repeating a count asks
//! nothing of Stripe; a change runs as an upkeep operation, at once when
//! no other change of the organization runs, else right after it.

use super::{Actor, Service, lock_org};
use crate::domain::ids::OrgId;
use crate::domain::reason::ErrorReason;
use crate::domain::subscription;
use crate::error::{Error, Result};
use crate::store;

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
                return Err(Error::denied(
                    ErrorReason::CallerNotPermitted,
                    "usage quantities are reported by the gateway and operators",
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
        let subscriptions = store::subscriptions::list_for_org(&mut tx, org).await?;
        let subscription_id =
            subscription::running(&subscriptions, now).map(|s| s.stripe_subscription_id.clone());
        let follow = match &subscription_id {
            Some(id) if self.stripe_configured() => {
                recorded.synced.as_ref() != Some(&(id.clone(), billed_quantity))
            }
            Some(_) | None => false,
        };
        let upkeep = if follow {
            let actor = actor.audit_name();
            Some(store::operations::queue_upkeep(&mut tx, org, &actor, now).await?)
        } else {
            None
        };
        self.commit(tx).await?;
        if let Some(upkeep) = upkeep {
            self.run_queued_upkeep(org).await?;
            // An operations loop may have started it first: the reporter
            // still sees Stripe follow, unless the organization is busy.
            match self.wait_for_operation(upkeep).await {
                Ok(_) | Err(Error::Aborted(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(QuantitySync {
            billed_quantity,
            subscription_id,
        })
    }
}
