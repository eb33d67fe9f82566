//! The normalized data read API over synced data: source priority across overlapping providers, sleep,
//! workouts and samples with local dates, offsets and cursors, and the `/v1/me` twins.

use std::collections::HashSet;
use std::time::Duration;

use integration_tests::connect::connections;
use integration_tests::hooks::connect_user;
use integration_tests::{Auth, TestStack, TestTenant, start, user_token};
use serde_json::{Value, json};

fn days_ago(n: i64) -> String {
    (time::OffsetDateTime::now_utc().date() - time::Duration::days(n)).to_string()
}

/// Waits until every connection of the user has finished its backfill and no sync holds it.
async fn backfilled(s: &TestStack, t: &TestTenant, user_id: &str, count: usize) -> Vec<Value> {
    for _ in 0..900 {
        let cs = connections(s, t, user_id).await;
        let done = cs.len() == count
            && cs.iter().all(|c| c["backfill"]["status"] == "completed" && c["status"] == "connected");
        if done {
            return cs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the backfills did not finish: {:?}", connections(s, t, user_id).await);
}

/// Every page of a list route, following `next_cursor`.
async fn all_pages(s: &TestStack, path: &str, auth: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_owned(),
        };
        let r = s.call("GET", &url, Auth::Bearer(auth), None).await;
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        out.extend(r.body["data"].as_array().cloned().unwrap_or_default());
        cursor = r.body["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            return out;
        }
    }
    panic!("{path} kept paging");
}

