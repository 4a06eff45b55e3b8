//! `billing.v1.EntitlementService`: the gateway's questions.

use std::collections::HashSet;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::actor;
use super::convert::{self, org_id, reason, user_id};
use super::proto::{self, entitlement_service_server::EntitlementService};
use crate::domain::credits::Micros;
use crate::domain::entitlement::{Access, StateVersion};
use crate::domain::ids::IdempotencyKey;
use crate::domain::ids::InstanceId;
use crate::domain::organization::ModelRestrictions;
use crate::error::{Error, FieldContext, Result};
use crate::service::{EntitlementQuery, QuantityReport, Service, UsageReport, WatchUpdate};

#[derive(Debug, Clone)]
pub struct EntitlementApi {
    service: Service,
}

impl EntitlementApi {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

fn access(access: Access) -> proto::AccessState {
    use proto::AccessState as A;
    match access {
        Access::Bypass => A::Bypass,
        Access::Subscribed => A::Subscribed,
        Access::SeatsExceeded { .. } => A::SeatsExceeded,
        Access::Trial => A::Trial,
        Access::TrialGrace => A::TrialGrace,
        Access::TrialExpired => A::TrialExpired,
        Access::SubscriptionInactive => A::SubscriptionInactive,
    }
}

/// Model and provider names: optional, bounded, printable.
fn model_name(field: &str, raw: Option<&String>) -> Result<Option<String>> {
    match raw.map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(name)
            if name.len() <= ModelRestrictions::MAX_ENTRY_LEN
                && !name.chars().any(char::is_control) =>
        {
            Ok(Some(name.to_owned()))
        }
        Some(_) => Err(Error::invalid(
            field,
            format!(
                "must be at most {} printable characters",
                ModelRestrictions::MAX_ENTRY_LEN
            ),
        )),
    }
}

#[tonic::async_trait]
impl EntitlementService for EntitlementApi {
    async fn check_entitlement(
        &self,
        request: Request<proto::CheckEntitlementRequest>,
    ) -> Result<Response<proto::CheckEntitlementResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let query = EntitlementQuery {
            org: org_id(&request.org_id)?,
            user: user_id(&request.user_id)?,
            feature: self.service.parse_feature(&request.feature)?,
            model: model_name("model", request.model.as_ref())?,
            provider: model_name("provider", request.provider.as_ref())?,
            instance: match request.instance_id.as_deref() {
                None | Some("") => None,
                Some(raw) => Some(InstanceId::parse(raw).field("instance_id")?),
            },
        };
        let answer = self
            .service
            .check_entitlement(&actor, &query, request.min_version.map(StateVersion))
            .await?;
        let decision = answer.value;
        Ok(Response::new(proto::CheckEntitlementResponse {
            allowed: decision.allowed,
            reason: reason(decision.reason).into(),
            trial: Some(convert::trial(decision.trial)),
            credits_locked: decision.credits_locked(),
            suppress_trial_messaging: answer.suppress_trial_messaging,
            state_version: answer.version.0,
            stale: answer.stale,
        }))
    }

    async fn get_entitlements(
        &self,
        request: Request<proto::GetEntitlementsRequest>,
    ) -> Result<Response<proto::GetEntitlementsResponse>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let min_version = request.get_ref().min_version.map(StateVersion);
        let answer = self
            .service
            .get_entitlements(&actor, org, min_version)
            .await?;
        let view = answer.value;
        Ok(Response::new(proto::GetEntitlementsResponse {
            org_id: view.org.id.to_string(),
            plan: view.plan.id.as_str().to_owned(),
            features: view.plan.features.clone(),
            limits: view
                .plan
                .limits
                .iter()
                .map(|l| proto::Limit {
                    name: l.name.clone(),
                    value: l.value,
                })
                .collect(),
            access: access(view.access).into(),
            trial: Some(convert::trial(view.trial)),
            credits_locked: view.access.locks_credits(),
            suppress_trial_messaging: answer.suppress_trial_messaging,
            state_version: answer.version.0,
            stale: answer.stale,
        }))
    }

    async fn record_usage(
        &self,
        request: Request<proto::RecordUsageRequest>,
    ) -> Result<Response<proto::RecordUsageResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let usage = UsageReport {
            user: user_id(&request.user_id)?,
            amount: Micros::parse_positive(request.amount_micros).field("amount_micros")?,
            model: model_name("model", Some(&request.model))?
                .ok_or_else(|| Error::invalid("model", "is required"))?,
            idempotency_key: IdempotencyKey::parse_optional(&request.idempotency_key)
                .field("idempotency_key")?
                .ok_or_else(|| Error::invalid("idempotency_key", "is required"))?
                .as_str()
                .to_owned(),
        };
        let posted = self.service.record_usage(&actor, org, usage).await?;
        Ok(Response::new(proto::RecordUsageResponse {
            entry_id: posted.entry.id.to_string(),
            balance_after_micros: posted.entry.balance_after.0,
            replayed: posted.replayed,
        }))
    }

    async fn report_usage_quantity(
        &self,
        request: Request<proto::ReportUsageQuantityRequest>,
    ) -> Result<Response<proto::ReportUsageQuantityResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        if request.item.is_empty() {
            return Err(Error::invalid("item", "is required").into());
        }
        let synced = self
            .service
            .report_usage_quantity(
                &actor,
                org,
                QuantityReport {
                    item: request.item.clone(),
                    count: request.count,
                },
            )
            .await?;
        Ok(Response::new(proto::ReportUsageQuantityResponse {
            billed_quantity: synced.billed_quantity,
            stripe_subscription_id: synced.subscription_id.unwrap_or_default(),
        }))
    }

    type WatchEntitlementsStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<proto::EntitlementUpdate, Status>> + Send>>;

    async fn watch_entitlements(
        &self,
        request: Request<proto::WatchEntitlementsRequest>,
    ) -> Result<Response<Self::WatchEntitlementsStream>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let orgs = if request.org_ids.is_empty() {
            None
        } else {
            Some(
                request
                    .org_ids
                    .iter()
                    .map(|raw| org_id(raw))
                    .collect::<Result<HashSet<_>>>()?,
            )
        };
        let updates =
            self.service
                .watch_entitlements(&actor, orgs, request.resume_from.map(StateVersion))?;
        let api = self.clone();
        let stream = ReceiverStream::new(updates).map(move |update| Ok(api.update(update)));
        Ok(Response::new(Box::pin(stream)))
    }
}

