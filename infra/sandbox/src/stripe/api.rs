//! The `/v1` API: one request path (faults, secret key -> account, form parsing, `Idempotency-Key`) in front of
//! handlers that read and change one account's objects.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::error::{ApiResult, StripeError};
use super::state::{Account, Endpoint, Fault, MeterRecord, Saved, find, find_mut, key_suffix, new_id, now};
use super::{API_VERSION, App, billing, form, objects, webhooks};

/// What a handler gets: the caller's parameters (form body, or query for GET and DELETE) and where hosted pages live.
pub(crate) struct Req {
    pub params: Value,
    pub base_url: String,
}

/// How long a `hang` holds a request before answering 504; clients time out long before.
const HANG_HOLD: Duration = Duration::from_secs(600);

/// How long a saved idempotent response is replayed (Stripe: at least 24 hours).
const IDEMPOTENCY_TTL: i64 = 24 * 3600;

/// The secret key of a request: `Authorization: Bearer KEY` or HTTP Basic with the key as the user name.
fn secret_key(headers: &HeaderMap) -> ApiResult<String> {
    let missing = || {
        StripeError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using \
             Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    };
    let raw = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(missing)?;
    let key = if let Some(bearer) = raw.strip_prefix("Bearer ") {
        bearer.trim().to_string()
    } else if let Some(basic) = raw.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| StripeError::unauthorized("Invalid HTTP Basic credentials: expected base64 of 'KEY:'."))?;
        decoded.split(':').next().unwrap_or_default().to_string()
    } else {
        return Err(StripeError::unauthorized(
            "Invalid Authorization header: use 'Bearer sk_test_...' or HTTP Basic with the key as the user name.",
        ));
    };
    if key.is_empty() {
        return Err(missing());
    }
    let masked = format!("{}****{}", key.chars().take(8).collect::<String>(), key_suffix(&key));
    if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
        return Err(StripeError::unauthorized(format!(
            "Invalid API Key provided: {masked}. The Stripe sandbox takes test keys (sk_test_...) only."
        )));
    }
    let well_formed = ["sk_test_", "rk_test_"].iter().any(|p| {
        key.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    });
    if !well_formed {
        return Err(StripeError::unauthorized(format!("Invalid API Key provided: {masked}")));
    }
    Ok(key)
}

fn body_hash(method: &Method, path: &str, body: &[u8]) -> (String, String) {
    (format!("{method} {path}"), super::hex(&Sha256::digest(body)))
}

