use billing_service::grpc::proto::{EntitlementReason, Role, SeatGate};
use tonic::Code;

use crate::helpers::{As, expect_code, spawn_app, trial_end_in_days};

#[tokio::test]
async fn invitations_are_unlimited_during_the_trial_before_any_subscription() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    for n in 0..12 {
        app.invite(
            As::User("alice"),
            &org.id,
            &format!("user{n}@example.com"),
            Role::Member,
        )
        .await
        .expect("invite during trial");
    }
    let usage = app.seat_usage(&org.id).await;
    assert_eq!(usage.used_seats, 13);
    assert_eq!(usage.gate(), SeatGate::TrialUnlimited);
    assert!(usage.invite_allowed);
}

#[tokio::test]
async fn after_the_trial_an_invitation_beyond_paid_seats_is_refused_naming_both_numbers() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;
    app.put_subscription(&org.id, "active", 3).await;

    // alice + bob use 2 of 3: one more invitation fits.
    let usage = app.seat_usage(&org.id).await;
    assert_eq!((usage.used_seats, usage.paid_seats), (2, 3));
    assert_eq!(usage.gate(), SeatGate::SeatAvailable);
    app.invite(
        As::User("alice"),
        &org.id,
        "carol@example.com",
        Role::Member,
    )
    .await
    .expect("third seat");

    // The pending invitation takes the third seat.
    let usage = app.seat_usage(&org.id).await;
    assert_eq!(
        (usage.used_seats, usage.paid_seats, usage.invite_allowed),
        (3, 3, false)
    );
    assert_eq!(usage.gate(), SeatGate::SeatsFull);
    let refused = expect_code(
        app.invite(As::User("alice"), &org.id, "dave@example.com", Role::Member)
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("4 seats") && refused.message().contains("only 3"),
        "{}",
        refused.message()
    );

    // Billing managers take no seat, so they can still be invited.
    app.invite(
        As::User("alice"),
        &org.id,
        "finance@example.com",
        Role::BillingManager,
    )
    .await
    .expect("billing manager needs no seat");
    assert_eq!(app.seat_usage(&org.id).await.used_seats, 3);

    // Promoting a billing manager into a seat is gated the same way.
    app.add_member(&org.id, "frank", Role::BillingManager).await;
    let promote = app
        .update_role(As::User("alice"), &org.id, "frank", Role::Member)
        .await;
    expect_code(promote, Code::FailedPrecondition);
}

#[tokio::test]
async fn revoking_an_invitation_frees_its_seat() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;
    app.put_subscription(&org.id, "active", 2).await;
    let invitation = app
        .invite(As::User("alice"), &org.id, "bob@example.com", Role::Member)
        .await
        .expect("invite");
    expect_code(
        app.invite(
            As::User("alice"),
            &org.id,
            "carol@example.com",
            Role::Member,
        )
        .await,
        Code::FailedPrecondition,
    );
    app.org_admin()
        .revoke_invitation(crate::helpers::request(
            As::User("alice"),
            billing_service::grpc::proto::RevokeInvitationRequest {
                org_id: org.id.clone(),
                invitation_id: invitation.id,
            },
        ))
        .await
        .expect("revoke");
    app.invite(
        As::User("alice"),
        &org.id,
        "carol@example.com",
        Role::Member,
    )
    .await
    .expect("the freed seat is available");
}

#[tokio::test]
async fn members_are_denied_while_used_seats_exceed_paid_seats() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;
    app.put_subscription(&org.id, "active", 1).await;

    let decision = app.check(&org.id, "bob").await;
    assert!(!decision.allowed);
    assert_eq!(decision.reason(), EntitlementReason::SeatsExceeded);
    assert!(
        !decision.credits_locked,
        "being over seats does not lock credits"
    );

    // Switching seat requirements off (an operator override) bypasses seats.
    app.org_admin()
        .set_organization_overrides(crate::helpers::request(
            As::Ops,
            billing_service::grpc::proto::SetOrganizationOverridesRequest {
                org_id: org.id.clone(),
                require_seats: Some(false),
                ..Default::default()
            },
        ))
        .await
        .expect("override");
    let decision = app.check(&org.id, "bob").await;
    assert!(decision.allowed);
    assert_eq!(decision.reason(), EntitlementReason::Bypass);
}
