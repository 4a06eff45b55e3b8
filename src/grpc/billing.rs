//! `billing.v1.BillingService`: the plan catalog, the subscription overview
//! and the Stripe-backed billing changes.

use tonic::{Request, Response, Status};

use super::auth::{actor, caller};
use super::convert::{self, org_id};
use super::proto::{self, billing_service_server::BillingService};
use super::stripe_replies;
use crate::domain::catalog::{Plan, PricingModel, SignupPolicy};
use crate::domain::checkout::CheckoutOrder;
use crate::domain::ids::{IdempotencyKey, OrgId, RedirectUrl};
use crate::domain::money::Money;
use crate::domain::pricing::BillingCycle;
use crate::domain::seat_change::SeatDirection;
use crate::error::{Error, FieldContext};
use crate::service::{Actor, ReconcileScope, SeatChangeOutcome, Service, SubscriptionView};

#[derive(Debug, Clone)]
pub struct BillingApi {
    service: Service,
}

impl BillingApi {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

fn plan(plan: &Plan, policy: SignupPolicy) -> proto::Plan {
    let pricing_model = match plan.pricing {
        PricingModel::PerSeat => proto::PricingModel::PerSeat,
        PricingModel::Flat => proto::PricingModel::Flat,
    };
    proto::Plan {
        id: plan.id.as_str().to_owned(),
        display_name: plan.display_name.clone(),
        pricing_model: pricing_model.into(),
        prices: plan
            .prices
            .iter()
            .map(|price| proto::Price {
                billing_cycle: convert::billing_cycle(price.cycle).into(),
                amount: Some(convert::money(&price.amount)),
                self_serve_signup: price.offered_for_signup(policy),
                stripe_price_id: price.stripe_price_id.clone().unwrap_or_default(),
            })
            .collect(),
        features: plan.features.clone(),
        limits: plan
            .limits
            .iter()
            .map(|l| proto::PlanLimit {
                name: l.name.clone(),
                value: l.value,
            })
            .collect(),
        enforces_model_restrictions: plan.enforces_model_restrictions,
    }
}

fn subscription_reply(view: SubscriptionView) -> proto::Subscription {
    let mut reply = proto::Subscription {
        org_id: view.org.id.to_string(),
        plan: view.org.plan.as_str().to_owned(),
        used_seats: view.used_seats,
        counts_for_access: view.counts_for_access,
        trial: Some(convert::trial(view.trial)),
        ..Default::default()
    };
    if let Some(sub) = view.current {
        reply.has_subscription = true;
        reply.plan = sub.plan.as_str().to_owned();
        reply.status = sub.status_raw;
        reply.billing_cycle = sub
            .billing_cycle
            .map_or(proto::BillingCycle::Unspecified, convert::billing_cycle)
            .into();
        reply.paid_seats = sub.paid_seats;
        reply.current_period_start = convert::optional_timestamp(sub.current_period_start);
        reply.current_period_end = convert::optional_timestamp(sub.current_period_end);
        reply.cancel_at_period_end = sub.cancel_at_period_end;
        reply.ended_at = convert::optional_timestamp(sub.ended_at);
        reply.next_payment = sub.next_payment.as_ref().map(convert::money);
        reply.next_payment_monthly = sub
            .next_payment
            .as_ref()
            .zip(sub.billing_cycle)
            .map(|(amount, cycle)| per_month(amount, cycle));
        reply.renews_at = convert::optional_timestamp(
            sub.current_period_end
                .filter(|_| !sub.cancel_at_period_end && sub.ended_at.is_none()),
        );
        reply.pending_cycle_change =
            sub.pending_cycle_change
                .as_ref()
                .map(|change| proto::PendingCycleChange {
                    billing_cycle: convert::billing_cycle(change.cycle).into(),
                    effective_at: Some(convert::timestamp(change.effective_at)),
                    next_payment: Some(convert::money(&change.next_payment)),
                    next_payment_monthly: Some(per_month(&change.next_payment, change.cycle)),
                });
        reply.purchaser_user_id = sub.purchaser.clone().unwrap_or_default();
        reply.pending_seat_decrease =
            sub.pending_seat_decrease
                .as_ref()
                .map(|decrease| proto::PendingSeatDecrease {
                    from_seats: sub.paid_seats,
                    to_seats: decrease.seats,
                    effective_at: Some(convert::timestamp(decrease.effective_at)),
                });
    }
    reply
}

fn per_month(amount: &Money, cycle: BillingCycle) -> proto::Money {
    convert::money(&Money::new(
        cycle.per_month(amount.amount_minor),
        amount.currency.clone(),
    ))
}

fn redirect_url(field: &str, raw: &str) -> Result<RedirectUrl, Status> {
    Ok(RedirectUrl::parse(raw).field(field)?)
}

fn idempotency_key(raw: &str) -> Result<Option<IdempotencyKey>, Status> {
    Ok(IdempotencyKey::parse_optional(raw).field("idempotency_key")?)
}

/// Per-unit item commitments: known ids are checked by the domain, so here
/// only their shape.
fn unit_items(
    raw: &std::collections::HashMap<String, i64>,
) -> Result<std::collections::BTreeMap<String, i64>, Status> {
    if raw.len() > 16 {
        return Err(Error::invalid("unit_items", "at most 16 items").into());
    }
    raw.iter()
        .map(|(item, &quantity)| {
            if item.is_empty() || item.len() > 64 {
                return Err(Error::invalid("unit_items", "item ids are 1 to 64 characters").into());
            }
            if !(0..=1_000_000).contains(&quantity) {
                return Err(Error::invalid("unit_items", "quantities are 0 to 1000000").into());
            }
            Ok((item.clone(), quantity))
        })
        .collect()
}

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn list_plans(
        &self,
        request: Request<proto::ListPlansRequest>,
    ) -> Result<Response<proto::ListPlansResponse>, Status> {
        // Any authenticated caller of this service may read the catalog.
        caller(&request)?;
        let policy = self.service.signup_policy();
        let plans = self
            .service
            .catalog()
            .plans()
            .iter()
            .map(|p| plan(p, policy))
            .collect();
        Ok(Response::new(proto::ListPlansResponse { plans }))
    }

