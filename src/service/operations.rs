//! The life of a billing operation: record, plan, perform, finish.
//!
//! 1. **Record** (one statement): the operation, with the caller's
//!    idempotency key, claims its organization's lane; a second change of
//!    the same subscription waits briefly, then gets ABORTED.
//! 2. **Plan**: the use case reads Stripe's live state and asks the domain
//!    for a plan, stored on the operation (or a refusal, which forgets it).
//! 3. **Perform**: each step is sent outside any transaction, with the key
//!    `<operation id>:<step>`.
//! 4. **Finish** (one short transaction): the outcome, the resulting sync
//!    and the audit entry, only if this performer still holds the claim.
//!
//! A process that dies anywhere leaves the operation running with a claim
//! that lapses; the operations loop takes it over and runs the same use
//! case again from its stored plan, so Stripe replays what it did.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::audit_trail::{AuditAction, record_as};
use super::{Actor, Service};
use crate::domain::ids::{IdempotencyKey, OrgId};
use crate::domain::operation::{OperationKind, OperationStatus, Step};
use crate::domain::reason::ErrorReason;
use crate::error::{Error, Result};
use crate::store::operations::{self as stored, NewOperation, Recorded, StoredOperation};

/// An operation this process performs now.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub id: Uuid,
    pub token: Uuid,
    pub org: OrgId,
    pub kind: OperationKind,
    /// Who asked, as the audit trail names them.
    pub actor: String,
    pub request: Value,
    pub plan: Option<Value>,
    pub attempts: i32,
}

impl Claim {
    pub fn from_stored(op: StoredOperation, token: Uuid) -> Self {
        Self {
            id: op.id,
            token,
            org: op.org_id,
            kind: op.kind,
            actor: op.actor,
            request: op.request,
            plan: op.plan,
            attempts: op.attempts,
        }
    }

    /// The stored request, as the use case wrote it.
    pub fn request<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.request.clone()).map_err(|e| {
            Error::internal(anyhow::anyhow!("operation {}: bad request: {e}", self.id))
        })
    }

    /// The stored plan, if planning got that far.
    pub fn plan<T: DeserializeOwned>(&self) -> Result<Option<StoredPlan<T>>> {
        self.plan
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::internal(anyhow::anyhow!("operation {}: bad plan: {e}", self.id)))
    }
}

/// A plan as stored: the steps, and what the use case needs to finish.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(super) struct StoredPlan<C> {
    pub steps: Vec<Step>,
    pub context: C,
}

/// How beginning an operation went.
#[derive(Debug)]
pub(super) enum Begun {
    Claimed(Claim),
    /// The caller's key was used before, by this finished operation.
    Replayed(StoredOperation),
}

