//! What the benchmarks share: the service's settings, scratch databases,
//! the no-op baseline server and a closed-loop load driver with
//! hdrhistogram latencies.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use billing_service::app::AppSettings;
use billing_service::domain::catalog::{Catalog, SignupPolicy};
use billing_service::domain::entitlement::StalePolicy;
use billing_service::domain::trial::TrialLength;
use billing_service::grpc::{CallerTokens, ConcurrencyLimits};
use billing_service::service;
use billing_service::stripe::WebhookSecrets;
use billing_service::worker::{InboxSettings, MaintenanceSettings};
use hdrhistogram::Histogram;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tonic::codegen::{BoxFuture, http};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The allocator the service's binary runs with (`src/main.rs`), for every
/// benchmark: each runs the service and its baseline in its own process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const GATEWAY_TOKEN: &str = "gateway-bench-token-0001";
pub const OPS_TOKEN: &str = "ops-bench-token-00000001";

/// The PostgreSQL the benchmarks make their scratch databases on: the one
/// the tests use, unless `BENCH_DATABASE_URL` says otherwise.
#[derive(Debug, clap::Args)]
pub struct AdminDatabase {
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub admin_url: PgConnectOptions,
}

/// The service as a deployment would run it, with ports chosen by the OS.
pub fn settings(database: PgConnectOptions, max_connections: u32) -> AppSettings {
    AppSettings {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        webhook_addr: "127.0.0.1:0".parse().expect("addr"),
        // Metrics on, as a production server runs: their cost is measured.
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        webhook_secrets: WebhookSecrets::none(),
        database,
        database_max_connections: max_connections,
        caller_tokens: CallerTokens::parse(&format!("gateway:{GATEWAY_TOKEN},ops:{OPS_TOKEN}"))
            .expect("tokens"),
        catalog: Catalog::from_toml(Catalog::DEFAULT_TOML).expect("catalog"),
        service: service::Settings {
            trial_length: TrialLength::days(30),
            signup_policy: SignupPolicy {
                monthly_enabled: true,
            },
            min_version_wait: Duration::from_millis(
                std::env::var("BENCH_MIN_VERSION_WAIT_MS")
                    .ok()
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(100),
            ),
            stale_policy: StalePolicy {
                max_staleness: chrono::TimeDelta::seconds(60),
                fail_closed_features: vec![],
            },
            watch_log_capacity: 10_000,
            operation_lease: Duration::from_secs(120),
            event_lease: Duration::from_secs(60),
            operation_wait: Duration::from_secs(5),
            // The service's default unless the run says otherwise.
            usage_lanes: std::env::var("BILLING_USAGE_COMMIT_LANES")
                .ok()
                .and_then(|lanes| lanes.parse().ok())
                .unwrap_or_else(|| billing_service::service::default_usage_lanes() as usize),
            // The benchmarks' receivers listen on loopback.
            webhooks: service::WebhookSettings {
                policy: billing_service::domain::webhooks::AddressPolicy {
                    allow_private: true,
                },
                ..service::WebhookSettings::default()
            },
        },
        stripe: None,
        inbox: InboxSettings::default(),
        maintenance: MaintenanceSettings::default(),
        limits: ConcurrencyLimits::default(),
        webhook_limits: billing_service::http_listener::ListenerLimits::default(),
        shutdown_grace: Duration::from_secs(10),
        clock: None,
    }
}

/// A scratch database, migrated and seeded; dropped by [`Database::drop_now`].
pub struct Database {
    admin: PgConnectOptions,
    pub name: String,
}

impl Database {
    /// Creates it and runs `seed` (statements that may use `$1`, bound to
    /// `n`) in one transaction with the announcing triggers off.
    pub async fn create(admin: &PgConnectOptions, seed: &[&str], n: usize) -> anyhow::Result<Self> {
        let name = format!("billing_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(admin).await?;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut conn)
            .await?;
        let db = Self {
            admin: admin.clone(),
            name,
        };
        let mut conn = PgConnection::connect_with(&admin.clone().database(&db.name)).await?;
        billing_service::store::MIGRATOR.run(&mut conn).await?;
        if n > 0 {
            let n = i64::try_from(n)?;
            let mut tx = conn.begin().await?;
            sqlx::query("set local session_replication_role = replica")
                .execute(&mut *tx)
                .await?;
            for statement in seed {
                let query = sqlx::query(statement);
                let query = if statement.contains("$1") {
                    query.bind(n)
                } else {
                    query
                };
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(db)
    }

    pub fn url(&self) -> String {
        let host = self.admin.get_host();
        let port = self.admin.get_port();
        let user = self.admin.get_username();
        format!("postgres://{user}@{host}:{port}/{}", self.name)
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect_with(&self.admin).await?;
        sqlx::query(&format!(
            "drop database if exists {} with (force)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

/// Seeds `$1` organizations in an active trial (credits not locked), owner
/// `u<i>` each, with the ids [`org_id`] gives.
pub const TRIAL_ORGS: [&str; 2] = [
    "insert into organizations (id, name, plan, trial_end, require_seats, creator_user_id, created_at)
     select ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'Org ' || i, 'teams',
            now() + interval '20 days', true, 'u' || i, now()
     from generate_series(0, $1 - 1) i",
    "insert into memberships (org_id, user_id, role, joined_at)
     select ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'u' || i, 'owner', now()
     from generate_series(0, $1 - 1) i",
];

/// The seeded organization `i`'s id.
pub fn org_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// A request carrying the operators' token.
pub fn as_operator<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let token = format!("Bearer {OPS_TOKEN}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", token);
    request
}

/// `n` HTTP/2 connections with tonic's default client settings (TCP_NODELAY on).
pub async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(Channel::from_shared(url.to_owned())?.connect().await?);
    }
    Ok(channels)
}

/// The no-op baseline: one bare unary method (`/bench.Noop/Call`, empty
/// messages, no work) on a tonic server with the service's own transport
/// settings (TCP_NODELAY, keepalives, fixed flow-control windows).
pub async fn start_noop_baseline() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = billing_service::transport::incoming(listener);
    tokio::spawn(
        billing_service::transport::server()
            .add_service(Noop)
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}

pub const NOOP_PATH: &str = "/bench.Noop/Call";

/// Calls the baseline's no-op method once.
pub async fn call_noop(channel: Channel) -> Result<(), Status> {
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = http::uri::PathAndQuery::from_static(NOOP_PATH);
    client.unary(Request::new(()), path, codec).await.map(drop)
}

#[derive(Debug, Clone)]
struct Noop;

impl tonic::server::NamedService for Noop {
    const NAME: &'static str = "bench.Noop";
}

struct NoopCall;

impl tonic::server::UnaryService<()> for NoopCall {
    type Response = ();
    type Future = std::future::Ready<Result<Response<()>, Status>>;

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

impl<B> tower::Service<http::Request<B>> for Noop
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(NoopCall, request).await)
        })
    }
}

