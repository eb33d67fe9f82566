//! Stripe objects as the API renders them. Every field async-stripe 1.0 requires (non-`Option` in its generated
//! types) is present; optional ones Stripe sends as `null` are sent as `null`.

use serde_json::{Value, json};
use time::{Date, Month, OffsetDateTime};

use super::API_VERSION;
use super::state::{new_id, now};

/// A Stripe list: `{"object": "list", "data", "has_more", "url"}`.
pub(crate) fn list(data: Vec<Value>, has_more: bool, url: &str) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

pub(crate) fn customer(email: Option<&str>, name: Option<&str>, description: Option<&str>, metadata: Value) -> Value {
    json!({
        "id": new_id("cus_", 14),
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": now(),
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": description,
        "discount": null,
        "email": email,
        "invoice_prefix": new_id("", 8).to_uppercase(),
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": false,
        "metadata": metadata,
        "name": name,
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    })
}

pub(crate) fn product(name: &str, created: i64) -> Value {
    json!({
        "id": new_id("prod_", 14),
        "object": "product",
        "active": true,
        "created": created,
        "default_price": null,
        "description": null,
        "images": [],
        "livemode": false,
        "marketing_features": [],
        "metadata": {},
        "name": name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "type": "service",
        "unit_label": null,
        "updated": created,
        "url": null,
    })
}

pub(crate) struct PriceSpec {
    pub product: String,
    pub currency: String,
    pub unit_amount: Option<i64>,
    /// (interval, interval_count) of a recurring price; `None` is a one-time price.
    pub interval: Option<(String, u64)>,
    pub usage_type: String,
    pub meter: Option<String>,
    pub nickname: Option<String>,
    pub lookup_key: Option<String>,
    pub metadata: Value,
    pub created: i64,
}

pub(crate) fn price(spec: PriceSpec) -> Value {
    let recurring = spec.interval.as_ref().map(|(interval, count)| {
        json!({
            "interval": interval,
            "interval_count": count,
            "meter": spec.meter,
            "trial_period_days": null,
            "usage_type": spec.usage_type,
        })
    });
    json!({
        "id": new_id("price_", 24),
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": spec.created,
        "currency": spec.currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": spec.lookup_key,
        "metadata": spec.metadata,
        "nickname": spec.nickname,
        "product": spec.product,
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if spec.interval.is_some() { "recurring" } else { "one_time" },
        "unit_amount": spec.unit_amount,
        "unit_amount_decimal": spec.unit_amount.map(|a| a.to_string()),
    })
}

/// The legacy `plan` Stripe still renders beside a subscription item's price.
fn plan(price: &Value) -> Value {
    json!({
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": price["recurring"]["interval"],
        "interval_count": price["recurring"]["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": price["recurring"]["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": price["recurring"]["usage_type"],
    })
}

pub(crate) fn is_metered(price: &Value) -> bool {
    price["recurring"]["usage_type"] == "metered"
}

/// A subscription item; the billing period lives here (since API version 2025-03-31 it is no longer on the
/// subscription itself).
pub(crate) fn subscription_item(
    subscription: &str,
    price: &Value,
    quantity: Option<u64>,
    start: i64,
    end: i64,
) -> Value {
    json!({
        "id": new_id("si_", 14),
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": start,
        "current_period_end": end,
        "current_period_start": start,
        "discounts": [],
        "metadata": {},
        "plan": plan(price),
        "price": price,
        "quantity": if is_metered(price) { None } else { quantity },
        "subscription": subscription,
        "tax_rates": [],
    })
}

pub(crate) struct SubscriptionSpec<'a> {
    pub customer: &'a str,
    /// (price, quantity) per item.
    pub items: Vec<(Value, Option<u64>)>,
    pub metadata: Value,
    pub trial_days: Option<i64>,
    pub start: i64,
}

pub(crate) fn subscription(spec: SubscriptionSpec<'_>) -> Value {
    let id = new_id("sub_", 24);
    let first = spec.items.first().map(|(p, _)| p.clone()).unwrap_or(Value::Null);
    let trial_end = spec.trial_days.map(|d| spec.start + d * 86_400);
    let end = trial_end.unwrap_or_else(|| period_end(spec.start, &first));
    let items: Vec<Value> = spec.items.iter().map(|(p, q)| subscription_item(&id, p, *q, spec.start, end)).collect();
    let head = json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": trial_end.unwrap_or(spec.start),
        "billing_mode": {"flexible": null, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "collection_method": "charge_automatically",
        "created": spec.start,
        "currency": first["currency"],
        "customer": spec.customer,
        "days_until_due": null,
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "ended_at": null,
    });
    let rest = json!({
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": items,
            "has_more": false,
            "total_count": spec.items.len(),
            "url": format!("/v1/subscription_items?subscription={id}"),
        },
        "latest_invoice": null,
        "livemode": false,
        "metadata": spec.metadata,
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off"},
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": spec.start,
        "status": if trial_end.is_some() { "trialing" } else { "active" },
        "test_clock": null,
        "transfer_data": null,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": trial_end.map(|_| spec.start),
    });
    merge(head, rest)
}

/// `a` with `b`'s keys added (for objects too big for one `json!`).
pub(crate) fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(m), Value::Object(more)) = (a.as_object_mut(), b) {
        m.extend(more);
    }
    a
}

/// The end of the billing period that starts at `start` for a recurring price (calendar months and years).
pub(crate) fn period_end(start: i64, price: &Value) -> i64 {
    let interval = price["recurring"]["interval"].as_str().unwrap_or("month");
    let count = price["recurring"]["interval_count"].as_i64().unwrap_or(1).max(1);
    match interval {
        "day" => start + count * 86_400,
        "week" => start + count * 7 * 86_400,
        "year" => add_months(start, 12 * count),
        _ => add_months(start, count),
    }
}

