//! Parses the configuration, starts telemetry, builds the app and serves
//! until SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Context;
use billing_service::app::{App, AppSettings};
use billing_service::config::{self, Config};
use billing_service::domain::catalog::{Catalog, SignupPolicy};
use billing_service::domain::entitlement::StalePolicy;
use billing_service::domain::retry::RetryPolicy;
use billing_service::domain::trial::TrialLength;
use billing_service::grpc::{CallerTokens, ConcurrencyLimits, Scope};
use billing_service::http_listener::ListenerLimits;
use billing_service::stripe::{StripeSettings, WEBHOOK_PATH, WebhookSecrets};
use billing_service::worker::{InboxSettings, MaintenanceSettings};
use billing_service::{local_postgres, service, telemetry};
use clap::Parser;
use sqlx::postgres::PgConnectOptions;

/// Requests allocate and free on every worker thread; glibc's arenas made
/// the threads wait on each other's locks (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.probe {
        return probe(config.grpc_addr).await;
    }
    // Refused before anything starts, and without quoting the value.
    let configured_tokens = config.caller_tokens()?;
    let webhooks = config.webhooks.settings()?;
    if configured_tokens.is_none() && !config.may_generate_tokens() {
        anyhow::bail!(
            "BILLING_CALLER_TOKENS is not set. In a container every replica would \
             generate its own tokens; set the same tokens on every replica \
             (BILLING_DEV_GENERATE_TOKENS=true generates them for a development run)"
        );
    }
    let _telemetry = telemetry::init(config.log_format, config.otlp_endpoint.as_deref())?;
    let stop_signal = shutdown_signal();

    let catalog_text = match &config.catalog {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the catalog {}", path.display()))?,
        None => Catalog::DEFAULT_TOML.to_owned(),
    };
    let catalog =
        Catalog::from_toml(&catalog_text)?.with_stripe_price_ids(config::stripe_price_id_from_env);

    let (database, private_postgres) = match &config.database_url {
        Some(url) => (
            url.parse::<PgConnectOptions>().context("DATABASE_URL")?,
            None,
        ),
        None => local_postgres::resolve(&config.local_postgres_dir).await?,
    };

    let database_described = describe_database(&database, private_postgres.is_some());
    let (caller_tokens, generated) = match configured_tokens {
        Some(tokens) => (tokens, false),
        None => (CallerTokens::generate(), true),
    };

    let app = App::build(AppSettings {
        grpc_addr: config.grpc_addr,
        webhook_addr: config.webhook_addr,
        metrics_addr: config.metrics_addr,
        webhook_secrets: config
            .stripe_webhook_secret
            .clone()
            .unwrap_or_else(WebhookSecrets::none),
        database,
        database_max_connections: config.database_max_connections,
        caller_tokens: caller_tokens.clone(),
        catalog,
        service: service::Settings {
            trial_length: TrialLength::days(config.trial_days),
            signup_policy: SignupPolicy {
                monthly_enabled: config.monthly_signup,
            },
            min_version_wait: Duration::from_millis(config.min_version_wait_ms),
            watch_log_capacity: config.watch_log_capacity,
            operation_lease: Duration::from_millis(config.operation_lease_ms),
            event_lease: Duration::from_millis(config.inbox_lease_ms),
            operation_wait: Duration::from_millis(config.operation_wait_ms),
            usage_lanes: config.usage_commit_lanes as usize,
            webhooks,
            stale_policy: StalePolicy {
                max_staleness: chrono::TimeDelta::milliseconds(
                    i64::try_from(config.max_staleness_ms).unwrap_or(i64::MAX),
                ),
                fail_closed_features: config
                    .fail_closed_features
                    .iter()
                    .map(|f| f.trim().to_owned())
                    .filter(|f| !f.is_empty())
                    .collect(),
            },
        },
        stripe: config
            .stripe_secret_key
            .clone()
            .filter(|key| !key.is_empty())
            .map(|secret_key| StripeSettings {
                secret_key,
                api_base: config.stripe_api_base.clone(),
            }),
        inbox: InboxSettings {
            retry: RetryPolicy {
                max_attempts: config.webhook_max_attempts,
                first_delay: Duration::from_millis(config.webhook_retry_delay_ms),
                ..InboxSettings::default().retry
            },
            catch_up_interval: Duration::from_millis(config.stripe_catchup_interval_ms),
            reconcile_interval: Duration::from_millis(config.stripe_reconcile_interval_ms),
            concurrency: config.inbox_concurrency as usize,
            ..InboxSettings::default()
        },
        maintenance: MaintenanceSettings {
            interval: Duration::from_millis(config.maintenance_interval_ms),
            event_retention: config.webhooks.event_retention(),
        },
        webhook_limits: ListenerLimits {
            header_timeout: Duration::from_millis(config.webhook_header_timeout_ms),
            body_timeout: Duration::from_millis(config.webhook_body_timeout_ms),
            max_connections: config.webhook_max_connections as usize,
            max_requests_in_flight: config.webhook_max_in_flight as usize,
        },
        shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
        clock: None,
        limits: ConcurrencyLimits {
            entitlement: config.max_concurrent_checks as usize,
            health: config.max_concurrent_health_checks as usize,
            other: config.max_concurrent_calls as usize,
        },
    })
    .await?;

    print_welcome(
        &app,
        &Setup {
            database: database_described,
            stripe_configured: config.stripe_secret_key.is_some(),
            webhook_secret: config.stripe_webhook_secret.is_some(),
        },
        &caller_tokens,
        generated,
    );
    let served = app.run_until_stopped(stop_signal).await;
    if let Some(private) = private_postgres {
        private.stop();
    }
    served
}

