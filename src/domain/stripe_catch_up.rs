//! Catching up with Stripe's Events API: which window a run lists.
//!
//! Webhooks can be lost: our endpoint away for longer than Stripe retries
//! (about three days), a secret rotated wrongly, a delivery dropped. Every
//! run lists the events Stripe created since the stored cursor, less a
//! margin, and the inbox stores those it does not have yet (deduplicated by
//! id, as any redelivery). Only a complete listing moves the cursor, to the
//! moment that run began, so a run that fails halfway is simply listed
//! again. The margin covers clock skew between us and Stripe, and events
//! that show up in the list a little after their `created` time.

use chrono::{DateTime, TimeDelta, Utc};

/// How far before the cursor each run lists again.
pub const CATCH_UP_MARGIN: TimeDelta = TimeDelta::minutes(10);

/// Stripe lists events of the last 30 days only; anything older is left to
/// reconciliation, which compares the objects themselves.
pub const EVENT_RETENTION: TimeDelta = TimeDelta::days(30);

/// The events a run lists: those created at or after `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpWindow {
    pub since: DateTime<Utc>,
    /// Whether the window would have reached back beyond what Stripe keeps,
    /// so events may have been lost for good (the run says so in the log).
    pub clipped: bool,
}

/// The window for a run at `now`. The cursor is where the last complete
/// run began; before the first one, the newest event stored stands in for
/// it, and with nothing stored there is nothing to catch up with before now.
pub fn window(
    listed_until: Option<DateTime<Utc>>,
    newest_stored: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> CatchUpWindow {
    let from = listed_until.or(newest_stored).unwrap_or(now).min(now);
    let since = from - CATCH_UP_MARGIN;
    let oldest_listed = now - EVENT_RETENTION;
    if since < oldest_listed {
        CatchUpWindow {
            since: oldest_listed,
            clipped: true,
        }
    } else {
        CatchUpWindow {
            since,
            clipped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_a_margin_before_the_cursor_within_stripes_retention() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let hour = TimeDelta::hours(1);
        let cases = [
            (
                "from the cursor",
                Some(now - hour),
                Some(now),
                now - hour - CATCH_UP_MARGIN,
                false,
            ),
            (
                "before any run, from the newest event stored",
                None,
                Some(now - hour),
                now - hour - CATCH_UP_MARGIN,
                false,
            ),
            (
                "nothing stored, nothing listed",
                None,
                None,
                now - CATCH_UP_MARGIN,
                false,
            ),
            (
                "a cursor ahead of the clock is taken as now",
                Some(now + hour),
                None,
                now - CATCH_UP_MARGIN,
                false,
            ),
            (
                "beyond Stripe's 30 days",
                Some(now - TimeDelta::days(40)),
                None,
                now - EVENT_RETENTION,
                true,
            ),
            (
                "just within them",
                Some(now - TimeDelta::days(29)),
                None,
                now - TimeDelta::days(29) - CATCH_UP_MARGIN,
                false,
            ),
        ];
        for (name, listed_until, newest_stored, since, clipped) in cases {
            assert_eq!(
                window(listed_until, newest_stored, now),
                CatchUpWindow { since, clipped },
                "{name}"
            );
        }
    }
}
