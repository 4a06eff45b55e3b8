//! The entitlement decision: may this user of this organization use this
//! feature (and model) now?
//!
//! One pure function of the organization's state and the time. The order of
//! the rules matters and is the product rule:
//! 1. not a member: denied;
//! 2. the plan lacks the feature: denied;
//! 3. the organization's access: bypass, then a paid subscription that
//!    counts (over-seat subscriptions deny), then the trial;
//! 4. for model access on plans that enforce them, the model deny list and
//!    the provider allow list;
//! 5. for a model that is not free, a positive balance of credits (which
//!    step 3 has already established are not locked).
//!
//! Add-on instances are answered by [`OrgEntitlementState::decide_instance`]:
//! membership, then the organization's opt-out and access, then the
//! instance's own subscription.

use chrono::{DateTime, Utc};

use super::catalog::Plan;
use super::credits::CreditHorizon;
use super::instances::{InstanceStatus, InstanceSubscription};
use super::organization::Organization;
use super::role::Role;
use super::seats::{SeatHolders, SeatUsage};
use super::subscription::{self, Subscription};
use super::trial::{TrialStage, TrialStatus};

/// The feature the gateway asks about before every model request.
pub const PROXY_FEATURE: &str = "proxy";

/// A point in the order of committed changes to entitlement inputs. Each
/// such transaction takes the next version, in commit order, so state "at
/// version v" has every change up to v.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StateVersion(pub u64);

impl StateVersion {
    pub fn from_stored(raw: i64) -> Option<Self> {
        u64::try_from(raw).ok().map(Self)
    }
}

/// What a replica does with a feature once its state has been stale (the
/// database unreachable) for longer than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePolicy {
    pub max_staleness: chrono::TimeDelta,
    /// Features denied after that; every other feature keeps answering
    /// from the last known state.
    pub fail_closed_features: Vec<String>,
}

impl StalePolicy {
    /// The decision to give when the state has been stale since `since`.
    pub fn apply(
        &self,
        decision: Decision,
        feature: &str,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Decision {
        let too_stale = since.is_some_and(|since| now - since > self.max_staleness);
        if too_stale && self.fail_closed_features.iter().any(|f| f == feature) {
            Decision {
                allowed: false,
                reason: Reason::StateStale,
                ..decision
            }
        } else {
            decision
        }
    }
}

/// Everything the decision reads about one organization.
#[derive(Debug, Clone)]
pub struct OrgEntitlementState {
    pub org: Organization,
    pub subscriptions: Vec<Subscription>,
    /// Members plus pending invitations that take a seat.
    pub seats: SeatHolders,
    /// When the organization's credits are positive.
    pub credits: CreditHorizon,
}

/// The organization's access, whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Bypass,
    Subscribed,
    SeatsExceeded { used: i64, paid: i64 },
    Trial,
    TrialGrace,
    TrialExpired,
    SubscriptionInactive,
}

impl Access {
    pub fn grants(self) -> bool {
        match self {
            Self::Bypass | Self::Subscribed | Self::Trial | Self::TrialGrace => true,
            Self::SeatsExceeded { .. } | Self::TrialExpired | Self::SubscriptionInactive => false,
        }
    }

    /// How an error message names the state.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Bypass => "billing bypassed",
            Self::Subscribed => "subscribed",
            Self::SeatsExceeded { .. } => "more seats used than paid for",
            Self::Trial => "in its trial",
            Self::TrialGrace => "in its trial's grace days",
            Self::TrialExpired => "its trial has expired",
            Self::SubscriptionInactive => "its subscription has ended",
        }
    }

    /// Whether the trial decides this access (no paid subscription does,
    /// and billing is not bypassed): trial stages are announced only then.
    pub fn decided_by_trial(self) -> bool {
        match self {
            Self::Trial | Self::TrialGrace | Self::TrialExpired => true,
            Self::Bypass
            | Self::Subscribed
            | Self::SeatsExceeded { .. }
            | Self::SubscriptionInactive => false,
        }
    }

    /// Prepaid credits are locked while the organization is not entitled at
    /// all. Being over seats is fixable by buying seats, so it does not lock
    /// credits.
    pub fn locks_credits(self) -> bool {
        match self {
            Self::TrialExpired | Self::SubscriptionInactive => true,
            Self::Bypass
            | Self::Subscribed
            | Self::SeatsExceeded { .. }
            | Self::Trial
            | Self::TrialGrace => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SubscriptionActive,
    TrialActive,
    TrialGrace,
    Bypass,
    NotAMember,
    TrialExpired,
    SubscriptionInactive,
    SeatsExceeded,
    ModelDenied,
    ProviderNotAllowed,
    FeatureNotInPlan,
    InsufficientCredits,
    /// Allowed: the instance is in its add-on trial.
    InstanceTrial,
    /// Allowed: the instance's month is paid.
    InstanceActive,
    InstanceNotFound,
    InstancesDisabled,
    InstanceSuspended,
    InstanceCanceled,
    /// Denied: the replica has not been able to follow changes for longer
    /// than allowed, and the feature fails closed.
    StateStale,
}

/// What is being asked for.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The user's role in the organization; `None` when not a member.
    pub role: Option<Role>,
    pub feature: &'a str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    /// Whether the request draws on credits (a model that is not free).
    pub needs_credits: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    pub access: Access,
    pub trial: TrialStatus,
}

