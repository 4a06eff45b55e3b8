//! Each authentication and authorization failure answers its own code.

use billing_service::grpc::proto;
use tonic::Code;

use crate::helpers::{As, expect_code, request, spawn_app};

#[tokio::test]
async fn each_auth_failure_has_its_code() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    let get_org = |who| {
        request(
            who,
            proto::GetOrganizationRequest {
                org_id: org.id.clone(),
            },
        )
    };
    let check = |who| {
        request(
            who,
            proto::CheckEntitlementRequest {
                org_id: org.id.clone(),
                user_id: "alice".into(),
                feature: "proxy".into(),
                ..Default::default()
            },
        )
    };

    // No token, an unknown token, or a token that is not a bearer token.
    expect_code(
        app.org_admin().get_organization(get_org(As::NoToken)).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.org_admin()
            .get_organization(get_org(As::Token("not-a-real-token-at-all")))
            .await,
        Code::Unauthenticated,
    );
    let mut basic = get_org(As::NoToken);
    basic.metadata_mut().insert(
        "authorization",
        "Basic YWxpY2U6cHc=".parse().expect("ascii"),
    );
    expect_code(
        app.org_admin().get_organization(basic).await,
        Code::Unauthenticated,
    );

    // A bff call that does not say which end user it acts for.
    let status = expect_code(
        app.org_admin()
            .get_organization(get_org(As::BffAlone))
            .await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("x-acting-user-id"));
    // ...or names one that cannot be a user id.
    expect_code(
        app.org_admin()
            .get_organization(get_org(As::User("bad id")))
            .await,
        Code::InvalidArgument,
    );

    // Wrong scope for the service.
    expect_code(
        app.org_admin().get_organization(get_org(As::Gateway)).await,
        Code::PermissionDenied,
    );
    // The BFF may read a member's own entitlements, but not report usage.
    expect_code(
        app.record_usage_as(As::User("alice"), &org.id, "alice", 1, "bff-usage")
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        app.billing()
            .list_plans(request(As::Gateway, proto::ListPlansRequest {}))
            .await,
        Code::PermissionDenied,
    );

    // Right scope, wrong role or organization.
    expect_code(
        app.org_admin()
            .get_organization(get_org(As::User("mallory")))
            .await,
        Code::PermissionDenied,
    );

    // And the right callers get through.
    app.org_admin()
        .get_organization(get_org(As::User("alice")))
        .await
        .expect("bff as owner");
    app.org_admin()
        .get_organization(get_org(As::Ops))
        .await
        .expect("ops");
    app.entitlements()
        .check_entitlement(check(As::Gateway))
        .await
        .expect("gateway");
    app.entitlements()
        .check_entitlement(check(As::Ops))
        .await
        .expect("ops");
    app.billing()
        .list_plans(request(As::BffAlone, proto::ListPlansRequest {}))
        .await
        .expect("catalog needs no user");
}

#[tokio::test]
async fn health_and_reflection_answer_without_a_token() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "billing.v1.EntitlementService",
        "billing.v1.OrgAdminService",
        "billing.v1.BillingService",
    ] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.message().await.expect("stream").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "billing.v1.BillingService",
        "billing.v1.EntitlementService",
        "billing.v1.OrgAdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

/// A bad `BILLING_CALLER_TOKENS` stops the binary before it starts, saying
/// what is wrong without quoting the value: it holds valid tokens too.
#[test]
fn a_bad_caller_token_list_is_refused_without_echoing_any_token() {
    let valid = "gateway-valid-token-must-stay-secret";
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_billing-service"))
        .env(
            "BILLING_CALLER_TOKENS",
            format!("gateway:{valid},bff:short"),
        )
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/never-reached",
        )
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("BILLING_CALLER_TOKENS"), "{said}");
    assert!(said.contains("at least 16 characters"), "{said}");
    assert!(!said.contains(valid), "{said}");
    assert!(!said.contains("short"), "{said}");
}

/// The web app shows a member their own access and trial: the BFF may call
/// `CheckEntitlement` for the acting user and `GetEntitlements` for their
/// organization, and nothing else of the entitlement service.
#[tokio::test]
async fn the_bff_reads_a_members_own_entitlements_and_nothing_more() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    app.add_member(&org, "bob", proto::Role::Member).await;
    let check = |who, user: &str, reserve: bool| {
        request(
            who,
            proto::CheckEntitlementRequest {
                org_id: org.clone(),
                user_id: user.to_owned(),
                feature: "proxy".into(),
                reserve_micros: reserve.then_some(1_000),
                reservation_key: if reserve {
                    "bff-hold".into()
                } else {
                    String::new()
                },
                ..Default::default()
            },
        )
    };
    let own = app
        .entitlements()
        .check_entitlement(check(As::User("bob"), "bob", false))
        .await
        .expect("a member checks their own access")
        .into_inner();
    assert!(own.allowed, "{own:?}");
    let gateway = app.check(&org, "bob").await;
    assert_eq!((own.allowed, own.reason), (gateway.allowed, gateway.reason));
    let whole = app
        .entitlements()
        .get_entitlements(request(
            As::User("bob"),
            proto::GetEntitlementsRequest {
                org_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("a member reads the organization's entitlements")
        .into_inner();
    assert!(whole.trial.is_some(), "{whole:?}");

    for (name, call, reason) in [
        (
            "another member's access",
            check(As::User("bob"), "alice", false),
            "only their own",
        ),
        (
            "not a member",
            check(As::User("mallory"), "mallory", false),
            "only members",
        ),
        (
            "a reservation",
            check(As::User("bob"), "bob", true),
            "reserve credits",
        ),
    ] {
        let status = expect_code(
            app.entitlements().check_entitlement(call).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains(reason), "{name}: {status:?}");
    }
    expect_code(
        app.entitlements()
            .get_entitlements(request(
                As::User("mallory"),
                proto::GetEntitlementsRequest {
                    org_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        app.entitlements()
            .watch_entitlements(request(
                As::User("alice"),
                proto::WatchEntitlementsRequest::default(),
            ))
            .await,
        Code::PermissionDenied,
    );
}

/// In a container the binary never invents tokens of its own: without
/// `BILLING_CALLER_TOKENS` it refuses to start, unless a development run
/// asks for generated ones.
#[test]
fn in_a_container_the_binary_refuses_to_start_without_caller_tokens() {
    let run = |extra: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_billing-service"))
            .env_remove("BILLING_CALLER_TOKENS")
            .env("BILLING_IN_CONTAINER", "true")
            .env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/never-reached",
            )
            .env("RUST_BACKTRACE", "0")
            .envs(extra.iter().copied())
            .output()
            .expect("the binary runs")
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("BILLING_CALLER_TOKENS is not set"), "{said}");
    // Asked for, it goes on (and stops at the unreachable database).
    let development = run(&[("BILLING_DEV_GENERATE_TOKENS", "true")]);
    let said = String::from_utf8_lossy(&development.stderr);
    assert!(!said.contains("BILLING_CALLER_TOKENS is not set"), "{said}");
    assert!(said.contains("PostgreSQL"), "{said}");
}
