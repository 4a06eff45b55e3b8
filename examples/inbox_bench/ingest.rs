//! The ingest runs of `inbox_bench`: verify, store, acknowledge, against
//! pgbench inserting the same body.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use crate::bench_support::{self, Database};
use crate::{Args, post_signed, start_replica};

/// Ingest: signed deliveries of one real event body (a fresh id each) to a
/// replica that only receives webhooks, against pgbench inserting the same
/// body into a table shaped like the inbox, same clients, same machine.
pub(crate) async fn run(
    args: &Args,
    admin: &PgConnectOptions,
    sample: serde_json::Value,
) -> anyhow::Result<()> {
    let db = Database::create(admin, &[], 0).await?;
    let ingest_options: PgConnectOptions = db.url().parse()?;
    let replica = start_replica(args, &ingest_options, None, Duration::from_secs(3600)).await?;
    // Pretty-printed, here and in every delivery: pgbench would read `:name`
    // in compact JSON as one of its variables.
    let body = serde_json::to_string_pretty(&sample)?;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&ingest_options).await?;
    sqlx::query("create table bench_events (like stripe_events including all)")
        .execute(&mut conn)
        .await?;
    let script = format!(
        "insert into bench_events (id, event_type, raw_body, stripe_created_at) \
         values ('evt_' || md5(random()::text), 'customer.subscription.updated', '{}', now());\n",
        body.replace('\'', "''")
    );
    println!(
        "\n## Ingest: verify, store, acknowledge ({} clients, {} s per run, a {} B event)\n",
        args.ingest_clients,
        args.ingest_seconds,
        body.len()
    );
    println!("| round | run | per s | vs pgbench |");
    println!("| ---: | --- | ---: | ---: |");
    for round in 1..=args.ingest_rounds {
        let pgbench = || {
            bench_support::pgbench(
                admin,
                &db,
                &script,
                args.ingest_clients,
                args.ingest_seconds,
            )
        };
        let first = match round % 2 == 0 {
            true => Some(pgbench()?),
            false => None,
        };
        let rate = deliver_for(args, &replica.webhook_url, &sample, round).await?;
        let tps = match first {
            Some(tps) => tps,
            None => pgbench()?,
        };
        println!(
            "| {round} | webhook ingest | {rate:.0} | {:.2} |",
            rate / tps
        );
        println!("| {round} | pgbench insert | {tps:.0} | 1.00 |");
    }
    drop(conn);
    db.drop_now().await?;
    Ok(())
}

/// Posts signed deliveries with fresh ids for `--ingest-seconds` from
/// `--ingest-clients` senders; returns acknowledged deliveries per second.
async fn deliver_for(
    args: &Args,
    url: &str,
    sample: &serde_json::Value,
    round: usize,
) -> anyhow::Result<f64> {
    // The body is laid out once, with a placeholder id of the final length,
    // so the load generator spends its share of the machine on sending,
    // not on serializing.
    const PLACEHOLDER: &str = "evt_ingest_0000000000000000000000000000000000000000";
    let mut event = sample.clone();
    event["id"] = PLACEHOLDER.into();
    let template = std::sync::Arc::new(serde_json::to_string_pretty(&event)?);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.ingest_seconds);
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..args.ingest_clients {
        let (url, template) = (url.to_owned(), template.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let id = format!("evt_ingest_{round:03}_{sender:04}_{n:031}");
                debug_assert_eq!(id.len(), PLACEHOLDER.len());
                post_signed(&client, &url, template.replacen(PLACEHOLDER, &id, 1)).await?;
                acknowledged += 1;
            }
            Ok::<_, anyhow::Error>(acknowledged)
        });
    }
    let mut acknowledged = 0;
    while let Some(sent) = senders.join_next().await {
        acknowledged += sent??;
    }
    Ok(acknowledged as f64 / started.elapsed().as_secs_f64())
}
