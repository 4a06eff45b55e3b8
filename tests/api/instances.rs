//! Add-on instances paid from credits: trials, charges, renewals, the
//! organization's gate, the Enterprise opt-out and who sees what.

use billing_service::grpc::proto::{self, BillingCycle, EntitlementReason, InstanceStatus, Role};
use chrono::{TimeDelta, Utc};
use tonic::Code;

use crate::helpers::{
    As, TestApp, expect_code, request, spawn_app, spawn_app_with_stripe, timestamp,
    trial_end_in_days,
};

const DOLLAR: i64 = 1_000_000;
/// The default catalog's hosted agent: $20 a month.
const AGENT_PRICE: i64 = 20 * DOLLAR;

fn status(instance: &proto::InstanceSubscription) -> InstanceStatus {
    instance.status()
}

/// Ends the instance's current period now, as if a month had passed.
async fn end_period_now(app: &TestApp, org: &str, instance: &str) {
    sqlx::query(
        "update instance_subscriptions set current_period_end = now() \
         where org_id = $1::uuid and instance_id = $2 and status <> 'canceled'",
    )
    .bind(org)
    .bind(instance)
    .execute(&app.pool)
    .await
    .expect("move the period end");
    app.wait_for_cache().await;
}

#[tokio::test]
async fn each_user_gets_the_seven_day_trial_once_per_organization() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    let other = app.create_org("zed").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    app.add_member(&org.id, "carol", Role::Member).await;
    app.add_member(&other.id, "bob", Role::Member).await;

    let first = app
        .create_instance(As::User("bob"), &org.id, "bob-agent-1", None)
        .await
        .expect("first instance");
    assert_eq!(status(&first), InstanceStatus::Trialing);
    assert!(first.billing.is_none(), "members see no price or dates");
    let seen = app
        .instance(As::Ops, &org.id, "bob-agent-1")
        .await
        .expect("read");
    let billing = seen.billing.expect("operators see billing");
    let trial_end = billing.trial_end.expect("trial end").seconds;
    let seven_days = (Utc::now() + TimeDelta::days(7)).timestamp();
    assert!((trial_end - seven_days).abs() < 60, "a 7-day trial");
    let check = app.check_instance(&org.id, "bob", "bob-agent-1").await;
    assert!(check.allowed);
    assert_eq!(check.reason(), EntitlementReason::InstanceTrial);

    // A retried create returns the same instance.
    let retried = app
        .create_instance(As::User("bob"), &org.id, "bob-agent-1", None)
        .await
        .expect("retry");
    assert_eq!(status(&retried), InstanceStatus::Trialing);

    // The second instance has no trial left and the balance is empty.
    let refused = expect_code(
        app.create_instance(As::User("bob"), &org.id, "bob-agent-2", None)
            .await,
        Code::FailedPrecondition,
    );
    assert!(refused.message().contains("$0.00"), "{refused:?}");
    // Other users, and the same user in another organization, have theirs.
    let carols = app
        .create_instance(As::User("carol"), &org.id, "carol-agent", None)
        .await
        .expect("carol's trial");
    assert_eq!(status(&carols), InstanceStatus::Trialing);
    let elsewhere = app
        .create_instance(As::User("bob"), &other.id, "bob-agent-1", None)
        .await
        .expect("bob's trial in the other org");
    assert_eq!(status(&elsewhere), InstanceStatus::Trialing);
    // Canceling and recreating does not bring the trial back.
    app.credits()
        .cancel_instance_subscription(request(
            As::User("bob"),
            proto::CancelInstanceSubscriptionRequest {
                org_id: org.id.clone(),
                instance_id: "bob-agent-1".into(),
                at_once: true,
            },
        ))
        .await
        .expect("cancel");
    expect_code(
        app.create_instance(As::User("bob"), &org.id, "bob-agent-1", None)
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn creation_is_refused_when_credits_do_not_cover_the_first_month() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.create_instance(As::User("alice"), &org.id, "trial-one", None)
        .await
        .expect("trial");
    app.grant(&org.id, 15 * DOLLAR, "some").await;

    let refused = expect_code(
        app.create_instance(As::User("alice"), &org.id, "paid-one", None)
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("$15.00") && refused.message().contains("$20.00"),
        "names balance and price: {refused:?}"
    );
    expect_code(
        app.instance(As::Ops, &org.id, "paid-one").await,
        Code::NotFound,
    );
    assert_eq!(app.balance_micros(&org.id).await, 15 * DOLLAR);

    app.grant(&org.id, 10 * DOLLAR, "more").await;
    let created = app
        .create_instance(As::User("alice"), &org.id, "paid-one", None)
        .await
        .expect("paid instance");
    assert_eq!(status(&created), InstanceStatus::Active);
    let billing = created.billing.expect("owners see billing");
    assert_eq!(billing.monthly_price_micros, AGENT_PRICE);
    assert_eq!(app.balance_micros(&org.id).await, 5 * DOLLAR);
}

