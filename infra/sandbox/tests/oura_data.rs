//! Oura's data endpoints: deterministic per (user, day), paginated, rate limited.

mod common;

use common::start;
use reqwest::StatusCode;
use sandbox::Provider;
use serde_json::{Value, json};

async fn json_of(res: reqwest::Response) -> Value {
    res.json().await.expect("JSON body")
}

#[tokio::test]
async fn daily_activity_is_the_same_for_the_same_user_and_day_and_differs_between_users() {
    let sb = start(Provider::Oura).await;
    let alice = sb.connect("alice").await;
    let alice_again = sb.connect("alice").await;
    let bob = sb.connect("bob").await;
    let path = "/v2/usercollection/daily_activity?start_date=2026-01-05&end_date=2026-01-11";

    let a = json_of(sb.get_bearer(path, &alice.access).await).await;
    let a2 = json_of(sb.get_bearer(path, &alice_again.access).await).await;
    let b = json_of(sb.get_bearer(path, &bob.access).await).await;

    assert_eq!(a, a2, "another token of the same user sees the same data");
    assert_ne!(a["data"], b["data"]);
    assert_eq!(a["next_token"], Value::Null);
    let days = a["data"].as_array().expect("data array");
    assert_eq!(days.len(), 7);
    assert_eq!(days[0]["day"], "2026-01-05");
    assert_eq!(days[6]["day"], "2026-01-11");
    for day in days {
        let steps = day["steps"].as_u64().expect("steps");
        assert!((2_000..=20_000).contains(&steps), "{steps} steps");
        assert!(day["total_calories"].as_u64() > day["active_calories"].as_u64());
        assert!(day["id"].is_string() && day["score"].is_u64() && day["equivalent_walking_distance"].is_u64());
        assert!(day["timestamp"].as_str().is_some_and(|t| t.starts_with(day["day"].as_str().unwrap_or("?"))));
    }
}

#[tokio::test]
async fn daily_activity_pages_with_next_token_until_the_range_is_done() {
    let sb = start(Provider::Oura).await;
    let t = sb.connect("u").await;
    let mut path = "/v2/usercollection/daily_activity?start_date=2025-01-01&end_date=2025-03-31".to_string();
    let mut days = Vec::new();
    let mut pages = 0;

    loop {
        let page = json_of(sb.get_bearer(&path, &t.access).await).await;
        pages += 1;
        days.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_token"].as_str() {
            Some(next) => {
                path = format!(
                    "/v2/usercollection/daily_activity?start_date=2025-01-01&end_date=2025-03-31&next_token={next}"
                )
            }
            None => break,
        }
        assert!(pages < 10, "pagination ends");
    }

    assert_eq!(days.len(), 90);
    assert_eq!(pages, 3);
    assert_eq!(days.last().map(|d| d["day"].clone()), Some(json!("2025-03-31")));
    let bad = sb.get_bearer("/v2/usercollection/daily_activity?next_token=garbage", &t.access).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn heartrate_gives_five_minute_samples_in_utc_and_reads_an_unencoded_plus() {
    let sb = start(Provider::Oura).await;
    let t = sb.connect("u").await;
    // `+00:00` sent unencoded arrives as a space; the sandbox reads it back as `+`.
    let path = "/v2/usercollection/heartrate?start_datetime=2026-01-05T00:00:00+00:00&end_datetime=2026-01-05T02:00:00%2B00:00";

    let res = sb.get_bearer(path, &t.access).await;

    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    let samples = body["data"].as_array().expect("samples");
    assert_eq!(samples.len(), 24);
    assert_eq!(samples[0]["timestamp"], "2026-01-05T00:00:00+00:00");
    assert_eq!(samples[1]["timestamp"], "2026-01-05T00:05:00+00:00");
    for s in samples {
        assert!(s["bpm"].as_u64().is_some_and(|b| (40..=200).contains(&b)));
        assert!(matches!(s["source"].as_str(), Some("sleep" | "awake" | "workout")));
    }
    assert_eq!(json_of(sb.get_bearer(path, &t.access).await).await, body);
    let too_long = "/v2/usercollection/heartrate?start_datetime=2025-01-01T00:00:00Z&end_datetime=2025-03-01T00:00:00Z";
    assert_eq!(sb.get_bearer(too_long, &t.access).await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn personal_info_says_who_the_user_is() {
    let sb = start(Provider::Oura).await;
    let t = sb.connect("sandbox-user-1").await;

    let me = json_of(sb.get_bearer("/v2/usercollection/personal_info", &t.access).await).await;

    assert_eq!(me["email"], "sandbox-user-1@sandbox.test");
    assert_eq!(me["id"].as_str().map(str::len), Some(36));
    assert!(matches!(me["biological_sex"].as_str(), Some("female" | "male")));
    assert!(me["age"].is_u64() && me["weight"].is_f64() && me["height"].is_f64());
}

#[tokio::test]
async fn the_data_budget_runs_out_with_a_429_and_rate_limit_headers() {
    let sb = start(Provider::Oura).await;
    let t = sb.connect("u").await;
    let path = "/v2/usercollection/personal_info";
    let first = sb.get_bearer(path, &t.access).await;
    assert_eq!(first.headers()["x-ratelimit-limit"], "5000", "Oura's default budget");

    sb.set_faults(json!({"rate_limit": 3, "rate_limit_window_seconds": 60})).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let res = sb.get_bearer(path, &t.access).await;
        assert_eq!(res.status(), StatusCode::OK);
        remaining.push(res.headers()["x-ratelimit-remaining"].to_str().unwrap_or("?").to_string());
    }
    let limited = sb.get_bearer(path, &t.access).await;

    assert_eq!(remaining, ["2", "1", "0"]);
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["x-ratelimit-limit"], "3");
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    let retry: u64 = limited.headers()["retry-after"].to_str().ok().and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&retry));
    assert_eq!(sb.state().await["rate_limited"], 1);
}

#[tokio::test]
async fn data_calls_without_a_live_bearer_token_are_401() {
    let sb = start(Provider::Oura).await;
    let path = "/v2/usercollection/daily_activity";

    let none = sb.http.get(sb.url(path)).send().await.expect("answers");
    let forged = sb.get_bearer(path, "oura-at-forged").await;

    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert!(forged.headers()["www-authenticate"].to_str().is_ok_and(|v| v.starts_with("Bearer")));
}
