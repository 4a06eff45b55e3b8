//! Every organization's entitlement inputs, in memory, so the gateway's
//! `CheckEntitlement` needs no database round trip.
//!
//! The cache is loaded at start-up from one consistent read, then follows
//! the changes the database announces (`LISTEN billing_entitlements`): each
//! notification names an organization and the version its transaction
//! took, and only that organization is read again. Versions follow commit
//! order and notifications arrive in commit order, so after handling the
//! notification of version v the cache has every change up to v: that is
//! its *watermark*. Notifications sent while the listener was disconnected
//! are lost, so after every (re)connection the cache reads every
//! organization changed since its watermark. Time-based transitions (trial
//! stages, expiries) are not changes: the decision reads them from the
//! clock at check time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};

use super::entitlement_reads::{Read, Selection, read};
use crate::domain::entitlement::{OrgEntitlementState, StateVersion};
use crate::domain::ids::InstanceId;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::instances::InstanceSubscription;
use crate::domain::role::Role;
use crate::error::Result;
use crate::store::Store;

/// One organization as the cache holds it: only what decisions read, kept
/// compact, since every replica holds every organization (the display name
/// is left out; subscriptions that are over are dropped, except the newest,
/// which tells "never subscribed" from "subscription ended").
#[derive(Debug)]
pub struct CachedOrg {
    /// The version of the organization's last change.
    pub version: StateVersion,
    pub state: OrgEntitlementState,
    /// Members and their roles, sorted by user id.
    pub(super) members: Box<[(Box<str>, Role)]>,
    /// Each instance's live subscription, or else its latest canceled one,
    /// sorted by instance id.
    pub(super) instances: Box<[InstanceSubscription]>,
}

impl CachedOrg {
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        self.members
            .binary_search_by(|(member, _)| member.as_ref().cmp(user.as_str()))
            .ok()
            .map(|at| self.members[at].1)
    }

    pub fn members(&self) -> impl Iterator<Item = (&str, Role)> {
        self.members
            .iter()
            .map(|(user, role)| (user.as_ref(), *role))
    }

    pub fn instance(&self, id: &InstanceId) -> Option<&InstanceSubscription> {
        self.instances
            .binary_search_by(|instance| instance.instance_id.cmp(id))
            .ok()
            .map(|at| &self.instances[at])
    }
}

/// One organization's change, as watchers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub version: StateVersion,
    pub org: OrgId,
}

/// The latest changes, for watchers that resume from a version.
#[derive(Debug)]
struct ChangeLog {
    recent: VecDeque<Change>,
    capacity: usize,
    /// The log holds every change after this version.
    complete_after: StateVersion,
}

