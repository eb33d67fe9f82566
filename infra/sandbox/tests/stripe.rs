//! The Stripe sandbox: Stripe's wire format (form brackets, errors, idempotency), accounts per secret key, the
//! Checkout and portal pages, signed webhook deliveries (retried, held, reordered, repeated), meter events, faults.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap as ReqHeaders, LOCATION};
use sandbox::stripe::{self, StripeRunning};
use serde_json::{Value, json};
use sha2::Sha256;

struct Sb {
    running: StripeRunning,
    http: reqwest::Client,
}

async fn start() -> Sb {
    let running = stripe::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.expect("Stripe sandbox starts");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client builds");
    Sb { running, http }
}

struct Answer {
    status: StatusCode,
    headers: ReqHeaders,
    body: Value,
}

impl Sb {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }

    /// A new account: (secret key, seeded basic_monthly price id).
    async fn account(&self) -> (String, String) {
        let res = self.http.post(self.url("/sandbox/accounts")).send().await.expect("account");
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.expect("account JSON");
        (
            v["secret_key"].as_str().expect("key").to_string(),
            v["prices"]["basic_monthly"].as_str().expect("price").to_string(),
        )
    }

    async fn answer(res: reqwest::Response) -> Answer {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }

    async fn post(&self, key: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_idem(key, path, form, None).await
    }

    async fn post_idem(&self, key: &str, path: &str, form: &[(&str, &str)], idem: Option<&str>) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut req = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        Self::answer(req.send().await.expect("POST is sent")).await
    }

    async fn get(&self, key: &str, path: &str) -> Answer {
        Self::answer(self.http.get(self.url(path)).bearer_auth(key).send().await.expect("GET is sent")).await
    }

    async fn delete(&self, key: &str, path: &str) -> Answer {
        Self::answer(self.http.delete(self.url(path)).bearer_auth(key).send().await.expect("DELETE is sent")).await
    }

    async fn control(&self, path: &str, body: Value) -> Answer {
        Self::answer(self.http.post(self.url(path)).json(&body).send().await.expect("control is sent")).await
    }

    async fn state(&self) -> Value {
        self.http.get(self.url("/sandbox/state")).send().await.expect("state").json().await.expect("state JSON")
    }

    /// Registers `receiver` for every event; returns the endpoint's signing secret.
    async fn endpoint(&self, key: &str, receiver: &Receiver) -> String {
        let we = self.post(key, "/v1/webhook_endpoints", &[("url", &receiver.url), ("enabled_events[]", "*")]).await;
        assert_eq!(we.status, StatusCode::OK, "{}", we.body);
        we.body["secret"].as_str().expect("whsec_ secret").to_string()
    }

    /// Opens a subscription checkout for a new customer and pays it; returns (session id, subscription id).
    async fn subscribe(&self, key: &str, price: &str) -> (String, String) {
        let cs = self
            .post(
                key,
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("line_items[0][price]", price),
                    ("line_items[0][quantity]", "1"),
                    ("success_url", "https://app.test/done?session={CHECKOUT_SESSION_ID}"),
                    ("customer_email", "ada@example.com"),
                ],
            )
            .await;
        assert_eq!(cs.status, StatusCode::OK, "{}", cs.body);
        let id = cs.body["id"].as_str().expect("session id").to_string();
        let paid = self.pay(&id, "pay").await;
        assert_eq!(paid.status(), StatusCode::SEE_OTHER);
        let session = self.get(key, &format!("/v1/checkout/sessions/{id}")).await;
        (id, session.body["subscription"].as_str().expect("subscription id").to_string())
    }

    async fn pay(&self, session: &str, outcome: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/checkout/{session}/pay")))
            .form(&[("email", "ada@example.com"), ("outcome", outcome)])
            .send()
            .await
            .expect("pay is sent")
    }
}

