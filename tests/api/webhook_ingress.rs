//! The webhook ingress verifies, stores and acknowledges; nothing else.

use serde_json::{Value, json};

use crate::helpers::{PREVIOUS_WEBHOOK_SECRET, WEBHOOK_SECRET, spawn_app, stripe_signature};

/// A `customer.subscription.updated` event built from Stripe's example
/// objects, with its own id.
fn subscription_event(event_id: &str, event_type: &str) -> String {
    let fixtures = crate::stripe_fixtures::fixtures();
    let mut event = fixtures["event"].clone();
    event["id"] = json!(event_id);
    event["type"] = json!(event_type);
    event["created"] = json!(chrono::Utc::now().timestamp());
    event["data"] = json!({ "object": fixtures["subscription"].clone() });
    event.to_string()
}

#[tokio::test]
async fn the_same_event_delivered_five_times_is_stored_once() {
    let app = spawn_app().await;
    let payload = subscription_event("evt_dup_1", "customer.subscription.updated");
    for delivery in 1..=5 {
        assert_eq!(app.deliver(&payload).await, 200, "delivery {delivery}");
    }
    assert_eq!(app.stored_events("evt_dup_1").await, 1);
}

/// Deliveries that arrive together are stored in one commit: each is
/// acknowledged, a duplicate among them is stored once and told so, and
/// every other event is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_with_duplicates_among_them_store_each_event_once() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let deliveries = (0..64).map(|n| {
        // Every fourth delivery repeats event 0.
        let id = if n % 4 == 0 { 0 } else { n };
        let payload =
            subscription_event(&format!("evt_batch_{id}"), "customer.subscription.updated");
        let signature = stripe_signature(&payload, WEBHOOK_SECRET, 0);
        let post = client
            .post(&app.webhook_url)
            .header("Stripe-Signature", signature)
            .body(payload);
        async move {
            let reply = post.send().await.expect("delivery");
            (reply.status().as_u16(), reply.text().await.expect("body"))
        }
    });
    let answers = futures_util::future::join_all(deliveries).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let stored = answers.iter().filter(|(_, body)| body == "stored").count();
    let already = answers
        .iter()
        .filter(|(_, body)| body == "already stored")
        .count();
    assert_eq!((stored, already), (49, 15), "{answers:?}");
    let rows: i64 =
        sqlx::query_scalar("select count(*) from stripe_events where id like 'evt_batch_%'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(rows, 49);
    assert_eq!(app.stored_events("evt_batch_0").await, 1);
}

#[tokio::test]
async fn a_stale_signature_is_rejected_and_nothing_is_stored() {
    let app = spawn_app().await;
    let payload = subscription_event("evt_stale", "customer.subscription.updated");
    let six_minutes_old = stripe_signature(&payload, WEBHOOK_SECRET, 360);
    assert_eq!(
        app.post_webhook(payload.clone(), Some(six_minutes_old))
            .await,
        400
    );
    let four_minutes_old = stripe_signature(&payload, WEBHOOK_SECRET, 240);
    assert_eq!(app.stored_events("evt_stale").await, 0);
    assert_eq!(
        app.post_webhook(payload, Some(four_minutes_old)).await,
        200,
        "within tolerance"
    );
}

#[tokio::test]
async fn a_wrong_secret_or_a_missing_signature_is_rejected() {
    let app = spawn_app().await;
    let payload = subscription_event("evt_wrong", "customer.subscription.updated");
    let forged = stripe_signature(&payload, "whsec_attacker", 0);
    assert_eq!(app.post_webhook(payload.clone(), Some(forged)).await, 400);
    assert_eq!(app.post_webhook(payload.clone(), None).await, 400);
    assert_eq!(
        app.post_webhook(payload, Some("t=1,v1=zz".into())).await,
        400
    );
    assert_eq!(app.stored_events("evt_wrong").await, 0);
}