/// Serves one API request: faults, auth, parameters, idempotency, then `handler` on the caller's account, then the
/// webhook deliveries the handler queued.
pub(crate) async fn run(
    app: &App,
    headers: &HeaderMap,
    method: Method,
    uri: &Uri,
    body: Bytes,
    handler: impl FnOnce(&mut Account, &Req) -> ApiResult<Value>,
) -> Response {
    let request_id = new_id("req_", 14);
    let (fault, slow_ms) = app.with(|s| {
        s.requests += 1;
        (s.next_fault(), s.faults.slow_ms)
    });
    if slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    }
    let outcome = match fault {
        Fault::Hang => {
            tokio::time::sleep(HANG_HOLD).await;
            Err(StripeError::new(StatusCode::GATEWAY_TIMEOUT, "api_error", "sandbox fault: the request hung"))
        }
        Fault::RateLimited => Err(StripeError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        )
        .code("rate_limit")),
        Fault::ServerError => {
            let mut e = StripeError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!("An unknown error occurred (sandbox fault). Request id: {request_id}"),
            );
            e.should_retry = Some(true);
            Err(e)
        }
        Fault::None => Ok(()),
    };
    let response = match outcome {
        Err(e) => (e.into_response(), false),
        Ok(()) => serve(app, headers, &method, uri, &body, handler),
    };
    let (mut res, replayed) = response;
    let status = res.status().as_u16();
    let deliveries = app.with(|s| {
        *s.by_status.entry(status).or_default() += 1;
        s.take_outbox()
    });
    webhooks::dispatch(app, deliveries);
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v);
    }
    h.insert("stripe-version", HeaderValue::from_static(API_VERSION));
    if let Some(key) = headers.get("idempotency-key") {
        h.insert("idempotency-key", key.clone());
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

fn serve(
    app: &App,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    handler: impl FnOnce(&mut Account, &Req) -> ApiResult<Value>,
) -> (Response, bool) {
    let key = match secret_key(headers) {
        Ok(key) => key,
        Err(e) => return (e.into_response(), false),
    };
    let raw: &[u8] = if method == Method::POST { body } else { uri.query().unwrap_or_default().as_bytes() };
    let params = match form::parse(raw) {
        Ok(p) => p,
        Err(e) => return (StripeError::invalid(e.to_string()).into_response(), false),
    };
    let idempotency_key = if method == Method::POST {
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string)
    } else {
        None
    };
    let req = Req { params, base_url: app.base_url() };
    app.with(|s| {
        if s.revoked.contains(&key) {
            let masked = format!("{}****{}", key.chars().take(8).collect::<String>(), key_suffix(&key));
            return (StripeError::unauthorized(format!("Invalid API Key provided: {masked}")).into_response(), false);
        }
        let account = s.account_for_key(&key);
        let fingerprint = body_hash(method, uri.path(), body);
        if let Some(idem) = &idempotency_key {
            let t = now();
            account.idempotency.retain(|_, saved| t - saved.at < IDEMPOTENCY_TTL);
            if let Some(saved) = account.idempotency.get(idem) {
                if saved.request != fingerprint.0 || saved.body_hash != fingerprint.1 {
                    let e = StripeError::new(
                        StatusCode::BAD_REQUEST,
                        "idempotency_error",
                        format!(
                            "Keys for idempotent requests can only be used with the same parameters they were first \
                             used with. Try using a key other than '{idem}' if you meant to execute a different \
                             request."
                        ),
                    );
                    return (e.into_response(), false);
                }
                let status = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
                return ((status, axum::Json(saved.body.clone())).into_response(), true);
            }
        }
        match handler(account, &req) {
            Ok(body) => {
                if let Some(idem) = idempotency_key {
                    account.idempotency.insert(
                        idem,
                        Saved {
                            request: fingerprint.0,
                            body_hash: fingerprint.1,
                            status: 200,
                            body: body.clone(),
                            at: now(),
                        },
                    );
                }
                (axum::Json(body).into_response(), false)
            }
            Err(e) => {
                // Validation errors are not saved: a corrected retry with the same key runs (as at Stripe).
                account.outbox.clear();
                (e.into_response(), false)
            }
        }
    })
}

// ---- parameter helpers ----

/// A string parameter; an empty string counts as absent.
pub(crate) fn text<'a>(p: &'a Value, name: &str) -> ApiResult<Option<&'a str>> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(StripeError::bad_param(
            name,
            "parameter_invalid_string",
            format!("Invalid string: {name} must be a string, not an object or array."),
        )),
    }
}

pub(crate) fn required<'a>(p: &'a Value, name: &str) -> ApiResult<&'a str> {
    text(p, name)?.ok_or_else(|| StripeError::missing(name))
}

pub(crate) fn integer(p: &Value, name: &str) -> ApiResult<Option<i64>> {
    match text(p, name)? {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| StripeError::bad_param(name, "parameter_invalid_integer", format!("Invalid integer: {s}"))),
    }
}

pub(crate) fn boolean(p: &Value, name: &str) -> ApiResult<Option<bool>> {
    match text(p, name)? {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(s) => Err(StripeError::bad_param(name, "parameter_invalid_boolean", format!("Invalid boolean: {s}"))),
    }
}

/// `metadata[...]` as an object of strings (absent: `{}`).
fn metadata_param(p: &Value, name: &str) -> ApiResult<Map<String, Value>> {
    match p.get(name) {
        None => Ok(Map::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Map::new()),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Ok(m.clone()),
        Some(_) => Err(StripeError::bad_param(
            name,
            "parameter_invalid_object",
            format!("Invalid object: {name} must be a hash of strings"),
        )),
    }
}

pub(crate) fn metadata(p: &Value, name: &str) -> ApiResult<Value> {
    metadata_param(p, name).map(Value::Object)
}

