use billing_service::grpc::proto::{self, Role};

use crate::helpers::{As, request, spawn_app, trial_end_in_days};

#[tokio::test]
async fn every_mutation_is_on_the_audit_trail_with_actor_and_before_after() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    let invitation = app
        .invite(As::User("alice"), &org.id, "bob@example.com", Role::Member)
        .await
        .expect("invite");
    app.accept(&invitation.id, "bob").await.expect("accept");
    app.update_role(As::User("alice"), &org.id, "bob", Role::BillingManager)
        .await
        .expect("role");
    app.set_trial_end(&org.id, trial_end_in_days(3)).await;
    app.remove_member(As::User("alice"), &org.id, "bob")
        .await
        .expect("remove");

    let events = app.audit_actions(&org.id).await;
    let trail: Vec<(&str, &str)> = events
        .iter()
        .rev()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            ("organization.created", "user:alice"),
            ("member.invited", "user:alice"),
            ("invitation.accepted", "user:bob"),
            ("member.role_changed", "user:alice"),
            ("organization.trial_end_set", "operator"),
            ("member.removed", "user:alice"),
        ]
    );

    let role_change = &events[2];
    let before: serde_json::Value = serde_json::from_str(&role_change.before_json).expect("json");
    let after: serde_json::Value = serde_json::from_str(&role_change.after_json).expect("json");
    assert_eq!(before["role"], "member");
    assert_eq!(after["role"], "billing_manager");
    let removal = &events[0];
    let after: serde_json::Value = serde_json::from_str(&removal.after_json).expect("json");
    assert_eq!(after["previous_role"], "billing_manager");
    assert!(events.iter().all(|e| e.occurred_at.is_some()));
}

#[tokio::test]
async fn a_refused_mutation_leaves_no_trail() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    let before = app.audit_actions(&org.id).await.len();
    let _ = app
        .invite(As::User("bob"), &org.id, "x@example.com", Role::Member)
        .await;
    let _ = app
        .invite(As::User("alice"), &org.id, "not an email", Role::Member)
        .await;
    assert_eq!(app.audit_actions(&org.id).await.len(), before);
}

#[tokio::test]
async fn the_audit_trail_pages_newest_first() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    for n in 0..4 {
        app.invite(
            As::User("alice"),
            &org.id,
            &format!("u{n}@example.com"),
            Role::Member,
        )
        .await
        .expect("invite");
    }
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .org_admin()
            .list_audit_events(request(
                As::User("alice"),
                proto::ListAuditEventsRequest {
                    org_id: org.id.clone(),
                    page_size: 2,
                    page_token: token.clone(),
                },
            ))
            .await
            .expect("page")
            .into_inner();
        ids.extend(page.events.iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
}
