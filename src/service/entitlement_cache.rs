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
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::domain::credits::CreditHorizon;
use crate::domain::entitlement::{OrgEntitlementState, StateVersion};
use crate::domain::ids::InstanceId;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::instances::InstanceSubscription;
use crate::domain::role::Role;
use crate::domain::seats::SeatHolders;
use crate::domain::subscription::Subscription;
use crate::error::Result;
use crate::store::{self, Store};

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
    members: Box<[(Box<str>, Role)]>,
    /// Each instance's live subscription, or else its latest canceled one,
    /// sorted by instance id.
    instances: Box<[InstanceSubscription]>,
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

/// Which organizations one read covers.
#[derive(Debug, Clone)]
enum Selection {
    All,
    Orgs(Vec<OrgId>),
    ChangedSince(StateVersion),
}

/// What one consistent read gave: the clock at the read, the organizations
/// found, and those asked for that no longer exist (deleted).
#[derive(Debug)]
struct Read {
    clock: StateVersion,
    found: Vec<CachedOrg>,
    gone: Vec<OrgId>,
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

    fn record(&self, change: Change) {
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

    fn set_stale_since(&self, since: Option<DateTime<Utc>>) {
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

/// The subscriptions decisions can still need: those not over, and the
/// newest of all.
fn relevant(mut subscriptions: Vec<Subscription>, now: DateTime<Utc>) -> Vec<Subscription> {
    let newest = subscriptions
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| s.created_at)
        .map(|(at, _)| at);
    let mut at = 0;
    subscriptions.retain(|s| {
        let keep = Some(at) == newest || !s.is_over(now);
        at += 1;
        keep
    });
    subscriptions.shrink_to_fit();
    subscriptions
}

/// One consistent (repeatable read) read of the selected organizations.
async fn read(store: &Store, selection: Selection, now: DateTime<Utc>) -> Result<Read> {
    let mut tx = store.begin().await?;
    sqlx::query!("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let clock = store::entitlement_versions::clock(&mut tx).await?;
    let asked: Option<Vec<Uuid>> = match &selection {
        Selection::All => None,
        Selection::Orgs(orgs) => Some(orgs.iter().map(OrgId::as_uuid).collect()),
        Selection::ChangedSince(version) => {
            Some(store::entitlement_versions::changed_since(&mut tx, *version).await?)
        }
    };
    let only = asked.as_deref();
    let organizations = store::organizations::list_live(&mut tx, only).await?;
    let mut versions: HashMap<OrgId, StateVersion> =
        store::entitlement_versions::of_orgs(&mut tx, only)
            .await?
            .into_iter()
            .collect();
    let mut members: HashMap<OrgId, Vec<(Box<str>, Role)>> = HashMap::new();
    let mut seats: HashMap<OrgId, SeatHolders> = HashMap::new();
    for (org, user, role) in store::members::roles_in_orgs(&mut tx, only).await? {
        seats.entry(org).or_default().add_member(role);
        members
            .entry(org)
            .or_default()
            .push((user.as_str().into(), role));
    }
    for (org, role, expires) in
        store::members::pending_invitations_in_orgs(&mut tx, only, now).await?
    {
        seats.entry(org).or_default().add_invitation(role, expires);
    }
    let mut subscriptions: HashMap<OrgId, Vec<_>> = HashMap::new();
    for (org, subscription) in store::subscriptions::list_for_orgs(&mut tx, only).await? {
        subscriptions.entry(org).or_default().push(subscription);
    }
    let mut horizons: HashMap<OrgId, CreditHorizon> =
        store::credits::horizons_in_orgs(&mut tx, only)
            .await?
            .into_iter()
            .collect();
    let mut instances: HashMap<OrgId, Vec<InstanceSubscription>> = HashMap::new();
    for instance in store::instances::list_current(&mut tx, only).await? {
        instances.entry(instance.org_id).or_default().push(instance);
    }
    tx.commit().await?;

    let gone = match asked {
        None => Vec::new(),
        Some(asked) => asked
            .into_iter()
            .map(OrgId::from)
            .filter(|id| !organizations.iter().any(|org| org.id == *id))
            .collect(),
    };
    let found = organizations
        .into_iter()
        .map(|mut org| {
            let id = org.id;
            org.name = String::new();
            let mut members = members.remove(&id).unwrap_or_default();
            members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut instances = instances.remove(&id).unwrap_or_default();
            instances.sort_unstable_by(|a, b| a.instance_id.cmp(&b.instance_id));
            let mut seats = seats.remove(&id).unwrap_or_default();
            seats.invitations_expiring.shrink_to_fit();
            CachedOrg {
                version: versions.remove(&id).unwrap_or_default(),
                members: members.into_boxed_slice(),
                instances: instances.into_boxed_slice(),
                state: OrgEntitlementState {
                    subscriptions: relevant(subscriptions.remove(&id).unwrap_or_default(), now),
                    seats,
                    credits: horizons.remove(&id).unwrap_or(CreditHorizon::Never),
                    org,
                },
            }
        })
        .collect();
    Ok(Read { clock, found, gone })
}
