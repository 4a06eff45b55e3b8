//! Lifecycle events: what happened to an organization's billing, as the
//! product around this service learns it (webhooks, the event stream).
//!
//! An event is recorded by the change it reports, in that change's own
//! transaction. Which events a change produces is decided here, by pure
//! functions of the state before and after it:
//! - [`subscription`]: a reading of a Stripe subscription against the copy
//!   we held (activated, updated, payment failed or recovered, ...);
//! - [`alerts`]: being over seats, and the credit balance crossing its
//!   low-balance threshold or zero, each once per crossing;
//! - the trial's stages, from the clock (`trial::TrialNotices`).
//!
//! Events name people by user id or email (never card data or secrets);
//! [`LifecycleEvent::names`] lists them so an erasure can find them.

pub mod alerts;
pub mod subscription;

use chrono::{DateTime, Utc};

use super::credits::CreditEntry;
use super::ids::{InvitationId, OrgId, UserId};
use super::instances::{InstanceStatus, InstanceSubscription};
use super::membership::Invitation;
use super::pricing::{BillingCycle, PlanId};
use super::role::Role;
use super::subscription::Subscription;
use super::trial::TrialStage;
use super::{InvalidValue, quoted};

/// The version of the published event schema (`BillingEvent.schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// Every event type, by its published name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    OrganizationCreated,
    TrialStageChanged,
    SubscriptionActivated,
    SubscriptionUpdated,
    SubscriptionCancellationScheduled,
    SubscriptionCancellationWithdrawn,
    SubscriptionEnded,
    PaymentFailed,
    PaymentRecovered,
    BillingCycleChangeScheduled,
    BillingCycleChangeApplied,
    BillingCycleChangeCanceled,
    SeatsExceeded,
    SeatsWithinLimit,
    MemberInvited,
    MemberJoined,
    MemberRemoved,
    CreditsPurchased,
    CreditsGranted,
    CreditsLow,
    CreditsExhausted,
    InstanceTrialStarted,
    InstanceActivated,
    InstanceSuspended,
    InstanceResumed,
    InstanceCanceled,
    WebhookEndpointPaused,
}

impl EventType {
    pub const ALL: [Self; 27] = [
        Self::OrganizationCreated,
        Self::TrialStageChanged,
        Self::SubscriptionActivated,
        Self::SubscriptionUpdated,
        Self::SubscriptionCancellationScheduled,
        Self::SubscriptionCancellationWithdrawn,
        Self::SubscriptionEnded,
        Self::PaymentFailed,
        Self::PaymentRecovered,
        Self::BillingCycleChangeScheduled,
        Self::BillingCycleChangeApplied,
        Self::BillingCycleChangeCanceled,
        Self::SeatsExceeded,
        Self::SeatsWithinLimit,
        Self::MemberInvited,
        Self::MemberJoined,
        Self::MemberRemoved,
        Self::CreditsPurchased,
        Self::CreditsGranted,
        Self::CreditsLow,
        Self::CreditsExhausted,
        Self::InstanceTrialStarted,
        Self::InstanceActivated,
        Self::InstanceSuspended,
        Self::InstanceResumed,
        Self::InstanceCanceled,
        Self::WebhookEndpointPaused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrganizationCreated => "organization.created",
            Self::TrialStageChanged => "trial.stage_changed",
            Self::SubscriptionActivated => "subscription.activated",
            Self::SubscriptionUpdated => "subscription.updated",
            Self::SubscriptionCancellationScheduled => "subscription.cancellation_scheduled",
            Self::SubscriptionCancellationWithdrawn => "subscription.cancellation_withdrawn",
            Self::SubscriptionEnded => "subscription.ended",
            Self::PaymentFailed => "payment.failed",
            Self::PaymentRecovered => "payment.recovered",
            Self::BillingCycleChangeScheduled => "billing_cycle.change_scheduled",
            Self::BillingCycleChangeApplied => "billing_cycle.change_applied",
            Self::BillingCycleChangeCanceled => "billing_cycle.change_canceled",
            Self::SeatsExceeded => "seats.exceeded",
            Self::SeatsWithinLimit => "seats.within_limit",
            Self::MemberInvited => "member.invited",
            Self::MemberJoined => "member.joined",
            Self::MemberRemoved => "member.removed",
            Self::CreditsPurchased => "credits.purchased",
            Self::CreditsGranted => "credits.granted",
            Self::CreditsLow => "credits.low",
            Self::CreditsExhausted => "credits.exhausted",
            Self::InstanceTrialStarted => "instance.trial_started",
            Self::InstanceActivated => "instance.activated",
            Self::InstanceSuspended => "instance.suspended",
            Self::InstanceResumed => "instance.resumed",
            Self::InstanceCanceled => "instance.canceled",
            Self::WebhookEndpointPaused => "webhook_endpoint.paused",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| InvalidValue::new(format!("{} is not an event type", quoted(raw))))
    }

    /// Parses a filter list: each type once, in a stable order.
    pub fn parse_list(raw: &[String]) -> Result<Vec<Self>, InvalidValue> {
        let mut types = raw
            .iter()
            .map(|t| Self::parse(t.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        types.sort_unstable();
        types.dedup();
        Ok(types)
    }
}

/// A subscription field whose change `subscription.updated` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionField {
    Status,
    Plan,
    BillingCycle,
    PaidSeats,
    ScheduledSeats,
}

