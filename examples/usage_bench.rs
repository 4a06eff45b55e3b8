//! Usage debits and credit holds, measured against a durable single-row
//! insert by pgbench (`-M prepared`, the same number of clients) in the
//! same run: `RecordUsage` spread over many organizations and for one,
//! `RecordUsageBatch`, and reserve-then-settle pairs.
//!
//! ```sh
//! cargo run --release --example usage_bench
//! cargo run --release --example usage_bench -- --orgs 200 --concurrency 32 --seconds 10 --rounds 2
//! ```
//!
//! It needs the PostgreSQL the tests use (`BENCH_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `pgbench` on the
//! PATH; it creates its own database and drops it afterwards. The service
//! runs in this process, so client, service, PostgreSQL and pgbench share
//! the machine.

#[path = "bench_support/mod.rs"]
mod bench_support;

use std::time::Duration;

use billing_service::app::App;
use billing_service::grpc::proto::credit_service_client::CreditServiceClient;
use billing_service::grpc::proto::entitlement_service_client::EntitlementServiceClient;
use billing_service::grpc::proto::{self, record_usage_result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgConnectOptions;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use bench_support::{
    Database, GATEWAY_TOKEN, LoadResult, OPS_TOKEN, Outcome, channels, drive, micros, org_id,
    settings,
};

#[derive(Debug, Parser)]
struct Args {
    /// Organizations the spread runs pick from at random.
    #[arg(long, default_value_t = 200)]
    orgs: usize,
    /// Calls in flight at once, and pgbench's clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// HTTP/2 connections the client spreads its calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rounds; pgbench and the service alternate going first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Reports per RecordUsageBatch call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[command(flatten)]
    postgres: bench_support::AdminDatabase,
}

/// What each organization is granted: far more than any run spends.
const GRANT: i64 = 1_000_000_000_000;
const COST: i64 = 1_234;
const PAID_MODEL: &str = "gpt-4o";

/// pgbench's transaction: one durable single-row insert of a ledger-like row.
const PGBENCH_SCRIPT: &str = "\\set org random(0, 199)
insert into bench_usage (org_id, amount_micros, idempotency_key)
values ('00000000-0000-4000-8000-000000000000'::uuid, 1234, md5(random()::text || :org));
";

#[derive(Debug, Clone, Copy)]
enum Workload {
    /// Single RecordUsage calls with unique keys over all organizations.
    Spread,
    /// Single RecordUsage calls with unique keys for one organization.
    OneOrg,
    /// RecordUsageBatch calls over all organizations.
    Batch,
    /// CheckEntitlement with reserve_micros, then RecordUsage with the hold.
    ReserveSettle,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Spread => "RecordUsage, spread over the organizations",
            Self::OneOrg => "RecordUsage, one organization",
            Self::Batch => "RecordUsageBatch (reports/s)",
            Self::ReserveSettle => "reserve + settle pairs, one organization (pairs/s)",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let admin: PgConnectOptions = args.postgres.admin_url.clone();
    println!("# usage_bench\n");
    println!("machine: {}", bench_support::machine());
    let db = Database::create(&admin, &bench_support::TRIAL_ORGS, args.orgs).await?;
    let options: PgConnectOptions = db.url().parse()?;
    let app = App::build(settings(options.clone(), 20)).await?;
    let url = format!("http://{}", app.grpc_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let channels = channels(&url, args.connections).await?;
    grant_everyone(&args, &channels[0]).await?;
    sqlx::query(
        "create table bench_usage (
            id uuid primary key default gen_random_uuid(), org_id uuid not null,
            amount_micros bigint not null, idempotency_key text not null,
            occurred_at timestamptz not null default now())",
    )
    .execute(&mut <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await?)
    .await?;

    println!(
        "\n## Usage vs a durable single-row insert ({} orgs, {} in flight and {} pgbench clients, {} s per run, batches of {})\n",
        args.orgs, args.concurrency, args.concurrency, args.seconds, args.batch
    );
    println!("| round | run | per s | p50 | p99 | errors | replayed or wrong | vs pgbench |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for round in 1..=args.rounds {
        let pgbench_first = round % 2 == 1;
        let mut tps = if pgbench_first {
            Some(pgbench(&args, &db)?)
        } else {
            None
        };
        let mut rows = Vec::new();
        for workload in [
            Workload::Spread,
            Workload::OneOrg,
            Workload::Batch,
            Workload::ReserveSettle,
        ] {
            rows.push((workload, load(&args, &channels, workload).await?));
        }
        if tps.is_none() {
            tps = Some(pgbench(&args, &db)?);
        }
        let tps = tps.unwrap_or(f64::NAN);
        println!("| {round} | pgbench insert (tps) | {tps:.0} | | | | | 1.00 |");
        for (workload, result) in rows {
            println!(
                "| {round} | {} | {:.0} | {} | {} | {} | {} | {:.2} |",
                workload.name(),
                result.units_per_second(),
                micros(result.p(0.5)),
                micros(result.p(0.99)),
                result.errors,
                result.wrong,
                result.units_per_second() / tps
            );
        }
    }
    db.drop_now().await?;
    Ok(())
}

fn gateway(
    request: &mut tonic::metadata::MetadataMap,
    token: &MetadataValue<tonic::metadata::Ascii>,
) {
    request.insert("authorization", token.clone());
}

async fn grant_everyone(args: &Args, channel: &Channel) -> anyhow::Result<()> {
    let ops: MetadataValue<_> = format!("Bearer {OPS_TOKEN}").parse()?;
    let mut credits = CreditServiceClient::new(channel.clone());
    for i in 0..args.orgs {
        let mut request = Request::new(proto::GrantCreditsRequest {
            org_id: org_id(i),
            amount_micros: GRANT,
            reason: "benchmark".into(),
            expires_at: None,
            idempotency_key: "bench-grant".into(),
        });
        gateway(request.metadata_mut(), &ops);
        credits.grant_credits(request).await?;
    }
    Ok(())
}

fn report(org: usize, key: String) -> proto::RecordUsageRequest {
    proto::RecordUsageRequest {
        org_id: org_id(org),
        user_id: format!("u{org}"),
        amount_micros: COST,
        model: PAID_MODEL.into(),
        idempotency_key: key,
        ..Default::default()
    }
}

async fn load(args: &Args, channels: &[Channel], workload: Workload) -> anyhow::Result<LoadResult> {
    let token: MetadataValue<_> = format!("Bearer {GATEWAY_TOKEN}").parse()?;
    let channels = channels.to_vec();
    // Keys unique across runs and rounds, so nothing is a replay.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (orgs, batch) = (args.orgs, args.batch);
    drive(
        args.concurrency,
        Duration::from_secs(1),
        Duration::from_secs(args.seconds),
        move |worker, n| {
            let mut client = EntitlementServiceClient::new(channels[worker % channels.len()].clone());
            let token = token.clone();
            let run = run.clone();
            async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(n);
                match workload {
                    Workload::Spread | Workload::OneOrg => {
                        let org = match workload {
                            Workload::Spread => rng.random_range(0..orgs),
                            _ => 0,
                        };
                        let mut request = Request::new(report(org, format!("{run}-{n}")));
                        gateway(request.metadata_mut(), &token);
                        match client.record_usage(request).await {
                            Ok(reply) => Outcome { wrong: reply.get_ref().replayed, ..Outcome::ok(1) },
                            Err(_) => Outcome::failed(),
                        }
                    }
                    Workload::Batch => {
                        let reports = (0..batch)
                            .map(|k| report(rng.random_range(0..orgs), format!("{run}-{n}-{k}")))
                            .collect();
                        let mut request = Request::new(proto::RecordUsageBatchRequest { reports });
                        gateway(request.metadata_mut(), &token);
                        match client.record_usage_batch(request).await {
                            Ok(reply) => {
                                let results = &reply.get_ref().results;
                                let recorded = results
                                    .iter()
                                    .filter(|r| {
                                        matches!(
                                            &r.result,
                                            Some(record_usage_result::Result::Recorded(done)) if !done.replayed
                                        )
                                    })
                                    .count() as u64;
                                Outcome {
                                    ok: recorded == batch as u64,
                                    wrong: recorded != batch as u64,
                                    units: recorded,
                                }
                            }
                            Err(_) => Outcome::failed(),
                        }
                    }
                    Workload::ReserveSettle => reserve_and_settle(&mut client, &token, &run, n).await,
                }
            }
        },
    )
    .await
}

