//! Typed settings from command-line flags and environment variables. Every
//! setting has both; `--help` lists them. Secrets are never printed: clap
//! hides their environment values and `CallerTokens`' `Debug` redacts them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

mod webhooks;
pub use webhooks::WebhookConfig;

use crate::domain::catalog::PriceSlot;
use crate::domain::pricing::{BillingCycle, PlanId};
use crate::grpc::CallerTokens;
use crate::stripe::WebhookSecrets;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "billing-service",
    version,
    about = "gRPC billing and entitlement service",
    after_help = "Stripe price ids per plan and cycle may also be set with \
                  BILLING_STRIPE_PRICE_<PLAN>_<CYCLE>, e.g. BILLING_STRIPE_PRICE_TEAMS_MONTHLY."
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "BILLING_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the Stripe webhook listener (`POST /stripe/webhook`).
    #[arg(long, env = "BILLING_WEBHOOK_ADDR", default_value = "0.0.0.0:8080")]
    pub webhook_addr: SocketAddr,

    /// Address of the metrics listener (`GET /metrics`, Prometheus text
    /// format); unset, metrics are off. Keep it off the public network.
    #[arg(long, env = "BILLING_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Stripe webhook signing secrets (`whsec_...`), comma-separated; an
    /// event signed with any of them is accepted, so a secret can be rotated.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = WebhookSecrets::parse)]
    pub stripe_webhook_secret: Option<WebhookSecrets>,

    /// Stripe secret key (`sk_test_...` or `sk_live_...`). Without it the
    /// Stripe-backed RPCs answer FAILED_PRECONDITION and the rest works.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Base URL of the Stripe API (tests point it at a local server).
    #[arg(long, env = "STRIPE_API_BASE", default_value = crate::stripe::DEFAULT_API_BASE)]
    pub stripe_api_base: String,

    /// Attempts at applying a webhook event before it is parked for an
    /// operator (`ListParkedStripeEvents`, `RetryStripeEvent`).
    #[arg(long, env = "BILLING_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,

    /// Wait after a webhook event's first failed attempt, in milliseconds;
    /// it doubles with each further attempt, up to an hour.
    #[arg(long, env = "BILLING_WEBHOOK_RETRY_DELAY_MS", default_value_t = 5000)]
    pub webhook_retry_delay_ms: u64,

    /// How long an entitlement read with `min_version` waits for this replica
    /// to catch up before it reads the database instead, in milliseconds.
    #[arg(long, env = "BILLING_MIN_VERSION_WAIT_MS", default_value_t = 100)]
    pub min_version_wait_ms: u64,

    /// Entitlement calls in flight at once; more are answered
    /// RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "BILLING_MAX_CONCURRENT_CHECKS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_checks: u32,

    /// Health checks in flight at once, counted apart from everything else
    /// so probes answer however busy the service is.
    #[arg(long, env = "BILLING_MAX_CONCURRENT_HEALTH_CHECKS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_health_checks: u32,

    /// Other calls (billing, credits, administration) in flight at once;
    /// more are answered RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "BILLING_MAX_CONCURRENT_CALLS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls: u32,

    /// How long, in milliseconds, entitlement answers may come from state
    /// that is not following changes (the database unreachable) before the
    /// features in BILLING_FAIL_CLOSED_FEATURES are denied. Other features
    /// keep answering from the last known state, marked stale.
    #[arg(long, env = "BILLING_MAX_STALENESS_MS", default_value_t = 60_000)]
    pub max_staleness_ms: u64,

    /// Features that fail closed once the state is too stale,
    /// comma-separated (for example `instance`); empty: all fail open.
    #[arg(
        long,
        env = "BILLING_FAIL_CLOSED_FEATURES",
        default_value = "",
        value_delimiter = ','
    )]
    pub fail_closed_features: Vec<String>,

    /// How many recent changes a WatchEntitlements caller may resume from;
    /// one further behind is told to resync.
    #[arg(long, env = "BILLING_WATCH_LOG", default_value_t = 10_000)]
    pub watch_log_capacity: usize,

    /// How often expired credit is written off and add-on instances whose
    /// period is up are renewed, in milliseconds.
    #[arg(long, env = "BILLING_MAINTENANCE_INTERVAL_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub maintenance_interval_ms: u64,

    /// How long a billing operation's claim holds, in milliseconds: a
    /// running operation whose performer died is taken over by the
    /// operations loop after this. Longer than any billing call takes.
    #[arg(long, env = "BILLING_OPERATION_LEASE_MS", default_value_t = 120_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub operation_lease_ms: u64,

    /// How long a billing change waits for another change of the same
    /// organization before answering ABORTED, in milliseconds.
    #[arg(long, env = "BILLING_OPERATION_WAIT_MS", default_value_t = 5_000)]
    pub operation_wait_ms: u64,

    /// How often Stripe's Events API is listed for events that were never
    /// delivered (also once at start).
    #[arg(long, env = "BILLING_STRIPE_CATCHUP_INTERVAL_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    pub stripe_catchup_interval_ms: u64,

    /// How long a claimed inbox event is left to its worker, in
    /// milliseconds: past it, another worker on any replica applies it (its
    /// worker died). Longer than applying one event takes, Stripe reads and
    /// their retries included.
    #[arg(long, env = "BILLING_INBOX_LEASE_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    pub inbox_lease_ms: u64,

    /// After SIGTERM or SIGINT: how long in-flight calls and connections
    /// may take to finish, in milliseconds, before the servers stop waiting
    /// for them. Watch streams end at once with UNAVAILABLE.
    #[arg(long, env = "BILLING_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Inbox workers per replica, applying Stripe events side by side.
    #[arg(long, env = "BILLING_INBOX_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub inbox_concurrency: u32,

    /// How often every subscription is read from Stripe, compared with ours
    /// and repaired.
    #[arg(long, env = "BILLING_STRIPE_RECONCILE_INTERVAL_MS", default_value_t = 3_600_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    pub stripe_reconcile_interval_ms: u64,

    /// Webhook listener: how long request headers may take to arrive, and
    /// how long a kept-alive connection may sit idle.
    #[arg(long, env = "BILLING_WEBHOOK_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_header_timeout_ms: u64,

    /// Webhook listener: how long a request body may take to arrive, in all.
    #[arg(long, env = "BILLING_WEBHOOK_BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_body_timeout_ms: u64,

    /// Webhook listener: open connections at most; more wait unaccepted.
    #[arg(long, env = "BILLING_WEBHOOK_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_connections: u32,

    /// Webhook listener: requests handled at once; more are answered 503.
    #[arg(long, env = "BILLING_WEBHOOK_MAX_IN_FLIGHT", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_in_flight: u32,

    /// Usage lanes committing in parallel: reports for one organization
    /// always share a lane and are posted in group commits; each lane holds
    /// one database connection while it commits. One per CPU core by
    /// default (at most 8): more lanes than cores make smaller commits.
    #[arg(long, env = "BILLING_USAGE_COMMIT_LANES", default_value_t = crate::service::default_usage_lanes(),
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub usage_commit_lanes: u32,

    /// PostgreSQL URL. When unset, a local PostgreSQL is used: the one on
    /// 127.0.0.1:5432 if it answers, else a private one started from the
    /// machine's PostgreSQL binaries in --local-postgres-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Size of the database connection pool.
    #[arg(long, env = "BILLING_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Where the private PostgreSQL of the embedded default keeps its data.
    #[arg(
        long,
        env = "BILLING_LOCAL_POSTGRES_DIR",
        default_value = ".local/postgres"
    )]
    pub local_postgres_dir: PathBuf,

    /// Caller tokens as comma-separated scope:token pairs (scopes: gateway,
    /// bff, ops; repeat a scope to rotate). When unset, tokens are generated
    /// and printed at start-up. Parsed by [`Config::caller_tokens`], not by
    /// clap, whose error would quote the whole value, valid tokens included.
    #[arg(
        long = "caller-tokens",
        env = "BILLING_CALLER_TOKENS",
        hide_env_values = true
    )]
    caller_tokens_raw: Option<String>,

    /// Plan catalog (TOML). When unset, the built-in Teams/Enterprise catalog.
    #[arg(long, env = "BILLING_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Length of a new organization's free trial, in days.
    #[arg(long, env = "BILLING_TRIAL_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=365))]
    pub trial_days: u32,

    /// Set by the container image: a deployment, where caller tokens are
    /// never generated (each replica would invent its own and log them).
    /// Kubernetes' `KUBERNETES_SERVICE_HOST` counts as set.
    #[arg(long, env = "BILLING_IN_CONTAINER", default_value_t = false, action = ArgAction::Set)]
    pub in_container: bool,

    /// Development only: generate caller tokens even in a container.
    #[arg(long, env = "BILLING_DEV_GENERATE_TOKENS", default_value_t = false, action = ArgAction::Set)]
    pub dev_generate_tokens: bool,

    /// Whether new customers may sign up for monthly billing. Existing
    /// monthly customers keep it either way.
    #[arg(long, env = "BILLING_MONTHLY_SIGNUP", default_value_t = true, action = ArgAction::Set)]
    pub monthly_signup: bool,

    /// OTLP/gRPC endpoint for trace export; export is off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Instead of serving: ask the service on BILLING_GRPC_ADDR (on this
    /// host) for its health and exit 0 when it is SERVING, 1 otherwise.
    /// The container image's HEALTHCHECK.
    #[arg(long)]
    pub probe: bool,

    /// Log line format.
    #[arg(long, env = "BILLING_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub webhooks: WebhookConfig,
}

