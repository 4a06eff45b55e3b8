//! Group commit for the webhook ingress. Stripe delivers many events at
//! once (a renewal day, a flush of held deliveries), and one transaction
//! per delivery makes the commit the bottleneck. Deliveries that arrive
//! while the previous batch commits wait and are stored together: one
//! statement and one commit. Each is acknowledged only after the commit
//! that stored it, so a kill -9 loses nothing Stripe was told was stored.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::stripe_events::{self, EventSource, ReceivedEvent};

/// Most deliveries stored in one statement.
const MAX_BATCH: usize = 256;

/// A verified event, owned, on its way to the inbox.
#[derive(Debug)]
pub(super) struct Delivery {
    pub id: String,
    pub event_type: String,
    pub raw_body: String,
    pub stripe_created_at: DateTime<Utc>,
    pub subscription_id: Option<String>,
}

struct Waiting {
    delivery: Delivery,
    /// True when this delivery stored the event, false when it was stored
    /// already.
    stored: oneshot::Sender<Result<bool>>,
}

/// Where the ingress hands verified events; one task commits them.
#[derive(Debug, Clone)]
pub(super) struct Intake {
    queue: mpsc::Sender<Waiting>,
}

impl Intake {
    /// Starts the committing task; it ends when every `Intake` is dropped.
    /// `stored` is notified after each commit that stored something new.
    pub fn start(store: Store, stored: Arc<Notify>) -> Self {
        let (queue, waiting) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(commit_batches(store, waiting, stored));
        Self { queue }
    }

    /// Stores the event with whatever else is waiting; true when this
    /// delivery stored it.
    pub async fn store(&self, delivery: Delivery) -> Result<bool> {
        let (stored, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the webhook intake has stopped".into());
        self.queue
            .send(Waiting { delivery, stored })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn commit_batches(store: Store, mut waiting: mpsc::Receiver<Waiting>, stored: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let deliveries: Vec<ReceivedEvent<'_>> =
            batch.iter().map(|w| received(&w.delivery)).collect();
        let outcome = insert(&store, &deliveries).await;
        drop(deliveries);
        match outcome {
            Ok(new) => {
                if !new.is_empty() {
                    stored.notify_one();
                }
                let mut new: HashSet<String> = new.into_iter().collect();
                for one in batch.drain(..) {
                    // An id delivered twice in one batch is stored once.
                    let _ = one.stored.send(Ok(new.remove(&one.delivery.id)));
                }
            }
            Err(error) => {
                for one in batch.drain(..) {
                    let _ = one.stored.send(Err(Error::Unavailable(error.to_string())));
                }
            }
        }
    }
}

async fn insert(store: &Store, deliveries: &[ReceivedEvent<'_>]) -> Result<Vec<String>> {
    let mut conn = store.pool().acquire().await?;
    stripe_events::insert_new(&mut conn, deliveries, EventSource::Webhook).await
}

fn received(delivery: &Delivery) -> ReceivedEvent<'_> {
    ReceivedEvent {
        id: &delivery.id,
        event_type: &delivery.event_type,
        raw_body: &delivery.raw_body,
        stripe_created_at: delivery.stripe_created_at,
        subscription_id: delivery.subscription_id.as_deref(),
    }
}
