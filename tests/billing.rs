//! Billing end to end against moto and the Stripe sandbox: a tenant's own Stripe keys, checkout and the portal
//! for its users, and Stripe's signed webhooks moving users between plans, also when events come twice, out
//! of order, late, unsigned, stale, for no tenant, or while Stripe is down; and metered usage reported to
//! Stripe meters exactly once, through Stripe failures and redelivered batches, then reconciled.

use std::time::Duration;

use integration_tests::meter::{ANTHROPIC_KEY, claude, claude_body};
use integration_tests::{Auth, TestStack, TestTenant, start, start_with_env, user_token};
use serde_json::{Value, json};

/// A tenant billing through its own sandbox Stripe account.
struct Billed {
    t: TestTenant,
    user: String,
    stripe: String,
    key: String,
    account: String,
    /// The account's seeded prices by lookup key.
    prices: Value,
    /// The signing secret of the tenant's webhook endpoint.
    webhook_secret: String,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
}

async fn stripe_post(b: &Billed, path: &str, form: &[(&str, &str)]) -> Value {
    let r = http().post(format!("{}{path}", b.stripe)).bearer_auth(&b.key).form(form).send().await;
    let r = r.unwrap_or_else(|e| panic!("{path}: {e}"));
    r.json().await.unwrap_or(Value::Null)
}

/// A GET of the tenant's Stripe account (the API, with its secret key).
async fn stripe_get(b: &Billed, path: &str) -> Value {
    let r = http().get(format!("{}{path}", b.stripe)).bearer_auth(&b.key).send().await;
    r.unwrap_or_else(|e| panic!("{path}: {e}")).json().await.unwrap_or(Value::Null)
}

async fn sandbox(b: &Billed, path: &str, body: Value) -> Value {
    let r = http().post(format!("{}{path}", b.stripe)).json(&body).send().await;
    r.unwrap_or_else(|e| panic!("{path}: {e}")).json().await.unwrap_or(Value::Null)
}

async fn account_state(b: &Billed) -> Value {
    let url = format!("{}/sandbox/state?account={}", b.stripe, b.account);
    let state: Value = http().get(url).send().await.unwrap_or_else(|e| panic!("{e}")).json().await.unwrap_or_default();
    state["accounts"][0].clone()
}