impl Decision {
    pub fn credits_locked(&self) -> bool {
        self.access.locks_credits()
    }
}

impl OrgEntitlementState {
    pub fn trial(&self, now: DateTime<Utc>) -> TrialStatus {
        TrialStatus::at(self.org.trial_end, now)
    }

    pub fn counting_subscription(&self, now: DateTime<Utc>) -> Option<&Subscription> {
        subscription::current(&self.subscriptions, now).filter(|s| s.counts_at(now))
    }

    pub fn seat_usage(&self, now: DateTime<Utc>) -> SeatUsage {
        SeatUsage::evaluate(
            &self.org,
            self.counting_subscription(now),
            self.seats.used_at(now),
            now,
        )
    }

    pub fn access(&self, now: DateTime<Utc>) -> Access {
        if self.org.bypasses_billing() {
            return Access::Bypass;
        }
        if self.counting_subscription(now).is_some() {
            // The seat rule's own verdict, so the gate and the decision agree.
            let usage = self.seat_usage(now);
            return if usage.over_seats() {
                Access::SeatsExceeded {
                    used: usage.used,
                    paid: usage.paid,
                }
            } else {
                Access::Subscribed
            };
        }
        match self.trial(now).stage {
            TrialStage::Active
            | TrialStage::EndingSoon
            | TrialStage::EndingVerySoon
            | TrialStage::ExpiresToday => Access::Trial,
            TrialStage::SoftExpired => Access::TrialGrace,
            TrialStage::HardExpired if self.subscriptions.is_empty() => Access::TrialExpired,
            TrialStage::HardExpired => Access::SubscriptionInactive,
        }
    }

    pub fn decide(&self, plan: &Plan, request: &AccessRequest<'_>, now: DateTime<Utc>) -> Decision {
        let access = self.access(now);
        let verdict = |allowed, reason| Decision {
            allowed,
            reason,
            access,
            trial: self.trial(now),
        };
        if request.role.is_none() {
            return verdict(false, Reason::NotAMember);
        }
        if !plan.includes_feature(request.feature) {
            return verdict(false, Reason::FeatureNotInPlan);
        }
        let reason = match access {
            Access::Bypass => Reason::Bypass,
            Access::Subscribed => Reason::SubscriptionActive,
            Access::Trial => Reason::TrialActive,
            Access::TrialGrace => Reason::TrialGrace,
            Access::SeatsExceeded { .. } => return verdict(false, Reason::SeatsExceeded),
            Access::TrialExpired => return verdict(false, Reason::TrialExpired),
            Access::SubscriptionInactive => return verdict(false, Reason::SubscriptionInactive),
        };
        if request.feature == PROXY_FEATURE && plan.enforces_model_restrictions {
            let restrictions = &self.org.restrictions;
            if request.model.is_some_and(|m| restrictions.denies_model(m)) {
                return verdict(false, Reason::ModelDenied);
            }
            if !restrictions.allows_provider(request.provider) {
                return verdict(false, Reason::ProviderNotAllowed);
            }
        }
        if request.needs_credits && !self.credits.positive_at(now) {
            return verdict(false, Reason::InsufficientCredits);
        }
        verdict(true, reason)
    }

