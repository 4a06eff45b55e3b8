//! A renewal-day storm on two replicas: a couple of thousand Stripe events,
//! each delivered one to three times in a shuffled order to either replica,
//! while one replica (the real binary) is killed with SIGKILL again and
//! again. Every event is stored once and finished, every credit purchase is
//! credited once, and every subscription ends as Stripe has it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::helpers::{As, TestApp, TestOptions, WEBHOOK_SECRET, spawn_app_with, stripe_signature};
use crate::service_process::ServiceProcess;
use crate::stripe_server::FakeStripe;

const ORGS: usize = 40;
const RENEWALS: usize = 22;
const SEAT_PRICE: &str = "price_teams_monthly";
const DOLLAR: i64 = 1_000_000;
/// Delivery rounds; the binary replica is killed once in each.
const KILLS: usize = 5;

/// Each organization's owner and what it bought.
struct Customer {
    org: String,
    owner: String,
    subscription: String,
    purchased_micros: i64,
}

async fn buy_credits(app: &TestApp, stripe: &FakeStripe, customer: &Customer, dollars: i64) {
    let url = app
        .start_credit_purchase(&customer.org, &customer.owner, dollars * DOLLAR)
        .await;
    stripe.complete_payment_checkout(&url);
}

/// What Stripe does on renewal day, none of it delivered yet: renewals,
/// seat changes in the dashboard, a failed payment that recovers, credit
/// purchases, and some subscriptions ended.
async fn renewal_day(app: &TestApp, stripe: &FakeStripe, customers: &mut [Customer]) {
    for (n, customer) in customers.iter_mut().enumerate() {
        let sub = &customer.subscription;
        for round in 0..RENEWALS {
            stripe.end_period(sub);
            if round == RENEWALS / 2 {
                stripe.set_quantity_without_event(sub, SEAT_PRICE, 3 + (n as u64 % 4));
                stripe.update_status(sub, "active");
                stripe.fail_renewal_payment(sub);
                stripe.pay_open_invoice(sub);
                stripe.update_status(sub, "active");
            }
        }
        for dollars in [10 + n as i64, 25] {
            buy_credits(app, stripe, customer, dollars).await;
            customer.purchased_micros += dollars * DOLLAR;
        }
        if n % 4 == 0 {
            stripe.delete_subscription(sub);
        }
    }
}

/// Posts `event` signed, as Stripe would, to `url`: true when acknowledged.
async fn post(client: &reqwest::Client, url: &str, event: &str) -> bool {
    let signature = stripe_signature(event, WEBHOOK_SECRET, 0);
    match client
        .post(url)
        .header("Stripe-Signature", signature)
        .body(event.to_owned())
        .send()
        .await
    {
        Ok(reply) => reply.status() == reqwest::StatusCode::OK,
        Err(_) => false,
    }
}

