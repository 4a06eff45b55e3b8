use billing_service::grpc::proto::{self, EntitlementReason, InvitationState, Role};
use tonic::Code;

use crate::helpers::{As, expect_code, request, spawn_app};

async fn removal_records(app: &crate::helpers::TestApp, org: &str) -> Vec<proto::RemovalRecord> {
    app.org_admin()
        .list_removal_records(request(
            As::User("alice"),
            proto::ListRemovalRecordsRequest { org_id: org.into() },
        ))
        .await
        .expect("removal records")
        .into_inner()
        .records
}

#[tokio::test]
async fn an_accepted_invitation_makes_a_member_and_accepting_again_is_harmless() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    let invitation = app
        .invite(
            As::User("alice"),
            &org.id,
            " Bob@Example.com ",
            Role::Member,
        )
        .await
        .expect("invite");
    assert_eq!(invitation.email, "bob@example.com");
    assert_eq!(invitation.state(), InvitationState::Pending);
    assert_eq!(invitation.invited_by, "user:alice");

    let member = app.accept(&invitation.id, "bob").await.expect("accept");
    assert_eq!(
        (member.user_id.as_str(), member.role()),
        ("bob", Role::Member)
    );
    let again = app.accept(&invitation.id, "bob").await.expect("retry");
    assert_eq!(again, member);
    expect_code(
        app.accept(&invitation.id, "mallory").await,
        Code::FailedPrecondition,
    );

    assert!(app.check(&org.id, "bob").await.allowed);

    // Someone else cannot accept on bob's behalf.
    let other = app
        .invite(
            As::User("alice"),
            &org.id,
            "carol@example.com",
            Role::Member,
        )
        .await
        .expect("invite");
    let status = expect_code(
        app.org_admin()
            .accept_invitation(request(
                As::User("mallory"),
                proto::AcceptInvitationRequest {
                    invitation_id: other.id,
                    user_id: "carol".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("user who joins"));
}

#[tokio::test]
async fn a_second_open_invitation_to_the_same_address_already_exists() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.invite(As::User("alice"), &org.id, "bob@example.com", Role::Member)
        .await
        .expect("first");
    expect_code(
        app.invite(As::User("alice"), &org.id, "BOB@example.com", Role::Member)
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        app.invite(As::User("alice"), &org.id, "not-an-email", Role::Member)
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        app.invite(
            As::User("alice"),
            &org.id,
            "x@example.com",
            Role::Unspecified,
        )
        .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn removing_a_member_writes_a_removal_record_that_a_new_invitation_clears() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Owner).await;

    let record = app
        .remove_member(As::User("alice"), &org.id, "bob")
        .await
        .expect("remove");
    assert_eq!(record.user_id, "bob");
    assert_eq!(record.removed_by, "user:alice");
    assert_eq!(record.previous_role(), Role::Owner);
    assert!(record.removed_at.is_some());
    assert_eq!(removal_records(&app, &org.id).await, vec![record]);

    let decision = app.check(&org.id, "bob").await;
    assert!(!decision.allowed);
    assert_eq!(decision.reason(), EntitlementReason::NotAMember);

    // Accepting a new invitation clears the record.
    app.add_member(&org.id, "bob", Role::Member).await;
    assert!(removal_records(&app, &org.id).await.is_empty());
    assert!(app.check(&org.id, "bob").await.allowed);
}

#[tokio::test]
async fn the_last_owner_can_neither_leave_nor_be_demoted() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    expect_code(
        app.remove_member(As::User("alice"), &org.id, "alice").await,
        Code::FailedPrecondition,
    );
    expect_code(
        app.update_role(As::User("alice"), &org.id, "alice", Role::Member)
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        app.remove_member(As::User("alice"), &org.id, "nobody")
            .await,
        Code::NotFound,
    );

    // A member may leave by themselves.
    app.add_member(&org.id, "bob", Role::Member).await;
    app.remove_member(As::User("bob"), &org.id, "bob")
        .await
        .expect("bob leaves");
}
