//! The subscription lifecycle: Checkout sessions and their completion, updates and cancellation, renewals and
//! failed payments, each emitting the events Stripe sends for it.

use serde_json::{Value, json};

use super::api::{Req, boolean, integer, metadata, previous, public, required, text};
use super::error::{ApiResult, StripeError};
use super::objects::{self, InvoiceSpec, SubscriptionSpec};
use super::state::{Account, find, find_mut, new_id, now};

/// Checkout sessions stay open for 24 hours.
const SESSION_TTL: i64 = 24 * 3600;

/// `POST /v1/checkout/sessions` (subscription mode only).
pub(crate) fn create_checkout_session(a: &mut Account, r: &Req) -> ApiResult<Value> {
    let p = &r.params;
    let mode = required(p, "mode")?;
    if mode != "subscription" {
        return Err(StripeError::bad_param(
            "mode",
            "parameter_invalid_string",
            format!("The Stripe sandbox supports mode=subscription only (got '{mode}')."),
        ));
    }
    let customer = text(p, "customer")?;
    let customer_email = text(p, "customer_email")?;
    if customer.is_some() && customer_email.is_some() {
        return Err(StripeError::invalid("You may only specify one of these parameters: customer, customer_email.")
            .param("customer_email"));
    }
    let mut email = customer_email.map(str::to_string);
    if let Some(id) = customer {
        let c = find(&a.customers, id)
            .filter(|c| c["deleted"] != true)
            .ok_or_else(|| StripeError::no_such("customer", id, Some("customer")))?;
        email = c["email"].as_str().map(str::to_string);
    }
    let items = match p.get("line_items") {
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        Some(_) => {
            return Err(StripeError::bad_param("line_items", "parameter_invalid_array", "Invalid array: line_items"));
        }
        None => return Err(StripeError::missing("line_items")),
    };
    let mut resolved = Vec::new();
    let mut currency: Option<Value> = None;
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        let param = format!("line_items[{i}][price]");
        let price_id = text(item, "price")?.ok_or_else(|| StripeError::missing(&param))?;
        let price = find(&a.prices, price_id).ok_or_else(|| StripeError::no_such("price", price_id, Some(&param)))?;
        if price["active"] != true {
            return Err(StripeError::bad_param(
                &param,
                "price_inactive",
                format!("The price `{price_id}` is not active."),
            ));
        }
        if price["type"] != "recurring" {
            return Err(StripeError::bad_param(
                &param,
                "parameter_invalid_string",
                "You must provide at least one recurring price in `subscription` mode when using prices.",
            ));
        }
        let qty_param = format!("line_items[{i}][quantity]");
        let quantity = integer(item, "quantity").map_err(|e| e.param(&qty_param))?;
        let quantity = match (objects::is_metered(price), quantity) {
            (true, _) => None,
            (false, Some(q)) if q >= 1 => Some(q),
            (false, Some(_)) => {
                return Err(StripeError::bad_param(
                    &qty_param,
                    "parameter_invalid_integer",
                    "Quantity must be at least 1.",
                ));
            }
            (false, None) => return Err(StripeError::missing(&qty_param)),
        };
        if currency.as_ref().is_some_and(|c| *c != price["currency"]) {
            return Err(StripeError::bad_param(
                &param,
                "parameter_invalid_string",
                "All prices must share one currency.",
            ));
        }
        currency = Some(price["currency"].clone());
        total += quantity.unwrap_or(0) * price["unit_amount"].as_i64().unwrap_or(0);
        resolved.push(json!({"price": price_id, "quantity": quantity}));
    }
    let sub_data = p.get("subscription_data").cloned().unwrap_or(json!({}));
    let trial_days =
        integer(&sub_data, "trial_period_days").map_err(|e| e.param("subscription_data[trial_period_days]"))?;
    if trial_days.is_some_and(|d| !(1..=730).contains(&d)) {
        return Err(StripeError::bad_param(
            "subscription_data[trial_period_days]",
            "parameter_invalid_integer",
            "subscription_data[trial_period_days] must be between 1 and 730.",
        ));
    }
    let sub_metadata = metadata(&sub_data, "metadata").map_err(|e| e.param("subscription_data[metadata]"))?;
    for url_param in ["success_url", "cancel_url"] {
        if let Some(u) = text(p, url_param)? {
            url::Url::parse(&u.replace("{CHECKOUT_SESSION_ID}", "x")).map_err(|_| {
                StripeError::bad_param(url_param, "url_invalid", format!("Not a valid URL: {url_param}"))
            })?;
        }
    }
    let id = new_id("cs_test_", 58);
    let t = now();
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "adaptive_pricing": null,
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": if trial_days.is_some() { 0 } else { total },
        "amount_total": if trial_days.is_some() { 0 } else { total },
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "billing_address_collection": null,
        "cancel_url": text(p, "cancel_url")?,
        "client_reference_id": text(p, "client_reference_id")?,
        "client_secret": null,
        "consent": null,
        "consent_collection": null,
        "created": t,
        "currency": currency,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "customer": customer,
        "customer_creation": if customer.is_some() { Value::Null } else { json!("always") },
        "customer_details": email.as_ref().map(|e| json!({"address": null, "email": e, "name": null, "phone": null, "tax_exempt": "none", "tax_ids": null})),
        "customer_email": customer_email,
        "discounts": [],
        "expires_at": t + SESSION_TTL,
        "invoice": null,
        "invoice_creation": null,
        "livemode": false,
    });
    let rest = json!({
        "locale": text(p, "locale")?,
        "metadata": metadata(p, "metadata")?,
        "mode": "subscription",
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": "always",
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "phone_number_collection": {"enabled": false},
        "recovered_from": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": text(p, "success_url")?,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": format!("{}/checkout/{id}", r.base_url),
        "_line_items": resolved,
        "_subscription_data": {"metadata": sub_metadata, "trial_period_days": trial_days},
    });
    let session = objects::merge(session, rest);
    a.sessions.push(session.clone());
    Ok(public(&session))
}

