//! Webhooks out, end to end: the tenant's endpoint is a local receiver; events come from the Connect flow or
//! straight onto the stack's notify queue; the local stack's poller runs the notifier as Lambda would. The
//! retry policy is shortened to seconds through the stack's environment.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use integration_tests::connect::{configure, connections, consent, no_redirects, session};
use integration_tests::{Auth, TestStack, TestTenant, start_with_env};
use serde_json::{Value, json};
use shared::events::{Event, Events, Notice};
use shared::ids::{TenantId, UserId};
use shared::providers::ProviderId;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    event_id: String,
    content_type: String,
    body: String,
}

/// A tenant's endpoint: records what it gets, answers the scripted statuses, then `otherwise`.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    otherwise: Arc<Mutex<u16>>,
}

impl Receiver {
    async fn start(script: &[u16], otherwise: u16) -> Self {
        let r = Self {
            url: String::new(),
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            otherwise: Arc::new(Mutex::new(otherwise)),
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(answer)).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/hook", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, ..r }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn answer_from_now_on(&self, status: u16) {
        if let Ok(mut o) = self.otherwise.lock() {
            *o = status;
        }
    }

    /// Waits until `n` requests came in.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..300 {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the endpoint got {} requests, expected {n}: {:?}", self.got().len(), self.got());
    }
}

