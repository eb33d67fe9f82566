//! Sync now, end to end through the local stack's queue poller and the sync worker, against sandbox Oura.

use std::time::Duration;

use integration_tests::connect::{
    configure, connections, consent, no_redirects, sandbox_state, session, stored_tokens,
};
use integration_tests::{Auth, TestStack, TestTenant, start};
use serde_json::{Value, json};

/// Connects the user to sandbox Oura through the Connect flow and waits for the first-connect backfill to end,
/// so that a test starts from a quiet connection.
async fn connected_user(s: &TestStack, t: &TestTenant, name: &str) -> String {
    let user_id = connect_oura(s, t, name).await;
    let c = settled(s, t, &user_id).await;
    assert_eq!(c["backfill"]["status"], "completed", "{c}");
    user_id
}

/// Connects the user to sandbox Oura through the Connect flow; the backfill starts.
async fn connect_oura(s: &TestStack, t: &TestTenant, name: &str) -> String {
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
    for _ in 0..600 {
        let c = connections(s, t, user_id).await.into_iter().next().unwrap_or_default();
        let waiting = integration_tests::messages_waiting(&sqs, &s.refs["SyncQueue"]).await;
        let backfilled = c["backfill"].is_null() || c["backfill"]["status"] == "completed";
        if c["status"] == "connected" && c["last_synced_at"].is_string() && waiting == 0 && backfilled {
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
    assert!(
        first.iter().all(|d| d["sources"]["steps"] == "oura" && d["steps"].as_i64().is_some_and(|n| n > 0)),
        "{first:?}"
    );

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
    // The backfill's chunk jobs race the fifty Sync-now jobs too.
    let user_id = connect_oura(&s, &t, "hal").await;
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

async fn data_requests(s: &TestStack) -> u64 {
    sandbox_state(s, "oura").await["data_requests"].as_u64().unwrap_or_default()
}

/// Puts a raw job on the stack's sync queue, as a redelivery or a stale message would arrive.
async fn enqueue(s: &TestStack, job: &shared::sync::SyncJob) {
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    let body = serde_json::to_string(job).unwrap_or_default();
    let sent = sqs.send_message().queue_url(&s.refs["SyncQueue"]).message_body(body).send().await;
    assert!(sent.is_ok(), "{sent:?}");
}

fn ids(t: &TestTenant, user_id: &str) -> (shared::ids::TenantId, shared::ids::UserId) {
    let tenant = shared::ids::TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e}"));
    let user = shared::ids::UserId::parse(user_id).unwrap_or_else(|e| panic!("{e}"));
    (tenant, user)
}

#[tokio::test]
async fn a_first_connect_backfills_a_year_in_chunks_and_the_connection_shows_its_progress() {
    let s = start().await;
    let t = s.tenant("History").await;
    let user_id = connect_oura(&s, &t, "lea").await;
    let running = wait_for(&s, &t, &user_id, "the backfill starts", |c| c["backfill"]["status"].is_string()).await;
    assert_eq!(running["backfill"]["days_total"], 365, "{running}");

    let c = settled(&s, &t, &user_id).await;
    let b = &c["backfill"];
    assert_eq!(
        (b["status"].as_str(), b["days_done"].as_i64(), b["percent"].as_i64()),
        (Some("completed"), Some(365), Some(100)),
        "{c}"
    );
    assert_eq!(b["done_through"], b["oldest_day"], "{c}");

    let path = format!("/v1/users/{user_id}/daily?start={}&end={}&metrics=steps", days_ago(364), days_ago(0));
    let r = s.call("GET", &path, Auth::Bearer(&t.api_key), None).await;
    let days = r.body["data"].as_array().cloned().unwrap_or_default();
    // The sandbox person lives west of UTC: before their midnight, their today is UTC's yesterday.
    assert!((364..=365).contains(&days.len()), "every day of the year, once: {}", days.len());
    assert!(days.windows(2).all(|w| w[0]["day"].as_str() < w[1]["day"].as_str()), "in date order, no day twice");
    // 13 chunks of 30 days; per chunk one call per Oura collection (six) plus heart-rate pages: the calls
    // grow with chunks, not with days.
    let calls = data_requests(&s).await;
    assert!((13 * 6..=13 * 16).contains(&calls), "{calls} data calls for a year");
}

#[tokio::test]
async fn a_redelivered_or_stale_backfill_chunk_calls_no_provider_and_changes_nothing() {
    let s = start().await;
    let t = s.tenant("Replayed").await;
    let user_id = connected_user(&s, &t, "max").await;
    let before = daily(&s, &t, &user_id).await;
    let calls = data_requests(&s).await;
    let (tenant, user) = ids(&t, &user_id);
    let today = time::OffsetDateTime::now_utc().date();
    // The first chunk again (a redelivery), and the first chunk of a backfill from an earlier connect.
    enqueue(
        &s,
        &shared::sync::SyncJob::backfill(tenant.clone(), user.clone(), shared::providers::ProviderId::Oura, today),
    )
    .await;
    let earlier = today - time::Duration::days(40);
    enqueue(&s, &shared::sync::SyncJob::backfill(tenant, user, shared::providers::ProviderId::Oura, earlier)).await;
    settled(&s, &t, &user_id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(data_requests(&s).await, calls, "a covered chunk is not fetched again");
    assert_eq!(daily(&s, &t, &user_id).await, before);
    assert_eq!(connection(&s, &t, &user_id).await["backfill"]["days_done"], 365);
}

#[tokio::test]
async fn a_worker_killed_mid_job_holds_the_connection_only_until_its_lease_expires() {
    let s = start().await;
    let t = s.tenant("Crashed").await;
    let user_id = connected_user(&s, &t, "ned").await;
    let synced = connection(&s, &t, &user_id).await["last_synced_at"].clone();
    // A worker took the lease and died: its lease runs out in 3 seconds and nobody releases it.
    let until = shared::time::format(shared::time::now() + time::Duration::seconds(3));
    let taken = s
        .dynamodb
        .update_item()
        .table_name(&s.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(t.id.clone()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(format!("conn#{user_id}#oura")))
        .update_expression("SET lease_job = :j, lease_until = :u, lease_days = :d")
        .expression_attribute_values(":j", aws_sdk_dynamodb::types::AttributeValue::S("job_killed".into()))
        .expression_attribute_values(":u", aws_sdk_dynamodb::types::AttributeValue::S(until))
        .expression_attribute_values(":d", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
        .send()
        .await;
    assert!(taken.is_ok(), "{taken:?}");

    let r = s
        .call(
            "POST",
            &format!("/v1/users/{user_id}/connections/oura/sync"),
            Auth::Bearer(&t.api_key),
            Some(json!({"days": 3})),
        )
        .await;
    assert_eq!(r.status, 202);
    let c = settled(&s, &t, &user_id).await;
    assert_ne!(c["last_synced_at"], synced, "the job ran once the dead worker's lease expired: {c}");
    assert!(c["last_error"].is_null(), "{c}");
}

#[tokio::test]
async fn a_malformed_page_loses_nothing_stored_and_the_connection_recovers_with_the_provider() {
    let s = start().await;
    let t = s.tenant("Garbled").await;
    let user_id = connected_user(&s, &t, "oda").await;
    let before = daily(&s, &t, &user_id).await;
    fault(&s, json!({"data": "malformed_json"})).await;
    s.call("POST", &format!("/v1/users/{user_id}/connections/oura/sync"), Auth::Bearer(&t.api_key), None).await;
    let c = wait_for(&s, &t, &user_id, "the bad page is recorded", |c| {
        c["last_error"].as_str().is_some_and(|e| e.contains("unreadable"))
    })
    .await;
    assert_eq!(c["status"], "syncing", "the job waits for a retry: {c}");
    assert_eq!(daily(&s, &t, &user_id).await, before, "nothing stored was touched");
    // The queued job retries after its backoff (a minute); a Sync now after the provider recovers runs at once.
    fault(&s, json!({"data": "none"})).await;
    s.call("POST", &format!("/v1/users/{user_id}/connections/oura/sync"), Auth::Bearer(&t.api_key), None).await;
    let c = wait_for(&s, &t, &user_id, "synced again", |c| c["status"] == "connected").await;
    assert!(c["last_error"].is_null(), "{c}");
    assert_eq!(daily(&s, &t, &user_id).await.len(), before.len());
}