/// `t` plus `months` calendar months, the day clamped to the target month's length (Jan 31 -> Feb 28).
pub(crate) fn add_months(t: i64, months: i64) -> i64 {
    let Ok(at) = OffsetDateTime::from_unix_timestamp(t) else {
        return t + months * 30 * 86_400;
    };
    let total = at.year() as i64 * 12 + (at.month() as i64 - 1) + months;
    let (year, month0) = (total.div_euclid(12) as i32, total.rem_euclid(12) as u8);
    let Ok(month) = Month::try_from(month0 + 1) else {
        return t + months * 30 * 86_400;
    };
    let day = at.day().min(time::util::days_in_month(month, year));
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => at.replace_date(date).unix_timestamp(),
        Err(_) => t + months * 30 * 86_400,
    }
}

pub(crate) struct InvoiceSpec<'a> {
    pub subscription: &'a Value,
    pub customer_email: Option<String>,
    pub billing_reason: &'a str,
    pub paid: bool,
    pub base_url: &'a str,
}

/// The invoice of one billing period of `subscription` (its items' current period), paid or open.
pub(crate) fn invoice(spec: InvoiceSpec<'_>) -> Value {
    let sub = spec.subscription;
    let t = now();
    let id = new_id("in_", 24);
    let trialing = sub["status"] == "trialing";
    let items = sub["items"]["data"].as_array().cloned().unwrap_or_default();
    let lines: Vec<Value> = items
        .iter()
        .map(|item| {
            let unit = item["price"]["unit_amount"].as_i64().unwrap_or(0);
            let qty = item["quantity"].as_i64().unwrap_or(0);
            let amount = if trialing || is_metered(&item["price"]) { 0 } else { unit * qty };
            json!({
                "id": new_id("il_", 24),
                "object": "line_item",
                "amount": amount,
                "currency": item["price"]["currency"],
                "description": format!("{} × {}", qty, item["price"]["nickname"].as_str().unwrap_or("plan")),
                "discount_amounts": [],
                "discountable": true,
                "discounts": [],
                "invoice": id,
                "livemode": false,
                "metadata": {},
                "period": {"end": item["current_period_end"], "start": item["current_period_start"]},
                "pretax_credit_amounts": [],
                "quantity": item["quantity"],
                "subtotal": amount,
                "taxes": [],
            })
        })
        .collect();
    let total: i64 = lines.iter().map(|l| l["amount"].as_i64().unwrap_or(0)).sum();
    let period = items.first().map(|i| (i["current_period_start"].clone(), i["current_period_end"].clone()));
    let (start, end) = period.unwrap_or((json!(t), json!(t)));
    let head = json!({
        "id": id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripe sandbox",
        "amount_due": total,
        "amount_overpaid": 0,
        "amount_paid": if spec.paid { total } else { 0 },
        "amount_remaining": if spec.paid { 0 } else { total },
        "amount_shipping": 0,
        "attempt_count": 1,
        "attempted": true,
        "auto_advance": !spec.paid,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
        "billing_reason": spec.billing_reason,
        "collection_method": "charge_automatically",
        "created": t,
        "currency": sub["currency"],
        "customer": sub["customer"],
        "customer_email": spec.customer_email,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "hosted_invoice_url": format!("{}/invoices/{id}", spec.base_url),
        "issuer": {"type": "self"},
        "lines": {"object": "list", "data": lines, "has_more": false, "total_count": items.len(), "url": format!("/v1/invoices/{id}/lines")},
        "livemode": false,
        "metadata": {},
    });
    let rest = json!({
        "next_payment_attempt": if spec.paid { None } else { Some(t + 3 * 86_400) },
        "number": null,
        "parent": {
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]},
        },
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "period_end": end,
        "period_start": start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "starting_balance": 0,
        "status": if spec.paid { "paid" } else { "open" },
        "status_transitions": {
            "finalized_at": t,
            "marked_uncollectible_at": null,
            "paid_at": if spec.paid { Some(t) } else { None },
            "voided_at": null,
        },
        "subtotal": total,
        "total": total,
    });
    merge(head, rest)
}

pub(crate) fn event(kind: &str, object: Value, previous: Option<Value>, pending_webhooks: usize) -> Value {
    let mut data = json!({"object": object});
    if let Some(previous) = previous {
        data["previous_attributes"] = previous;
    }
    json!({
        "id": new_id("evt_", 24),
        "object": "event",
        "api_version": API_VERSION,
        "created": now(),
        "data": data,
        "livemode": false,
        "pending_webhooks": pending_webhooks,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    })
}

pub(crate) fn meter_event(event_name: &str, identifier: &str, payload: &Value, timestamp: i64, created: i64) -> Value {
    json!({
        "object": "billing.meter_event",
        "created": created,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": false,
        "payload": payload,
        "timestamp": timestamp,
    })
}

/// A billing meter keyed by the customer id in `payload[stripe_customer_id]`, valued by `payload[value]`.
pub(crate) fn meter(display_name: &str, event_name: &str, formula: &str, created: i64) -> Value {
    json!({
        "id": new_id("mtr_", 24),
        "object": "billing.meter",
        "created": created,
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": null,
        "livemode": false,
        "status": "active",
        "status_transitions": {"deactivated_at": null},
        "updated": created,
        "value_settings": {"event_payload_key": "value"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_after_january_31_is_the_last_day_of_february() {
        // 2026-01-31T12:00:00Z -> 2026-02-28T12:00:00Z
        assert_eq!(add_months(1_769_860_800, 1), 1_772_280_000);
        // 2026-03-15T00:00:00Z -> 2027-03-15T00:00:00Z
        assert_eq!(add_months(1_773_532_800, 12), 1_805_068_800);
    }
}
