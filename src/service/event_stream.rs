//! `WatchBillingEvents`: stored lifecycle events after a given one, then
//! each new one as it commits, in commit order.
//!
//! Events are read by position (the state version their transaction
//! committed at, then their place in it). Versions follow commit order, so
//! a reader that has seen a position has seen everything before it: the
//! stream moves its cursor past each event it reads and never skips or
//! repeats one, and a caller resumes from the last id it processed. It
//! reads again whenever this replica learns of a commit (every event
//! announces its version) and at least every poll interval.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Actor, Service};
use crate::domain::ids::OrgId;
use crate::domain::reason::ErrorReason;
use crate::error::{Error, Result};
use crate::event_codec::PublishedEvent;
use crate::store::billing_events::{self, Position};

/// Events read per query.
const BATCH: i64 = 500;
/// Events buffered for one watcher.
const BUFFER: usize = 1024;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Right after this event.
    After(Uuid),
    /// With the oldest event retained.
    Oldest,
    /// With the next event committed.
    Latest,
}

/// Which events a watcher wants; all when a set is empty.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub types: HashSet<String>,
    pub orgs: HashSet<OrgId>,
}

impl EventFilter {
    fn wants(&self, event: &PublishedEvent) -> bool {
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && (self.orgs.is_empty() || event.org_id.is_some_and(|o| self.orgs.contains(&o)))
    }
}

impl Service {
    /// Starts a watch; events (or the error that ended it) arrive on the
    /// returned channel until the receiver is dropped.
    pub async fn watch_billing_events(
        &self,
        actor: &Actor,
        start: WatchStart,
        filter: EventFilter,
        poll_interval: Duration,
    ) -> Result<mpsc::Receiver<Result<PublishedEvent>>> {
        Self::require_operator(actor, "watch billing events")?;
        let cursor = {
            let mut conn = self.store().pool().acquire().await?;
            match start {
                WatchStart::Oldest => Position::START,
                WatchStart::Latest => billing_events::newest_position(&mut conn).await?,
                WatchStart::After(id) => billing_events::position_of(&mut conn, id)
                    .await?
                    .ok_or_else(|| {
                        Error::precondition(
                            ErrorReason::EventNotRetained,
                            format!("event {id} is unknown or past the retention; start over from the oldest"),
                        )
                    })?,
            }
        };
        let (events, receiver) = mpsc::channel(BUFFER);
        let service = self.clone();
        tokio::spawn(async move {
            let ended = service
                .follow_events(cursor, &filter, poll_interval, &events)
                .await;
            if let Err(error) = ended {
                let _ = events.send(Err(error)).await;
            }
        });
        Ok(receiver)
    }

    /// Sends every event after `cursor` that the filter wants, then waits
    /// for more, until the receiver goes (`Ok`) or a read fails.
    async fn follow_events(
        &self,
        mut cursor: Position,
        filter: &EventFilter,
        poll_interval: Duration,
        events: &mpsc::Sender<Result<PublishedEvent>>,
    ) -> Result<()> {
        let mut commits = self.cache().watermark_changes();
        loop {
            // Marked seen before reading, so a commit during the read wakes
            // the next wait.
            commits.borrow_and_update();
            let batch = {
                let mut conn = self.store().pool().acquire().await?;
                billing_events::after(&mut conn, cursor, BATCH).await?
            };
            let full = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= BATCH;
            for (position, event) in batch {
                cursor = position;
                if filter.wants(&event) && events.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                () = events.closed() => return Ok(()),
                _ = commits.changed() => {}
                () = tokio::time::sleep(poll_interval) => {}
            }
        }
    }
}
