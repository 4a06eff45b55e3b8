//! Each change records exactly its lifecycle event, in the change's own
//! commit (the event carries the state version the call answered with);
//! a refused or failed change records none.

use billing_service::grpc::proto::{self, Role};
use chrono::{TimeDelta, Utc};
use tonic::Code;

use crate::event_helpers::committed_version;
use crate::helpers::{As, expect_code, request, spawn_app, timestamp};

const DOLLAR: i64 = 1_000_000;

#[tokio::test]
async fn creating_an_organization_records_organization_created_in_its_commit() {
    let app = spawn_app().await;
    let response = app
        .org_admin()
        .create_organization(request(
            As::User("alice"),
            proto::CreateOrganizationRequest {
                name: "Acme".into(),
                idempotency_key: "create-acme".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create");
    let version = committed_version(&response).expect("a committed version");
    let org = response.into_inner();

    let events = app.events_of(&org.id).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let created = &events[0];
    assert_eq!(created.event_type, "organization.created");
    assert_eq!(created.state_version, version, "committed with the change");
    assert_eq!(created.id.get_version_num(), 7, "a UUIDv7");
    assert_eq!(created.data["name"], "Acme");
    assert_eq!(created.data["plan"], "enterprise");
    assert_eq!(created.data["createdByUserId"], "alice");
    assert_eq!(
        created.data["trialEnd"],
        org.trial.unwrap().trial_end_rfc3339()
    );

    // The same request again (its idempotency key) creates nothing, so
    // records nothing.
    app.org_admin()
        .create_organization(request(
            As::User("alice"),
            proto::CreateOrganizationRequest {
                name: "Acme".into(),
                idempotency_key: "create-acme".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("replayed");
    assert_eq!(app.events_of(&org.id).await.len(), 1);
}

trait TrialEnd {
    fn trial_end_rfc3339(&self) -> String;
}

impl TrialEnd for proto::TrialStatus {
    fn trial_end_rfc3339(&self) -> String {
        let end = self.trial_end.as_ref().expect("trial end");
        chrono::DateTime::from_timestamp(end.seconds, end.nanos as u32)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
}

#[tokio::test]
async fn member_changes_record_invited_joined_and_removed_and_refusals_record_nothing() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;

    let invited = app
        .org_admin()
        .invite_member(request(
            As::User("alice"),
            proto::InviteMemberRequest {
                org_id: org.clone(),
                email: "Bob@Example.com".into(),
                role: Role::Member.into(),
            },
        ))
        .await
        .expect("invite");
    let invite_version = committed_version(&invited).expect("version");
    let invitation = invited.into_inner();
    let joined = app
        .org_admin()
        .accept_invitation(request(
            As::User("bob"),
            proto::AcceptInvitationRequest {
                invitation_id: invitation.id.clone(),
                user_id: "bob".into(),
            },
        ))
        .await
        .expect("accept");
    let join_version = committed_version(&joined).expect("version");

    // Refused changes write nothing: a second invitation to the same
    // address, the last owner leaving, accepting twice.
    let pending = app
        .invite(As::User("alice"), &org, "carol@example.com", Role::Member)
        .await
        .expect("invite carol");
    expect_code(
        app.invite(As::User("alice"), &org, "carol@example.com", Role::Member)
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        app.remove_member(As::User("alice"), &org, "alice").await,
        Code::FailedPrecondition,
    );
    app.accept(&invitation.id, "bob")
        .await
        .expect("accepting again returns the membership");
    let before_removal = app.events_of(&org).await.len();

    let removed = app
        .org_admin()
        .remove_member(request(
            As::User("alice"),
            proto::RemoveMemberRequest {
                org_id: org.clone(),
                user_id: "bob".into(),
            },
        ))
        .await
        .expect("remove");
    let remove_version = committed_version(&removed).expect("version");

    let events = app.events_of(&org).await;
    assert_eq!(
        before_removal, 4,
        "created, bob invited and joined, carol invited"
    );
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "organization.created",
            "member.invited",
            "member.joined",
            "member.invited",
            "member.removed"
        ]
    );
    let (bob_invited, bob_joined, carol_invited, bob_removed) =
        (&events[1], &events[2], &events[3], &events[4]);
    assert_eq!(bob_invited.state_version, invite_version);
    assert_eq!(bob_invited.data["email"], "bob@example.com");
    assert_eq!(bob_invited.data["role"], "ROLE_MEMBER");
    assert_eq!(bob_invited.data["invitedBy"], "user:alice");
    assert_eq!(bob_invited.data["invitationId"], invitation.id);
    assert_eq!(bob_joined.state_version, join_version);
    assert_eq!(bob_joined.data["userId"], "bob");
    assert_eq!(bob_joined.data["invitationId"], invitation.id);
    assert_eq!(carol_invited.data["invitationId"], pending.id);
    assert_eq!(bob_removed.state_version, remove_version);
    assert_eq!(bob_removed.data["userId"], "bob");
    assert_eq!(bob_removed.data["previousRole"], "ROLE_MEMBER");
    assert_eq!(bob_removed.data["removedBy"], "user:alice");
    // Versions follow commit order.
    assert!(
        events
            .windows(2)
            .all(|w| w[0].state_version < w[1].state_version)
    );
}

#[tokio::test]
async fn credits_granted_low_and_exhausted_are_recorded_once_per_crossing() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    let credit_events = |events: Vec<crate::event_helpers::StoredEvent>| {
        events
            .into_iter()
            .filter(|e| e.event_type.starts_with("credits."))
            .map(|e| (e.event_type, e.data))
            .collect::<Vec<_>>()
    };

    let granted = app.grant(&org, 10 * DOLLAR, "welcome").await;
    // The same grant again is a replay: no second event.
    assert!(app.grant(&org, 10 * DOLLAR, "welcome").await.replayed);
    // Down to $4 crosses the catalog's $5 threshold; $3 stays low.
    app.record_usage(&org, "alice", 6 * DOLLAR, "u1")
        .await
        .expect("usage");
    app.record_usage(&org, "alice", DOLLAR, "u2")
        .await
        .expect("usage");
    // Below zero: exhausted, once.
    app.record_usage(&org, "alice", 5 * DOLLAR, "u3")
        .await
        .expect("usage");
    app.record_usage(&org, "alice", DOLLAR, "u4")
        .await
        .expect("usage");
    // Credit arrives (back above the threshold), then low again.
    app.grant(&org, 10 * DOLLAR, "top-up").await;
    app.record_usage(&org, "alice", 5 * DOLLAR, "u5")
        .await
        .expect("usage");

    let events = credit_events(app.events_of(&org).await);
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "credits.granted",
            "credits.low",
            "credits.exhausted",
            "credits.granted",
            "credits.low"
        ]
    );
    let entry = granted.entry.expect("entry");
    assert_eq!(events[0].1["entryId"], entry.id);
    assert_eq!(events[0].1["amountMicros"], (10 * DOLLAR).to_string());
    assert_eq!(events[0].1["balanceAfterMicros"], (10 * DOLLAR).to_string());
    assert_eq!(events[0].1["reason"], "test grant");
    assert_eq!(events[1].1["balanceMicros"], (4 * DOLLAR).to_string());
    assert_eq!(events[1].1["thresholdMicros"], (5 * DOLLAR).to_string());
    assert_eq!(events[2].1["balanceMicros"], (-2 * DOLLAR).to_string());
    assert_eq!(events[4].1["balanceMicros"], (2 * DOLLAR).to_string());
}

#[tokio::test]
async fn an_organizations_own_threshold_announces_a_balance_already_below_it() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    app.grant(&org, 8 * DOLLAR, "welcome").await;
    let set = |threshold: Option<i64>| {
        let app = &app;
        let org = org.clone();
        async move {
            app.credits()
                .set_low_balance_threshold(request(
                    As::User("alice"),
                    proto::SetLowBalanceThresholdRequest {
                        org_id: org,
                        threshold_micros: threshold,
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    let raised = set(Some(20 * DOLLAR)).await.expect("owners may set it");
    assert_eq!(raised.threshold_micros, 20 * DOLLAR);
    assert!(raised.organization_set);
    let low: Vec<_> = app
        .events_of(&org)
        .await
        .into_iter()
        .filter(|e| e.event_type == "credits.low")
        .collect();
    assert_eq!(low.len(), 1);
    assert_eq!(low[0].data["thresholdMicros"], (20 * DOLLAR).to_string());

    // Back to the catalog's $5: $8 is healthy again, which says nothing.
    let reset = set(None).await.expect("reset");
    assert_eq!(
        (reset.threshold_micros, reset.organization_set),
        (5 * DOLLAR, false)
    );
    expect_code(set(Some(-1)).await, Code::InvalidArgument);
    app.add_member(&org, "bob", Role::Member).await;
    let member = app
        .credits()
        .set_low_balance_threshold(request(
            As::User("bob"),
            proto::SetLowBalanceThresholdRequest {
                org_id: org.clone(),
                threshold_micros: Some(DOLLAR),
            },
        ))
        .await;
    expect_code(member, Code::PermissionDenied);
    let lows = app
        .event_types_of(&org)
        .await
        .into_iter()
        .filter(|t| t == "credits.low")
        .count();
    assert_eq!(lows, 1, "nothing more was announced");
}

#[tokio::test]
async fn each_change_of_an_add_on_instance_records_its_event() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    app.add_member(&org, "bob", Role::Member).await;
    app.create_instance(As::User("bob"), &org, "agent", None)
        .await
        .expect("trial");
    // The trial ends with no credit: the renewal suspends it.
    app.credits()
        .set_instance_trial_end(request(
            As::Ops,
            proto::SetInstanceTrialEndRequest {
                org_id: org.clone(),
                instance_id: "agent".into(),
                trial_end: Some(timestamp(Utc::now() - TimeDelta::seconds(1))),
            },
        ))
        .await
        .expect("move trial end");
    app.wait_for_instance(&org, "agent", |i| {
        i.status() == proto::InstanceStatus::Suspended
    })
    .await;
    // Credit arrives: the renewal succeeds and the instance resumes.
    app.grant(&org, 50 * DOLLAR, "budget").await;
    // A second instance of bob's has no trial: its month is charged at once.
    app.create_instance(As::User("bob"), &org, "agent-2", None)
        .await
        .expect("paid instance");
    // Refused: another user's instance id clash.
    expect_code(
        app.create_instance(As::User("alice"), &org, "agent-2", None)
            .await,
        Code::AlreadyExists,
    );
    app.credits()
        .cancel_instance_subscription(request(
            As::User("bob"),
            proto::CancelInstanceSubscriptionRequest {
                org_id: org.clone(),
                instance_id: "agent".into(),
                at_once: true,
            },
        ))
        .await
        .expect("cancel");

    let events: Vec<(String, String)> = app
        .events_of(&org)
        .await
        .into_iter()
        .filter(|e| e.event_type.starts_with("instance."))
        .map(|e| {
            (
                e.event_type,
                e.data["instanceId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("instance.trial_started", "agent"),
        ("instance.suspended", "agent"),
        ("instance.resumed", "agent"),
        ("instance.activated", "agent-2"),
        ("instance.canceled", "agent"),
    ];
    assert_eq!(
        events,
        expected.map(|(t, i)| (t.to_owned(), i.to_owned())).to_vec()
    );
}

#[tokio::test]
async fn erasing_a_user_records_their_removal_and_forgets_them_in_earlier_events() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    app.add_member(&org, "bob", Role::Member).await;
    app.create_instance(As::User("bob"), &org, "agent", None)
        .await
        .expect("trial");
    app.org_admin()
        .delete_user_data(request(
            As::Ops,
            proto::DeleteUserDataRequest {
                user_id: "bob".into(),
                emails: vec!["bob@example.com".into()],
            },
        ))
        .await
        .expect("erase");

    let events = app.events_of(&org).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "organization.created",
            "member.invited",
            "member.joined",
            "instance.trial_started",
            "member.removed",
            "instance.canceled",
        ]
    );
    let removed = &events[4];
    assert_eq!(removed.data["userId"], "[erased]");
    assert_eq!(removed.data["removedBy"], "operator");
    let text =
        serde_json::to_string(&events.iter().map(|e| &e.data).collect::<Vec<_>>()).expect("json");
    assert!(!text.contains("\"bob\""), "bob is gone: {text}");
    assert!(!text.contains("bob@example.com"), "and his address: {text}");
    assert_eq!(events[1].data["email"], "[erased]");
}
