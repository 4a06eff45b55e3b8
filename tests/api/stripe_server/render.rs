//! Rendering the server's state as Stripe's objects (from Stripe's own
//! example objects, with our fields put in), and the events it queues.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::{
    Answer, DAY, Invoice, Item, PRICES, PaymentIntent, Schedule, Session, Stripe, Subscription,
    missing, now,
};

impl Stripe {
    pub(super) fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_test{:06}", self.next_id)
    }

    pub(super) fn template(&self, name: &str) -> Map<String, Value> {
        self.fixtures[name]
            .as_object()
            .expect("fixture object")
            .clone()
    }

    pub(super) fn price(&self, id: &str) -> Result<Value, (StatusCode, Value)> {
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

    pub(super) fn price_amount(&self, id: &str) -> i64 {
        PRICES
            .iter()
            .find(|(price, _, _)| *price == id)
            .map_or(0, |(_, amount, _)| *amount)
    }

    /// Stripe bills every item of a subscription on one interval.
    pub(super) fn one_interval<'a>(
        &self,
        prices: impl Iterator<Item = &'a str>,
    ) -> Result<(), (StatusCode, Value)> {
        let mut intervals: Vec<&str> = prices
            .filter_map(|price| PRICES.iter().find(|(id, _, _)| *id == price))
            .map(|(_, _, interval)| *interval)
            .collect();
        intervals.dedup();
        intervals.sort_unstable();
        intervals.dedup();
        if intervals.len() > 1 {
            return Err(super::invalid(
                "Currency and interval fields must match across all plans on this subscription. Found mismatch in interval field.",
            ));
        }
        Ok(())
    }

    pub(super) fn price_days(&self, id: &str) -> i64 {
        match PRICES.iter().find(|(price, _, _)| *price == id) {
            Some((_, _, "year")) => 365,
            _ => 30,
        }
    }

    /// The period length of a set of items: the paid item's interval.
    pub(super) fn period_days(&self, items: &[(String, u64)]) -> i64 {
        items
            .iter()
            .find(|(price, _)| self.price_amount(price) > 0)
            .or(items.first())
            .map_or(30, |(price, _)| self.price_days(price))
    }

    pub(super) fn render_subscription(&self, sub: &Subscription, expand: &[String]) -> Answer {
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
                self.render_invoice(&self.invoices[id], &[])
            }
            Some(id) => json!(id),
        };
        out.insert("latest_invoice".into(), invoice);
        Ok(Value::Object(out))
    }

    pub(super) fn render_item(&self, sub: &Subscription, item: &Item) -> Answer {
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

    pub(super) fn render_schedule(&self, schedule: &Schedule, expand: &[String]) -> Answer {
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

    pub(super) fn render_invoice(&self, invoice: &Invoice, expand: &[String]) -> Value {
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
        if expand.iter().any(|e| e == "payments") {
            let payments: Vec<Value> = invoice
                .payment_intent
                .iter()
                .map(|intent| {
                    let paid = invoice.status == "paid";
                    json!({
                        "id": format!("inpay_{}", invoice.id),
                        "object": "invoice_payment",
                        "amount_paid": if paid { Some(invoice.amount_due) } else { None },
                        "amount_requested": invoice.amount_due,
                        "created": now(),
                        "currency": "usd",
                        "invoice": invoice.id,
                        "is_default": true,
                        "livemode": false,
                        "payment": { "type": "payment_intent", "payment_intent": intent,
                                     "charge": null, "payment_record": null },
                        "status": if paid { "paid" } else { "open" },
                        "status_transitions": { "canceled_at": null,
                                                "paid_at": if paid { Some(now()) } else { None } },
                    })
                })
                .collect();
            out.insert(
                "payments".into(),
                json!({ "object": "list", "data": payments, "has_more": false,
                        "url": format!("/v1/invoices/{}/payments", invoice.id) }),
            );
        }
        Value::Object(out)
    }

    pub(super) fn render_payment_intent(&self, intent: &PaymentIntent) -> Value {
        let mut out = self.template("payment_intent");
        for (key, value) in [
            ("id", json!(intent.id)),
            ("customer", json!(intent.customer)),
            ("amount", json!(intent.amount)),
            (
                "amount_received",
                json!(if intent.status == "succeeded" {
                    intent.amount
                } else {
                    0
                }),
            ),
            ("currency", json!("usd")),
            ("status", json!(intent.status)),
            ("metadata", Value::Object(intent.metadata.clone())),
        ] {
            out.insert(key.into(), value);
        }
        Value::Object(out)
    }

    pub(super) fn render_refund(&self, id: &str, intent: &str, amount: i64) -> Value {
        json!({
            "id": id, "object": "refund", "amount": amount, "balance_transaction": null,
            "charge": null, "created": now(), "currency": "usd", "customer": null,
            "customer_account": null, "description": null, "destination_details": null,
            "failure_balance_transaction": null, "failure_reason": null,
            "instructions_email": null, "metadata": {}, "next_action": null,
            "payment_intent": intent, "payment_method": null, "pending_reason": null,
            "presentment_details": null, "reason": null, "receipt_number": null,
            "source_transfer_reversal": null, "status": "succeeded", "transfer_reversal": null,
        })
    }

    pub(super) fn render_session(&self, session: &Session) -> Value {
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

    pub(super) fn emit(&mut self, event_type: &str, object: Value) {
        let mut event = self.template("event");
        let id = self.id("evt");
        event.insert("id".into(), json!(id));
        event.insert("type".into(), json!(event_type));
        event.insert("created".into(), json!(now()));
        event.insert("api_version".into(), json!("2026-09-30.endive"));
        event.insert("data".into(), json!({ "object": object }));
        self.events.push(Value::Object(event.clone()));
        if !self.dropping_deliveries {
            self.outbox.push(Value::Object(event));
        }
    }

    pub(super) fn emit_subscription(&mut self, event_type: &str, id: &str) {
        let object = self
            .render_subscription(&self.subscriptions[id].clone(), &[])
            .expect("renders");
        self.emit(event_type, object);
    }

    pub(super) fn emit_schedule(&mut self, event_type: &str, id: &str) {
        let object = self
            .render_schedule(&self.schedules[id].clone(), &[])
            .expect("renders");
        self.emit(event_type, object);
    }

    pub(super) fn emit_invoice(&mut self, event_type: &str, id: &str) {
        let object = self.render_invoice(&self.invoices[id], &[]);
        self.emit(event_type, object);
    }

    /// A new invoice of the subscription, and the payment intent charging
    /// it: succeeded when paid, else waiting as the card makes it wait.
    pub(super) fn invoice(&mut self, sub: &str, amount: i64, status: &str) -> String {
        let id = self.id("in");
        let intent = self.id("pi");
        let customer = self.subscriptions[sub].customer.clone();
        let intent_status = match status {
            "paid" => "succeeded",
            _ if self.card_needs_authentication => "requires_action",
            _ => "requires_payment_method",
        };
        self.payment_intents.insert(
            intent.clone(),
            PaymentIntent {
                id: intent.clone(),
                customer: customer.clone(),
                amount,
                status: intent_status.into(),
                metadata: Map::new(),
                refunded: 0,
            },
        );
        self.invoices.insert(
            id.clone(),
            Invoice {
                id: id.clone(),
                customer,
                subscription: sub.to_owned(),
                amount_due: amount,
                status: status.to_owned(),
                payment_intent: Some(intent),
            },
        );
        id
    }

    pub(super) fn subscription(&self, id: &str) -> Result<&Subscription, (StatusCode, Value)> {
        self.subscriptions
            .get(id)
            .ok_or_else(|| missing("subscription", id))
    }

    pub(super) fn schedule(&self, id: &str) -> Result<&Schedule, (StatusCode, Value)> {
        self.schedules
            .get(id)
            .ok_or_else(|| missing("subscription_schedule", id))
    }
}
