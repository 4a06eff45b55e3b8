//! Lifecycle events out, measured:
//!
//! - the outbox's cost on the write path: `GrantCredits` (each records a
//!   `credits.granted` event in its transaction) spread over the
//!   organizations, with no webhook endpoint and with one configured (its
//!   deliveries fanned out in the same statement, and sent meanwhile),
//!   against `AdjustCredits` adding the same amount, which records no
//!   event: the same ledger write without the outbox. The runs take turns
//!   going first from round to round;
//! - delivery throughput: the events of that load queued again for a fresh
//!   endpoint while it is paused, then resumed and drained to a local
//!   receiver, by one replica and by two.
//!
//! ```sh
//! cargo run --release --example webhook_bench
//! cargo run --release --example webhook_bench -- --orgs 200 --concurrency 16 --seconds 10 --rounds 2
//! ```
//!
//! It needs the PostgreSQL the tests use (`BENCH_DATABASE_URL`), creates
//! its own database and drops it afterwards. Service replicas, receiver
//! and client share this process and the machine with PostgreSQL.

#[path = "bench_support/mod.rs"]
mod bench_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::serve::ListenerExt;
use billing_service::app::App;
use billing_service::grpc::proto;
use billing_service::grpc::proto::credit_service_client::CreditServiceClient;
use billing_service::grpc::proto::event_service_client::EventServiceClient;
use billing_service::grpc::proto::org_admin_service_client::OrgAdminServiceClient;
use clap::Parser;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tonic::transport::Channel;

use bench_support::{
    Database, LoadResult, Outcome, as_operator, channels, drive, micros, org_id, settings,
};

