//! The Stripe inbox, measured against the tests' stateful Stripe server
//! (reached through the real async-stripe client, with added latency):
//!
//! - drain: a renewal day's events for every subscription, flushed at once
//!   to one replica and then to two, with `--latency-ms` added to every
//!   Stripe call: events applied per second and Stripe requests per event;
//! - catch-up: every webhook dropped while the same activity happens, then
//!   the endpoint comes back: the time until everything is applied, against
//!   the catch-up interval.
//!
//! ```sh
//! cargo run --release --example inbox_bench
//! cargo run --release --example inbox_bench -- --subscriptions 300 --renewals 10 --latency-ms 50
//! ```
//!
//! It needs the PostgreSQL the tests use (`BENCH_DATABASE_URL`), creates
//! its own database and drops it afterwards.

use std::time::{Duration, Instant};

use billing_service::app::App;
use billing_service::domain::catalog::PriceSlot;
use billing_service::grpc::CallerTokens;
use billing_service::grpc::proto::billing_service_client::BillingServiceClient;
use billing_service::grpc::proto::org_admin_service_client::OrgAdminServiceClient;
use billing_service::grpc::proto::{self, BillingCycle};
use billing_service::stripe::events::ACTED_ON_TYPES;
use billing_service::stripe::{StripeSettings, WEBHOOK_PATH, WebhookSecrets};
use billing_service::worker::InboxSettings;
use clap::Parser;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tonic::transport::Channel;

#[path = "../bench_support/mod.rs"]
mod bench_support;
mod ingest;
#[path = "../../tests/api/stripe_fixtures.rs"]
#[allow(dead_code)]
mod stripe_fixtures;
#[path = "../../tests/api/stripe_server/mod.rs"]
#[allow(dead_code)]
mod stripe_server;

use bench_support::{Database, OPS_TOKEN, settings};
use stripe_server::FakeStripe;

const BFF_TOKEN: &str = "bff-bench-token-00000001";
const WEBHOOK_SECRET: &str = "whsec_bench_secret";
const SEAT_PRICE: &str = "price_teams_monthly";

