//! Reader unit tests: each provider's mapping of a realistic page, and the shared answers (429, 401, 5xx,
//! malformed JSON, Withings' wrapped statuses) against a tiny server on port 0.

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use time::macros::{date, datetime, offset};

use super::*;
use crate::model::{Metric, SampleKind, Sport};

fn window(start: Date, end: Date) -> Window {
    Window { start, end }
}

async fn serve(app: Router) -> String {
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else { panic!("bind") };
    let Ok(addr) = listener.local_addr() else { panic!("addr") };
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn ctx<'a>(http: &'a reqwest::Client, providers: &'a Overrides) -> FetchCtx<'a> {
    FetchCtx { http, providers, access_token: "t", provider_user_id: None }
}

#[tokio::test]
async fn the_shared_helper_maps_429_401_500_and_malformed_json_to_what_the_worker_does() {
    let app = Router::new()
        .route(
            "/limited",
            get(|| async {
                let mut r = StatusCode::TOO_MANY_REQUESTS.into_response();
                r.headers_mut().insert("retry-after", HeaderValue::from_static("42"));
                r
            }),
        )
        .route(
            "/reset",
            get(|| async {
                let mut r = StatusCode::TOO_MANY_REQUESTS.into_response();
                r.headers_mut().insert("x-ratelimit-reset", HeaderValue::from_static("17"));
                r
            }),
        )
        .route("/gone", get(|| async { StatusCode::UNAUTHORIZED }))
        .route("/broken", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/garbage", get(|| async { ([("content-type", "application/json")], "{\"data\": [") }))
        .route("/fine", get(|| async { axum::Json(json!({"data": [1]})) }));
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let providers = Overrides::from_lookup(|_| None);
    let c = ctx(&http, &providers);
    let p = ProviderId::Oura;
    let at = |path: &str| format!("{base}{path}");

    assert_eq!(
        get_json(&c, p, &at("/limited"), &[]).await,
        Err(FetchError::RateLimited { provider: p, retry_after: 42 })
    );
    assert_eq!(
        get_json(&c, p, &at("/reset"), &[]).await,
        Err(FetchError::RateLimited { provider: p, retry_after: 17 })
    );
    assert!(matches!(get_json(&c, p, &at("/gone"), &[]).await, Err(FetchError::Unauthorized(_))));
    assert!(matches!(get_json(&c, p, &at("/broken"), &[]).await, Err(FetchError::Unavailable(m)) if m.contains("500")));
    assert!(
        matches!(get_json(&c, p, &at("/garbage"), &[]).await, Err(FetchError::Unavailable(m)) if m.contains("JSON"))
    );
    assert_eq!(get_json(&c, p, &at("/fine"), &[]).await, Ok(json!({"data": [1]})));
}

#[tokio::test]
async fn a_withings_form_post_carries_the_bearer_token_and_its_status_decides_the_outcome() {
    let app = Router::new().route(
        "/measure",
        post(|headers: axum::http::HeaderMap, body: String| async move {
            let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer t");
            let status = if !bearer {
                401
            } else if body.contains("action=slow") {
                601
            } else {
                0
            };
            axum::Json(json!({"status": status, "body": {"echo": body}}))
        }),
    );
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let providers = Overrides::from_lookup(|_| None);
    let c = ctx(&http, &providers);
    let p = ProviderId::Withings;
    let url = format!("{base}/measure");

    let fine = post_form(&c, p, &url, &[("action", "getmeas".into())]).await.and_then(withings::unwrap);
    let limited = post_form(&c, p, &url, &[("action", "slow".into())]).await.and_then(withings::unwrap);
    let other = FetchCtx { access_token: "old", ..ctx(&http, &providers) };
    let refused = post_form(&other, p, &url, &[]).await.and_then(withings::unwrap);

    assert_eq!(fine, Ok(json!({"echo": "action=getmeas"})));
    assert_eq!(limited, Err(FetchError::RateLimited { provider: p, retry_after: 60 }));
    assert!(matches!(refused, Err(FetchError::Unauthorized(_))));
    assert!(
        withings::unwrap(json!({"status": 503, "error": "Invalid Params"}))
            .is_err_and(|e| e.to_string().contains("503"))
    );
}