/// What the run is connected to, for the welcome lines.
struct Setup {
    database: String,
    stripe_configured: bool,
    webhook_secret: bool,
}

/// Where the data lives, without the password.
fn describe_database(database: &PgConnectOptions, private: bool) -> String {
    let name = database.get_database().unwrap_or("postgres");
    let place = format!(
        "postgres://{}@{}:{}/{name}",
        database.get_username(),
        database.get_host(),
        database.get_port()
    );
    match private {
        true => format!("{place} (a private PostgreSQL started for this run)"),
        false => place,
    }
}

/// What a newcomer needs to call the service. Generated tokens are printed
/// to the terminal (not the log) because nobody else knows them.
fn print_welcome(app: &App, setup: &Setup, tokens: &CallerTokens, generated: bool) {
    let port = app.grpc_addr().port();
    println!(
        "billing-service: gRPC on {} (reflection and grpc.health.v1 enabled), Stripe webhooks on http://{}{WEBHOOK_PATH}",
        app.grpc_addr(),
        app.webhook_addr()
    );
    println!("Database: {}", setup.database);
    if !setup.stripe_configured {
        println!(
            "Stripe: not configured (no STRIPE_SECRET_KEY); the Stripe-backed calls (checkout, seats, cycle changes, credit purchases) answer FAILED_PRECONDITION, the rest works"
        );
    }
    if !setup.webhook_secret {
        println!(
            "Stripe webhooks: no STRIPE_WEBHOOK_SECRET, so every delivery is refused (400) until one is set"
        );
    }
    if generated {
        println!(
            "No BILLING_CALLER_TOKENS set; tokens generated for this run (paste into a shell):"
        );
        for (scope, var) in [
            (Scope::Gateway, "GATEWAY_TOKEN"),
            (Scope::Bff, "BFF_TOKEN"),
            (Scope::Ops, "OPS_TOKEN"),
        ] {
            println!("  export {var}={}", tokens.first(scope).unwrap_or_default());
        }
        println!(
            "To keep them across restarts: BILLING_CALLER_TOKENS='{}'",
            tokens.to_env_value()
        );
    }
    println!(
        "List the API: npx @bufbuild/buf curl --protocol grpc --http2-prior-knowledge --list-methods http://127.0.0.1:{port}"
    );
    println!("More examples: README.md");
}

/// The health check of a container: the local server's overall health.
async fn probe(grpc_addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let port = grpc_addr.port();
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "billing.v1.EntitlementService".into(),
            })
            .await?;
        anyhow::Ok(reply.into_inner().status())
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(ServingStatus::Serving)) => Ok(()),
        Ok(Ok(status)) => anyhow::bail!("the service reports {}", status.as_str_name()),
        Ok(Err(error)) => Err(error.context(format!("checking health on port {port}"))),
        Err(_) => anyhow::bail!("no health answer on port {port} within 3 s"),
    }
}

/// Listens for the stop signals from now on, and completes at the first.
/// The handlers are installed here, at once, not when the future is first
/// polled: a signal that arrives while the service starts (or before the
/// server task runs) stops it gracefully instead of killing it outright.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(signal) => Some((signal, name)),
        Err(error) => {
            tracing::error!(%error, "cannot listen for {name}");
            None
        }
    };
    // SIGHUP is a closed terminal: stop like Ctrl-C, so the private
    // development PostgreSQL is stopped too instead of being left running.
    let mut signals: Vec<_> = [
        listen(SignalKind::interrupt(), "SIGINT"),
        listen(SignalKind::terminate(), "SIGTERM"),
        listen(SignalKind::hangup(), "SIGHUP"),
    ]
    .into_iter()
    .flatten()
    .collect();
    async move {
        if signals.is_empty() {
            return std::future::pending::<()>().await;
        }
        let received = futures_util::future::select_all(
            signals
                .iter_mut()
                .map(|(signal, name)| Box::pin(async move { signal.recv().await.map(|_| *name) })),
        )
        .await
        .0;
        match received {
            Some(name) => tracing::info!("{name} received"),
            None => std::future::pending::<()>().await,
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
