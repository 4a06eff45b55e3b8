//! The subscription overview from local state.

use super::{Actor, Service, load_org, load_state};
use crate::domain::ids::OrgId;
use crate::domain::organization::Organization;
use crate::domain::role::OrgAction;
use crate::domain::subscription::{self, Subscription};
use crate::domain::trial::TrialStatus;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub org: Organization,
    /// The subscription that matters now: the one that counts, else the newest.
    pub current: Option<Subscription>,
    pub counts_for_access: bool,
    pub used_seats: i64,
    pub trial: TrialStatus,
}

impl Service {
    pub async fn get_subscription(&self, actor: &Actor, id: OrgId) -> Result<SubscriptionView> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = load_org(&mut tx, id).await?;
        self.authorize(&mut tx, actor, id, OrgAction::View).await?;
        let state = load_state(&mut tx, org, now).await?;
        let current = subscription::current(&state.subscriptions, now).cloned();
        Ok(SubscriptionView {
            counts_for_access: current.as_ref().is_some_and(|s| s.counts_at(now)),
            used_seats: state.seats.used_at(now),
            trial: state.trial(now),
            org: state.org,
            current,
        })
    }
}