#[tokio::test]
async fn overlapping_sources_give_one_value_per_metric_chosen_by_the_tenants_priority() {
    let s = start().await;
    let t = s.tenant("Overlap").await;
    let (user_id, _) = connect_user(&s, &t, "oura", "ola").await;
    connect_user(&s, &t, "whoop", "ola").await;
    backfilled(&s, &t, &user_id, 2).await;

    let range = format!("start={}&end={}", days_ago(10), days_ago(2));
    let per_source =
        s.call("GET", &format!("/v1/users/{user_id}/daily?{range}&view=sources"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(per_source.status, 200, "{}", per_source.body);
    let rows = per_source.body["data"].as_array().cloned().unwrap_or_default();
    let value = |day: &str, source: &str, metric: &str| -> Option<f64> {
        rows.iter().find(|r| r["day"] == day && r["source"] == source).and_then(|r| r[metric].as_f64())
    };
    // Days both sources have a resting heart rate for.
    let both: Vec<String> = rows
        .iter()
        .filter(|r| r["source"] == "oura")
        .filter_map(|r| r["day"].as_str().map(str::to_owned))
        .filter(|d| {
            value(d, "oura", "resting_heart_rate").is_some() && value(d, "whoop", "resting_heart_rate").is_some()
        })
        .collect();
    assert!(both.len() >= 5, "both sources report resting heart rate on most days: {rows:?}");

    let merged =
        |body: &Value, day: &str| body["data"].as_array().and_then(|d| d.iter().find(|r| r["day"] == day).cloned());
    let path = format!("/v1/users/{user_id}/daily?{range}&metrics=resting_heart_rate");
    let r = s.call("GET", &path, Auth::Bearer(&t.api_key), None).await;
    for day in &both {
        let m = merged(&r.body, day).unwrap_or_default();
        assert_eq!(m["sources"]["resting_heart_rate"], "oura", "built-in order: the ring first: {m}");
        assert_eq!(
            m["resting_heart_rate"].as_f64(),
            value(day, "oura", "resting_heart_rate"),
            "one source, never a sum"
        );
    }

    let priority = json!({"default": ["oura"], "metrics": {"resting_heart_rate": ["whoop", "oura"]}});
    let put = s.call("PUT", "/v1/settings/source-priority", Auth::Bearer(&t.api_key), Some(priority.clone())).await;
    assert_eq!((put.status, &put.body), (200, &priority));
    let got = s.call("GET", "/v1/settings/source-priority", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(got.body, priority);
    let r = s.call("GET", &path, Auth::Bearer(&t.api_key), None).await;
    for day in &both {
        let m = merged(&r.body, day).unwrap_or_default();
        assert_eq!(m["sources"]["resting_heart_rate"], "whoop", "{m}");
        assert_eq!(m["resting_heart_rate"].as_f64(), value(day, "whoop", "resting_heart_rate"));
    }

    // Bad orders are refused and change nothing.
    for bad in [
        json!({"metrics": {"mood": ["oura"]}}),
        json!({"default": ["oura", "oura"]}),
        json!({"default": ["Oura Ring"]}),
        json!({"order": ["oura"]}),
    ] {
        s.call("PUT", "/v1/settings/source-priority", Auth::Bearer(&t.api_key), Some(bad))
            .await
            .assert_error(400, "invalid_body");
    }
    let got = s.call("GET", "/v1/settings/source-priority", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(got.body, priority);
    let other = s.tenant("Other").await;
    let theirs = s.call("GET", "/v1/settings/source-priority", Auth::Bearer(&other.api_key), None).await;
    assert_eq!(theirs.body, json!({"default": [], "metrics": {}}), "a tenant's priority is its own");
}

#[tokio::test]
async fn sleep_workouts_and_samples_read_back_in_pages_with_local_days_and_offsets() {
    let s = start().await;
    let t = s.tenant("Reader").await;
    let (user_id, _) = connect_user(&s, &t, "oura", "pia").await;
    backfilled(&s, &t, &user_id, 1).await;
    let key = t.api_key.clone();

    let range = format!("start={}&end={}", days_ago(30), days_ago(1));
    let all = all_pages(&s, &format!("/v1/users/{user_id}/sleep?{range}"), &key).await;
    let paged = all_pages(&s, &format!("/v1/users/{user_id}/sleep?{range}&limit=4"), &key).await;
    assert!(all.len() >= 25, "a month of nights: {}", all.len());
    assert_eq!(paged, all, "pages of four give the same sessions in the same order");
    for night in &all {
        let (start, end) = (night["start"].as_str().unwrap_or_default(), night["end"].as_str().unwrap_or_default());
        assert!(start < end && start.ends_with('Z'), "{night}");
        assert!(night["utc_offset"].as_str().is_some_and(|o| o.len() == 6), "offset kept: {night}");
        assert!(night["total_sleep_min"].as_f64().is_some_and(|m| m > 0.0), "{night}");
        assert_eq!(night["source"]["name"], "oura");
    }
    let days: Vec<&str> = all.iter().filter_map(|n| n["day"].as_str()).collect();
    assert!(days.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    let workouts = all_pages(&s, &format!("/v1/users/{user_id}/workouts?{range}&limit=3"), &key).await;
    assert!(!workouts.is_empty(), "the sandbox person works out some days");
    let ids: HashSet<&str> = workouts.iter().filter_map(|w| w["id"].as_str()).collect();
    assert_eq!(ids.len(), workouts.len(), "no workout twice");
    assert!(workouts.iter().all(|w| w["sport"].is_string() && w["provider_type"].is_string()), "{workouts:?}");

    let end = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let start = end - time::Duration::hours(6);
    let fmt = |t: time::OffsetDateTime| shared::time::format(t);
    let samples_path =
        format!("/v1/users/{user_id}/samples?type=heart_rate&start={}&end={}&limit=25", fmt(start), fmt(end));
    let samples = all_pages(&s, &samples_path, &key).await;
    assert!(samples.len() >= 60, "six hours of 5-minute heart rate: {}", samples.len());
    let times: Vec<&str> = samples.iter().filter_map(|x| x["time"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "in time order, none twice");
    assert!(times.iter().all(|t| *t >= fmt(start).as_str() && *t < fmt(end).as_str()), "within [start, end)");
    assert!(samples.iter().all(|x| x["unit"] == "bpm" && x["value"].as_f64().is_some_and(|v| v > 20.0)));

    // The end user reads the same through the /v1/me twins with the tenant's login.
    let jwt = user_token(&s, &t, "pia");
    assert_eq!(all_pages(&s, &format!("/v1/me/sleep?{range}"), &jwt).await, all);
    let mine = s
        .call(
            "GET",
            &format!("/v1/me/samples?type=heart_rate&start={}&end={}&limit=25", fmt(start), fmt(end)),
            Auth::Bearer(&jwt),
            None,
        )
        .await;
    assert_eq!(mine.body["data"].as_array().map(Vec::len), Some(25));

    // Bad queries name what to fix.
    for (path, code) in [
        (format!("/v1/users/{user_id}/samples?type=steps&start={}&end={}", fmt(start), fmt(end)), "invalid_query"),
        (format!("/v1/users/{user_id}/samples?type=heart_rate&start={}&end={}", fmt(end), fmt(start)), "invalid_query"),
        (format!("/v1/users/{user_id}/samples?type=heart_rate&start=yesterday&end={}", fmt(end)), "invalid_query"),
        (format!("/v1/users/{user_id}/sleep?{range}&cursor=bogus"), "invalid_cursor"),
        (format!("/v1/users/{user_id}/workouts?start={}&end={}", days_ago(1), days_ago(5)), "invalid_query"),
        (format!("/v1/users/{user_id}/daily?{range}&view=raw"), "invalid_query"),
    ] {
        s.call("GET", &path, Auth::Bearer(&key), None).await.assert_error(400, code);
    }
}
