//! Webhooks in: a provider's subscription check, and a signed Oura event turning into a sync of the right
//! user; forged, stale and unknown-tenant requests are refused alike.

use std::time::Duration;

use integration_tests::connect::{configure, connections, consent, no_redirects, session};
use integration_tests::{TestStack, TestTenant, start};
use serde_json::json;

const SECRET: &str = "oura-secret-value";

async fn connected(s: &TestStack, t: &TestTenant) -> String {
    configure(s, t, "oura").await;
    let user = s.user(t, "lee").await;
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let url = session(s, t, &user_id).await;
    let callback = consent(&url, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    user_id
}

async fn post_event(s: &TestStack, tenant: &str, ts: i64, secret: &str, body: &str) -> u16 {
    let signature = webhooks::oura_signature(secret.as_bytes(), &ts.to_string(), body.as_bytes());
    s.http
        .post(format!("{}/webhooks/oura/{tenant}", s.base))
        .header("x-oura-timestamp", ts.to_string())
        .header("x-oura-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_signed_oura_event_syncs_that_user_and_forged_or_stale_ones_are_refused() {
    let s = start().await;
    let t = s.tenant("Hooked").await;
    let user_id = connected(&s, &t).await;
    let conn = connections(&s, &t, &user_id).await.into_iter().next().unwrap_or_default();
    let oura_user =
        conn["provider_user_id"].as_str().unwrap_or_else(|| panic!("Oura's user id is kept: {conn}")).to_owned();
    assert!(conn["last_synced_at"].is_null());

    let body = json!({"event_type": "create", "data_type": "daily_activity", "object_id": "x1",
                      "event_time": "2026-11-29T03:00:00+00:00", "user_id": oura_user})
    .to_string();
    let now = integration_tests::now();
    assert_eq!(post_event(&s, &t.id, now - 600, SECRET, &body).await, 401, "a stale timestamp");
    assert_eq!(post_event(&s, &t.id, now, "not-the-secret", &body).await, 401, "a forged signature");
    assert_eq!(
        post_event(&s, "ten_00000000000000000000000000", now, SECRET, &body).await,
        401,
        "an unknown tenant looks the same"
    );
    assert!(connections(&s, &t, &user_id).await[0]["last_synced_at"].is_null(), "nothing was synced yet");

    assert_eq!(post_event(&s, &t.id, now, SECRET, &body).await, 200);
    assert_eq!(post_event(&s, &t.id, now, SECRET, &body).await, 200, "a duplicate is harmless");
    let mut synced = false;
    for _ in 0..100 {
        let c = connections(&s, &t, &user_id).await.into_iter().next().unwrap_or_default();
        if c["status"] == "connected" && c["last_synced_at"].is_string() {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced, "the event became a sync of that user");

    let unknown = json!({"event_type": "create", "data_type": "sleep", "user_id": "someone-else"}).to_string();
    assert_eq!(post_event(&s, &t.id, now, SECRET, &unknown).await, 200, "an unknown user is acknowledged, not retried");
}

#[tokio::test]
async fn the_subscription_check_echoes_the_challenge_only_for_the_right_token() {
    let s = start().await;
    let t = s.tenant("Subscribing").await;
    configure(&s, &t, "oura").await;
    let tenant = shared::ids::TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e}"));
    let token = webhooks::verification_token(SECRET.as_bytes(), &tenant);
    let get = |query: String| {
        let url = format!("{}/webhooks/oura/{}?{query}", s.base, t.id);
        let http = s.http.clone();
        async move { http.get(url).send().await.unwrap_or_else(|e| panic!("{e}")) }
    };
    let ok = get(format!("verification_token={token}&challenge=abc123")).await;
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.json::<serde_json::Value>().await.unwrap_or_default(), json!({"challenge": "abc123"}));
    assert_eq!(get("verification_token=wrong&challenge=abc123".into()).await.status().as_u16(), 401);
    assert_eq!(get("challenge=abc123".into()).await.status().as_u16(), 400);
    let r = s
        .http
        .get(format!("{}/webhooks/fitbit/{}?challenge=x", s.base, t.id))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 404);
}
