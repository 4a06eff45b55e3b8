//! A stateful Stripe-compatible test server, reached by the service through
//! the real async-stripe client (`STRIPE_API_BASE`).
//!
//! It keeps customers, prices, Checkout sessions (subscription and payment
//! mode), payment intents, refunds, subscriptions and their items (also
//! added, resized and removed one by one), subscription schedules with
//! phases, billing portal sessions and invoices, and renders them from
//! Stripe's own example objects (`tests/fixtures/stripe/objects.json`) with
//! our fields put in, so every response has the shape the typed client
//! expects. It is as strict as Stripe for the calls the service makes:
//! - an idempotency key replays the first response, and the same key with
//!   other parameters is refused (`idempotency_error`);
//! - a quantity increase with `always_invoice` invoices the proration at
//!   once; with `pending_if_incomplete` it stays pending (and its invoice
//!   open) while the card needs authentication or is declined, and voiding
//!   the invoice discards it; pending updates take no metadata;
//! - every item of a subscription, checkout or schedule phase bills on one
//!   interval;
//! - a schedule created `from_subscription` refuses metadata; updating its
//!   current phase applies the phase's items to the subscription; a
//!   subscription driven by a schedule refuses cancellation changes;
//! - a Checkout session can be paid only while open; an expired or paid
//!   one cannot be expired again;
//! - a refund cannot exceed what the payment has left.
//!
//! Every change queues the events Stripe would send. Tests take them and
//! deliver them signed to the service's webhook listener, in any order and
//! as often as they like.

mod controls;
mod render;
mod routes;
mod subscriptions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::stripe_fixtures::fixtures;

/// The prices the server knows, as (id, unit amount, interval).
pub const PRICES: [(&str, i64, &str); 9] = [
    ("price_teams_monthly", 1800, "month"),
    ("price_teams_yearly", 18000, "year"),
    ("price_enterprise_monthly", 7200, "month"),
    ("price_enterprise_yearly", 72000, "year"),
    ("price_teams_free_seat", 0, "month"),
    ("price_addon_agent", 500, "month"),
    ("price_addon_yearly", 9900, "year"),
    ("price_hosted_instances_monthly", 1000, "month"),
    ("price_hosted_instances_yearly", 10000, "year"),
];

const DAY: i64 = 86_400;

#[derive(Debug, Clone)]
struct Item {
    id: String,
    price: String,
    quantity: u64,
}

#[derive(Debug, Clone)]
struct Subscription {
    id: String,
    customer: String,
    status: String,
    items: Vec<Item>,
    period_start: i64,
    period_end: i64,
    cancel_at_period_end: bool,
    canceled_at: Option<i64>,
    ended_at: Option<i64>,
    created: i64,
    metadata: Map<String, Value>,
    schedule: Option<String>,
    latest_invoice: Option<String>,
    /// Items waiting for the customer to pay an open invoice.
    pending_items: Option<Vec<Item>>,
}

#[derive(Debug, Clone)]
struct Phase {
    start: i64,
    end: i64,
    items: Vec<(String, u64)>,
    discounts: Vec<String>,
    billing_cycle_anchor: Option<String>,
    proration_behavior: String,
}

#[derive(Debug, Clone)]
struct Schedule {
    id: String,
    customer: String,
    subscription: Option<String>,
    released_subscription: Option<String>,
    status: String,
    phases: Vec<Phase>,
    metadata: Map<String, Value>,
    end_behavior: String,
    created: i64,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    customer: String,
    /// "subscription" or "payment".
    mode: String,
    /// For payment mode: the one amount, and the payment's metadata.
    amount_total: Option<i64>,
    payment_metadata: Map<String, Value>,
    payment_intent: Option<String>,
    line_items: Vec<(String, u64)>,
    metadata: Map<String, Value>,
    subscription_metadata: Map<String, Value>,
    subscription: Option<String>,
    status: String,
    allow_promotion_codes: bool,
}

#[derive(Debug, Clone)]
struct Invoice {
    id: String,
    customer: String,
    subscription: String,
    amount_due: i64,
    /// "paid", "open" or "void".
    status: String,
    payment_intent: Option<String>,
}

