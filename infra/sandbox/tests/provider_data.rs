//! The data endpoints of WHOOP, Withings, Strava, Polar, Google Health, Garmin and Oura's sleep collections:
//! their paging ends where the range ends, every page is the same on a second read, and the budget holds.

mod common;

use common::{Sandbox, form, start};
use reqwest::StatusCode;
use sandbox::Provider;
use serde_json::{Value, json};

async fn get(sb: &Sandbox, path: &str, token: &str) -> (StatusCode, Value) {
    let res = sb.get_bearer(path, token).await;
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post(sb: &Sandbox, path: &str, token: &str, fields: &[(&str, &str)]) -> Value {
    let res = sb
        .http
        .post(sb.url(path))
        .bearer_auth(token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::OK, "Withings answers HTTP 200");
    res.json().await.expect("JSON")
}

#[tokio::test]
async fn whoop_pages_newest_first_by_next_token_and_refuses_a_limit_over_25() {
    let sb = start(Provider::Whoop).await;
    let t = sb.connect("u").await.access;
    let base = "/developer/v2/activity/sleep?start=2025-01-01T00:00:00.000Z&end=2025-03-02T00:00:00.000Z&limit=25";
    let mut path = base.to_string();
    let mut starts = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = get(&sb, &path, &t).await;
        assert_eq!(status, StatusCode::OK);
        pages += 1;
        starts.extend(
            page["records"].as_array().into_iter().flatten().filter_map(|r| r["start"].as_str().map(str::to_owned)),
        );
        match page["next_token"].as_str() {
            Some(next) => path = format!("{base}&nextToken={next}"),
            None => break,
        }
        assert!(pages < 10);
    }

    assert_eq!(pages, 3);
    assert!((59..=61).contains(&starts.len()), "{} nights", starts.len());
    assert!(starts.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(get(&sb, &format!("{base}&nextToken=forged"), &t).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&sb, "/developer/v2/cycle?limit=26", &t).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn withings_pages_with_more_and_offset_and_says_601_when_the_budget_is_spent() {
    let sb = start(Provider::Withings).await;
    let t = sb.connect("u").await.access;
    let range = [("action", "getactivity"), ("startdateymd", "2025-01-01"), ("enddateymd", "2025-01-31")];

    let first = post(&sb, "/v2/measure", &t, &range).await;
    let offset = first["body"]["offset"].to_string();
    let second = post(&sb, "/v2/measure", &t, &[&range[..], &[("offset", offset.as_str())]].concat()).await;
    let wrong = post(&sb, "/v2/measure", &t, &[("action", "getactivity")]).await;
    sb.set_faults(json!({"rate_limit": 1})).await;
    let _ = post(
        &sb,
        "/v2/sleep",
        &t,
        &[("action", "getsummary"), ("startdateymd", "2025-01-01"), ("enddateymd", "2025-01-02")],
    )
    .await;
    let limited = post(
        &sb,
        "/v2/sleep",
        &t,
        &[("action", "getsummary"), ("startdateymd", "2025-01-01"), ("enddateymd", "2025-01-02")],
    )
    .await;
    let forged = post(&sb, "/measure", "forged", &[("action", "getmeas")]).await;

    assert_eq!((first["status"].as_i64(), first["body"]["more"].as_bool()), (Some(0), Some(true)));
    assert_eq!(first["body"]["activities"].as_array().map(Vec::len), Some(20));
    assert_eq!(second["body"]["activities"].as_array().map(Vec::len), Some(11));
    assert_eq!(second["body"]["more"], false);
    assert_eq!(second["body"]["activities"][10]["date"], "2025-01-31");
    assert_eq!(wrong["status"], 503);
    assert_eq!(limited["status"], 601);
    assert_eq!(forged["status"], 401);
}

#[tokio::test]
async fn strava_pages_by_number_and_the_pages_do_not_overlap() {
    let sb = start(Provider::Strava).await;
    let t = sb.connect("u").await.access;
    let (after, before) = (1_735_689_600, 1_743_465_600); // 2025-01-01 .. 2025-04-01
    let page = |n: u32| format!("/api/v3/athlete/activities?after={after}&before={before}&per_page=10&page={n}");

    let mut ids = Vec::new();
    let mut n = 1;
    loop {
        let (status, list) = get(&sb, &page(n), &t).await;
        assert_eq!(status, StatusCode::OK);
        let list = list.as_array().cloned().unwrap_or_default();
        ids.extend(list.iter().map(|a| a["id"].clone()));
        if list.len() < 10 {
            break;
        }
        n += 1;
        assert!(n < 20);
    }
    let all = get(&sb, &format!("/api/v3/athlete/activities?after={after}&before={before}&per_page=200"), &t).await.1;

    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    assert!(ids.len() >= 20, "about one day in three over 90 days: {}", ids.len());
    assert_eq!(all.as_array().map(|a| a.iter().map(|x| x["id"].clone()).collect::<Vec<_>>()), Some(ids));
    assert_eq!(get(&sb, "/api/v3/athlete/activities?per_page=201", &t).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn google_pages_by_token_and_caps_exercise_pages_at_25() {
    let sb = start(Provider::GoogleHealth).await;
    let t = sb.connect("u").await.access;
    let filter = "heart_rate.sample_time.civil_time%20%3E%3D%20%222025-01-01%22%20AND%20heart_rate.sample_time.civil_time%20%3C%20%222025-01-03%22";
    let base = format!("/v4/users/me/dataTypes/heart-rate/dataPoints?pageSize=100&filter={filter}");

    let (_, first) = get(&sb, &base, &t).await;
    let token = first["nextPageToken"].as_str().unwrap_or_default().to_string();
    let (_, second) = get(&sb, &format!("{base}&pageToken={token}"), &t).await;
    let ex = "exercise.interval.civil_start_time%20%3E%3D%20%222025-01-01%22%20AND%20exercise.interval.civil_start_time%20%3C%20%222025-06-01%22";
    let (_, exercise) =
        get(&sb, &format!("/v4/users/me/dataTypes/exercise/dataPoints?pageSize=500&filter={ex}"), &t).await;
    let (bad, _) = get(&sb, "/v4/users/me/dataTypes/steps/dataPoints?filter=steps%20%3E%201", &t).await;

    assert_eq!(first["dataPoints"].as_array().map(Vec::len), Some(100));
    assert_eq!(second["dataPoints"].as_array().map(Vec::len), Some(92), "2 days of 96 quarter hours");
    assert!(second.get("nextPageToken").is_none());
    assert_eq!(exercise["dataPoints"].as_array().map(Vec::len), Some(25));
    assert!(exercise["nextPageToken"].is_string());
    assert_eq!(
        first["dataPoints"][0]["heartRate"]["beatsPerMinute"].as_str().map(|b| b.parse::<u32>().is_ok()),
        Some(true)
    );
    assert_eq!(bad, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn garmin_refuses_a_pull_over_a_day_and_finds_each_day_in_the_next_days_uploads() {
    let sb = start(Provider::Garmin).await;
    let t = sb.connect("u").await.access;
    let day = 86_400;
    let jan = 1_735_689_600; // 2025-01-01T00:00Z

    let mut dates = Vec::new();
    for i in 0..10 {
        let path = format!(
            "/wellness-api/rest/dailies?uploadStartTimeInSeconds={}&uploadEndTimeInSeconds={}",
            jan + i * day,
            jan + (i + 1) * day
        );
        let (status, list) = get(&sb, &path, &t).await;
        assert_eq!(status, StatusCode::OK);
        dates.extend(
            list.as_array().into_iter().flatten().filter_map(|d| d["calendarDate"].as_str().map(str::to_owned)),
        );
    }
    let too_long =
        format!("/wellness-api/rest/dailies?uploadStartTimeInSeconds={jan}&uploadEndTimeInSeconds={}", jan + day + 1);

    let mut unique = dates.clone();
    unique.dedup();
    assert_eq!(unique.len(), dates.len(), "each day uploaded once");
    assert!((9..=11).contains(&dates.len()), "{dates:?}");
    assert_eq!(get(&sb, &too_long, &t).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn polar_activity_ranges_are_28_days_at_most_and_need_registration() {
    let sb = start(Provider::Polar).await;
    let t = sb.connect("u").await.access;
    let path = "/v3/users/activities?from=2025-01-01&to=2025-01-28";

    let before = get(&sb, path, &t).await.0;
    sb.http
        .post(sb.url("/v3/users"))
        .bearer_auth(&t)
        .json(&json!({"member-id": "m-u"}))
        .send()
        .await
        .expect("registers");
    let (status, days) = get(&sb, path, &t).await;
    let too_long = get(&sb, "/v3/users/activities?from=2025-01-01&to=2025-01-29", &t).await.0;
    let (_, nights) = get(&sb, "/v3/users/sleep", &t).await;

    assert_eq!(before, StatusCode::FORBIDDEN);
    assert_eq!((status, days.as_array().map(Vec::len)), (StatusCode::OK, Some(28)));
    assert_eq!(too_long, StatusCode::BAD_REQUEST);
    assert!(nights["nights"].as_array().is_some_and(|n| (27..=28).contains(&n.len())));
}

#[tokio::test]
async fn oura_sleep_collections_page_by_next_token_and_a_day_can_hold_a_nap() {
    let sb = start(Provider::Oura).await;
    let t = sb.connect("u").await.access;
    let base = "/v2/usercollection/sleep?start_date=2025-01-01&end_date=2025-03-31";

    let (_, first) = get(&sb, base, &t).await;
    let next = first["next_token"].as_str().unwrap_or_default().to_string();
    let (_, second) = get(&sb, &format!("{base}&next_token={next}"), &t).await;
    let (_, readiness) =
        get(&sb, "/v2/usercollection/daily_readiness?start_date=2025-01-01&end_date=2025-01-07", &t).await;

    let periods = first["data"].as_array().cloned().unwrap_or_default();
    let longs = periods.iter().filter(|p| p["type"] == "long_sleep").count();
    assert_eq!(longs, 31, "31 days a page");
    assert!(periods.len() > longs, "some naps");
    assert_eq!(second["data"][0]["day"], "2025-02-01");
    assert_eq!(readiness["data"].as_array().map(Vec::len), Some(7));
    assert_eq!(readiness["next_token"], Value::Null);
}