/// Applies a metadata update as Stripe does: keys set to "" are removed, `metadata=""` clears all.
pub(crate) fn merge_metadata(current: &mut Value, p: &Value) -> ApiResult<()> {
    match p.get("metadata") {
        None => Ok(()),
        Some(Value::String(s)) if s.is_empty() => {
            *current = json!({});
            Ok(())
        }
        Some(_) => {
            let update = metadata_param(p, "metadata")?;
            if !current.is_object() {
                *current = json!({});
            }
            if let Some(m) = current.as_object_mut() {
                for (k, v) in update {
                    if v == "" {
                        m.remove(&k);
                    } else {
                        m.insert(k, v);
                    }
                }
            }
            Ok(())
        }
    }
}

fn strings(p: &Value, name: &str) -> Vec<String> {
    match p.get(name) {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The top-level keys whose values changed, with their old values (an event's `previous_attributes`).
pub(crate) fn previous(old: &Value, new: &Value) -> Option<Value> {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else { return None };
    let changed: Map<String, Value> =
        o.iter().filter(|(k, v)| n.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    (!changed.is_empty()).then_some(Value::Object(changed))
}

/// Drops the sandbox's private keys (`_...`) from an object.
pub(crate) fn public(v: &Value) -> Value {
    match v.as_object() {
        Some(m) => {
            Value::Object(m.iter().filter(|(k, _)| !k.starts_with('_')).map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        None => v.clone(),
    }
}

/// A page of `items` (oldest first as stored; lists are newest first) with `limit`, `starting_after`, `ending_before`.
fn page(items: Vec<Value>, p: &Value, url: &str) -> ApiResult<Value> {
    let limit = integer(p, "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(StripeError::bad_param(
            "limit",
            "parameter_invalid_integer",
            "Invalid limit: must be between 1 and 100",
        ));
    }
    let mut items: Vec<Value> = items.into_iter().rev().collect();
    if let Some(after) = text(p, "starting_after")? {
        let i = items
            .iter()
            .position(|o| o["id"] == after)
            .ok_or_else(|| StripeError::no_such("object", after, Some("starting_after")))?;
        items.drain(..=i);
    } else if let Some(before) = text(p, "ending_before")? {
        let i = items
            .iter()
            .position(|o| o["id"] == before)
            .ok_or_else(|| StripeError::no_such("object", before, Some("ending_before")))?;
        items.truncate(i);
        let skip = items.len().saturating_sub(limit as usize);
        items.drain(..skip);
    }
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(objects::list(items.iter().map(public).collect(), has_more, url))
}

/// Replaces ids with objects for `expand[]` entries this sandbox knows (customer, subscription, invoice,
/// latest_invoice, line_items of a Checkout session).
fn expand(account: &Account, mut obj: Value, p: &Value) -> Value {
    for field in strings(p, "expand") {
        let id = obj[&field].as_str().map(str::to_string);
        let found = match (field.as_str(), id) {
            ("customer", Some(id)) => find(&account.customers, &id).cloned(),
            ("subscription", Some(id)) => find(&account.subscriptions, &id).cloned(),
            ("invoice" | "latest_invoice", Some(id)) => find(&account.invoices, &id).cloned(),
            ("line_items", _) => obj
                .get("_line_items")
                .map(|items| checkout_line_items(account, items, obj["id"].as_str().unwrap_or_default())),
            _ => None,
        };
        if let Some(found) = found {
            obj[&field] = found;
        }
    }
    public(&obj)
}

fn checkout_line_items(account: &Account, items: &Value, session: &str) -> Value {
    let data: Vec<Value> = items
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|item| {
            let price = find(&account.prices, item["price"].as_str()?)?.clone();
            let qty = item["quantity"].as_i64().unwrap_or(1);
            let amount = if objects::is_metered(&price) { 0 } else { price["unit_amount"].as_i64().unwrap_or(0) * qty };
            Some(json!({
                "id": new_id("li_", 24),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": price["currency"],
                "description": price["nickname"],
                "price": price,
                "quantity": if objects::is_metered(&price) { None } else { Some(qty) },
            }))
        })
        .collect();
    objects::list(data, false, &format!("/v1/checkout/sessions/{session}/line_items"))
}

// ---- handlers ----

macro_rules! api {
    ($name:ident, |$acct:ident, $req:ident| $body:expr) => {
        pub(crate) async fn $name(
            State(app): State<App>,
            headers: HeaderMap,
            method: Method,
            uri: Uri,
            body: Bytes,
        ) -> Response {
            run(&app, &headers, method, &uri, body, |$acct: &mut Account, $req: &Req| $body).await
        }
    };
    ($name:ident, $id:ident, |$acct:ident, $req:ident| $body:expr) => {
        pub(crate) async fn $name(
            State(app): State<App>,
            Path($id): Path<String>,
            headers: HeaderMap,
            method: Method,
            uri: Uri,
            body: Bytes,
        ) -> Response {
            run(&app, &headers, method, &uri, body, |$acct: &mut Account, $req: &Req| $body).await
        }
    };
}

fn live_customer<'a>(a: &'a Account, id: &str, param: Option<&str>) -> ApiResult<&'a Value> {
    find(&a.customers, id).filter(|c| c["deleted"] != true).ok_or_else(|| StripeError::no_such("customer", id, param))
}

api!(create_customer, |a, r| {
    let p = &r.params;
    let c = objects::customer(text(p, "email")?, text(p, "name")?, text(p, "description")?, metadata(p, "metadata")?);
    a.customers.push(c.clone());
    a.emit("customer.created", c.clone(), None);
    Ok(c)
});

api!(list_customers, |a, r| {
    let email = text(&r.params, "email")?;
    let all: Vec<Value> =
        a.customers.iter().filter(|c| c["deleted"] != true && email.is_none_or(|e| c["email"] == e)).cloned().collect();
    page(all, &r.params, "/v1/customers")
});

api!(retrieve_customer, id, |a, r| {
    let c = find(&a.customers, &id).ok_or_else(|| StripeError::no_such("customer", &id, Some("id")))?;
    Ok(expand(a, c.clone(), &r.params))
});

api!(update_customer, id, |a, r| {
    let p = &r.params;
    live_customer(a, &id, Some("id"))?;
    let (email, name, description) = (text(p, "email")?, text(p, "name")?, text(p, "description")?);
    let c = find_mut(&mut a.customers, &id).ok_or_else(|| StripeError::no_such("customer", &id, Some("id")))?;
    let old = c.clone();
    for (field, value) in [("email", email), ("name", name), ("description", description)] {
        if p.get(field).is_some() {
            c[field] = json!(value);
        }
    }
    merge_metadata(&mut c["metadata"], p)?;
    let new = c.clone();
    if let Some(prev) = previous(&old, &new) {
        a.emit("customer.updated", new.clone(), Some(prev));
    }
    Ok(new)
});

api!(delete_customer, id, |a, _r| {
    live_customer(a, &id, Some("id"))?;
    let subs: Vec<String> = a
        .subscriptions
        .iter()
        .filter(|s| s["customer"] == id.as_str() && s["status"] != "canceled")
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    for sub in subs {
        billing::cancel_now(a, &sub, "cancellation_requested")?;
    }
    let deleted = json!({"id": id, "object": "customer", "deleted": true});
    let c = find_mut(&mut a.customers, &id).ok_or_else(|| StripeError::no_such("customer", &id, Some("id")))?;
    let last = std::mem::replace(c, deleted.clone());
    a.emit("customer.deleted", last, None);
    Ok(deleted)
});

api!(create_price, |a, r| {
    let p = &r.params;
    let currency = required(p, "currency")?.to_ascii_lowercase();
    let unit_amount = integer(p, "unit_amount")?;
    if unit_amount.is_some_and(|u| u < 0) {
        return Err(StripeError::bad_param(
            "unit_amount",
            "parameter_invalid_integer",
            "unit_amount must be 0 or more",
        ));
    }
    let product = match (text(p, "product")?, p.get("product_data")) {
        (Some(id), _) => id.to_string(),
        (None, Some(data)) => {
            let name = required(data, "name").map_err(|_| StripeError::missing("product_data[name]"))?;
            let product = objects::product(name, now());
            let id = product["id"].as_str().unwrap_or_default().to_string();
            a.products.push(product);
            id
        }
        (None, None) => return Err(StripeError::missing("product")),
    };
    let recurring = p.get("recurring").filter(|v| v.is_object());
    let (interval, usage_type, meter) = match recurring {
        Some(rec) => {
            let interval = required(rec, "interval").map_err(|_| StripeError::missing("recurring[interval]"))?;
            if !["day", "week", "month", "year"].contains(&interval) {
                return Err(StripeError::bad_param(
                    "recurring[interval]",
                    "parameter_invalid_string",
                    "Invalid recurring[interval]: must be one of day, week, month, or year",
                ));
            }
            let count = integer(rec, "interval_count").map_err(|e| e.param("recurring[interval_count]"))?.unwrap_or(1);
            if count < 1 {
                return Err(StripeError::bad_param(
                    "recurring[interval_count]",
                    "parameter_invalid_integer",
                    "recurring[interval_count] must be at least 1",
                ));
            }
            let usage = text(rec, "usage_type")?.unwrap_or("licensed");
            if !["licensed", "metered"].contains(&usage) {
                return Err(StripeError::bad_param(
                    "recurring[usage_type]",
                    "parameter_invalid_string",
                    "Invalid recurring[usage_type]: must be one of licensed or metered",
                ));
            }
            let meter = text(rec, "meter")?.map(str::to_string);
            (Some((interval.to_string(), count as u64)), usage.to_string(), meter)
        }
        None => (None, "licensed".to_string(), None),
    };
    if unit_amount.is_none() && usage_type != "metered" {
        return Err(StripeError::missing("unit_amount"));
    }
    let lookup_key = text(p, "lookup_key")?.map(str::to_string);
    if let Some(lk) = &lookup_key
        && a.prices.iter().any(|pr| pr["lookup_key"] == lk.as_str())
    {
        return Err(StripeError::bad_param(
            "lookup_key",
            "lookup_key_already_exists",
            format!("A price (`{lk}`) already uses that lookup key."),
        ));
    }
    let price = objects::price(objects::PriceSpec {
        product,
        currency,
        unit_amount,
        interval,
        usage_type,
        meter,
        nickname: text(p, "nickname")?.map(str::to_string),
        lookup_key,
        metadata: metadata(p, "metadata")?,
        created: now(),
    });
    a.prices.push(price.clone());
    a.emit("price.created", price.clone(), None);
    Ok(price)
});

api!(list_prices, |a, r| {
    let p = &r.params;
    let active = boolean(p, "active")?;
    let product = text(p, "product")?;
    let kind = text(p, "type")?;
    let lookup_keys = strings(p, "lookup_keys");
    let all: Vec<Value> = a
        .prices
        .iter()
        .filter(|pr| active.is_none_or(|x| pr["active"] == x))
        .filter(|pr| product.is_none_or(|x| pr["product"] == x))
        .filter(|pr| kind.is_none_or(|x| pr["type"] == x))
        .filter(|pr| lookup_keys.is_empty() || lookup_keys.iter().any(|k| pr["lookup_key"] == k.as_str()))
        .cloned()
        .collect();
    page(all, p, "/v1/prices")
});

api!(retrieve_price, id, |a, _r| find(&a.prices, &id).cloned().ok_or_else(|| StripeError::no_such(
    "price",
    &id,
    Some("price")
)));

api!(update_price, id, |a, r| {
    let p = &r.params;
    let active = boolean(p, "active")?;
    let nickname = text(p, "nickname")?.map(str::to_string);
    let lookup_key = text(p, "lookup_key")?.map(str::to_string);
    let pr = find_mut(&mut a.prices, &id).ok_or_else(|| StripeError::no_such("price", &id, Some("price")))?;
    let old = pr.clone();
    if let Some(x) = active {
        pr["active"] = json!(x);
    }
    if p.get("nickname").is_some() {
        pr["nickname"] = json!(nickname);
    }
    if p.get("lookup_key").is_some() {
        pr["lookup_key"] = json!(lookup_key);
    }
    merge_metadata(&mut pr["metadata"], p)?;
    let new = pr.clone();
    if let Some(prev) = previous(&old, &new) {
        a.emit("price.updated", new.clone(), Some(prev));
    }
    Ok(new)
});

api!(create_checkout_session, |a, r| billing::create_checkout_session(a, r));

api!(list_checkout_sessions, |a, r| {
    let p = &r.params;
    let customer = text(p, "customer")?;
    let subscription = text(p, "subscription")?;
    let all: Vec<Value> = a
        .sessions
        .iter()
        .filter(|s| customer.is_none_or(|x| s["customer"] == x) && subscription.is_none_or(|x| s["subscription"] == x))
        .cloned()
        .collect();
    page(all, p, "/v1/checkout/sessions")
});

api!(retrieve_checkout_session, id, |a, r| {
    let s = find(&a.sessions, &id).ok_or_else(|| StripeError::no_such("checkout.session", &id, Some("session")))?;
    Ok(expand(a, s.clone(), &r.params))
});

api!(expire_checkout_session, id, |a, _r| {
    let s =
        find_mut(&mut a.sessions, &id).ok_or_else(|| StripeError::no_such("checkout.session", &id, Some("session")))?;
    if s["status"] != "open" {
        return Err(StripeError::invalid(format!(
            "Only Checkout Sessions with a status of `open` can be expired; this one is `{}`.",
            s["status"].as_str().unwrap_or_default()
        ))
        .code("checkout_session_not_open"));
    }
    s["status"] = json!("expired");
    s["url"] = Value::Null;
    let out = public(s);
    a.emit("checkout.session.expired", out.clone(), None);
    Ok(out)
});

api!(create_portal_session, |a, r| {
    let p = &r.params;
    let customer = required(p, "customer")?;
    live_customer(a, customer, Some("customer"))?;
    let id = new_id("bps_", 24);
    let session = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": "bpc_sandboxdefault0000000000",
        "created": now(),
        "customer": customer,
        "flow": null,
        "livemode": false,
        "locale": null,
        "on_behalf_of": null,
        "return_url": text(p, "return_url")?,
        "url": format!("{}/portal/{id}", r.base_url),
    });
    a.portal_sessions.push(session.clone());
    Ok(session)
});