async fn reserve_and_settle(
    client: &mut EntitlementServiceClient<Channel>,
    token: &MetadataValue<tonic::metadata::Ascii>,
    run: &str,
    n: u64,
) -> Outcome {
    let mut check = Request::new(proto::CheckEntitlementRequest {
        org_id: org_id(0),
        user_id: "u0".into(),
        feature: "proxy".into(),
        model: Some(PAID_MODEL.into()),
        reserve_micros: Some(2 * COST),
        reservation_key: format!("{run}-hold-{n}"),
        ..Default::default()
    });
    gateway(check.metadata_mut(), token);
    let Ok(checked) = client.check_entitlement(check).await else {
        return Outcome::failed();
    };
    let checked = checked.into_inner();
    if !checked.allowed || checked.hold_id.is_empty() {
        return Outcome {
            wrong: true,
            ..Outcome::failed()
        };
    }
    let mut settle = Request::new(proto::RecordUsageRequest {
        hold_id: checked.hold_id,
        ..report(0, format!("{run}-use-{n}"))
    });
    gateway(settle.metadata_mut(), token);
    match client.record_usage(settle).await {
        Ok(reply) => Outcome {
            wrong: reply.get_ref().replayed,
            ..Outcome::ok(1)
        },
        Err(_) => Outcome::failed(),
    }
}

/// pgbench's durable single-row insert at the same concurrency; its tps.
fn pgbench(args: &Args, db: &Database) -> anyhow::Result<f64> {
    bench_support::pgbench(
        &args.postgres.admin_url,
        db,
        PGBENCH_SCRIPT,
        args.concurrency,
        args.seconds,
    )
}
