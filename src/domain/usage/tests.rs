//! The usage and hold rules, case by case.

use chrono::TimeDelta;

use super::*;
use crate::domain::credits::{CreditBalance, CreditLot};
use crate::domain::ids::CreditEntryId;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
        .expect("time")
        .to_utc()
}

fn org() -> OrgId {
    OrgId::from(uuid::Uuid::from_u128(1))
}

fn usage(balance: i64, locked: bool, holds: Vec<CreditHold>) -> OrgUsage {
    let lots = (balance > 0)
        .then(|| CreditLot {
            entry: CreditEntryId::from(uuid::Uuid::from_u128(9)),
            expires_at: None,
            remaining: balance,
        })
        .into_iter()
        .collect();
    let book = LedgerBook::open(org(), CreditBalance { lots, overdraft: 0 }, now());
    OrgUsage::new(book, holds, Vec::new(), locked, now())
}

fn user() -> UserId {
    UserId::parse("alice").expect("user")
}

fn debit(key: &str, amount: i64, hold: Option<HoldId>) -> UsageRequest {
    UsageRequest::Debit(UsageDebit {
        key: key.into(),
        amount: Micros::non_negative(amount).expect("amount"),
        user: user(),
        model: "gpt-4o".into(),
        hold,
    })
}

fn reserve(key: &str, amount: i64) -> UsageRequest {
    UsageRequest::Reserve(HoldRequest {
        key: key.into(),
        amount: Micros::parse_positive(amount).expect("amount"),
        user: user(),
        model: None,
        expires_at: now() + TimeDelta::minutes(10),
    })
}

/// A short name for each outcome, with the balance or hold it left.
fn summary(outcome: &UsageOutcome) -> String {
    match outcome {
        UsageOutcome::Debited { entry, replayed } => {
            format!(
                "debited {} -> {} replayed={replayed}",
                entry.amount, entry.balance_after.0
            )
        }
        UsageOutcome::Released { replayed, .. } => format!("released replayed={replayed}"),
        UsageOutcome::Reserved { hold, replayed } => {
            format!("reserved {} replayed={replayed}", hold.amount.get())
        }
        UsageOutcome::Refused(refusal) => format!("refused: {refusal}"),
    }
}

/// Name, balance, locked, requests in order, the outcomes wanted.
type Case = (
    &'static str,
    i64,
    bool,
    Vec<UsageRequest>,
    Vec<&'static str>,
);

#[test]
fn reports_and_reservations_follow_the_rules_in_arrival_order() {
    let cases: Vec<Case> = vec![
        (
            "debits, a replay and a reused key",
            1_000,
            false,
            vec![
                debit("a", 300, None),
                debit("a", 300, None),
                debit("a", 5, None),
            ],
            vec![
                "debited -300 -> 700 replayed=false",
                "debited -300 -> 700 replayed=true",
                "refused: idempotency key \"a\" was used for a different amount",
            ],
        ),
        (
            "usage beyond the balance overdraws (the request was served)",
            100,
            false,
            vec![debit("a", 250, None)],
            vec!["debited -250 -> -150 replayed=false"],
        ),
        (
            "locked credits refuse usage and reservations",
            1_000,
            true,
            vec![debit("a", 1, None), reserve("r", 1)],
            vec![
                "refused: credits are locked while organization 00000000-0000-0000-0000-000000000001 is not entitled",
                "refused: credits are locked while organization 00000000-0000-0000-0000-000000000001 is not entitled",
            ],
        ),
        (
            "reservations count against each other, a replay does not",
            1_000,
            false,
            vec![
                reserve("r1", 600),
                reserve("r1", 600),
                reserve("r2", 500),
                reserve("r3", 400),
            ],
            vec![
                "reserved 600 replayed=false",
                "reserved 600 replayed=true",
                "refused: the credit available ($0.0004) cannot cover the reservation ($0.0005)",
                "reserved 400 replayed=false",
            ],
        ),
        (
            "a zero report needs a hold",
            1_000,
            false,
            vec![debit("z", 0, None)],
            vec!["refused: a usage report of zero must settle a hold"],
        ),
    ];
    for (name, balance, locked, requests, want) in cases {
        let mut usage = usage(balance, locked, Vec::new());
        let got: Vec<String> = requests
            .into_iter()
            .map(|request| summary(&usage.apply(request)))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_hold_is_settled_once_for_the_actual_cost() {
    let mut usage = usage(1_000, false, Vec::new());
    let UsageOutcome::Reserved { hold, .. } = usage.apply(reserve("r", 800)) else {
        panic!("reserved");
    };
    assert_eq!(usage.reservable(), Balance(200));
    // More than reserved is still debited in full.
    let settle = debit("u", 900, Some(hold.id));
    assert_eq!(
        summary(&usage.apply(settle.clone())),
        "debited -900 -> 100 replayed=false"
    );
    assert_eq!(
        summary(&usage.apply(settle)),
        "debited -900 -> 100 replayed=true"
    );
    assert_eq!(
        summary(&usage.apply(debit("other", 10, Some(hold.id)))),
        format!(
            "refused: hold {} was already settled by another usage report",
            hold.id
        )
    );
    assert_eq!(usage.reservable(), Balance(100), "nothing is held any more");
    let changes = usage.finish();
    // Made and settled in one batch: written once, settled.
    assert_eq!(changes.new_holds.len(), 1);
    assert_eq!(changes.new_holds[0].status, HoldStatus::Settled);
    assert!(changes.closed_holds.is_empty());
    assert_eq!(changes.book.entries.len(), 1);
}

#[test]
fn a_stored_hold_is_released_by_zero_expired_ones_stop_counting() {
    let stored = |key: &str, expires_in: i64| CreditHold {
        id: HoldId::generate(),
        org_id: org(),
        amount: Micros::parse_positive(500).expect("amount"),
        idempotency_key: key.into(),
        user_id: user(),
        model: None,
        created_at: now() - TimeDelta::minutes(20),
        expires_at: now() + TimeDelta::minutes(expires_in),
        status: HoldStatus::Active,
        settled_by: None,
    };
    let live = stored("live", 5);
    let expired = stored("old", -5);
    let mut usage = usage(1_000, false, vec![live.clone(), expired.clone()]);
    assert_eq!(
        usage.reservable(),
        Balance(500),
        "the expired hold sets nothing aside"
    );
    assert_eq!(
        summary(&usage.apply(debit("z", 0, Some(live.id)))),
        "released replayed=false"
    );
    assert_eq!(
        summary(&usage.apply(debit("z", 0, Some(live.id)))),
        "released replayed=true"
    );
    assert_eq!(usage.reservable(), Balance(1_000));
    // A hold past its expiry still settles the usage it covered.
    assert_eq!(
        summary(&usage.apply(debit("late", 200, Some(expired.id)))),
        "debited -200 -> 800 replayed=false"
    );
    let unknown = HoldId::generate();
    assert_eq!(
        summary(&usage.apply(debit("x", 1, Some(unknown)))),
        format!("refused: hold {unknown} is not one of this organization's")
    );
    let changes = usage.finish();
    let statuses: Vec<_> = changes
        .closed_holds
        .iter()
        .map(|h| (h.idempotency_key.as_str(), h.status))
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&("live", HoldStatus::Released)));
    assert!(statuses.contains(&("old", HoldStatus::Settled)));
    assert_eq!(changes.horizon, CreditHorizon::Always);
}
