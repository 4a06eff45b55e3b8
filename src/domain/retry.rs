//! When a failing attempt is tried again: doubling delays up to a cap, then
//! parked for an operator. Webhook events and billing operations both
//! follow it.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before giving up (parking the event, failing the operation).
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles with each attempt.
    pub first_delay: std::time::Duration,
    pub max_delay: std::time::Duration,
}

impl RetryPolicy {
    /// When to try again after `attempts` failed attempts, or `None` to give up.
    pub fn next_attempt(&self, attempts: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if attempts >= self.max_attempts {
            return None;
        }
        let delay = self.delay_after(attempts);
        Some(now + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX))
    }

    /// The wait after `attempts` failed attempts, or `None` to give up.
    pub fn wait_after(&self, attempts: u32) -> Option<std::time::Duration> {
        (attempts < self.max_attempts).then(|| self.delay_after(attempts))
    }

    fn delay_after(&self, attempts: u32) -> std::time::Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retries_back_off_then_give_up() {
        let policy = RetryPolicy {
            max_attempts: 4,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        };
        let now = Utc::now();
        let waits: Vec<Option<i64>> = (1..=4)
            .map(|n| {
                policy
                    .next_attempt(n, now)
                    .map(|at| (at - now).num_seconds())
            })
            .collect();
        assert_eq!(waits, [Some(1), Some(2), Some(3), None]);
        let waits: Vec<Option<u64>> = (1..=4)
            .map(|n| policy.wait_after(n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(waits, [Some(1), Some(2), Some(3), None]);
    }
}