#[tokio::test]
async fn an_event_signed_with_the_rotated_out_secret_is_still_accepted() {
    let app = spawn_app().await;
    let payload = subscription_event("evt_rotated", "customer.subscription.updated");
    let signature = stripe_signature(&payload, PREVIOUS_WEBHOOK_SECRET, 0);
    assert_eq!(app.post_webhook(payload, Some(signature)).await, 200);
    assert_eq!(app.stored_events("evt_rotated").await, 1);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let app = spawn_app().await;
    let payload = format!("{{\"padding\": \"{}\"}}", "x".repeat(1024 * 1024));
    let signature = stripe_signature(&payload, WEBHOOK_SECRET, 0);
    assert_eq!(app.post_webhook(payload, Some(signature)).await, 413);
}

#[tokio::test]
async fn a_correctly_signed_malformed_body_is_rejected_with_400() {
    let app = spawn_app().await;
    for payload in ["{not json", "{\"id\": \"evt_x\"}", "[]"] {
        let signature = stripe_signature(payload, WEBHOOK_SECRET, 0);
        assert_eq!(
            app.post_webhook(payload.to_owned(), Some(signature)).await,
            400,
            "{payload}"
        );
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn an_event_type_we_do_not_handle_is_still_stored() {
    let app = spawn_app().await;
    let payload = subscription_event("evt_other", "customer.subscription.paused");
    assert_eq!(app.deliver(&payload).await, 200);
    let mut unknown: Value = serde_json::from_str(&payload).expect("json");
    unknown["id"] = json!("evt_unknown_type");
    unknown["type"] = json!("radar.early_fraud_warning.created");
    unknown["data"] =
        json!({ "object": { "id": "issfr_1", "object": "radar.early_fraud_warning" } });
    assert_eq!(app.deliver(&unknown.to_string()).await, 200);
    assert_eq!(app.stored_events("evt_unknown_type").await, 1);
}

#[tokio::test]
async fn while_the_database_is_down_an_event_is_not_acknowledged_and_is_stored_once_it_returns() {
    let app = spawn_app().await;
    let payload = subscription_event("evt_db_down", "customer.subscription.updated");
    app.set_database_reachable(false).await;
    let status = app.deliver(&payload).await;
    assert!(
        (500..600).contains(&status),
        "answered {status} while the database was down"
    );

    app.set_database_reachable(true).await;
    assert_eq!(app.deliver(&payload).await, 200, "Stripe's retry");
    assert_eq!(app.stored_events("evt_db_down").await, 1);
}

/// Signed bodies PostgreSQL could never store, or that are no Stripe event,
/// are refused with 400 (so Stripe stops retrying them), and none is stored.
#[tokio::test]
async fn signed_bodies_that_cannot_be_stored_or_are_no_event_get_400() {
    let app = spawn_app().await;
    let valid: Value = serde_json::from_str(&subscription_event(
        "evt_ok",
        "customer.subscription.updated",
    ))
    .expect("json");
    let mut nul_in_id = valid.clone();
    nul_in_id["id"] = json!("evt_nul\u{0}");
    let mut long_id = valid.clone();
    long_id["id"] = json!(format!("evt_{}", "x".repeat(9_000)));
    let mut not_an_event = valid.clone();
    not_an_event["object"] = json!("charge");
    let mut no_object = valid.clone();
    no_object["data"] = json!({});
    let nul_byte_in_body =
        valid
            .to_string()
            .replacen("\"evt_ok\"", "\"evt_ok\", \"note\": \"\u{0}\"", 1);
    for payload in [
        nul_in_id.to_string(),
        long_id.to_string(),
        not_an_event.to_string(),
        no_object.to_string(),
        nul_byte_in_body,
    ] {
        let signature = stripe_signature(&payload, WEBHOOK_SECRET, 0);
        let shown: String = payload.chars().take(60).collect();
        assert_eq!(
            app.post_webhook(payload, Some(signature)).await,
            400,
            "{shown}"
        );
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);
    // The valid one still goes in.
    assert_eq!(app.deliver(&valid.to_string()).await, 200);
    assert_eq!(app.stored_events("evt_ok").await, 1);
}