/// The Pay button: creates the customer (when the session has none) and the subscription with its first invoice,
/// completes the session and emits `customer.created`, `customer.subscription.created`, `invoice.paid`,
/// `invoice.payment_succeeded` and `checkout.session.completed`. Returns where to send the browser (the
/// `success_url` with `{CHECKOUT_SESSION_ID}` filled in), or `None` when the session has no success_url.
pub(crate) fn complete_checkout(
    a: &mut Account,
    id: &str,
    email: Option<&str>,
    base_url: &str,
) -> ApiResult<Option<String>> {
    let session = find(&a.sessions, id).cloned().ok_or_else(|| StripeError::no_such("checkout.session", id, None))?;
    if session["status"] != "open" {
        return Err(StripeError::invalid(format!(
            "This Checkout Session is {}, not open.",
            session["status"].as_str().unwrap_or_default()
        )));
    }
    if session["expires_at"].as_i64().is_some_and(|e| e < now()) {
        return Err(StripeError::invalid("This Checkout Session has expired."));
    }
    let email = email
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .or_else(|| session["customer_details"]["email"].as_str().map(str::to_string));
    let customer_id = match session["customer"].as_str() {
        Some(c) => c.to_string(),
        None => {
            let email = email.as_deref().ok_or_else(|| StripeError::invalid("An email address is required."))?;
            let c = objects::customer(Some(email), None, None, json!({}));
            let cid = c["id"].as_str().unwrap_or_default().to_string();
            a.customers.push(c.clone());
            a.emit("customer.created", c, None);
            cid
        }
    };
    let items: Vec<(Value, Option<u64>)> = session["_line_items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|li| {
            let price = find(&a.prices, li["price"].as_str()?)?.clone();
            Some((price, li["quantity"].as_u64()))
        })
        .collect();
    let sub_data = &session["_subscription_data"];
    let mut sub = objects::subscription(SubscriptionSpec {
        customer: &customer_id,
        items,
        metadata: sub_data["metadata"].clone(),
        trial_days: sub_data["trial_period_days"].as_i64(),
        start: now(),
    });
    let invoice = objects::invoice(InvoiceSpec {
        subscription: &sub,
        customer_email: email.clone(),
        billing_reason: "subscription_create",
        paid: true,
        base_url,
    });
    sub["latest_invoice"] = invoice["id"].clone();
    let sub_id = sub["id"].as_str().unwrap_or_default().to_string();
    a.subscriptions.push(sub.clone());
    a.invoices.push(invoice.clone());
    a.emit("customer.subscription.created", sub, None);
    a.emit("invoice.paid", invoice.clone(), None);
    a.emit("invoice.payment_succeeded", invoice.clone(), None);
    let trial = sub_data["trial_period_days"].is_i64();
    let s = find_mut(&mut a.sessions, id).ok_or_else(|| StripeError::no_such("checkout.session", id, None))?;
    s["status"] = json!("complete");
    s["payment_status"] = json!(if trial { "no_payment_required" } else { "paid" });
    s["customer"] = json!(customer_id);
    s["subscription"] = json!(sub_id);
    s["invoice"] = invoice["id"].clone();
    s["customer_details"] =
        json!({"address": null, "email": email, "name": null, "phone": null, "tax_exempt": "none", "tax_ids": []});
    s["url"] = Value::Null;
    let completed = public(s);
    a.emit("checkout.session.completed", completed, None);
    Ok(session["success_url"].as_str().map(|u| u.replace("{CHECKOUT_SESSION_ID}", id)))
}

