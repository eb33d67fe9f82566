//! Polar AccessLink data, each 403 until the user is registered: `GET /v3/exercises` (the last 30 days),
//! `GET /v3/users/activities?from=&to=` (daily activity, at most 28 days per request) and `GET /v3/users/sleep`
//! (`{"nights": [...]}`, the last 28 days).

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime};

use crate::app::App;
use crate::data::{DATE, bad_request, gate, ok, param, polar_registered, query, stamp, with_rate};
use crate::days::{Day, dates};
use crate::people;

const SPORTS: [&str; 4] = ["RUNNING", "ROAD_BIKING", "STRENGTH_TRAINING", "WALKING"];
const EXERCISE_DAYS: i64 = 30;
const SLEEP_DAYS: i64 = 28;

fn naive(t: OffsetDateTime) -> String {
    t.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")).unwrap_or_default()
}

/// `PT1H2M3S`.
fn iso(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut out = "PT".to_string();
    if h > 0 {
        out += &format!("{h}H");
    }
    if m > 0 {
        out += &format!("{m}M");
    }
    if s > 0 || out == "PT" {
        out += &format!("{s}S");
    }
    out
}

/// `GET /v3/exercises`: the registered user's exercises of the last 30 days, oldest first.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn polar_exercises(State(app): State<App>, headers: HeaderMap) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    if polar_registered(&app, &bearer, None).is_none() {
        return with_rate(d, StatusCode::FORBIDDEN, None);
    }
    let person = people::person(app.provider, &bearer.user);
    let user_id = people::numeric_id(app.provider, &bearer.user);
    let now = OffsetDateTime::now_utc();
    let local = now.to_offset(crate::data::offset(&person));
    let list: Vec<Value> = dates(local.date() - Duration::days(EXERCISE_DAYS), local.date())
        .filter_map(|date| {
            let day = Day::new(app.provider, &bearer.user, &person, date);
            let w = day.workout().filter(|w| w.end <= now && w.start >= now - Duration::days(EXERCISE_DAYS))?;
            let local = w.start.to_offset(day.offset());
            Some(json!({
                "id": day.id("exercise"), "upload_time": stamp(w.end + Duration::minutes(10)),
                "polar_user": format!("https://www.polaraccesslink.com/v3/users/{user_id}"),
                "device": "Polar Vantage V3", "device_id": day.id("device")[..8].to_uppercase(),
                "start_time": naive(local), "start_time_utc_offset": person.utc_offset_minutes,
                "duration": iso((w.end - w.start).whole_seconds()), "calories": w.kcal,
                "distance": w.distance_m.map(|m| m as f64), "heart_rate": {"average": w.avg_hr, "maximum": w.max_hr},
                "training_load": day.r("load", 20, 180) as f64, "sport": SPORTS[w.sport],
                "has_route": w.distance_m.is_some(), "detailed_sport_info": SPORTS[w.sport],
            }))
        })
        .collect();
    ok(d, Value::Array(list))
}

/// `GET /v3/users/activities?from=YYYY-MM-DD&to=YYYY-MM-DD`: one summary per local day, at most 28 days.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn polar_activities(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    if polar_registered(&app, &bearer, None).is_none() {
        return with_rate(d, StatusCode::FORBIDDEN, None);
    }
    let q = query(raw);
    let date = |n: &str| param(&q, n).and_then(|v| Date::parse(v, DATE).ok());
    let person = people::person(app.provider, &bearer.user);
    let today = OffsetDateTime::now_utc().to_offset(crate::data::offset(&person)).date();
    let (from, to) = match (date("from"), date("to")) {
        (Some(f), Some(t)) if f <= t && t - f < Duration::days(28) => (f, t),
        _ => return bad_request(d, "from and to must be dates YYYY-MM-DD, in order, at most 28 days apart"),
    };
    let list: Vec<Value> = dates(from, to.min(today))
        .map(|date| {
            let day = Day::new(app.provider, &bearer.user, &person, date);
            let a = day.activity();
            json!({
                "start_time": format!("{date}T00:00"), "end_time": format!("{date}T23:59:59"),
                "active_duration": iso(day.r("active", 3_600, 14_400) as i64),
                "inactive_duration": iso(day.r("inactive", 28_800, 43_200) as i64),
                "daily_activity": day.r("goal%", 40, 160) as f64, "calories": a.total_kcal,
                "active_calories": a.active_kcal, "steps": a.steps,
                "inactivity_alert_count": day.r("alerts", 0, 4), "distance_from_steps": a.distance_m as f64,
            })
        })
        .collect();
    ok(d, Value::Array(list))
}

/// `GET /v3/users/sleep`: the nights of the last 28 days.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn polar_sleep(State(app): State<App>, headers: HeaderMap) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    if polar_registered(&app, &bearer, None).is_none() {
        return with_rate(d, StatusCode::FORBIDDEN, None);
    }
    let person = people::person(app.provider, &bearer.user);
    let user_id = people::numeric_id(app.provider, &bearer.user);
    let now = OffsetDateTime::now_utc();
    let today = now.to_offset(crate::data::offset(&person)).date();
    let nights: Vec<Value> = dates(today - Duration::days(SLEEP_DAYS - 1), today)
        .filter_map(|date| {
            let day = Day::new(app.provider, &bearer.user, &person, date);
            let n = day.night();
            (n.end <= now).then(|| {
                json!({
                    "polar_user": format!("https://www.polaraccesslink.com/v3/users/{user_id}"),
                    "date": date.to_string(), "sleep_start_time": stamp(n.start), "sleep_end_time": stamp(n.end),
                    "device_id": "1111AAAA", "continuity": 2.9, "continuity_class": 3,
                    "light_sleep": n.light_s, "deep_sleep": n.deep_s, "rem_sleep": n.rem_s,
                    "unrecognized_sleep_stage": 0, "sleep_score": n.score, "total_interruption_duration": n.awake_s,
                    "sleep_charge": 3, "sleep_goal": 28_800, "sleep_rating": 3,
                    "short_interruption_duration": n.awake_s / 2, "long_interruption_duration": n.awake_s - n.awake_s / 2,
                    "sleep_cycles": day.r("cycles", 3, 6), "group_duration_score": 100.0,
                    "group_solidity_score": 75.0, "group_regeneration_score": 54.2,
                })
            })
        })
        .collect();
    ok(d, json!({"nights": nights}))
}
