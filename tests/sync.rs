//! Sync now, end to end through the local stack's queue poller and the sync worker, against sandbox Oura.

use std::time::Duration;

use integration_tests::connect::{
    configure, connections, consent, no_redirects, sandbox_state, session, stored_tokens,
};
use integration_tests::{Auth, TestStack, TestTenant, start};
use serde_json::{Value, json};

/// Connects the user to sandbox Oura through the Connect flow.
async fn connected_user(s: &TestStack, t: &TestTenant, name: &str) -> String {
    configure(s, t, "oura").await;
    let user = s.user(t, name).await;
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let url = session(s, t, &user_id).await;
    let callback = consent(&url, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connections(s, t, &user_id).await.len(), 1);
    user_id
}

/// Waits until the connection is connected again after a sync, and the queue is empty.
async fn settled(s: &TestStack, t: &TestTenant, user_id: &str) -> Value {
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    for _ in 0..200 {
        let c = connections(s, t, user_id).await.into_iter().next().unwrap_or_default();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&s.refs["SyncQueue"])
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .ok()
            .and_then(|o| o.attributes)
            .unwrap_or_default();
        let waiting: u64 = attrs
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("ApproximateNumberOfMessages"))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum();
        if c["status"] == "connected" && c["last_synced_at"].is_string() && waiting == 0 {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sync did not settle: {:?}", connections(s, t, user_id).await);
}

fn days_ago(n: i64) -> String {
    (time::OffsetDateTime::now_utc().date() - time::Duration::days(n)).to_string()
}