    async fn get_subscription(
        &self,
        request: Request<proto::GetSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let view = self.service.get_subscription(&actor, org).await?;
        Ok(Response::new(subscription_reply(view)))
    }

    async fn create_checkout_session(
        &self,
        request: Request<proto::CreateCheckoutSessionRequest>,
    ) -> Result<Response<proto::CreateCheckoutSessionResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.get_ref();
        let org = org_id(&req.org_id)?;
        let order = CheckoutOrder {
            plan: self
                .service
                .catalog()
                .parse_plan_id(&req.plan)
                .field("plan")?,
            cycle: convert::parse_billing_cycle("billing_cycle", req.billing_cycle)?,
            seats: req.seats,
            unit_items: unit_items(&req.unit_items)?,
            success_url: redirect_url("success_url", &req.success_url)?,
            cancel_url: redirect_url("cancel_url", &req.cancel_url)?,
        };
        let key = idempotency_key(&req.idempotency_key)?;
        let url = self
            .service
            .create_checkout_session(&actor, org, order, key.as_ref())
            .await?;
        Ok(Response::new(proto::CreateCheckoutSessionResponse { url }))
    }

    async fn update_seat_count(
        &self,
        request: Request<proto::UpdateSeatCountRequest>,
    ) -> Result<Response<proto::UpdateSeatCountResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.get_ref();
        let org = org_id(&req.org_id)?;
        let key = idempotency_key(&req.idempotency_key)?;
        let outcome = self
            .service
            .update_seat_count(&actor, org, req.seats, key.as_ref())
            .await?;
        let view = self.service.get_subscription(&actor, org).await?;
        let (status, authentication_url) = match outcome {
            SeatChangeOutcome::Unchanged => (proto::SeatChangeStatus::Unchanged, None),
            SeatChangeOutcome::Applied { direction } => (
                match direction {
                    SeatDirection::Increase => proto::SeatChangeStatus::Increased,
                    SeatDirection::Decrease => proto::SeatChangeStatus::DecreasePending,
                    SeatDirection::Restore => proto::SeatChangeStatus::Restored,
                },
                None,
            ),
            SeatChangeOutcome::AwaitingAuthentication { url } => {
                (proto::SeatChangeStatus::AwaitingAuthentication, url)
            }
        };
        Ok(Response::new(proto::UpdateSeatCountResponse {
            subscription: Some(subscription_reply(view)),
            requires_authentication: status == proto::SeatChangeStatus::AwaitingAuthentication,
            authentication_url: authentication_url.unwrap_or_default(),
            status: status.into(),
        }))
    }

    async fn change_billing_cycle(
        &self,
        request: Request<proto::ChangeBillingCycleRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let cycle = convert::parse_billing_cycle("billing_cycle", request.get_ref().billing_cycle)?;
        let key = idempotency_key(&request.get_ref().idempotency_key)?;
        self.service
            .change_billing_cycle(&actor, org, cycle, key.as_ref())
            .await?;
        self.overview(&actor, org).await
    }

    async fn cancel_billing_cycle_change(
        &self,
        request: Request<proto::CancelBillingCycleChangeRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let key = idempotency_key(&request.get_ref().idempotency_key)?;
        self.service
            .cancel_billing_cycle_change(&actor, org, key.as_ref())
            .await?;
        self.overview(&actor, org).await
    }

    async fn cancel_subscription(
        &self,
        request: Request<proto::CancelSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let key = idempotency_key(&request.get_ref().idempotency_key)?;
        self.service
            .set_cancellation(&actor, org, true, key.as_ref())
            .await?;
        self.overview(&actor, org).await
    }

    async fn resume_subscription(
        &self,
        request: Request<proto::ResumeSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let key = idempotency_key(&request.get_ref().idempotency_key)?;
        self.service
            .set_cancellation(&actor, org, false, key.as_ref())
            .await?;
        self.overview(&actor, org).await
    }

    async fn get_resubscribe_defaults(
        &self,
        request: Request<proto::GetResubscribeDefaultsRequest>,
    ) -> Result<Response<proto::ResubscribeDefaults>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let defaults = self.service.resubscribe_defaults(&actor, org).await?;
        Ok(Response::new(proto::ResubscribeDefaults {
            plan: defaults.plan.as_str().to_owned(),
            billing_cycle: convert::billing_cycle(defaults.cycle).into(),
            seats: defaults.seats,
        }))
    }

    async fn create_billing_portal_session(
        &self,
        request: Request<proto::CreateBillingPortalSessionRequest>,
    ) -> Result<Response<proto::CreateBillingPortalSessionResponse>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let return_url = redirect_url("return_url", &request.get_ref().return_url)?;
        let key = idempotency_key(&request.get_ref().idempotency_key)?;
        let url = self
            .service
            .create_billing_portal_session(&actor, org, return_url, key.as_ref())
            .await?;
        Ok(Response::new(proto::CreateBillingPortalSessionResponse {
            url,
        }))
    }

    async fn list_parked_stripe_events(
        &self,
        request: Request<proto::ListParkedStripeEventsRequest>,
    ) -> Result<Response<proto::ListParkedStripeEventsResponse>, Status> {
        let actor = actor(&request)?;
        let limit = match request.get_ref().limit {
            0 => 50,
            n @ 1..=500 => i64::from(n),
            _ => return Err(Error::invalid("limit", "must be between 1 and 500").into()),
        };
        let events = self
            .service
            .list_parked_stripe_events(&actor, limit)
            .await?
            .into_iter()
            .map(stripe_replies::parked_event)
            .collect();
        Ok(Response::new(proto::ListParkedStripeEventsResponse {
            events,
        }))
    }

    async fn retry_stripe_event(
        &self,
        request: Request<proto::RetryStripeEventRequest>,
    ) -> Result<Response<proto::RetryStripeEventResponse>, Status> {
        let actor = actor(&request)?;
        self.service
            .retry_stripe_event(&actor, &request.get_ref().event_id)
            .await?;
        Ok(Response::new(proto::RetryStripeEventResponse {}))
    }

    async fn attach_stripe_customer(
        &self,
        request: Request<proto::AttachStripeCustomerRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let view = self
            .service
            .attach_stripe_customer(&actor, org, &request.customer_id)
            .await?;
        Ok(Response::new(subscription_reply(view)))
    }

    async fn import_stripe_customers(
        &self,
        request: Request<proto::ImportStripeCustomersRequest>,
    ) -> Result<Response<proto::ImportStripeCustomersResponse>, Status> {
        let actor = actor(&request)?;
        let imported = self
            .service
            .import_stripe_customers(&actor, request.get_ref().dry_run)
            .await?;
        Ok(Response::new(stripe_replies::import(imported)))
    }

    async fn reconcile_stripe(
        &self,
        request: Request<proto::ReconcileStripeRequest>,
    ) -> Result<Response<proto::ReconcileStripeResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let scope = ReconcileScope {
            org: match request.org_id.as_str() {
                "" => None,
                raw => Some(org_id(raw)?),
            },
            dry_run: request.dry_run,
        };
        let report = self.service.reconcile_stripe(&actor, scope).await?;
        Ok(Response::new(stripe_replies::reconciliation(report)))
    }
}

impl BillingApi {
    /// The overview after a change, read back as `GetSubscription` shows it.
    async fn overview(
        &self,
        actor: &Actor,
        org: OrgId,
    ) -> Result<Response<proto::Subscription>, Status> {
        let view = self.service.get_subscription(actor, org).await?;
        Ok(Response::new(subscription_reply(view)))
    }
}
