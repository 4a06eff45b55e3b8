//! Renewing add-on instances from credits, and ending them with the
//! organization's subscription (the rules are `domain::instances`).
//!
//! Every renewal holds the organization's row lock, and every charge the
//! credit account lock after it (the credit lock order), so renewals,
//! grants and the Stripe cascade of one organization never interleave.

use serde_json::json;
use sqlx::PgConnection;

use super::audit_trail::{AuditAction, RENEWAL_ACTOR, STRIPE_ACTOR, record_as};
use super::credit_ledger::Ledger;
use super::instances::instance_snapshot;
use super::{Service, lifecycle, load_state};
use crate::domain::credits::{CreditEntryKind, EntryDetails};
use crate::domain::ids::OrgId;
use crate::domain::instances::{InstanceStatus, InstanceSubscription, Renewal, RenewalFunds};
use crate::domain::lifecycle::{LifecycleEvent, instance_event};
use crate::error::Result;
use crate::store;

impl Service {
    /// Renews, suspends or ends the organization's due instances. The caller
    /// holds the organization's lock and has the ledger open.
    pub(super) async fn renew_due_instances(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        ledger: &mut Ledger,
    ) -> Result<()> {
        let now = self.now();
        let due: Vec<InstanceSubscription> = store::instances::list(conn, org, None)
            .await?
            .into_iter()
            .filter(|i| i.renewal_due(now))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let organization = super::load_org(conn, org).await?;
        let opted_out = organization.instances_opted_out;
        let locked = load_state(conn, organization, now)
            .await?
            .access(now)
            .locks_credits();
        for mut instance in due {
            let funds = RenewalFunds {
                available: (!locked).then(|| ledger.available()),
                opted_out,
            };
            let before = instance_snapshot(&instance);
            let was = instance.status;
            let action = match instance.renewal(funds, now) {
                Renewal::Cancel => {
                    instance.status = InstanceStatus::Canceled;
                    instance.canceled_at = Some(instance.current_period_end);
                    AuditAction::InstanceCanceled
                }
                Renewal::Charge {
                    period_start,
                    period_end,
                } => {
                    let resumed = instance.status == InstanceStatus::Suspended;
                    instance.status = InstanceStatus::Active;
                    instance.current_period_start = period_start;
                    instance.current_period_end = period_end;
                    charge(conn, ledger, &instance).await?;
                    if resumed {
                        AuditAction::InstanceResumed
                    } else {
                        AuditAction::InstanceRenewed
                    }
                }
                Renewal::Suspend if instance.status == InstanceStatus::Suspended => continue,
                Renewal::Suspend => {
                    instance.status = InstanceStatus::Suspended;
                    AuditAction::InstanceSuspended
                }
            };
            store::instances::update(conn, &instance).await?;
            let event = instance_event(Some(was), &instance);
            lifecycle::record(conn, Some(org), now, event).await?;
            record_as(
                conn,
                org,
                RENEWAL_ACTOR,
                action,
                Some(before),
                Some(instance_snapshot(&instance)),
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// The renewal sweep: renews up to `limit` organizations' due instances,
    /// each in its own transaction; returns how many it visited.
    pub async fn renew_instances(&self, limit: i64) -> Result<usize> {
        let now = self.now();
        let orgs = {
            let mut conn = self.store().pool().acquire().await?;
            store::instances::orgs_due(&mut conn, now, limit).await?
        };
        for org in &orgs {
            let mut tx = self.store().begin().await?;
            // A deleted organization's instances stay as they were.
            if store::organizations::lock(&mut tx, *org).await?.is_none() {
                continue;
            }
            let mut ledger = self.open_ledger(&mut tx, *org, now).await?;
            self.renew_due_instances(&mut tx, *org, &mut ledger).await?;
            self.commit(tx).await?;
        }
        Ok(orgs.len())
    }

    /// Ends every instance at once: the organization's subscription ended.
    /// The caller holds the organization's lock.
    pub(super) async fn cancel_org_instances(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
    ) -> Result<()> {
        let now = self.now();
        let canceled = store::instances::cancel_all(conn, org, now).await?;
        if canceled.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = canceled.iter().map(|i| i.instance_id.as_str()).collect();
        let events = canceled
            .iter()
            .map(|i| LifecycleEvent::InstanceCanceled(i.clone()));
        lifecycle::record(conn, Some(org), now, events).await?;
        record_as(
            conn,
            org,
            STRIPE_ACTOR,
            AuditAction::InstanceCanceledWithSubscription,
            None,
            Some(json!({ "instance_ids": ids })),
            now,
        )
        .await
    }
}

/// Debits one month of the instance.
pub(super) async fn charge(
    conn: &mut PgConnection,
    ledger: &mut Ledger,
    instance: &InstanceSubscription,
) -> Result<()> {
    if instance.price.get() == 0 {
        return Ok(());
    }
    ledger
        .debit(
            conn,
            CreditEntryKind::InstanceCharge,
            instance.price,
            EntryDetails {
                user_id: Some(instance.user_id.clone()),
                instance_id: Some(instance.instance_id.clone()),
                reason: Some(format!(
                    "{} {} to {}",
                    instance.add_on,
                    instance.current_period_start.format("%Y-%m-%d"),
                    instance.current_period_end.format("%Y-%m-%d")
                )),
                ..EntryDetails::default()
            },
        )
        .await?;
    Ok(())
}