impl SubscriptionField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Plan => "plan",
            Self::BillingCycle => "billing_cycle",
            Self::PaidSeats => "paid_seats",
            Self::ScheduledSeats => "scheduled_seats",
        }
    }
}

/// A billing-cycle change of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleChange {
    pub stripe_subscription_id: String,
    pub from: Option<BillingCycle>,
    pub to: BillingCycle,
    pub effective_at: DateTime<Utc>,
    pub next_payment: Option<super::money::Money>,
}

/// Seats in use against seats paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatCounts {
    pub used: i64,
    pub paid: i64,
}

/// One event's type and data.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleEvent {
    OrganizationCreated {
        name: String,
        plan: PlanId,
        created_by: Option<UserId>,
        trial_end: DateTime<Utc>,
    },
    TrialStageChanged {
        stage: TrialStage,
        previous: Option<TrialStage>,
        days_remaining: i64,
        trial_end: DateTime<Utc>,
        messaging_suppressed: bool,
    },
    SubscriptionActivated(Subscription),
    SubscriptionUpdated {
        subscription: Subscription,
        previous: Box<Subscription>,
        changed: Vec<SubscriptionField>,
    },
    SubscriptionCancellationScheduled(Subscription),
    SubscriptionCancellationWithdrawn(Subscription),
    SubscriptionEnded(Subscription),
    PaymentFailed {
        subscription: Subscription,
        previous_status: String,
    },
    PaymentRecovered {
        subscription: Subscription,
        previous_status: String,
    },
    BillingCycleChangeScheduled(CycleChange),
    BillingCycleChangeApplied(CycleChange),
    BillingCycleChangeCanceled(CycleChange),
    SeatsExceeded(SeatCounts),
    SeatsWithinLimit(SeatCounts),
    MemberInvited(Invitation),
    MemberJoined {
        user: UserId,
        role: Role,
        invitation: InvitationId,
    },
    MemberRemoved {
        /// `None` when the user's data was erased.
        user: Option<UserId>,
        previous_role: Role,
        removed_by: String,
    },
    CreditsPurchased(CreditEntry),
    CreditsGranted(CreditEntry),
    CreditsLow {
        balance: i64,
        threshold: i64,
    },
    CreditsExhausted {
        balance: i64,
    },
    InstanceTrialStarted(InstanceSubscription),
    InstanceActivated(InstanceSubscription),
    InstanceSuspended(InstanceSubscription),
    InstanceResumed(InstanceSubscription),
    InstanceCanceled(InstanceSubscription),
    WebhookEndpointPaused {
        endpoint_id: uuid::Uuid,
        /// Scheme, host and port: never the path or query.
        origin: String,
        failing_since: DateTime<Utc>,
        last_error: String,
    },
}