#[tokio::test]
async fn renewals_charge_each_month_suspend_when_short_and_resume_when_credit_arrives() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    app.create_instance(As::User("bob"), &org.id, "agent", None)
        .await
        .expect("trial");
    app.grant(&org.id, 50 * DOLLAR, "budget").await;

    // The operator ends the trial: the sweep charges the first month.
    app.credits()
        .set_instance_trial_end(request(
            As::Ops,
            proto::SetInstanceTrialEndRequest {
                org_id: org.id.clone(),
                instance_id: "agent".into(),
                trial_end: Some(timestamp(Utc::now() - TimeDelta::seconds(1))),
            },
        ))
        .await
        .expect("move trial end");
    let renewed = app
        .wait_for_instance(&org.id, "agent", |i| status(i) == InstanceStatus::Active)
        .await;
    let billing = renewed.billing.expect("billing");
    let period_end = billing.current_period_end.expect("period end").seconds;
    assert!(period_end > (Utc::now() + TimeDelta::days(27)).timestamp());
    assert_eq!(app.balance_micros(&org.id).await, 30 * DOLLAR);

    // A month later the next month is charged.
    end_period_now(&app, &org.id, "agent").await;
    let renewed_again = app
        .wait_for_instance(&org.id, "agent", |i| {
            i.billing
                .as_ref()
                .and_then(|b| b.current_period_end.as_ref())
                .is_some_and(|end| end.seconds > Utc::now().timestamp())
        })
        .await;
    assert_eq!(status(&renewed_again), InstanceStatus::Active);
    assert_eq!(app.balance_micros(&org.id).await, 10 * DOLLAR);

    // Another month on, $10 does not cover $20: suspended, not deleted.
    end_period_now(&app, &org.id, "agent").await;
    app.wait_for_instance(&org.id, "agent", |i| status(i) == InstanceStatus::Suspended)
        .await;
    assert_eq!(app.balance_micros(&org.id).await, 10 * DOLLAR);
    let check = app.check_instance(&org.id, "bob", "agent").await;
    assert!(!check.allowed);
    assert_eq!(check.reason(), EntitlementReason::InstanceSuspended);

    // Credit arrives: the renewal succeeds and the instance resumes.
    app.grant(&org.id, 15 * DOLLAR, "top-up").await;
    let resumed = app.instance(As::Ops, &org.id, "agent").await.expect("read");
    assert_eq!(status(&resumed), InstanceStatus::Active);
    assert_eq!(app.balance_micros(&org.id).await, 5 * DOLLAR);
    assert!(app.check_instance(&org.id, "bob", "agent").await.allowed);
    let charges = app
        .ledger(&org.id)
        .await
        .into_iter()
        .filter(|e| e.kind() == proto::CreditEntryKind::InstanceCharge)
        .count();
    assert_eq!(charges, 3, "two renewals and the resumed month");
}

