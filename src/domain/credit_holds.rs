//! Credit held for a request in flight: what it sets aside and until when
//! (the rules for placing and settling holds are in `usage`).

use chrono::{DateTime, Utc};

use super::credits::Micros;
use super::ids::{HoldId, OrgId, UserId};

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    /// Set aside until settled or expired.
    Active,
    /// Settled by a usage debit.
    Settled,
    /// Released by a usage report of zero.
    Released,
    /// Released by the background loop after its expiry.
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Settled => "settled",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Active, Self::Settled, Self::Released, Self::Expired]
            .into_iter()
            .find(|status| status.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditHold {
    pub id: HoldId,
    pub org_id: OrgId,
    pub amount: Micros,
    pub idempotency_key: String,
    pub user_id: UserId,
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: HoldStatus,
    /// The key of the usage report that settled or released it.
    pub settled_by: Option<String>,
}

impl CreditHold {
    /// Whether it still sets credit aside at `now`.
    pub fn counts_at(&self, now: DateTime<Utc>) -> bool {
        self.status == HoldStatus::Active && now < self.expires_at
    }
}

/// What active holds set aside at `now`.
pub fn held_at<'a>(holds: impl IntoIterator<Item = &'a CreditHold>, now: DateTime<Utc>) -> i64 {
    holds
        .into_iter()
        .filter(|hold| hold.counts_at(now))
        .map(|hold| hold.amount.get())
        .sum()
}