impl LifecycleEvent {
    pub fn event_type(&self) -> EventType {
        match self {
            Self::OrganizationCreated { .. } => EventType::OrganizationCreated,
            Self::TrialStageChanged { .. } => EventType::TrialStageChanged,
            Self::SubscriptionActivated(_) => EventType::SubscriptionActivated,
            Self::SubscriptionUpdated { .. } => EventType::SubscriptionUpdated,
            Self::SubscriptionCancellationScheduled(_) => {
                EventType::SubscriptionCancellationScheduled
            }
            Self::SubscriptionCancellationWithdrawn(_) => {
                EventType::SubscriptionCancellationWithdrawn
            }
            Self::SubscriptionEnded(_) => EventType::SubscriptionEnded,
            Self::PaymentFailed { .. } => EventType::PaymentFailed,
            Self::PaymentRecovered { .. } => EventType::PaymentRecovered,
            Self::BillingCycleChangeScheduled(_) => EventType::BillingCycleChangeScheduled,
            Self::BillingCycleChangeApplied(_) => EventType::BillingCycleChangeApplied,
            Self::BillingCycleChangeCanceled(_) => EventType::BillingCycleChangeCanceled,
            Self::SeatsExceeded(_) => EventType::SeatsExceeded,
            Self::SeatsWithinLimit(_) => EventType::SeatsWithinLimit,
            Self::MemberInvited(_) => EventType::MemberInvited,
            Self::MemberJoined { .. } => EventType::MemberJoined,
            Self::MemberRemoved { .. } => EventType::MemberRemoved,
            Self::CreditsPurchased(_) => EventType::CreditsPurchased,
            Self::CreditsGranted(_) => EventType::CreditsGranted,
            Self::CreditsLow { .. } => EventType::CreditsLow,
            Self::CreditsExhausted { .. } => EventType::CreditsExhausted,
            Self::InstanceTrialStarted(_) => EventType::InstanceTrialStarted,
            Self::InstanceActivated(_) => EventType::InstanceActivated,
            Self::InstanceSuspended(_) => EventType::InstanceSuspended,
            Self::InstanceResumed(_) => EventType::InstanceResumed,
            Self::InstanceCanceled(_) => EventType::InstanceCanceled,
            Self::WebhookEndpointPaused { .. } => EventType::WebhookEndpointPaused,
        }
    }

    /// The user ids and email addresses the event names, so an erasure of
    /// one of them can find the event.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::OrganizationCreated { created_by, .. } => {
                created_by.iter().map(|u| u.as_str().to_owned()).collect()
            }
            Self::SubscriptionActivated(s)
            | Self::SubscriptionCancellationScheduled(s)
            | Self::SubscriptionCancellationWithdrawn(s)
            | Self::SubscriptionEnded(s)
            | Self::SubscriptionUpdated {
                subscription: s, ..
            }
            | Self::PaymentFailed {
                subscription: s, ..
            }
            | Self::PaymentRecovered {
                subscription: s, ..
            } => s.purchaser.iter().cloned().collect(),
            Self::MemberInvited(invitation) => vec![
                invitation.email.as_str().to_owned(),
                invitation.invited_by.clone(),
            ],
            Self::MemberJoined { user, .. } => vec![user.as_str().to_owned()],
            Self::MemberRemoved {
                user, removed_by, ..
            } => user
                .iter()
                .map(|u| u.as_str().to_owned())
                .chain([removed_by.clone()])
                .collect(),
            Self::InstanceTrialStarted(i)
            | Self::InstanceActivated(i)
            | Self::InstanceSuspended(i)
            | Self::InstanceResumed(i)
            | Self::InstanceCanceled(i) => vec![i.user_id.as_str().to_owned()],
            Self::TrialStageChanged { .. }
            | Self::BillingCycleChangeScheduled(_)
            | Self::BillingCycleChangeApplied(_)
            | Self::BillingCycleChangeCanceled(_)
            | Self::SeatsExceeded(_)
            | Self::SeatsWithinLimit(_)
            | Self::CreditsPurchased(_)
            | Self::CreditsGranted(_)
            | Self::CreditsLow { .. }
            | Self::CreditsExhausted { .. }
            | Self::WebhookEndpointPaused { .. } => Vec::new(),
        }
    }
}

