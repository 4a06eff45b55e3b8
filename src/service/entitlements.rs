//! Entitlement decisions for the gateway.

use std::sync::Arc;

use super::Actor;
use super::Service;
use super::entitlement_cache::CachedOrg;
use super::usage::Reservation;
use crate::domain::catalog::Plan;
use crate::domain::credit_holds::CreditHold;
use crate::domain::entitlement::{
    Access, AccessRequest, Decision, PROXY_FEATURE, Reason, StateVersion,
};
use crate::domain::ids::InstanceId;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::organization::Organization;
use crate::domain::quoted;
use crate::domain::reason::ErrorReason;
use crate::domain::role::user_may_read_entitlements;
use crate::domain::trial::TrialStatus;
use crate::domain::usage::UsageRefusal;
use crate::error::{Error, Result};

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
    /// Credit to hold for the request, when it is for a paid model.
    pub reservation: Option<Reservation>,
}

/// A check's decision, and the hold placed for it, if any.
#[derive(Debug, Clone)]
pub struct Checked {
    pub decision: Decision,
    pub hold: Option<CreditHold>,
}

#[derive(Debug, Clone)]
pub struct EntitlementsView {
    pub org: Organization,
    pub plan: Plan,
    pub access: Access,
    pub trial: TrialStatus,
}

impl Service {
    pub(super) fn require_entitlement_reader(actor: &Actor) -> Result<()> {
        match actor {
            Actor::Gateway | Actor::Operator => Ok(()),
            Actor::User(_) => Err(Error::denied(
                ErrorReason::CallerNotPermitted,
                "entitlements are answered to the gateway and operators",
            )),
        }
    }

