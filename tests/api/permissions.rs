//! What each role may do, through the RPCs themselves.

use billing_service::grpc::proto::{self, Role};
use tonic::Code;

use crate::helpers::{As, TestApp, expect_code, request, spawn_app};

struct Org {
    id: String,
}

async fn org_with_every_role(app: &TestApp) -> Org {
    let org = app.create_org("owner").await;
    app.add_member(&org.id, "manager", Role::BillingManager)
        .await;
    app.add_member(&org.id, "member", Role::Member).await;
    app.add_member(&org.id, "other", Role::Member).await;
    Org { id: org.id }
}

/// Runs one mutating or reading call as `user` and returns its status code.
async fn attempt(app: &TestApp, org: &Org, user: &str, action: &str) -> Code {
    let org_id = org.id.clone();
    let mut admin = app.org_admin();
    let result = match action {
        "view" => admin
            .get_organization(request(
                As::User(user),
                proto::GetOrganizationRequest { org_id },
            ))
            .await
            .map(drop),
        "seat usage" => admin
            .get_seat_usage(request(
                As::User(user),
                proto::GetSeatUsageRequest { org_id },
            ))
            .await
            .map(drop),
        "subscription" => app
            .billing()
            .get_subscription(request(
                As::User(user),
                proto::GetSubscriptionRequest { org_id },
            ))
            .await
            .map(drop),
        "invite member" => app
            .invite(
                As::User(user),
                &org_id,
                &format!("{user}-guest@example.com"),
                Role::Member,
            )
            .await
            .map(drop),
        "invite owner" => app
            .invite(
                As::User(user),
                &org_id,
                &format!("{user}-owner@example.com"),
                Role::Owner,
            )
            .await
            .map(drop),
        "change role" => admin
            .update_member_role(request(
                As::User(user),
                proto::UpdateMemberRoleRequest {
                    org_id,
                    user_id: "other".into(),
                    role: Role::BillingManager.into(),
                },
            ))
            .await
            .map(drop),
        "restrict models" => admin
            .set_model_restrictions(request(
                As::User(user),
                proto::SetModelRestrictionsRequest {
                    org_id,
                    model_deny_list: vec!["gpt-4o".into()],
                    provider_allow_list: vec![],
                },
            ))
            .await
            .map(drop),
        "audit trail" => admin
            .list_audit_events(request(
                As::User(user),
                proto::ListAuditEventsRequest {
                    org_id,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "set trial end" => admin
            .set_trial_end(request(
                As::User(user),
                proto::SetTrialEndRequest {
                    org_id,
                    trial_end: Some(crate::helpers::trial_end_in_days(60)),
                },
            ))
            .await
            .map(drop),
        "overrides" => admin
            .set_organization_overrides(request(
                As::User(user),
                proto::SetOrganizationOverridesRequest {
                    org_id,
                    require_seats: Some(false),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "list organizations" => admin
            .list_organizations(request(
                As::User(user),
                proto::ListOrganizationsRequest::default(),
            ))
            .await
            .map(drop),
        other => panic!("unknown action {other}"),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn member_billing_manager_and_owner_permissions() {
    const OK: Code = Code::Ok;
    const DENIED: Code = Code::PermissionDenied;
    // (action, owner, billing manager, member, outsider)
    let table = [
        ("view", OK, OK, OK, DENIED),
        ("seat usage", OK, OK, OK, DENIED),
        ("subscription", OK, OK, OK, DENIED),
        ("invite member", OK, OK, DENIED, DENIED),
        ("invite owner", OK, DENIED, DENIED, DENIED),
        ("audit trail", OK, OK, DENIED, DENIED),
        ("change role", OK, DENIED, DENIED, DENIED),
        ("restrict models", OK, DENIED, DENIED, DENIED),
        ("set trial end", DENIED, DENIED, DENIED, DENIED),
        ("overrides", DENIED, DENIED, DENIED, DENIED),
        ("list organizations", DENIED, DENIED, DENIED, DENIED),
    ];
    let app = spawn_app().await;
    for (action, owner, manager, member, outsider) in table {
        // A fresh organization per row, so one row's change cannot affect the next.
        let org = org_with_every_role(&app).await;
        assert_eq!(
            attempt(&app, &org, "member", action).await,
            member,
            "member: {action}"
        );
        assert_eq!(
            attempt(&app, &org, "stranger", action).await,
            outsider,
            "outsider: {action}"
        );
        assert_eq!(
            attempt(&app, &org, "manager", action).await,
            manager,
            "billing manager: {action}"
        );
        assert_eq!(
            attempt(&app, &org, "owner", action).await,
            owner,
            "owner: {action}"
        );
    }
}

#[tokio::test]
async fn members_cannot_remove_others_but_owners_can() {
    let app = spawn_app().await;
    let org = org_with_every_role(&app).await;
    let denied = expect_code(
        app.remove_member(As::User("member"), &org.id, "other")
            .await,
        Code::PermissionDenied,
    );
    assert!(
        denied.message().contains("a member may not remove members"),
        "{}",
        denied.message()
    );
    expect_code(
        app.remove_member(As::User("manager"), &org.id, "other")
            .await,
        Code::PermissionDenied,
    );
    app.remove_member(As::User("owner"), &org.id, "other")
        .await
        .expect("owner removes");
}