impl EntitlementApi {
    fn update(&self, update: WatchUpdate) -> proto::EntitlementUpdate {
        use proto::entitlement_update::Update;
        let (version, update) = match update {
            WatchUpdate::Org {
                org,
                version,
                access: state,
                used_seats,
                paid_seats,
            } => {
                let plan = self.service.catalog().plan(&org.state.org.plan);
                let (credits_positive, credits_positive_until) = org.state.credits.to_stored();
                let members: Vec<proto::WatchedMember> = org
                    .members()
                    .map(|(user, role)| proto::WatchedMember {
                        user_id: user.to_owned(),
                        role: convert::role(role).into(),
                    })
                    .collect();
                let o = &org.state.org;
                let message = proto::OrgEntitlements {
                    org_id: o.id.to_string(),
                    version: org.version.0,
                    plan: o.plan.as_str().to_owned(),
                    features: plan.map(|p| p.features.clone()).unwrap_or_default(),
                    trial_end: Some(convert::timestamp(o.trial_end)),
                    bypasses_billing: o.bypasses_billing(),
                    access: access(state).into(),
                    members,
                    used_seats,
                    paid_seats,
                    enforces_model_restrictions: plan
                        .is_some_and(|p| p.enforces_model_restrictions),
                    model_deny_list: o.restrictions.model_deny_list.clone(),
                    provider_allow_list: o.restrictions.provider_allow_list.clone(),
                    credits_positive,
                    credits_positive_until: credits_positive_until.map(convert::timestamp),
                    suppress_trial_messaging: o.suppress_trial_messaging,
                    instances_opted_out: o.instances_opted_out,
                };
                (version, Update::Organization(message))
            }
            WatchUpdate::Removed { org, version } => {
                (version, Update::RemovedOrgId(org.to_string()))
            }
            WatchUpdate::Resync { version } => (version, Update::Resync(true)),
            WatchUpdate::SnapshotComplete { version } => (version, Update::SnapshotComplete(true)),
        };
        proto::EntitlementUpdate {
            version: version.0,
            update: Some(update),
        }
    }
}
