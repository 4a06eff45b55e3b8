//! What tests do to the server: pay, renew, fail, slow down, hold a write,
//! and read its state back.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{DAY, FakeStripe, HeldWrite, Item, PaymentIntent, now};

impl FakeStripe {
    /// The customer pays for the Checkout session: the subscription starts
    /// (its period began a day ago, so a renewal "now" is a new period).
    /// Returns the subscription id; the events wait in the outbox.
    pub fn complete_checkout(&self, checkout_url: &str) -> String {
        self.try_complete_checkout(checkout_url)
            .expect("the session can be paid")
    }

    /// The customer tries to pay for the session: refused unless it is
    /// still open (Stripe's page no longer takes a payment then).
    pub fn try_complete_checkout(&self, checkout_url: &str) -> Result<String, String> {
        let session_id = checkout_url.rsplit('/').next().expect("session id");
        let mut stripe = self.lock();
        let session = stripe.sessions[session_id].clone();
        if session.status != "open" {
            return Err(format!("the session is {}", session.status));
        }
        let (sub_id, invoice) = stripe.start_subscription(
            &session.customer,
            &session.line_items,
            session.subscription_metadata.clone(),
        );
        let session = stripe.sessions.get_mut(session_id).expect("session");
        session.status = "complete".into();
        session.subscription = Some(sub_id.clone());
        let rendered = stripe.render_session(&stripe.sessions[session_id].clone());
        stripe.emit_subscription("customer.subscription.created", &sub_id);
        stripe.emit("checkout.session.completed", rendered);
        stripe.emit_invoice("invoice.paid", &invoice);
        Ok(sub_id)
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
        assert_eq!(session.status, "open", "only an open session can be paid");
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
        stripe.payment_intents.insert(
            payment_id.clone(),
            PaymentIntent {
                id: payment_id.clone(),
                customer: session.customer.clone(),
                amount: session.amount_total.unwrap_or(0),
                status: "succeeded".into(),
                metadata: session.payment_metadata.clone(),
                refunded: 0,
            },
        );
        let rendered = stripe.render_session(&session);
        stripe.emit("checkout.session.completed", rendered);
        stripe.emit("payment_intent.succeeded", Value::Object(intent));
        payment_id
    }

