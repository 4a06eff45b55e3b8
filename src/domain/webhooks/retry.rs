//! When a failed delivery is tried again, given up, and its endpoint
//! paused.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// When a failed delivery is tried again: after each delay in turn, then
/// every `then_every`, for at most `give_up_after` from its first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    pub then_every: Duration,
    pub give_up_after: Duration,
}

impl Default for RetrySchedule {
    /// 5 s, 30 s, 2 min, 10 min, 1 h, then every 6 h, for 3 days.
    fn default() -> Self {
        Self {
            delays: [5, 30, 120, 600, 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            then_every: Duration::from_secs(6 * 3600),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl RetrySchedule {
    /// The next attempt after `failures` failed ones (the first failure is
    /// 1), or `None` when the delivery is given up.
    pub fn next_attempt(
        &self,
        first_attempt_at: DateTime<Utc>,
        failures: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let index = usize::try_from(failures.saturating_sub(1)).unwrap_or(usize::MAX);
        let delay = self.delays.get(index).copied().unwrap_or(self.then_every);
        let next = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
        let deadline =
            first_attempt_at + TimeDelta::from_std(self.give_up_after).unwrap_or(TimeDelta::MAX);
        (next <= deadline).then_some(next)
    }
}

/// Whether an endpoint failing since `failing_since` is paused now.
pub fn should_pause(failing_since: DateTime<Utc>, now: DateTime<Utc>, after: Duration) -> bool {
    now - failing_since >= TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_deliveries_follow_the_schedule_then_give_up() {
        let schedule = RetrySchedule::default();
        let first = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let after = |failures: u32, now: DateTime<Utc>| {
            schedule
                .next_attempt(first, failures, now)
                .map(|next| (next - now).num_seconds())
        };
        assert_eq!(after(1, first), Some(5));
        assert_eq!(after(2, first), Some(30));
        assert_eq!(after(3, first), Some(120));
        assert_eq!(after(4, first), Some(600));
        assert_eq!(after(5, first), Some(3600));
        assert_eq!(after(6, first), Some(6 * 3600));
        assert_eq!(after(20, first + TimeDelta::days(2)), Some(6 * 3600));
        // The next attempt would fall past three days from the first.
        assert_eq!(after(20, first + TimeDelta::hours(67)), None);
        assert_eq!(after(20, first + TimeDelta::hours(66)), Some(6 * 3600));
    }

    #[test]
    fn an_endpoint_is_paused_once_it_has_failed_long_enough() {
        let since = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let day = Duration::from_secs(86_400);
        assert!(!should_pause(since, since + TimeDelta::hours(23), day));
        assert!(should_pause(since, since + TimeDelta::hours(24), day));
    }
}