#[derive(Debug)]
pub struct EntitlementCache {
    orgs: RwLock<HashMap<OrgId, Arc<CachedOrg>>>,
    watermark: watch::Sender<StateVersion>,
    log: std::sync::Mutex<ChangeLog>,
    live: broadcast::Sender<Change>,
    /// Since when the cache has not been following changes, if it is not.
    stale_since: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl EntitlementCache {
    /// Loads every organization. Watchers may resume from up to
    /// `log_capacity` changes back.
    pub async fn load(store: &Store, now: DateTime<Utc>, log_capacity: usize) -> Result<Self> {
        let read = read(store, Selection::All, now).await?;
        let cache = Self {
            orgs: RwLock::new(HashMap::with_capacity(read.found.len())),
            watermark: watch::Sender::new(read.clock),
            log: std::sync::Mutex::new(ChangeLog {
                recent: VecDeque::with_capacity(log_capacity.min(65_536)),
                capacity: log_capacity,
                complete_after: read.clock,
            }),
            live: broadcast::Sender::new(log_capacity.clamp(16, 65_536)),
            stale_since: std::sync::Mutex::new(None),
        };
        cache.install(read);
        Ok(cache)
    }

    pub fn get(&self, org: OrgId) -> Option<Arc<CachedOrg>> {
        self.orgs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&org)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.orgs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every change up to this version is in the cache.
    pub fn watermark(&self) -> StateVersion {
        *self.watermark.borrow()
    }

    /// Every organization held, for a watcher's snapshot.
    pub fn all(&self) -> Vec<Arc<CachedOrg>> {
        self.orgs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Changes from now on. Subscribe before taking a snapshot, so nothing
    /// falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.live.subscribe()
    }

    /// The organizations changed after `version`, or `None` when the log no
    /// longer reaches back that far.
    pub fn changed_since(&self, version: StateVersion) -> Option<Vec<OrgId>> {
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if version < log.complete_after {
            return None;
        }
        let mut orgs: Vec<OrgId> = log
            .recent
            .iter()
            .filter(|change| change.version > version)
            .map(|change| change.org)
            .collect();
        orgs.sort_unstable();
        orgs.dedup();
        Some(orgs)
    }

    pub(super) fn record(&self, change: Change) {
        {
            let mut log = self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            log.recent.push_back(change);
            while log.recent.len() > log.capacity {
                if let Some(dropped) = log.recent.pop_front() {
                    log.complete_after = dropped.version;
                }
            }
        }
        // No watcher is no error.
        let _ = self.live.send(change);
    }

    /// Since when the cache has not been following changes; `None` while it
    /// is.
    pub fn stale_since(&self) -> Option<DateTime<Utc>> {
        *self
            .stale_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn set_stale_since(&self, since: Option<DateTime<Utc>>) {
        let mut stale = self
            .stale_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stale = match (since, *stale) {
            // The first moment counts.
            (Some(_), Some(earlier)) => Some(earlier),
            (since, _) => since,
        };
    }

    /// Notes that every change up to `version` is in.
    pub fn advance(&self, version: StateVersion) {
        self.watermark.send_if_modified(|current| {
            let newer = version > *current;
            if newer {
                *current = version;
            }
            newer
        });
    }

    /// The watermark as it moves: a change announced anywhere (lifecycle
    /// events announce their organization too).
    pub fn watermark_changes(&self) -> watch::Receiver<StateVersion> {
        self.watermark.subscribe()
    }

    /// Waits up to `timeout` for the watermark to reach `version`.
    pub async fn wait_for(&self, version: StateVersion, timeout: Duration) -> bool {
        let mut watermark = self.watermark.subscribe();
        tokio::time::timeout(timeout, watermark.wait_for(|seen| *seen >= version))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Reads the organizations again from the database and returns the
    /// clock of that read.
    pub async fn refresh(
        &self,
        store: &Store,
        orgs: &[OrgId],
        now: DateTime<Utc>,
    ) -> Result<StateVersion> {
        let read = read(store, Selection::Orgs(orgs.to_vec()), now).await?;
        let clock = read.clock;
        self.install(read);
        Ok(clock)
    }

    /// Reads every organization changed since the watermark and moves the
    /// watermark to the clock of that read: what a listener that was
    /// disconnected may have missed.
    pub async fn catch_up(&self, store: &Store, now: DateTime<Utc>) -> Result<usize> {
        let read = read(store, Selection::ChangedSince(self.watermark()), now).await?;
        let clock = read.clock;
        let changes: Vec<Change> = read
            .found
            .iter()
            .map(|org| Change {
                version: org.version,
                org: org.state.org.id,
            })
            .chain(read.gone.iter().map(|&org| Change {
                version: clock,
                org,
            }))
            .collect();
        self.install(read);
        self.advance(clock);
        for change in &changes {
            self.record(*change);
        }
        Ok(changes.len())
    }

    /// Puts a read in, never replacing an organization with an older state
    /// than the one held.
    fn install(&self, read: Read) {
        let mut orgs = self
            .orgs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for org in read.found {
            let id = org.state.org.id;
            let newer = orgs.get(&id).is_none_or(|held| held.version <= org.version);
            if newer {
                orgs.insert(id, Arc::new(org));
            }
        }
        for id in read.gone {
            orgs.remove(&id);
        }
    }
}