/// Delivers `events` from eight concurrent senders, each event to the
/// binary replica or the in-process one at random; a delivery the binary
/// does not acknowledge (it is dead) is retried on the other, as Stripe
/// retries until some replica answers 200. Returns how many deliveries the
/// binary acknowledged.
async fn deliver_shuffled(
    app_url: String,
    binary_url: String,
    events: Vec<String>,
    seed: u64,
) -> usize {
    let queue = Arc::new(std::sync::Mutex::new(events));
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..8 {
        let queue = queue.clone();
        let (app_url, binary_url) = (app_url.clone(), binary_url.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + sender);
            let mut by_binary = 0;
            loop {
                let Some(event) = queue.lock().expect("queue").pop() else {
                    return by_binary;
                };
                if rng.random_bool(0.5) && post(&client, &binary_url, &event).await {
                    by_binary += 1;
                    continue;
                }
                assert!(post(&client, &app_url, &event).await, "{event}");
            }
        });
    }
    let mut by_binary = 0;
    while let Some(sent) = senders.join_next().await {
        by_binary += sent.expect("a sender");
    }
    by_binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_shuffled_duplicated_events_on_two_replicas_with_kills_converges_once() {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with(TestOptions {
        inbox_concurrency: 2,
        ..TestOptions::with_stripe(&stripe)
    })
    .await;
    let mut customers = Vec::new();
    for n in 0..ORGS {
        let owner = format!("owner-{n}");
        let (org, subscription) = app.subscribed_org(&stripe, &owner, 3).await;
        customers.push(Customer {
            org,
            owner,
            subscription,
            purchased_micros: 0,
        });
    }
    renewal_day(&app, &stripe, &mut customers).await;
    let events = stripe.take_events();
    let distinct: HashSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(distinct.len() >= 2_000, "{} events", distinct.len());

    // Every event one to three times, shuffled.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut deliveries: Vec<String> = Vec::new();
    for event in &events {
        for _ in 0..rng.random_range(1..=3) {
            deliveries.push(event.to_string());
        }
    }
    deliveries.shuffle(&mut rng);

    // Catch-up must not fill gaps the ingress or the inbox would leave.
    stripe.set_events_unlisted(true);
    let mut binary = ServiceProcess::new(&app, &stripe)
        .with("BILLING_INBOX_LEASE_MS", "1500")
        .with("BILLING_INBOX_CONCURRENCY", "4");
    binary.start().await;
    let app_url = app.webhook_url.clone();
    let binary_url = binary.webhook_url();
    let per_round = deliveries.len().div_ceil(KILLS);
    for (round, chunk) in deliveries.chunks(per_round).enumerate() {
        let sending = tokio::spawn(deliver_shuffled(
            app_url.clone(),
            binary_url.clone(),
            chunk.to_vec(),
            round as u64 * 100,
        ));
        // Killed mid-round, with deliveries in flight and events claimed.
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        binary.kill();
        let by_binary = sending.await.expect("the round is delivered");
        assert!(by_binary > 0, "round {round}: the binary took no delivery");
        binary.start().await;
    }
    app.wait_for_inbox().await;

    assert_every_event_finished_once(&app, &distinct).await;
    for customer in &customers {
        assert_matches_stripe(&app, &stripe, customer).await;
        assert_eq!(
            app.balance_micros(&customer.org).await,
            customer.purchased_micros,
            "{}: each purchase credited once",
            customer.org
        );
        let purchases = app
            .ledger(&customer.org)
            .await
            .into_iter()
            .filter(|entry| entry.amount_micros > 0)
            .count();
        assert_eq!(purchases, 2, "{}", customer.org);
    }
    binary.kill();
}

async fn assert_every_event_finished_once(app: &TestApp, distinct: &HashSet<String>) {
    let rows: Vec<(String, String)> = sqlx::query_as("select id, state from stripe_events")
        .fetch_all(&app.pool)
        .await
        .expect("events");
    let states: HashMap<String, String> = rows.iter().cloned().collect();
    assert_eq!(states.len(), rows.len(), "an event stored twice");
    for id in distinct {
        let state = states.get(id).map(String::as_str);
        assert!(
            matches!(state, Some("applied" | "no_effect")),
            "event {id} is {state:?}"
        );
    }
    let unfinished = rows
        .iter()
        .filter(|(_, state)| state != "applied" && state != "no_effect")
        .count();
    assert_eq!(unfinished, 0, "events left pending or parked");
}

async fn assert_matches_stripe(app: &TestApp, stripe: &FakeStripe, customer: &Customer) {
    let live = stripe.subscription_json(&customer.subscription);
    let ours = app
        .subscription_of(&customer.org, As::User(&customer.owner))
        .await;
    assert_eq!(ours.status, live["status"].as_str().expect("status"));
    let seats = stripe
        .item_quantity(&customer.subscription, SEAT_PRICE)
        .expect("seat item");
    assert_eq!(ours.paid_seats, seats as i64, "{}", customer.org);
    // Stripe reports the period on each item.
    let period_end: &Value = &live["items"]["data"][0]["current_period_end"];
    assert_eq!(
        ours.current_period_end.as_ref().map(|t| t.seconds),
        period_end.as_i64(),
        "{}",
        customer.org
    );
}