/// A local webhook receiver that records what it gets and fails the first `fail_first` deliveries with 500.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let got: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            let failures = failures.clone();
            async move {
                let sig = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                sink.lock().expect("lock").push((sig, body));
                if failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    AxumStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxumStatus::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("receiver binds");
    let addr = listener.local_addr().expect("receiver address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url: format!("http://{addr}/hook"), got, _server: server }
}

impl Receiver {
    fn count(&self) -> usize {
        self.got.lock().expect("lock").len()
    }

    /// Waits (5 s at most) until at least `n` deliveries arrived; returns them as (signature header, event JSON).
    async fn wait_for(&self, n: usize) -> Vec<(String, Bytes, Value)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = self.got.lock().expect("lock").clone();
        assert!(got.len() >= n, "expected {n} deliveries, got {}", got.len());
        got.into_iter()
            .map(|(sig, body)| (sig, body.clone(), serde_json::from_slice(&body).expect("event JSON")))
            .collect()
    }

    fn types(&self) -> Vec<String> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, b)| {
                serde_json::from_slice::<Value>(b).expect("event JSON")["type"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }
}

/// Verifies a `Stripe-Signature` the way a receiver must: over the raw bytes, any `v1` matching, within 300 s.
fn verify(header: &str, body: &[u8], secret: &str) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    v1.contains(&expected)
}

#[test]
fn the_signature_header_matches_stripes_documented_vector() {
    let header = stripe::sign("whsec_test_secret", 1_735_689_600, br#"{"id":"evt_test_webhook","object":"event"}"#);
    assert_eq!(header, "t=1735689600,v1=ddfd02b511b32e75f640cd68a239fa54407bf16354b543697b1cd8e8377a223d");
    assert_eq!(stripe::ENV_VAR, "TENANTRY_STRIPE_URL");
}

#[tokio::test]
async fn bracketed_form_parameters_become_metadata_line_items_and_expansions() {
    let sb = start().await;
    let (key, price) = sb.account().await;
    let c = sb
        .post(
            &key,
            "/v1/customers",
            &[("email", "ada@example.com"), ("metadata[user_id]", "u 1"), ("metadata[tenant]", "t1")],
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.body["object"], "customer");
    assert_eq!(c.body["livemode"], false);
    assert!(c.body["id"].as_str().expect("id").starts_with("cus_"));
    assert!(c.body["created"].is_i64());
    assert_eq!(c.body["metadata"], json!({"user_id": "u 1", "tenant": "t1"}));

    let cus = c.body["id"].as_str().expect("id");
    let cs = sb
        .post(
            &key,
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", cus),
                ("line_items[0][price]", &price),
                ("line_items[0][quantity]", "3"),
                ("client_reference_id", "user-42"),
                ("metadata[plan]", "basic"),
                ("subscription_data[metadata][user_id]", "u 1"),
                ("success_url", "https://app.test/ok?cs={CHECKOUT_SESSION_ID}"),
                ("cancel_url", "https://app.test/cancel"),
            ],
        )
        .await;
    assert_eq!(cs.status, StatusCode::OK, "{}", cs.body);
    assert_eq!(cs.body["object"], "checkout.session");
    assert_eq!(cs.body["mode"], "subscription");
    assert_eq!(cs.body["status"], "open");
    assert_eq!(cs.body["client_reference_id"], "user-42");
    assert_eq!(cs.body["metadata"], json!({"plan": "basic"}));
    assert_eq!(cs.body["amount_total"], 2700);
    assert!(cs.body.get("_line_items").is_none(), "no sandbox-private keys leak");
    let id = cs.body["id"].as_str().expect("id");
    assert_eq!(cs.body["url"], sb.url(&format!("/checkout/{id}")));

    let got = sb.get(&key, &format!("/v1/checkout/sessions/{id}?expand[]=line_items&expand[]=customer")).await;
    assert_eq!(got.body["line_items"]["data"][0]["price"]["id"], price.as_str());
    assert_eq!(got.body["line_items"]["data"][0]["quantity"], 3);
    assert_eq!(got.body["customer"]["email"], "ada@example.com");

    let missing =
        sb.post(&key, "/v1/checkout/sessions", &[("mode", "subscription"), ("line_items[0][price]", &price)]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["error"]["type"], "invalid_request_error");
    assert_eq!(missing.body["error"]["param"], "line_items[0][quantity]");
    let clash = sb.post(&key, "/v1/customers", &[("metadata", "x"), ("metadata[a]", "b")]).await;
    assert_eq!(clash.status, StatusCode::BAD_REQUEST, "{}", clash.body);
}

