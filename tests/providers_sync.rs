//! Every provider end to end: connect through the Connect flow, let the first-connect backfill run through
//! the queue and the worker against the provider's sandbox, and read the normalized data back.

use std::time::Duration;

use integration_tests::connect::connections;
use integration_tests::hooks::connect_user;
use integration_tests::{Auth, TestStack, start};
use serde_json::Value;

fn days_ago(n: i64) -> String {
    (time::OffsetDateTime::now_utc().date() - time::Duration::days(n)).to_string()
}

async fn list(s: &TestStack, key: &str, path: &str) -> Vec<Value> {
    let r = s.call("GET", path, Auth::Bearer(key), None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

/// Connects one user to `provider`, waits for the backfill, and returns what the read API then holds:
/// (daily rows of that source, sleep sessions, workouts) over the last 20 days.
async fn synced(s: &TestStack, provider: &str) -> (Vec<Value>, Vec<Value>, Vec<Value>, Value) {
    let t = s.tenant(&format!("Synced {provider}")).await;
    let (user_id, _) = connect_user(s, &t, provider, "rae").await;
    let mut conn = Value::Null;
    for _ in 0..900 {
        conn = connections(s, &t, &user_id).await.into_iter().next().unwrap_or_default();
        if conn["backfill"]["status"] == "completed" && conn["status"] == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(conn["backfill"]["status"], "completed", "{provider}: {conn}");
    let range = format!("start={}&end={}", days_ago(20), days_ago(1));
    let daily = list(s, &t.api_key, &format!("/v1/users/{user_id}/daily?{range}&view=sources")).await;
    let sleep = list(s, &t.api_key, &format!("/v1/users/{user_id}/sleep?{range}&limit=100")).await;
    let workouts = list(s, &t.api_key, &format!("/v1/users/{user_id}/workouts?{range}&limit=100")).await;
    (daily, sleep, workouts, conn)
}

#[tokio::test]
async fn every_provider_backfills_into_the_normalized_model_with_its_own_source_and_offsets() {
    let s = start().await;
    let providers = ["oura", "whoop", "withings", "strava", "polar", "google_health", "garmin"];
    let results = futures::future::join_all(providers.iter().map(|p| synced(&s, p))).await;
    for (provider, (daily, sleep, workouts, conn)) in providers.iter().zip(results) {
        assert!(conn["last_error"].is_null(), "{provider}: {conn}");
        let of_source = |rows: &[Value], pick: fn(&Value) -> &Value| rows.iter().all(|r| pick(r) == provider);
        assert!(of_source(&daily, |r| &r["source"]), "{provider}: {daily:?}");
        assert!(of_source(&sleep, |r| &r["source"]["name"]), "{provider}: {sleep:?}");
        assert!(of_source(&workouts, |r| &r["source"]["name"]), "{provider}: {workouts:?}");
        let found = daily.len() + sleep.len() + workouts.len();
        assert!(
            found >= 5,
            "{provider} brought data: {} daily, {} sleep, {} workouts",
            daily.len(),
            sleep.len(),
            workouts.len()
        );
        // Every record names the user's local day and, where the provider tells it, the UTC offset.
        for w in workouts.iter().chain(&sleep) {
            assert!(w["day"].is_string() && w["start"].as_str().is_some_and(|t| t.ends_with('Z')), "{provider}: {w}");
        }
        if *provider == "strava" {
            assert!(!workouts.is_empty(), "Strava is activities");
        } else {
            assert!(!daily.is_empty(), "{provider} has daily values");
        }
    }
}
