//! Checkout for a new subscription, the billing portal, the organization's
//! Stripe customer and what a new subscription should start from.
//!
//! A checkout is an operation on the organization's lane, so concurrent
//! checkouts (two tabs, the owner and a billing manager) take turns: the
//! second finds the first's session open and gets it back, or expires it
//! when it asks for something else (see `domain::checkout`).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit_trail::{AuditAction, record_as};
use super::operations::{Begun, Claim, StoredPlan, finished_reply};
use super::{Actor, Service, load_org, load_state};
use crate::domain::checkout::{
    CheckoutContext, CheckoutOrder, CheckoutPlan, OpenSession, ResubscribeDefaults, SessionStatus,
    checkout_lines, plan_checkout, resubscribe_defaults,
};
use crate::domain::ids::{IdempotencyKey, OrgId, RedirectUrl, UserId};
use crate::domain::operation::{OperationKind, Refusal, Step, StepResult};
use crate::domain::organization::Organization;
use crate::domain::pricing::BillingCycle;
use crate::domain::role::OrgAction;
use crate::error::{Error, Result};
use crate::store;
use crate::store::checkout_sessions::{NewSession, SessionMode};

/// The checkout request as the operation stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckoutRequest {
    plan: String,
    cycle: String,
    seats: i64,
    unit_items: std::collections::BTreeMap<String, i64>,
    success_url: String,
    cancel_url: String,
    purchaser: Option<String>,
}

impl CheckoutRequest {
    fn order(&self, service: &Service) -> Result<CheckoutOrder> {
        fn stored<T>(parsed: std::result::Result<T, crate::domain::InvalidValue>) -> Result<T> {
            parsed.map_err(|e| Error::internal(anyhow::anyhow!("stored checkout request: {e}")))
        }
        Ok(CheckoutOrder {
            plan: stored(service.catalog().parse_plan_id(&self.plan))?,
            cycle: stored(BillingCycle::parse(&self.cycle))?,
            seats: self.seats,
            unit_items: self.unit_items.clone(),
            success_url: stored(RedirectUrl::parse(&self.success_url))?,
            cancel_url: stored(RedirectUrl::parse(&self.cancel_url))?,
        })
    }
}

/// What the plan leaves for finishing: the request the session is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionContext {
    request: String,
}

/// The answer of an operation that opens a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SessionUrl {
    pub url: String,
}

