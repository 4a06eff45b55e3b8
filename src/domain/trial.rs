//! The free trial: no card, a configurable length, and stages by whole days
//! remaining that drive both warnings and access.

use chrono::{DateTime, TimeDelta, Utc};

const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialStage {
    /// 8 or more days remaining.
    Active,
    /// 4..=7 days remaining.
    EndingSoon,
    /// 1..=3 days remaining.
    EndingVerySoon,
    /// Less than one day remaining.
    ExpiresToday,
    /// Ended up to 3 days ago: still allowed, with a warning.
    SoftExpired,
    /// Ended 4 or more days ago.
    HardExpired,
}

impl TrialStage {
    pub fn from_days_remaining(days: i64) -> Self {
        match days {
            8.. => Self::Active,
            4..=7 => Self::EndingSoon,
            1..=3 => Self::EndingVerySoon,
            0 => Self::ExpiresToday,
            -3..=-1 => Self::SoftExpired,
            ..=-4 => Self::HardExpired,
        }
    }
}

/// The trial as seen at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialStatus {
    pub trial_end: DateTime<Utc>,
    /// Whole days until `trial_end`, rounded down: the last 24 hours before
    /// the end are day 0 and the first 24 hours after it are day -1.
    pub days_remaining: i64,
    pub stage: TrialStage,
}

impl TrialStatus {
    pub fn at(trial_end: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        let days_remaining = (trial_end - now).num_seconds().div_euclid(SECONDS_PER_DAY);
        Self {
            trial_end,
            days_remaining,
            stage: TrialStage::from_days_remaining(days_remaining),
        }
    }
}

/// How long a new organization's trial lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialLength(TimeDelta);

impl TrialLength {
    pub fn days(days: u32) -> Self {
        Self(TimeDelta::days(i64::from(days)))
    }

    pub fn end_for_start(self, start: DateTime<Utc>) -> DateTime<Utc> {
        start + self.0
    }
}

#[cfg(test)]
mod tests {
    use super::{TrialStage::*, *};

    fn status_with(offset: TimeDelta) -> TrialStatus {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        TrialStatus::at(now + offset, now)
    }

    #[test]
    fn stage_boundaries_by_whole_days_remaining() {
        let table = [
            (30, Active),
            (8, Active),
            (7, EndingSoon),
            (4, EndingSoon),
            (3, EndingVerySoon),
            (1, EndingVerySoon),
            (0, ExpiresToday),
            (-1, SoftExpired),
            (-3, SoftExpired),
            (-4, HardExpired),
            (-400, HardExpired),
        ];
        for (days, stage) in table {
            assert_eq!(TrialStage::from_days_remaining(days), stage, "{days} days");
        }
    }

    #[test]
    fn partial_days_round_down() {
        let hour = TimeDelta::hours(1);
        let day = TimeDelta::days(1);
        assert_eq!(status_with(day * 8 - hour).days_remaining, 7);
        assert_eq!(status_with(day * 8).days_remaining, 8);
        assert_eq!(status_with(hour).days_remaining, 0);
        assert_eq!(status_with(TimeDelta::zero()).days_remaining, 0);
        assert_eq!(status_with(-TimeDelta::seconds(1)).days_remaining, -1);
        assert_eq!(status_with(-(day * 3)).stage, SoftExpired);
        assert_eq!(
            status_with(-(day * 3) - TimeDelta::seconds(1)).stage,
            HardExpired
        );
    }
}