#[tokio::test]
async fn an_instance_set_to_cancel_ends_at_its_period_end_without_a_charge() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.create_instance(As::User("alice"), &org.id, "agent", None)
        .await
        .expect("trial");
    app.grant(&org.id, 30 * DOLLAR, "budget").await;
    let canceling = app
        .credits()
        .cancel_instance_subscription(request(
            As::User("alice"),
            proto::CancelInstanceSubscriptionRequest {
                org_id: org.id.clone(),
                instance_id: "agent".into(),
                at_once: false,
            },
        ))
        .await
        .expect("cancel at period end")
        .into_inner();
    assert!(canceling.billing.expect("billing").cancel_at_period_end);
    end_period_now(&app, &org.id, "agent").await;
    app.wait_for_instance(&org.id, "agent", |i| status(i) == InstanceStatus::Canceled)
        .await;
    assert_eq!(app.balance_micros(&org.id).await, 30 * DOLLAR);
}

#[tokio::test]
async fn an_ended_org_subscription_cancels_every_instance_at_once() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    let sub = app
        .subscribe(&stripe, &org.id, "alice", "teams", BillingCycle::Monthly, 2)
        .await;
    for (user, instance) in [("alice", "alice-agent"), ("bob", "bob-agent")] {
        app.create_instance(As::User(user), &org.id, instance, None)
            .await
            .expect("instance");
    }
    stripe.delete_subscription(&sub);
    app.deliver_all(&stripe).await;
    for (user, instance) in [("alice", "alice-agent"), ("bob", "bob-agent")] {
        let read = app
            .instance(As::Ops, &org.id, instance)
            .await
            .expect("read");
        assert_eq!(status(&read), InstanceStatus::Canceled, "{instance}");
        let check = app.check_instance(&org.id, user, instance).await;
        assert_eq!(check.reason(), EntitlementReason::InstanceCanceled);
    }
    let cascaded = app
        .audit_actions(&org.id)
        .await
        .into_iter()
        .any(|e| e.action == "instance.canceled_with_subscription");
    assert!(cascaded);
}

#[tokio::test]
async fn a_hard_expired_org_trial_blocks_instances_without_canceling_them() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.create_instance(As::User("alice"), &org.id, "agent", None)
        .await
        .expect("trial");
    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;
    let blocked = app.check_instance(&org.id, "alice", "agent").await;
    assert!(!blocked.allowed);
    assert_eq!(blocked.reason(), EntitlementReason::TrialExpired);
    let read = app.instance(As::Ops, &org.id, "agent").await.expect("read");
    assert_eq!(status(&read), InstanceStatus::Trialing, "not canceled");
    expect_code(
        app.create_instance(As::User("alice"), &org.id, "another", None)
            .await,
        Code::FailedPrecondition,
    );

    // Access comes back with the organization's.
    app.set_trial_end(&org.id, trial_end_in_days(10)).await;
    let back = app.check_instance(&org.id, "alice", "agent").await;
    assert!(back.allowed);
    assert_eq!(back.reason(), EntitlementReason::InstanceTrial);
}