api!(list_subscriptions, |a, r| {
    let p = &r.params;
    let customer = text(p, "customer")?;
    let price = text(p, "price")?;
    let status = text(p, "status")?;
    let all: Vec<Value> = a
        .subscriptions
        .iter()
        .filter(|s| customer.is_none_or(|x| s["customer"] == x))
        .filter(|s| match status {
            None => s["status"] != "canceled",
            Some("all") => true,
            Some(x) => s["status"] == x,
        })
        .filter(|s| {
            price.is_none_or(|x| {
                s["items"]["data"].as_array().is_some_and(|items| items.iter().any(|i| i["price"]["id"] == x))
            })
        })
        .cloned()
        .collect();
    page(all, p, "/v1/subscriptions")
});

api!(retrieve_subscription, id, |a, r| {
    let s = find(&a.subscriptions, &id).ok_or_else(|| StripeError::no_such("subscription", &id, Some("id")))?;
    Ok(expand(a, s.clone(), &r.params))
});

api!(update_subscription, id, |a, r| billing::update_subscription(a, &id, &r.params));

api!(cancel_subscription, id, |a, _r| billing::cancel_now(a, &id, "cancellation_requested"));

api!(retrieve_invoice, id, |a, _r| find(&a.invoices, &id).cloned().ok_or_else(|| StripeError::no_such(
    "invoice",
    &id,
    Some("invoice")
)));