/// The event an add-on instance's change of status announces: from `was`
/// (`None` for a new instance) to its status now. Renewing an active
/// instance, or changing nothing, announces nothing.
pub fn instance_event(
    was: Option<InstanceStatus>,
    instance: &InstanceSubscription,
) -> Option<LifecycleEvent> {
    use InstanceStatus::{Active, Canceled, Suspended, Trialing};
    let event = match (was, instance.status) {
        (None, Trialing) => LifecycleEvent::InstanceTrialStarted,
        (None | Some(Trialing), Active) => LifecycleEvent::InstanceActivated,
        (Some(Suspended), Active) => LifecycleEvent::InstanceResumed,
        (None | Some(Trialing | Active), Suspended) => LifecycleEvent::InstanceSuspended,
        (None | Some(Trialing | Active | Suspended), Canceled) => LifecycleEvent::InstanceCanceled,
        (Some(Trialing), Trialing)
        | (Some(Active), Active | Trialing)
        | (Some(Suspended), Suspended | Trialing)
        | (Some(Canceled), _) => return None,
    };
    Some(event(instance.clone()))
}

/// An event ready to be recorded: who it is about and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: uuid::Uuid,
    /// `None` only for events about the service itself.
    pub org: Option<OrgId>,
    pub occurred_at: DateTime<Utc>,
    pub event: LifecycleEvent,
}

impl NewEvent {
    /// A new event of `org` (a fresh UUIDv7, so ids follow creation order).
    pub fn of(org: Option<OrgId>, occurred_at: DateTime<Utc>, event: LifecycleEvent) -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            org,
            occurred_at,
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_parses_from_its_published_name() {
        for event_type in EventType::ALL {
            assert_eq!(EventType::parse(event_type.as_str()), Ok(event_type));
        }
        let names: std::collections::HashSet<_> =
            EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), EventType::ALL.len(), "names are unique");
    }

    #[test]
    fn each_change_of_an_instance_announces_its_event() {
        use InstanceStatus::*;
        let instance = |status| InstanceSubscription {
            org_id: OrgId::generate(),
            instance_id: crate::domain::ids::InstanceId::parse("agent-1").unwrap(),
            user_id: UserId::parse("bob").unwrap(),
            add_on: "agent".into(),
            status,
            price: crate::domain::credits::Micros::from_minor(2000),
            trial_end: None,
            current_period_start: DateTime::UNIX_EPOCH,
            current_period_end: DateTime::UNIX_EPOCH,
            cancel_at_period_end: false,
            canceled_at: None,
            created_at: DateTime::UNIX_EPOCH,
        };
        let table = [
            (None, Trialing, Some(EventType::InstanceTrialStarted)),
            (None, Active, Some(EventType::InstanceActivated)),
            (Some(Trialing), Active, Some(EventType::InstanceActivated)),
            (Some(Active), Active, None),
            (
                Some(Trialing),
                Suspended,
                Some(EventType::InstanceSuspended),
            ),
            (Some(Active), Suspended, Some(EventType::InstanceSuspended)),
            (Some(Suspended), Suspended, None),
            (Some(Suspended), Active, Some(EventType::InstanceResumed)),
            (Some(Active), Canceled, Some(EventType::InstanceCanceled)),
            (Some(Suspended), Canceled, Some(EventType::InstanceCanceled)),
            (Some(Canceled), Canceled, None),
        ];
        for (was, now, want) in table {
            let got = instance_event(was, &instance(now)).map(|e| e.event_type());
            assert_eq!(got, want, "{was:?} to {now:?}");
        }
    }

    #[test]
    fn the_readme_event_catalogue_lists_every_type() {
        let readme = include_str!("../../../README.md");
        for event_type in EventType::ALL {
            let row = format!("| `{}` |", event_type.as_str());
            assert!(readme.contains(&row), "README.md has no row for {row}");
        }
    }

    #[test]
    fn a_filter_list_is_parsed_once_per_type_and_refuses_unknown_names() {
        let raw = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            EventType::parse_list(&raw(&["member.joined", " credits.low ", "member.joined"])),
            Ok(vec![EventType::MemberJoined, EventType::CreditsLow])
        );
        assert_eq!(EventType::parse_list(&[]), Ok(vec![]));
        let refused = EventType::parse_list(&raw(&["member.joined", "member.exploded"]));
        assert_eq!(
            refused,
            Err(InvalidValue::new(
                "\"member.exploded\" is not an event type"
            ))
        );
    }
}
