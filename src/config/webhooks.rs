//! Settings of the lifecycle events and their outbound webhooks.

use std::time::Duration;

use clap::{ArgAction, Args};

use crate::domain::webhooks::{AddressPolicy, RetrySchedule};
use crate::service::WebhookSettings;

#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// Lets webhook endpoints be loopback, private or reserved addresses
    /// (tests, all-internal deployments). Off, only public addresses are
    /// called, whatever a name resolves to.
    #[arg(long, env = "BILLING_WEBHOOKS_ALLOW_PRIVATE", default_value_t = false, action = ArgAction::Set)]
    pub webhooks_allow_private: bool,

    /// How long one webhook attempt may take, connecting included, in
    /// milliseconds.
    #[arg(long, env = "BILLING_WEBHOOKS_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub webhooks_timeout_ms: u64,

    /// The waits before each retry of a failed webhook delivery, in
    /// milliseconds, comma-separated; then every BILLING_WEBHOOKS_RETRY_EVERY_MS.
    #[arg(
        long,
        env = "BILLING_WEBHOOKS_RETRY_DELAYS_MS",
        default_value = "5000,30000,120000,600000,3600000",
        value_delimiter = ','
    )]
    pub webhooks_retry_delays_ms: Vec<u64>,

    /// The wait between retries once the delays above are used up, in
    /// milliseconds (6 hours).
    #[arg(long, env = "BILLING_WEBHOOKS_RETRY_EVERY_MS", default_value_t = 21_600_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhooks_retry_every_ms: u64,

    /// A delivery is given up (marked failed, replayable) when its next
    /// retry would fall this long after its first attempt, in milliseconds
    /// (3 days).
    #[arg(long, env = "BILLING_WEBHOOKS_GIVE_UP_AFTER_MS", default_value_t = 259_200_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhooks_give_up_after_ms: u64,

    /// An endpoint whose deliveries have failed for this long (with no
    /// success between) is paused, in milliseconds (3 days); its events
    /// wait for ResumeWebhookEndpoint.
    #[arg(long, env = "BILLING_WEBHOOKS_PAUSE_AFTER_MS", default_value_t = 259_200_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhooks_pause_after_ms: u64,

    /// How long a replica's claim on an endpoint's deliveries of one
    /// organization holds, in milliseconds; past it another replica takes
    /// them over. Longer than BILLING_WEBHOOKS_TIMEOUT_MS.
    #[arg(long, env = "BILLING_WEBHOOKS_LEASE_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(200..))]
    pub webhooks_lease_ms: u64,

    /// Webhook deliveries this replica sends at once (each endpoint also
    /// has its own cap across replicas); 0 leaves them to other replicas.
    #[arg(long, env = "BILLING_WEBHOOKS_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(0..=256))]
    pub webhooks_concurrency: u32,

    /// The longest the webhook dispatcher waits before looking for due
    /// deliveries (retries, other replicas' events), in milliseconds.
    #[arg(long, env = "BILLING_WEBHOOKS_POLL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub webhooks_poll_ms: u64,

    /// How long lifecycle events are kept, in days: WatchBillingEvents and
    /// ReplayWebhookEvents reach back this far.
    #[arg(long, env = "BILLING_EVENTS_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub events_retention_days: u32,
}

impl WebhookConfig {
    /// The settings, or why they do not hold together.
    pub fn settings(&self) -> anyhow::Result<WebhookSettings> {
        let timeout = Duration::from_millis(self.webhooks_timeout_ms);
        let lease = Duration::from_millis(self.webhooks_lease_ms);
        if lease <= timeout {
            anyhow::bail!(
                "BILLING_WEBHOOKS_LEASE_MS must be longer than BILLING_WEBHOOKS_TIMEOUT_MS, or a slow attempt would be sent twice at once"
            );
        }
        if self.webhooks_retry_delays_ms.contains(&0) {
            anyhow::bail!("BILLING_WEBHOOKS_RETRY_DELAYS_MS: every delay must be at least 1 ms");
        }
        Ok(WebhookSettings {
            policy: AddressPolicy {
                allow_private: self.webhooks_allow_private,
            },
            timeout,
            retry: RetrySchedule {
                delays: self
                    .webhooks_retry_delays_ms
                    .iter()
                    .map(|ms| Duration::from_millis(*ms))
                    .collect(),
                then_every: Duration::from_millis(self.webhooks_retry_every_ms),
                give_up_after: Duration::from_millis(self.webhooks_give_up_after_ms),
            },
            pause_after: Duration::from_millis(self.webhooks_pause_after_ms),
            lease,
            concurrency: self.webhooks_concurrency as usize,
            poll_interval: Duration::from_millis(self.webhooks_poll_ms),
        })
    }

    pub fn event_retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.events_retention_days) * 86_400)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Only {
        #[command(flatten)]
        webhooks: WebhookConfig,
    }

    #[test]
    fn the_defaults_are_the_documented_schedule() {
        let settings = Only::parse_from(["test"]).webhooks.settings().unwrap();
        assert_eq!(settings, WebhookSettings::default());
    }

    #[test]
    fn a_lease_shorter_than_an_attempt_is_refused() {
        let only = Only::parse_from([
            "test",
            "--webhooks-timeout-ms",
            "5000",
            "--webhooks-lease-ms",
            "5000",
        ]);
        assert!(only.webhooks.settings().is_err());
    }
}