/// Meter events may be 35 days old at most and 5 minutes ahead at most.
const METER_PAST: i64 = 35 * 86_400;
const METER_FUTURE: i64 = 5 * 60;
/// Identifiers are unique over a rolling 24 hours.
const METER_DEDUP: i64 = 24 * 3600;

api!(create_meter_event, |a, r| {
    let p = &r.params;
    let event_name = required(p, "event_name")?;
    if event_name.len() > 100 {
        return Err(StripeError::bad_param(
            "event_name",
            "parameter_invalid_string",
            "event_name must be at most 100 characters",
        ));
    }
    let payload = match p.get("payload") {
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Value::Object(m.clone()),
        Some(_) => {
            return Err(StripeError::bad_param(
                "payload",
                "parameter_invalid_object",
                "Invalid object: payload must be a hash of strings",
            ));
        }
        None => return Err(StripeError::missing("payload")),
    };
    let customer =
        required(&payload, "stripe_customer_id").map_err(|_| StripeError::missing("payload[stripe_customer_id]"))?;
    let value = required(&payload, "value").map_err(|_| StripeError::missing("payload[value]"))?;
    if value.parse::<f64>().map_or(true, |v| !v.is_finite()) {
        return Err(StripeError::bad_param(
            "payload[value]",
            "parameter_invalid_string",
            format!("Invalid payload[value]: '{value}' is not a number"),
        ));
    }
    let t = now();
    let timestamp = integer(p, "timestamp")?.unwrap_or(t);
    if timestamp < t - METER_PAST {
        return Err(StripeError::bad_param(
            "timestamp",
            "timestamp_too_far_in_past",
            "Timestamp must be within the past 35 calendar days.",
        ));
    }
    if timestamp > t + METER_FUTURE {
        return Err(StripeError::bad_param(
            "timestamp",
            "timestamp_too_far_in_future",
            "Timestamp must be no more than 5 minutes in the future.",
        ));
    }
    let identifier = match text(p, "identifier")? {
        Some(id) if id.len() > 100 => {
            return Err(StripeError::bad_param(
                "identifier",
                "parameter_invalid_string",
                "identifier must be at most 100 characters",
            ));
        }
        Some(id) => id.to_string(),
        None => new_id("", 32),
    };
    // A repeat within the window is acknowledged with the first event and not counted again.
    if let Some(first) = a.meter_events.iter().find(|m| m.identifier == identifier && t - m.created < METER_DEDUP) {
        let first = objects::meter_event(
            &first.event_name,
            &first.identifier,
            &json!({"stripe_customer_id": first.customer, "value": first.value}),
            first.timestamp,
            first.created,
        );
        a.meter_duplicates.push(identifier);
        return Ok(first);
    }
    a.meter_events.push(MeterRecord {
        identifier: identifier.clone(),
        event_name: event_name.to_string(),
        customer: customer.to_string(),
        value: value.to_string(),
        timestamp,
        created: t,
    });
    Ok(objects::meter_event(event_name, &identifier, &payload, timestamp, t))
});

