//! Group commit for usage: reports and reservations wait in a lane, and
//! whatever arrives while the lane's previous batch commits is posted
//! together in the next one (each still its own ledger entry with its own
//! key). A busy organization is then bounded by commits per second times
//! the batch size, not by one commit per report.
//!
//! An organization always uses the same lane, so its reports are posted in
//! arrival order; lanes commit in parallel, each holding one pooled
//! connection while it commits. A report is answered only after its batch
//! committed, so a crash loses nothing that was acknowledged; a caller that
//! gave up meanwhile retries with the same key and gets the first result.

use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::Service;
use super::usage_batch::{UsageItem, post};
use super::versions;
use crate::domain::entitlement::StateVersion;
use crate::domain::usage::UsageOutcome;
use crate::error::{Error, Result};
use crate::instruments::{CREDIT_HOLDS, USAGE_BATCH_SIZE, USAGE_DEBITS};

/// The lanes a replica commits in unless told otherwise: one per CPU core,
/// at most 8. Measured on 2 cores with 32 reports in flight over 200
/// organizations: 2 lanes posted 4,511 reports/s, 4 lanes 3,290 (smaller
/// commits, and the cores spent on more of them).
pub fn default_usage_lanes() -> u32 {
    std::thread::available_parallelism()
        .map_or(2, |cores| u32::try_from(cores.get()).unwrap_or(8))
        .clamp(1, 8)
}

/// Reports one commit takes at most; more wait for the next.
const MAX_ITEMS_PER_COMMIT: usize = 1_000;

#[derive(Debug)]
pub(super) struct UsageLanes {
    lanes: Box<[Mutex<Lane>]>,
}

#[derive(Debug, Default)]
struct Lane {
    waiting: Vec<Waiting>,
    /// Whether a task is committing this lane's batches now.
    committing: bool,
}

#[derive(Debug)]
struct Waiting {
    item: UsageItem,
    /// The outcome, with the version its commit took, if any.
    reply: oneshot::Sender<Result<(UsageOutcome, Option<StateVersion>)>>,
}

impl UsageLanes {
    pub(super) fn new(lanes: usize) -> Self {
        Self {
            lanes: (0..lanes.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    fn lane_of(&self, item: &UsageItem) -> usize {
        let lanes = u128::try_from(self.lanes.len()).unwrap_or(1);
        usize::try_from(item.org.as_uuid().as_u128() % lanes).unwrap_or(0)
    }

    fn lane(&self, index: usize) -> std::sync::MutexGuard<'_, Lane> {
        self.lanes[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service {
    /// Posts the items through their lanes and answers each once its batch
    /// has committed.
    pub(super) async fn post_usage(&self, items: Vec<UsageItem>) -> Vec<Result<UsageOutcome>> {
        let lanes = &self.inner.usage;
        let mut replies = Vec::with_capacity(items.len());
        let mut start = Vec::new();
        for item in items {
            let (reply, answer) = oneshot::channel();
            let index = lanes.lane_of(&item);
            let mut lane = lanes.lane(index);
            lane.waiting.push(Waiting { item, reply });
            if !lane.committing {
                lane.committing = true;
                start.push(index);
            }
            replies.push(answer);
        }
        for index in start {
            tokio::spawn(self.clone().commit_lane(index));
        }
        let mut outcomes = Vec::with_capacity(replies.len());
        for answer in replies {
            let answer = answer.await.unwrap_or_else(|_| {
                Err(Error::internal(anyhow::anyhow!(
                    "the usage lane stopped before answering"
                )))
            });
            outcomes.push(answer.map(|(outcome, version)| {
                // The call's response names the version its batch committed.
                if let Some(version) = version {
                    versions::note_committed(version);
                }
                outcome
            }));
        }
        outcomes
    }

    /// Commits the lane's waiting items, batch after batch, until none wait
    /// (each batch one group commit).
    async fn commit_lane(self, index: usize) {
        loop {
            let (items, replies): (Vec<UsageItem>, Vec<_>) = {
                let mut lane = self.inner.usage.lane(index);
                if lane.waiting.is_empty() {
                    lane.committing = false;
                    return;
                }
                let take = lane.waiting.len().min(MAX_ITEMS_PER_COMMIT);
                lane.waiting
                    .drain(..take)
                    .map(|waiting| (waiting.item, waiting.reply))
                    .unzip()
            };
            // On a task of its own, so that even a panic answers the batch
            // and leaves the lane committing.
            let store = self.store().clone();
            let now = self.now();
            let threshold = self.low_balance_threshold(None);
            let posted = tokio::spawn(async move { post(&store, items, threshold, now).await })
                .await
                .unwrap_or_else(|panic| Err(Error::internal(panic)));
            match posted {
                Ok((outcomes, version)) => {
                    record_batch(&outcomes);
                    if let Some(version) = version {
                        // Read-your-writes on this replica, as for any commit.
                        self.cache()
                            .wait_for(version, self.inner.settings.min_version_wait)
                            .await;
                    }
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok((outcome, version)));
                    }
                }
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        reports = replies.len(),
                        "a usage batch failed to commit"
                    );
                    for reply in replies {
                        let _ = reply.send(Err(Error::Unavailable(
                            "usage could not be posted now; retry with the same idempotency key"
                                .into(),
                        )));
                    }
                }
            }
        }
    }
}

/// Counts what one group commit posted (replays were counted the first time).
fn record_batch(outcomes: &[UsageOutcome]) {
    metrics::histogram!(USAGE_BATCH_SIZE).record(outcomes.len() as f64);
    for outcome in outcomes {
        match outcome {
            UsageOutcome::Debited {
                entry,
                replayed: false,
            } => {
                metrics::counter!(USAGE_DEBITS).increment(1);
                if entry.details.hold.is_some() {
                    metrics::counter!(CREDIT_HOLDS, "event" => "settled").increment(1);
                }
            }
            UsageOutcome::Reserved {
                replayed: false, ..
            } => metrics::counter!(CREDIT_HOLDS, "event" => "reserved").increment(1),
            UsageOutcome::Released {
                replayed: false, ..
            } => metrics::counter!(CREDIT_HOLDS, "event" => "released").increment(1),
            UsageOutcome::Debited { replayed: true, .. }
            | UsageOutcome::Reserved { replayed: true, .. }
            | UsageOutcome::Released { replayed: true, .. }
            | UsageOutcome::Refused(_) => {}
        }
    }
}
