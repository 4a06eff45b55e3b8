use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::domain::credits::{Balance, CreditEntry, CreditEntryKind, EntryDetails, Micros};
use crate::domain::ids::{CreditEntryId, EmailAddress, InstanceId, InvitationId, UserId};
use crate::domain::instances::{InstanceStatus, InstanceSubscription};
use crate::domain::lifecycle::{CycleChange, SeatCounts, SubscriptionField};
use crate::domain::membership::Invitation;
use crate::domain::money::{Currency, Money};
use crate::domain::pricing::{BillingCycle, PlanId};
use crate::domain::role::Role;
use crate::domain::test_fixtures;
use crate::domain::trial::TrialStage;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 123_000_000).unwrap()
}

/// One event of every type.
fn one_of_each() -> Vec<LifecycleEvent> {
    let sub = test_fixtures::subscription("active", 3, now());
    let org = OrgId::generate();
    let instance = InstanceSubscription {
        org_id: org,
        instance_id: InstanceId::parse("agent-1").unwrap(),
        user_id: UserId::parse("bob").unwrap(),
        add_on: "agent".into(),
        status: InstanceStatus::Trialing,
        price: Micros::from_minor(2000),
        trial_end: Some(now()),
        current_period_start: now(),
        current_period_end: now() + TimeDelta::days(7),
        cancel_at_period_end: false,
        canceled_at: None,
        created_at: now(),
    };
    let entry = CreditEntry {
        id: CreditEntryId::generate(),
        org_id: org,
        kind: CreditEntryKind::Grant,
        amount: 10_000_000,
        balance_after: Balance(12_000_000),
        details: EntryDetails {
            reason: Some("welcome".into()),
            ..EntryDetails::default()
        },
        occurred_at: now(),
    };
    let change = CycleChange {
        stripe_subscription_id: "sub_1".into(),
        from: Some(BillingCycle::Monthly),
        to: BillingCycle::Yearly,
        effective_at: now(),
        next_payment: Some(Money::new(54_000, Currency::parse("usd").unwrap())),
    };
    let seats = SeatCounts { used: 4, paid: 3 };
    vec![
        LifecycleEvent::OrganizationCreated {
            name: "Acme".into(),
            plan: PlanId::new("enterprise"),
            created_by: Some(UserId::parse("alice").unwrap()),
            trial_end: now(),
        },
        LifecycleEvent::TrialStageChanged {
            stage: TrialStage::EndingSoon,
            previous: None,
            days_remaining: 6,
            trial_end: now(),
            messaging_suppressed: false,
        },
        LifecycleEvent::SubscriptionActivated(sub.clone()),
        LifecycleEvent::SubscriptionUpdated {
            subscription: sub.clone(),
            previous: Box::new(sub.clone()),
            changed: vec![SubscriptionField::PaidSeats],
        },
        LifecycleEvent::SubscriptionCancellationScheduled(sub.clone()),
        LifecycleEvent::SubscriptionCancellationWithdrawn(sub.clone()),
        LifecycleEvent::SubscriptionEnded(sub.clone()),
        LifecycleEvent::PaymentFailed {
            subscription: sub.clone(),
            previous_status: "active".into(),
        },
        LifecycleEvent::PaymentRecovered {
            subscription: sub,
            previous_status: "past_due".into(),
        },
        LifecycleEvent::BillingCycleChangeScheduled(change.clone()),
        LifecycleEvent::BillingCycleChangeApplied(change.clone()),
        LifecycleEvent::BillingCycleChangeCanceled(change),
        LifecycleEvent::SeatsExceeded(seats),
        LifecycleEvent::SeatsWithinLimit(seats),
        LifecycleEvent::MemberInvited(Invitation {
            id: InvitationId::generate(),
            org_id: org,
            email: EmailAddress::parse("bob@example.com").unwrap(),
            role: Role::Member,
            invited_by: "user:alice".into(),
            created_at: now(),
            expires_at: now(),
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        }),
        LifecycleEvent::MemberJoined {
            user: UserId::parse("bob").unwrap(),
            role: Role::Member,
            invitation: InvitationId::generate(),
        },
        LifecycleEvent::MemberRemoved {
            user: None,
            previous_role: Role::Member,
            removed_by: "operator".into(),
        },
        LifecycleEvent::CreditsPurchased(entry.clone()),
        LifecycleEvent::CreditsGranted(entry),
        LifecycleEvent::CreditsLow {
            balance: 1,
            threshold: 5_000_000,
        },
        LifecycleEvent::CreditsExhausted { balance: -3 },
        LifecycleEvent::InstanceTrialStarted(instance.clone()),
        LifecycleEvent::InstanceActivated(instance.clone()),
        LifecycleEvent::InstanceSuspended(instance.clone()),
        LifecycleEvent::InstanceResumed(instance.clone()),
        LifecycleEvent::InstanceCanceled(instance),
        LifecycleEvent::WebhookEndpointPaused {
            endpoint_id: Uuid::now_v7(),
            origin: "https://hooks.example.com".into(),
            failing_since: now(),
            last_error: "HTTP 500".into(),
        },
    ]
}

