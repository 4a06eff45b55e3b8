//! Following the database's change announcements, so this replica's
//! entitlement cache stays current (see `entitlement_cache`).

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::entitlement_cache::Change;
use crate::error::Result;
use crate::store;

impl super::Service {
    /// Follows the database's change announcements until `stop`, keeping
    /// the cache current. `listening` is the connection that was listening
    /// before the cache was loaded, so nothing fell between the two; after
    /// each reconnection it first reads what changed while it was not
    /// listening.
    pub async fn follow_entitlement_changes(
        &self,
        listening: PgListener,
        mut stop: watch::Receiver<bool>,
    ) {
        const FIRST_RETRY: Duration = Duration::from_millis(100);
        let mut retry = FIRST_RETRY;
        let mut first = Some(listening);
        while !*stop.borrow() {
            let first = first.take();
            let connected = async {
                let listener = match first {
                    Some(listener) => listener,
                    None => store::entitlement_versions::listen(self.store()).await?,
                };
                let missed = self.cache().catch_up(self.store(), self.now()).await?;
                Ok::<_, crate::error::Error>((listener, missed))
            };
            let mut listener = match connected.await {
                Ok((listener, missed)) => {
                    self.cache().set_stale_since(None);
                    tracing::info!(
                        missed,
                        watermark = self.cache().watermark().0,
                        "following entitlement changes"
                    );
                    retry = FIRST_RETRY;
                    listener
                }
                Err(error) => {
                    self.cache().set_stale_since(Some(self.now()));
                    tracing::warn!(error = %error, "cannot follow entitlement changes; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = stop.changed() => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    next = listener.try_recv() => next,
                    _ = stop.changed() => return,
                };
                let applied = match next {
                    Ok(Some(notification)) => self.apply_announcement(notification.payload()).await,
                    // The connection dropped: announcements made meanwhile are lost.
                    Ok(None) => Err(crate::error::Error::internal(anyhow::anyhow!(
                        "the listening connection was lost"
                    ))),
                    Err(error) => Err(error.into()),
                };
                if let Err(error) = applied {
                    self.cache().set_stale_since(Some(self.now()));
                    tracing::warn!(error = %error, "stopped following entitlement changes; reconnecting");
                    break;
                }
            }
        }
    }

    async fn apply_announcement(&self, payload: &str) -> Result<()> {
        let Some((org, version)) = store::entitlement_versions::parse_announcement(payload) else {
            tracing::warn!(payload, "an entitlement announcement that does not parse");
            return Ok(());
        };
        self.cache()
            .refresh(self.store(), &[org], self.now())
            .await?;
        self.cache().advance(version);
        self.cache().record(Change { version, org });
        Ok(())
    }
}
