//! Subscriptions, their items and their schedules.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::{
    Answer, DAY, Item, Phase, Schedule, Stripe, Subscription, invalid, list, missing, now, number,
    text,
};

impl Stripe {
    pub(super) fn update_subscription(
        &mut self,
        id: &str,
        params: &Value,
        expand: &[String],
    ) -> Answer {
        let sub = self.subscription(id)?.clone();
        if sub.status == "canceled" {
            return Err(invalid(
                "A canceled subscription can only update its metadata.",
            ));
        }
        let pending_if_incomplete =
            text(params, "payment_behavior") == Some("pending_if_incomplete");
        if pending_if_incomplete && params.get("metadata").is_some() {
            return Err(invalid(
                "When using `payment_behavior=pending_if_incomplete`, only the parameters supported by pending updates may be passed (`metadata` is not).",
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
        if let Some(metadata) = params.get("metadata").and_then(Value::as_object) {
            let sub = self.subscriptions.get_mut(id).expect("exists");
            for (key, value) in metadata {
                match value.as_str() {
                    Some("") | None => sub.metadata.remove(key),
                    Some(_) => sub.metadata.insert(key.clone(), value.clone()),
                };
            }
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
            self.one_interval(items.iter().map(|i| i.price.as_str()))?;
            let old_amount = self.items_amount(&sub.items);
            let new_amount = self.items_amount(&items);
            let always_invoice = text(params, "proration_behavior") == Some("always_invoice");
            if always_invoice && new_amount > old_amount {
                // Stripe prorates from the quantity it shows: the unused
                // share of the period at the new amount less the old.
                let left = (sub.period_end - now()).max(0) as f64
                    / (sub.period_end - sub.period_start).max(1) as f64;
                let proration = ((new_amount - old_amount) as f64 * left).round() as i64;
                let card_fails = self.card_needs_authentication || self.card_declines;
                if card_fails && pending_if_incomplete {
                    let invoice = self.invoice(id, proration, "open");
                    let sub = self.subscriptions.get_mut(id).expect("exists");
                    sub.pending_items = Some(items);
                    sub.latest_invoice = Some(invoice.clone());
                    let event = if self.card_needs_authentication {
                        "invoice.payment_action_required"
                    } else {
                        "invoice.payment_failed"
                    };
                    self.emit_invoice(event, &invoice);
                } else if card_fails {
                    // Without pending updates the change applies and the
                    // subscription falls past due.
                    let invoice = self.invoice(id, proration, "open");
                    let sub = self.subscriptions.get_mut(id).expect("exists");
                    sub.items = items;
                    sub.status = "past_due".into();
                    sub.latest_invoice = Some(invoice.clone());
                    self.emit_invoice("invoice.payment_failed", &invoice);
                    self.emit_subscription("customer.subscription.updated", id);
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

    /// A subscription paid now, its period begun a day ago (so a renewal
    /// "now" is a new period): returns it and its paid first invoice.
    pub(super) fn start_subscription(
        &mut self,
        customer: &str,
        lines: &[(String, u64)],
        metadata: Map<String, Value>,
    ) -> (String, String) {
        let sub_id = self.id("sub");
        let mut items = Vec::new();
        for (price, quantity) in lines {
            let id = self.id("si");
            items.push(Item {
                id,
                price: price.clone(),
                quantity: *quantity,
            });
        }
        let start = now() - DAY;
        let days = self.period_days(lines);
        let amount = self.items_amount(&items);
        self.subscriptions.insert(
            sub_id.clone(),
            Subscription {
                id: sub_id.clone(),
                customer: customer.to_owned(),
                status: "active".into(),
                items,
                period_start: start,
                period_end: start + days * DAY,
                cancel_at_period_end: false,
                canceled_at: None,
                ended_at: None,
                created: now(),
                metadata,
                schedule: None,
                latest_invoice: None,
                pending_items: None,
            },
        );
        let invoice = self.invoice(&sub_id, amount, "paid");
        self.subscriptions
            .get_mut(&sub_id)
            .expect("exists")
            .latest_invoice = Some(invoice.clone());
        (sub_id, invoice)
    }

    /// Ends the subscription now (`DELETE /v1/subscriptions/:id`).
    pub(super) fn cancel_now(&mut self, id: &str, expand: &[String]) -> Answer {
        let sub = self.subscription(id)?.clone();
        if sub.status == "canceled" {
            return Err(invalid("This subscription has already been canceled."));
        }
        let t = now();
        if let Some(schedule) = &sub.schedule
            && let Some(schedule) = self.schedules.get_mut(schedule)
        {
            schedule.status = "canceled".into();
        }
        let sub = self.subscriptions.get_mut(id).expect("exists");
        sub.status = "canceled".into();
        sub.ended_at = Some(t);
        sub.canceled_at = Some(t);
        sub.schedule = None;
        self.emit_subscription("customer.subscription.deleted", id);
        self.render_subscription(&self.subscriptions[id], expand)
    }

    pub(super) fn items_amount(&self, items: &[Item]) -> i64 {
        items
            .iter()
            .map(|i| self.price_amount(&i.price) * i.quantity as i64)
            .sum()
    }

    /// Adds an item, prorated as asked (an increase invoiced at once with
    /// `always_invoice`).
    pub(super) fn create_item(&mut self, params: &Value) -> Answer {
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
        self.one_interval(items.iter().map(|i| i.price.as_str()))?;
        self.replace_items(sub_id, items, params);
        self.render_item(&self.subscriptions[sub_id], &item)
    }

    pub(super) fn update_item(&mut self, id: &str, params: &Value) -> Answer {
        let (sub_id, mut items) = self.items_with(id)?;
        let item = items.iter_mut().find(|i| i.id == id).expect("found");
        if let Some(quantity) = number(params, "quantity") {
            item.quantity = quantity;
        }
        let item = item.clone();
        self.replace_items(&sub_id, items, params);
        self.render_item(&self.subscriptions[&sub_id], &item)
    }

    pub(super) fn delete_item(&mut self, id: &str, params: &Value) -> Answer {
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
    pub(super) fn replace_items(&mut self, sub_id: &str, items: Vec<Item>, params: &Value) {
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

    pub(super) fn create_schedule(&mut self, params: &Value) -> Answer {
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

    pub(super) fn update_schedule(&mut self, id: &str, params: &Value) -> Answer {
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
        for phase in &phases {
            self.one_interval(phase.items.iter().map(|(price, _)| price.as_str()))?;
        }
        // Changing the current phase changes the subscription now.
        let t = now();
        let current = phases.iter().find(|p| p.start <= t && t < p.end).cloned();
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
        if let (Some(current), Some(sub_id)) = (current, schedule.subscription.clone()) {
            self.apply_phase(&sub_id, &current, params);
        }
        self.emit_schedule("subscription_schedule.updated", id);
        self.render_schedule(&self.schedules[id], &[])
    }

    /// A schedule's phase becomes the subscription's items (each item keeps
    /// its id where its price stays), prorated as the update asks.
    fn apply_phase(&mut self, sub_id: &str, phase: &super::Phase, params: &Value) {
        let sub = self.subscriptions[sub_id].clone();
        let now_items: Vec<(String, u64)> = sub
            .items
            .iter()
            .map(|i| (i.price.clone(), i.quantity))
            .collect();
        let mut same = now_items.clone();
        let mut wanted = phase.items.clone();
        same.sort();
        wanted.sort();
        if same == wanted {
            return;
        }
        let items: Vec<Item> = phase
            .items
            .iter()
            .enumerate()
            .map(|(i, (price, quantity))| Item {
                id: sub
                    .items
                    .iter()
                    .find(|old| &old.price == price)
                    .map_or_else(|| format!("si_{}_{i}", sub.id), |old| old.id.clone()),
                price: price.clone(),
                quantity: *quantity,
            })
            .collect();
        let proration = text(params, "proration_behavior").unwrap_or("create_prorations");
        self.replace_items(sub_id, items, &json!({ "proration_behavior": proration }));
    }

    pub(super) fn release(&mut self, id: &str) -> Answer {
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
