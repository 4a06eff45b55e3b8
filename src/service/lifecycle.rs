//! Recording lifecycle events in the transaction of the change they report
//! (the outbox), so an event exists if and only if its change committed.
//! Which events a change produces is the domain's to say
//! (`domain::lifecycle`); the use cases call these with what it said.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Service, load_org, load_state};
use crate::domain::ids::OrgId;
use crate::domain::lifecycle::alerts::{BalanceLevel, balance_alerts, seat_alert};
use crate::domain::lifecycle::{LifecycleEvent, NewEvent};
use crate::error::Result;
use crate::store;

/// Records `events` of `org` (none for events about the service itself),
/// in order, in the caller's transaction.
pub(super) async fn record(
    conn: &mut PgConnection,
    org: Option<OrgId>,
    now: DateTime<Utc>,
    events: impl IntoIterator<Item = LifecycleEvent>,
) -> Result<()> {
    let events: Vec<NewEvent> = events
        .into_iter()
        .map(|event| NewEvent::of(org, now, event))
        .collect();
    store::billing_events::record(conn, &events).await
}

/// An account's alert state and its balance after a change.
#[derive(Debug, Clone, Copy)]
pub(super) struct BalanceAfter {
    pub org: OrgId,
    pub previous: Option<BalanceLevel>,
    pub threshold: i64,
    pub balance: i64,
}

/// Announces every account that crossed its low-balance threshold or zero,
/// and stores the levels that changed, in the caller's transaction.
pub(super) async fn record_balance_alerts(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    accounts: &[BalanceAfter],
) -> Result<Vec<(OrgId, BalanceLevel)>> {
    let mut changed = Vec::new();
    let mut events = Vec::new();
    for account in accounts {
        let (level, alerts) = balance_alerts(account.previous, account.balance, account.threshold);
        if account.previous != Some(level) {
            changed.push((account.org, level));
        }
        events.extend(
            alerts
                .into_iter()
                .map(|event| NewEvent::of(Some(account.org), now, event)),
        );
    }
    store::credit_postings::set_balance_levels(conn, &changed).await?;
    store::billing_events::record(conn, &events).await?;
    Ok(changed)
}

impl Service {
    /// After a change of members, invitations, roles, subscriptions or
    /// overrides, announces the organization going over its paid seats or
    /// back within them (once per crossing). The caller holds the
    /// organization's lock.
    pub(super) async fn recheck_seats(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let organization = load_org(conn, org).await?;
        let flagged = store::org_notices::over_seats_announced(conn, org).await?;
        let usage = load_state(conn, organization, now).await?.seat_usage(now);
        let Some(alert) = seat_alert(flagged, &usage) else {
            return Ok(());
        };
        store::org_notices::set_over_seats_announced(conn, org, !flagged).await?;
        record(conn, Some(org), now, [alert]).await
    }

    /// Looks again at organizations announced as over their seats, whose
    /// pending invitations may have expired since (nothing else announces
    /// that); returns how many were looked at.
    pub async fn recheck_over_seats(&self, limit: i64) -> Result<usize> {
        let orgs = {
            let mut conn = self.store().pool().acquire().await?;
            store::org_notices::over_seats(&mut conn, limit).await?
        };
        for &org in &orgs {
            let mut tx = self.store().begin().await?;
            if store::organizations::lock(&mut tx, org).await?.is_none() {
                continue;
            }
            self.recheck_seats(&mut tx, org, self.now()).await?;
            self.commit(tx).await?;
        }
        Ok(orgs.len())
    }

    /// The low-balance threshold that applies to an account: its own, or
    /// the catalog's.
    pub(super) fn low_balance_threshold(&self, own: Option<i64>) -> i64 {
        own.unwrap_or(self.catalog().credits().low_balance_threshold.get())
    }
}
