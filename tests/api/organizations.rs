use billing_service::grpc::proto::{self, Role};
use tonic::Code;

use crate::helpers::{As, expect_code, request, spawn_app};

#[tokio::test]
async fn creating_an_organization_makes_the_creator_owner_and_starts_a_30_day_trial() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;

    // Trials start on Enterprise, so a new team sees everything it may buy.
    assert_eq!(org.plan, "enterprise");
    assert!(org.require_seats, "new organizations require seats");
    let trial = org.trial.expect("trial");
    assert_eq!(trial.stage(), proto::TrialStage::Active);
    // Creation reads the clock once: the trial ends exactly 30 days later.
    assert_eq!(trial.days_remaining, 30);
    let created = org.created_at.expect("created_at");
    let trial_end = trial.trial_end.expect("trial_end");
    assert_eq!(trial_end.seconds - created.seconds, 30 * 86_400);

    let members = app
        .org_admin()
        .list_members(request(
            As::User("alice"),
            proto::ListMembersRequest {
                org_id: org.id.clone(),
            },
        ))
        .await
        .expect("list members")
        .into_inner();
    assert_eq!(members.members.len(), 1);
    assert_eq!(members.members[0].user_id, "alice");
    assert_eq!(members.members[0].role(), Role::Owner);

    let fetched = app
        .org_admin()
        .get_organization(request(
            As::User("alice"),
            proto::GetOrganizationRequest {
                org_id: org.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    // A moment later, 29 whole days (and nearly 24 hours) remain.
    assert_eq!(fetched.trial.as_ref().map(|t| t.days_remaining), Some(29));
    assert_eq!(
        fetched.trial.as_ref().map(|t| t.trial_end),
        Some(Some(trial_end))
    );
    assert_eq!(
        proto::Organization {
            trial: None,
            ..fetched
        },
        proto::Organization { trial: None, ..org },
        "a read returns what creation returned"
    );
}

#[tokio::test]
async fn a_retried_create_with_the_same_idempotency_key_returns_the_same_organization() {
    let app = spawn_app().await;
    let create = || {
        request(
            As::User("alice"),
            proto::CreateOrganizationRequest {
                name: "Acme".into(),
                idempotency_key: "signup-42".into(),
                ..Default::default()
            },
        )
    };
    let first = app
        .org_admin()
        .create_organization(create())
        .await
        .expect("first")
        .into_inner();
    let retry = app
        .org_admin()
        .create_organization(create())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(first.id, retry.id);

    let listed = app
        .org_admin()
        .list_organizations(request(As::Ops, proto::ListOrganizationsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed.organizations.len(),
        1,
        "only one organization was written"
    );
    assert_eq!(
        app.audit_actions(&first.id).await.len(),
        1,
        "and audited once"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let app = spawn_app().await;
    let create = |name: &str, plan: Option<&str>, creator: &str| {
        request(
            As::User("alice"),
            proto::CreateOrganizationRequest {
                name: name.into(),
                plan: plan.map(str::to_owned),
                creator_user_id: creator.into(),
                ..Default::default()
            },
        )
    };
    let cases = [
        (create("   ", None, ""), "name"),
        (create("Acme", Some("platinum"), ""), "plan"),
        (create("Acme", None, "has space"), "creator_user_id"),
    ];
    for (req, field) in cases {
        let status = expect_code(
            app.org_admin().create_organization(req).await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let unknown_plan = expect_code(
        app.org_admin()
            .create_organization(create("Acme", Some("platinum"), ""))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        unknown_plan.message().contains("teams, enterprise"),
        "{}",
        unknown_plan.message()
    );

    let listed = app
        .org_admin()
        .list_organizations(request(As::Ops, proto::ListOrganizationsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.organizations.is_empty());

    let malformed = expect_code(
        app.org_admin()
            .get_organization(request(
                As::Ops,
                proto::GetOrganizationRequest {
                    org_id: "42".into(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(malformed.message().starts_with("org_id"));
    expect_code(
        app.org_admin()
            .get_organization(request(
                As::Ops,
                proto::GetOrganizationRequest {
                    org_id: uuid::Uuid::new_v4().to_string(),
                },
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn operators_page_through_organizations_in_creation_order() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for owner in ["a1", "a2", "a3", "a4", "a5"] {
        created.push(app.create_org(owner).await.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .org_admin()
            .list_organizations(request(
                As::Ops,
                proto::ListOrganizationsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                },
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.organizations.len() <= 2);
        seen.extend(page.organizations.into_iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, created);
    expect_code(
        app.org_admin()
            .list_organizations(request(
                As::Ops,
                proto::ListOrganizationsRequest {
                    page_size: 501,
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn deleting_an_organization_is_refused_while_a_subscription_has_not_ended() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.put_subscription(&org.id, "active", 3).await;
    let delete = || {
        request(
            As::User("alice"),
            proto::DeleteOrganizationRequest {
                org_id: org.id.clone(),
            },
        )
    };

    let refused = expect_code(
        app.org_admin().delete_organization(delete()).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("has not ended"),
        "{}",
        refused.message()
    );

    // Once Stripe reports the subscription canceled, deletion goes through.
    let mut conn = app.pool.acquire().await.expect("conn");
    sqlx::query("update subscriptions set status = 'canceled', ended_at = now()")
        .execute(&mut *conn)
        .await
        .expect("cancel");
    app.org_admin()
        .delete_organization(delete())
        .await
        .expect("delete");

    expect_code(
        app.org_admin()
            .get_organization(request(
                As::Ops,
                proto::GetOrganizationRequest {
                    org_id: org.id.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    // The trail outlives the organization.
    let actions: Vec<String> = app
        .audit_actions(&org.id)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions.first().map(String::as_str),
        Some("organization.deleted")
    );
}