async fn daily(s: &TestStack, t: &TestTenant, user_id: &str) -> Vec<Value> {
    let path = format!("/v1/users/{user_id}/daily?start={}&end={}", days_ago(30), days_ago(0));
    let r = s.call("GET", &path, Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn sync_now_brings_oura_daily_activity_into_the_data_api_and_a_second_sync_changes_nothing() {
    let s = start().await;
    let t = s.tenant("Syncing").await;
    let user_id = connected_user(&s, &t, "gus").await;
    let path = format!("/v1/users/{user_id}/connections/oura/sync");
    let r = s.call("POST", &path, Auth::Bearer(&t.api_key), Some(json!({"days": 7}))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body["job_id"].as_str().is_some_and(|j| j.starts_with("job_")));
    let c = settled(&s, &t, &user_id).await;
    assert!(c["last_error"].is_null(), "{c}");

    let first = daily(&s, &t, &user_id).await;
    assert!(first.len() >= 7, "a week of days: {first:?}");
    assert!(first.iter().all(|d| d["source"] == "oura" && d["steps"].as_i64().is_some_and(|n| n > 0)), "{first:?}");

    s.call("POST", &path, Auth::Bearer(&t.api_key), None).await;
    settled(&s, &t, &user_id).await;
    let strip = |v: Vec<Value>| -> Vec<Value> {
        v.into_iter()
            .map(|mut d| {
                d.as_object_mut().map(|o| o.remove("synced_at"));
                d
            })
            .collect()
    };
    assert_eq!(strip(daily(&s, &t, &user_id).await), strip(first), "the same data, not doubled");

    let only_steps = format!("/v1/users/{user_id}/daily?start={}&end={}&metrics=steps", days_ago(30), days_ago(0));
    let r = s.call("GET", &only_steps, Auth::Bearer(&t.api_key), None).await;
    let days = r.body["data"].as_array().cloned().unwrap_or_default();
    assert!(
        !days.is_empty() && days.iter().all(|d| d["steps"].is_i64() && d.get("distance_m").is_none()),
        "{}",
        r.body
    );
    let bad = format!("/v1/users/{user_id}/daily?start={}&end={}&metrics=mood", days_ago(3), days_ago(0));
    s.call("GET", &bad, Auth::Bearer(&t.api_key), None).await.assert_error(400, "invalid_query");
    let backwards = format!("/v1/users/{user_id}/daily?start={}&end={}", days_ago(0), days_ago(3));
    s.call("GET", &backwards, Auth::Bearer(&t.api_key), None).await.assert_error(400, "invalid_query");

    s.call("POST", &path, Auth::Bearer(&t.api_key), Some(json!({"days": 0}))).await.assert_error(400, "invalid_body");
    let other = format!("/v1/users/{user_id}/connections/strava/sync");
    s.call("POST", &other, Auth::Bearer(&t.api_key), None).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn fifty_racing_syncs_of_one_connection_refresh_its_token_exactly_once() {
    let s = start().await;
    let t = s.tenant("Racing").await;
    let faults = format!("{}/sandbox/faults", s.sandboxes["oura"]);
    // The first access token is born expired, so the first sync must refresh it.
    let r = s.http.post(&faults).json(&json!({"access_token_ttl_seconds": 0})).send().await;
    assert!(r.is_ok_and(|r| r.status().is_success()));
    let user_id = connected_user(&s, &t, "hal").await;
    let r = s.http.post(&faults).json(&json!({"access_token_ttl_seconds": null})).send().await;
    assert!(r.is_ok_and(|r| r.status().is_success()));

    let path = format!("/v1/users/{user_id}/connections/oura/sync");
    let calls = (0..50).map(|_| s.call("POST", &path, Auth::Bearer(&t.api_key), None));
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(|r| r.status == 202), "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    settled(&s, &t, &user_id).await;

    let state = sandbox_state(&s, "oura").await;
    let text = state.to_string();
    assert!(text.contains("\"refreshes\":1"), "exactly one refresh: {state}");
    assert!(text.contains("\"invalid_grant\":0"), "no refresh token was reused: {state}");
    assert!(!daily(&s, &t, &user_id).await.is_empty());
}

async fn fault(s: &TestStack, body: Value) {
    let r = s.http.post(format!("{}/sandbox/faults", s.sandboxes["oura"])).json(&body).send().await;
    assert!(r.is_ok_and(|r| r.status().is_success()), "fault {body}");
}

async fn connection(s: &TestStack, t: &TestTenant, user_id: &str) -> Value {
    connections(s, t, user_id).await.into_iter().next().unwrap_or_default()
}

async fn wait_for(s: &TestStack, t: &TestTenant, user_id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..150 {
        let c = connection(s, t, user_id).await;
        if check(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {}", connection(s, t, user_id).await);
}

#[tokio::test]
async fn a_rate_limited_sync_goes_back_to_the_queue_until_the_reset_and_then_completes() {
    let s = start().await;
    let t = s.tenant("Limited").await;
    let user_id = connected_user(&s, &t, "ida").await;
    fault(&s, json!({"data": "429", "rate_limit_window_seconds": 2})).await;
    s.call("POST", &format!("/v1/users/{user_id}/connections/oura/sync"), Auth::Bearer(&t.api_key), None).await;
    let c = wait_for(&s, &t, &user_id, "the 429 is recorded", |c| {
        c["last_error"].as_str().is_some_and(|e| e.contains("rate limit"))
    })
    .await;
    assert_eq!(c["status"], "syncing", "the job is not lost, it waits for the reset");
    fault(&s, json!({"data": "none"})).await;
    let c = settled(&s, &t, &user_id).await;
    assert!(c["last_error"].is_null(), "{c}");
    assert!(!daily(&s, &t, &user_id).await.is_empty());
}

#[tokio::test]
async fn a_provider_error_keeps_the_job_for_a_retry() {
    let s = start().await;
    let t = s.tenant("Flaky").await;
    let user_id = connected_user(&s, &t, "jon").await;
    fault(&s, json!({"data": "500"})).await;
    s.call("POST", &format!("/v1/users/{user_id}/connections/oura/sync"), Auth::Bearer(&t.api_key), None).await;
    let c = wait_for(&s, &t, &user_id, "the 500 is recorded", |c| {
        c["last_error"].as_str().is_some_and(|e| e.contains("500"))
    })
    .await;
    assert_eq!(c["status"], "syncing");
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&s.refs["SyncQueue"])
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .ok()
        .and_then(|o| o.attributes)
        .unwrap_or_default();
    let waiting: u64 = attrs.values().filter_map(|v| v.parse::<u64>().ok()).sum();
    assert_eq!(waiting, 1, "the job waits in the queue for its retry: {attrs:?}");
}

#[tokio::test]
async fn a_grant_revoked_at_the_provider_marks_the_connection_for_reauthorization() {
    let s = start().await;
    let t = s.tenant("Revoked").await;
    fault(&s, json!({"access_token_ttl_seconds": 0})).await;
    let user_id = connected_user(&s, &t, "kim").await;
    // The person revokes the app at Oura: the access token and its refresh token die there.
    let tokens = stored_tokens(&s, &t, &user_id).await;
    let access = tokens["access_token"].as_str().unwrap_or_default();
    let r =
        s.http.post(format!("{}/oauth/revoke", s.sandboxes["oura"])).query(&[("access_token", access)]).send().await;
    assert!(r.is_ok_and(|r| r.status().is_success()));

    s.call("POST", &format!("/v1/users/{user_id}/connections/oura/sync"), Auth::Bearer(&t.api_key), None).await;
    let c = wait_for(&s, &t, &user_id, "reauthorization is asked", |c| c["status"] == "needs_reauthorization").await;
    assert!(c["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{c}");
}