impl Service {
    /// Records a new operation and claims it. A change of the organization's
    /// subscription while another runs waits up to the configured time,
    /// then is ABORTED. A key the caller used before replays that
    /// operation's answer (or is refused when the request differs).
    pub(super) async fn begin_operation(
        &self,
        org: OrgId,
        kind: OperationKind,
        actor: &Actor,
        caller_key: Option<&IdempotencyKey>,
        request: Value,
    ) -> Result<Begun> {
        let settings = &self.inner.settings;
        let deadline = tokio::time::Instant::now() + settings.operation_wait;
        let actor_name = actor.audit_name();
        let id = Uuid::now_v7();
        let mut pause = Duration::from_millis(20);
        loop {
            let now = self.now();
            let new = NewOperation {
                id,
                org_id: org,
                kind,
                actor: &actor_name,
                caller_key: caller_key.map(IdempotencyKey::as_str),
                request: &request,
                now,
            };
            let recorded = {
                let mut conn = self.store().pool().acquire().await?;
                stored::record_running(&mut conn, &new, self.lease_until()).await?
            };
            match recorded {
                Recorded::Claimed(token) => {
                    return Ok(Begun::Claimed(Claim {
                        id,
                        token,
                        org,
                        kind,
                        actor: actor_name,
                        request,
                        plan: None,
                        attempts: 0,
                    }));
                }
                Recorded::Replay(first) if first.request != request => {
                    return Err(Error::exists(
                        ErrorReason::IdempotencyKeyReused,
                        format!(
                            "idempotency key {:?} was used for a different request",
                            caller_key.map(IdempotencyKey::as_str).unwrap_or_default()
                        ),
                    ));
                }
                Recorded::Replay(first) => {
                    return Ok(Begun::Replayed(self.wait_for_operation(first.id).await?));
                }
                Recorded::Busy if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Aborted(
                        "another billing change of this organization is in progress; retry in a moment"
                            .into(),
                    ));
                }
                Recorded::Busy => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// Waits (briefly) for an operation another performer runs to finish.
    pub(super) async fn wait_for_operation(&self, id: Uuid) -> Result<StoredOperation> {
        let deadline = tokio::time::Instant::now() + self.inner.settings.operation_wait;
        loop {
            let op = {
                let mut conn = self.store().pool().acquire().await?;
                stored::get(&mut conn, id).await?
            }
            .ok_or_else(|| Error::internal(anyhow::anyhow!("operation {id} vanished")))?;
            if op.status.is_finished() {
                return Ok(op);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Aborted(
                    "the request is still being carried out; retry with the same idempotency key to get its answer"
                        .into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The answer another performer recorded for the operation, once it has.
    pub(super) async fn answer_of<T: DeserializeOwned>(&self, claim: &Claim) -> Result<T> {
        let op = self.wait_for_operation(claim.id).await?;
        finished_reply(&op)
    }

    pub(super) fn lease_until(&self) -> chrono::DateTime<chrono::Utc> {
        self.lease_ending(self.inner.settings.operation_lease)
    }

    /// Stores the plan, with `audit` (an entry recording what is now under
    /// way) in the same transaction; false when the claim was taken over
    /// meanwhile.
    pub(super) async fn store_plan<C: Serialize>(
        &self,
        claim: &mut Claim,
        plan: &StoredPlan<C>,
        audit: Option<(AuditAction, Value)>,
    ) -> Result<bool> {
        let value = serde_json::to_value(plan).map_err(Error::internal)?;
        let mut tx = self.store().begin().await?;
        if !stored::store_plan(&mut tx, claim.id, claim.token, &value).await? {
            return Ok(false);
        }
        if let Some((action, after)) = audit {
            record_as(
                &mut tx,
                claim.org,
                &claim.actor,
                action,
                None,
                Some(after),
                self.now(),
            )
            .await?;
        }
        self.commit(tx).await?;
        claim.plan = Some(value);
        Ok(true)
    }

    /// Forgets an operation before anything was sent (its plan refused the
    /// change, or reading what to plan from failed) and returns `error`: a
    /// refused request writes nothing.
    pub(super) async fn forget(&self, claim: &Claim, error: Error) -> Error {
        let discarded = async {
            let mut conn = self.store().pool().acquire().await?;
            stored::discard(&mut conn, claim.id, claim.token).await
        };
        match discarded.await {
            Ok(()) => error,
            Err(failure) => failure,
        }
    }

    /// Marks the operation finished inside the use case's closing
    /// transaction; false when another performer took it over (then that
    /// one writes the outcome, and this transaction must write nothing).
    pub(super) async fn finish_operation(
        &self,
        conn: &mut PgConnection,
        claim: &Claim,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<bool> {
        let (status, result, error) = match outcome {
            Ok(result) => (OperationStatus::Succeeded, Some(result), None),
            Err(error) => (OperationStatus::Failed, None, Some(error)),
        };
        stored::finish(
            conn,
            claim.id,
            claim.token,
            status,
            result,
            error,
            self.now(),
        )
        .await
    }
}

/// What a finished operation answers: its stored result, or its failure.
pub(super) fn finished_reply<T: DeserializeOwned>(op: &StoredOperation) -> Result<T> {
    match (op.status, &op.result) {
        (OperationStatus::Succeeded, Some(result)) => serde_json::from_value(result.clone())
            .map_err(|e| Error::internal(anyhow::anyhow!("operation {}: bad result: {e}", op.id))),
        (OperationStatus::Failed, _) => Err(Error::precondition(
            ErrorReason::OperationFailed,
            op.error
                .clone()
                .unwrap_or_else(|| "the change failed".into()),
        )),
        (OperationStatus::Succeeded | OperationStatus::Queued | OperationStatus::Running, _) => {
            Err(Error::internal(anyhow::anyhow!(
                "operation {} has no answer",
                op.id
            )))
        }
    }
}
