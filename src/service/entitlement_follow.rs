//! Following the database's change announcements, so this replica's
//! entitlement cache stays current (see `entitlement_cache`).

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::entitlement_cache::Change;
use crate::domain::ids::OrgId;
use crate::error::Result;
use crate::store;
use crate::store::entitlement_versions::Announcement;

/// The most announcements applied in one read.
const MAX_BATCH: usize = 256;

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
                    Ok(Some(notification)) => {
                        // Whatever else has arrived meanwhile goes with it:
                        // a burst of commits costs one read, not one each.
                        let mut payloads = vec![notification.payload().to_owned()];
                        while payloads.len() < MAX_BATCH
                            && let Some(more) = listener.next_buffered()
                        {
                            payloads.push(more.payload().to_owned());
                        }
                        self.apply_announcements(&payloads).await
                    }
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

    /// Reads the announced organizations again, in one read, then moves
    /// the watermark: every organization of the batch is in before any
    /// reader waiting for its version is let through.
    async fn apply_announcements(&self, payloads: &[String]) -> Result<()> {
        let mut changes = Vec::with_capacity(payloads.len());
        let mut newest = None;
        for payload in payloads {
            match store::entitlement_versions::parse_announcement(payload) {
                Some(Announcement::Org(org, version)) => {
                    changes.push(Change { version, org });
                    newest = newest.max(Some(version));
                }
                Some(Announcement::VersionOnly(version)) => newest = newest.max(Some(version)),
                None => tracing::warn!(payload, "an entitlement announcement that does not parse"),
            }
        }
        let Some(newest) = newest else {
            return Ok(());
        };
        let mut orgs: Vec<OrgId> = changes.iter().map(|c| c.org).collect();
        orgs.sort_unstable();
        orgs.dedup();
        if !orgs.is_empty() {
            self.cache()
                .refresh(self.store(), &orgs, self.now())
                .await?;
        }
        self.cache().advance(newest);
        changes.sort_by_key(|c| c.version);
        for change in changes {
            self.cache().record(change);
        }
        Ok(())
    }
}
