//! The entitlement hot path, measured: `CheckEntitlement` throughput and
//! latency against a no-op tonic baseline in the same run, propagation
//! between two replicas, and memory and start-up with many organizations.
//!
//! ```sh
//! cargo run --release --example entitlement_bench
//! cargo run --release --example entitlement_bench -- --orgs 10000 --concurrency 64 --seconds 10
//! ```
//!
//! It needs the PostgreSQL the tests use (`BENCH_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), creates its own
//! databases and drops them afterwards. The service runs in this process
//! (client and server share the machine, as the targets ask); memory and
//! start-up are measured in a child process per size, so each starts clean.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use billing_service::app::App;
use billing_service::grpc::STATE_VERSION_HEADER;
use billing_service::grpc::proto::entitlement_service_client::EntitlementServiceClient;
use billing_service::grpc::proto::org_admin_service_client::OrgAdminServiceClient;
use billing_service::grpc::proto::{self, EntitlementReason};
use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgConnectOptions;
use tonic::transport::Channel;
use tonic::{Request, metadata::MetadataValue};

#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::{
    Database, GATEWAY_TOKEN, LoadResult, OPS_TOKEN, Outcome, call_noop, channels, drive, micros,
    org_id, settings, start_noop_baseline,
};

#[derive(Debug, Parser)]
struct Args {
    /// Organizations seeded for the load and propagation runs.
    #[arg(long, default_value_t = 10_000)]
    orgs: usize,
    /// Calls in flight at once, for both the service and the baseline.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load on each server.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Alternating rounds of the service and the baseline.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// HTTP/2 connections the client spreads its calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Committed changes timed from one replica to the other.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Sizes whose resident memory and start-up are measured.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    memory_orgs: Vec<usize>,
    #[command(flatten)]
    postgres: bench_support::AdminDatabase,
    /// Internal: start the service on this database, report memory and
    /// start-up as one line, and exit.
    #[arg(long, hide = true)]
    probe: Option<String>,
}

/// What the seeded organization `i` is, and what its member is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seeded {
    Trial,
    Expired,
    Paid,
    OverSeats,
}

impl Seeded {
    fn of(i: usize) -> Self {
        match i % 4 {
            0 => Self::Trial,
            1 => Self::Expired,
            2 => Self::Paid,
            _ => Self::OverSeats,
        }
    }

    fn member_answer(self) -> (bool, EntitlementReason) {
        match self {
            Self::Trial => (true, EntitlementReason::TrialActive),
            Self::Expired => (false, EntitlementReason::TrialExpired),
            Self::Paid => (true, EntitlementReason::SubscriptionActive),
            Self::OverSeats => (false, EntitlementReason::SeatsExceeded),
        }
    }
}

/// Organizations of three members each, a quarter of each kind.
const SEED: [&str; 3] = [
    "insert into organizations (id, name, plan, trial_end, require_seats, creator_user_id, created_at)
     select ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'Org ' || i, 'teams',
            case when i % 4 = 0 then now() + interval '20 days' else now() - interval '20 days' end,
            true, 'u' || i || '-0', now()
     from generate_series(0, $1 - 1) i",
    "insert into memberships (org_id, user_id, role, joined_at)
     select ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'u' || i || '-' || m,
            case when m = 0 then 'owner' else 'member' end, now()
     from generate_series(0, $1 - 1) i, generate_series(0, 2) m",
    "insert into subscriptions (id, org_id, stripe_subscription_id, status, plan, billing_cycle,
                                paid_seats, current_period_start, current_period_end, created_at)
     select gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
            'sub_bench_' || i, 'active', 'teams', 'monthly',
            case when i % 4 = 2 then 5 else 1 end, now() - interval '3 days',
            now() + interval '27 days', now()
     from generate_series(0, $1 - 1) i where i % 4 in (2, 3)",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &args.probe {
        Some(url) => runtime.block_on(probe(url)),
        None => runtime.block_on(run(args)),
    }
}