#[test]
fn an_oura_night_feeds_the_day_and_a_nap_does_not() {
    let long = json!({"id": "n1", "day": "2026-03-04", "type": "long_sleep", "bedtime_start": "2026-03-03T23:10:00-05:00",
        "bedtime_end": "2026-03-04T07:02:00-05:00", "total_sleep_duration": 25_200, "deep_sleep_duration": 4_800,
        "rem_sleep_duration": 6_000, "light_sleep_duration": 14_400, "awake_time": 3_120, "efficiency": 89,
        "average_heart_rate": 56.25, "lowest_heart_rate": 49, "average_hrv": 47});
    let nap = json!({"id": "n2", "day": "2026-03-04", "type": "sleep", "bedtime_start": "2026-03-04T14:00:00-05:00",
        "bedtime_end": "2026-03-04T15:30:00-05:00", "total_sleep_duration": 5_000, "lowest_heart_rate": 55});
    let docs = vec![nap.clone(), long.clone()];
    let periods: Vec<_> = docs.iter().filter_map(oura::sleep).collect();

    let days = oura::sleep_days(&docs, &periods);

    assert_eq!(periods.len(), 2);
    assert_eq!(periods[1].start, datetime!(2026-03-04 04:10 UTC));
    assert_eq!(periods[1].utc_offset, Some(offset!(-5)));
    assert_eq!(periods[1].deep_min, Some(80.0));
    assert_eq!(days.len(), 1);
    let m = &days[0].metrics;
    assert_eq!((m.get(&Metric::SleepTotalMin), m.get(&Metric::RestingHeartRate)), (Some(&420.0), Some(&49.0)));
    assert_eq!(m.get(&Metric::HrvMs), Some(&47.0));
}

#[test]
fn oura_workouts_and_heart_rate_keep_their_times() {
    let w = oura::workout(
        &json!({"id": "w", "activity": "cycling", "calories": 412.5, "day": "2026-03-04", "distance": 15_300.0,
        "start_datetime": "2026-03-04T18:00:00-05:00", "end_datetime": "2026-03-04T19:00:00-05:00"}),
    );
    let s = oura::heartrate_sample(&json!({"bpm": 61, "source": "rest", "timestamp": "2026-03-04T05:05:00+00:00"}));
    let Some(w) = w else { panic!("workout") };
    assert_eq!(
        (w.sport, w.day, w.energy_kcal, w.distance_m),
        (Sport::Cycling, date!(2026 - 03 - 04), Some(412.5), Some(15_300.0))
    );
    assert_eq!(s.map(|s| (s.kind, s.value, s.utc_offset)), Some((SampleKind::HeartRate, 61.0, None)));
}

#[test]
fn whoop_records_land_on_local_days_and_recovery_follows_its_sleep() {
    let sleep = json!({"id": "s-1", "cycle_id": 93845, "start": "2026-03-04T04:25:00.000Z", "end": "2026-03-04T12:10:00.000Z",
        "timezone_offset": "-05:00", "nap": false, "score_state": "SCORED", "score": {"stage_summary": {
            "total_in_bed_time_milli": 27_900_000, "total_awake_time_milli": 1_800_000, "total_light_sleep_time_milli": 14_400_000,
            "total_slow_wave_sleep_time_milli": 6_000_000, "total_rem_sleep_time_milli": 5_700_000}, "sleep_efficiency_percentage": 91.5}});
    let cycle = json!({"id": 93845, "start": "2026-03-04T04:25:00.000Z", "end": "2026-03-05T04:40:00.000Z",
        "timezone_offset": "-05:00", "score": {"strain": 9.1, "kilojoule": 8368.0}});
    let recovery = json!({"cycle_id": 93845, "sleep_id": "s-1", "score": {"recovery_score": 44, "resting_heart_rate": 64,
        "hrv_rmssd_milli": 31.8, "spo2_percentage": 95.6}});
    let workout = json!({"id": "w-1", "sport_name": "running", "start": "2026-03-04T23:30:00.000Z", "end": "2026-03-05T00:20:00.000Z",
        "timezone_offset": "-05:00", "score": {"kilojoule": 2092.0, "distance_meter": 8000.0, "average_heart_rate": 150, "max_heart_rate": 178}});

    let b =
        whoop::map(window(date!(2026 - 03 - 04), date!(2026 - 03 - 04)), &[cycle], &[sleep], &[recovery], &[workout]);

    assert!(b.daily.iter().all(|d| d.day == date!(2026 - 03 - 04) && d.utc_offset == Some(offset!(-5))));
    let get = |m: Metric| b.daily.iter().find_map(|d| d.metrics.get(&m).copied());
    assert_eq!(get(Metric::TotalEnergyKcal), Some(2000.0));
    assert_eq!(get(Metric::ReadinessScore), Some(44.0));
    assert_eq!(get(Metric::SleepTotalMin), Some(435.0));
    assert_eq!(get(Metric::SleepDeepMin), Some(100.0));
    // 18:30 local on the 4th, though already the 5th in UTC.
    assert_eq!(
        b.workouts.first().map(|w| (w.day, w.energy_kcal, w.sport)),
        Some((date!(2026 - 03 - 04), Some(500.0), Sport::Running))
    );
    assert_eq!(b.sleep.len(), 1);
}

