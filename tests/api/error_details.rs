//! Every kind of refusal carries google.rpc details a program can act on,
//! decoded here with `tonic-types` as a client would: `BadRequest` for a
//! bad field, `ErrorInfo` with a stable reason and its numbers for
//! FAILED_PRECONDITION / ALREADY_EXISTS / PERMISSION_DENIED, `RetryInfo`
//! for UNAVAILABLE (and RESOURCE_EXHAUSTED, in `load_shedding`).

use std::time::Duration;

use billing_service::grpc::proto::{self, Role};
use tonic::{Code, Status};
use tonic_types::{ErrorInfo, StatusExt};

use crate::helpers::{
    As, expect_code, request, spawn_app, spawn_app_with_stripe, trial_end_in_days,
};

/// The status's `ErrorInfo`, which must be there and in our domain.
fn error_info(status: &Status) -> ErrorInfo {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "billing.v1", "{info:?}");
    info
}

#[tokio::test]
async fn an_invalid_field_is_named_in_a_bad_request_violation() {
    let app = spawn_app().await;
    let status = expect_code(
        app.credits()
            .get_credit_balance(request(
                As::Ops,
                proto::GetCreditBalanceRequest {
                    org_id: "not an id".into(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    let bad_request = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad_request.field_violations.len(), 1, "{bad_request:?}");
    let violation = &bad_request.field_violations[0];
    assert_eq!(violation.field, "org_id");
    assert!(!violation.description.is_empty());
    assert!(status.get_details_error_info().is_none());
}

#[tokio::test]
async fn an_invitation_beyond_the_paid_seats_says_seats_exhausted_with_the_numbers() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;
    app.put_subscription(&org.id, "active", 2).await;

    let status = expect_code(
        app.invite(
            As::User("alice"),
            &org.id,
            "carol@example.com",
            Role::Member,
        )
        .await,
        Code::FailedPrecondition,
    );
    let info = error_info(&status);
    assert_eq!(info.reason, "SEATS_EXHAUSTED");
    assert_eq!(info.metadata["seatsUsed"], "2");
    assert_eq!(info.metadata["seatsPaid"], "2");
    assert_eq!(info.metadata["seatsRequested"], "1");
}

#[tokio::test]
async fn a_second_invitation_to_the_same_address_says_invitation_pending() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.invite(As::User("alice"), &org.id, "bob@example.com", Role::Member)
        .await
        .expect("first invitation");
    let status = expect_code(
        app.invite(As::User("alice"), &org.id, "bob@example.com", Role::Member)
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(error_info(&status).reason, "INVITATION_PENDING");
}

#[tokio::test]
async fn refusals_for_who_is_calling_say_which_rule_refused() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;

    // A member's role may not change seats.
    let status = expect_code(
        app.set_seats(As::User("bob"), &org.id, 3, None).await,
        Code::PermissionDenied,
    );
    assert_eq!(error_info(&status).reason, "ROLE_NOT_PERMITTED");

    // A stranger is not a member.
    let status = expect_code(
        app.set_seats(As::User("mallory"), &org.id, 3, None).await,
        Code::PermissionDenied,
    );
    assert_eq!(error_info(&status).reason, "NOT_A_MEMBER");

    // The gateway's token may not call the billing service at all.
    let status = expect_code(
        app.set_seats(As::Gateway, &org.id, 3, None).await,
        Code::PermissionDenied,
    );
    assert_eq!(error_info(&status).reason, "CALLER_NOT_PERMITTED");
}

#[tokio::test]
async fn a_refused_seat_reduction_says_seats_in_use_with_the_numbers() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("owner-1").await.id;
    app.subscribe(
        &stripe,
        &org,
        "owner-1",
        "teams",
        proto::BillingCycle::Monthly,
        3,
    )
    .await;
    app.add_member(&org, "member-1", Role::Member).await;
    let status = expect_code(
        app.set_seats(As::User("owner-1"), &org, 1, None).await,
        Code::FailedPrecondition,
    );
    let info = error_info(&status);
    assert_eq!(info.reason, "SEATS_IN_USE");
    assert_eq!(info.metadata["seatsUsed"], "2");
    assert_eq!(info.metadata["seatsRequested"], "1");
}

#[tokio::test]
async fn a_call_while_the_database_is_unreachable_says_when_to_retry() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.set_database_reachable(false).await;
    let status = expect_code(
        app.credits()
            .get_credit_balance(request(
                As::User("alice"),
                proto::GetCreditBalanceRequest {
                    org_id: org.id.clone(),
                },
            ))
            .await,
        Code::Unavailable,
    );
    app.set_database_reachable(true).await;
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(5),
        "{delay:?}"
    );
}