async fn answer(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let received = Received {
        signature: h("tenantry-signature"),
        event_id: h("tenantry-event-id"),
        content_type: h("content-type"),
        body,
    };
    if let Ok(mut got) = r.got.lock() {
        got.push(received);
    }
    let scripted = r.script.lock().ok().and_then(|mut s| s.pop_front());
    let status = scripted.unwrap_or_else(|| r.otherwise.lock().map(|o| *o).unwrap_or(200));
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

/// Checks a `Tenantry-Signature` the way a tenant would, written from Stripe's scheme, not our code:
/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with five minutes of tolerance.
fn verify(header: &str, secret: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if (integration_tests::now() - t).abs() > 300 {
        return false;
    }
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

/// Retries after 1 s, then 2 s apart, for 6 s.
async fn stack() -> TestStack {
    let env =
        [("NOTIFY_RETRY_FIRST_SECONDS", "1"), ("NOTIFY_RETRY_MAX_SECONDS", "2"), ("NOTIFY_RETRY_WINDOW_SECONDS", "6")];
    start_with_env(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()).await
}

/// Sets the tenant's endpoint; returns its signing secret.
async fn subscribe(s: &TestStack, t: &TestTenant, url: &str, events: &[&str]) -> String {
    let r = s
        .call("PUT", "/v1/settings/webhooks", Auth::Bearer(&t.api_key), Some(json!({"url": url, "events": events})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = r.body["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{}", r.body);
    secret
}

async fn events_client(s: &TestStack, queue: &str) -> Events {
    Events::new(aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await), s.refs[queue].clone())
}

fn tenant_id(t: &TestTenant) -> TenantId {
    TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e}"))
}

async fn deliveries(s: &TestStack, t: &TestTenant) -> Vec<Value> {
    let r = s.call("GET", "/v1/webhook-deliveries", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until the delivery of `event_id` (or with id `delivery_id`) has `status`.
async fn delivery_with(s: &TestStack, t: &TestTenant, key: (&str, &str), status: &str) -> Value {
    for _ in 0..300 {
        let found = deliveries(s, t).await.into_iter().find(|d| d[key.0] == key.1);
        if let Some(d) = found.filter(|d| d["status"] == status) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {status} delivery with {} {}: {:?}", key.0, key.1, deliveries(s, t).await);
}

/// Waits until the notify queue holds no message, visible, in flight or delayed.
async fn queue_drained(s: &TestStack) {
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    for _ in 0..300 {
        if integration_tests::messages_waiting(&sqs, &s.refs["NotifyQueue"]).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the notify queue did not drain");
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_default()
}

#[tokio::test]
async fn connecting_and_disconnecting_a_user_reach_the_tenants_endpoint_as_signed_events() {
    let s = stack().await;
    let t = s.tenant("Hooked").await;
    let receiver = Receiver::start(&[], 200).await;
    let secret = subscribe(&s, &t, &receiver.url, &["connection.created", "connection.updated"]).await;
    let shown = s.call("GET", "/v1/settings/webhooks", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(shown.body["events"], json!(["connection.created", "connection.updated"]), "{}", shown.body);
    assert!(!shown.body.to_string().contains(&secret) && shown.body.get("secret").is_none(), "{}", shown.body);

    // GIVEN a user connected to sandbox Oura through the Connect flow
    configure(&s, &t, "oura").await;
    let user_id = s.user(&t, "ivy").await["id"].as_str().unwrap_or_default().to_owned();
    let callback = consent(&session(&s, &t, &user_id).await, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connections(&s, &t, &user_id).await.len(), 1);

    // THEN the endpoint gets connection.created, signed with the tenant's secret
    let got = receiver.wait_for(1).await;
    let created = &got[0];
    assert!(verify(&created.signature, &secret, &created.body), "signature: {}", created.signature);
    assert!(!verify(&created.signature, "whsec_wrong", &created.body), "a wrong secret fails");
    assert!(!verify(&created.signature, &secret, &created.body.replace("oura", "whoop")), "a changed body fails");
    let body = json_of(&created.body);
    assert_eq!(body["type"], "connection.created", "{body}");
    assert_eq!((&body["data"]["user_id"], &body["data"]["provider"]), (&json!(user_id), &json!("oura")));
    assert_eq!(body["id"], json!(created.event_id), "the event id header names the event");
    assert!(body["created"].is_string() && !created.body.contains(&t.id), "{body}");
    assert_eq!(created.content_type, "application/json");

    // WHEN the user disconnects THEN connection.updated says so
    let r = s.call("DELETE", &format!("/v1/users/{user_id}/connections/oura"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let got = receiver.wait_for(2).await;
    let updated = json_of(&got[1].body);
    assert_eq!((&updated["type"], &updated["data"]["status"]), (&json!("connection.updated"), &json!("disconnected")));
    assert!(verify(&got[1].signature, &secret, &got[1].body));

    // An event type the tenant did not subscribe to is not delivered.
    let user = UserId::parse(&user_id).unwrap_or_else(|e| panic!("{e}"));
    let unwanted = Event::data_updated(&tenant_id(&t), &user, ProviderId::Oura, &["steps"], &["2026-11-29".into()]);
    events_client(&s, "NotifyQueue").await.emit(&unwanted).await.unwrap_or_else(|e| panic!("{e:?}"));
    queue_drained(&s).await;
    assert_eq!(receiver.got().len(), 2);
    let listed = deliveries(&s, &t).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|d| d["status"] == "delivered" && d["attempts"] == 1 && d["last_status_code"] == 200));
    assert_eq!(listed[0]["event_id"], json!(got[1].event_id), "newest first");

    // Setting the endpoint again keeps its secret; rotating makes a new one that signs from then on.
    assert_eq!(subscribe(&s, &t, &receiver.url, &["connection.created"]).await, secret);
    let rotated = s.call("POST", "/v1/settings/webhooks/rotate-secret", Auth::Bearer(&t.api_key), None).await;
    let new_secret = rotated.body["secret"].as_str().unwrap_or_default().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret, "{}", rotated.body);
    let ping = s.call("POST", "/v1/settings/webhooks/test", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(ping.status, 202, "{}", ping.body);
    let got = receiver.wait_for(3).await;
    assert_eq!(
        (json_of(&got[2].body)["type"].clone(), json!(got[2].event_id)),
        (json!("ping"), ping.body["event_id"].clone())
    );
    assert!(verify(&got[2].signature, &new_secret, &got[2].body) && !verify(&got[2].signature, &secret, &got[2].body));
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_until_it_answers_and_a_redelivered_message_does_not_deliver_twice() {
    let s = stack().await;
    let t = s.tenant("Flaky").await;
    let receiver = Receiver::start(&[500, 503], 200).await;
    let secret = subscribe(&s, &t, &receiver.url, &["data.updated"]).await;
    let events = events_client(&s, "NotifyQueue").await;
    let event = Event::data_updated(
        &tenant_id(&t),
        &UserId::generate(),
        ProviderId::Oura,
        &["steps", "distance_m"],
        &["2026-11-28".into(), "2026-11-29".into()],
    );
    events.emit(&event).await.unwrap_or_else(|e| panic!("{e:?}"));

    let d = delivery_with(&s, &t, ("event_id", &event.id), "delivered").await;
    assert_eq!((d["attempts"].clone(), d["last_status_code"].clone()), (json!(3), json!(200)), "{d}");
    let got = receiver.got();
    assert_eq!(got.len(), 3, "two failures, then success: {got:?}");
    assert!(got.iter().all(|r| r.body == got[0].body && r.event_id == event.id), "the same event every time");
    assert!(got.iter().all(|r| verify(&r.signature, &secret, &r.body)));
    assert_eq!(json_of(&got[0].body)["data"]["dates"], json!(["2026-11-28", "2026-11-29"]));

    // The same message again (SQS delivers at least once): the delivery is done, nothing is sent.
    let again = Notice { event: event.clone(), delivery_id: None, not_before: None };
    events.send(&again, 0).await.unwrap_or_else(|e| panic!("{e:?}"));
    events
        .send(&Notice { delivery_id: d["id"].as_str().map(str::to_owned), ..again }, 0)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    queue_drained(&s).await;
    assert_eq!(receiver.got().len(), 3);
    let listed = deliveries(&s, &t).await;
    assert_eq!((listed.len(), listed[0]["attempts"].clone()), (1, json!(3)), "{listed:?}");
}

#[tokio::test]
async fn an_endpoint_that_always_fails_ends_failed_and_dead_lettered_and_only_its_tenant_can_replay_it() {
    let s = stack().await;
    let t = s.tenant("Down").await;
    let other = s.tenant("Other").await;
    let receiver = Receiver::start(&[], 500).await;
    let secret = subscribe(&s, &t, &receiver.url, &["backfill.completed"]).await;
    let event = Event::backfill_completed(&tenant_id(&t), &UserId::generate(), ProviderId::Oura, 30, 30);
    events_client(&s, "NotifyQueue").await.emit(&event).await.unwrap_or_else(|e| panic!("{e:?}"));

    // THEN after the (6 s) window the delivery is failed, every attempt was made, and it is dead-lettered
    let failed = delivery_with(&s, &t, ("event_id", &event.id), "failed").await;
    let attempts = failed["attempts"].as_u64().unwrap_or_default();
    assert!(attempts >= 3, "retried with backoff: {failed}");
    assert_eq!(receiver.got().len() as u64, attempts);
    assert_eq!(failed["last_status_code"], 500);
    assert!(failed["last_error"].as_str().is_some_and(|e| e.contains("500")), "{failed}");
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    let dead = sqs
        .receive_message()
        .queue_url(&s.refs["NotifyDeadLetters"])
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let dead: Vec<Notice> = dead.messages().iter().filter_map(|m| serde_json::from_str(m.body()?).ok()).collect();
    assert!(
        dead.iter().any(|n| n.event.id == event.id && n.delivery_id.as_deref() == failed["id"].as_str()),
        "{dead:?}"
    );

    // Another tenant sees none of it and cannot replay it.
    let path = format!("/v1/webhook-deliveries/{}/replay", failed["id"].as_str().unwrap_or_default());
    s.call("POST", &path, Auth::Bearer(&other.api_key), None).await.assert_error(404, "not_found");
    assert!(deliveries(&s, &other).await.is_empty());
    let ghost = "/v1/webhook-deliveries/whd_00000000000000000000000000/replay";
    s.call("POST", ghost, Auth::Bearer(&t.api_key), None).await.assert_error(404, "not_found");
    s.call("POST", "/v1/webhook-deliveries/nonsense/replay", Auth::Bearer(&t.api_key), None)
        .await
        .assert_error(404, "not_found");

    // WHEN the endpoint is back and the tenant replays THEN the same body arrives, as a new delivery
    receiver.answer_from_now_on(200);
    let r = s.call("POST", &path, Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (&r.body["replay_of"], &r.body["event_id"], &r.body["status"]),
        (&failed["id"], &json!(event.id), &json!("pending"))
    );
    let replay_id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let replayed = delivery_with(&s, &t, ("id", &replay_id), "delivered").await;
    assert_eq!(replayed["attempts"], 1, "fresh attempts: {replayed}");
    let got = receiver.got();
    let last = got.last().cloned().unwrap_or_else(|| panic!("nothing received"));
    assert_eq!((last.body.clone(), last.event_id.clone()), (got[0].body.clone(), event.id.clone()), "byte for byte");
    assert!(verify(&last.signature, &secret, &last.body));
    let listed = deliveries(&s, &t).await;
    assert_eq!(
        listed.iter().map(|d| d["id"].clone()).collect::<Vec<_>>(),
        vec![json!(replay_id), failed["id"].clone()]
    );
}

#[tokio::test]
async fn bad_webhook_settings_are_refused_with_400_and_store_nothing() {
    let s = stack().await;
    let t = s.tenant("Careless").await;
    let put = |body: Value| s.call("PUT", "/v1/settings/webhooks", Auth::Bearer(&t.api_key), Some(body));
    let before = s.table_snapshot().await;

    for url in
        ["ftp://hooks.example.com/x", "http://hooks.example.com/x", "not a url", "https://u:p@hooks.example.com/"]
    {
        put(json!({"url": url, "events": ["data.updated"]})).await.assert_error(400, "invalid_url");
    }
    let r = put(json!({"url": "https://hooks.example.com/x", "events": ["data.updated", "data.deleted"]})).await;
    r.assert_error(400, "unknown_event_type");
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("data.deleted") && message.contains("connection.created"),
        "lists the known types: {message}"
    );
    put(json!({"url": "https://hooks.example.com/x", "events": []})).await.assert_error(400, "invalid_body");
    put(json!({"url": "https://hooks.example.com/x"})).await.assert_error(400, "invalid_body");
    put(json!({"url": "https://hooks.example.com/x", "events": ["data.updated"], "secret": "mine"}))
        .await
        .assert_error(400, "invalid_body");
    let malformed = s
        .http
        .put(format!("{}/v1/settings/webhooks", s.base))
        .header("x-api-key", &t.api_key)
        .header("content-type", "application/json")
        .body("{\"url\": \"https://hooks.example.com/x\",");
    s.send(malformed).await.assert_error(400, "invalid_json");

    assert_eq!(s.table_snapshot().await, before, "nothing stored");
    s.call("GET", "/v1/settings/webhooks", Auth::Bearer(&t.api_key), None).await.assert_error(404, "not_found");
    s.call("POST", "/v1/settings/webhooks/test", Auth::Bearer(&t.api_key), None).await.assert_error(404, "not_found");
    s.call("DELETE", "/v1/settings/webhooks", Auth::Bearer(&t.api_key), None).await.assert_error(404, "not_found");
    let bad_cursor = "/v1/webhook-deliveries?cursor=dXNlciN4";
    s.call("GET", bad_cursor, Auth::Bearer(&t.api_key), None).await.assert_error(400, "invalid_cursor");

    // A good one, then removed.
    subscribe(&s, &t, "https://hooks.example.com/x", &["data.updated"]).await;
    let r = s.call("DELETE", "/v1/settings/webhooks", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // Nothing left behind but the audit log's two entries (the refused changes recorded none).
    let unaudited =
        |items: Vec<String>| -> Vec<String> { items.into_iter().filter(|i| !i.contains("S(\"audit#")).collect() };
    assert_eq!(unaudited(s.table_snapshot().await), unaudited(before), "nothing left behind");
    let log = s.call("GET", "/v1/audit", Auth::Bearer(&t.api_key), None).await;
    let actions: Vec<&str> =
        log.body["data"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions[..2], ["settings.webhooks.deleted", "settings.webhooks.updated"], "{}", log.body);
}

#[tokio::test]
async fn a_backfill_and_a_sync_tell_the_tenant_what_changed_and_a_lost_grant_is_an_error_event() {
    let s = stack().await;
    let t = s.tenant("Told").await;
    let receiver = Receiver::start(&[], 200).await;
    let secret = subscribe(&s, &t, &receiver.url, &["data.updated", "backfill.completed", "connection.error"]).await;

    // GIVEN a user who connects sandbox Oura: the first-connect backfill runs in chunks
    configure(&s, &t, "oura").await;
    let user_id = s.user(&t, "ulf").await["id"].as_str().unwrap_or_default().to_owned();
    let callback = consent(&session(&s, &t, &user_id).await, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));

    // THEN one data.updated per chunk, and one backfill.completed at the end
    let mut completed = None;
    for _ in 0..600 {
        completed = receiver.got().into_iter().find(|r| json_of(&r.body)["type"] == "backfill.completed");
        if completed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let completed = completed.unwrap_or_else(|| panic!("no backfill.completed: {:?}", receiver.got()));
    assert!(verify(&completed.signature, &secret, &completed.body));
    let done = json_of(&completed.body);
    assert_eq!((&done["data"]["user_id"], &done["data"]["days"]), (&json!(user_id), &json!(365)), "{done}");
    assert!(done["data"]["records"].as_u64().is_some_and(|n| n > 365), "{done}");
    // Deliveries are not ordered: the last chunk's data.updated may arrive after backfill.completed.
    let mut updates: Vec<Value> = Vec::new();
    for _ in 0..100 {
        updates = receiver.got().iter().map(|r| json_of(&r.body)).filter(|b| b["type"] == "data.updated").collect();
        if updates.len() >= 13 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(updates.len(), 13, "one per chunk");
    let dates: std::collections::BTreeSet<String> = updates
        .iter()
        .flat_map(|u| u["data"]["dates"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    assert!(dates.len() >= 364, "the year's dates are announced: {}", dates.len());
    assert!(updates.iter().all(|u| u["data"]["metrics"].as_array().is_some_and(|m| m.contains(&json!("steps")))));

    // WHEN the person revokes the app at Oura and a sync runs THEN connection.error says reconnect
    let tokens = integration_tests::connect::stored_tokens(&s, &t, &user_id).await;
    let access = tokens["access_token"].as_str().unwrap_or_default();
    let revoked =
        s.http.post(format!("{}/oauth/revoke", s.sandboxes["oura"])).query(&[("access_token", access)]).send().await;
    assert!(revoked.is_ok_and(|r| r.status().is_success()));
    let before = receiver.got().len();
    s.call("POST", &format!("/v1/users/{user_id}/connections/oura/sync"), Auth::Bearer(&t.api_key), None).await;
    let got = receiver.wait_for(before + 1).await;
    let error = json_of(&got[before].body);
    assert_eq!(
        (&error["type"], &error["data"]["status"]),
        (&json!("connection.error"), &json!("needs_reauthorization")),
        "{error}"
    );
}
