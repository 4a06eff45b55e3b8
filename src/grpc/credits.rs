//! `billing.v1.CreditService`: prepaid credits and the add-on instances they
//! pay for.

use tonic::{Request, Response, Status};

use super::auth::actor;
use super::convert::{
    self, optional_timestamp, org_id, page_size, parse_timestamp, reason, required_key, timestamp,
};
use super::proto::{self, credit_service_server::CreditService};
use crate::domain::credit_holds::CreditHold;
use crate::domain::credits::{CreditEntry, CreditEntryKind, Micros};
use crate::domain::ids::InstanceId;
use crate::domain::ids::{CreditEntryId, IdempotencyKey, RedirectUrl, UserId};
use crate::domain::instances::InstanceStatus;
use crate::domain::money::Money;
use crate::error::{Error, FieldContext, Result};
use crate::service::{
    CreditAdjustment, CreditGrant, CreditPurchaseOrder, InstanceView, NewInstance, Posted, Service,
};

/// The longest reason a grant or adjustment may carry.
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone)]
pub struct CreditApi {
    service: Service,
}

impl CreditApi {
    pub fn new(service: Service) -> Self {
        Self { service }
    }

    fn instance_message(&self, view: InstanceView) -> proto::InstanceSubscription {
        let sub = view.subscription;
        let currency = self.service.catalog().currency().clone();
        let billing = view.billing_visible.then(|| proto::InstanceBilling {
            user_id: sub.user_id.to_string(),
            // Whole cents for display; the exact price is in micro-units.
            monthly_price: Some(convert::money(&Money::new(
                sub.price.get() / crate::domain::credits::MICROS_PER_MINOR,
                currency,
            ))),
            monthly_price_micros: sub.price.get(),
            trial_end: optional_timestamp(sub.trial_end),
            current_period_start: Some(timestamp(sub.current_period_start)),
            current_period_end: Some(timestamp(sub.current_period_end)),
            cancel_at_period_end: sub.cancel_at_period_end,
            canceled_at: optional_timestamp(sub.canceled_at),
            created_at: Some(timestamp(sub.created_at)),
        });
        proto::InstanceSubscription {
            org_id: sub.org_id.to_string(),
            instance_id: sub.instance_id.as_str().to_owned(),
            add_on: sub.add_on,
            status: instance_status(view.status).into(),
            accessible: view.decision.allowed,
            reason: reason(view.decision.reason).into(),
            billing,
        }
    }
}

fn instance_status(status: InstanceStatus) -> proto::InstanceStatus {
    match status {
        InstanceStatus::Trialing => proto::InstanceStatus::Trialing,
        InstanceStatus::Active => proto::InstanceStatus::Active,
        InstanceStatus::Suspended => proto::InstanceStatus::Suspended,
        InstanceStatus::Canceled => proto::InstanceStatus::Canceled,
    }
}

fn entry_kind(kind: CreditEntryKind) -> proto::CreditEntryKind {
    match kind {
        CreditEntryKind::Grant => proto::CreditEntryKind::Grant,
        CreditEntryKind::Purchase => proto::CreditEntryKind::Purchase,
        CreditEntryKind::Usage => proto::CreditEntryKind::Usage,
        CreditEntryKind::InstanceCharge => proto::CreditEntryKind::InstanceCharge,
        CreditEntryKind::Expiry => proto::CreditEntryKind::Expiry,
        CreditEntryKind::Adjustment => proto::CreditEntryKind::Adjustment,
    }
}

fn entry(entry: CreditEntry) -> proto::CreditEntry {
    let details = entry.details;
    proto::CreditEntry {
        id: entry.id.to_string(),
        kind: entry_kind(entry.kind).into(),
        amount_micros: entry.amount,
        balance_after_micros: entry.balance_after.0,
        occurred_at: Some(timestamp(entry.occurred_at)),
        reason: details.reason.unwrap_or_default(),
        user_id: details.user_id.map(|u| u.to_string()).unwrap_or_default(),
        model: details.model.unwrap_or_default(),
        instance_id: details
            .instance_id
            .map(|i| i.as_str().to_owned())
            .unwrap_or_default(),
        expires_at: optional_timestamp(details.expires_at),
        stripe_payment_id: details.stripe_payment_id.unwrap_or_default(),
        hold_id: details.hold.map(|h| h.to_string()).unwrap_or_default(),
    }
}

