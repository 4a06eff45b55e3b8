//! Each event's data as its `billing.v1` message.

use crate::domain::credits::CreditEntry;
use crate::domain::ids::ERASED;
use crate::domain::instances::InstanceSubscription;
use crate::domain::lifecycle::{CycleChange, LifecycleEvent, SeatCounts};
use crate::domain::subscription::Subscription;
use crate::proto::billing_event::Data;
use crate::proto::values::{
    billing_cycle, money, optional_timestamp, role, timestamp, trial_stage,
};
use crate::proto::{self, TrialStage};

pub(super) fn to_proto(event: &LifecycleEvent) -> Data {
    match event {
        LifecycleEvent::OrganizationCreated {
            name,
            plan,
            created_by,
            trial_end,
        } => Data::OrganizationCreated(proto::OrganizationCreated {
            name: name.clone(),
            plan: plan.as_str().to_owned(),
            created_by_user_id: created_by
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
            trial_end: Some(timestamp(*trial_end)),
        }),
        LifecycleEvent::TrialStageChanged {
            stage,
            previous,
            days_remaining,
            trial_end,
            messaging_suppressed,
        } => Data::TrialStageChanged(proto::TrialStageChanged {
            stage: trial_stage(*stage).into(),
            previous_stage: previous.map_or(TrialStage::Unspecified, trial_stage).into(),
            days_remaining: *days_remaining,
            trial_end: Some(timestamp(*trial_end)),
            messaging_suppressed: *messaging_suppressed,
        }),
        LifecycleEvent::SubscriptionActivated(s) => {
            Data::SubscriptionActivated(subscription_changed(s))
        }
        LifecycleEvent::SubscriptionUpdated {
            subscription,
            previous,
            changed,
        } => Data::SubscriptionUpdated(proto::SubscriptionUpdated {
            subscription: Some(subscription_state(subscription)),
            previous: Some(subscription_state(previous)),
            changed_fields: changed.iter().map(|f| f.as_str().to_owned()).collect(),
        }),
        LifecycleEvent::SubscriptionCancellationScheduled(s) => {
            Data::SubscriptionCancellationScheduled(subscription_changed(s))
        }
        LifecycleEvent::SubscriptionCancellationWithdrawn(s) => {
            Data::SubscriptionCancellationWithdrawn(subscription_changed(s))
        }
        LifecycleEvent::SubscriptionEnded(s) => Data::SubscriptionEnded(subscription_changed(s)),
        LifecycleEvent::PaymentFailed {
            subscription,
            previous_status,
        } => Data::PaymentFailed(payment(subscription, previous_status)),
        LifecycleEvent::PaymentRecovered {
            subscription,
            previous_status,
        } => Data::PaymentRecovered(payment(subscription, previous_status)),
        LifecycleEvent::BillingCycleChangeScheduled(c) => {
            Data::BillingCycleChangeScheduled(cycle_change(c))
        }
        LifecycleEvent::BillingCycleChangeApplied(c) => {
            Data::BillingCycleChangeApplied(cycle_change(c))
        }
        LifecycleEvent::BillingCycleChangeCanceled(c) => {
            Data::BillingCycleChangeCanceled(cycle_change(c))
        }
        LifecycleEvent::SeatsExceeded(counts) => Data::SeatsExceeded(seat_limit(*counts)),
        LifecycleEvent::SeatsWithinLimit(counts) => Data::SeatsWithinLimit(seat_limit(*counts)),
        LifecycleEvent::MemberInvited(invitation) => Data::MemberInvited(proto::MemberInvited {
            invitation_id: invitation.id.to_string(),
            email: invitation.email.as_str().to_owned(),
            role: role(invitation.role).into(),
            invited_by: invitation.invited_by.clone(),
            expires_at: Some(timestamp(invitation.expires_at)),
        }),
        LifecycleEvent::MemberJoined {
            user,
            role: joined_as,
            invitation,
        } => Data::MemberJoined(proto::MemberJoined {
            user_id: user.as_str().to_owned(),
            role: role(*joined_as).into(),
            invitation_id: invitation.to_string(),
        }),
        LifecycleEvent::MemberRemoved {
            user,
            previous_role,
            removed_by,
        } => Data::MemberRemoved(proto::MemberRemoved {
            user_id: user
                .as_ref()
                .map_or_else(|| ERASED.to_owned(), |u| u.as_str().to_owned()),
            previous_role: role(*previous_role).into(),
            removed_by: removed_by.clone(),
        }),
        LifecycleEvent::CreditsPurchased(entry) => Data::CreditsPurchased(credits_added(entry)),
        LifecycleEvent::CreditsGranted(entry) => Data::CreditsGranted(credits_added(entry)),
        LifecycleEvent::CreditsLow { balance, threshold } => Data::CreditsLow(proto::CreditsLow {
            balance_micros: *balance,
            threshold_micros: *threshold,
        }),
        LifecycleEvent::CreditsExhausted { balance } => {
            Data::CreditsExhausted(proto::CreditsExhausted {
                balance_micros: *balance,
            })
        }
        LifecycleEvent::InstanceTrialStarted(i) => Data::InstanceTrialStarted(instance(i)),
        LifecycleEvent::InstanceActivated(i) => Data::InstanceActivated(instance(i)),
        LifecycleEvent::InstanceSuspended(i) => Data::InstanceSuspended(instance(i)),
        LifecycleEvent::InstanceResumed(i) => Data::InstanceResumed(instance(i)),
        LifecycleEvent::InstanceCanceled(i) => Data::InstanceCanceled(instance(i)),
        LifecycleEvent::WebhookEndpointPaused {
            endpoint_id,
            origin,
            failing_since,
            last_error,
        } => Data::WebhookEndpointPaused(proto::WebhookEndpointPaused {
            endpoint_id: endpoint_id.to_string(),
            origin: origin.clone(),
            failing_since: Some(timestamp(*failing_since)),
            last_error: last_error.clone(),
        }),
    }
}

