//! Buying credits through Stripe Checkout, and crediting what Stripe
//! reports paid.
//!
//! Each purchase request is its own operation, so buying the same amount
//! twice makes two sessions; a retry with the caller's idempotency key gets
//! the first one back. The credit is added when the payment succeeds,
//! keyed by the payment's id.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

use super::audit_trail::{AuditAction, STRIPE_ACTOR, record_as};
use super::checkout::SessionUrl;
use super::credits::entry_snapshot;
use super::operations::{Claim, StoredPlan};
use super::{Actor, Service, lifecycle, load_org};
use crate::domain::checkout::credit_purchase_session;
use crate::domain::credits::{CreditEntryKind, EntryDetails, Micros, SucceededPayment};
use crate::domain::ids::{IdempotencyKey, OrgId, RedirectUrl, UserId};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::operation::{OperationKind, Refusal, Step};
use crate::error::{Error, Result};
use crate::store;
use crate::store::checkout_sessions::{NewSession, SessionMode};
use crate::store::stripe_events::Outcome;

/// A credit purchase the caller asked for.
#[derive(Debug, Clone)]
pub struct CreditPurchaseOrder {
    pub amount: Micros,
    pub success_url: RedirectUrl,
    pub cancel_url: RedirectUrl,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The request as the operation stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PurchaseRequest {
    amount_micros: i64,
    success_url: String,
    cancel_url: String,
    purchaser: Option<String>,
}

impl Service {
    /// A Stripe Checkout session in payment mode for `order.amount` of
    /// credit; returns its URL.
    pub async fn create_credit_purchase(
        &self,
        actor: &Actor,
        org: OrgId,
        order: CreditPurchaseOrder,
    ) -> Result<String> {
        self.authorize_billing(actor, org).await?;
        let request = PurchaseRequest {
            amount_micros: order.amount.get(),
            success_url: order.success_url.as_str().to_owned(),
            cancel_url: order.cancel_url.as_str().to_owned(),
            purchaser: actor.user().map(|user| user.to_string()),
        };
        let request = serde_json::to_value(request).map_err(Error::internal)?;
        let key = order.idempotency_key.as_ref();
        self.session_operation(org, OperationKind::CreditPurchase, actor, key, request)
            .await
    }

    pub(super) async fn run_credit_purchase(&self, mut claim: Claim) -> Result<String> {
        let request: PurchaseRequest = claim.request()?;
        let plan = match claim.plan::<()>()? {
            Some(plan) => plan,
            None => {
                let step = match self.plan_credit_purchase(&claim, &request).await {
                    Ok(Ok(step)) => step,
                    Ok(Err(refusal)) => return Err(self.forget(&claim, refusal.into()).await),
                    Err(error) => return Err(self.forget(&claim, error).await),
                };
                let plan = StoredPlan {
                    steps: vec![step],
                    context: (),
                };
                if !self.store_plan(&mut claim, &plan, None).await? {
                    return self.session_answer(&claim).await;
                }
                plan
            }
        };
        let (id, url) = self.open_session(&claim, &plan.steps).await?;
        let mut tx = self.store().begin().await?;
        let answer =
            serde_json::to_value(SessionUrl { url: url.clone() }).map_err(Error::internal)?;
        if !self.finish_operation(&mut tx, &claim, Ok(&answer)).await? {
            drop(tx);
            return self.session_answer(&claim).await;
        }
        store::checkout_sessions::insert(
            &mut tx,
            &NewSession {
                id: &id,
                org: claim.org,
                operation: claim.id,
                mode: SessionMode::Payment,
                request: &claim.request.to_string(),
                url: &url,
                now: self.now(),
            },
        )
        .await?;
        record_as(
            &mut tx,
            claim.org,
            &claim.actor,
            AuditAction::CreditPurchaseStarted,
            None,
            Some(json!({ "amount_micros": request.amount_micros, "session_id": id })),
            self.now(),
        )
        .await?;
        self.commit(tx).await?;
        Ok(url)
    }

    async fn plan_credit_purchase(
        &self,
        claim: &Claim,
        request: &PurchaseRequest,
    ) -> Result<Result<Step, Refusal>> {
        let organization = {
            let mut conn = self.store().pool().acquire().await?;
            load_org(&mut conn, claim.org).await?
        };
        let customer = self.customer_for(&organization).await?;
        let purchaser = request
            .purchaser
            .as_deref()
            .and_then(|raw| UserId::parse(raw).ok());
        let url = |raw: &str| RedirectUrl::parse(raw).map_err(Error::internal);
        Ok(credit_purchase_session(
            claim.org,
            purchaser.as_ref(),
            &customer,
            Micros::non_negative(request.amount_micros).map_err(Error::internal)?,
            self.catalog(),
            &url(&request.success_url)?,
            &url(&request.cancel_url)?,
        ))
    }

    /// Adds a succeeded payment's credit, once per payment: the payment id
    /// keys the entry, so the same payment reported by its Checkout session
    /// and by its payment event, or redelivered, adds nothing more. Locks
    /// the organization, then the account (the credit lock order).
    pub(super) async fn credit_payment(
        &self,
        conn: &mut PgConnection,
        payment: SucceededPayment,
    ) -> Result<Outcome> {
        let now = self.now();
        // A deleted organization is ours no more.
        if store::organizations::lock(conn, payment.org)
            .await?
            .is_none()
        {
            return Ok(Outcome::NoEffect);
        }
        let mut ledger = self.open_ledger(conn, payment.org, now).await?;
        if store::credits::payment_credited(conn, &payment.payment_id).await? {
            return Ok(Outcome::NoEffect);
        }
        // A payment of nothing credits nothing.
        let Ok(amount) = Micros::parse_positive(Micros::from_minor(payment.amount_minor).get())
        else {
            return Ok(Outcome::NoEffect);
        };
        let entry = ledger
            .credit(
                conn,
                CreditEntryKind::Purchase,
                amount,
                EntryDetails {
                    stripe_payment_id: Some(payment.payment_id),
                    user_id: payment.purchaser,
                    ..EntryDetails::default()
                },
            )
            .await?;
        let purchased = LifecycleEvent::CreditsPurchased(entry.clone());
        lifecycle::record(conn, Some(payment.org), now, [purchased]).await?;
        record_as(
            conn,
            payment.org,
            STRIPE_ACTOR,
            AuditAction::CreditsPurchased,
            None,
            Some(entry_snapshot(&entry)),
            now,
        )
        .await?;
        self.renew_due_instances(conn, payment.org, &mut ledger)
            .await?;
        Ok(Outcome::Applied)
    }
}