/// The child: start the service, report memory and start-up.
async fn probe(url: &str) -> anyhow::Result<()> {
    let before = resident_kib()?;
    let started = Instant::now();
    let app = App::build(settings(url.parse()?, 10)).await?;
    let startup = started.elapsed();
    let after = resident_kib()?;
    println!(
        "{} {} {} {}",
        app.service().cache().len(),
        startup.as_millis(),
        before,
        after
    );
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let admin: PgConnectOptions = args.postgres.admin_url.clone();
    println!("# entitlement_bench\n");
    println!("machine: {}", bench_support::machine());

    println!("\n## Memory and start-up (child process per size)\n");
    println!(
        "| orgs loaded | start-up to ready | resident memory | beyond the empty service | per org |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let mut empty_rss = None;
    for n in std::iter::once(0).chain(args.memory_orgs.iter().copied()) {
        let db = Database::create(&admin, &SEED, n).await?;
        let line = std::process::Command::new(std::env::current_exe()?)
            .arg("--probe")
            .arg(db.url())
            .output()?;
        db.drop_now().await?;
        let out = String::from_utf8(line.stdout)?;
        let fields: Vec<u64> = out
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("probe said {out:?}: {e}"))?;
        let [loaded, startup_ms, _before, after] = fields[..] else {
            anyhow::bail!("probe said {out:?}");
        };
        let base = *empty_rss.get_or_insert(after);
        let extra = after.saturating_sub(base);
        let per_org = if loaded == 0 {
            "-".to_owned()
        } else {
            format!("{:.0} B", extra as f64 * 1024.0 / loaded as f64)
        };
        println!(
            "| {loaded} | {startup_ms} ms | {:.1} MiB | {:.1} MiB | {per_org} |",
            after as f64 / 1024.0,
            extra as f64 / 1024.0
        );
    }

    let db = Database::create(&admin, &SEED, args.orgs).await?;
    let options: PgConnectOptions = db.url().parse()?;
    let replica_a = App::build(settings(options.clone(), 20)).await?;
    let a_addr = replica_a.grpc_addr();
    tokio::spawn(replica_a.run_until_stopped(std::future::pending()));

    println!(
        "\n## CheckEntitlement vs a no-op baseline ({} orgs, concurrency {}, {} s each, {} connections)\n",
        args.orgs, args.concurrency, args.seconds, args.connections
    );
    // The two servers take turns, the order alternating by round, so
    // neither gains from going first (a warmer machine, a grown allocator).
    let baseline_addr = start_noop_baseline().await?;
    let service = channels(&format!("http://{a_addr}"), args.connections).await?;
    let baseline = channels(&format!("http://{baseline_addr}"), args.connections).await?;
    println!("| round | server | calls/s | p50 | p90 | p99 | max | errors | wrong decisions |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let (checks, noop) = if round % 2 == 1 {
            let noop = load_baseline(&args, &baseline).await?;
            (load_checks(&args, &service).await?, noop)
        } else {
            let checks = load_checks(&args, &service).await?;
            (checks, load_baseline(&args, &baseline).await?)
        };
        for (name, result) in [("CheckEntitlement", &checks), ("no-op baseline", &noop)] {
            println!(
                "| {round} | {name} | {:.0} | {} | {} | {} | {} | {} | {} |",
                result.calls_per_second(),
                micros(result.p(0.5)),
                micros(result.p(0.9)),
                micros(result.p(0.99)),
                micros(result.latency.max()),
                result.errors,
                result.wrong
            );
        }
        ratios.push((
            round,
            checks.calls_per_second() / noop.calls_per_second(),
            checks.p(0.5) as f64 / noop.p(0.5).max(1) as f64,
            checks.p(0.99) as f64 / noop.p(0.99).max(1) as f64,
        ));
    }
    println!("\n| round | throughput (CheckEntitlement / no-op) | p50 ratio | p99 ratio |");
    println!("| ---: | ---: | ---: | ---: |");
    for (round, rps, p50, p99) in ratios {
        println!("| {round} | {rps:.2} | {p50:.2} | {p99:.2} |");
    }

    println!(
        "\n## Propagation between two replicas ({} changes)\n",
        args.changes
    );
    let replica_b = App::build(settings(options, 20)).await?;
    let b_addr = replica_b.grpc_addr();
    tokio::spawn(replica_b.run_until_stopped(std::future::pending()));
    propagation(
        &args,
        &format!("http://{a_addr}"),
        &format!("http://{b_addr}"),
    )
    .await?;

    db.drop_now().await?;
    Ok(())
}

/// `CheckEntitlement` for random seeded organizations and users (one in
/// ten not a member), every answer checked against the seeded state.
async fn load_checks(args: &Args, channels: &[Channel]) -> anyhow::Result<LoadResult> {
    let token: MetadataValue<_> = format!("Bearer {GATEWAY_TOKEN}").parse()?;
    let channels = channels.to_vec();
    let orgs = args.orgs;
    drive(
        args.concurrency,
        Duration::from_secs(1),
        Duration::from_secs(args.seconds),
        move |worker, n| {
            let mut client =
                EntitlementServiceClient::new(channels[worker % channels.len()].clone());
            let token = token.clone();
            async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(n);
                let i = rng.random_range(0..orgs);
                let stranger = rng.random_range(0..10) == 0;
                let user = if stranger {
                    "stranger".to_owned()
                } else {
                    format!("u{i}-1")
                };
                let mut request = Request::new(proto::CheckEntitlementRequest {
                    org_id: org_id(i),
                    user_id: user,
                    feature: "proxy".into(),
                    ..Default::default()
                });
                request.metadata_mut().insert("authorization", token);
                match client.check_entitlement(request).await {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        let want = if stranger {
                            (false, EntitlementReason::NotAMember)
                        } else {
                            Seeded::of(i).member_answer()
                        };
                        Outcome {
                            wrong: (reply.allowed, reply.reason()) != want,
                            ..Outcome::ok(1)
                        }
                    }
                    Err(_) => Outcome::failed(),
                }
            }
        },
    )
    .await
}