/// One call's result for the driver.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub ok: bool,
    /// The answer was checked and was not what the seeded state implies.
    pub wrong: bool,
    /// Work units the call did (reports in a batch; 1 otherwise).
    pub units: u64,
}

impl Outcome {
    pub fn ok(units: u64) -> Self {
        Self {
            ok: true,
            wrong: false,
            units,
        }
    }

    pub fn failed() -> Self {
        Self {
            ok: false,
            wrong: false,
            units: 0,
        }
    }
}

pub struct LoadResult {
    pub calls: u64,
    pub units: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub wrong: u64,
}

impl LoadResult {
    pub fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    pub fn units_per_second(&self) -> f64 {
        self.units as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p(&self, quantile: f64) -> u64 {
        self.latency.value_at_quantile(quantile)
    }
}

/// A closed loop: `concurrency` workers each send a call, wait for it, and
/// send the next, for `warm_up` (not counted) then `measure`. `call` gets
/// the worker and a sequence number unique across the run.
pub async fn drive<F, Fut>(
    concurrency: usize,
    warm_up: Duration,
    measure: Duration,
    call: F,
) -> anyhow::Result<LoadResult>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let sequence = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut result = None;
    for (counted, length) in [(false, warm_up), (true, measure)] {
        let started = Instant::now();
        let deadline = started + length;
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..concurrency {
            let call = call.clone();
            let sequence = sequence.clone();
            tasks.spawn(async move {
                let mut latency =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let (mut calls, mut units, mut errors, mut wrong) = (0u64, 0u64, 0u64, 0u64);
                while Instant::now() < deadline {
                    let n = sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let sent = Instant::now();
                    let outcome = call(worker, n).await;
                    latency.saturating_record(
                        u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX),
                    );
                    calls += 1;
                    units += outcome.units;
                    errors += u64::from(!outcome.ok);
                    wrong += u64::from(outcome.wrong);
                }
                (calls, units, errors, wrong, latency)
            });
        }
        let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let (mut calls, mut units, mut errors, mut wrong) = (0, 0, 0, 0);
        while let Some(done) = tasks.join_next().await {
            let (c, u, e, w, h) = done?;
            calls += c;
            units += u;
            errors += e;
            wrong += w;
            merged.add(h)?;
        }
        if counted {
            result = Some(LoadResult {
                calls,
                units,
                elapsed: started.elapsed(),
                latency: merged,
                errors,
                wrong,
            });
        }
    }
    result.ok_or_else(|| anyhow::anyhow!("no measurement"))
}

pub fn micros(value: u64) -> String {
    if value >= 10_000 {
        format!("{:.1} ms", value as f64 / 1000.0)
    } else {
        format!("{value} µs")
    }
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// "2 cores, <model>; build: release", for the report's head.
pub fn machine() -> String {
    format!(
        "{} cores, {}; build: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// Runs `script` with pgbench (`-M prepared`, two threads) on `db` for
/// `seconds` with `clients` clients; returns transactions per second.
pub fn pgbench(
    admin: &PgConnectOptions,
    db: &Database,
    script: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!(
        "bench_{}_{}.sql",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, script)?;
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-h")
        .arg(admin.get_host())
        .arg("-p")
        .arg(admin.get_port().to_string())
        .arg("-U")
        .arg(admin.get_username())
        .arg("-f")
        .arg(&path)
        .arg(&db.name)
        .output()?;
    let _ = std::fs::remove_file(&path);
    let out = String::from_utf8_lossy(&output.stdout);
    out.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "pgbench said {out:?} {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}
