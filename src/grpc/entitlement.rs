//! `billing.v1.EntitlementService`: the gateway's questions.

use std::collections::HashSet;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::actor;
use super::convert::{self, org_id, reason, user_id};
use super::proto::{self, entitlement_service_server::EntitlementService};
use super::streams::until_shutdown;
use super::usage::{self, model_name};
use crate::domain::entitlement::{Access, StateVersion};
use crate::domain::ids::InstanceId;
use crate::domain::ids::OrgId;
use crate::error::{Error, FieldContext, Result};
use crate::service::{
    Checked, EntitlementQuery, QuantityReport, Service, UsageReport, WatchUpdate,
};

#[derive(Debug, Clone)]
pub struct EntitlementApi {
    service: Service,
    /// True once the server is shutting down.
    stopping: watch::Receiver<bool>,
}

impl EntitlementApi {
    pub fn new(service: Service, stopping: watch::Receiver<bool>) -> Self {
        Self { service, stopping }
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
            reservation: usage::reservation(request)?,
        };
        let answer = self
            .service
            .check_entitlement(&actor, &query, request.min_version.map(StateVersion))
            .await?;
        let Checked { decision, hold } = answer.value;
        Ok(Response::new(proto::CheckEntitlementResponse {
            hold_id: hold.as_ref().map(|h| h.id.to_string()).unwrap_or_default(),
            hold_expires_at: hold.map(|h| convert::timestamp(h.expires_at)),
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
        let (org, report) = usage::usage_report(request)?;
        let recorded = self.service.record_usage(&actor, org, report).await?;
        Ok(Response::new(usage::recorded(recorded)))
    }

    async fn record_usage_batch(
        &self,
        request: Request<proto::RecordUsageBatchRequest>,
    ) -> Result<Response<proto::RecordUsageBatchResponse>, Status> {
        let actor = actor(&request)?;
        let reports = &request.get_ref().reports;
        usage::batch_size(reports.len())?;
        // Reports that do not parse are answered on their own; the rest go on.
        let parsed: Vec<Result<(OrgId, UsageReport)>> =
            reports.iter().map(usage::usage_report).collect();
        let valid: Vec<(OrgId, UsageReport)> = parsed
            .iter()
            .filter_map(|report| report.as_ref().ok().cloned())
            .collect();
        let mut posted = self
            .service
            .record_usage_batch(&actor, valid)
            .await?
            .into_iter();
        let results = parsed
            .into_iter()
            .map(|report| match report {
                Ok(_) => posted.next().unwrap_or_else(|| {
                    Err(Error::internal(anyhow::anyhow!(
                        "a usage report had no result"
                    )))
                }),
                Err(error) => Err(error),
            })
            .map(usage::batch_result)
            .collect();
        Ok(Response::new(proto::RecordUsageBatchResponse { results }))
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
        Ok(Response::new(Box::pin(until_shutdown(
            stream,
            self.stopping.clone(),
        ))))
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