// `POST /v1/billing/meters`: a meter summing (or counting, or keeping the last of) one event name's values.
api!(create_meter, |a, r| {
    let p = &r.params;
    let display_name = required(p, "display_name")?;
    let event_name = required(p, "event_name")?;
    if a.meters.iter().any(|m| m["event_name"] == event_name && m["status"] == "active") {
        return Err(StripeError::bad_param(
            "event_name",
            "parameter_invalid_string",
            format!("An active meter with event_name '{event_name}' already exists."),
        ));
    }
    let formula = text(&p["default_aggregation"], "formula")?
        .ok_or_else(|| StripeError::missing("default_aggregation[formula]"))?;
    if !["sum", "count", "last"].contains(&formula) {
        return Err(StripeError::bad_param(
            "default_aggregation[formula]",
            "parameter_invalid_string",
            "Invalid default_aggregation[formula]: must be one of sum, count or last",
        ));
    }
    let meter = objects::meter(display_name, event_name, formula, now());
    a.meters.push(meter.clone());
    Ok(meter)
});

api!(list_meters, |a, r| {
    let status = text(&r.params, "status")?;
    let all: Vec<Value> = a.meters.iter().filter(|m| status.is_none_or(|s| m["status"] == s)).cloned().collect();
    page(all, &r.params, "/v1/billing/meters")
});