impl Config {
    /// Whether caller tokens may be generated when none are configured:
    /// for a developer's run, never in a deployment unless asked for.
    pub fn may_generate_tokens(&self) -> bool {
        let deployed = self.in_container || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        !deployed || self.dev_generate_tokens
    }

    /// The caller tokens, if configured. A bad value is refused with the
    /// reason only: it holds secrets, valid tokens among them.
    pub fn caller_tokens(&self) -> anyhow::Result<Option<CallerTokens>> {
        self.caller_tokens_raw
            .as_deref()
            .map(|raw| {
                CallerTokens::parse(raw)
                    .map_err(|reason| anyhow::anyhow!("BILLING_CALLER_TOKENS: {reason}"))
            })
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The Stripe price id for a plan's seats or unit item and a cycle from the
/// environment, if set: `BILLING_STRIPE_PRICE_<PLAN>_<CYCLE>` for seats,
/// `BILLING_STRIPE_PRICE_<PLAN>_<ITEM>_<CYCLE>` for unit items.
pub fn stripe_price_id_from_env(
    plan: &PlanId,
    slot: PriceSlot<'_>,
    cycle: BillingCycle,
) -> Option<String> {
    let upper = |s: &str| s.to_uppercase().replace('-', "_");
    let item = match slot {
        PriceSlot::Seat => String::new(),
        PriceSlot::UnitItem(id) => format!("_{}", upper(id)),
    };
    let name = format!(
        "BILLING_STRIPE_PRICE_{}{item}_{}",
        upper(plan.as_str()),
        cycle.as_str().to_uppercase()
    );
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn the_readme_configuration_table_lists_every_setting_with_its_flag() {
        let readme = include_str!("../../README.md");
        let command = Config::command();
        for arg in command.get_arguments() {
            let (Some(env), Some(flag)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let row = format!("| `{}` | `--{flag}` |", env.to_string_lossy());
            assert!(readme.contains(&row), "README.md has no row {row}");
        }
    }

    #[test]
    fn defaults_listen_on_50051_with_monthly_signup() {
        let config = Config::parse_from(["billing-service"]);
        assert_eq!(config.grpc_addr.port(), 50051);
        assert_eq!(config.webhook_addr.port(), 8080);
        assert!(config.monthly_signup);
        assert_eq!(config.trial_days, 30);
        assert_eq!(config.stripe_api_base, "https://api.stripe.com/");
        assert_eq!(config.stripe_secret_key, None);
    }
}