impl Service {
    pub async fn create_checkout_session(
        &self,
        actor: &Actor,
        org_id: OrgId,
        order: CheckoutOrder,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<String> {
        // A request that cannot be sold is refused before anything is
        // recorded (a configured Stripe first: prices are checked against it).
        self.stripe()?;
        checkout_lines(&order, self.catalog(), self.signup_policy())?;
        self.authorize_billing(actor, org_id).await?;
        let request = CheckoutRequest {
            plan: order.plan.to_string(),
            cycle: order.cycle.as_str().to_owned(),
            seats: order.seats,
            unit_items: order.unit_items.clone(),
            success_url: order.success_url.as_str().to_owned(),
            cancel_url: order.cancel_url.as_str().to_owned(),
            purchaser: actor.user().map(ToString::to_string),
        };
        let request = serde_json::to_value(request).map_err(Error::internal)?;
        self.session_operation(
            org_id,
            OperationKind::Checkout,
            actor,
            idempotency_key,
            request,
        )
        .await
    }

    /// Begins and runs an operation whose answer is a session's URL
    /// (checkout, credit purchase, billing portal); a key that replays a
    /// finished one answers its URL again.
    pub(super) async fn session_operation(
        &self,
        org: OrgId,
        kind: OperationKind,
        actor: &Actor,
        idempotency_key: Option<&IdempotencyKey>,
        request: serde_json::Value,
    ) -> Result<String> {
        let claim = match self
            .begin_operation(org, kind, actor, idempotency_key, request)
            .await?
        {
            Begun::Claimed(claim) => claim,
            Begun::Replayed(first) => return finished_reply::<SessionUrl>(&first).map(|r| r.url),
        };
        match kind {
            OperationKind::Checkout => self.run_checkout(claim).await,
            OperationKind::CreditPurchase => self.run_credit_purchase(claim).await,
            OperationKind::PortalSession => self.run_portal_session(claim).await,
            OperationKind::SeatChange
            | OperationKind::CycleChange
            | OperationKind::CancelCycleChange
            | OperationKind::Cancellation
            | OperationKind::Upkeep => Err(Error::internal(anyhow::anyhow!(
                "{} has no session to answer",
                kind.as_str()
            ))),
        }
    }

    pub(super) async fn run_checkout(&self, mut claim: Claim) -> Result<String> {
        let plan = match claim.plan::<SessionContext>()? {
            Some(plan) => plan,
            None => match self.plan_checkout(&claim).await {
                Ok(Ok(CheckoutPlan::Reuse { url })) => {
                    return self.finish_reused(&claim, url).await;
                }
                Ok(Ok(CheckoutPlan::Create { steps, request })) => {
                    let plan = StoredPlan {
                        steps,
                        context: SessionContext { request },
                    };
                    if !self.store_plan(&mut claim, &plan, None).await? {
                        return self.session_answer(&claim).await;
                    }
                    plan
                }
                Ok(Err(refusal)) => return Err(self.forget(&claim, refusal.into()).await),
                Err(error) => return Err(self.forget(&claim, error).await),
            },
        };
        let (id, url) = self.open_session(&claim, &plan.steps).await?;
        let expired = plan.steps.iter().find_map(|step| match step {
            Step::ExpireCheckoutSession { session_id } => Some(session_id.clone()),
            _ => None,
        });
        let mut tx = self.store().begin().await?;
        let answer =
            serde_json::to_value(SessionUrl { url: url.clone() }).map_err(Error::internal)?;
        if !self.finish_operation(&mut tx, &claim, Ok(&answer)).await? {
            drop(tx);
            return self.session_answer(&claim).await;
        }
        if let Some(expired) = &expired {
            store::checkout_sessions::set_status(&mut tx, expired, SessionStatus::Expired).await?;
        }
        store::checkout_sessions::insert(
            &mut tx,
            &NewSession {
                id: &id,
                org: claim.org,
                operation: claim.id,
                mode: SessionMode::Subscription,
                request: &plan.context.request,
                url: &url,
                now: self.now(),
            },
        )
        .await?;
        let request: CheckoutRequest = claim.request()?;
        record_as(
            &mut tx,
            claim.org,
            &claim.actor,
            AuditAction::CheckoutStarted,
            None,
            Some(json!({
                "session_id": id,
                "plan": request.plan,
                "billing_cycle": request.cycle,
                "seats": request.seats,
                "expired_session_id": expired,
            })),
            self.now(),
        )
        .await?;
        self.commit(tx).await?;
        Ok(url)
    }

    /// Sends a plan whose last step opens a Checkout session: its id and URL.
    pub(super) async fn open_session(
        &self,
        claim: &Claim,
        steps: &[Step],
    ) -> Result<(String, String)> {
        let mut results = Vec::new();
        if let Err(failure) = self.perform_steps(claim, steps, 0, &mut results).await {
            return Err(self.fail_or_postpone(claim, failure).await);
        }
        match results.pop() {
            Some(StepResult::Session { id, url }) => Ok((id, url)),
            _ => Err(Error::internal(anyhow::anyhow!(
                "a checkout step returned no session"
            ))),
        }
    }

    /// Reads what the decision needs, Stripe's side live.
    async fn plan_checkout(&self, claim: &Claim) -> Result<Result<CheckoutPlan, Refusal>> {
        let request: CheckoutRequest = claim.request()?;
        let order = request.order(self)?;
        let (organization, used, recorded) = {
            let mut conn = self.store().pool().acquire().await?;
            let organization = load_org(&mut conn, claim.org).await?;
            let used = store::members::seat_holders(&mut conn, claim.org, self.now())
                .await?
                .used_at(self.now());
            let recorded =
                store::checkout_sessions::last_open_subscription_session(&mut conn, claim.org)
                    .await?;
            (organization, used, recorded)
        };
        let stripe = self.stripe()?;
        let customer = self.customer_for(&organization).await?;
        let live_subscriptions = stripe.customer_subscriptions(&customer).await?;
        let last_session = match recorded {
            Some(session) => Some(OpenSession {
                status: stripe.checkout_session_status(&session.id).await?,
                id: session.id,
                url: session.url,
                request: session.request,
            }),
            None => None,
        };
        let purchaser = request
            .purchaser
            .as_deref()
            .and_then(|raw| UserId::parse(raw).ok());
        let context = CheckoutContext {
            org: claim.org,
            purchaser: purchaser.as_ref(),
            customer_id: &customer,
            used_seats: used,
            live_subscriptions: &live_subscriptions,
            last_session: last_session.as_ref(),
            signup: self.signup_policy(),
            now: self.now(),
        };
        Ok(plan_checkout(&order, self.catalog(), &context))
    }

    /// The same request while its session is open: that session, again.
    async fn finish_reused(&self, claim: &Claim, url: String) -> Result<String> {
        let answer =
            serde_json::to_value(SessionUrl { url: url.clone() }).map_err(Error::internal)?;
        let mut conn = self.store().pool().acquire().await?;
        if !self.finish_operation(&mut conn, claim, Ok(&answer)).await? {
            drop(conn);
            return self.session_answer(claim).await;
        }
        Ok(url)
    }

    /// The session URL another performer recorded for the operation.
    pub(super) async fn session_answer(&self, claim: &Claim) -> Result<String> {
        self.answer_of::<SessionUrl>(claim).await.map(|r| r.url)
    }

    pub async fn create_billing_portal_session(
        &self,
        actor: &Actor,
        org_id: OrgId,
        return_url: RedirectUrl,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<String> {
        self.authorize_billing(actor, org_id).await?;
        let request = json!({ "return_url": return_url.as_str() });
        self.session_operation(
            org_id,
            OperationKind::PortalSession,
            actor,
            idempotency_key,
            request,
        )
        .await
    }

    pub(super) async fn run_portal_session(&self, claim: Claim) -> Result<String> {
        let return_url = claim.request["return_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let organization = {
            let mut conn = self.store().pool().acquire().await?;
            load_org(&mut conn, claim.org).await?
        };
        let steps = [Step::CreatePortalSession {
            customer_id: self.customer_for(&organization).await?,
            return_url,
        }];
        let mut results = Vec::new();
        if let Err(failure) = self.perform_steps(&claim, &steps, 0, &mut results).await {
            return Err(self.fail_or_postpone(&claim, failure).await);
        }
        let Some(StepResult::Url(url)) = results.pop() else {
            return Err(Error::internal(anyhow::anyhow!(
                "the portal step returned no URL"
            )));
        };
        let answer =
            serde_json::to_value(SessionUrl { url: url.clone() }).map_err(Error::internal)?;
        let mut conn = self.store().pool().acquire().await?;
        if !self
            .finish_operation(&mut conn, &claim, Ok(&answer))
            .await?
        {
            drop(conn);
            return self.session_answer(&claim).await;
        }
        Ok(url)
    }

    /// The organization's Stripe customer, created on first use (no
    /// connection is held while Stripe answers). Two first calls at once
    /// share the organization's key, so Stripe makes one customer and both
    /// record the same id.
    pub(super) async fn customer_for(&self, org: &Organization) -> Result<String> {
        {
            let mut conn = self.store().pool().acquire().await?;
            if let Some(customer) = store::organizations::stripe_customer(&mut conn, org.id).await?
            {
                return Ok(customer);
            }
        }
        let created = self.stripe()?.create_customer(org.id, &org.name).await?;
        let mut conn = self.store().pool().acquire().await?;
        store::organizations::remember_stripe_customer(&mut conn, org.id, &created).await
    }

    /// What a new checkout should offer (see `domain::checkout`).
    pub async fn resubscribe_defaults(
        &self,
        actor: &Actor,
        org_id: OrgId,
    ) -> Result<ResubscribeDefaults> {
        let now = self.now();
        let mut conn = self.store().pool().acquire().await?;
        let org = load_org(&mut conn, org_id).await?;
        self.authorize(&mut conn, actor, org_id, OrgAction::ManageBilling)
            .await?;
        let state = load_state(&mut conn, org, now).await?;
        Ok(resubscribe_defaults(
            &state.subscriptions,
            &state.org.plan,
            state.seats.used_at(now),
            now,
        ))
    }
}
