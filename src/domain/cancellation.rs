//! Cancelling at the period end, and undoing that before it ends.
//!
//! Stripe refuses to change a cancellation while a schedule drives the
//! subscription, and a schedule left behind would renew it anyway, so a
//! cancellation releases an active schedule first (a pending
//! billing-cycle change ends with it).

use super::operation::{ScheduleRef, Step};
use super::subscription_sync::ProviderSubscription;

/// The steps that set `live` to end at its period end (`cancel`) or to
/// renew again; none when it already does what is asked.
pub fn plan_cancellation(live: &ProviderSubscription, cancel: bool) -> Vec<Step> {
    if live.cancel_at_period_end == cancel {
        return Vec::new();
    }
    let mut steps = Vec::new();
    if cancel && let Some(schedule) = live.active_schedule() {
        steps.push(Step::ReleaseSchedule {
            schedule: ScheduleRef::Existing(schedule.id.clone()),
        });
    }
    steps.push(Step::SetCancelAtPeriodEnd {
        subscription_id: live.id.clone(),
        cancel,
    });
    steps
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::test_fixtures::{live, with_yearly_switch};

    #[test]
    fn cancelling_releases_an_active_schedule_first_and_resuming_only_flips_the_flag() {
        let now = Utc::now();
        let set = |cancel| Step::SetCancelAtPeriodEnd {
            subscription_id: "sub_1".into(),
            cancel,
        };
        // (case, subscription, cancel, steps)
        let mut canceling = live(3, now);
        canceling.cancel_at_period_end = true;
        let table = [
            ("cancel", live(3, now), true, vec![set(true)]),
            (
                "cancel with a pending switch",
                with_yearly_switch(live(3, now)),
                true,
                vec![
                    Step::ReleaseSchedule {
                        schedule: ScheduleRef::Existing("sub_sched_1".into()),
                    },
                    set(true),
                ],
            ),
            ("cancel again", canceling.clone(), true, vec![]),
            ("resume", canceling, false, vec![set(false)]),
            ("resume a running one", live(3, now), false, vec![]),
        ];
        for (case, sub, cancel, steps) in table {
            assert_eq!(plan_cancellation(&sub, cancel), steps, "{case}");
        }
    }
}
