//! The free trial: no card, a configurable length, and stages by whole days
//! remaining that drive both warnings and access.

use chrono::{DateTime, TimeDelta, Utc};

const SECONDS_PER_DAY: i64 = 86_400;

/// In the order a trial passes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    /// The fewest whole days remaining of the stage; `None` for the last.
    fn last_day(self) -> Option<i64> {
        match self {
            Self::Active => Some(8),
            Self::EndingSoon => Some(4),
            Self::EndingVerySoon => Some(1),
            Self::ExpiresToday => Some(0),
            Self::SoftExpired => Some(-3),
            Self::HardExpired => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::EndingSoon => "ending_soon",
            Self::EndingVerySoon => "ending_very_soon",
            Self::ExpiresToday => "expires_today",
            Self::SoftExpired => "soft_expired",
            Self::HardExpired => "hard_expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Active,
            Self::EndingSoon,
            Self::EndingVerySoon,
            Self::ExpiresToday,
            Self::SoftExpired,
            Self::HardExpired,
        ]
        .into_iter()
        .find(|stage| stage.as_str() == raw)
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

impl TrialStatus {
    /// The first instant of the next stage; `None` in the last one.
    pub fn next_stage_at(&self) -> Option<DateTime<Utc>> {
        // A stage whose fewest days remaining is `d` ends when less than `d`
        // whole days remain: one second past `trial_end - d days`.
        let last_day = self.stage.last_day()?;
        Some(self.trial_end - TimeDelta::days(last_day) + TimeDelta::seconds(1))
    }
}

/// What the background loop does about one trial's stage: the stage to
/// announce (`trial.stage_changed`, once per stage), the stage now
/// considered, and when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialNotice {
    /// The stage entered, and the one announced before it.
    pub announce: Option<(TrialStage, Option<TrialStage>)>,
    pub considered: Option<TrialStage>,
    pub check_at: Option<DateTime<Utc>>,
}

impl TrialNotice {
    /// Every stage after `Active` is announced once, when the loop first
    /// sees the trial in it; stages passed while the service was down are
    /// not announced late, only the one the trial is in. While a
    /// subscription decides access (`trial_decides` false) stages pass
    /// silently: they would only confuse a paying customer.
    pub fn at(status: TrialStatus, considered: Option<TrialStage>, trial_decides: bool) -> Self {
        let entered = status.stage > TrialStage::Active && considered < Some(status.stage);
        let announce = (entered && trial_decides).then_some((status.stage, considered));
        Self {
            announce,
            considered: if entered {
                Some(status.stage)
            } else {
                considered
            },
            check_at: status.next_stage_at(),
        }
    }

    /// After an operator moved the trial end: a trial moved back before the
    /// stages already considered enters them again, so they are forgotten;
    /// the loop looks at it at once (`now`).
    pub fn after_trial_end_moved(
        considered: Option<TrialStage>,
        status: TrialStatus,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            announce: None,
            considered: considered.filter(|c| *c <= status.stage),
            check_at: Some(now),
        }
    }

    /// A new trial: nothing to announce until its first announced stage.
    pub fn new_trial(status: TrialStatus) -> Self {
        Self::at(status, None, false)
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
    fn the_next_stage_starts_at_its_reported_instant() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for days in [30, 8, 7, 4, 3, 1, 0, -1, -3] {
            let status = TrialStatus::at(now + TimeDelta::days(days), now);
            let next = status.next_stage_at().expect("a next stage");
            let trial_end = status.trial_end;
            assert_eq!(
                TrialStatus::at(trial_end, next - TimeDelta::seconds(1)).stage,
                status.stage,
                "{days} days: still the stage a second before"
            );
            assert!(
                TrialStatus::at(trial_end, next).stage > status.stage,
                "{days} days: the next stage at the instant"
            );
        }
        let hard = TrialStatus::at(now - TimeDelta::days(4), now);
        assert_eq!(hard.next_stage_at(), None);
    }

    #[test]
    fn each_stage_is_announced_once_and_only_while_the_trial_decides() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |days| TrialStatus::at(now + TimeDelta::days(days) + TimeDelta::hours(12), now);
        let table = [
            // (days remaining, considered, trial decides, announce, considered after)
            (20, None, true, None, None),
            (6, None, true, Some((EndingSoon, None)), Some(EndingSoon)),
            (5, Some(EndingSoon), true, None, Some(EndingSoon)),
            (
                2,
                Some(EndingSoon),
                true,
                Some((EndingVerySoon, Some(EndingSoon))),
                Some(EndingVerySoon),
            ),
            // Down for days: only the stage it is in now.
            (
                -2,
                Some(EndingSoon),
                true,
                Some((SoftExpired, Some(EndingSoon))),
                Some(SoftExpired),
            ),
            (
                -9,
                Some(SoftExpired),
                true,
                Some((HardExpired, Some(SoftExpired))),
                Some(HardExpired),
            ),
            (-9, Some(HardExpired), true, None, Some(HardExpired)),
            // Subscribed: the stage passes silently.
            (2, Some(EndingSoon), false, None, Some(EndingVerySoon)),
        ];
        for (days, considered, decides, announce, after) in table {
            let notice = TrialNotice::at(at(days), considered, decides);
            assert_eq!(
                (notice.announce, notice.considered),
                (announce, after),
                "{days} days after {considered:?}"
            );
        }
    }

    #[test]
    fn a_trial_moved_back_forgets_the_stages_it_enters_again() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let extended = TrialStatus::at(now + TimeDelta::days(5) + TimeDelta::hours(1), now);
        let moved = TrialNotice::after_trial_end_moved(Some(HardExpired), extended, now);
        assert_eq!((moved.considered, moved.check_at), (None, Some(now)));
        let kept = TrialNotice::after_trial_end_moved(Some(EndingSoon), extended, now);
        assert_eq!(kept.considered, Some(EndingSoon));
        let new = TrialNotice::new_trial(TrialStatus::at(now + TimeDelta::days(30), now));
        assert_eq!(new.considered, None);
        assert_eq!(
            new.check_at,
            Some(now + TimeDelta::days(22) + TimeDelta::seconds(1))
        );
    }

    #[test]
    fn stages_round_trip_through_their_names() {
        for stage in [
            Active,
            EndingSoon,
            EndingVerySoon,
            ExpiresToday,
            SoftExpired,
            HardExpired,
        ] {
            assert_eq!(TrialStage::parse(stage.as_str()), Some(stage));
        }
        assert_eq!(TrialStage::parse("lapsed"), None);
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