fn subscription_mut<'a>(a: &'a mut Account, id: &str) -> ApiResult<&'a mut Value> {
    find_mut(&mut a.subscriptions, id).ok_or_else(|| StripeError::no_such("subscription", id, Some("id")))
}

fn not_canceled(sub: &Value) -> ApiResult<()> {
    if sub["status"] == "canceled" {
        return Err(StripeError::invalid(
            "A canceled subscription can only update its cancellation_details and metadata.",
        ));
    }
    Ok(())
}

/// Ends a subscription now: `status: canceled` and `customer.subscription.deleted`.
pub(crate) fn cancel_now(a: &mut Account, id: &str, reason: &str) -> ApiResult<Value> {
    let sub = subscription_mut(a, id)?;
    not_canceled(sub)?;
    let t = now();
    sub["status"] = json!("canceled");
    sub["canceled_at"] = json!(t);
    sub["ended_at"] = json!(t);
    sub["cancellation_details"]["reason"] = json!(reason);
    let out = sub.clone();
    a.emit("customer.subscription.deleted", out.clone(), None);
    Ok(out)
}

/// `POST /v1/subscriptions/{id}`: `cancel_at_period_end`, `cancel_at`, `metadata`, `description`,
/// `items[i][id|price|quantity]`; emits `customer.subscription.updated` with `previous_attributes`.
pub(crate) fn update_subscription(a: &mut Account, id: &str, p: &Value) -> ApiResult<Value> {
    let cancel_at_period_end = boolean(p, "cancel_at_period_end")?;
    let cancel_at = match p.get("cancel_at") {
        Some(Value::String(s)) if s.is_empty() => Some(None),
        Some(_) => Some(integer(p, "cancel_at")?),
        None => None,
    };
    let description = text(p, "description")?.map(str::to_string);
    let item_updates = match p.get("items") {
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(StripeError::bad_param("items", "parameter_invalid_array", "Invalid array: items")),
        None => Vec::new(),
    };
    let mut new_prices = Vec::new();
    for (i, item) in item_updates.iter().enumerate() {
        let price = match text(item, "price")? {
            Some(pid) => Some(
                find(&a.prices, pid)
                    .cloned()
                    .ok_or_else(|| StripeError::no_such("price", pid, Some(&format!("items[{i}][price]"))))?,
            ),
            None => None,
        };
        let quantity = integer(item, "quantity")?;
        new_prices.push((text(item, "id")?.map(str::to_string), price, quantity));
    }
    let sub = subscription_mut(a, id)?;
    let only_metadata =
        cancel_at_period_end.is_none() && cancel_at.is_none() && description.is_none() && new_prices.is_empty();
    if !only_metadata {
        not_canceled(sub)?;
    }
    let old = sub.clone();
    if let Some(x) = cancel_at_period_end {
        sub["cancel_at_period_end"] = json!(x);
        sub["cancel_at"] = if x { sub["items"]["data"][0]["current_period_end"].clone() } else { Value::Null };
        sub["canceled_at"] = if x { json!(now()) } else { Value::Null };
        sub["cancellation_details"]["reason"] = if x { json!("cancellation_requested") } else { Value::Null };
    }
    if let Some(at) = cancel_at {
        sub["cancel_at"] = json!(at);
    }
    if p.get("description").is_some() {
        sub["description"] = json!(description);
    }
    super::api::merge_metadata(&mut sub["metadata"], p)?;
    for (i, (item_id, price, quantity)) in new_prices.into_iter().enumerate() {
        let Some(items) = sub["items"]["data"].as_array_mut() else { break };
        let pos = match &item_id {
            Some(iid) => items
                .iter()
                .position(|it| it["id"] == iid.as_str())
                .ok_or_else(|| StripeError::no_such("subscription_item", iid, Some(&format!("items[{i}][id]"))))?,
            None => i.min(items.len().saturating_sub(1)),
        };
        let Some(item) = items.get_mut(pos) else { break };
        if let Some(price) = price {
            let (start, end) =
                (item["current_period_start"].as_i64().unwrap_or(0), item["current_period_end"].as_i64().unwrap_or(0));
            let qty = quantity.map(|q| q as u64).or(item["quantity"].as_u64());
            let sid = sub_id_of(item);
            let mut replaced = objects::subscription_item(&sid, &price, qty, start, end);
            replaced["id"] = item["id"].clone();
            replaced["created"] = item["created"].clone();
            *item = replaced;
        } else if let Some(q) = quantity {
            item["quantity"] = json!(q);
        }
    }
    let new = sub.clone();
    if let Some(prev) = previous(&old, &new) {
        a.emit("customer.subscription.updated", new.clone(), Some(prev));
    }
    Ok(new)
}

fn sub_id_of(item: &Value) -> String {
    item["subscription"].as_str().unwrap_or_default().to_string()
}

