//! A webhook receiver for the tests: it records every delivery it gets,
//! checks its signature with the Standard Webhooks reference library
//! against the secrets it was told to trust, and answers as scripted
//! (fail the first N, hold requests until released).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::Notify;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: serde_json::Value,
    /// The secrets (by index in the trusted list) whose signature verified.
    pub verified_by: Vec<usize>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    pub fn org_id(&self) -> &str {
        self.body["orgId"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Script {
    /// Secrets to check signatures against.
    trusted: Vec<String>,
    /// Answer 500 to this many more deliveries.
    failures_left: u32,
    /// Answer every delivery with this status until changed.
    always: Option<u16>,
    /// Hold each delivery until `release` is notified.
    hold: bool,
    /// The webhook-ids of deliveries held so far.
    held: Vec<String>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct EventReceiver {
    state: Arc<Mutex<Script>>,
    release: Arc<Notify>,
    arrived: Arc<Notify>,
    pub url: String,
}

impl EventReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(Script::default()));
        let release = Arc::new(Notify::new());
        let arrived = Arc::new(Notify::new());
        let receiver = Self {
            state,
            release,
            arrived,
            url: String::new(),
        };
        let router = Router::new().fallback(receive).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url: format!("http://{addr}/hooks/billing"),
            ..receiver
        }
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        self.state.lock().expect("lock")
    }

    /// Signatures are checked against these secrets.
    pub fn trust(&self, secrets: &[&str]) {
        self.lock().trusted = secrets.iter().map(|s| (*s).to_owned()).collect();
    }

    pub fn fail_next(&self, deliveries: u32) {
        self.lock().failures_left = deliveries;
    }

    /// Answers every delivery with `status` (`None`: 200 again).
    pub fn always_answer(&self, status: Option<u16>) {
        self.lock().always = status;
    }

    /// Holds deliveries (not answering) until `release_all`.
    pub fn hold(&self, hold: bool) {
        self.lock().hold = hold;
    }

    pub fn release_all(&self) {
        self.lock().hold = false;
        self.release.notify_waiters();
    }

    /// The webhook-ids of the deliveries held so far.
    pub fn held(&self) -> Vec<String> {
        self.lock().held.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The deliveries answered 2xx, in order of arrival.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until a delivery is being held.
    pub async fn wait_for_held(&self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            if let Some(id) = self.held().last() {
                return id.clone();
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "no delivery arrived to hold"
            );
        }
    }

    /// Waits until `condition` holds for what was received (10 s at most).
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            if condition(&self.received()) {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the receiver did not get {what}; it got: {:#?}",
                    self.received()
                        .iter()
                        .map(|r| (r.event_type().to_owned(), r.status))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits for `n` accepted deliveries.
    pub async fn wait_for_accepted(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} accepted deliveries"), |all| {
            all.iter()
                .filter(|r| (200..300).contains(&r.status))
                .count()
                >= n
        })
        .await;
        self.accepted()
    }
}

async fn receive(
    State(receiver): State<EventReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let released = receiver.release.notified();
    let held = {
        let mut script = receiver.lock();
        if script.hold {
            script.held.push(header("webhook-id"));
        }
        script.hold
    };
    if held {
        // Noted as it arrives, answered when released.
        receiver.arrived.notify_waiters();
        released.await;
    }
    let mut script = receiver.lock();
    let verified_by = script
        .trusted
        .iter()
        .enumerate()
        .filter(|(_, secret)| {
            standardwebhooks::Webhook::new(secret)
                .and_then(|hook| hook.verify(&body, &headers))
                .is_ok()
        })
        .map(|(i, _)| i)
        .collect();
    let status = if let Some(status) = script.always {
        status
    } else if script.failures_left > 0 {
        script.failures_left -= 1;
        500
    } else {
        200
    };
    script.received.push(Received {
        webhook_id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        verified_by,
        status,
    });
    drop(script);
    receiver.arrived.notify_waiters();
    StatusCode::from_u16(status).expect("status")
}
