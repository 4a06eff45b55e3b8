//! The API's routes: customers, Checkout sessions, the portal, invoices,
//! payment intents and refunds (subscriptions and schedules are in
//! `subscriptions`).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Answer, Session, Stripe, error, expands, invalid, list, missing, number, text};

impl Stripe {
    pub(super) fn handle(&mut self, method: &Method, path: &[&str], params: &Value) -> Answer {
        let expand = expands(params);
        match (method.as_str(), path) {
            ("POST", ["customers"]) => self.create_customer(params),
            ("GET", ["customers"]) => {
                // Newest first: ids are issued in order.
                let newest_first: Vec<&Value> = self.customers.values().rev().collect();
                list_page(
                    &newest_first,
                    |c| c["id"].as_str().unwrap_or(""),
                    |c| Ok((*c).clone()),
                    params,
                    ("customer", "/v1/customers"),
                )
            }
            ("GET", ["customers", id]) => self
                .customers
                .get(*id)
                .cloned()
                .ok_or_else(|| missing("customer", id)),
            ("POST", ["customers", id]) => self.update_customer(id, params),
            ("POST", ["checkout", "sessions"]) => self.create_session(params),
            ("GET", ["checkout", "sessions", id]) => self
                .sessions
                .get(*id)
                .map(|s| self.render_session(s))
                .ok_or_else(|| missing("checkout.session", id)),
            ("POST", ["checkout", "sessions", id, "expire"]) => self.expire_session(id),
            ("POST", ["billing_portal", "sessions"]) => self.create_portal(params),
            ("GET", ["prices", id]) => self.price(id),
            ("GET", ["subscriptions"]) => self.list_subscriptions(params),
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
            ("DELETE", ["subscriptions", id]) => self.cancel_now(id, &expand),
            ("POST", ["subscription_schedules"]) => self.create_schedule(params),
            ("GET", ["subscription_schedules", id]) => {
                self.render_schedule(self.schedule(id)?, &expand)
            }
            ("POST", ["subscription_schedules", id]) => self.update_schedule(id, params),
            ("POST", ["subscription_schedules", id, "release"]) => self.release(id),
            ("POST", ["subscription_items"]) => self.create_item(params),
            ("POST", ["subscription_items", id]) => self.update_item(id, params),
            ("DELETE", ["subscription_items", id]) => self.delete_item(id, params),
            ("GET", ["invoices", id]) => self
                .invoices
                .get(*id)
                .map(|invoice| self.render_invoice(invoice, &expand))
                .ok_or_else(|| missing("invoice", id)),
            ("POST", ["invoices", id, "void"]) => self.void_invoice(id),
            ("GET", ["payment_intents", id]) => self
                .payment_intents
                .get(*id)
                .map(|intent| self.render_payment_intent(intent))
                .ok_or_else(|| missing("payment_intent", id)),
            ("POST", ["refunds"]) => self.refund(params),
            ("GET", ["events"]) => self.list_events(params),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("Unrecognized request URL ({method} /v1/{})", path.join("/")),
            )),
        }
    }

    fn expire_session(&mut self, id: &str) -> Answer {
        let session = self
            .sessions
            .get_mut(id)
            .ok_or_else(|| missing("checkout.session", id))?;
        if session.status != "open" {
            return Err(invalid(format!(
                "Only Checkout Sessions with a status of `open` can be expired; this one is `{}`.",
                session.status
            )));
        }
        session.status = "expired".into();
        let rendered = self.render_session(&self.sessions[id].clone());
        self.emit("checkout.session.expired", rendered.clone());
        Ok(rendered)
    }

    /// Subscriptions newest first, as Stripe lists them: by `customer`,
    /// `status=all` or else not canceled, `limit` 1 to 100 (10 by default),
    /// `starting_after` a subscription of the list.
    fn list_subscriptions(&self, params: &Value) -> Answer {
        let customer = text(params, "customer");
        let all = text(params, "status") == Some("all");
        let mut matching: Vec<&super::Subscription> = self
            .subscriptions
            .values()
            .filter(|s| customer.is_none_or(|c| c == s.customer))
            .filter(|s| all || s.status != "canceled")
            .collect();
        matching.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        list_page(
            &matching,
            |s| s.id.as_str(),
            |s| self.render_subscription(s, &[]),
            params,
            ("subscription", "/v1/subscriptions"),
        )
    }

    /// Events newest first, as Stripe lists them: `created[gt|gte|lt|lte]`,
    /// up to 20 `types`, `limit` 1 to 100 (10 by default), and
    /// `starting_after` an event of the list (the next page is older).
    fn list_events(&self, params: &Value) -> Answer {
        let bound = |op: &str| -> Result<Option<i64>, (StatusCode, Value)> {
            match params.get("created").and_then(|c| c.get(op)) {
                None => Ok(None),
                Some(value) => value
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .map(Some)
                    .ok_or_else(|| invalid(format!("Invalid integer: created[{op}]"))),
            }
        };
        let (gt, gte, lt, lte) = (bound("gt")?, bound("gte")?, bound("lt")?, bound("lte")?);
        let types: Vec<&str> = list(params, "types")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if types.len() > 20 {
            return Err(invalid("You may pass at most 20 types."));
        }
        let created = |event: &Value| event["created"].as_i64().unwrap_or(0);
        let mut matching: Vec<&Value> = self
            .events
            .iter()
            .filter(|e| gt.is_none_or(|t| created(e) > t))
            .filter(|e| gte.is_none_or(|t| created(e) >= t))
            .filter(|e| lt.is_none_or(|t| created(e) < t))
            .filter(|e| lte.is_none_or(|t| created(e) <= t))
            .filter(|e| types.is_empty() || types.contains(&e["type"].as_str().unwrap_or("")))
            .filter(|_| !self.events_unlisted)
            .collect();
        // Newest first; events of one second in reverse emission order.
        matching.reverse();
        matching.sort_by_key(|e| std::cmp::Reverse(created(e)));
        list_page(
            &matching,
            |e| e["id"].as_str().unwrap_or(""),
            |e| Ok((*e).clone()),
            params,
            ("event", "/v1/events"),
        )
    }

    fn void_invoice(&mut self, id: &str) -> Answer {
        let invoice = self
            .invoices
            .get_mut(id)
            .ok_or_else(|| missing("invoice", id))?;
        if invoice.status != "open" {
            return Err(invalid(format!(
                "You can only void an open invoice; this one is `{}`.",
                invoice.status
            )));
        }
        invoice.status = "void".into();
        let subscription = invoice.subscription.clone();
        // Voiding the invoice of a pending update discards the update.
        if let Some(sub) = self.subscriptions.get_mut(&subscription)
            && sub.latest_invoice.as_deref() == Some(id)
        {
            sub.pending_items = None;
        }
        self.emit_invoice("invoice.voided", id);
        Ok(self.render_invoice(&self.invoices[id], &[]))
    }

    fn refund(&mut self, params: &Value) -> Answer {
        let intent_id =
            text(params, "payment_intent").ok_or_else(|| invalid("payment_intent required"))?;
        let intent = self
            .payment_intents
            .get(intent_id)
            .ok_or_else(|| missing("payment_intent", intent_id))?
            .clone();
        if intent.status != "succeeded" {
            return Err(invalid(
                "This PaymentIntent has no successful charge to refund.",
            ));
        }
        let left = intent.amount - intent.refunded;
        let amount = text(params, "amount")
            .and_then(|raw| raw.parse::<i64>().ok())
            .unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(invalid(format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            )));
        }
        let id = self.id("re");
        self.payment_intents
            .get_mut(intent_id)
            .expect("exists")
            .refunded += amount;
        self.refunds
            .push((id.clone(), intent_id.to_owned(), amount));
        let refund = self.render_refund(&id, intent_id, amount);
        self.emit("refund.created", refund.clone());
        Ok(refund)
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

    /// Metadata keys are merged, as Stripe does; an empty value unsets one.
    fn update_customer(&mut self, id: &str, params: &Value) -> Answer {
        let customer = self
            .customers
            .get_mut(id)
            .ok_or_else(|| missing("customer", id))?;
        if let Some(metadata) = params.get("metadata").and_then(Value::as_object) {
            let stored = customer["metadata"]
                .as_object_mut()
                .ok_or_else(|| invalid("customer without metadata"))?;
            for (key, value) in metadata {
                if value.as_str() == Some("") {
                    stored.remove(key);
                } else {
                    stored.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(customer.clone())
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
        self.one_interval(line_items.iter().map(|(price, _)| price.as_str()))?;
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
}

/// One page of `items` (in list order) as Stripe answers a list request:
/// `limit` 1 to 100 (10 by default), `starting_after` one of the list (404
/// for one it does not know, named as `what`), `has_more`; only the page
/// is rendered.
fn list_page<T>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> Answer,
    params: &Value,
    (what, url): (&str, &str),
) -> Answer {
    let limit = page_limit(params)?;
    let start = page_start(items.iter().map(&id), params, what)?;
    let data = items
        .iter()
        .skip(start)
        .take(limit)
        .map(render)
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = start + data.len() < items.len();
    Ok(json!({ "object": "list", "data": data, "has_more": has_more, "url": url }))
}

/// A list's `limit`: 1 to 100, 10 when not given, as Stripe takes it.
fn page_limit(params: &Value) -> Result<usize, (StatusCode, Value)> {
    match text(params, "limit") {
        None => Ok(10),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| invalid("limit must be between 1 and 100")),
    }
}

/// Where a page starts: after the `starting_after` object, which must be
/// in the list (Stripe answers 404 for one it does not know).
fn page_start<'a>(
    ids: impl Iterator<Item = &'a str>,
    params: &Value,
    what: &str,
) -> Result<usize, (StatusCode, Value)> {
    let Some(after) = text(params, "starting_after") else {
        return Ok(0);
    };
    let mut ids = ids;
    ids.position(|id| id == after)
        .map(|at| at + 1)
        .ok_or_else(|| missing(what, after))
}
