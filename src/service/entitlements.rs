//! Entitlement decisions for the gateway.

use super::{Actor, Service, load_org, load_state};
use crate::domain::catalog::Plan;
use crate::domain::entitlement::{Access, AccessRequest, Decision, PROXY_FEATURE};
use crate::domain::ids::{OrgId, UserId};
use crate::domain::instances::InstanceId;
use crate::domain::organization::Organization;
use crate::domain::trial::TrialStatus;
use crate::error::{Error, Result};
use crate::store;

/// A validated CheckEntitlement request.
#[derive(Debug, Clone)]
pub struct EntitlementQuery {
    pub org: OrgId,
    pub user: UserId,
    /// A feature some plan of the catalog names.
    pub feature: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// The add-on instance asked about, for an add-on's feature.
    pub instance: Option<InstanceId>,
}

#[derive(Debug, Clone)]
pub struct EntitlementsView {
    pub org: Organization,
    pub plan: Plan,
    pub access: Access,
    pub trial: TrialStatus,
}

impl Service {
    fn require_entitlement_reader(actor: &Actor) -> Result<()> {
        match actor {
            Actor::Gateway | Actor::Operator => Ok(()),
            Actor::User(_) => Err(Error::PermissionDenied(
                "entitlements are answered to the gateway and operators".into(),
            )),
        }
    }

    /// Parses a feature name against the catalog.
    pub fn parse_feature(&self, raw: &str) -> Result<String> {
        if raw.is_empty() {
            return Err(Error::invalid("feature", "is required"));
        }
        if !self.catalog().knows_feature(raw) {
            return Err(Error::invalid(
                "feature",
                format!("{raw:?} is not a feature of any plan"),
            ));
        }
        Ok(raw.to_owned())
    }

    /// Decides whether the user may use the feature now. A denial is a
    /// decision, not an error.
    pub async fn check_entitlement(
        &self,
        actor: &Actor,
        query: &EntitlementQuery,
    ) -> Result<(Decision, Organization)> {
        Self::require_entitlement_reader(actor)?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = load_org(&mut tx, query.org).await?;
        let role = store::members::role_of(&mut tx, query.org, &query.user).await?;
        let state = load_state(&mut tx, org, now).await?;
        if let Some(add_on) = self.catalog().add_on_for_feature(&query.feature) {
            let instance_id = query.instance.as_ref().ok_or_else(|| {
                Error::invalid(
                    "instance_id",
                    format!("is required for {:?}", query.feature),
                )
            })?;
            let instance = store::instances::get(&mut tx, query.org, instance_id)
                .await?
                .filter(|instance| instance.add_on == add_on.id);
            let decision = state.decide_instance(role, instance.as_ref(), now);
            return Ok((decision, state.org));
        }
        let plan = self.plan_of(&state.org)?;
        let needs_credits = query.feature == PROXY_FEATURE
            && query
                .model
                .as_deref()
                .is_some_and(|model| self.catalog().credits().model_needs_credits(model));
        let decision = state.decide(
            plan,
            &AccessRequest {
                role,
                feature: &query.feature,
                model: query.model.as_deref(),
                provider: query.provider.as_deref(),
                needs_credits,
            },
            now,
        );
        Ok((decision, state.org))
    }

    pub async fn get_entitlements(&self, actor: &Actor, id: OrgId) -> Result<EntitlementsView> {
        Self::require_entitlement_reader(actor)?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = load_org(&mut tx, id).await?;
        let state = load_state(&mut tx, org, now).await?;
        let plan = self.plan_of(&state.org)?.clone();
        Ok(EntitlementsView {
            access: state.access(now),
            trial: state.trial(now),
            org: state.org,
            plan,
        })
    }
}
