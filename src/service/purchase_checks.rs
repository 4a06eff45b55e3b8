//! Reconciliation's check of credit purchases: each purchase credited from
//! an event is read back from Stripe (`domain::purchase_check`); one Stripe
//! does not know, or that differs from what we credited, is flagged in the
//! report, the log and the audit trail, never silently kept. No transaction
//! or connection is held while Stripe is read.

use serde_json::json;

use super::Service;
use super::audit_trail::{AuditAction, RECONCILIATION_ACTOR, record_as};
use super::stripe_reconciliation::{FlaggedPurchase, ReconcileReport, ReconcileScope};
use crate::domain::purchase_check::check;
use crate::error::Result;
use crate::store;

impl Service {
    /// Checks every credited purchase in `scope` not verified yet; a dry run
    /// reports what it finds and records nothing.
    pub(super) async fn check_credit_purchases(
        &self,
        scope: ReconcileScope,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let purchases = {
            let mut conn = self.store().pool().acquire().await?;
            store::purchase_checks::unverified(&mut conn, scope.org).await?
        };
        let stripe = self.stripe()?;
        for purchase in purchases {
            let live = stripe.credited_payment(&purchase.payment_id).await?;
            let finding = check(&purchase, live.as_ref());
            report.purchases_checked += 1;
            if finding.is_flagged() {
                tracing::warn!(
                    org = %purchase.org,
                    payment = %purchase.payment_id,
                    reason = %finding.reason(),
                    dry_run = scope.dry_run,
                    "a credited purchase does not match Stripe"
                );
                report.flagged_purchases.push(FlaggedPurchase {
                    org: purchase.org,
                    payment_id: purchase.payment_id.clone(),
                    reason: finding.reason(),
                });
            } else {
                report.purchases_verified += 1;
            }
            if scope.dry_run {
                continue;
            }
            let now = self.now();
            let mut tx = self.store().begin().await?;
            let before = store::purchase_checks::record(&mut tx, &purchase, &finding, now).await?;
            // Once per finding, not once per pass.
            if finding.is_flagged() && before.as_deref() != Some(finding.as_str()) {
                record_as(
                    &mut tx,
                    purchase.org,
                    RECONCILIATION_ACTOR,
                    AuditAction::CreditPurchaseFlagged,
                    None,
                    Some(json!({
                        "stripe_payment_id": purchase.payment_id,
                        "credited_micros": purchase.credited.get(),
                        "finding": finding.as_str(),
                        "reason": finding.reason(),
                    })),
                    now,
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}
