use billing_service::grpc::proto::{self, Role};
use tonic::Code;

use crate::helpers::{As, expect_code, request, spawn_app};

#[tokio::test]
async fn erasing_a_user_removes_their_memberships_and_invitations_and_anonymizes_records() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    let other = app.create_org("zoe").await;
    app.add_member(&org.id, "bob_1", Role::Member).await;
    app.add_member(&other.id, "bob_1", Role::BillingManager)
        .await;
    // bob invites someone in the other org, and is removed from the first.
    app.invite(
        As::User("bob_1"),
        &other.id,
        "friend@example.com",
        Role::Member,
    )
    .await
    .expect("bob invites");
    app.remove_member(As::User("alice"), &org.id, "bob_1")
        .await
        .expect("remove bob");
    // A pending invitation to bob's address in a third organization.
    let third = app.create_org("yan").await;
    app.invite(
        As::User("yan"),
        &third.id,
        "bob_1@example.com",
        Role::Member,
    )
    .await
    .expect("invite bob");
    // A user whose id contains bob's must be left alone.
    app.add_member(&org.id, "bob_10", Role::Member).await;

    let erase = |who| {
        request(
            who,
            proto::DeleteUserDataRequest {
                user_id: "bob_1".into(),
                emails: vec!["bob_1@example.com".into()],
            },
        )
    };
    expect_code(
        app.org_admin()
            .delete_user_data(erase(As::User("alice")))
            .await,
        Code::PermissionDenied,
    );
    let report = app
        .org_admin()
        .delete_user_data(erase(As::Ops))
        .await
        .expect("erase")
        .into_inner();
    assert_eq!(
        report.memberships_removed, 1,
        "only the other org still had bob"
    );
    assert_eq!(
        report.invitations_removed, 3,
        "two accepted by bob and one addressed to him"
    );
    assert_eq!(report.removal_records_anonymized, 1);
    assert!(report.audit_events_anonymized >= 5, "{report:?}");

    // Nothing in any organization still names bob.
    for id in [&org.id, &other.id, &third.id] {
        for event in app.audit_actions(id).await {
            let text = format!("{} {} {}", event.actor, event.before_json, event.after_json);
            assert!(
                !text.contains("\"bob_1\"")
                    && !text.contains("user:bob_1\"")
                    && !text.contains("bob_1@"),
                "{} still names bob: {text}",
                event.action
            );
        }
    }
    let records = app
        .org_admin()
        .list_removal_records(request(
            As::Ops,
            proto::ListRemovalRecordsRequest {
                org_id: org.id.clone(),
            },
        ))
        .await
        .expect("records")
        .into_inner()
        .records;
    assert_eq!(records.len(), 1);
    assert!(
        records[0].user_id.starts_with("erased-"),
        "{:?}",
        records[0]
    );

    let invitations = app
        .org_admin()
        .list_invitations(request(
            As::Ops,
            proto::ListInvitationsRequest {
                org_id: other.id.clone(),
                include_closed: true,
            },
        ))
        .await
        .expect("invitations")
        .into_inner()
        .invitations;
    assert_eq!(invitations.len(), 1, "friend's invitation stays");
    assert_eq!(invitations[0].invited_by, "[erased]");

    // bob_10 is untouched, and the erasure itself is on each former org's trail.
    assert!(app.check(&org.id, "bob_10").await.allowed);
    assert!(!app.check(&other.id, "bob_1").await.allowed);
    let latest = app.audit_actions(&other.id).await.remove(0);
    assert_eq!(
        (latest.action.as_str(), latest.actor.as_str()),
        ("user.erased", "operator")
    );
}

#[tokio::test]
async fn an_erased_buyer_is_forgotten_by_subscriptions_operations_and_sessions() {
    let (app, stripe) = crate::helpers::spawn_app_with_stripe().await;
    let org = app.create_org("alice").await.id;
    app.add_member(&org, "buyer_7", Role::BillingManager).await;
    app.subscribe(
        &stripe,
        &org,
        "buyer_7",
        "teams",
        proto::BillingCycle::Monthly,
        1,
    )
    .await;
    assert_eq!(
        app.subscription_of(&org, As::User("alice"))
            .await
            .purchaser_user_id,
        "buyer_7"
    );
    app.org_admin()
        .delete_user_data(request(
            As::Ops,
            proto::DeleteUserDataRequest {
                user_id: "buyer_7".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("erase");
    let overview = app.subscription_of(&org, As::User("alice")).await;
    assert_eq!(overview.purchaser_user_id, "");
    let mentions: i64 = sqlx::query_scalar(
        "select (select count(*) from billing_operations
                 where actor like '%buyer_7%' or request::text like '%buyer_7%')
              + (select count(*) from checkout_sessions where request like '%buyer_7%')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(mentions, 0);
}
