//! The gauges a metrics scrape reads, sampled when it asks, so each value
//! is as of the scrape and nothing polls between scrapes.

use std::time::Duration;

use metrics::gauge;

use super::Service;
use crate::instruments::{
    CACHE_ORGANIZATIONS, CACHE_STALE_SECONDS, CACHE_VERSION_LAG, DB_CONNECTIONS,
    DB_MAX_CONNECTIONS, INBOX_OLDEST_PENDING_AGE, INBOX_PARKED, INBOX_PENDING,
    WEBHOOK_OLDEST_PENDING_AGE, WEBHOOK_PAUSED_ENDPOINTS, WEBHOOK_PENDING,
};
use crate::store::{entitlement_versions, stripe_events, webhook_delivery_log, webhook_endpoints};

/// A scrape answers within this even when the database does not; the
/// database gauges then keep their last values.
const DATABASE_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

impl Service {
    /// Sets the entitlement state's, the pool's and the inbox's gauges.
    pub async fn sample_gauges(&self) {
        let now = self.now();
        let cache = self.cache();
        gauge!(CACHE_ORGANIZATIONS).set(cache.len() as f64);
        let stale = cache
            .stale_since()
            .map_or(0.0, |since| seconds(now - since));
        gauge!(CACHE_STALE_SECONDS).set(stale);

        let pool = self.store().pool();
        let idle = pool.num_idle() as f64;
        gauge!(DB_CONNECTIONS, "state" => "idle").set(idle);
        gauge!(DB_CONNECTIONS, "state" => "in_use").set(f64::from(pool.size()) - idle);
        gauge!(DB_MAX_CONNECTIONS).set(f64::from(pool.options().get_max_connections()));

        let sample = async {
            let mut conn = pool.acquire().await?;
            let clock = entitlement_versions::clock(&mut conn).await?;
            let depth = stripe_events::depth(&mut conn).await?;
            let webhooks = webhook_delivery_log::backlog(&mut conn).await?;
            let paused = webhook_endpoints::count_paused(&mut conn).await?;
            Ok::<_, crate::error::Error>((clock, depth, webhooks, paused))
        };
        match tokio::time::timeout(DATABASE_SAMPLE_TIMEOUT, sample).await {
            Ok(Ok((clock, depth, (pending, oldest), paused))) => {
                gauge!(WEBHOOK_PENDING).set(pending as f64);
                let oldest = oldest.map_or(0.0, |queued| seconds(now - queued).max(0.0));
                gauge!(WEBHOOK_OLDEST_PENDING_AGE).set(oldest);
                gauge!(WEBHOOK_PAUSED_ENDPOINTS).set(paused as f64);
                let lag = clock.0.saturating_sub(cache.watermark().0);
                gauge!(CACHE_VERSION_LAG).set(lag as f64);
                gauge!(INBOX_PENDING).set(depth.pending as f64);
                gauge!(INBOX_PARKED).set(depth.parked as f64);
                let oldest = depth
                    .oldest_pending
                    .map_or(0.0, |received| seconds(now - received).max(0.0));
                gauge!(INBOX_OLDEST_PENDING_AGE).set(oldest);
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "metrics: the database gauges were not sampled");
            }
            Err(_) => tracing::debug!("metrics: the database did not answer in time"),
        }
    }
}

fn seconds(delta: chrono::TimeDelta) -> f64 {
    delta.num_milliseconds() as f64 / 1000.0
}