    /// May this member use this add-on instance now? `instance` is the
    /// instance's live subscription in this organization, if any.
    pub fn decide_instance(
        &self,
        role: Option<Role>,
        instance: Option<&InstanceSubscription>,
        now: DateTime<Utc>,
    ) -> Decision {
        let access = self.access(now);
        let verdict = |allowed, reason| Decision {
            allowed,
            reason,
            access,
            trial: self.trial(now),
        };
        if role.is_none() {
            return verdict(false, Reason::NotAMember);
        }
        let Some(instance) = instance else {
            return verdict(false, Reason::InstanceNotFound);
        };
        if self.org.instances_opted_out {
            return verdict(false, Reason::InstancesDisabled);
        }
        match access {
            Access::Bypass | Access::Subscribed | Access::Trial | Access::TrialGrace => {}
            Access::SeatsExceeded { .. } => return verdict(false, Reason::SeatsExceeded),
            Access::TrialExpired => return verdict(false, Reason::TrialExpired),
            Access::SubscriptionInactive => return verdict(false, Reason::SubscriptionInactive),
        }
        match instance.status_at(now) {
            InstanceStatus::Trialing => verdict(true, Reason::InstanceTrial),
            InstanceStatus::Active => verdict(true, Reason::InstanceActive),
            InstanceStatus::Suspended => verdict(false, Reason::InstanceSuspended),
            InstanceStatus::Canceled => verdict(false, Reason::InstanceCanceled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Catalog;
    use crate::domain::organization::ModelRestrictions;
    use crate::domain::pricing::PlanId;
    use crate::domain::test_fixtures::{self, organization};
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn days(n: i64) -> TimeDelta {
        TimeDelta::days(n) + TimeDelta::hours(12)
    }

    fn state(trial_days_remaining: i64) -> OrgEntitlementState {
        let mut org = organization(now() + days(trial_days_remaining));
        org.restrictions =
            ModelRestrictions::parse(&["gpt-4o".into()], &["anthropic".into()]).unwrap();
        OrgEntitlementState {
            org,
            subscriptions: vec![],
            seats: SeatHolders {
                members: 2,
                invitations_expiring: vec![],
            },
            credits: CreditHorizon::Never,
        }
    }

    fn subscription(status: &str, seats: i64) -> Subscription {
        test_fixtures::subscription(status, seats, now() - TimeDelta::days(40))
    }

    fn plan(id: &str) -> Plan {
        let catalog = Catalog::from_toml(Catalog::DEFAULT_TOML).unwrap();
        catalog.plan(&PlanId::new(id)).unwrap().clone()
    }

    fn proxy(role: Option<Role>) -> AccessRequest<'static> {
        AccessRequest {
            role,
            feature: PROXY_FEATURE,
            model: Some("gpt-4o"),
            provider: Some("openai"),
            needs_credits: false,
        }
    }

    const MEMBER: Option<Role> = Some(Role::Member);

    #[test]
    fn decision_table() {
        let teams = plan("teams");
        let with_sub = |trial: i64, status: &str, seats: i64| {
            let mut s = state(trial);
            s.subscriptions.push(subscription(status, seats));
            s
        };
        let bypassed = {
            let mut s = state(-100);
            s.org.require_seats = false;
            s
        };
        let sponsored = {
            let mut s = state(-100);
            s.org.sponsorship_tier = Some("open-source".into());
            s
        };
        let ended = {
            let mut s = with_sub(-100, "active", 5);
            s.subscriptions[0].ended_at = Some(now() - TimeDelta::seconds(1));
            s
        };
        // (case, state, role, allowed, reason, credits locked)
        let table = [
            (
                "not a member",
                state(20),
                None,
                false,
                Reason::NotAMember,
                false,
            ),
            (
                "trial active",
                state(20),
                MEMBER,
                true,
                Reason::TrialActive,
                false,
            ),
            (
                "trial ending today",
                state(0),
                MEMBER,
                true,
                Reason::TrialActive,
                false,
            ),
            (
                "soft expired",
                state(-3),
                MEMBER,
                true,
                Reason::TrialGrace,
                false,
            ),
            (
                "hard expired",
                state(-4),
                MEMBER,
                false,
                Reason::TrialExpired,
                true,
            ),
            ("bypass", bypassed, MEMBER, true, Reason::Bypass, false),
            ("sponsored", sponsored, MEMBER, true, Reason::Bypass, false),
            (
                "active",
                with_sub(-100, "active", 5),
                MEMBER,
                true,
                Reason::SubscriptionActive,
                false,
            ),
            (
                "trialing",
                with_sub(-100, "trialing", 5),
                MEMBER,
                true,
                Reason::SubscriptionActive,
                false,
            ),
            (
                "past due",
                with_sub(-100, "past_due", 5),
                MEMBER,
                true,
                Reason::SubscriptionActive,
                false,
            ),
            (
                "unpaid",
                with_sub(-100, "unpaid", 5),
                MEMBER,
                false,
                Reason::SubscriptionInactive,
                true,
            ),
            (
                "canceled",
                with_sub(-100, "canceled", 5),
                MEMBER,
                false,
                Reason::SubscriptionInactive,
                true,
            ),
            (
                "incomplete",
                with_sub(-100, "incomplete", 5),
                MEMBER,
                false,
                Reason::SubscriptionInactive,
                true,
            ),
            (
                "incomplete expired",
                with_sub(-100, "incomplete_expired", 5),
                MEMBER,
                false,
                Reason::SubscriptionInactive,
                true,
            ),
            (
                "paused",
                with_sub(-100, "paused", 5),
                MEMBER,
                false,
                Reason::SubscriptionInactive,
                true,
            ),
            (
                "canceled within trial",
                with_sub(10, "canceled", 5),
                MEMBER,
                true,
                Reason::TrialActive,
                false,
            ),
            (
                "ended",
                ended,
                MEMBER,
                false,
                Reason::SubscriptionInactive,
                true,
            ),
            (
                "over seats",
                with_sub(-100, "active", 1),
                MEMBER,
                false,
                Reason::SeatsExceeded,
                false,
            ),
            (
                "over seats while the trial still runs",
                with_sub(10, "active", 1),
                MEMBER,
                false,
                Reason::SeatsExceeded,
                false,
            ),
            (
                "exactly full",
                with_sub(-100, "active", 2),
                MEMBER,
                true,
                Reason::SubscriptionActive,
                false,
            ),
        ];
        for (case, state, role, allowed, reason, locked) in table {
            let decision = state.decide(&teams, &proxy(role), now());
            assert_eq!(decision.allowed, allowed, "{case}");
            assert_eq!(decision.reason, reason, "{case}");
            assert_eq!(decision.credits_locked(), locked, "{case}");
        }
    }

    #[test]
    fn enterprise_enforces_model_restrictions_and_teams_do_not() {
        let enterprise = plan("enterprise");
        let teams = plan("teams");
        let s = state(20);
        let denied_model = proxy(MEMBER);
        let allowed_model = AccessRequest {
            model: Some("claude-sonnet"),
            provider: Some("anthropic"),
            ..denied_model
        };
        let other_provider = AccessRequest {
            provider: Some("openai"),
            ..allowed_model
        };
        let unnamed_provider = AccessRequest {
            provider: None,
            ..allowed_model
        };
        let check = |plan: &Plan, request: &AccessRequest<'_>| {
            let d = s.decide(plan, request, now());
            (d.allowed, d.reason)
        };
        assert_eq!(
            check(&enterprise, &denied_model),
            (false, Reason::ModelDenied)
        );
        assert_eq!(
            check(&enterprise, &other_provider),
            (false, Reason::ProviderNotAllowed)
        );
        assert_eq!(
            check(&enterprise, &unnamed_provider),
            (false, Reason::ProviderNotAllowed)
        );
        assert_eq!(
            check(&enterprise, &allowed_model),
            (true, Reason::TrialActive)
        );
        assert_eq!(check(&teams, &denied_model), (true, Reason::TrialActive));
    }

    #[test]
    fn access_denial_takes_precedence_over_model_restrictions() {
        let decision = state(-10).decide(&plan("enterprise"), &proxy(MEMBER), now());
        assert_eq!(decision.reason, Reason::TrialExpired);
    }

    #[test]
    fn features_outside_the_plan_are_denied() {
        let request = AccessRequest {
            feature: "audit_log_export",
            ..proxy(MEMBER)
        };
        let teams = state(20).decide(&plan("teams"), &request, now());
        assert_eq!(
            (teams.allowed, teams.reason),
            (false, Reason::FeatureNotInPlan)
        );
        let enterprise = state(20).decide(&plan("enterprise"), &request, now());
        assert!(enterprise.allowed);
    }

    fn with_credits(mut s: OrgEntitlementState) -> OrgEntitlementState {
        s.credits = CreditHorizon::Always;
        s
    }

    #[test]
    fn a_stale_state_fails_closed_only_for_listed_features_and_only_after_the_limit() {
        let policy = StalePolicy {
            max_staleness: TimeDelta::seconds(30),
            fail_closed_features: vec!["instance".into()],
        };
        let allowed = state(20).decide(&plan("teams"), &proxy(MEMBER), now());
        let since = |secs| Some(now() - TimeDelta::seconds(secs));
        let reason =
            |feature, stale_since| policy.apply(allowed, feature, stale_since, now()).reason;
        assert_eq!(reason("instance", None), Reason::TrialActive);
        assert_eq!(reason("instance", since(30)), Reason::TrialActive);
        assert_eq!(reason("instance", since(31)), Reason::StateStale);
        assert_eq!(reason("proxy", since(3600)), Reason::TrialActive);
    }

    #[test]
    fn paid_models_need_a_positive_balance_and_free_models_do_not() {
        let teams = plan("teams");
        let paid = AccessRequest {
            needs_credits: true,
            ..proxy(MEMBER)
        };
        let free = proxy(MEMBER);
        let broke = state(20);
        let funded = with_credits(state(20));
        let ran_out = OrgEntitlementState {
            credits: CreditHorizon::Until(now()),
            ..state(20)
        };
        let locked = with_credits(state(-10));
        let check = |s: &OrgEntitlementState, r: &AccessRequest<'_>| {
            let d = s.decide(&teams, r, now());
            (d.allowed, d.reason)
        };
        assert_eq!(check(&broke, &paid), (false, Reason::InsufficientCredits));
        assert_eq!(check(&broke, &free), (true, Reason::TrialActive));
        assert_eq!(check(&funded, &paid), (true, Reason::TrialActive));
        assert_eq!(check(&ran_out, &paid), (false, Reason::InsufficientCredits));
        // Locked credits deny on access first, whatever the balance.
        assert_eq!(check(&locked, &paid), (false, Reason::TrialExpired));
    }