// `GET /v1/billing/meters/{id}/event_summaries`: the meter's aggregate for one customer over
// `[start_time, end_time)`, both on minute boundaries, as one summary (no grouping window).
api!(meter_event_summaries, id, |a, r| {
    let p = &r.params;
    let meter = find(&a.meters, &id).cloned().ok_or_else(|| StripeError::no_such("billing.meter", &id, Some("id")))?;
    let customer = required(p, "customer")?;
    let start = integer(p, "start_time")?.ok_or_else(|| StripeError::missing("start_time"))?;
    let end = integer(p, "end_time")?.ok_or_else(|| StripeError::missing("end_time"))?;
    for (name, t) in [("start_time", start), ("end_time", end)] {
        if t % 60 != 0 {
            return Err(StripeError::bad_param(
                name,
                "parameter_invalid_integer",
                format!("{name} must be aligned to minute boundaries"),
            ));
        }
    }
    if end <= start {
        return Err(StripeError::bad_param(
            "end_time",
            "parameter_invalid_integer",
            "end_time must be after start_time",
        ));
    }
    let values: Vec<f64> = a
        .meter_events
        .iter()
        .filter(|m| {
            m.event_name == meter["event_name"] && m.customer == customer && (start..end).contains(&m.timestamp)
        })
        .filter_map(|m| m.value.parse::<f64>().ok())
        .collect();
    let aggregated = match meter["default_aggregation"]["formula"].as_str() {
        Some("count") => values.len() as f64,
        Some("last") => values.last().copied().unwrap_or(0.0),
        _ => values.iter().sum(),
    };
    let summary = json!({
        "id": new_id("mtrusg_", 24),
        "object": "billing.meter_event_summary",
        "aggregated_value": aggregated,
        "end_time": end,
        "livemode": false,
        "meter": id,
        "start_time": start,
    });
    Ok(objects::list(vec![summary], false, &format!("/v1/billing/meters/{id}/event_summaries")))
});

