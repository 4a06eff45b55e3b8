//! `WatchEntitlements`: the state of the watched organizations, then each
//! change as it commits, from this replica's memory.
//!
//! The watcher subscribes to changes before it takes its snapshot, so no
//! change falls between the two (one may arrive twice, which is harmless:
//! updates carry whole states). A watcher that resumes from a version gets
//! the organizations changed since, if the replica's log still reaches back
//! that far, and otherwise a resync and a full snapshot; so does a watcher
//! that reads too slowly to keep up.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::{Actor, CachedOrg, Service};
use crate::domain::entitlement::{Access, StateVersion};
use crate::domain::ids::OrgId;
use crate::error::Result;

/// Updates buffered for one watcher before it is considered slow.
const WATCHER_BUFFER: usize = 1024;

#[derive(Debug, Clone)]
pub enum WatchUpdate {
    /// An organization's current state, as of `version`.
    Org {
        org: Arc<CachedOrg>,
        version: StateVersion,
        /// Read at the moment the update was made.
        access: Access,
        used_seats: i64,
        paid_seats: i64,
    },
    Removed {
        org: OrgId,
        version: StateVersion,
    },
    /// Drop the local copy: a full snapshot follows.
    Resync {
        version: StateVersion,
    },
    SnapshotComplete {
        version: StateVersion,
    },
}

impl Service {
    /// Starts a watch; the updates arrive on the returned channel until the
    /// receiver is dropped.
    pub fn watch_entitlements(
        &self,
        actor: &Actor,
        orgs: Option<HashSet<OrgId>>,
        resume_from: Option<StateVersion>,
    ) -> Result<mpsc::Receiver<WatchUpdate>> {
        Self::require_entitlement_reader(actor)?;
        let (updates, receiver) = mpsc::channel(WATCHER_BUFFER);
        let mut live = self.cache().subscribe();
        let service = self.clone();
        tokio::spawn(async move {
            let watcher = Watcher {
                service: &service,
                orgs: orgs.as_ref(),
                updates,
            };
            // Every send fails once the watcher has gone; then stop.
            let _ = watcher.run(&mut live, resume_from).await;
        });
        Ok(receiver)
    }
}

struct Watcher<'a> {
    service: &'a Service,
    orgs: Option<&'a HashSet<OrgId>>,
    updates: mpsc::Sender<WatchUpdate>,
}

/// The watcher has gone.
struct Gone;

impl Watcher<'_> {
    async fn run(
        &self,
        live: &mut broadcast::Receiver<crate::service::Change>,
        resume_from: Option<StateVersion>,
    ) -> Result<(), Gone> {
        let cache = self.service.cache();
        let at = cache.watermark();
        match resume_from.map(|version| (version, cache.changed_since(version))) {
            None => self.snapshot(at).await?,
            Some((_, Some(changed))) => {
                for org in changed {
                    self.send_org(org, at).await?;
                }
            }
            Some((_, None)) => {
                self.send(WatchUpdate::Resync { version: at }).await?;
                self.snapshot(at).await?;
            }
        }
        self.send(WatchUpdate::SnapshotComplete { version: at })
            .await?;
        loop {
            match live.recv().await {
                Ok(change) => self.send_org(change.org, change.version).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let at = cache.watermark();
                    self.send(WatchUpdate::Resync { version: at }).await?;
                    self.snapshot(at).await?;
                    self.send(WatchUpdate::SnapshotComplete { version: at })
                        .await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    fn watches(&self, org: OrgId) -> bool {
        self.orgs.is_none_or(|orgs| orgs.contains(&org))
    }

    async fn snapshot(&self, version: StateVersion) -> Result<(), Gone> {
        let cache = self.service.cache();
        let orgs: Vec<Arc<CachedOrg>> = match self.orgs {
            None => cache.all(),
            Some(orgs) => orgs.iter().filter_map(|&org| cache.get(org)).collect(),
        };
        for org in orgs {
            self.send(self.org_update(org, version)).await?;
        }
        Ok(())
    }

    async fn send_org(&self, org: OrgId, version: StateVersion) -> Result<(), Gone> {
        if !self.watches(org) {
            return Ok(());
        }
        let update = match self.service.cache().get(org) {
            Some(org) => self.org_update(org, version),
            None => WatchUpdate::Removed { org, version },
        };
        self.send(update).await
    }

    fn org_update(&self, org: Arc<CachedOrg>, version: StateVersion) -> WatchUpdate {
        let now = self.service.now();
        let usage = org.state.seat_usage(now);
        WatchUpdate::Org {
            access: org.state.access(now),
            used_seats: usage.used,
            paid_seats: usage.paid,
            org,
            version,
        }
    }

    async fn send(&self, update: WatchUpdate) -> Result<(), Gone> {
        self.updates.send(update).await.map_err(|_| Gone)
    }
}