    #[test]
    fn instances_answer_membership_then_opt_out_then_org_access_then_their_own_state() {
        use crate::domain::credits::Micros;
        use crate::domain::ids::InstanceId;
        use crate::domain::ids::{OrgId, UserId};
        use crate::domain::instances::{InstanceStatus, InstanceSubscription};
        let instance = |status| InstanceSubscription {
            org_id: OrgId::generate(),
            instance_id: InstanceId::parse("agent-1").unwrap(),
            user_id: UserId::parse("bob").unwrap(),
            add_on: "agent".into(),
            status,
            price: Micros::from_minor(2000),
            trial_end: None,
            current_period_start: now() - TimeDelta::days(1),
            current_period_end: now() + TimeDelta::days(29),
            cancel_at_period_end: false,
            canceled_at: None,
            created_at: now() - TimeDelta::days(1),
        };
        let active = instance(InstanceStatus::Active);
        let opted_out = {
            let mut s = state(20);
            s.org.instances_opted_out = true;
            s
        };
        // (case, state, role, instance, reason, allowed)
        let table = [
            (
                "outsider",
                state(20),
                None,
                Some(&active),
                Reason::NotAMember,
                false,
            ),
            (
                "unknown",
                state(20),
                MEMBER,
                None,
                Reason::InstanceNotFound,
                false,
            ),
            (
                "opted out",
                opted_out,
                MEMBER,
                Some(&active),
                Reason::InstancesDisabled,
                false,
            ),
            (
                "org expired",
                state(-10),
                MEMBER,
                Some(&active),
                Reason::TrialExpired,
                false,
            ),
            (
                "active",
                state(20),
                MEMBER,
                Some(&active),
                Reason::InstanceActive,
                true,
            ),
        ];
        for (case, s, role, instance, reason, allowed) in table {
            let d = s.decide_instance(role, instance, now());
            assert_eq!((d.allowed, d.reason), (allowed, reason), "{case}");
        }
        for (status, reason, allowed) in [
            (InstanceStatus::Trialing, Reason::InstanceTrial, true),
            (InstanceStatus::Suspended, Reason::InstanceSuspended, false),
            (InstanceStatus::Canceled, Reason::InstanceCanceled, false),
        ] {
            let d = state(20).decide_instance(MEMBER, Some(&instance(status)), now());
            assert_eq!((d.allowed, d.reason), (allowed, reason), "{status:?}");
        }
    }
}