api!(create_webhook_endpoint, |a, r| {
    let p = &r.params;
    let url = required(p, "url")?;
    let parsed = url::Url::parse(url)
        .map_err(|_| StripeError::bad_param("url", "url_invalid", format!("Invalid URL: {url}")))?;
    if !["http", "https"].contains(&parsed.scheme()) {
        return Err(StripeError::bad_param("url", "url_invalid", format!("Invalid URL: {url} (http or https only)")));
    }
    let events = strings(p, "enabled_events");
    if events.is_empty() {
        return Err(StripeError::missing("enabled_events"));
    }
    let secret = new_id("whsec_", 32);
    let object = json!({
        "id": new_id("we_", 24),
        "object": "webhook_endpoint",
        "api_version": text(p, "api_version")?,
        "application": null,
        "created": now(),
        "description": text(p, "description")?,
        "enabled_events": events,
        "livemode": false,
        "metadata": metadata(p, "metadata")?,
        "status": "enabled",
        "url": url,
    });
    a.endpoints.push(Endpoint { object: object.clone(), secret: secret.clone() });
    let mut shown = object;
    shown["secret"] = json!(secret);
    Ok(shown)
});

api!(list_webhook_endpoints, |a, r| page(
    a.endpoints.iter().map(|e| e.object.clone()).collect(),
    &r.params,
    "/v1/webhook_endpoints"
));

api!(retrieve_webhook_endpoint, id, |a, _r| a
    .endpoint(&id)
    .map(|e| e.object.clone())
    .ok_or_else(|| StripeError::no_such("webhook_endpoint", &id, Some("id"))));

api!(delete_webhook_endpoint, id, |a, _r| {
    let before = a.endpoints.len();
    a.endpoints.retain(|e| e.id() != id);
    if a.endpoints.len() == before {
        return Err(StripeError::no_such("webhook_endpoint", &id, Some("id")));
    }
    Ok(json!({"id": id, "object": "webhook_endpoint", "deleted": true}))
});

api!(list_events, |a, r| {
    let kind = text(&r.params, "type")?;
    let all: Vec<Value> = a.events.iter().filter(|e| kind.is_none_or(|k| e["type"] == k)).cloned().collect();
    page(all, &r.params, "/v1/events")
});

api!(retrieve_event, id, |a, _r| a.event(&id).cloned().ok_or_else(|| StripeError::no_such("event", &id, Some("id"))));

pub(crate) async fn not_found(method: Method, uri: Uri) -> Response {
    StripeError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("Unrecognized request URL ({method}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.", uri.path()),
    )
    .into_response()
}