async fn set_opt_out(
    app: &TestApp,
    who: As<'_>,
    org: &str,
    opted_out: bool,
) -> Result<proto::SetInstancesOptOutResponse, tonic::Status> {
    app.credits()
        .set_instances_opt_out(request(
            who,
            proto::SetInstancesOptOutRequest {
                org_id: org.to_owned(),
                opted_out,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn enterprise_owners_can_switch_instances_off_and_back_on() {
    let app = spawn_app().await;
    let org = app.create_org_on("alice", Some("enterprise")).await;
    app.add_member(&org.id, "bob", Role::Member).await;
    app.add_member(&org.id, "bea", Role::BillingManager).await;
    app.create_instance(As::User("bob"), &org.id, "agent", None)
        .await
        .expect("trial");

    expect_code(
        set_opt_out(&app, As::User("bob"), &org.id, true).await,
        Code::PermissionDenied,
    );
    expect_code(
        set_opt_out(&app, As::User("bea"), &org.id, true).await,
        Code::PermissionDenied,
    );
    let set = set_opt_out(&app, As::User("alice"), &org.id, true)
        .await
        .expect("opt out");
    assert!(set.opted_out);
    let check = app.check_instance(&org.id, "bob", "agent").await;
    assert!(!check.allowed);
    assert_eq!(check.reason(), EntitlementReason::InstancesDisabled);
    expect_code(
        app.create_instance(As::User("alice"), &org.id, "new", None)
            .await,
        Code::FailedPrecondition,
    );

    set_opt_out(&app, As::User("alice"), &org.id, false)
        .await
        .expect("opt back in");
    assert!(app.check_instance(&org.id, "bob", "agent").await.allowed);

    let teams = app.create_org_on("tom", Some("teams")).await;
    expect_code(
        set_opt_out(&app, As::User("tom"), &teams.id, true).await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn members_see_and_manage_only_their_own_instances_without_billing_details() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    app.add_member(&org.id, "carol", Role::Member).await;
    app.add_member(&org.id, "bea", Role::BillingManager).await;
    app.create_instance(As::User("bob"), &org.id, "bob-agent", None)
        .await
        .expect("bob's");
    app.create_instance(As::User("carol"), &org.id, "carol-agent", None)
        .await
        .expect("carol's");

    let list = |who| {
        let mut credits = app.credits();
        let request = request(
            who,
            proto::ListInstanceSubscriptionsRequest {
                org_id: org.id.clone(),
            },
        );
        async move {
            credits
                .list_instance_subscriptions(request)
                .await
                .expect("list")
                .into_inner()
                .instances
        }
    };
    let bobs_view = list(As::User("bob")).await;
    assert_eq!(bobs_view.len(), 1);
    assert_eq!(bobs_view[0].instance_id, "bob-agent");
    assert!(bobs_view[0].billing.is_none());
    assert!(bobs_view[0].accessible);
    for admin in [As::User("alice"), As::User("bea"), As::Ops] {
        let all = list(admin).await;
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|i| i.billing.is_some()));
    }

    expect_code(
        app.instance(As::User("bob"), &org.id, "carol-agent").await,
        Code::PermissionDenied,
    );
    let cancel = |who, instance: &str, at_once| {
        let mut credits = app.credits();
        let request = request(
            who,
            proto::CancelInstanceSubscriptionRequest {
                org_id: org.id.clone(),
                instance_id: instance.to_owned(),
                at_once,
            },
        );
        async move { credits.cancel_instance_subscription(request).await }
    };
    expect_code(
        cancel(As::User("bob"), "carol-agent", true).await,
        Code::PermissionDenied,
    );
    expect_code(
        app.create_instance(As::User("bob"), &org.id, "for-carol", Some("carol"))
            .await,
        Code::PermissionDenied,
    );
    let by_admin = cancel(As::User("bea"), "carol-agent", false)
        .await
        .expect("billing managers manage any")
        .into_inner();
    assert!(by_admin.billing.expect("billing").cancel_at_period_end);
    let own = cancel(As::User("bob"), "bob-agent", true)
        .await
        .expect("own")
        .into_inner();
    assert_eq!(status(&own), InstanceStatus::Canceled);
    // The gateway may not manage instances; outsiders see nothing.
    expect_code(
        app.create_instance(As::Gateway, &org.id, "gw", Some("bob"))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        app.instance(As::User("mallory"), &org.id, "bob-agent")
            .await,
        Code::PermissionDenied,
    );
    let outsider = app.check_instance(&org.id, "mallory", "bob-agent").await;
    assert_eq!(outsider.reason(), EntitlementReason::NotAMember);
    let unknown = app.check_instance(&org.id, "bob", "nope").await;
    assert_eq!(unknown.reason(), EntitlementReason::InstanceNotFound);
}
