//! Which state version a call's transaction committed, for its response.
//!
//! A mutating use case may commit in several places (and some commit
//! nothing), so rather than threading the version through every return
//! type, the commit notes it in a slot scoped to the call. The gRPC layer
//! opens the slot around each call and puts the version in the response
//! metadata (`x-billing-state-version`); outside a call there is no slot and
//! nothing is noted.

use std::cell::Cell;
use std::future::Future;

use crate::domain::entitlement::StateVersion;

tokio::task_local! {
    static COMMITTED: Cell<Option<StateVersion>>;
}

/// Runs `call` with a slot for the version it commits, and returns the
/// newest version noted.
pub async fn capture_committed_version<F: Future>(call: F) -> (F::Output, Option<StateVersion>) {
    COMMITTED
        .scope(Cell::new(None), async move {
            let output = call.await;
            (output, COMMITTED.with(Cell::get))
        })
        .await
}

pub(super) fn note_committed(version: StateVersion) {
    // Outside a call (the inbox worker, the maintenance loop) there is no slot.
    let _ = COMMITTED.try_with(|slot| slot.set(slot.get().max(Some(version))));
}
