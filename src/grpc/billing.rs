//! `billing.v1.BillingService`: the plan catalog and subscription overview.

use tonic::{Request, Response, Status};

use super::auth::{actor, caller};
use super::convert::{self, org_id};
use super::proto::{self, billing_service_server::BillingService};
use crate::domain::catalog::{Plan, PricingModel, SignupPolicy};
use crate::service::{Service, SubscriptionView};

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

fn subscription(view: SubscriptionView) -> proto::Subscription {
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
    }
    reply
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
        Ok(Response::new(subscription(view)))
    }
}