#[derive(Debug, Parser)]
struct Args {
    /// Subscriptions, one per organization.
    #[arg(long, default_value_t = 200)]
    subscriptions: usize,
    /// Renewals per subscription in a run (two events each), plus one seat
    /// change made in the dashboard.
    #[arg(long, default_value_t = 10)]
    renewals: usize,
    /// Added to every Stripe answer while events drain.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Inbox workers per replica (the service's default).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Webhook senders, and pgbench's clients, in the ingest runs.
    #[arg(long, default_value_t = 32)]
    ingest_clients: usize,
    /// Seconds per ingest run.
    #[arg(long, default_value_t = 10)]
    ingest_seconds: u64,
    /// Ingest rounds; pgbench and the service alternate going first.
    #[arg(long, default_value_t = 2)]
    ingest_rounds: usize,
    /// The catch-up interval of the catch-up run.
    #[arg(long, default_value_t = 30_000)]
    catch_up_interval_ms: u64,
    #[command(flatten)]
    postgres: bench_support::AdminDatabase,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// A replica of the service on `database`, calling `stripe`.
struct Replica {
    grpc: Channel,
    webhook_url: String,
}

/// With `stripe` `None` the replica only receives webhooks: no inbox
/// worker runs, so the ingest run measures verifying and storing alone.
async fn start_replica(
    args: &Args,
    database: &PgConnectOptions,
    stripe: Option<&FakeStripe>,
    catch_up_interval: Duration,
) -> anyhow::Result<Replica> {
    let mut settings = settings(database.clone(), 20);
    settings.webhook_secrets = WebhookSecrets::parse(WEBHOOK_SECRET).map_err(anyhow::Error::msg)?;
    settings.caller_tokens = CallerTokens::parse(&format!("bff:{BFF_TOKEN},ops:{OPS_TOKEN}"))
        .map_err(anyhow::Error::msg)?;
    settings.catalog = settings
        .catalog
        .with_stripe_price_ids(|plan, slot, cycle| match slot {
            PriceSlot::Seat => Some(format!("price_{}_{}", plan.as_str(), cycle.as_str())),
            PriceSlot::UnitItem(item) => Some(format!("price_{item}_{}", cycle.as_str())),
        });
    settings.stripe = stripe.map(|stripe| StripeSettings {
        secret_key: "sk_test_bench".into(),
        api_base: stripe.base_url.clone(),
    });
    settings.inbox = InboxSettings {
        concurrency: args.concurrency,
        catch_up_interval,
        reconcile_interval: Duration::from_secs(24 * 3600),
        ..InboxSettings::default()
    };
    let app = App::build(settings).await?;
    let grpc = Channel::from_shared(format!("http://{}", app.grpc_addr()))?
        .connect()
        .await?;
    let webhook_url = format!("http://{}{WEBHOOK_PATH}", app.webhook_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(Replica { grpc, webhook_url })
}

fn as_user<T>(user: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {BFF_TOKEN}").parse().expect("ascii"),
    );
    metadata.insert("x-acting-user-id", user.parse().expect("ascii"));
    request
}

/// Posts every event signed, from 32 senders, spread over the replicas.
async fn deliver(replicas: &[&Replica], events: Vec<serde_json::Value>) -> anyhow::Result<()> {
    let urls: Vec<String> = replicas.iter().map(|r| r.webhook_url.clone()).collect();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(
        events.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (queue, urls) = (queue.clone(), urls.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Some((n, event)) = queue.lock().expect("queue").pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                post_signed(&client, &urls[n % urls.len()], event.to_string()).await?;
            }
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    Ok(())
}

/// Posts `body` signed as Stripe would; an error unless acknowledged.
async fn post_signed(client: &reqwest::Client, url: &str, body: String) -> anyhow::Result<()> {
    let signature = stripe_webhook::Webhook::generate_test_header(&body, WEBHOOK_SECRET, None);
    let status = client
        .post(url)
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await?
        .status();
    anyhow::ensure!(status.is_success(), "delivery answered {status}");
    Ok(())
}

/// Waits until `expected` events are stored and none is pending.
async fn drained(pool: &PgPool, expected: i64) -> anyhow::Result<()> {
    loop {
        let (stored, pending): (i64, i64) = sqlx::query_as(
            "select count(*), count(*) filter (where state = 'pending') from stripe_events",
        )
        .fetch_one(pool)
        .await?;
        anyhow::ensure!(
            sqlx::query_scalar::<_, i64>(
                "select count(*) from stripe_events where state = 'parked'"
            )
            .fetch_one(pool)
            .await?
                == 0,
            "events were parked"
        );
        if stored >= expected && pending == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored_events(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(pool)
        .await?)
}

/// Organizations with a paid Teams subscription each; their events are
/// applied before this returns.
async fn seed(
    replica: &Replica,
    stripe: &FakeStripe,
    pool: &PgPool,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut subscriptions = Vec::with_capacity(n);
    for i in 0..n {
        let owner = format!("owner-{i}");
        let org = OrgAdminServiceClient::new(replica.grpc.clone())
            .create_organization(as_user(
                &owner,
                proto::CreateOrganizationRequest {
                    name: format!("Team {i}"),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        let url = BillingServiceClient::new(replica.grpc.clone())
            .create_checkout_session(as_user(
                &owner,
                proto::CreateCheckoutSessionRequest {
                    org_id: org.id,
                    plan: "teams".into(),
                    billing_cycle: BillingCycle::Monthly.into(),
                    seats: 3,
                    success_url: "https://app.example.com/done".into(),
                    cancel_url: "https://app.example.com/billing".into(),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner()
            .url;
        subscriptions.push(stripe.complete_checkout(&url));
    }
    let events = stripe.take_events();
    let expected = stored_events(pool).await? + i64::try_from(events.len())?;
    deliver(&[replica], events).await?;
    drained(pool, expected).await?;
    Ok(subscriptions)
}

/// A renewal day in Stripe, nothing delivered: `renewals` renewals of every
/// subscription and one seat change made in the dashboard.
fn renewal_day(stripe: &FakeStripe, subscriptions: &[String], renewals: usize, round: u64) {
    for (n, sub) in subscriptions.iter().enumerate() {
        for renewal in 0..renewals {
            stripe.end_period(sub);
            if renewal == renewals / 2 {
                let seats = 3 + (n as u64 + round) % 5;
                stripe.set_quantity_without_event(sub, SEAT_PRICE, seats);
                stripe.update_status(sub, "active");
            }
        }
    }
}

/// One drain run: the renewal day flushed to `replicas` with Stripe slow.
async fn drain(
    args: &Args,
    replicas: &[&Replica],
    stripe: &FakeStripe,
    pool: &PgPool,
    subscriptions: &[String],
    round: u64,
) -> anyhow::Result<()> {
    renewal_day(stripe, subscriptions, args.renewals, round);
    let events = stripe.take_events();
    let count = events.len();
    let expected = stored_events(pool).await? + i64::try_from(count)?;
    stripe.set_delay(Duration::from_millis(args.latency_ms));
    let requests_before = stripe.requests("");
    let started = Instant::now();
    deliver(replicas, events).await?;
    let delivered = started.elapsed();
    drained(pool, expected).await?;
    let elapsed = started.elapsed();
    let requests = stripe.requests("") - requests_before;
    stripe.set_delay(Duration::ZERO);
    println!(
        "| {} | {} | {} ms | {:.2} s | {:.2} s | {:.0} | {} | {:.3} |",
        replicas.len(),
        count,
        args.latency_ms,
        delivered.as_secs_f64(),
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        requests,
        requests as f64 / count as f64,
    );
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let admin: PgConnectOptions = args.postgres.admin_url.clone();
    println!("# inbox_bench\n");
    println!("machine: {}", bench_support::machine());
    let db = Database::create(&admin, &[], 0).await?;
    let options: PgConnectOptions = db.url().parse()?;
    let pool = PgPool::connect_with(options.clone()).await?;
    let stripe = FakeStripe::start().await;
    // Catch-up lists nothing until its own run: the drain runs measure
    // delivered events only.
    stripe.set_events_unlisted(true);
    let interval = Duration::from_millis(args.catch_up_interval_ms);
    let a = start_replica(&args, &options, Some(&stripe), interval).await?;
    let subscriptions = seed(&a, &stripe, &pool, args.subscriptions).await?;

    println!(
        "\n## Drain: a renewal day flushed at once ({} subscriptions, {} renewals and a seat change each, {} workers per replica)\n",
        args.subscriptions, args.renewals, args.concurrency
    );
    println!(
        "| replicas | events | Stripe latency | delivered in | applied in | events/s | Stripe requests | requests/event |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    drain(&args, &[&a], &stripe, &pool, &subscriptions, 0).await?;
    let b = start_replica(&args, &options, Some(&stripe), interval).await?;
    drain(&args, &[&a, &b], &stripe, &pool, &subscriptions, 1).await?;

    println!(
        "\n## Catch-up: every webhook dropped during the same activity, then the endpoint returns (interval {} s)\n",
        interval.as_secs()
    );
    stripe.set_deliveries_dropped(true);
    renewal_day(&stripe, &subscriptions, args.renewals, 2);
    stripe.set_deliveries_dropped(false);
    // Catch-up lists only the types the inbox acts on.
    let listed = stripe
        .all_events()
        .iter()
        .filter(|e| ACTED_ON_TYPES.contains(&e["type"].as_str().unwrap_or("")))
        .count();
    let expected = i64::try_from(listed)?;
    let missing = expected - stored_events(&pool).await?;
    stripe.set_delay(Duration::from_millis(args.latency_ms));
    stripe.set_events_unlisted(false);
    let returned = Instant::now();
    drained(&pool, expected).await?;
    let converged = returned.elapsed();
    stripe.set_delay(Duration::ZERO);
    let caught_up: i64 =
        sqlx::query_scalar("select count(*) from stripe_events where source = 'catch_up'")
            .fetch_one(&pool)
            .await?;
    println!(
        "| events never delivered | stored by catch-up | applied after the endpoint returned | within one interval |"
    );
    println!("| ---: | ---: | ---: | --- |");
    println!(
        "| {missing} | {caught_up} | {:.1} s | {} |",
        converged.as_secs_f64(),
        if converged <= interval { "yes" } else { "no" }
    );
    let report = BillingServiceClient::new(a.grpc.clone())
        .reconcile_stripe(bench_support::as_operator(proto::ReconcileStripeRequest {
            org_id: String::new(),
            dry_run: true,
        }))
        .await?
        .into_inner();
    println!(
        "\nafterwards, a dry-run reconciliation: {} checked, {} in sync, {} drifted",
        report.checked,
        report.in_sync,
        report.drifted.len()
    );

    let sample = stripe
        .all_events()
        .into_iter()
        .find(|e| e["type"] == "customer.subscription.updated")
        .ok_or_else(|| anyhow::anyhow!("no event to ingest"))?;
    ingest::run(&args, &admin, sample).await?;
    pool.close().await;
    db.drop_now().await?;
    Ok(())
}
