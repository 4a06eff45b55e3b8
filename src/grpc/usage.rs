//! Usage reports and reservations at the edge: parsing and answers for
//! `RecordUsage`, `RecordUsageBatch` and `CheckEntitlement`'s hold.

use chrono::TimeDelta;
use tonic::Status;

use super::convert::{org_id, required_key, user_id};
use super::proto;
use crate::domain::credits::Micros;
use crate::domain::ids::{HoldId, OrgId};
use crate::domain::organization::ModelRestrictions;
use crate::domain::usage::MAX_BATCH_REPORTS;
use crate::error::{Error, FieldContext, Result};
use crate::service::{DEFAULT_HOLD_TTL, MAX_HOLD_TTL, Reservation, UsageRecorded, UsageReport};

/// Model and provider names: optional, bounded, printable.
pub(super) fn model_name(field: &str, raw: Option<&String>) -> Result<Option<String>> {
    match raw.map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(name)
            if name.len() <= ModelRestrictions::MAX_ENTRY_LEN
                && !name.chars().any(char::is_control) =>
        {
            Ok(Some(name.to_owned()))
        }
        Some(_) => Err(Error::invalid(
            field,
            format!(
                "must be at most {} printable characters",
                ModelRestrictions::MAX_ENTRY_LEN
            ),
        )),
    }
}

/// One report, validated.
pub(super) fn usage_report(request: &proto::RecordUsageRequest) -> Result<(OrgId, UsageReport)> {
    let hold = match request.hold_id.as_str() {
        "" => None,
        raw => Some(HoldId::parse(raw).field("hold_id")?),
    };
    let amount = if hold.is_some() {
        Micros::non_negative(request.amount_micros)
    } else {
        Micros::parse_positive(request.amount_micros)
    }
    .field("amount_micros")?;
    let report = UsageReport {
        user: user_id(&request.user_id)?,
        amount,
        model: model_name("model", Some(&request.model))?
            .ok_or_else(|| Error::invalid("model", "is required"))?,
        idempotency_key: required_key("idempotency_key", &request.idempotency_key)?,
        hold,
    };
    Ok((org_id(&request.org_id)?, report))
}

pub(super) fn recorded(recorded: UsageRecorded) -> proto::RecordUsageResponse {
    proto::RecordUsageResponse {
        entry_id: recorded
            .entry
            .map(|entry| entry.id.to_string())
            .unwrap_or_default(),
        balance_after_micros: recorded.balance_after.0,
        replayed: recorded.replayed,
    }
}

/// The batch's size is checked as a whole; each report on its own.
pub(super) fn batch_size(reports: usize) -> Result<()> {
    if reports == 0 || reports > MAX_BATCH_REPORTS {
        return Err(Error::invalid(
            "reports",
            format!("must hold 1 to {MAX_BATCH_REPORTS} reports (got {reports})"),
        ));
    }
    Ok(())
}

/// A report's result in a batch: what RecordUsage would have answered.
pub(super) fn batch_result(result: Result<UsageRecorded>) -> proto::RecordUsageResult {
    use proto::record_usage_result::Result as Outcome;
    let result = match result {
        Ok(done) => Outcome::Recorded(recorded(done)),
        Err(error) => {
            let status = Status::from(error);
            Outcome::Error(proto::UsageReportError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            })
        }
    };
    proto::RecordUsageResult {
        result: Some(result),
    }
}

/// `CheckEntitlement`'s reservation fields.
pub(super) fn reservation(request: &proto::CheckEntitlementRequest) -> Result<Option<Reservation>> {
    let Some(amount) = request.reserve_micros else {
        return Ok(None);
    };
    let amount = Micros::parse_positive(amount).field("reserve_micros")?;
    let ttl = match request.reservation_ttl_seconds {
        None => DEFAULT_HOLD_TTL,
        Some(seconds) => {
            let ttl = TimeDelta::seconds(i64::from(seconds));
            if seconds == 0 || ttl > MAX_HOLD_TTL {
                return Err(Error::invalid(
                    "reservation_ttl_seconds",
                    format!("must be 1 to {}", MAX_HOLD_TTL.num_seconds()),
                ));
            }
            ttl
        }
    };
    Ok(Some(Reservation {
        amount,
        idempotency_key: required_key("reservation_key", &request.reservation_key)?,
        ttl,
    }))
}