    /// Whether `actor` may read the organization's entitlements (about
    /// `checked_user`, reserving credit if `reserves`): the gateway and
    /// operators always; a signed-in user by the domain's rule, so the web
    /// app can show a member their own access and trial.
    fn may_read(
        actor: &Actor,
        cached: &CachedOrg,
        checked_user: Option<&UserId>,
        reserves: bool,
    ) -> Result<()> {
        match actor {
            Actor::Gateway | Actor::Operator => Ok(()),
            Actor::User(asking) => {
                user_may_read_entitlements(asking, cached.role_of(asking), checked_user, reserves)
                    .map_err(|refusal| Error::denied(ErrorReason::NotOwnResource, refusal.reason()))
            }
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
                format!("{} is not a feature of any plan", quoted(raw)),
            ));
        }
        Ok(raw.to_owned())
    }

    /// Decides whether the user may use the feature now, from memory. A
    /// denial is a decision, not an error. With a reservation, an allowed
    /// request for a paid model also holds the estimate (in the database),
    /// and is denied INSUFFICIENT_CREDITS when what may be reserved cannot
    /// cover it.
    pub async fn check_entitlement(
        &self,
        actor: &Actor,
        query: &EntitlementQuery,
        min_version: Option<StateVersion>,
    ) -> Result<Answer<Checked>> {
        let now = self.now();
        let (cached, version) = self.cached_org(query.org, min_version).await?;
        Self::may_read(
            actor,
            &cached,
            Some(&query.user),
            query.reservation.is_some(),
        )?;
        let role = cached.role_of(&query.user);
        let state = &cached.state;
        let mut needs_credits = false;
        let decision = if let Some(add_on) = self.catalog().add_on_for_feature(&query.feature) {
            let instance_id = query.instance.as_ref().ok_or_else(|| {
                Error::invalid(
                    "instance_id",
                    format!("is required for {:?}", query.feature),
                )
            })?;
            let instance = cached
                .instance(instance_id)
                .filter(|instance| instance.add_on == add_on.id);
            state.decide_instance(role, instance, now)
        } else {
            let plan = self.plan_of(&state.org)?;
            needs_credits = query.feature == PROXY_FEATURE
                && query
                    .model
                    .as_deref()
                    .is_some_and(|model| self.catalog().credits().model_needs_credits(model));
            state.decide(
                plan,
                &AccessRequest {
                    role,
                    feature: &query.feature,
                    model: query.model.as_deref(),
                    provider: query.provider.as_deref(),
                    needs_credits,
                },
                now,
            )
        };
        let stale_since = self.cache().stale_since();
        let mut decision =
            self.inner
                .settings
                .stale_policy
                .apply(decision, &query.feature, stale_since, now);
        let mut hold = None;
        if let Some(reservation) = &query.reservation
            && decision.allowed
            && needs_credits
        {
            let locked = decision.credits_locked();
            match self
                .reserve_credits(
                    query.org,
                    &query.user,
                    query.model.as_deref(),
                    reservation,
                    locked,
                )
                .await?
            {
                Ok(placed) => hold = Some(placed),
                Err(UsageRefusal::InsufficientCredits { .. }) => {
                    decision = Decision {
                        allowed: false,
                        reason: Reason::InsufficientCredits,
                        ..decision
                    };
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(Answer {
            value: Checked { decision, hold },
            suppress_trial_messaging: state.org.suppress_trial_messaging,
            version,
            stale: stale_since.is_some(),
        })
    }

    pub async fn get_entitlements(
        &self,
        actor: &Actor,
        id: OrgId,
        min_version: Option<StateVersion>,
    ) -> Result<Answer<EntitlementsView>> {
        let now = self.now();
        let (cached, version) = self.cached_org(id, min_version).await?;
        Self::may_read(actor, &cached, None, false)?;
        let state = &cached.state;
        let plan = self.plan_of(&state.org)?.clone();
        Ok(Answer {
            value: EntitlementsView {
                access: state.access(now),
                trial: state.trial(now),
                org: state.org.clone(),
                plan,
            },
            suppress_trial_messaging: state.org.suppress_trial_messaging,
            version,
            stale: self.cache().stale_since().is_some(),
        })
    }

    /// The organization from memory, and the version the answer stands at.
    /// With `min_version` newer than both the watermark and the
    /// organization's own version, it waits briefly
    /// for the notification, then reads the database. An organization the
    /// cache does not know (created a moment ago) is read from the database.
    pub(super) async fn cached_org(
        &self,
        org: OrgId,
        min_version: Option<StateVersion>,
    ) -> Result<(Arc<CachedOrg>, StateVersion)> {
        let cache = self.cache();
        let mut held = cache.get(org);
        let behind = min_version.filter(|&min| {
            cache.watermark() < min && held.as_ref().is_none_or(|held| held.version < min)
        });
        if let Some(min) = behind {
            if !cache
                .wait_for(min, self.inner.settings.min_version_wait)
                .await
            {
                // The database has every committed version; a `min_version`
                // beyond it was never committed, and the answer says so.
                let read_at = self.read_through(org, Some(min)).await?;
                let cached = cache.get(org).ok_or_else(|| super::org_not_found(org))?;
                return Ok((cached, read_at));
            }
            held = cache.get(org);
        }
        if let Some(cached) = held {
            let version = answered_at(cache.watermark(), &cached);
            return Ok((cached, version));
        }
        let read_at = self.read_through(org, None).await?;
        let cached = cache.get(org).ok_or_else(|| super::org_not_found(org))?;
        Ok((cached, read_at))
    }

    /// Reads the organization from the database into the cache. When the
    /// database cannot be reached there is no answer to give: not one older
    /// than the caller asked for, nor one about an organization never seen.
    async fn read_through(
        &self,
        org: OrgId,
        min_version: Option<StateVersion>,
    ) -> Result<StateVersion> {
        self.cache()
            .refresh(self.store(), &[org], self.now())
            .await
            .map_err(|error| {
                let cause = match &error {
                    Error::Internal(cause) => format!("{cause:#}"),
                    Error::Unavailable(reason) => reason.clone(),
                    _ => return error,
                };
                tracing::warn!(error = cause, %org, "reading an organization's entitlements failed");
                Error::Unavailable(match min_version {
                    Some(min) => format!(
                        "this replica has not seen version {} and cannot reach the database",
                        min.0
                    ),
                    None => format!(
                        "organization {org} is not known here and the database cannot be reached"
                    ),
                })
            })
    }
}

/// The version an answer about one organization stands at. The watermark
/// covers every organization; the organization's own state may be newer
/// than it (a refresh for an earlier announcement reads the row as it is
/// now), and the organization was read after its last change, so its own
/// version is covered too.
fn answered_at(watermark: StateVersion, org: &CachedOrg) -> StateVersion {
    watermark.max(org.version)
}

/// An answer from the entitlement state, with the version it stands at.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub suppress_trial_messaging: bool,
    /// Every change up to this version is reflected in the answer.
    pub version: StateVersion,
    /// Whether the replica is not following changes (database unreachable).
    pub stale: bool,
}
