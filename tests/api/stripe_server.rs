//! A stateful Stripe-compatible test server, reached by the service through
//! the real async-stripe client (`STRIPE_API_BASE`).
//!
//! It keeps customers, prices, Checkout sessions (subscription and payment
//! mode), payment intents, subscriptions and their items (also added,
//! resized and removed one by one), subscription schedules with phases,
//! billing portal sessions and invoices, and renders them from Stripe's own example objects
//! (`tests/fixtures/stripe/objects.json`) with our fields put in, so every
//! response has the shape the typed client expects. What it does follows
//! Stripe's documented behaviour for the calls the service makes:
//! idempotency keys replay the first response; quantity increases with
//! `always_invoice` invoice the proration at once, and with
//! `pending_if_incomplete` stay pending while the card needs
//! authentication; a schedule created `from_subscription` refuses metadata;
//! a subscription driven by a schedule refuses cancellation changes.
//!
//! Every change queues the events Stripe would send. Tests take them and
//! deliver them signed to the service's webhook listener, in any order and
//! as often as they like.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::stripe_fixtures::fixtures;

/// The prices the server knows, as (id, unit amount, interval).
pub const PRICES: [(&str, i64, &str); 8] = [
    ("price_teams_monthly", 1800, "month"),
    ("price_teams_yearly", 18000, "year"),
    ("price_enterprise_monthly", 7200, "month"),
    ("price_enterprise_yearly", 72000, "year"),
    ("price_teams_free_seat", 0, "month"),
    ("price_addon_agent", 500, "month"),
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
    /// Items waiting for the customer to authenticate a payment.
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
    status: String,
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
    /// First responses by idempotency key.
    idempotent: HashMap<String, (StatusCode, Value)>,
    /// Events not yet taken by the test.
    outbox: Vec<Value>,
    /// Every write as (method and path, params), for assertions.
    writes: Vec<(String, Value)>,
    /// Whether the customer's card needs 3-D Secure for off-session charges.
    card_needs_authentication: bool,
    /// Subscriptions whose retrieval fails (to exercise retries).
    unreadable: Vec<String>,
    /// Whether updates of schedules fail (to exercise orphan clean-up).
    refuse_schedule_updates: bool,
    /// How long each answer takes (to exercise a slow Stripe).
    delay: std::time::Duration,
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

impl Stripe {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_test{:06}", self.next_id)
    }

    fn template(&self, name: &str) -> Map<String, Value> {
        self.fixtures[name]
            .as_object()
            .expect("fixture object")
            .clone()
    }

    fn price(&self, id: &str) -> Result<Value, (StatusCode, Value)> {
        let (_, amount, interval) = PRICES
            .iter()
            .find(|(price, _, _)| *price == id)
            .ok_or_else(|| missing("price", id))?;
        let mut price = self.template("price");
        price.insert("id".into(), json!(id));
        price.insert("unit_amount".into(), json!(amount));
        price.insert("unit_amount_decimal".into(), json!(amount.to_string()));
        price.insert("product".into(), json!("prod_seats"));
        price.insert(
            "recurring".into(),
            json!({ "interval": interval, "interval_count": 1, "meter": null,
                    "trial_period_days": null, "usage_type": "licensed" }),
        );
        Ok(Value::Object(price))
    }

    fn price_amount(&self, id: &str) -> i64 {
        PRICES
            .iter()
            .find(|(price, _, _)| *price == id)
            .map_or(0, |(_, amount, _)| *amount)
    }

    fn price_days(&self, id: &str) -> i64 {
        match PRICES.iter().find(|(price, _, _)| *price == id) {
            Some((_, _, "year")) => 365,
            _ => 30,
        }
    }

    /// The period length of a set of items: the paid item's interval.
    fn period_days(&self, items: &[(String, u64)]) -> i64 {
        items
            .iter()
            .find(|(price, _)| self.price_amount(price) > 0)
            .or(items.first())
            .map_or(30, |(price, _)| self.price_days(price))
    }

    fn render_subscription(&self, sub: &Subscription, expand: &[String]) -> Answer {
        let mut out = self.template("subscription");
        let items = sub
            .items
            .iter()
            .map(|item| self.render_item(sub, item))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(
            "items".into(),
            json!({ "object": "list", "data": items, "has_more": false,
                    "url": format!("/v1/subscription_items?subscription={}", sub.id) }),
        );
        for (key, value) in [
            ("id", json!(sub.id)),
            ("customer", json!(sub.customer)),
            ("status", json!(sub.status)),
            ("created", json!(sub.created)),
            ("start_date", json!(sub.created)),
            ("billing_cycle_anchor", json!(sub.period_start)),
            ("cancel_at_period_end", json!(sub.cancel_at_period_end)),
            (
                "cancel_at",
                json!(sub.cancel_at_period_end.then_some(sub.period_end)),
            ),
            ("canceled_at", json!(sub.canceled_at)),
            ("ended_at", json!(sub.ended_at)),
            ("metadata", Value::Object(sub.metadata.clone())),
            ("trial_start", Value::Null),
            ("trial_end", Value::Null),
            ("next_pending_invoice_item_invoice", Value::Null),
            ("pause_collection", Value::Null),
            ("discounts", json!([])),
        ] {
            out.insert(key.into(), value);
        }
        let pending_update = match &sub.pending_items {
            None => Value::Null,
            Some(_) => json!({
                "billing_cycle_anchor": null, "expires_at": now() + DAY,
                "subscription_items": null, "trial_end": null, "trial_from_plan": null,
            }),
        };
        out.insert("pending_update".into(), pending_update);
        let schedule = match &sub.schedule {
            None => Value::Null,
            Some(id) if expand.iter().any(|e| e == "schedule") => {
                let nested: Vec<String> = expand
                    .iter()
                    .filter_map(|e| e.strip_prefix("schedule.").map(str::to_owned))
                    .collect();
                self.render_schedule(&self.schedules[id], &nested)?
            }
            Some(id) => json!(id),
        };
        out.insert("schedule".into(), schedule);
        let invoice = match &sub.latest_invoice {
            None => Value::Null,
            Some(id) if expand.iter().any(|e| e == "latest_invoice") => {
                self.render_invoice(&self.invoices[id])
            }
            Some(id) => json!(id),
        };
        out.insert("latest_invoice".into(), invoice);
        Ok(Value::Object(out))
    }

    fn render_item(&self, sub: &Subscription, item: &Item) -> Answer {
        let mut rendered = self.fixtures["subscription"]["items"]["data"][0]
            .as_object()
            .expect("item")
            .clone();
        rendered.insert("id".into(), json!(item.id));
        rendered.insert("price".into(), self.price(&item.price)?);
        rendered.insert("quantity".into(), json!(item.quantity));
        rendered.insert("subscription".into(), json!(sub.id));
        rendered.insert("current_period_start".into(), json!(sub.period_start));
        rendered.insert("current_period_end".into(), json!(sub.period_end));
        rendered.insert("discounts".into(), json!([]));
        Ok(Value::Object(rendered))
    }

    fn render_schedule(&self, schedule: &Schedule, expand: &[String]) -> Answer {
        let mut out = self.template("subscription_schedule");
        let template_phase = out["phases"][0].clone();
        let template_item = template_phase["items"][0].clone();
        let expand_prices = expand.iter().any(|e| e == "phases.items.price");
        let mut phases = Vec::new();
        for phase in &schedule.phases {
            let mut rendered = template_phase.as_object().expect("phase").clone();
            let mut items = Vec::new();
            for (price, quantity) in &phase.items {
                let mut item = template_item.as_object().expect("item").clone();
                item.insert(
                    "price".into(),
                    if expand_prices {
                        self.price(price)?
                    } else {
                        json!(price)
                    },
                );
                item.insert("quantity".into(), json!(quantity));
                items.push(Value::Object(item));
            }
            let discounts: Vec<Value> = phase
                .discounts
                .iter()
                .map(|d| json!({"coupon": null, "discount": d, "discount_end": null, "promotion_code": null}))
                .collect();
            rendered.insert("items".into(), json!(items));
            rendered.insert("start_date".into(), json!(phase.start));
            rendered.insert("end_date".into(), json!(phase.end));
            rendered.insert("discounts".into(), json!(discounts));
            rendered.insert(
                "billing_cycle_anchor".into(),
                json!(phase.billing_cycle_anchor),
            );
            rendered.insert("proration_behavior".into(), json!(phase.proration_behavior));
            phases.push(Value::Object(rendered));
        }
        let t = now();
        let current = schedule
            .phases
            .iter()
            .find(|p| p.start <= t && t < p.end)
            .filter(|_| schedule.status == "active")
            .map(|p| json!({ "start_date": p.start, "end_date": p.end }));
        for (key, value) in [
            ("id", json!(schedule.id)),
            ("customer", json!(schedule.customer)),
            ("subscription", json!(schedule.subscription)),
            (
                "released_subscription",
                json!(schedule.released_subscription),
            ),
            ("status", json!(schedule.status)),
            ("phases", json!(phases)),
            ("metadata", Value::Object(schedule.metadata.clone())),
            ("end_behavior", json!(schedule.end_behavior)),
            ("created", json!(schedule.created)),
            ("current_phase", current.unwrap_or(Value::Null)),
            ("canceled_at", Value::Null),
            ("completed_at", Value::Null),
            (
                "released_at",
                json!((schedule.status == "released").then_some(t)),
            ),
        ] {
            out.insert(key.into(), value);
        }
        Ok(Value::Object(out))
    }

    fn render_invoice(&self, invoice: &Invoice) -> Value {
        let mut out = self.template("invoice");
        for (key, value) in [
            ("id", json!(invoice.id)),
            ("customer", json!(invoice.customer)),
            ("status", json!(invoice.status)),
            ("amount_due", json!(invoice.amount_due)),
            (
                "amount_paid",
                json!(if invoice.status == "paid" {
                    invoice.amount_due
                } else {
                    0
                }),
            ),
            (
                "hosted_invoice_url",
                json!(format!("https://invoice.stripe.test/{}", invoice.id)),
            ),
            (
                "parent",
                json!({ "quote_details": null, "type": "subscription_details",
                        "subscription_details": { "metadata": {}, "subscription": invoice.subscription } }),
            ),
        ] {
            out.insert(key.into(), value);
        }
        Value::Object(out)
    }

    fn render_session(&self, session: &Session) -> Value {
        let mut out = self.template("checkout.session");
        for (key, value) in [
            ("id", json!(session.id)),
            ("customer", json!(session.customer)),
            ("mode", json!(session.mode)),
            ("status", json!(session.status)),
            ("amount_total", json!(session.amount_total)),
            ("currency", json!(session.amount_total.map(|_| "usd"))),
            ("payment_intent", json!(session.payment_intent)),
            (
                "payment_status",
                json!(if session.payment_intent.is_some() {
                    "paid"
                } else {
                    "unpaid"
                }),
            ),
            ("metadata", Value::Object(session.metadata.clone())),
            ("subscription", json!(session.subscription)),
            (
                "url",
                json!(format!("https://checkout.stripe.test/c/{}", session.id)),
            ),
            (
                "allow_promotion_codes",
                json!(session.allow_promotion_codes),
            ),
        ] {
            out.insert(key.into(), value);
        }
        Value::Object(out)
    }

    fn emit(&mut self, event_type: &str, object: Value) {
        let mut event = self.template("event");
        let id = self.id("evt");
        event.insert("id".into(), json!(id));
        event.insert("type".into(), json!(event_type));
        event.insert("created".into(), json!(now()));
        event.insert("api_version".into(), json!("2026-09-30.endive"));
        event.insert("data".into(), json!({ "object": object }));
        self.outbox.push(Value::Object(event));
    }

    fn emit_subscription(&mut self, event_type: &str, id: &str) {
        let object = self
            .render_subscription(&self.subscriptions[id].clone(), &[])
            .expect("renders");
        self.emit(event_type, object);
    }

    fn emit_schedule(&mut self, event_type: &str, id: &str) {
        let object = self
            .render_schedule(&self.schedules[id].clone(), &[])
            .expect("renders");
        self.emit(event_type, object);
    }

    fn emit_invoice(&mut self, event_type: &str, id: &str) {
        let object = self.render_invoice(&self.invoices[id]);
        self.emit(event_type, object);
    }

    fn invoice(&mut self, sub: &str, amount: i64, status: &str) -> String {
        let id = self.id("in");
        let customer = self.subscriptions[sub].customer.clone();
        self.invoices.insert(
            id.clone(),
            Invoice {
                id: id.clone(),
                customer,
                subscription: sub.to_owned(),
                amount_due: amount,
                status: status.to_owned(),
            },
        );
        id
    }

    fn subscription(&self, id: &str) -> Result<&Subscription, (StatusCode, Value)> {
        self.subscriptions
            .get(id)
            .ok_or_else(|| missing("subscription", id))
    }

    fn schedule(&self, id: &str) -> Result<&Schedule, (StatusCode, Value)> {
        self.schedules
            .get(id)
            .ok_or_else(|| missing("subscription_schedule", id))
    }

    fn handle(&mut self, method: &Method, path: &[&str], params: &Value) -> Answer {
        let expand = expands(params);
        match (method.as_str(), path) {
            ("POST", ["customers"]) => self.create_customer(params),
            ("POST", ["checkout", "sessions"]) => self.create_session(params),
            ("GET", ["checkout", "sessions", id]) => self
                .sessions
                .get(*id)
                .map(|s| self.render_session(s))
                .ok_or_else(|| missing("checkout.session", id)),
            ("POST", ["billing_portal", "sessions"]) => self.create_portal(params),
            ("GET", ["prices", id]) => self.price(id),
            ("GET", ["subscriptions", id]) => {
                if self.unreadable.iter().any(|u| u == id) {
                    return Err(error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "api_error",
                        "temporarily unavailable",
                    ));
                }
                self.render_subscription(self.subscription(id)?, &expand)
            }
            ("POST", ["subscriptions", id]) => self.update_subscription(id, params, &expand),
            ("POST", ["subscription_schedules"]) => self.create_schedule(params),
            ("GET", ["subscription_schedules", id]) => {
                self.render_schedule(self.schedule(id)?, &expand)
            }
            ("POST", ["subscription_schedules", id]) => self.update_schedule(id, params),
            ("POST", ["subscription_schedules", id, "release"]) => self.release(id),
            ("POST", ["subscription_items"]) => self.create_item(params),
            ("POST", ["subscription_items", id]) => self.update_item(id, params),
            ("DELETE", ["subscription_items", id]) => self.delete_item(id, params),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("Unrecognized request URL ({method} /v1/{})", path.join("/")),
            )),
        }
    }

    fn create_customer(&mut self, params: &Value) -> Answer {
        let mut customer = self.template("customer");
        let id = self.id("cus");
        customer.insert("id".into(), json!(id));
        customer.insert("name".into(), json!(text(params, "name")));
        customer.insert(
            "metadata".into(),
            params.get("metadata").cloned().unwrap_or(json!({})),
        );
        let customer = Value::Object(customer);
        self.customers.insert(id, customer.clone());
        Ok(customer)
    }

    fn create_session(&mut self, params: &Value) -> Answer {
        let mode = text(params, "mode").unwrap_or_default().to_owned();
        if mode != "subscription" && mode != "payment" {
            return Err(invalid("only subscription and payment modes are simulated"));
        }
        let customer = text(params, "customer").ok_or_else(|| invalid("customer required"))?;
        if !self.customers.contains_key(customer) {
            return Err(missing("customer", customer));
        }
        let mut line_items = Vec::new();
        let mut amount_total = None;
        for item in list(params, "line_items") {
            let quantity = number(item, "quantity").unwrap_or(1);
            if mode == "payment" {
                // One-off amounts come as inline price data.
                let unit = item
                    .pointer("/price_data/unit_amount")
                    .and_then(Value::as_str)
                    .and_then(|raw| raw.parse::<i64>().ok())
                    .ok_or_else(|| invalid("line_items price_data unit_amount"))?;
                if item.pointer("/price_data/product_data/name").is_none() {
                    return Err(invalid("line_items price_data product_data name"));
                }
                amount_total = Some(amount_total.unwrap_or(0) + unit * quantity as i64);
                continue;
            }
            let price = text(item, "price").ok_or_else(|| invalid("line_items price"))?;
            self.price(price)?;
            line_items.push((price.to_owned(), quantity));
        }
        let object = |key: &str| {
            params
                .pointer(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let session = Session {
            id: self.id("cs"),
            customer: customer.to_owned(),
            mode,
            amount_total,
            payment_metadata: object("/payment_intent_data/metadata"),
            payment_intent: None,
            line_items,
            metadata: object("/metadata"),
            subscription_metadata: object("/subscription_data/metadata"),
            subscription: None,
            status: "open".into(),
            allow_promotion_codes: text(params, "allow_promotion_codes") == Some("true"),
        };
        let rendered = self.render_session(&session);
        self.sessions.insert(session.id.clone(), session);
        Ok(rendered)
    }

    fn create_portal(&mut self, params: &Value) -> Answer {
        let customer = text(params, "customer").ok_or_else(|| invalid("customer required"))?;
        if !self.customers.contains_key(customer) {
            return Err(missing("customer", customer));
        }
        let mut session = self.template("billing_portal.session");
        let id = self.id("bps");
        session.insert("id".into(), json!(id));
        session.insert("customer".into(), json!(customer));
        session.insert("return_url".into(), json!(text(params, "return_url")));
        session.insert(
            "url".into(),
            json!(format!("https://billing.stripe.test/p/session/{id}")),
        );
        Ok(Value::Object(session))
    }

    fn update_subscription(&mut self, id: &str, params: &Value, expand: &[String]) -> Answer {
        let sub = self.subscription(id)?.clone();
        if sub.status == "canceled" {
            return Err(invalid(
                "A canceled subscription can only update its metadata.",
            ));
        }
        if let Some(cancel) = text(params, "cancel_at_period_end") {
            if let Some(schedule) = &sub.schedule {
                return Err(invalid(format!(
                    "The subscription is managed by the subscription schedule `{schedule}`, \
                     and updating any cancelation behavior directly is not allowed."
                )));
            }
            let sub = self.subscriptions.get_mut(id).expect("exists");
            sub.cancel_at_period_end = cancel == "true";
            self.emit_subscription("customer.subscription.updated", id);
        }
        let changes = list(params, "items");
        if !changes.is_empty() {
            let mut items = sub.items.clone();
            for change in changes {
                let item_id = text(change, "id").ok_or_else(|| invalid("items id"))?;
                let item = items
                    .iter_mut()
                    .find(|i| i.id == item_id)
                    .ok_or_else(|| missing("subscription_item", item_id))?;
                if let Some(price) = text(change, "price") {
                    self.price(price)?;
                    item.price = price.to_owned();
                }
                if let Some(quantity) = number(change, "quantity") {
                    item.quantity = quantity;
                }
            }
            let old_amount = self.items_amount(&sub.items);
            let new_amount = self.items_amount(&items);
            let always_invoice = text(params, "proration_behavior") == Some("always_invoice");
            let pending_if_incomplete =
                text(params, "payment_behavior") == Some("pending_if_incomplete");
            if always_invoice && new_amount > old_amount {
                // The unused share of the period, charged now.
                let left = (sub.period_end - now()).max(0) as f64
                    / (sub.period_end - sub.period_start).max(1) as f64;
                let proration = ((new_amount - old_amount) as f64 * left).round() as i64;
                if self.card_needs_authentication && pending_if_incomplete {
                    let invoice = self.invoice(id, proration, "open");
                    let sub = self.subscriptions.get_mut(id).expect("exists");
                    sub.pending_items = Some(items);
                    sub.latest_invoice = Some(invoice.clone());
                    self.emit_invoice("invoice.payment_action_required", &invoice);
                } else {
                    let invoice = self.invoice(id, proration, "paid");
                    let sub = self.subscriptions.get_mut(id).expect("exists");
                    sub.items = items;
                    sub.latest_invoice = Some(invoice.clone());
                    self.emit_invoice("invoice.paid", &invoice);
                    self.emit_subscription("customer.subscription.updated", id);
                }
            } else {
                self.subscriptions.get_mut(id).expect("exists").items = items;
                self.emit_subscription("customer.subscription.updated", id);
            }
        }
        self.render_subscription(&self.subscriptions[id], expand)
    }

    fn items_amount(&self, items: &[Item]) -> i64 {
        items
            .iter()
            .map(|i| self.price_amount(&i.price) * i.quantity as i64)
            .sum()
    }

    /// Adds an item, prorated as asked (an increase invoiced at once with
    /// `always_invoice`).
    fn create_item(&mut self, params: &Value) -> Answer {
        let sub_id =
            text(params, "subscription").ok_or_else(|| invalid("subscription required"))?;
        let sub = self.subscription(sub_id)?.clone();
        let price = text(params, "price").ok_or_else(|| invalid("price required"))?;
        self.price(price)?;
        if sub.items.iter().any(|i| i.price == price) {
            return Err(invalid(format!(
                "The price `{price}` is already on the subscription."
            )));
        }
        let item = Item {
            id: self.id("si"),
            price: price.to_owned(),
            quantity: number(params, "quantity").unwrap_or(1),
        };
        let mut items = sub.items.clone();
        items.push(item.clone());
        self.replace_items(sub_id, items, params);
        self.render_item(&self.subscriptions[sub_id], &item)
    }

    fn update_item(&mut self, id: &str, params: &Value) -> Answer {
        let (sub_id, mut items) = self.items_with(id)?;
        let item = items.iter_mut().find(|i| i.id == id).expect("found");
        if let Some(quantity) = number(params, "quantity") {
            item.quantity = quantity;
        }
        let item = item.clone();
        self.replace_items(&sub_id, items, params);
        self.render_item(&self.subscriptions[&sub_id], &item)
    }

    fn delete_item(&mut self, id: &str, params: &Value) -> Answer {
        let (sub_id, mut items) = self.items_with(id)?;
        items.retain(|i| i.id != id);
        self.replace_items(&sub_id, items, params);
        let mut deleted = self.template("deleted_subscription_item");
        deleted.insert("id".into(), json!(id));
        Ok(Value::Object(deleted))
    }

    /// The subscription holding the item, and its items.
    fn items_with(&self, item_id: &str) -> Result<(String, Vec<Item>), (StatusCode, Value)> {
        self.subscriptions
            .values()
            .find(|s| s.items.iter().any(|i| i.id == item_id))
            .map(|s| (s.id.clone(), s.items.clone()))
            .ok_or_else(|| missing("subscription_item", item_id))
    }

    /// Sets a subscription's items; an increase with `always_invoice`
    /// invoices the unused share of the period at once.
    fn replace_items(&mut self, sub_id: &str, items: Vec<Item>, params: &Value) {
        let sub = self.subscriptions[sub_id].clone();
        let old_amount = self.items_amount(&sub.items);
        let new_amount = self.items_amount(&items);
        self.subscriptions.get_mut(sub_id).expect("exists").items = items;
        if text(params, "proration_behavior") == Some("always_invoice") && new_amount > old_amount {
            let left = (sub.period_end - now()).max(0) as f64
                / (sub.period_end - sub.period_start).max(1) as f64;
            let proration = ((new_amount - old_amount) as f64 * left).round() as i64;
            let invoice = self.invoice(sub_id, proration, "paid");
            self.subscriptions
                .get_mut(sub_id)
                .expect("exists")
                .latest_invoice = Some(invoice.clone());
            self.emit_invoice("invoice.paid", &invoice);
        }
        self.emit_subscription("customer.subscription.updated", sub_id);
    }

    fn create_schedule(&mut self, params: &Value) -> Answer {
        let from = text(params, "from_subscription")
            .ok_or_else(|| invalid("only from_subscription is simulated"))?;
        if params.get("metadata").is_some() {
            return Err(invalid(
                "You cannot set `metadata` if `from_subscription` is set.",
            ));
        }
        let sub = self.subscription(from)?.clone();
        if let Some(existing) = &sub.schedule {
            return Err(invalid(format!(
                "You cannot migrate a subscription that is already attached to a schedule: `{existing}`."
            )));
        }
        let id = self.id("sub_sched");
        let schedule = Schedule {
            id: id.clone(),
            customer: sub.customer.clone(),
            subscription: Some(from.to_owned()),
            released_subscription: None,
            status: "active".into(),
            phases: vec![Phase {
                start: sub.period_start,
                end: sub.period_end,
                items: sub
                    .items
                    .iter()
                    .map(|i| (i.price.clone(), i.quantity))
                    .collect(),
                discounts: vec![],
                billing_cycle_anchor: None,
                proration_behavior: "create_prorations".into(),
            }],
            metadata: Map::new(),
            end_behavior: "release".into(),
            created: now(),
        };
        self.schedules.insert(id.clone(), schedule);
        self.subscriptions.get_mut(from).expect("exists").schedule = Some(id.clone());
        self.emit_schedule("subscription_schedule.created", &id);
        self.emit_subscription("customer.subscription.updated", from);
        self.render_schedule(&self.schedules[&id], &[])
    }

    fn update_schedule(&mut self, id: &str, params: &Value) -> Answer {
        let schedule = self.schedule(id)?.clone();
        if self.refuse_schedule_updates {
            return Err(invalid("The phases could not be applied."));
        }
        if schedule.status != "active" && schedule.status != "not_started" {
            return Err(invalid(format!(
                "You cannot update a subscription schedule that is currently in the `{}` status.",
                schedule.status
            )));
        }
        let mut phases: Vec<Phase> = Vec::new();
        for phase in list(params, "phases") {
            let mut items = Vec::new();
            for item in list(phase, "items") {
                let price = text(item, "price").ok_or_else(|| invalid("phase item price"))?;
                self.price(price)?;
                items.push((price.to_owned(), number(item, "quantity").unwrap_or(1)));
            }
            let start = match text(phase, "start_date") {
                Some(raw) => raw.parse().map_err(|_| invalid("start_date"))?,
                None => phases.last().map_or(now(), |p| p.end),
            };
            let end = match text(phase, "end_date") {
                Some(raw) => raw.parse().map_err(|_| invalid("end_date"))?,
                None => start + self.period_days(&items) * DAY,
            };
            phases.push(Phase {
                start,
                end,
                items,
                discounts: list(phase, "discounts")
                    .iter()
                    .filter_map(|d| text(d, "discount").map(str::to_owned))
                    .collect(),
                billing_cycle_anchor: text(phase, "billing_cycle_anchor").map(str::to_owned),
                proration_behavior: text(phase, "proration_behavior")
                    .unwrap_or("create_prorations")
                    .to_owned(),
            });
        }
        let schedule = self.schedules.get_mut(id).expect("exists");
        if !phases.is_empty() {
            schedule.phases = phases;
        }
        if let Some(metadata) = params.get("metadata").and_then(Value::as_object) {
            schedule.metadata.extend(metadata.clone());
        }
        if let Some(end_behavior) = text(params, "end_behavior") {
            schedule.end_behavior = end_behavior.to_owned();
        }
        self.emit_schedule("subscription_schedule.updated", id);
        self.render_schedule(&self.schedules[id], &[])
    }

    fn release(&mut self, id: &str) -> Answer {
        let schedule = self.schedule(id)?.clone();
        if schedule.status != "active" && schedule.status != "not_started" {
            return Err(invalid(format!(
                "You cannot release a subscription schedule that is currently in the `{}` status.",
                schedule.status
            )));
        }
        let sub = schedule.subscription.clone();
        let schedule = self.schedules.get_mut(id).expect("exists");
        schedule.status = "released".into();
        schedule.released_subscription = sub.clone();
        schedule.subscription = None;
        if let Some(sub) = &sub {
            self.subscriptions.get_mut(sub).expect("exists").schedule = None;
        }
        self.emit_schedule("subscription_schedule.released", id);
        if let Some(sub) = &sub {
            self.emit_subscription("customer.subscription.updated", sub);
        }
        self.render_schedule(&self.schedules[id], &[])
    }
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
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut stripe = state.lock().expect("lock");
    let writes = method == Method::POST || method == Method::DELETE;
    if writes {
        if let Some(first) = key.as_ref().and_then(|k| stripe.idempotent.get(k)) {
            let (status, body) = first.clone();
            return json_response(status, &body);
        }
        stripe
            .writes
            .push((format!("{method} /v1/{path}"), params.clone()));
    }
    let (status, body) = match stripe.handle(&method, &segments, &params) {
        Ok(body) => (StatusCode::OK, body),
        Err(failure) => failure,
    };
    if writes && let Some(key) = key {
        stripe.idempotent.insert(key, (status, body.clone()));
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

    /// The customer pays for the Checkout session: the subscription starts
    /// (its period began a day ago, so a renewal "now" is a new period).
    /// Returns the subscription id; the events wait in the outbox.
    pub fn complete_checkout(&self, checkout_url: &str) -> String {
        let session_id = checkout_url.rsplit('/').next().expect("session id");
        let mut stripe = self.lock();
        let session = stripe.sessions[session_id].clone();
        let sub_id = stripe.id("sub");
        let mut items = Vec::new();
        for (price, quantity) in &session.line_items {
            let id = stripe.id("si");
            items.push(Item {
                id,
                price: price.clone(),
                quantity: *quantity,
            });
        }
        let start = now() - DAY;
        let days = stripe.period_days(&session.line_items);
        stripe.subscriptions.insert(
            sub_id.clone(),
            Subscription {
                id: sub_id.clone(),
                customer: session.customer.clone(),
                status: "active".into(),
                items,
                period_start: start,
                period_end: start + days * DAY,
                cancel_at_period_end: false,
                canceled_at: None,
                ended_at: None,
                created: start,
                metadata: session.subscription_metadata.clone(),
                schedule: None,
                latest_invoice: None,
                pending_items: None,
            },
        );
        let amount = stripe.items_amount(&stripe.subscriptions[&sub_id].items.clone());
        let invoice = stripe.invoice(&sub_id, amount, "paid");
        stripe
            .subscriptions
            .get_mut(&sub_id)
            .expect("exists")
            .latest_invoice = Some(invoice.clone());
        let session = stripe.sessions.get_mut(session_id).expect("session");
        session.status = "complete".into();
        session.subscription = Some(sub_id.clone());
        let rendered = stripe.render_session(&stripe.sessions[session_id].clone());
        stripe.emit_subscription("customer.subscription.created", &sub_id);
        stripe.emit("checkout.session.completed", rendered);
        stripe.emit_invoice("invoice.paid", &invoice);
        sub_id
    }

    /// The customer pays for a payment-mode Checkout session: a payment
    /// intent succeeds. Returns its id; `checkout.session.completed` and
    /// `payment_intent.succeeded` wait in the outbox.
    pub fn complete_payment_checkout(&self, checkout_url: &str) -> String {
        let session_id = checkout_url.rsplit('/').next().expect("session id");
        let mut stripe = self.lock();
        let payment_id = stripe.id("pi");
        let session = stripe.sessions.get_mut(session_id).expect("session");
        assert_eq!(session.mode, "payment", "not a payment session");
        session.status = "complete".into();
        session.payment_intent = Some(payment_id.clone());
        let session = session.clone();
        let mut intent = stripe.template("payment_intent");
        for (key, value) in [
            ("id", json!(payment_id)),
            ("customer", json!(session.customer)),
            ("amount", json!(session.amount_total)),
            ("amount_received", json!(session.amount_total)),
            ("currency", json!("usd")),
            ("status", json!("succeeded")),
            ("metadata", Value::Object(session.payment_metadata.clone())),
        ] {
            intent.insert(key.into(), value);
        }
        let rendered = stripe.render_session(&session);
        stripe.emit("checkout.session.completed", rendered);
        stripe.emit("payment_intent.succeeded", Value::Object(intent));
        payment_id
    }

    /// The quantity of the subscription's item with this price, if any.
    pub fn item_quantity(&self, sub: &str, price: &str) -> Option<u64> {
        self.lock().subscriptions[sub]
            .items
            .iter()
            .find(|i| i.price == price)
            .map(|i| i.quantity)
    }

    /// Adds an item to a subscription, as the Stripe dashboard would.
    pub fn add_item(&self, sub: &str, price: &str, quantity: u64) {
        let mut stripe = self.lock();
        let id = stripe.id("si");
        stripe
            .subscriptions
            .get_mut(sub)
            .expect("subscription")
            .items
            .push(Item {
                id,
                price: price.to_owned(),
                quantity,
            });
        stripe.emit_subscription("customer.subscription.updated", sub);
    }

    /// Reorders a subscription's items (Stripe does not promise an order).
    pub fn reverse_items(&self, sub: &str) {
        let mut stripe = self.lock();
        stripe
            .subscriptions
            .get_mut(sub)
            .expect("subscription")
            .items
            .reverse();
    }

    /// The current period ends now: the subscription renews (moving to the
    /// schedule's next phase, if any) or, when set to cancel, ends.
    pub fn end_period(&self, sub_id: &str) {
        let mut stripe = self.lock();
        let t = now();
        let sub = stripe.subscriptions[sub_id].clone();
        if sub.cancel_at_period_end {
            let sub = stripe.subscriptions.get_mut(sub_id).expect("exists");
            sub.status = "canceled".into();
            sub.ended_at = Some(t);
            sub.canceled_at = Some(t);
            stripe.emit_subscription("customer.subscription.deleted", sub_id);
            return;
        }
        let mut items = sub.items.clone();
        if let Some(schedule_id) = &sub.schedule {
            let schedule = stripe.schedules[schedule_id].clone();
            if let Some(next) = schedule.phases.iter().find(|p| p.start >= sub.period_end) {
                // The phase lists the items in the subscription's order;
                // each keeps its id when only its price changes.
                let next_items: Vec<Item> = next
                    .items
                    .iter()
                    .enumerate()
                    .map(|(i, (price, quantity))| Item {
                        id: items
                            .get(i)
                            .map_or_else(|| format!("si_{}_{i}", sub.id), |old| old.id.clone()),
                        price: price.clone(),
                        quantity: *quantity,
                    })
                    .collect();
                items = next_items;
            }
        }
        let pairs: Vec<(String, u64)> = items
            .iter()
            .map(|i| (i.price.clone(), i.quantity))
            .collect();
        let days = stripe.period_days(&pairs);
        let amount = stripe.items_amount(&items);
        let sub = stripe.subscriptions.get_mut(sub_id).expect("exists");
        sub.items = items;
        sub.period_start = t;
        sub.period_end = t + days * DAY;
        let invoice = stripe.invoice(sub_id, amount, "paid");
        stripe.emit_invoice("invoice.paid", &invoice);
        stripe.emit_subscription("customer.subscription.updated", sub_id);
    }

    /// The renewal payment fails: Stripe retries and marks it past due.
    pub fn fail_renewal_payment(&self, sub_id: &str) {
        let mut stripe = self.lock();
        let amount = stripe.items_amount(&stripe.subscriptions[sub_id].items.clone());
        let invoice = stripe.invoice(sub_id, amount, "open");
        stripe.subscriptions.get_mut(sub_id).expect("exists").status = "past_due".into();
        stripe.emit_invoice("invoice.payment_failed", &invoice);
        stripe.emit_subscription("customer.subscription.updated", sub_id);
    }

    /// Stripe ends the subscription at once (unpaid for too long, or
    /// canceled from the dashboard).
    pub fn delete_subscription(&self, sub_id: &str) {
        let mut stripe = self.lock();
        let t = now();
        let sub = stripe.subscriptions.get_mut(sub_id).expect("exists");
        sub.status = "canceled".into();
        sub.ended_at = Some(t);
        sub.canceled_at = Some(t);
        stripe.emit_subscription("customer.subscription.deleted", sub_id);
    }

    /// Attaches a schedule made outside this service (say, in the
    /// dashboard): no metadata of ours, one phase.
    pub fn attach_foreign_schedule(&self, sub_id: &str) {
        let mut stripe = self.lock();
        let params = json!({ "from_subscription": sub_id });
        stripe.create_schedule(&params).expect("schedule");
    }

    pub fn refuse_schedule_updates(&self, refuse: bool) {
        self.lock().refuse_schedule_updates = refuse;
    }

    /// Makes every answer take `delay`.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.lock().delay = delay;
    }

    pub fn set_card_needs_authentication(&self, needs: bool) {
        self.lock().card_needs_authentication = needs;
    }

    /// Makes reading the subscription fail (or work again).
    pub fn set_unreadable(&self, sub_id: &str, unreadable: bool) {
        let mut stripe = self.lock();
        stripe.unreadable.retain(|s| s != sub_id);
        if unreadable {
            stripe.unreadable.push(sub_id.to_owned());
        }
    }

    /// Takes the queued events, oldest first.
    pub fn take_events(&self) -> Vec<Value> {
        std::mem::take(&mut self.lock().outbox)
    }

    /// Writes made so far whose method and path start with `prefix`.
    pub fn writes(&self, prefix: &str) -> Vec<Value> {
        self.lock()
            .writes
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, params)| params.clone())
            .collect()
    }

    pub fn customer_count(&self) -> usize {
        self.lock().customers.len()
    }

    pub fn subscription_json(&self, id: &str) -> Value {
        let stripe = self.lock();
        stripe
            .render_subscription(&stripe.subscriptions[id], &[])
            .expect("renders")
    }

    /// The schedule attached to the subscription, if any.
    pub fn schedule_of(&self, sub_id: &str) -> Option<Value> {
        let stripe = self.lock();
        let id = stripe.subscriptions[sub_id].schedule.clone()?;
        Some(
            stripe
                .render_schedule(&stripe.schedules[&id], &["phases.items.price".into()])
                .expect("renders"),
        )
    }

    /// All schedules ever made, as rendered.
    pub fn schedules(&self) -> Vec<Value> {
        let stripe = self.lock();
        stripe
            .schedules
            .values()
            .map(|s| stripe.render_schedule(s, &[]).expect("renders"))
            .collect()
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