fn published(event: &LifecycleEvent) -> PublishedEvent {
    PublishedEvent {
        id: Uuid::now_v7(),
        org_id: Some(OrgId::generate()),
        event_type: event.event_type().as_str().to_owned(),
        occurred_at: now(),
        state_version: 42,
        data: encode_data(event).unwrap(),
    }
}

#[test]
fn the_samples_cover_every_event_type() {
    let covered: Vec<EventType> = one_of_each()
        .iter()
        .map(LifecycleEvent::event_type)
        .collect();
    assert_eq!(covered, EventType::ALL.to_vec());
}

#[test]
fn every_event_type_has_its_data_member_and_survives_storage() {
    for event in one_of_each() {
        let stored = published(&event);
        let message = to_proto(&stored).unwrap();
        assert_eq!(
            message.data,
            Some(data::to_proto(&event)),
            "{}",
            stored.event_type
        );
        assert_eq!(message.r#type, stored.event_type);
        assert_eq!(message.state_version, 42);
        assert_eq!(message.schema_version, SCHEMA_VERSION);
    }
}

#[test]
fn the_webhook_body_is_the_canonical_json_of_the_event() {
    let event = &one_of_each()[14];
    let stored = published(event);
    let body: serde_json::Value = serde_json::from_slice(&to_json_body(&stored).unwrap()).unwrap();
    assert_eq!(body["id"], stored.id.to_string());
    assert_eq!(body["type"], "member.invited");
    assert_eq!(body["orgId"], stored.org_id.unwrap().to_string());
    assert_eq!(body["occurredAt"], "2027-01-15T08:00:00.123Z");
    // 64-bit integers are strings in proto3 JSON; 32-bit ones numbers.
    assert_eq!(body["stateVersion"], "42");
    assert_eq!(body["schemaVersion"], 1);
    let invited = &body["memberInvited"];
    assert_eq!(invited["email"], "bob@example.com");
    assert_eq!(invited["role"], "ROLE_MEMBER");
    assert_eq!(invited["invitedBy"], "user:alice");
    // Every scalar is present, defaults included.
    let exhausted = published(&LifecycleEvent::CreditsExhausted { balance: 0 });
    let body: serde_json::Value =
        serde_json::from_slice(&to_json_body(&exhausted).unwrap()).unwrap();
    assert_eq!(body["creditsExhausted"]["balanceMicros"], "0");
}

#[test]
fn stored_data_from_a_newer_schema_is_read_without_its_unknown_fields() {
    let mut stored = published(&LifecycleEvent::CreditsExhausted { balance: -5 });
    stored.data["someFutureField"] = serde_json::json!("x");
    let message = to_proto(&stored).unwrap();
    assert_eq!(
        message.data,
        Some(proto::billing_event::Data::CreditsExhausted(
            proto::CreditsExhausted { balance_micros: -5 }
        ))
    );
}