async fn load_baseline(args: &Args, channels: &[Channel]) -> anyhow::Result<LoadResult> {
    let channels = channels.to_vec();
    drive(
        args.concurrency,
        Duration::from_secs(1),
        Duration::from_secs(args.seconds),
        move |worker, _| {
            let channel = channels[worker % channels.len()].clone();
            async move {
                match call_noop(channel).await {
                    Ok(()) => Outcome::ok(1),
                    Err(_) => Outcome::failed(),
                }
            }
        },
    )
    .await
}

/// Flips trial organizations between active and expired on replica A and
/// times until replica B answers the new decision; also asks B with
/// `min_version` right after each commit and counts stale answers.
async fn propagation(args: &Args, a: &str, b: &str) -> anyhow::Result<()> {
    let ops: MetadataValue<_> = format!("Bearer {OPS_TOKEN}").parse()?;
    let gateway: MetadataValue<_> = format!("Bearer {GATEWAY_TOKEN}").parse()?;
    let mut admin =
        OrgAdminServiceClient::new(Channel::from_shared(a.to_owned())?.connect().await?);
    let b_channel = Channel::from_shared(b.to_owned())?.connect().await?;
    let mut checks = EntitlementServiceClient::new(b_channel);
    let mut propagation = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut end_to_end = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut stale = 0;
    let mut expired: HashMap<usize, bool> = HashMap::new();
    let trial_orgs: Vec<usize> = (0..args.orgs)
        .filter(|i| Seeded::of(*i) == Seeded::Trial)
        .collect();
    for n in 0..args.changes {
        let i = trial_orgs[n % trial_orgs.len()];
        let now_expired = !expired.get(&i).copied().unwrap_or(false);
        expired.insert(i, now_expired);
        let days = if now_expired { -20 } else { 20 };
        let end = chrono::Utc::now() + chrono::TimeDelta::days(days);
        let mut request = Request::new(proto::SetTrialEndRequest {
            org_id: org_id(i),
            trial_end: Some(prost_types::Timestamp {
                seconds: end.timestamp(),
                nanos: 0,
            }),
        });
        request.metadata_mut().insert("authorization", ops.clone());
        let sent = Instant::now();
        let response = admin.set_trial_end(request).await?;
        let committed = Instant::now();
        let version: u64 = response
            .metadata()
            .get(STATE_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no state version"))?;
        let want = if now_expired {
            EntitlementReason::TrialExpired
        } else {
            EntitlementReason::TrialActive
        };
        let ask = |min_version: Option<u64>| {
            let mut request = Request::new(proto::CheckEntitlementRequest {
                org_id: org_id(i),
                user_id: format!("u{i}-1"),
                feature: "proxy".into(),
                min_version,
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("authorization", gateway.clone());
            request
        };
        // Without min_version: poll until B has it.
        loop {
            let reply = checks.check_entitlement(ask(None)).await?.into_inner();
            if reply.reason() == want {
                break;
            }
            tokio::task::yield_now().await;
        }
        propagation
            .saturating_record(u64::try_from(committed.elapsed().as_micros()).unwrap_or(u64::MAX));
        end_to_end.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        // With min_version, asked at once: never stale.
        let reply = checks
            .check_entitlement(ask(Some(version)))
            .await?
            .into_inner();
        if reply.reason() != want || reply.state_version < version {
            stale += 1;
        }
    }
    println!(
        "| {} changes, until B answers the new decision | p50 | p99 | max |",
        args.changes
    );
    println!("| --- | ---: | ---: | ---: |");
    for (from, histogram) in [
        ("from A acknowledging the commit", &propagation),
        ("from sending the change to A (upper bound)", &end_to_end),
    ] {
        println!(
            "| {from} | {} | {} | {} |",
            micros(histogram.value_at_quantile(0.5)),
            micros(histogram.value_at_quantile(0.99)),
            micros(histogram.max())
        );
    }
    println!(
        "\nstale answers with min_version: {stale} of {}",
        args.changes
    );
    Ok(())
}

/// The process's resident memory in KiB (Linux).
fn resident_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))
}