/// A tenant with Stripe keys, a webhook endpoint at its URL, a default plan `free` and a plan `pro` paid by
/// the sandbox's `pro_monthly` price; one user.
async fn billed(s: &TestStack) -> Billed {
    let stripe = s.sandboxes["stripe"].clone();
    let acct = s.stripe_account().await;
    let key = acct["secret_key"].as_str().unwrap_or_default().to_owned();
    let t = s.tenant("Billing Co").await;
    let account = acct["account"].as_str().unwrap_or_default().into();
    let prices = acct["prices"].clone();
    let mut b = Billed { t, user: String::new(), stripe, key, account, prices, webhook_secret: String::new() };
    let auth = Auth::Bearer(&b.t.api_key);
    let url = format!("{}/webhooks/stripe/{}", s.base, b.t.id);
    let endpoint = stripe_post(&b, "/v1/webhook_endpoints", &[("url", &url), ("enabled_events[0]", "*")]).await;
    let whsec = endpoint["secret"].as_str().unwrap_or_default().to_owned();
    b.webhook_secret = whsec.clone();
    let body = json!({"secret_key": b.key, "webhook_secret": whsec});
    let r = s.call("PUT", "/v1/settings/stripe", auth.clone(), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["webhook_url"], url);
    let free = json!({"monthly_tokens": 1000, "requests_per_minute": 5});
    assert_eq!(s.call("PUT", "/v1/settings/plans/free", auth.clone(), Some(free)).await.status, 200);
    let pro = json!({"monthly_tokens": 1_000_000, "requests_per_minute": 60,
                     "stripe_price_id": acct["prices"]["pro_monthly"]});
    let r = s.call("PUT", "/v1/settings/plans/pro", auth.clone(), Some(pro)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("PUT", "/v1/settings/metering", auth.clone(), Some(json!({"default_plan": "free"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    b.user = s.user(&b.t, "subscriber").await["id"].as_str().unwrap_or_default().to_owned();
    b
}

async fn billing(s: &TestStack, b: &Billed) -> Value {
    let r = s.call("GET", &format!("/v1/users/{}/billing", b.user), Auth::Bearer(&b.t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Polls the user's billing until `plan` and `status` are as expected (webhooks arrive asynchronously).
async fn settles_on(s: &TestStack, b: &Billed, plan: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = billing(s, b).await;
        if last["plan"] == plan && last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the user never reached plan {plan}, status {status}: {last}");
}

/// Waits until every event of the account was delivered and acknowledged.
async fn delivered(b: &Billed) {
    for _ in 0..100 {
        let acct = account_state(b).await;
        let events = acct["events"].as_array().cloned().unwrap_or_default();
        let deliveries = acct["deliveries"].as_array().cloned().unwrap_or_default();
        let done = |id: &Value| deliveries.iter().any(|d| &d["event"] == id && d["status"] == 200);
        if events.iter().all(|e| done(&e["id"])) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the account's events were never all delivered");
}

async fn checkout(s: &TestStack, b: &Billed) -> Value {
    let body = json!({"plan": "pro", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let r =
        s.call("POST", &format!("/v1/users/{}/billing/checkout", b.user), Auth::Bearer(&b.t.api_key), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Pays a checkout on the sandbox's hosted page.
async fn pay(url: &str) {
    let r = http().post(format!("{url}/pay")).form(&[("email", "ana@example.com"), ("outcome", "pay")]).send().await;
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 303);
}

async fn subscribe(s: &TestStack, b: &Billed) -> String {
    let session = checkout(s, b).await;
    pay(session["url"].as_str().unwrap_or_default()).await;
    let state = settles_on(s, b, "pro", "active").await;
    state["subscription_id"].as_str().unwrap_or_default().to_owned()
}

async fn portal_cancel(s: &TestStack, b: &Billed, sub: &str) {
    let body = json!({"return_url": "https://app.example/account"});
    let r =
        s.call("POST", &format!("/v1/users/{}/billing/portal", b.user), Auth::Bearer(&b.t.api_key), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let url = r.body["url"].as_str().unwrap_or_default();
    let r = http().post(format!("{url}/subscriptions/{sub}/cancel")).form(&[("mode", "now")]).send().await;
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 303);
}

#[tokio::test]
async fn a_user_subscribes_through_checkout_gets_the_plan_and_falls_back_when_cancelling_in_the_portal() {
    let s = start().await;
    let b = billed(&s).await;
    assert_eq!(billing(&s, &b).await["plan"], "free");

    // WHEN the user checks out and pays
    let session = checkout(&s, &b).await;
    assert!(session["url"].as_str().is_some_and(|u| u.starts_with(&b.stripe)), "{session}");
    pay(session["url"].as_str().unwrap_or_default()).await;

    // THEN the webhook puts them on pro at once, with the period end
    let state = settles_on(&s, &b, "pro", "active").await;
    assert!(state["current_period_end"].as_str().is_some_and(|t| t > "2026"), "{state}");
    let r = s.call("GET", &format!("/v1/users/{}/plan", b.user), Auth::Bearer(&b.t.api_key), None).await;
    assert_eq!(r.body["plan"], "pro", "the meter's plan is the paid one: {}", r.body);

    // AND a second checkout reuses the Stripe customer, with the user and plan on the session
    checkout(&s, &b).await;
    let acct = account_state(&b).await;
    assert_eq!(acct["customers"].as_array().map(Vec::len), Some(1), "{acct}");
    let sessions = stripe_get(&b, "/v1/checkout/sessions").await;
    let first = &sessions["data"][0];
    assert_eq!(first["client_reference_id"], b.user.as_str());
    assert_eq!(first["metadata"]["plan"], "pro");
    assert_eq!(first["metadata"]["tenant_id"], b.t.id.as_str());
    assert_eq!(first["customer"], state["customer_id"]);

    // WHEN they cancel in the portal THEN they are back on the default plan
    portal_cancel(&s, &b, state["subscription_id"].as_str().unwrap_or_default()).await;
    settles_on(&s, &b, "free", "canceled").await;
}

#[tokio::test]
async fn an_end_user_checks_out_and_reads_their_own_billing() {
    let s = start().await;
    let mut b = billed(&s).await;
    let jwt = user_token(&s, &b.t, "end-user-7");
    let me = s.call("GET", "/v1/me/billing", Auth::Bearer(&jwt), None).await;
    assert_eq!((me.status, &me.body["plan"]), (200, &json!("free")), "{}", me.body);
    let body = json!({"plan": "pro", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let r = s.call("POST", "/v1/me/billing/checkout", Auth::Bearer(&jwt), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    pay(r.body["url"].as_str().unwrap_or_default()).await;
    b.user = me.body["user_id"].as_str().unwrap_or_default().to_owned();
    settles_on(&s, &b, "pro", "active").await;
    let me = s.call("GET", "/v1/me/billing", Auth::Bearer(&jwt), None).await;
    assert_eq!(me.body["plan"], "pro", "{}", me.body);
    let r = s
        .call("POST", "/v1/me/billing/portal", Auth::Bearer(&jwt), Some(json!({"return_url": "https://app.example/a"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn events_delivered_reversed_shuffled_and_twice_leave_the_user_where_stripe_has_them() {
    let s = start().await;
    let b = billed(&s).await;
    // GIVEN deliveries are held while the user subscribes and cancels
    sandbox(&b, "/sandbox/deliver", json!({"hold": true})).await;
    let session = checkout(&s, &b).await;
    pay(session["url"].as_str().unwrap_or_default()).await;
    let subs = stripe_get(&b, "/v1/subscriptions").await;
    let sub = subs["data"][0]["id"].as_str().unwrap_or_default().to_owned();
    let r = http().delete(format!("{}/v1/subscriptions/{sub}", b.stripe)).bearer_auth(&b.key).send().await;
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 200);
    assert_eq!(billing(&s, &b).await["plan"], "free", "nothing arrived yet");

    // WHEN they arrive newest first, and then each once more, shuffled
    let sent = sandbox(&b, "/sandbox/deliver", json!({"order": "reverse"})).await;
    let acct = account_state(&b).await;
    for e in acct["events"].as_array().cloned().unwrap_or_default() {
        sandbox(&b, &format!("/sandbox/events/{}/resend", e["id"].as_str().unwrap_or_default()), json!({})).await;
    }
    sandbox(&b, "/sandbox/deliver", json!({"hold": false, "order": "shuffle"})).await;

    // THEN the user ends canceled on the default plan (the cancellation delivered first is not undone by the
    // older creation and checkout events), and every delivery was acknowledged
    let state = settles_on(&s, &b, "free", "canceled").await;
    assert_eq!(state["subscription_id"], sub.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(billing(&s, &b).await["plan"], "free");
    let acct = account_state(&b).await;
    let deliveries = acct["deliveries"].as_array().cloned().unwrap_or_default();
    assert!(deliveries.len() >= 10, "originals and duplicates: {sent} {acct}");
    assert!(deliveries.iter().all(|d| d["status"] == 200), "all acknowledged: {deliveries:?}");
}

#[tokio::test]
async fn a_failed_renewal_keeps_the_plan_for_the_grace_period_then_falls_back_and_paying_restores_it() {
    let s = start().await;
    let b = billed(&s).await;
    let sub = subscribe(&s, &b).await;

    // WHEN the renewal fails
    sandbox(&b, &format!("/sandbox/subscriptions/{sub}/fail_payment"), json!({})).await;
    let state = settles_on(&s, &b, "pro", "past_due").await;
    let grace = state["grace_ends_at"].as_str().unwrap_or_default().to_owned();
    let in_3_days = shared::time::format(shared::time::now() + time::Duration::days(3));
    assert!(grace > shared::time::format(shared::time::now()) && grace <= in_3_days, "{state}");

    delivered(&b).await;
    // AND the grace period runs out (moved back in the store: three days are long)
    let since = (shared::time::now() - time::Duration::days(4)).unix_timestamp();
    s.dynamodb
        .update_item()
        .table_name(&s.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(b.t.id.clone()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(format!("billing#{}", b.user)))
        .update_expression("SET past_due_since = :s")
        .expression_attribute_values(":s", aws_sdk_dynamodb::types::AttributeValue::N(since.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // THEN reading it applies the fallback
    let state = billing(&s, &b).await;
    assert_eq!((&state["plan"], &state["status"]), (&json!("free"), &json!("past_due")), "{state}");

    // WHEN the invoice is paid after all THEN the plan is back
    sandbox(&b, &format!("/sandbox/subscriptions/{sub}/advance"), json!({})).await;
    let state = settles_on(&s, &b, "pro", "active").await;
    assert!(state["grace_ends_at"].is_null(), "{state}");
}

fn event(kind: &str, object: Value) -> String {
    json!({"id": format!("evt_forged_{kind}"), "object": "event", "type": kind, "created": 1_800_000_000,
           "data": {"object": object}, "livemode": false})
    .to_string()
}

async fn post_hook(s: &TestStack, tenant: &str, signature: Option<String>, body: &str) -> integration_tests::Reply {
    let mut req = s
        .http
        .post(format!("{}/webhooks/stripe/{tenant}", s.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = signature {
        req = req.header("stripe-signature", sig);
    }
    s.send(req).await
}

#[tokio::test]
async fn unsigned_stale_or_misdirected_events_are_refused_and_change_no_plan() {
    let s = start().await;
    let b = billed(&s).await;
    let sub = subscribe(&s, &b).await;
    portal_cancel(&s, &b, &sub).await;
    settles_on(&s, &b, "free", "canceled").await;
    delivered(&b).await;
    let whsec = "whsec_not_the_tenants";
    let body = event("customer.subscription.created", json!({"id": sub, "object": "subscription", "status": "active"}));
    let now = shared::time::now().unix_timestamp();
    let before = s.table_snapshot().await;

    // a wrong secret, a missing header, a stale timestamp with the right secret shape, an unknown tenant
    let r = post_hook(&s, &b.t.id, Some(sandbox::stripe::sign(whsec, now, body.as_bytes())), &body).await;
    r.assert_error(400, "invalid_signature");
    let r = post_hook(&s, &b.t.id, None, &body).await;
    r.assert_error(400, "invalid_signature");
    let r = post_hook(&s, &b.t.id, Some(format!("t={now},v1=deadbeef")), &body).await;
    r.assert_error(400, "invalid_signature");
    let r = post_hook(&s, &b.t.id, Some(sandbox::stripe::sign(whsec, now - 301, body.as_bytes())), &body).await;
    r.assert_error(400, "invalid_signature");
    let r = post_hook(
        &s,
        "ten_00000000000000000000000000",
        Some(sandbox::stripe::sign(whsec, now, body.as_bytes())),
        &body,
    )
    .await;
    r.assert_error(400, "invalid_signature");
    let r = post_hook(&s, "not-a-tenant", None, &body).await;
    r.assert_error(400, "invalid_signature");

    // THEN nothing changed: the user is still canceled on the default plan
    assert_eq!(s.table_snapshot().await, before);
    let state = billing(&s, &b).await;
    assert_eq!((&state["plan"], &state["status"]), (&json!("free"), &json!("canceled")), "{state}");
}

#[tokio::test]
async fn while_stripe_is_down_checkout_says_so_and_webhooks_fail_until_the_retry_applies_them() {
    let s = start().await;
    let b = billed(&s).await;
    // Stripe down for a checkout: a clear 503
    sandbox(&b, "/sandbox/faults", json!({"server_error": 1})).await;
    let body = json!({"plan": "pro", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let r =
        s.call("POST", &format!("/v1/users/{}/billing/checkout", b.user), Auth::Bearer(&b.t.api_key), Some(body)).await;
    r.assert_error(503, "service_unavailable");

    // Stripe down while its webhooks arrive: we answer non-2xx, Stripe retries, the plan is applied
    let session = checkout(&s, &b).await;
    sandbox(&b, "/sandbox/faults", json!({"server_error": 2})).await;
    pay(session["url"].as_str().unwrap_or_default()).await;
    settles_on(&s, &b, "pro", "active").await;
    delivered(&b).await;
    let acct = account_state(&b).await;
    let deliveries = acct["deliveries"].as_array().cloned().unwrap_or_default();
    assert!(deliveries.iter().any(|d| d["status"].as_u64().is_some_and(|c| c >= 500)), "a failure: {deliveries:?}");
    assert!(
        deliveries.iter().filter(|d| d["attempt"].as_u64() > Some(1)).any(|d| d["status"] == 200),
        "{deliveries:?}"
    );
}

#[tokio::test]
async fn stripe_settings_are_checked_sealed_shown_as_hints_and_required_for_checkout() {
    let s = start().await;
    let b = billed(&s).await;
    let auth = Auth::Bearer(&b.t.api_key);
    let r = s
        .call(
            "PUT",
            "/v1/settings/stripe",
            auth.clone(),
            Some(json!({"secret_key": "pk_test_123456789", "webhook_secret": "whsec_1234567890"})),
        )
        .await;
    r.assert_error(400, "invalid_secret_key");
    let r = s
        .call(
            "PUT",
            "/v1/settings/stripe",
            auth.clone(),
            Some(json!({"secret_key": "sk_test_123456789", "webhook_secret": "nope"})),
        )
        .await;
    r.assert_error(400, "invalid_webhook_secret");
    let r = s.call("GET", "/v1/settings/stripe", auth.clone(), None).await;
    assert_eq!(r.body["configured"], true);
    assert_eq!(r.body["secret_key_hint"], format!("…{}", &b.key[b.key.len() - 4..]));
    assert!(!r.body.to_string().contains(&b.key), "{}", r.body);
    assert!(!s.table_snapshot().await.iter().any(|i| i.contains(&b.key)), "the key is sealed");

    // A plan without a price cannot be bought
    let body = json!({"plan": "free", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let path = format!("/v1/users/{}/billing/checkout", b.user);
    s.call("POST", &path, auth.clone(), Some(body)).await.assert_error(400, "plan_not_billable");
    let r = s
        .call(
            "POST",
            &format!("/v1/users/{}/billing/portal", b.user),
            auth.clone(),
            Some(json!({"return_url": "https://a.example"})),
        )
        .await;
    r.assert_error(409, "no_billing_customer");

    // Without keys: checkout says what to do
    assert_eq!(s.call("DELETE", "/v1/settings/stripe", auth.clone(), None).await.status, 204);
    assert_eq!(s.call("GET", "/v1/settings/stripe", auth.clone(), None).await.body["configured"], false);
    let body = json!({"plan": "pro", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    s.call("POST", &path, auth.clone(), Some(body)).await.assert_error(409, "stripe_not_configured");
}

/// The ledger entries of one user, straight from the meter table.
async fn ledger_items(
    s: &TestStack,
    tenant: &str,
    user: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let out = s
        .dynamodb
        .query()
        .table_name(&s.refs["MeterTable"])
        .key_condition_expression("pk = :pk AND begins_with(sk, :l)")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("{tenant}#{user}")))
        .expression_attribute_values(":l", aws_sdk_dynamodb::types::AttributeValue::S("ledger#".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.items.unwrap_or_default()
}

fn attr<'a>(item: &'a std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, k: &str) -> &'a str {
    item.get(k).and_then(|v| v.as_s().or_else(|_| v.as_n()).ok()).map_or("", String::as_str)
}

async fn reconciliation(s: &TestStack, b: &Billed, query: &str) -> Value {
    let r = s.call("GET", &format!("/v1/billing/reconciliation{query}"), Auth::Bearer(&b.t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// A stack whose usage claims last a second, and a billed tenant with its Anthropic key whose plan `pro` is
/// usage-billed (the sandbox's metered price; its meter's event is `tenantry_tokens`), to which the tenant's
/// user has subscribed.
async fn metered_stack() -> (TestStack, Billed) {
    let s = start_with_env(std::collections::HashMap::from([("USAGE_CLAIM_SECONDS".to_owned(), "1".to_owned())])).await;
    let b = billed(&s).await;
    let auth = Auth::Bearer(&b.t.api_key);
    let r = s.call("PUT", "/v1/settings/llm/anthropic", auth.clone(), Some(json!({"api_key": ANTHROPIC_KEY}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let price = b.prices["tokens_metered"].as_str().unwrap_or_default().to_owned();
    let metered = json!({"monthly_tokens": 1_000_000, "requests_per_minute": 600, "stripe_price_id": price,
                         "event_name": "tenantry_tokens"});
    let r = s.call("PUT", "/v1/settings/plans/pro", auth.clone(), Some(metered)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    subscribe(&s, &b).await;
    (s, b)
}

#[tokio::test]
async fn metered_usage_reaches_stripe_meters_exactly_once_through_failures_and_redeliveries_and_reconciles() {
    let (s, b) = metered_stack().await;
    let auth = Auth::Bearer(&b.t.api_key);
    // GIVEN a user who subscribed to a usage-billed plan, and one put on it by hand, with no Stripe customer
    let payer = b.user.clone();
    let walk_in = s.user(&b.t, "walk-in").await["id"].as_str().unwrap_or_default().to_owned();
    let r = s.call("PUT", &format!("/v1/users/{walk_in}/plan"), auth.clone(), Some(json!({"plan": "pro"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    delivered(&b).await;

    // WHEN they use the AI (JSON and streams) and the tenant records an event twice
    for i in 0..5 {
        let r = claude(&s, &b.t, &payer, &claude_body(&format!("question {i}"), 40, i % 2 == 1)).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap_or_default();
    }
    let r = claude(&s, &b.t, &walk_in, &claude_body("hello", 40, false)).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap_or_default();
    for _ in 0..2 {
        let event = json!({"user_id": payer, "event_name": "images", "value": 3, "idempotency_key": "img-1"});
        let r = s.call("POST", "/v1/usage/events", auth.clone(), Some(event)).await;
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
    }
    // AND one entry is older than Stripe's 35 days (a backlog that was never sent)
    let old_at = shared::time::format(shared::time::now() - time::Duration::days(36));
    let old_period = &old_at[..7];
    let s_ = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.to_owned());
    let n_ = |v: &str| aws_sdk_dynamodb::types::AttributeValue::N(v.to_owned());
    s.dynamodb
        .put_item()
        .table_name(&s.refs["MeterTable"])
        .item("pk", s_(&format!("{}#{payer}", b.t.id)))
        .item("sk", s_(&format!("ledger#{old_period}#led_old")))
        .item("id", s_("led_old"))
        .item("kind", s_("event"))
        .item("created_at", s_(&old_at))
        .item("meter_event", s_("tenantry_tokens"))
        .item("report_value", n_("999"))
        .item("report", s_("pending"))
        .item("rpk", s_("report#3"))
        .item("rdue", n_("0"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // (with its month's usage item, as every entry has)
    s.dynamodb
        .put_item()
        .table_name(&s.refs["MeterTable"])
        .item("pk", s_(&format!("{}#{payer}", b.t.id)))
        .item("sk", s_(&format!("period#{old_period}")))
        .item("gsi1pk", s_(&format!("{}#{old_period}", b.t.id)))
        .item("gsi1sk", s_(&payer))
        .item("ev#tenantry_tokens", n_("999"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // AND Stripe fails the first two meter events it is sent
    let r = sandbox(&b, "/sandbox/faults", json!({"server_error": 2})).await;
    assert_eq!(r["server_error"], 2, "{r}");

    // THEN sweeps report every entry; the failed ones on a later sweep
    for _ in 0..60 {
        s.tick("UsageReporterFunction").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // (without asking Stripe, so that only the reporter meets its failures)
        let rec = reconciliation(&s, &b, "?stripe=false").await;
        let pending = rec["by_event"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, e)| e["by_status"]["pending"]["entries"].as_u64() > Some(0));
        let old = ledger_items(&s, &b.t.id, &payer).await.into_iter().find(|i| attr(i, "id") == "led_old");
        if !pending && old.is_some_and(|i| attr(&i, "report") != "pending") {
            break;
        }
    }
    assert_eq!(sandbox(&b, "/sandbox/faults", json!({})).await["server_error"], 0, "the reporter met both failures");
    let rec = reconciliation(&s, &b, "").await;
    let items = ledger_items(&s, &b.t.id, &payer).await;
    let sent: Vec<_> = items.iter().filter(|i| attr(i, "id") != "led_old").collect();
    assert_eq!(sent.len(), 6, "five calls and one event: {items:?}");
    assert!(sent.iter().all(|i| attr(i, "report") == "reported"), "{items:?}");
    let old = items.iter().find(|i| attr(i, "id") == "led_old").unwrap_or_else(|| panic!("old entry gone"));
    assert_eq!(attr(old, "report"), "expired", "{old:?}");

    // AND Stripe holds each entry exactly once, under its id, with its value and the payer's customer
    let acct = account_state(&b).await;
    let recorded = acct["meter_events"]["recorded"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<&str> = recorded.iter().filter_map(|m| m["identifier"].as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = sent.iter().map(|i| attr(i, "id")).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "one meter event per entry of the payer: {recorded:?}");
    let customer = billing(&s, &b).await["customer_id"].clone();
    assert!(recorded.iter().all(|m| m["customer"] == customer), "{recorded:?}");
    let tokens: f64 =
        sent.iter().filter(|i| attr(i, "kind") == "llm").map(|i| attr(i, "tokens").parse::<f64>().unwrap_or(0.0)).sum();
    let stripe_tokens: f64 = recorded
        .iter()
        .filter(|m| m["event_name"] == "tenantry_tokens")
        .map(|m| m["value"].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        .sum();
    assert!(tokens > 0.0 && (tokens - stripe_tokens).abs() < 1e-9, "ledger {tokens} vs Stripe {stripe_tokens}");
    assert!(recorded.iter().any(|m| m["event_name"] == "images" && m["value"] == "3"), "{recorded:?}");

    // AND the reconciliation agrees with Stripe for the payer, and flags the walk-in as unbillable
    let rows = rec["users"].as_array().cloned().unwrap_or_default();
    let row = |user: &str, event: &str| {
        rows.iter().find(|r| r["user_id"] == user && r["event_name"] == event).cloned().unwrap_or(Value::Null)
    };
    let paid = row(&payer, "tenantry_tokens");
    assert_eq!(paid["stripe_value"].as_f64(), Some(tokens), "{rec}");
    assert_eq!(paid["by_status"]["reported"]["value"].as_f64(), Some(tokens), "{rec}");
    assert_eq!(row(&walk_in, "tenantry_tokens")["status"], "unbilled", "{rec}");
    assert_eq!(row(&payer, "images")["status"], "balanced", "{rec}");
    assert_eq!(rec["stripe"]["events_without_meter"], json!(["images"]), "{rec}");
    assert_eq!(rec["balanced"], false, "{rec}");
    let problems = rec["problems"].as_array().cloned().unwrap_or_default();
    assert!(problems.iter().any(|p| p["user_id"] == walk_in.as_str() && p["status"] == "unbillable"), "{rec}");
    // AND the month of the backlog shows the entry Stripe could no longer take
    let r = s.call("GET", &format!("/v1/billing/reconciliation?period={old_period}"), auth.clone(), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["by_event"]["tenantry_tokens"]["by_status"]["expired"]["value"].as_f64(),
        Some(999.0),
        "{}",
        r.body
    );
    let problems = r.body["problems"].as_array().cloned().unwrap_or_default();
    assert!(problems.iter().any(|p| p["entry_id"] == "led_old" && p["status"] == "expired"), "{}", r.body);

    // WHEN an old batch of the payer's entries is delivered again, and the sweep runs again
    let entries: Vec<Value> = sent
        .iter()
        .map(|i| {
            json!({"tenant_id": b.t.id, "user_id": payer, "sk": attr(i, "sk"), "id": attr(i, "id"),
                   "event_name": "tenantry_tokens", "value": "1", "timestamp": shared::time::now().unix_timestamp()})
        })
        .collect();
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    sqs.send_message()
        .queue_url(&s.refs["UsageQueue"])
        .message_body(json!({"tenant_id": b.t.id, "entries": entries}).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    for _ in 0..10 {
        if integration_tests::messages_waiting(&sqs, &s.refs["UsageQueue"]).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.tick("UsageReporterFunction").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // THEN Stripe was not even asked again
    let again = account_state(&b).await;
    assert_eq!(again["meter_events"]["recorded"].as_array().map(Vec::len), Some(recorded.len()), "{again}");
    assert_eq!(again["meter_events"]["duplicates"], json!([]), "{again}");
}

#[tokio::test]
async fn usage_waits_while_the_tenant_has_no_stripe_keys_and_goes_out_once_they_are_set_again() {
    let (s, b) = metered_stack().await;
    let auth = Auth::Bearer(&b.t.api_key);
    delivered(&b).await;
    // GIVEN the tenant removed its Stripe keys
    assert_eq!(s.call("DELETE", "/v1/settings/stripe", auth.clone(), None).await.status, 204);
    // WHEN the subscriber makes a call and the sweep runs
    let r = claude(&s, &b.t, &b.user, &claude_body("still there?", 30, false)).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap_or_default();
    let mut entry = Default::default();
    for _ in 0..20 {
        s.tick("UsageReporterFunction").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        entry = ledger_items(&s, &b.t.id, &b.user).await.pop().unwrap_or_default();
        if attr(&entry, "report_error").contains("Stripe keys") {
            break;
        }
    }
    // THEN the entry waits, saying why, and nothing reached Stripe
    assert_eq!(attr(&entry, "report"), "pending", "{entry:?}");
    assert!(attr(&entry, "report_error").contains("no Stripe keys"), "{entry:?}");
    assert_eq!(account_state(&b).await["meter_events"]["recorded"], json!([]));

    // WHEN the keys are set again THEN it goes out once, within a few sweeps
    let body = json!({"secret_key": b.key, "webhook_secret": b.webhook_secret});
    assert_eq!(s.call("PUT", "/v1/settings/stripe", auth.clone(), Some(body)).await.status, 200);
    for _ in 0..40 {
        s.tick("UsageReporterFunction").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        entry = ledger_items(&s, &b.t.id, &b.user).await.pop().unwrap_or_default();
        if attr(&entry, "report") == "reported" {
            break;
        }
    }
    assert_eq!(attr(&entry, "report"), "reported", "{entry:?}");
    let recorded = account_state(&b).await["meter_events"]["recorded"].clone();
    assert_eq!(recorded.as_array().map(Vec::len), Some(1), "{recorded}");
    assert_eq!(recorded[0]["identifier"], attr(&entry, "id"));
}