#[derive(Debug, Clone)]
struct PaymentIntent {
    id: String,
    customer: String,
    amount: i64,
    /// "succeeded", "requires_action" or "requires_payment_method".
    status: String,
    metadata: Map<String, Value>,
    refunded: i64,
}

/// A write the server applies and then never answers, as if the caller had
/// died waiting; `applied` fires once it is applied.
#[derive(Debug)]
struct HeldWrite {
    prefix: String,
    applied: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Stripe {
    fixtures: Map<String, Value>,
    next_id: u64,
    customers: BTreeMap<String, Value>,
    sessions: BTreeMap<String, Session>,
    subscriptions: BTreeMap<String, Subscription>,
    schedules: BTreeMap<String, Schedule>,
    invoices: BTreeMap<String, Invoice>,
    payment_intents: BTreeMap<String, PaymentIntent>,
    /// Refunds as (refund id, payment intent, amount).
    refunds: Vec<(String, String, i64)>,
    /// First requests and responses by idempotency key.
    idempotent: HashMap<String, (Value, StatusCode, Value)>,
    /// Events not yet taken by the test.
    outbox: Vec<Value>,
    /// Every event ever emitted, oldest first, for `GET /v1/events`
    /// (delivered or not: Stripe lists what happened, not what arrived).
    events: Vec<Value>,
    /// Whether new events skip the outbox: our endpoint is away, or
    /// Stripe gave up delivering them. They are still listed.
    dropping_deliveries: bool,
    events_unlisted: bool,
    /// Every request's method and path, for counting reads.
    requests: Vec<String>,
    /// Every write as (method and path, params), for assertions.
    writes: Vec<(String, Value)>,
    /// Whether the customer's card needs 3-D Secure for off-session charges.
    card_needs_authentication: bool,
    /// Whether the customer's card is declined for off-session charges.
    card_declines: bool,
    /// Subscriptions whose retrieval fails (to exercise retries).
    unreadable: Vec<String>,
    /// Whether updates of schedules fail (to exercise orphan clean-up).
    refuse_schedule_updates: bool,
    /// Requests still to be answered 429 (to exercise rate limiting).
    rate_limited: u32,
    /// When set, only requests starting with it are rate-limited.
    rate_limited_prefix: Option<String>,
    /// Requests answered 429 so far.
    rate_limited_answers: u32,
    /// Every write as it arrived, answered or refused, with its
    /// idempotency key: what a retry sent again.
    write_attempts: Vec<(String, Option<String>)>,
    /// How long each answer takes (to exercise a slow Stripe).
    delay: std::time::Duration,
    held: Option<HeldWrite>,
    /// The next request with this method-and-path prefix is answered late:
    /// its answer is worked out at once, and sent after the delay (a slow
    /// read that returns the state as it was when it arrived).
    slow_next: Option<(String, std::time::Duration)>,
}

/// The server and the handle tests drive it with.
#[derive(Debug, Clone)]
pub struct FakeStripe {
    state: Arc<Mutex<Stripe>>,
    pub base_url: String,
}

type Answer = Result<Value, (StatusCode, Value)>;

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> (StatusCode, Value) {
    (
        status,
        json!({ "error": { "type": kind, "message": message.into() } }),
    )
}

fn invalid(message: impl Into<String>) -> (StatusCode, Value) {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn missing(what: &str, id: &str) -> (StatusCode, Value) {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("No such {what}: '{id}'"),
    )
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// Parses Stripe's bracketed form encoding (`items[0][price]=x`) into JSON:
/// objects, arrays for numeric keys, strings for values.
pub fn parse_form(raw: &[u8]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(raw) {
        let mut path: Vec<String> = Vec::new();
        let (head, rest) = key.split_once('[').unwrap_or((&key, ""));
        path.push(head.to_owned());
        for segment in rest.split('[') {
            let segment = segment.trim_end_matches(']');
            if !segment.is_empty() {
                path.push(segment.to_owned());
            }
        }
        let mut node = &mut root;
        for (i, segment) in path.iter().enumerate() {
            let map = node.as_object_mut().expect("object node");
            if i + 1 == path.len() {
                map.insert(segment.clone(), Value::String(value.to_string()));
                break;
            }
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    arrays(root)
}

fn arrays(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let numeric = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if numeric {
                let mut entries: Vec<(usize, Value)> = map
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap_or(0), arrays(v)))
                    .collect();
                entries.sort_by_key(|(k, _)| *k);
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

fn text<'a>(params: &'a Value, key: &str) -> Option<&'a str> {
    params.get(key).and_then(Value::as_str)
}

fn list<'a>(params: &'a Value, key: &str) -> &'a [Value] {
    params
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn number(params: &Value, key: &str) -> Option<u64> {
    text(params, key).and_then(|v| v.parse().ok())
}

fn expands(params: &Value) -> Vec<String> {
    list(params, "expand")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

async fn serve(
    State(state): State<Arc<Mutex<Stripe>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(path) = uri.path().strip_prefix("/v1/") else {
        return (StatusCode::NOT_FOUND, "not /v1").into_response();
    };
    if headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.starts_with("Bearer sk_test_"))
    {
        let (status, body) = error(StatusCode::UNAUTHORIZED, "invalid_request_error", "bad key");
        return json_response(status, &body);
    }
    let params = if method == Method::GET || method == Method::DELETE && body.is_empty() {
        parse_form(uri.query().unwrap_or("").as_bytes())
    } else {
        parse_form(&body)
    };
    let delay = state.lock().expect("lock").delay;
    tokio::time::sleep(delay).await;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let write = format!("{method} /v1/{path}");
    let writes = method == Method::POST || method == Method::DELETE;
    {
        let mut stripe = state.lock().expect("lock");
        if writes {
            stripe.write_attempts.push((write.clone(), key.clone()));
        }
        let limited = stripe
            .rate_limited_prefix
            .as_ref()
            .is_none_or(|prefix| write.starts_with(prefix.as_str()));
        if stripe.rate_limited > 0 && limited {
            stripe.rate_limited -= 1;
            stripe.rate_limited_answers += 1;
            let (status, body) = error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                "Too many requests hit the API too quickly.",
            );
            return json_response(status, &body);
        }
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (status, body, held, late) = {
        let mut stripe = state.lock().expect("lock");
        stripe.requests.push(write.clone());
        if writes
            && let Some((first, status, body)) = key.as_ref().and_then(|k| stripe.idempotent.get(k))
        {
            if *first != params {
                let (status, body) = error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                );
                return json_response(status, &body);
            }
            return json_response(*status, body);
        }
        if writes {
            stripe.writes.push((write.clone(), params.clone()));
        }
        let (status, body) = match stripe.handle(&method, &segments, &params) {
            Ok(body) => (StatusCode::OK, body),
            Err(failure) => failure,
        };
        if writes && let Some(key) = key {
            stripe
                .idempotent
                .insert(key, (params, status, body.clone()));
        }
        let late = match &stripe.slow_next {
            Some((prefix, _)) if write.starts_with(prefix.as_str()) => {
                stripe.slow_next.take().map(|(_, delay)| delay)
            }
            Some(_) | None => None,
        };
        let held = match &stripe.held {
            Some(hold) if writes && write.starts_with(&hold.prefix) => {
                let applied = hold.applied.clone();
                stripe.held = None;
                Some(applied)
            }
            Some(_) | None => None,
        };
        (status, body, held, late)
    };
    if let Some(late) = late {
        tokio::time::sleep(late).await;
    }
    if let Some(applied) = held {
        applied.notify_one();
        // Applied, never answered: the caller is expected to die waiting.
        std::future::pending::<()>().await;
    }
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl FakeStripe {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(Stripe {
            fixtures: fixtures(),
            ..Stripe::default()
        }));
        let router = Router::new().fallback(serve).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            state,
            base_url: format!("http://{addr}/"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Stripe> {
        self.state.lock().expect("lock")
    }
}

#[test]
fn bracketed_forms_parse_into_nested_json() {
    let parsed = parse_form(
        b"items[0][id]=si_1&items[0][quantity]=5&items[1][id]=si_2&metadata[org_id]=o&expand[0]=schedule",
    );
    assert_eq!(
        parsed,
        json!({
            "items": [{"id": "si_1", "quantity": "5"}, {"id": "si_2"}],
            "metadata": {"org_id": "o"},
            "expand": ["schedule"],
        })
    );
}