#[test]
fn withings_weights_use_the_zone_of_the_answer_and_keep_the_last_of_a_day() {
    // 2026-03-04 03:30 UTC is still the 3rd in New York (-05:00); 2026-07-04 is summer time (-04:00).
    let g = |t: i64, v: i64| {
        (
            json!({"grpid": t, "date": t, "measures": [{"value": v, "type": 1, "unit": -3}]}),
            "America/New_York".to_owned(),
        )
    };
    let groups = vec![g(1_772_595_000, 81_230), g(1_772_590_000, 81_990), g(1_783_166_400, 80_000)];

    let days = withings::weights(window(date!(2026 - 03 - 01), date!(2026 - 07 - 31)), &groups);

    assert_eq!(days.len(), 2);
    assert_eq!((days[0].day, days[0].utc_offset), (date!(2026 - 03 - 03), Some(offset!(-5))));
    assert_eq!(days[0].metrics.get(&Metric::WeightKg), Some(&81.23));
    assert_eq!(days[1].utc_offset, Some(offset!(-4)));
    let a = withings::activity_day(
        &json!({"date": "2026-03-04", "timezone": "Europe/Paris", "steps": 9_021, "distance": 7_012.5,
        "calories": 402.1, "totalcalories": 2_310.0}),
    );
    assert_eq!(a.map(|a| (a.utc_offset, a.metrics.len())), Some((Some(offset!(+1)), 4)));
}

#[test]
fn strava_and_polar_workouts_take_their_offsets_from_the_activity() {
    let s = strava::activity(
        &json!({"id": 12345678901_u64, "sport_type": "TrailRun", "start_date": "2026-03-04T23:15:00Z",
        "start_date_local": "2026-03-04T18:15:00Z", "utc_offset": -18000.0, "elapsed_time": 3600, "distance": 10_010.2,
        "average_heartrate": 151.2, "max_heartrate": 181.0}),
    );
    let p = polar::exercise(&json!({"id": "ex1", "start_time": "2026-03-04T18:05:00", "start_time_utc_offset": 120,
        "duration": "PT1H2M3S", "calories": 530, "distance": 10_400.0, "heart_rate": {"average": 148, "maximum": 179},
        "sport": "RUNNING"}));
    let Some(s) = s else { panic!("strava") };
    let Some(p) = p else { panic!("polar") };
    assert_eq!(
        (s.id.as_str(), s.day, s.utc_offset, s.sport),
        ("12345678901", date!(2026 - 03 - 04), Some(offset!(-5)), Sport::Running)
    );
    assert_eq!(s.end - s.start, time::Duration::hours(1));
    assert_eq!((p.start, p.end - p.start), (datetime!(2026-03-04 16:05 UTC), time::Duration::seconds(3723)));
    assert_eq!((p.avg_heart_rate, p.utc_offset), (Some(148.0), Some(offset!(+2))));
    assert_eq!(polar::iso_duration("PT45M12.5S"), Some(2712.5));
    assert_eq!(polar::iso_duration("1H"), None);
}

#[test]
fn google_points_read_int64_strings_and_second_offsets() {
    let step =
        |t: &str, n: &str| json!({"steps": {"interval": {"startTime": t, "startUtcOffset": "-25200s"}, "count": n}});
    // 06:30 UTC is 23:30 the day before at -07:00.
    let days = google_health::steps(&[
        step("2026-03-04T06:30:00Z", "120"),
        step("2026-03-04T15:00:00Z", "4000"),
        step("2026-03-04T16:00:00Z", "1000"),
    ]);
    let w = google_health::weights(&[
        json!({"weight": {"sampleTime": {"physicalTime": "2026-03-04T14:00:00Z", "utcOffset": "-25200s"}, "weightGrams": 81234.0}}),
    ]);
    let hr = google_health::heart_rate(
        &json!({"heartRate": {"sampleTime": {"physicalTime": "2026-03-04T14:00:00Z", "utcOffset": "3600s"}, "beatsPerMinute": "62"}}),
    );

    assert_eq!(
        days.iter().map(|d| (d.day, d.metrics.get(&Metric::Steps).copied())).collect::<Vec<_>>(),
        vec![(date!(2026 - 03 - 03), Some(120.0)), (date!(2026 - 03 - 04), Some(5000.0))]
    );
    assert_eq!(days[1].utc_offset, Some(offset!(-7)));
    assert_eq!(w[0].metrics.get(&Metric::WeightKg), Some(&81.234));
    assert_eq!(hr.map(|s| (s.value, s.utc_offset)), Some((62.0, Some(offset!(+1)))));
}

#[test]
fn a_garmin_daily_takes_its_calendar_date_and_offset() {
    let d = garmin::daily(&json!({"calendarDate": "2026-03-04", "startTimeOffsetInSeconds": 19_800, "steps": 8_123,
        "distanceInMeters": 6_301.5, "activeKilocalories": 420, "bmrKilocalories": 1_650, "restingHeartRateInBeatsPerMinute": 52}));
    let Some(d) = d else { panic!("daily") };
    assert_eq!((d.day, d.utc_offset), (date!(2026 - 03 - 04), Some(offset!(+5:30))));
    assert_eq!(d.metrics.get(&Metric::TotalEnergyKcal), Some(&2070.0));
}

#[test]
fn every_provider_can_sync_and_has_a_backfill_plan_that_fits() {
    for p in ProviderId::ALL {
        let plan = backfill_plan(p);
        assert!(can_sync(p), "{p}");
        assert!(plan.chunk_days >= 1 && plan.chunk_days <= plan.max_days, "{p}");
    }
    assert_eq!(backfill_plan(ProviderId::Polar).max_days, 28);
}
