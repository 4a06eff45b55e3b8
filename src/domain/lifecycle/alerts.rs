//! Alerts that fire once per crossing, with the state that remembers the
//! crossing: being over seats, and the credit balance going low or out.

use super::{LifecycleEvent, SeatCounts};
use crate::domain::seats::{SeatGate, SeatUsage};

/// `seats.exceeded` when the organization goes over its paid seats,
/// `seats.within_limit` when it stops being over; `flagged` is whether it
/// was last announced as over.
pub fn seat_alert(flagged: bool, usage: &SeatUsage) -> Option<LifecycleEvent> {
    let over = match usage.gate {
        SeatGate::OverSeats => true,
        SeatGate::TrialUnlimited
        | SeatGate::SeatsNotRequired
        | SeatGate::NoSubscription
        | SeatGate::SeatAvailable
        | SeatGate::SeatsFull => false,
    };
    let counts = SeatCounts {
        used: usage.used,
        paid: usage.paid,
    };
    match (flagged, over) {
        (false, true) => Some(LifecycleEvent::SeatsExceeded(counts)),
        (true, false) => Some(LifecycleEvent::SeatsWithinLimit(counts)),
        (false, false) | (true, true) => None,
    }
}

/// Where a credit balance stands against the low-balance threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BalanceLevel {
    /// At or above the threshold.
    Healthy,
    /// Positive, below the threshold.
    Low,
    /// Zero or below.
    Exhausted,
}

impl BalanceLevel {
    /// A threshold of 0 turns the low alert off: only exhaustion is told.
    pub fn of(balance: i64, threshold: i64) -> Self {
        if balance <= 0 {
            Self::Exhausted
        } else if balance < threshold {
            Self::Low
        } else {
            Self::Healthy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Low => "low",
            Self::Exhausted => "exhausted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Healthy, Self::Low, Self::Exhausted]
            .into_iter()
            .find(|level| level.as_str() == raw)
    }
}

/// The level a balance is at now, and what crossing into it announces:
/// `credits.low` when it falls below the threshold, `credits.exhausted`
/// when it reaches zero (both, falling straight through). Rising announces
/// nothing and re-arms the alerts. `previous` is `None` for an account
/// never looked at (it predates the alerts): its level is set silently.
pub fn balance_alerts(
    previous: Option<BalanceLevel>,
    balance: i64,
    threshold: i64,
) -> (BalanceLevel, Vec<LifecycleEvent>) {
    let level = BalanceLevel::of(balance, threshold);
    let Some(previous) = previous else {
        return (level, Vec::new());
    };
    let low = LifecycleEvent::CreditsLow { balance, threshold };
    let exhausted = LifecycleEvent::CreditsExhausted { balance };
    let events = match (previous, level) {
        (BalanceLevel::Healthy, BalanceLevel::Low) => vec![low],
        (BalanceLevel::Healthy, BalanceLevel::Exhausted) if threshold > 0 => vec![low, exhausted],
        (BalanceLevel::Healthy, BalanceLevel::Exhausted)
        | (BalanceLevel::Low, BalanceLevel::Exhausted) => vec![exhausted],
        (BalanceLevel::Healthy, BalanceLevel::Healthy)
        | (BalanceLevel::Low, BalanceLevel::Healthy | BalanceLevel::Low)
        | (BalanceLevel::Exhausted, _) => Vec::new(),
    };
    (level, events)
}

#[cfg(test)]
mod tests {
    use super::BalanceLevel::*;
    use super::*;
    use crate::domain::lifecycle::EventType::{self, *};

    fn types(events: &[LifecycleEvent]) -> Vec<EventType> {
        events.iter().map(LifecycleEvent::event_type).collect()
    }

    #[test]
    fn the_balance_announces_each_downward_crossing_once() {
        const THRESHOLD: i64 = 5_000_000;
        let table = [
            (None, 100, Low, vec![]),
            (None, 0, Exhausted, vec![]),
            (Some(Healthy), 6_000_000, Healthy, vec![]),
            (Some(Healthy), 5_000_000, Healthy, vec![]),
            (Some(Healthy), 4_999_999, Low, vec![CreditsLow]),
            (
                Some(Healthy),
                0,
                Exhausted,
                vec![CreditsLow, CreditsExhausted],
            ),
            (Some(Low), 1, Low, vec![]),
            (Some(Low), -20, Exhausted, vec![CreditsExhausted]),
            (Some(Exhausted), -30, Exhausted, vec![]),
            (Some(Exhausted), 1_000, Low, vec![]),
            (Some(Exhausted), 9_000_000, Healthy, vec![]),
            (Some(Low), 9_000_000, Healthy, vec![]),
        ];
        for (previous, balance, level, want) in table {
            let (got, events) = balance_alerts(previous, balance, THRESHOLD);
            assert_eq!(
                (got, types(&events)),
                (level, want),
                "{previous:?} then {balance}"
            );
        }
    }

    #[test]
    fn a_zero_threshold_only_announces_exhaustion() {
        let (level, events) = balance_alerts(Some(Healthy), 0, 0);
        assert_eq!((level, types(&events)), (Exhausted, vec![CreditsExhausted]));
        assert_eq!(BalanceLevel::of(1, 0), Healthy);
    }

    #[test]
    fn levels_round_trip_through_their_names() {
        for level in [Healthy, Low, Exhausted] {
            assert_eq!(BalanceLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(BalanceLevel::parse("soggy"), None);
    }

    #[test]
    fn being_over_seats_is_announced_when_it_starts_and_ends() {
        let usage = |gate, used| SeatUsage {
            used,
            paid: 3,
            gate,
        };
        let over = usage(SeatGate::OverSeats, 4);
        let full = usage(SeatGate::SeatsFull, 3);
        assert_eq!(
            seat_alert(false, &over),
            Some(LifecycleEvent::SeatsExceeded(SeatCounts {
                used: 4,
                paid: 3
            }))
        );
        assert_eq!(seat_alert(true, &over), None);
        assert_eq!(
            seat_alert(true, &full),
            Some(LifecycleEvent::SeatsWithinLimit(SeatCounts {
                used: 3,
                paid: 3
            }))
        );
        assert_eq!(seat_alert(false, &full), None);
        assert_eq!(
            seat_alert(true, &usage(SeatGate::NoSubscription, 9)),
            Some(LifecycleEvent::SeatsWithinLimit(SeatCounts {
                used: 9,
                paid: 3
            }))
        );
    }
}