    /// A subscription started outside this service (the dashboard, or a
    /// second tab's payment): paid, with its events in the outbox.
    pub fn subscribe_directly(&self, customer: &str, price: &str, quantity: u64) -> String {
        let mut stripe = self.lock();
        let (sub_id, invoice) = stripe.start_subscription(
            customer,
            &[(price.to_owned(), quantity)],
            Default::default(),
        );
        stripe.emit_subscription("customer.subscription.created", &sub_id);
        stripe.emit_invoice("invoice.paid", &invoice);
        sub_id
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

    /// Sets an item's quantity with no event at all, as a change whose
    /// webhook was never sent: only reconciliation can find it.
    pub fn set_quantity_without_event(&self, sub: &str, price: &str, quantity: u64) {
        let mut stripe = self.lock();
        let item = stripe
            .subscriptions
            .get_mut(sub)
            .expect("subscription")
            .items
            .iter_mut()
            .find(|i| i.price == price)
            .expect("an item with the price");
        item.quantity = quantity;
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
            let next = schedule.phases.iter().find(|p| p.start >= sub.period_end);
            if next.is_none() && schedule.end_behavior == "release" {
                // Past its last phase the schedule lets the subscription go.
                let done = stripe.schedules.get_mut(schedule_id).expect("exists");
                done.status = "released".into();
                done.released_subscription = Some(sub_id.to_owned());
                done.subscription = None;
                stripe
                    .subscriptions
                    .get_mut(sub_id)
                    .expect("exists")
                    .schedule = None;
                stripe.emit_schedule("subscription_schedule.released", schedule_id);
            }
            if let Some(next) = next {
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

    /// Makes off-session charges of the customer's card fail (or work again).
    pub fn set_card_declines(&self, declines: bool) {
        self.lock().card_declines = declines;
    }

    /// The next write whose method and path start with `prefix` is applied
    /// and then never answered; the returned signal fires once it is.
    pub fn hold_next_write(&self, prefix: &str) -> Arc<Notify> {
        let applied = Arc::new(Notify::new());
        self.lock().held = Some(HeldWrite {
            prefix: prefix.to_owned(),
            applied: applied.clone(),
        });
        applied
    }

    /// The customer completes the payment of the subscription's open
    /// invoice (after authenticating): the pending update applies.
    pub fn pay_open_invoice(&self, sub_id: &str) {
        let mut stripe = self.lock();
        let Some(invoice_id) = stripe.subscriptions[sub_id].latest_invoice.clone() else {
            return;
        };
        if stripe.invoices[&invoice_id].status != "open" {
            return;
        }
        stripe.invoices.get_mut(&invoice_id).expect("exists").status = "paid".into();
        if let Some(intent) = stripe.invoices[&invoice_id].payment_intent.clone() {
            stripe
                .payment_intents
                .get_mut(&intent)
                .expect("exists")
                .status = "succeeded".into();
        }
        let sub = stripe.subscriptions.get_mut(sub_id).expect("exists");
        if let Some(items) = sub.pending_items.take() {
            sub.items = items;
        }
        stripe.emit_invoice("invoice.paid", &invoice_id);
        stripe.emit_subscription("customer.subscription.updated", sub_id);
    }

    /// Every invoice of the subscription as (amount due, status), oldest first.
    pub fn invoices_of(&self, sub_id: &str) -> Vec<(i64, String)> {
        let stripe = self.lock();
        stripe
            .invoices
            .values()
            .filter(|invoice| invoice.subscription == sub_id)
            .map(|invoice| (invoice.amount_due, invoice.status.clone()))
            .collect()
    }

    /// Every refund as (payment intent, amount).
    pub fn refunds(&self) -> Vec<(String, i64)> {
        self.lock()
            .refunds
            .iter()
            .map(|(_, intent, amount)| (intent.clone(), *amount))
            .collect()
    }

    /// The payment intent that paid the subscription's first invoice.
    pub fn first_payment_of(&self, sub_id: &str) -> Option<(String, i64)> {
        let stripe = self.lock();
        let invoice = stripe
            .invoices
            .values()
            .find(|invoice| invoice.subscription == sub_id)?;
        let intent = invoice.payment_intent.clone()?;
        Some((intent, invoice.amount_due))
    }

    /// The subscriptions of the customer that are not canceled.
    pub fn live_subscriptions_of(&self, customer: &str) -> Vec<String> {
        self.lock()
            .subscriptions
            .values()
            .filter(|s| s.customer == customer && s.status != "canceled")
            .map(|s| s.id.clone())
            .collect()
    }

    /// The status of the session behind a Checkout URL.
    pub fn session_status(&self, checkout_url: &str) -> String {
        let session_id = checkout_url.rsplit('/').next().expect("session id");
        self.lock().sessions[session_id].status.clone()
    }

    /// Makes reading the subscription fail (or work again).
    pub fn set_unreadable(&self, sub_id: &str, unreadable: bool) {
        let mut stripe = self.lock();
        stripe.unreadable.retain(|s| s != sub_id);
        if unreadable {
            stripe.unreadable.push(sub_id.to_owned());
        }
    }

    /// A customer made outside this service (an existing Stripe account's),
    /// with `metadata`; returns its id.
    pub fn create_customer_outside(&self, name: &str, metadata: Value) -> String {
        let mut stripe = self.lock();
        let mut customer = stripe.template("customer");
        let id = stripe.id("cus");
        customer.insert("id".into(), serde_json::json!(id));
        customer.insert("name".into(), serde_json::json!(name));
        customer.insert("metadata".into(), metadata);
        stripe.customers.insert(id.clone(), Value::Object(customer));
        id
    }

    /// The customer as Stripe holds it.
    pub fn customer_json(&self, id: &str) -> Value {
        self.lock().customers[id].clone()
    }

    /// How many requests so far had a method and path starting with
    /// `prefix` (`GET /v1/subscriptions/sub_1`, say).
    pub fn requests(&self, prefix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// Answers the next request starting with `prefix` after `delay`, with
    /// the state as it was when the request arrived.
    pub fn answer_next_late(&self, prefix: &str, delay: std::time::Duration) {
        self.lock().slow_next = Some((prefix.to_owned(), delay));
    }

    /// Sets the subscription's status and sends
    /// `customer.subscription.updated` (a payment failing, then recovering).
    pub fn update_status(&self, sub: &str, status: &str) {
        let mut stripe = self.lock();
        stripe
            .subscriptions
            .get_mut(sub)
            .expect("subscription")
            .status = status.into();
        stripe.emit_subscription("customer.subscription.updated", sub);
    }

    /// Answers the next `requests` requests, of any kind, with 429.
    pub fn rate_limit_next(&self, requests: u32) {
        let mut stripe = self.lock();
        stripe.rate_limited = requests;
        stripe.rate_limited_prefix = None;
    }

    /// Answers the next `requests` requests starting with `prefix` (a
    /// method and path) with 429; others are answered as usual.
    pub fn rate_limit_next_to(&self, prefix: &str, requests: u32) {
        let mut stripe = self.lock();
        stripe.rate_limited = requests;
        stripe.rate_limited_prefix = Some(prefix.to_owned());
    }

    /// The idempotency keys of every write attempt starting with `prefix`,
    /// rate-limited ones included, in arrival order.
    pub fn write_attempt_keys(&self, prefix: &str) -> Vec<Option<String>> {
        self.lock()
            .write_attempts
            .iter()
            .filter(|(write, _)| write.starts_with(prefix))
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// How many requests were answered 429.
    pub fn rate_limited_answers(&self) -> u32 {
        self.lock().rate_limited_answers
    }

    /// While set, events are listed by `GET /v1/events` but never queued
    /// for delivery, as when our endpoint is unreachable for days.
    pub fn set_deliveries_dropped(&self, dropped: bool) {
        self.lock().dropping_deliveries = dropped;
    }

    /// While set, `GET /v1/events` lists nothing: a test shows that the
    /// ingress and the inbox alone lose nothing, with no catch-up to fill
    /// a gap they left.
    pub fn set_events_unlisted(&self, unlisted: bool) {
        self.lock().events_unlisted = unlisted;
    }

    /// The ids of every event emitted so far, oldest first.
    pub fn event_ids(&self) -> Vec<String> {
        self.all_events()
            .iter()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every event emitted so far, delivered or not, oldest first.
    pub fn all_events(&self) -> Vec<Value> {
        self.lock().events.clone()
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