/// The next billing event of a subscription. `past_due`: the open invoice is paid (`invoice.paid`), the
/// subscription is active again. Otherwise the period ends: a subscription set to cancel ends
/// (`customer.subscription.deleted`); any other renews (new period on its items, a paid `subscription_cycle`
/// invoice, trials end) with `invoice.paid`, `invoice.payment_succeeded` and `customer.subscription.updated`.
pub(crate) fn advance(a: &mut Account, id: &str, base_url: &str) -> ApiResult<Value> {
    let sub =
        find(&a.subscriptions, id).cloned().ok_or_else(|| StripeError::no_such("subscription", id, Some("id")))?;
    not_canceled(&sub)?;
    if sub["status"] == "past_due" {
        let inv_id = sub["latest_invoice"].as_str().unwrap_or_default().to_string();
        if let Some(inv) = find_mut(&mut a.invoices, &inv_id) {
            let t = now();
            inv["status"] = json!("paid");
            inv["amount_paid"] = inv["amount_due"].clone();
            inv["amount_remaining"] = json!(0);
            inv["attempt_count"] = json!(inv["attempt_count"].as_u64().unwrap_or(0) + 1);
            inv["status_transitions"]["paid_at"] = json!(t);
            inv["next_payment_attempt"] = Value::Null;
            let paid = inv.clone();
            a.emit("invoice.paid", paid.clone(), None);
            a.emit("invoice.payment_succeeded", paid, None);
        }
        let s = subscription_mut(a, id)?;
        let old = s.clone();
        s["status"] = json!("active");
        let new = s.clone();
        a.emit("customer.subscription.updated", new.clone(), previous(&old, &new));
        return Ok(new);
    }
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap_or_else(now);
    let ends_now = sub["cancel_at_period_end"] == true || sub["cancel_at"].as_i64().is_some_and(|at| at <= end);
    if ends_now {
        let s = subscription_mut(a, id)?;
        s["status"] = json!("canceled");
        s["ended_at"] = json!(end);
        if s["canceled_at"].is_null() {
            s["canceled_at"] = json!(now());
        }
        let out = s.clone();
        a.emit("customer.subscription.deleted", out.clone(), None);
        return Ok(out);
    }
    renew(a, id, base_url, true)
}

/// A failed payment. `past_due`: the open invoice's retry fails again (`invoice.payment_failed`). Otherwise the
/// subscription renews into a new period whose invoice fails: `invoice.payment_failed`, `status: past_due`,
/// `customer.subscription.updated`.
pub(crate) fn fail_payment(a: &mut Account, id: &str, base_url: &str) -> ApiResult<Value> {
    let sub =
        find(&a.subscriptions, id).cloned().ok_or_else(|| StripeError::no_such("subscription", id, Some("id")))?;
    not_canceled(&sub)?;
    if sub["status"] == "past_due" {
        let inv_id = sub["latest_invoice"].as_str().unwrap_or_default().to_string();
        if let Some(inv) = find_mut(&mut a.invoices, &inv_id) {
            inv["attempt_count"] = json!(inv["attempt_count"].as_u64().unwrap_or(0) + 1);
            let failed = inv.clone();
            a.emit("invoice.payment_failed", failed, None);
        }
        return Ok(sub);
    }
    renew(a, id, base_url, false)
}

fn renew(a: &mut Account, id: &str, base_url: &str, paid: bool) -> ApiResult<Value> {
    let email = {
        let sub = find(&a.subscriptions, id).ok_or_else(|| StripeError::no_such("subscription", id, Some("id")))?;
        let cid = sub["customer"].as_str().unwrap_or_default();
        find(&a.customers, cid).and_then(|c| c["email"].as_str().map(str::to_string))
    };
    let s = subscription_mut(a, id)?;
    let old = s.clone();
    if let Some(items) = s["items"]["data"].as_array_mut() {
        for item in items {
            let start = item["current_period_end"].as_i64().unwrap_or_else(now);
            item["current_period_start"] = json!(start);
            item["current_period_end"] = json!(objects::period_end(start, &item["price"]));
        }
    }
    s["status"] = json!(if paid { "active" } else { "past_due" });
    let invoice = objects::invoice(InvoiceSpec {
        subscription: s,
        customer_email: email,
        billing_reason: "subscription_cycle",
        paid,
        base_url,
    });
    s["latest_invoice"] = invoice["id"].clone();
    let new = s.clone();
    a.invoices.push(invoice.clone());
    if paid {
        a.emit("invoice.paid", invoice.clone(), None);
        a.emit("invoice.payment_succeeded", invoice, None);
    } else {
        a.emit("invoice.payment_failed", invoice, None);
    }
    a.emit("customer.subscription.updated", new.clone(), previous(&old, &new));
    Ok(new)
}
