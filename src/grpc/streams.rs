//! What the server-streaming calls share.

use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::error::Error;

/// Ends `updates` with UNAVAILABLE once the server starts shutting down, so
/// the caller reconnects (to another replica) at once and the drain is not
/// held open by a stream that would never finish.
pub(super) fn until_shutdown<S, T>(
    updates: S,
    stopping: watch::Receiver<bool>,
) -> impl Stream<Item = Result<T, Status>>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    futures_util::stream::unfold(Some((updates, stopping)), |open| async move {
        let (mut updates, mut stopping) = open?;
        // `None` once stopping (or the server is gone).
        let next = tokio::select! {
            biased;
            _ = stopping.wait_for(|stopping| *stopping) => None,
            next = updates.next() => Some(next),
        };
        match next {
            None => Some((
                Err(Status::from(Error::Unavailable(
                    "server shutting down, reconnect".into(),
                ))),
                None,
            )),
            Some(next) => next.map(|update| (update, Some((updates, stopping)))),
        }
    })
}