#[tokio::test]
async fn each_secret_key_is_its_own_account_and_never_sees_another_accounts_customers() {
    let sb = start().await;
    let (a, _) = sb.account().await;
    let b = "sk_test_tenantB0123456789"; // any well-formed test key makes its account on first use
    let c = sb.post(&a, "/v1/customers", &[("email", "a@example.com")]).await;
    let cus = c.body["id"].as_str().expect("id");

    let other = sb.get(b, &format!("/v1/customers/{cus}")).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.body["error"]["code"], "resource_missing");
    assert_eq!(sb.get(b, "/v1/customers").await.body["data"], json!([]));
    assert_eq!(sb.delete(b, &format!("/v1/customers/{cus}")).await.status, StatusCode::NOT_FOUND);
    let mine = sb.get(&a, "/v1/customers").await;
    assert_eq!(mine.body["object"], "list");
    assert_eq!(mine.body["data"][0]["id"], cus);

    // HTTP Basic with the key as the user name is the same account.
    let basic =
        sb.http.get(sb.url(&format!("/v1/customers/{cus}"))).basic_auth(&a, Some("")).send().await.expect("sent");
    assert_eq!(basic.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_missing_malformed_live_or_revoked_key_is_a_401_in_stripes_error_shape() {
    let sb = start().await;
    let none = Sb::answer(sb.http.get(sb.url("/v1/customers")).send().await.expect("sent")).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"]["type"], "invalid_request_error");
    assert!(none.body["error"]["message"].as_str().expect("message").contains("API key"));
    for bad in ["nonsense", "sk_test_", "sk_live_abcdef123456", "pk_test_abcdef"] {
        let res = sb.get(bad, "/v1/customers").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(res.body["error"]["type"], "invalid_request_error");
    }
    let live = sb.get("sk_live_abcdef123456", "/v1/customers").await;
    assert!(!live.body["error"]["message"].as_str().expect("message").contains("abcdef123456"), "the key is masked");
    {}
    let (key, _) = sb.account().await;
    let acct = sb.state().await["accounts"][0]["account"].as_str().expect("account").to_string();
    assert_eq!(
        sb.http.delete(sb.url(&format!("/sandbox/accounts/{acct}"))).send().await.expect("sent").status(),
        StatusCode::OK
    );
    assert_eq!(sb.get(&key, "/v1/customers").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_replays_the_first_response_without_a_second_object() {
    let sb = start().await;
    let (key, _) = sb.account().await;
    let form = [("email", "ada@example.com"), ("metadata[user_id]", "u1")];
    let first = sb.post_idem(&key, "/v1/customers", &form, Some("idem-1")).await;
    let again = sb.post_idem(&key, "/v1/customers", &form, Some("idem-1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(sb.get(&key, "/v1/customers").await.body["data"].as_array().expect("list").len(), 1);

    // Keys are per account: another account's same key runs.
    let (other, _) = sb.account().await;
    let theirs = sb.post_idem(&other, "/v1/customers", &form, Some("idem-1")).await;
    assert_ne!(theirs.body["id"], first.body["id"]);
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_body_is_an_idempotency_error() {
    let sb = start().await;
    let (key, _) = sb.account().await;
    sb.post_idem(&key, "/v1/customers", &[("email", "ada@example.com")], Some("idem-2")).await;
    let clash = sb.post_idem(&key, "/v1/customers", &[("email", "eve@example.com")], Some("idem-2")).await;
    assert_eq!(clash.status, StatusCode::BAD_REQUEST);
    assert_eq!(clash.body["error"]["type"], "idempotency_error");
    assert_eq!(sb.get(&key, "/v1/customers").await.body["data"].as_array().expect("list").len(), 1);

    // A refused request is not saved: the corrected retry with the same key runs.
    let bad = sb.post_idem(&key, "/v1/prices", &[("currency", "usd")], Some("idem-3")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let fixed = sb
        .post_idem(
            &key,
            "/v1/prices",
            &[("currency", "usd"), ("unit_amount", "500"), ("product_data[name]", "Extra")],
            Some("idem-3"),
        )
        .await;
    assert_eq!(fixed.status, StatusCode::OK, "{}", fixed.body);
    assert_eq!(fixed.body["unit_amount"], 500);
}

#[tokio::test]
async fn paying_on_the_checkout_page_redirects_to_success_and_delivers_signed_lifecycle_webhooks() {
    let sb = start().await;
    let (key, price) = sb.account().await;
    let hook = receiver(0).await;
    let secret = sb.endpoint(&key, &hook).await;
    assert!(secret.starts_with("whsec_"));

    let cs = sb
        .post(
            &key,
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", &price),
                ("line_items[0][quantity]", "1"),
                ("customer_email", "ada@example.com"),
                ("client_reference_id", "user-42"),
                ("success_url", "https://app.test/done?session={CHECKOUT_SESSION_ID}"),
                ("cancel_url", "https://app.test/cancel"),
            ],
        )
        .await;
    let id = cs.body["id"].as_str().expect("id").to_string();
    let page = sb.http.get(sb.url(&format!("/checkout/{id}"))).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&format!("/checkout/{id}/pay"))
            && html.contains("Pay")
            && html.contains("https://app.test/cancel")
    );

    let declined = sb.pay(&id, "decline").await;
    assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(sb.get(&key, &format!("/v1/checkout/sessions/{id}")).await.body["status"], "open");

    let paid = sb.pay(&id, "pay").await;
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let location = paid.headers().get(LOCATION).and_then(|v| v.to_str().ok()).expect("Location");
    assert_eq!(location, format!("https://app.test/done?session={id}"));

    let session = sb.get(&key, &format!("/v1/checkout/sessions/{id}")).await.body;
    assert_eq!(session["status"], "complete");
    assert_eq!(session["payment_status"], "paid");
    assert!(session["url"].is_null());
    let sub_id = session["subscription"].as_str().expect("subscription");
    let sub = sb.get(&key, &format!("/v1/subscriptions/{sub_id}")).await.body;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["customer"], session["customer"]);
    let item = &sub["items"]["data"][0];
    assert_eq!(item["price"]["id"], price.as_str());
    let (start, end) =
        (item["current_period_start"].as_i64().expect("start"), item["current_period_end"].as_i64().expect("end"));
    assert!((28 * 86_400..=31 * 86_400).contains(&(end - start)), "a month apart: {start}..{end}");
    let customer = sb.get(&key, &format!("/v1/customers/{}", session["customer"].as_str().expect("cus"))).await.body;
    assert_eq!(customer["email"], "ada@example.com");

    let got = hook.wait_for(5).await;
    for (sig, body, event) in &got {
        assert!(verify(sig, body, &secret), "valid signature on {}", event["type"]);
        assert!(!verify(sig, body, "whsec_wrong"), "another secret does not verify");
        assert_eq!(event["object"], "event");
        assert_eq!(event["livemode"], false);
        assert_eq!(event["api_version"], stripe::API_VERSION);
        assert!(event["id"].as_str().expect("id").starts_with("evt_"));
    }
    let types = hook.types();
    for t in ["customer.created", "customer.subscription.created", "invoice.paid", "checkout.session.completed"] {
        assert!(types.contains(&t.to_string()), "{t} delivered: {types:?}");
    }
    let completed = got.iter().find(|(_, _, e)| e["type"] == "checkout.session.completed").expect("completed");
    assert_eq!(completed.2["data"]["object"]["client_reference_id"], "user-42");
    assert_eq!(completed.2["data"]["object"]["subscription"], sub_id);

    // Paying twice is refused and sends nothing more.
    assert_eq!(sb.pay(&id, "pay").await.status(), StatusCode::BAD_REQUEST);
    let state = sb.state().await;
    let deliveries = state["accounts"][0]["deliveries"].as_array().expect("deliveries");
    assert!(deliveries.iter().all(|d| d["status"] == 200), "{deliveries:?}");
}

#[tokio::test]
async fn cancelling_now_in_the_portal_ends_the_subscription_with_a_deleted_event() {
    let sb = start().await;
    let (key, price) = sb.account().await;
    let hook = receiver(0).await;
    sb.endpoint(&key, &hook).await;
    let (_, sub_id) = sb.subscribe(&key, &price).await;
    let customer =
        sb.get(&key, &format!("/v1/subscriptions/{sub_id}")).await.body["customer"].as_str().expect("cus").to_string();

    let portal = sb
        .post(
            &key,
            "/v1/billing_portal/sessions",
            &[("customer", &customer), ("return_url", "https://app.test/account")],
        )
        .await;
    assert_eq!(portal.status, StatusCode::OK, "{}", portal.body);
    assert_eq!(portal.body["object"], "billing_portal.session");
    let url = portal.body["url"].as_str().expect("url");
    let html = sb.http.get(url).send().await.expect("portal").text().await.expect("html");
    assert!(html.contains(&sub_id) && html.contains("Cancel now"));
    let portal_id = portal.body["id"].as_str().expect("id");
    let cancel = sb
        .http
        .post(sb.url(&format!("/portal/{portal_id}/subscriptions/{sub_id}/cancel")))
        .form(&[("mode", "now")])
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), StatusCode::SEE_OTHER);

    let sub = sb.get(&key, &format!("/v1/subscriptions/{sub_id}")).await.body;
    assert_eq!(sub["status"], "canceled");
    assert_eq!(sub["cancellation_details"]["reason"], "cancellation_requested");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hook.types().contains(&"customer.subscription.deleted".to_string()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deleted = hook.wait_for(1).await.into_iter().find(|(_, _, e)| e["type"] == "customer.subscription.deleted");
    assert_eq!(deleted.expect("deleted event").2["data"]["object"]["id"], sub_id.as_str());
    // Canceled subscriptions leave the default list.
    assert_eq!(sb.get(&key, &format!("/v1/subscriptions?customer={customer}")).await.body["data"], json!([]));
    assert_eq!(
        sb.get(&key, &format!("/v1/subscriptions?customer={customer}&status=all")).await.body["data"][0]["id"],
        sub_id.as_str()
    );
}

#[tokio::test]
async fn advance_renews_a_subscription_and_fail_payment_makes_it_past_due() {
    let sb = start().await;
    let (key, price) = sb.account().await;
    let hook = receiver(0).await;
    sb.endpoint(&key, &hook).await;
    let (_, sub_id) = sb.subscribe(&key, &price).await;
    let before = sb.get(&key, &format!("/v1/subscriptions/{sub_id}")).await.body;
    let first_end = before["items"]["data"][0]["current_period_end"].as_i64().expect("end");

    let renewed = sb.control(&format!("/sandbox/subscriptions/{sub_id}/advance"), json!({})).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    assert_eq!(renewed.body["items"]["data"][0]["current_period_start"], first_end);
    assert_ne!(renewed.body["latest_invoice"], before["latest_invoice"]);

    let failed = sb.control(&format!("/sandbox/subscriptions/{sub_id}/fail_payment"), json!({})).await;
    assert_eq!(failed.body["status"], "past_due");
    let invoice =
        sb.get(&key, &format!("/v1/invoices/{}", failed.body["latest_invoice"].as_str().expect("invoice"))).await;
    assert_eq!(invoice.body["status"], "open");

    let recovered = sb.control(&format!("/sandbox/subscriptions/{sub_id}/advance"), json!({})).await;
    assert_eq!(recovered.body["status"], "active");

    hook.wait_for(8).await;
    let types = hook.types();
    assert!(types.contains(&"invoice.payment_failed".to_string()), "{types:?}");
    assert!(types.iter().filter(|t| *t == "invoice.paid").count() >= 3, "{types:?}");
    assert!(types.contains(&"customer.subscription.updated".to_string()), "{types:?}");

    // Cancel at period end, then the period ends: deleted.
    let set = sb.post(&key, &format!("/v1/subscriptions/{sub_id}"), &[("cancel_at_period_end", "true")]).await;
    assert_eq!(set.body["cancel_at_period_end"], true);
    let ended = sb.control(&format!("/sandbox/subscriptions/{sub_id}/advance"), json!({})).await;
    assert_eq!(ended.body["status"], "canceled");
}

#[tokio::test]
async fn a_repeated_meter_event_identifier_is_acknowledged_but_not_counted_twice() {
    let sb = start().await;
    let (key, _) = sb.account().await;
    let event = |id: &'static str, value: &'static str| {
        [
            ("event_name", "ai_tokens"),
            ("payload[stripe_customer_id]", "cus_meter1"),
            ("payload[value]", value),
            ("identifier", id),
        ]
    };
    let first = sb.post(&key, "/v1/billing/meter_events", &event("req-1", "120")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["object"], "billing.meter_event");
    assert_eq!(first.body["payload"], json!({"stripe_customer_id": "cus_meter1", "value": "120"}));
    assert_eq!(first.body["identifier"], "req-1");
    let repeat = sb.post(&key, "/v1/billing/meter_events", &event("req-1", "120")).await;
    assert_eq!(repeat.status, StatusCode::OK);
    sb.post(&key, "/v1/billing/meter_events", &event("req-2", "30")).await;
    let generated = sb
        .post(
            &key,
            "/v1/billing/meter_events",
            &[("event_name", "ai_tokens"), ("payload[stripe_customer_id]", "cus_meter1"), ("payload[value]", "1")],
        )
        .await;
    assert!(!generated.body["identifier"].as_str().expect("identifier").is_empty());

    let meter = &sb.state().await["accounts"][0]["meter_events"];
    assert_eq!(
        meter["totals"],
        json!([{"event_name": "ai_tokens", "customer": "cus_meter1", "total": 151.0, "count": 3}])
    );
    assert_eq!(meter["duplicates"], json!(["req-1"]));

    let no_value = sb
        .post(
            &key,
            "/v1/billing/meter_events",
            &[("event_name", "ai_tokens"), ("payload[stripe_customer_id]", "cus_meter1")],
        )
        .await;
    assert_eq!(no_value.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_value.body["error"]["param"], "payload[value]");
}

#[tokio::test]
async fn meter_event_timestamps_more_than_35_days_back_or_5_minutes_ahead_are_refused() {
    let sb = start().await;
    let (key, _) = sb.account().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let at = |t: i64| t.to_string();
    let send = |t: String| {
        let key = key.clone();
        let sb = &sb;
        async move {
            sb.post(
                &key,
                "/v1/billing/meter_events",
                &[
                    ("event_name", "ai_tokens"),
                    ("payload[stripe_customer_id]", "cus_1"),
                    ("payload[value]", "1"),
                    ("timestamp", &t),
                ],
            )
            .await
        }
    };
    assert_eq!(send(at(now - 34 * 86_400)).await.status, StatusCode::OK);
    assert_eq!(send(at(now + 4 * 60)).await.status, StatusCode::OK);
    let old = send(at(now - 36 * 86_400)).await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST);
    assert_eq!(old.body["error"]["param"], "timestamp");
    let ahead = send(at(now + 6 * 60)).await;
    assert_eq!(ahead.status, StatusCode::BAD_REQUEST);
    assert_eq!(ahead.body["error"]["param"], "timestamp");
    assert_eq!(sb.state().await["accounts"][0]["meter_events"]["totals"][0]["count"], 2);
}

#[tokio::test]
async fn faults_answer_500_then_429_then_the_api_recovers() {
    let sb = start().await;
    let (key, _) = sb.account().await;
    let set = sb.control("/sandbox/faults", json!({"server_error": 1, "rate_limited": 1, "slow_ms": 30})).await;
    assert_eq!(set.body["server_error"], 1);
    let started = Instant::now();
    let limited = sb.get(&key, "/v1/customers").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["error"]["code"], "rate_limit");
    let broken = sb.get(&key, "/v1/customers").await;
    assert_eq!(broken.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(broken.body["error"]["type"], "api_error");
    assert!(started.elapsed() >= Duration::from_millis(60), "slow_ms delays each request");
    assert_eq!(sb.get(&key, "/v1/customers").await.status, StatusCode::OK);
    let bad = sb.control("/sandbox/faults", json!({"explode": 1})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    sb.control("/sandbox/faults", json!({"hang": 1, "slow_ms": 0})).await;
    let hung = sb.http.get(sb.url("/v1/customers")).bearer_auth(&key).timeout(Duration::from_millis(300)).send().await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    let cleared = Sb::answer(sb.http.delete(sb.url("/sandbox/faults")).send().await.expect("sent")).await;
    assert_eq!(cleared.body, json!({"server_error": 0, "rate_limited": 0, "hang": 0, "slow_ms": 0}));
    assert_eq!(sb.state().await["by_status"]["429"], 1);
}

#[tokio::test]
async fn held_deliveries_are_released_in_reverse_and_a_resent_event_arrives_twice() {
    let sb = start().await;
    let (key, _) = sb.account().await;
    let hook = receiver(0).await;
    sb.endpoint(&key, &hook).await;
    sb.control("/sandbox/deliver", json!({"hold": true})).await;
    for email in ["1@example.com", "2@example.com", "3@example.com"] {
        sb.post(&key, "/v1/customers", &[("email", email)]).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hook.count(), 0, "held");
    assert_eq!(sb.state().await["held"].as_array().expect("held").len(), 3);

    let released = sb.control("/sandbox/deliver", json!({"hold": false, "order": "reverse"})).await;
    assert_eq!(released.body["delivered"].as_array().expect("delivered").len(), 3);
    let got = hook.wait_for(3).await;
    let emails: Vec<&str> = got.iter().map(|(_, _, e)| e["data"]["object"]["email"].as_str().expect("email")).collect();
    assert_eq!(emails, ["3@example.com", "2@example.com", "1@example.com"]);

    let first = got[2].2["id"].as_str().expect("event id");
    let resent = sb.control(&format!("/sandbox/events/{first}/resend"), json!({})).await;
    assert_eq!(resent.body["deliveries"], 1);
    let again = hook.wait_for(4).await;
    assert_eq!(again[3].1, got[2].1, "the same event body again");

    // Shuffle releases everything held, in some order.
    sb.control("/sandbox/deliver", json!({"hold": true})).await;
    sb.post(&key, "/v1/customers", &[("email", "4@example.com")]).await;
    sb.post(&key, "/v1/customers", &[("email", "5@example.com")]).await;
    sb.control("/sandbox/deliver", json!({"shuffle": true})).await;
    hook.wait_for(6).await;
}

#[tokio::test]
async fn a_delivery_the_receiver_refuses_is_retried_until_it_answers_2xx() {
    let sb = start().await;
    let (key, _) = sb.account().await;
    let hook = receiver(2).await;
    let secret = sb.endpoint(&key, &hook).await;
    sb.post(&key, "/v1/customers", &[("email", "ada@example.com")]).await;
    let got = hook.wait_for(3).await;
    assert_eq!(got[0].1, got[2].1, "the same event each time");
    assert!(got.iter().all(|(sig, body, _)| verify(sig, body, &secret)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = sb.state().await;
    let statuses: Vec<Value> = state["accounts"][0]["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["status"].clone())
        .collect();
    assert_eq!(statuses, [json!(500), json!(500), json!(200)]);
}