fn hold(hold: CreditHold) -> proto::CreditHold {
    proto::CreditHold {
        id: hold.id.to_string(),
        amount_micros: hold.amount.get(),
        user_id: hold.user_id.to_string(),
        model: hold.model.unwrap_or_default(),
        created_at: Some(timestamp(hold.created_at)),
        expires_at: Some(timestamp(hold.expires_at)),
    }
}

fn posted(posted: Posted) -> proto::PostedCreditEntry {
    proto::PostedCreditEntry {
        entry: Some(entry(posted.entry)),
        replayed: posted.replayed,
    }
}

fn reason_text(raw: &str) -> Result<String> {
    let reason = raw.trim();
    if reason.is_empty()
        || reason.chars().count() > MAX_REASON_CHARS
        || reason.chars().any(char::is_control)
    {
        return Err(Error::invalid(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} printable characters"),
        ));
    }
    Ok(reason.to_owned())
}

fn instance_id(raw: &str) -> Result<InstanceId> {
    InstanceId::parse(raw).field("instance_id")
}

#[tonic::async_trait]
impl CreditService for CreditApi {
    async fn get_credit_balance(
        &self,
        request: Request<proto::GetCreditBalanceRequest>,
    ) -> Result<Response<proto::CreditBalance>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let view = self.service.get_credit_balance(&actor, org).await?;
        Ok(Response::new(proto::CreditBalance {
            org_id: org.to_string(),
            amounts_visible: view.amounts_visible,
            balance_micros: view.balance.map(|b| b.0),
            next_expiry_at: view.next_expiry.map(|e| timestamp(e.at)),
            next_expiry_micros: view
                .next_expiry
                .filter(|_| view.amounts_visible)
                .map(|e| e.amount),
            locked: view.locked,
            currency: self.service.catalog().currency().as_str().to_owned(),
            held_micros: view.held,
            active_holds: u32::try_from(view.active_holds).unwrap_or(u32::MAX),
        }))
    }

    async fn list_credit_entries(
        &self,
        request: Request<proto::ListCreditEntriesRequest>,
    ) -> Result<Response<proto::ListCreditEntriesResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let size = page_size(request.page_size, 50, 200)?;
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(CreditEntryId::parse(token).field("page_token")?),
        };
        let (entries, holds) = self
            .service
            .list_credit_entries(&actor, org, before, size)
            .await?;
        let next_page_token = if entries.len() as i64 == size {
            entries.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListCreditEntriesResponse {
            entries: entries.into_iter().map(entry).collect(),
            next_page_token,
            active_holds: holds.into_iter().map(hold).collect(),
        }))
    }

    async fn create_credit_purchase(
        &self,
        request: Request<proto::CreateCreditPurchaseRequest>,
    ) -> Result<Response<proto::CreateCreditPurchaseResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let order = CreditPurchaseOrder {
            amount: self
                .service
                .catalog()
                .credits()
                .parse_purchase(request.amount_micros)
                .field("amount_micros")?,
            success_url: RedirectUrl::parse(&request.success_url).field("success_url")?,
            cancel_url: RedirectUrl::parse(&request.cancel_url).field("cancel_url")?,
            idempotency_key: IdempotencyKey::parse_optional(&request.idempotency_key)
                .field("idempotency_key")?,
        };
        let url = self
            .service
            .create_credit_purchase(&actor, org, order)
            .await?;
        Ok(Response::new(proto::CreateCreditPurchaseResponse { url }))
    }

    async fn grant_credits(
        &self,
        request: Request<proto::GrantCreditsRequest>,
    ) -> Result<Response<proto::PostedCreditEntry>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let grant = CreditGrant {
            amount: Micros::parse_positive(request.amount_micros).field("amount_micros")?,
            reason: reason_text(&request.reason)?,
            expires_at: request
                .expires_at
                .as_ref()
                .map(|at| parse_timestamp("expires_at", Some(at)))
                .transpose()?,
            idempotency_key: required_key("idempotency_key", &request.idempotency_key)?,
        };
        let result = self.service.grant_credits(&actor, org, grant).await?;
        Ok(Response::new(posted(result)))
    }

    async fn adjust_credits(
        &self,
        request: Request<proto::AdjustCreditsRequest>,
    ) -> Result<Response<proto::PostedCreditEntry>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let adjustment = CreditAdjustment {
            amount: request.amount_micros,
            reason: reason_text(&request.reason)?,
            idempotency_key: required_key("idempotency_key", &request.idempotency_key)?,
        };
        let result = self.service.adjust_credits(&actor, org, adjustment).await?;
        Ok(Response::new(posted(result)))
    }

    async fn set_low_balance_threshold(
        &self,
        request: Request<proto::SetLowBalanceThresholdRequest>,
    ) -> Result<Response<proto::SetLowBalanceThresholdResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let threshold = request
            .threshold_micros
            .map(Micros::non_negative)
            .transpose()
            .field("threshold_micros")?;
        let applies = self
            .service
            .set_low_balance_threshold(&actor, org, threshold)
            .await?;
        Ok(Response::new(proto::SetLowBalanceThresholdResponse {
            threshold_micros: applies.get(),
            organization_set: threshold.is_some(),
        }))
    }

    async fn create_instance_subscription(
        &self,
        request: Request<proto::CreateInstanceSubscriptionRequest>,
    ) -> Result<Response<proto::InstanceSubscription>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        if request.add_on.is_empty() {
            return Err(Error::invalid("add_on", "is required").into());
        }
        let new = NewInstance {
            instance_id: instance_id(&request.instance_id)?,
            add_on: request.add_on.clone(),
            user: match request.user_id.as_str() {
                "" => None,
                raw => Some(UserId::parse(raw).field("user_id")?),
            },
        };
        let view = self
            .service
            .create_instance_subscription(&actor, org, new)
            .await?;
        Ok(Response::new(self.instance_message(view)))
    }

    async fn cancel_instance_subscription(
        &self,
        request: Request<proto::CancelInstanceSubscriptionRequest>,
    ) -> Result<Response<proto::InstanceSubscription>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let instance = instance_id(&request.instance_id)?;
        let view = self
            .service
            .cancel_instance_subscription(&actor, org, &instance, request.at_once)
            .await?;
        Ok(Response::new(self.instance_message(view)))
    }

    async fn get_instance_subscription(
        &self,
        request: Request<proto::GetInstanceSubscriptionRequest>,
    ) -> Result<Response<proto::InstanceSubscription>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let instance = instance_id(&request.instance_id)?;
        let view = self
            .service
            .get_instance_subscription(&actor, org, &instance)
            .await?;
        Ok(Response::new(self.instance_message(view)))
    }

    async fn list_instance_subscriptions(
        &self,
        request: Request<proto::ListInstanceSubscriptionsRequest>,
    ) -> Result<Response<proto::ListInstanceSubscriptionsResponse>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let views = self
            .service
            .list_instance_subscriptions(&actor, org)
            .await?;
        Ok(Response::new(proto::ListInstanceSubscriptionsResponse {
            instances: views
                .into_iter()
                .map(|view| self.instance_message(view))
                .collect(),
        }))
    }

    async fn set_instance_trial_end(
        &self,
        request: Request<proto::SetInstanceTrialEndRequest>,
    ) -> Result<Response<proto::InstanceSubscription>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let instance = instance_id(&request.instance_id)?;
        let trial_end = parse_timestamp("trial_end", request.trial_end.as_ref())?;
        let view = self
            .service
            .set_instance_trial_end(&actor, org, &instance, trial_end)
            .await?;
        Ok(Response::new(self.instance_message(view)))
    }

    async fn set_instances_opt_out(
        &self,
        request: Request<proto::SetInstancesOptOutRequest>,
    ) -> Result<Response<proto::SetInstancesOptOutResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let opted_out = self
            .service
            .set_instances_opt_out(&actor, org, request.opted_out)
            .await?;
        Ok(Response::new(proto::SetInstancesOptOutResponse {
            opted_out,
        }))
    }
}
