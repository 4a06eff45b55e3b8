//! Announcing trial stages from the clock (`trial.stage_changed`), once per
//! organization and stage (the rule is `domain::trial::TrialNotice`).
//!
//! Each organization records the stage last considered and when its stage
//! may next change; the maintenance loop visits those that are due, each in
//! its own transaction under the organization's lock, so replicas never
//! announce a stage twice and a restart or a pause of the loop (however
//! long) announces the stage the trial is in then, once.

use super::{Service, lifecycle, load_state};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::trial::TrialNotice;
use crate::error::Result;
use crate::store;

impl Service {
    /// Announces the due trial stages of up to `limit` organizations;
    /// returns how many were looked at.
    pub async fn announce_trial_stages(&self, limit: i64) -> Result<usize> {
        let now = self.now();
        let due = {
            let mut conn = self.store().pool().acquire().await?;
            store::org_notices::trial_checks_due(&mut conn, now, limit).await?
        };
        for &org in &due {
            let mut tx = self.store().begin().await?;
            let Some(organization) = store::organizations::lock(&mut tx, org).await? else {
                continue;
            };
            let (considered, check_at) = store::org_notices::trial_notice(&mut tx, org).await?;
            // Another replica got here first.
            if check_at.is_none_or(|at| at > now) {
                continue;
            }
            let messaging_suppressed = organization.suppress_trial_messaging;
            let state = load_state(&mut tx, organization, now).await?;
            let status = state.trial(now);
            let trial_decides = state.access(now).decided_by_trial();
            let notice = TrialNotice::at(status, considered, trial_decides);
            if let Some((stage, previous)) = notice.announce {
                let changed = LifecycleEvent::TrialStageChanged {
                    stage,
                    previous,
                    days_remaining: status.days_remaining,
                    trial_end: status.trial_end,
                    messaging_suppressed,
                };
                lifecycle::record(&mut tx, Some(org), now, [changed]).await?;
            }
            store::org_notices::set_trial_notice(&mut tx, org, &notice).await?;
            self.commit(tx).await?;
        }
        Ok(due.len())
    }
}
