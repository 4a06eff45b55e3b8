//! The database reads that fill the entitlement cache: every input of the
//! decision for a selection of organizations, in one consistent snapshot.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::entitlement_cache::CachedOrg;
use crate::domain::credits::CreditHorizon;
use crate::domain::entitlement::{OrgEntitlementState, StateVersion};
use crate::domain::ids::OrgId;
use crate::domain::instances::InstanceSubscription;
use crate::domain::role::Role;
use crate::domain::seats::SeatHolders;
use crate::domain::subscription::Subscription;
use crate::error::Result;
use crate::store::{self, Store};

/// Which organizations one read covers.
#[derive(Debug, Clone)]
pub(super) enum Selection {
    All,
    Orgs(Vec<OrgId>),
    ChangedSince(StateVersion),
}

/// What one consistent read gave: the clock at the read, the organizations
/// found, and those asked for that no longer exist (deleted).
#[derive(Debug)]
pub(super) struct Read {
    pub clock: StateVersion,
    pub found: Vec<CachedOrg>,
    pub gone: Vec<OrgId>,
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
pub(super) async fn read(store: &Store, selection: Selection, now: DateTime<Utc>) -> Result<Read> {
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