fn subscription_state(s: &Subscription) -> proto::SubscriptionState {
    proto::SubscriptionState {
        stripe_subscription_id: s.stripe_subscription_id.clone(),
        status: s.status_raw.clone(),
        plan: s.plan.as_str().to_owned(),
        billing_cycle: s
            .billing_cycle
            .map_or(proto::BillingCycle::Unspecified, billing_cycle)
            .into(),
        paid_seats: s.paid_seats,
        cancel_at_period_end: s.cancel_at_period_end,
        current_period_end: optional_timestamp(s.current_period_end),
        ended_at: optional_timestamp(s.ended_at),
        scheduled_seats: s.pending_seat_decrease.as_ref().map_or(0, |p| p.seats),
        scheduled_billing_cycle: s
            .pending_cycle_change
            .as_ref()
            .map_or(proto::BillingCycle::Unspecified, |p| billing_cycle(p.cycle))
            .into(),
        purchaser_user_id: s.purchaser.clone().unwrap_or_default(),
    }
}

fn subscription_changed(s: &Subscription) -> proto::SubscriptionChanged {
    proto::SubscriptionChanged {
        subscription: Some(subscription_state(s)),
    }
}

fn payment(s: &Subscription, previous_status: &str) -> proto::PaymentStatusChanged {
    proto::PaymentStatusChanged {
        subscription: Some(subscription_state(s)),
        previous_status: previous_status.to_owned(),
    }
}

fn cycle_change(change: &CycleChange) -> proto::BillingCycleChange {
    proto::BillingCycleChange {
        stripe_subscription_id: change.stripe_subscription_id.clone(),
        from_billing_cycle: change
            .from
            .map_or(proto::BillingCycle::Unspecified, billing_cycle)
            .into(),
        to_billing_cycle: billing_cycle(change.to).into(),
        effective_at: Some(timestamp(change.effective_at)),
        next_payment: change.next_payment.as_ref().map(money),
    }
}

fn seat_limit(counts: SeatCounts) -> proto::SeatLimit {
    proto::SeatLimit {
        seats_used: counts.used,
        seats_paid: counts.paid,
    }
}

fn credits_added(entry: &CreditEntry) -> proto::CreditsAdded {
    proto::CreditsAdded {
        entry_id: entry.id.to_string(),
        amount_micros: entry.amount,
        balance_after_micros: entry.balance_after.0,
        expires_at: optional_timestamp(entry.details.expires_at),
        reason: entry.details.reason.clone().unwrap_or_default(),
    }
}

fn instance(i: &InstanceSubscription) -> proto::InstanceChanged {
    proto::InstanceChanged {
        instance_id: i.instance_id.as_str().to_owned(),
        add_on: i.add_on.clone(),
        user_id: i.user_id.as_str().to_owned(),
        status: i.status.as_str().to_owned(),
        trial_end: optional_timestamp(i.trial_end),
        current_period_end: Some(timestamp(i.current_period_end)),
        price_micros: i.price.get(),
    }
}
