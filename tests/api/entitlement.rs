use billing_service::grpc::proto::{self, AccessState, EntitlementReason, Role};
use tonic::Code;

use crate::helpers::{As, expect_code, request, spawn_app, trial_end_in_days};

async fn restrict(app: &crate::helpers::TestApp, org: &str) -> proto::Organization {
    app.org_admin()
        .set_model_restrictions(request(
            As::User("alice"),
            proto::SetModelRestrictionsRequest {
                org_id: org.into(),
                model_deny_list: vec!["GPT-4o".into()],
                provider_allow_list: vec!["anthropic".into(), "openai".into()],
            },
        ))
        .await
        .expect("set restrictions")
        .into_inner()
}

#[tokio::test]
async fn enterprise_enforces_its_model_deny_list_and_provider_allow_list() {
    let app = spawn_app().await;
    let org = app.create_org_on("alice", Some("enterprise")).await;
    app.add_member(&org.id, "bob", Role::Member).await;
    let updated = restrict(&app, &org.id).await;
    // The models asked about are not free: they draw on credits.
    app.grant(&org.id, 5_000_000, "welcome").await;
    let restrictions = updated.model_restrictions.expect("restrictions");
    assert!(restrictions.enforced);
    assert_eq!(restrictions.model_deny_list, vec!["gpt-4o"]);

    let denied = app
        .check_model(&org.id, "bob", Some("gpt-4o"), Some("openai"))
        .await;
    assert!(!denied.allowed);
    assert_eq!(denied.reason(), EntitlementReason::ModelDenied);

    let wrong_provider = app
        .check_model(&org.id, "bob", Some("gemini-pro"), Some("google"))
        .await;
    assert!(!wrong_provider.allowed);
    assert_eq!(
        wrong_provider.reason(),
        EntitlementReason::ProviderNotAllowed
    );

    let fine = app
        .check_model(&org.id, "bob", Some("claude-sonnet"), Some("Anthropic"))
        .await;
    assert!(fine.allowed);
    assert_eq!(fine.reason(), EntitlementReason::TrialActive);
}

#[tokio::test]
async fn teams_store_model_restrictions_but_do_not_enforce_them() {
    let app = spawn_app().await;
    let org = app.create_org_on("alice", Some("teams")).await;
    let updated = restrict(&app, &org.id).await;
    app.grant(&org.id, 5_000_000, "welcome").await;
    let restrictions = updated.model_restrictions.expect("restrictions");
    assert!(!restrictions.enforced);
    assert_eq!(
        restrictions.provider_allow_list,
        vec!["anthropic", "openai"]
    );

    let decision = app
        .check_model(&org.id, "alice", Some("gpt-4o"), Some("google"))
        .await;
    assert!(decision.allowed);
    assert_eq!(decision.reason(), EntitlementReason::TrialActive);
}

#[tokio::test]
async fn entitlements_follow_the_subscription_from_trial_to_paid_to_past_due_to_canceled() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;
    assert_eq!(
        app.entitlements_of(&org.id).await.access(),
        AccessState::TrialExpired
    );

    app.put_subscription(&org.id, "active", 2).await;
    let paid = app.entitlements_of(&org.id).await;
    assert_eq!(paid.access(), AccessState::Subscribed);
    assert!(!paid.credits_locked);
    assert_eq!(
        app.check(&org.id, "alice").await.reason(),
        EntitlementReason::SubscriptionActive
    );

    let mut conn = app.pool.acquire().await.expect("conn");
    for (status, allowed, state) in [
        ("past_due", true, AccessState::Subscribed),
        ("unpaid", false, AccessState::SubscriptionInactive),
        ("canceled", false, AccessState::SubscriptionInactive),
    ] {
        sqlx::query("update subscriptions set status = $1")
            .bind(status)
            .execute(&mut *conn)
            .await
            .expect("status");
        app.wait_for_cache().await;
        assert_eq!(
            app.check(&org.id, "alice").await.allowed,
            allowed,
            "{status}"
        );
        let view = app.entitlements_of(&org.id).await;
        assert_eq!(view.access(), state, "{status}");
        assert_eq!(view.credits_locked, !allowed, "{status}");
    }

    let subscription = app
        .billing()
        .get_subscription(request(
            As::User("alice"),
            proto::GetSubscriptionRequest {
                org_id: org.id.clone(),
            },
        ))
        .await
        .expect("subscription")
        .into_inner();
    assert!(subscription.has_subscription);
    assert_eq!(subscription.status, "canceled");
    assert!(!subscription.counts_for_access);
    assert_eq!(subscription.paid_seats, 2);
    assert_eq!(subscription.used_seats, 1);
}

#[tokio::test]
async fn get_entitlements_reports_plan_features_and_limits() {
    let app = spawn_app().await;
    let org = app.create_org_on("alice", Some("enterprise")).await;
    let view = app.entitlements_of(&org.id).await;
    assert_eq!(view.plan, "enterprise");
    assert!(view.features.contains(&"proxy".to_owned()));
    assert_eq!(view.access(), AccessState::Trial);
    let max_projects = view
        .limits
        .iter()
        .find(|l| l.name == "max_projects")
        .expect("limit");
    assert_eq!(max_projects.value, None, "unlimited");
}

#[tokio::test]
async fn a_user_outside_the_organization_is_denied_and_bad_requests_are_errors() {
    let app = spawn_app().await;
    let org = app.create_org_on("alice", Some("teams")).await;
    let outsider = app.check(&org.id, "eve").await;
    assert!(!outsider.allowed);
    assert_eq!(outsider.reason(), EntitlementReason::NotAMember);

    let check = |feature: &str, org_id: &str| {
        request(
            As::Gateway,
            proto::CheckEntitlementRequest {
                org_id: org_id.into(),
                user_id: "alice".into(),
                feature: feature.into(),
                ..Default::default()
            },
        )
    };
    let unknown = expect_code(
        app.entitlements()
            .check_entitlement(check("teleport", &org.id))
            .await,
        Code::InvalidArgument,
    );
    assert!(unknown.message().starts_with("feature"));
    expect_code(
        app.entitlements()
            .check_entitlement(check("proxy", &uuid::Uuid::new_v4().to_string()))
            .await,
        Code::NotFound,
    );
    // A feature of another plan is a denial, not an error.
    let other_plan = app
        .entitlements()
        .check_entitlement(check("audit_log_export", &org.id))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(other_plan.reason(), EntitlementReason::FeatureNotInPlan);
}

/// A huge bad value is refused with a message quoting only its start.
#[tokio::test]
async fn a_nine_kilobyte_invalid_id_is_quoted_only_by_a_bounded_prefix() {
    let app = spawn_app().await;
    let huge = "9".repeat(9_000);
    let status = expect_code(
        app.entitlements()
            .check_entitlement(request(
                As::Gateway,
                proto::CheckEntitlementRequest {
                    org_id: huge.clone(),
                    user_id: "alice".into(),
                    feature: "proxy".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().starts_with("org_id: "), "{status:?}");
    assert!(status.message().contains("(9000 bytes)"), "{status:?}");
    assert!(
        status.message().len() < 200,
        "{} bytes",
        status.message().len()
    );
}
