//! Apple Health JSON pushes (Health Auto Export's format) through the API into the normalized model.

use integration_tests::{Auth, start, user_token};
use serde_json::{Value, json};

fn push(steps_watch: u32) -> Value {
    json!({"data": {
        "metrics": [
            {"name": "step_count", "units": "count", "data": [
                {"date": "2026-03-04 08:00:00 -0500", "qty": 4000, "source": "iPhone"},
                {"date": "2026-03-04 08:00:00 -0500", "qty": steps_watch, "source": "Ada's Apple Watch"},
                {"date": "2026-03-05 07:00:00 -0500", "qty": 2500, "source": "iPhone"}
            ]},
            {"name": "resting_heart_rate", "units": "count/min", "data": [{"date": "2026-03-04 06:00:00 -0500", "qty": 54}]},
            {"name": "heart_rate", "units": "count/min", "data": [
                {"date": "2026-03-04 08:00:00 -0500", "Min": 70, "Avg": 80, "Max": 95},
                {"date": "2026-03-04 08:01:00 -0500", "Min": 72, "Avg": 84, "Max": 99}
            ]},
            {"name": "sleep_analysis", "units": "hr", "data": [{"date": "2026-03-04", "totalSleep": 7, "deep": 1, "rem": 1.5, "core": 4.5,
              "sleepStart": "2026-03-03 23:30:00 -0500", "sleepEnd": "2026-03-04 06:45:00 -0500", "source": "Ada's Apple Watch"}]}
        ],
        "workouts": [{"name": "Outdoor Walk", "start": "2026-03-04 12:00:00 -0500", "end": "2026-03-04 12:30:00 -0500",
                      "distance": {"qty": 2.4, "units": "km"}}]
    }})
}

/// Every item of the stack's data table, as sorted text.
async fn data_items(s: &integration_tests::TestStack) -> Vec<String> {
    let out = s.dynamodb.scan().table_name(&s.refs["DataTable"]).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    let mut items: Vec<String> = out
        .items()
        .iter()
        .map(|i| {
            let mut pairs: Vec<String> = i.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            pairs.sort();
            pairs.join(",")
        })
        .collect();
    items.sort();
    items
}

#[tokio::test]
async fn a_push_lands_in_the_data_api_and_the_same_push_twice_changes_nothing() {
    let s = start().await;
    let t = s.tenant("Pushed").await;
    let user_id = s.user(&t, "ada").await["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/users/{user_id}/ingest/apple-health");
    let r = s.call("POST", &path, Auth::Bearer(&t.api_key), Some(push(3600))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["days"], json!(["2026-03-04", "2026-03-05"]), "{}", r.body);

    let daily = format!("/v1/users/{user_id}/daily?start=2026-03-01&end=2026-03-06");
    let first = s.call("GET", &daily, Auth::Bearer(&t.api_key), None).await.body;
    let day = &first["data"][0];
    assert_eq!(
        (day["day"].as_str(), day["steps"].as_i64()),
        (Some("2026-03-04"), Some(3600)),
        "the Watch's, not 7,600: {first}"
    );
    assert_eq!((day["utc_offset"].as_str(), day["sources"]["steps"].as_str()), (Some("-05:00"), Some("apple_health")));
    assert_eq!(day["resting_heart_rate"], 54);
    assert_eq!(day["sleep_total_min"], 420);

    assert_eq!(r.body["changed_days"], json!(["2026-03-04", "2026-03-05"]), "{}", r.body);
    let again = s.call("POST", &path, Auth::Bearer(&t.api_key), Some(push(3600))).await;
    assert_eq!((again.status, &again.body["changed_days"]), (200, &json!([])), "{}", again.body);
    let strip = |mut v: Value| {
        for d in v["data"].as_array_mut().into_iter().flatten() {
            d.as_object_mut().map(|o| o.remove("synced_at"));
        }
        v
    };
    let sources = format!("{daily}&view=sources");
    let before = strip(s.call("GET", &sources, Auth::Bearer(&t.api_key), None).await.body);
    let snapshot = data_items(&s).await;
    assert!(snapshot.len() >= 5, "{snapshot:?}");
    s.call("POST", &path, Auth::Bearer(&t.api_key), Some(push(3600))).await;
    assert_eq!(strip(s.call("GET", &sources, Auth::Bearer(&t.api_key), None).await.body), before);
    assert_eq!(data_items(&s).await, snapshot, "every item byte for byte, synced_at included");
    let sleep = s
        .call(
            "GET",
            &format!("/v1/users/{user_id}/sleep?start=2026-03-01&end=2026-03-06"),
            Auth::Bearer(&t.api_key),
            None,
        )
        .await;
    assert_eq!(sleep.body["data"].as_array().map(Vec::len), Some(1), "one session, not two: {}", sleep.body);
    let workouts = s
        .call(
            "GET",
            &format!("/v1/users/{user_id}/workouts?start=2026-03-01&end=2026-03-06"),
            Auth::Bearer(&t.api_key),
            None,
        )
        .await;
    assert_eq!(workouts.body["data"][0]["sport"], "walking");

    // A later push of the same day (more steps by evening) replaces the day's value.
    let more = s.call("POST", &path, Auth::Bearer(&t.api_key), Some(push(9100))).await;
    assert_eq!(more.body["changed_days"], json!(["2026-03-04"]), "{}", more.body);
    let later = s.call("GET", &daily, Auth::Bearer(&t.api_key), None).await.body;
    assert_eq!(later["data"][0]["steps"], 9100);

    // The end user pushes through /v1/me with the tenant's login.
    let jwt = user_token(&s, &t, "ada");
    let mine = s.call("POST", "/v1/me/ingest/apple-health", Auth::Bearer(&jwt), Some(push(9100))).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
}

#[tokio::test]
async fn a_malformed_push_is_refused_with_where_the_problem_is_and_stores_nothing() {
    let s = start().await;
    let t = s.tenant("Refused").await;
    let user_id = s.user(&t, "bo").await["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/users/{user_id}/ingest/apple-health");
    let before = data_items(&s).await;
    let bad_date = json!({"data": {"metrics": [{"name": "step_count", "units": "count", "data": [
        {"date": "2026-03-04 08:00:00 -0500", "qty": 10}, {"date": "03/04/2026", "qty": 5}
    ]}]}});
    let r = s.call("POST", &path, Auth::Bearer(&t.api_key), Some(bad_date)).await;
    r.assert_error(400, "invalid_body");
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| m.contains("step_count, data[1]")), "{}", r.body);
    s.call("POST", &path, Auth::Bearer(&t.api_key), Some(json!({"metrics": []})))
        .await
        .assert_error(400, "invalid_body");
    assert_eq!(data_items(&s).await, before, "a refused push writes nothing, not even its good points");
    let other = s.tenant("Elsewhere").await;
    s.call("POST", &path, Auth::Bearer(&other.api_key), Some(push(1))).await.assert_error(404, "not_found");
}