#[derive(Debug, Parser)]
struct Args {
    /// Organizations each run's calls are spread over (each a delivery
    /// lane). Every run has organizations of its own, so no run finds the
    /// ledgers and invitations an earlier run left.
    #[arg(long, default_value_t = 200)]
    orgs: usize,
    /// Grants in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load per write-path run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// HTTP/2 connections the client spreads its calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Write-path rounds; with and without an endpoint alternate going first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Events drained in each delivery run.
    #[arg(long, default_value_t = 5_000)]
    events: usize,
    /// The drained endpoint's cap of deliveries in flight (1 to 64).
    #[arg(long, default_value_t = 64)]
    max_in_flight: u32,
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

async fn start_replica(options: &PgConnectOptions) -> anyhow::Result<String> {
    let app = App::build(settings(options.clone(), 20)).await?;
    let url = format!("http://{}", app.grpc_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(url)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let admin: PgConnectOptions = args.postgres.admin_url.clone();
    println!("# webhook_bench\n");
    println!("machine: {}", bench_support::machine());
    let runs = args.rounds * WriteRun::ALL.len();
    let db = Database::create(&admin, &bench_support::TRIAL_ORGS, args.orgs * runs).await?;
    let options: PgConnectOptions = db.url().parse()?;
    let pool = PgPool::connect_with(options.clone()).await?;
    let url = start_replica(&options).await?;
    let channels = channels(&url, args.connections).await?;
    let receiver = Receiver::start().await?;
    let mut events = EventServiceClient::new(channels[0].clone());

    println!(
        "\n## The write path: a ledger write with and without its event, and with an endpoint ({} orgs of its own per run, {} in flight, {} s per run)\n",
        args.orgs, args.concurrency, args.seconds
    );
    println!("| round | run | calls/s | p50 | p90 | p99 | errors | delivered meanwhile |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut first_org = 0;
    for round in 1..=args.rounds {
        let mut order = WriteRun::ALL;
        order.rotate_left(round - 1);
        for run in order {
            let endpoint = if run.with_endpoint() {
                Some(create_endpoint(&mut events, &receiver.url("live"), 64).await?)
            } else {
                None
            };
            let before = receiver.count("live");
            let result = writes(&args, &channels, round, run, first_org).await?;
            first_org += args.orgs;
            let delivered = receiver.count("live") - before;
            if let Some(id) = endpoint {
                events
                    .delete_webhook_endpoint(as_operator(proto::DeleteWebhookEndpointRequest {
                        endpoint_id: id,
                    }))
                    .await?;
            }
            report(round, run, &result, delivered);
        }
    }

    println!(
        "\n## Delivery: queued events drained to a local receiver (endpoint cap {} in flight, {} per replica)\n",
        args.max_in_flight,
        billing_service::service::WebhookSettings::default().concurrency
    );
    println!("| replicas | events | seconds | events/s | lanes |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let available: (i64,) =
        sqlx::query_as("select count(*) from billing_events where type = 'credits.granted'")
            .fetch_one(&pool)
            .await?;
    let drained = available.0.min(i64::try_from(args.events)?);
    let first_event: (uuid::Uuid,) = sqlx::query_as(
        "select id from billing_events where type = 'credits.granted' order by state_version, seq limit 1",
    )
    .fetch_one(&pool)
    .await?;
    let last_event: (uuid::Uuid,) = sqlx::query_as(
        "select id from billing_events where type = 'credits.granted'
         order by state_version, seq offset $1 limit 1",
    )
    .bind(drained - 1)
    .fetch_one(&pool)
    .await?;
    let lanes: (i64,) = sqlx::query_as(
        "select count(distinct org_id) from (select org_id from billing_events
         where type = 'credits.granted' order by state_version, seq limit $1) e",
    )
    .bind(drained)
    .fetch_one(&pool)
    .await?;
    for replicas in [1, 2] {
        if replicas == 2 {
            start_replica(&options).await?;
        }
        let name = format!("drain{replicas}");
        let id = create_endpoint(&mut events, &receiver.url(&name), args.max_in_flight).await?;
        events
            .pause_webhook_endpoint(as_operator(proto::PauseWebhookEndpointRequest {
                endpoint_id: id.clone(),
            }))
            .await?;
        let queued = events
            .replay_webhook_events(as_operator(proto::ReplayWebhookEventsRequest {
                endpoint_id: id.clone(),
                from_event_id: first_event.0.to_string(),
                to_event_id: last_event.0.to_string(),
            }))
            .await?
            .into_inner()
            .queued;
        let started = Instant::now();
        events
            .resume_webhook_endpoint(as_operator(proto::ResumeWebhookEndpointRequest {
                endpoint_id: id.clone(),
            }))
            .await?;
        receiver.wait_for(&name, queued).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "| {replicas} | {queued} | {seconds:.2} | {:.0} | {} |",
            queued as f64 / seconds,
            lanes.0
        );
        events
            .delete_webhook_endpoint(as_operator(proto::DeleteWebhookEndpointRequest {
                endpoint_id: id,
            }))
            .await?;
    }
    pool.close().await;
    db.drop_now().await?;
    Ok(())
}

async fn create_endpoint(
    events: &mut EventServiceClient<Channel>,
    url: &str,
    max_in_flight: u32,
) -> anyhow::Result<String> {
    Ok(events
        .create_webhook_endpoint(as_operator(proto::CreateWebhookEndpointRequest {
            url: url.to_owned(),
            description: "webhook_bench".into(),
            event_types: vec![],
            max_in_flight: Some(max_in_flight),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .id)
}

/// One write-path run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteRun {
    /// AdjustCredits (+): a ledger write that records no event.
    AdjustNoEvent,
    /// GrantCredits: the same write and its `credits.granted` event.
    GrantNoEndpoint,
    /// GrantCredits with an endpoint taking every event.
    GrantWithEndpoint,
    /// InviteMember: a change that took a state version before it had an
    /// event (invitations are an entitlement input), and its event.
    InviteNoEndpoint,
    /// InviteMember with an endpoint taking every event.
    InviteWithEndpoint,
}

impl WriteRun {
    const ALL: [Self; 5] = [
        Self::AdjustNoEvent,
        Self::GrantNoEndpoint,
        Self::GrantWithEndpoint,
        Self::InviteNoEndpoint,
        Self::InviteWithEndpoint,
    ];

    fn with_endpoint(self) -> bool {
        match self {
            Self::GrantWithEndpoint | Self::InviteWithEndpoint => true,
            Self::AdjustNoEvent | Self::GrantNoEndpoint | Self::InviteNoEndpoint => false,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::AdjustNoEvent => "AdjustCredits, no event",
            Self::GrantNoEndpoint => "GrantCredits + event, no endpoint",
            Self::GrantWithEndpoint => "GrantCredits + event, one endpoint",
            Self::InviteNoEndpoint => "InviteMember + event, no endpoint",
            Self::InviteWithEndpoint => "InviteMember + event, one endpoint",
        }
    }
}

/// The run's calls with a fresh key each, spread over the organizations.
async fn writes(
    args: &Args,
    channels: &[Channel],
    round: usize,
    run: WriteRun,
    first_org: usize,
) -> anyhow::Result<LoadResult> {
    let clients: Vec<(CreditServiceClient<Channel>, OrgAdminServiceClient<Channel>)> = channels
        .iter()
        .map(|c| {
            (
                CreditServiceClient::new(c.clone()),
                OrgAdminServiceClient::new(c.clone()),
            )
        })
        .collect();
    let orgs = args.orgs;
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    drive(
        args.concurrency,
        Duration::from_secs(2),
        Duration::from_secs(args.seconds),
        move |worker, n| {
            let (mut credits, mut org_admin) = clients[worker % clients.len()].clone();
            let org_id = org_id(first_org + usize::try_from(n).unwrap_or(0) % orgs);
            let idempotency_key = format!("{prefix}-{round}-{n}");
            let reason = "webhook_bench".to_owned();
            async move {
                let answered = match run {
                    WriteRun::AdjustNoEvent => credits
                        .adjust_credits(as_operator(proto::AdjustCreditsRequest {
                            org_id,
                            amount_micros: 1_000,
                            reason,
                            idempotency_key,
                        }))
                        .await
                        .map(drop),
                    WriteRun::GrantNoEndpoint | WriteRun::GrantWithEndpoint => credits
                        .grant_credits(as_operator(proto::GrantCreditsRequest {
                            org_id,
                            amount_micros: 1_000,
                            reason,
                            expires_at: None,
                            idempotency_key,
                        }))
                        .await
                        .map(drop),
                    WriteRun::InviteNoEndpoint | WriteRun::InviteWithEndpoint => org_admin
                        .invite_member(as_operator(proto::InviteMemberRequest {
                            org_id,
                            email: format!("{idempotency_key}@example.com"),
                            role: proto::Role::Member.into(),
                        }))
                        .await
                        .map(drop),
                };
                match answered {
                    Ok(()) => Outcome::ok(1),
                    Err(_) => Outcome::failed(),
                }
            }
        },
    )
    .await
}

fn report(round: usize, run: WriteRun, result: &LoadResult, delivered: u64) {
    println!(
        "| {round} | {} | {:.0} | {} | {} | {} | {} | {} |",
        run.name(),
        result.calls_per_second(),
        micros(result.p(0.5)),
        micros(result.p(0.9)),
        micros(result.p(0.99)),
        result.errors,
        if run.with_endpoint() {
            delivered.to_string()
        } else {
            "-".into()
        }
    );
}

/// A receiver that answers 204 at once and counts deliveries by path.
#[derive(Clone)]
struct Receiver {
    addr: std::net::SocketAddr,
    counts: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        // TCP_NODELAY on every accepted connection, as a production
        // receiver would run.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let receiver = Self {
            addr,
            counts: Arc::default(),
        };
        let state = receiver.clone();
        let router = Router::new().fallback(move |uri: axum::http::Uri| {
            let state = state.clone();
            async move {
                state
                    .counter(uri.path().trim_start_matches('/'))
                    .fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        });
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(receiver)
    }

    fn counter(&self, name: &str) -> Arc<AtomicU64> {
        self.counts
            .lock()
            .expect("lock")
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    fn count(&self, name: &str) -> u64 {
        self.counter(name).load(Ordering::Relaxed)
    }

    async fn wait_for(&self, name: &str, n: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.count(name) < n {
            anyhow::ensure!(Instant::now() < deadline, "the drain did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}
