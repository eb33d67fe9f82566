//! Withings' data services, form POSTs with a Bearer token: `/measure` `action=getmeas`, `/v2/measure`
//! `action=getactivity`, `/v2/sleep` `action=getsummary`. Answers are `{"status", "body"}` with HTTP 200, also
//! for errors: a bad token is status 401, the budget spent is status 601. Pages continue while `more`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::{Date, Duration, OffsetDateTime};

use crate::app::{App, rate_headers};
use crate::data::{DATE, gate};
use crate::days::{Day, dates, zone_name};
use crate::people;
use crate::store::RateDecision;

const GROUPS_PER_PAGE: usize = 100;
const DAYS_PER_PAGE: usize = 20;

fn wrapped(status: i64, body: Value, error: Option<&str>, d: Option<RateDecision>) -> Response {
    let mut v = json!({"status": status, "body": body});
    if let Some(e) = error {
        v["error"] = json!(e);
    }
    let mut res = (StatusCode::OK, axum::Json(v)).into_response();
    if let Some(d) = d {
        rate_headers(res.headers_mut(), d);
    }
    res
}

fn invalid(d: RateDecision, why: &str) -> Response {
    wrapped(503, json!({}), Some(&format!("Invalid Params: {why}")), Some(d))
}

/// Runs `gate` and words its refusals the Withings way (HTTP 200 with status 401 or 601, the `429` fault
/// included); the `500` fault stays an HTTP 500.
async fn withings_gate(app: &App, headers: &HeaderMap) -> Result<(String, RateDecision), Response> {
    match gate(app, headers).await {
        Ok((bearer, d)) => Ok((bearer.user, d)),
        Err(res) if res.status() == StatusCode::UNAUTHORIZED => {
            Err(wrapped(401, json!({}), Some("XRequestID: sandbox invalid_token"), None))
        }
        Err(res) if res.status() == StatusCode::TOO_MANY_REQUESTS => {
            Err(wrapped(601, json!({}), Some("Too Many Requests"), None))
        }
        Err(res) => Err(res),
    }
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn page<T>(all: Vec<T>, f: &[(String, String)], size: usize) -> Result<(Vec<T>, bool, usize), &'static str> {
    let skip = match field(f, "offset").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => return Err("offset must be a number"),
    };
    let more = skip + size < all.len();
    Ok((all.into_iter().skip(skip).take(size).collect(), more, skip + size))
}

fn ymd(f: &[(String, String)]) -> Result<(Date, Date), &'static str> {
    let get = |n: &str| field(f, n).and_then(|v| Date::parse(v, DATE).ok());
    match (get("startdateymd"), get("enddateymd")) {
        (Some(s), Some(e)) if s <= e && e - s <= Duration::days(400) => Ok((s, e)),
        _ => Err("startdateymd and enddateymd must be dates YYYY-MM-DD, in order, at most 400 days apart"),
    }
}

/// `POST /measure` with `action=getmeas`: weight groups (meastype 1, unit -2: value 8123 = 81.23 kg).
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn withings_measure(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (user, d) = match withings_gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let f = form(&body);
    if field(&f, "action") != Some("getmeas") {
        return invalid(d, "action must be getmeas");
    }
    let unix = |n: &str| {
        field(&f, n).and_then(|v| v.parse::<i64>().ok()).and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
    };
    let now = OffsetDateTime::now_utc();
    let (start, end) = match (unix("startdate"), unix("enddate"), unix("lastupdate")) {
        (Some(s), Some(e), _) if s <= e => (s, e.min(now)),
        (_, _, Some(l)) => (l, now),
        _ => return invalid(d, "startdate and enddate (Unix seconds, in order) or lastupdate are required"),
    };
    if end - start > Duration::days(400) {
        return invalid(d, "the sandbox serves at most 400 days per request");
    }
    let person = people::person(app.provider, &user);
    let zone = zone_name(person.utc_offset_minutes);
    let weight_asked = field(&f, "meastype").is_none_or(|t| t == "1")
        && field(&f, "meastypes").is_none_or(|t| t.split(',').any(|t| t == "1"));
    let groups: Vec<Value> = dates(start.date() - Duration::days(1), end.date() + Duration::days(1))
        .filter(|_| weight_asked)
        .filter_map(|date| {
            let day = Day::new(app.provider, &user, &person, date);
            let (at, kg) = day.weighing()?;
            (at >= start && at <= end).then(|| {
                json!({
                    "grpid": day.r("grpid", 1_000_000_000, 9_999_999_999), "attrib": 0,
                    "date": at.unix_timestamp(), "created": at.unix_timestamp() + 40,
                    "modified": at.unix_timestamp() + 40, "category": 1, "deviceid": day.id("scale"),
                    "hash_deviceid": day.id("scale"), "comment": null,
                    "measures": [{"value": (kg * 100.0).round() as i64, "type": 1, "unit": -2, "algo": 0, "fm": 1}],
                })
            })
        })
        .collect();
    let (groups, more, offset) = match page(groups, &f, GROUPS_PER_PAGE) {
        Ok(p) => p,
        Err(why) => return invalid(d, why),
    };
    let body = json!({"updatetime": now.unix_timestamp(), "timezone": zone, "measuregrps": groups,
        "more": more, "offset": if more { offset } else { 0 }});
    wrapped(0, body, None, Some(d))
}

/// `POST /v2/measure` with `action=getactivity`: one day per item, local `date` and `timezone`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn withings_activity(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (user, d) = match withings_gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let f = form(&body);
    if field(&f, "action") != Some("getactivity") {
        return invalid(d, "action must be getactivity");
    }
    let (start, end) = match ymd(&f) {
        Ok(r) => r,
        Err(why) => return invalid(d, why),
    };
    let person = people::person(app.provider, &user);
    let today = OffsetDateTime::now_utc().to_offset(crate::data::offset(&person)).date();
    let days: Vec<Value> = dates(start, end.min(today))
        .map(|date| {
            let day = Day::new(app.provider, &user, &person, date);
            let a = day.activity();
            json!({
                "date": date.to_string(), "timezone": zone_name(person.utc_offset_minutes), "deviceid": null,
                "hash_deviceid": null, "brand": 18, "is_tracker": true, "steps": a.steps, "distance": a.distance_m,
                "elevation": day.r("elev", 0, 40), "soft": day.r("soft", 3_000, 9_000),
                "moderate": day.r("mod", 600, 2_400), "intense": day.r("int", 0, 1_200),
                "active": day.r("active", 1_200, 4_000), "calories": a.active_kcal, "totalcalories": a.total_kcal,
                "hr_average": day.r("hr-avg", 66, 84), "hr_min": day.r("hr-min", 48, 60),
                "hr_max": day.r("hr-max", 120, 170),
            })
        })
        .collect();
    let (days, more, offset) = match page(days, &f, DAYS_PER_PAGE) {
        Ok(p) => p,
        Err(why) => return invalid(d, why),
    };
    wrapped(0, json!({"activities": days, "more": more, "offset": if more { offset } else { 0 }}), None, Some(d))
}

/// `POST /v2/sleep` with `action=getsummary`: one night per item, `date` the local wake-up date.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn withings_sleep(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (user, d) = match withings_gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let f = form(&body);
    if field(&f, "action") != Some("getsummary") {
        return invalid(d, "action must be getsummary");
    }
    let (start, end) = match ymd(&f) {
        Ok(r) => r,
        Err(why) => return invalid(d, why),
    };
    let person = people::person(app.provider, &user);
    let now = OffsetDateTime::now_utc();
    let nights: Vec<Value> = dates(start, end)
        .filter_map(|date| {
            let day = Day::new(app.provider, &user, &person, date);
            let n = day.night();
            (n.end <= now).then(|| {
                json!({
                    "id": day.r("sleep-id", 1_000_000_000, 9_999_999_999),
                    "timezone": zone_name(person.utc_offset_minutes), "model": 32, "model_id": 63,
                    "startdate": n.start.unix_timestamp(), "enddate": n.end.unix_timestamp(),
                    "date": date.to_string(), "created": n.end.unix_timestamp() + 600,
                    "modified": n.end.unix_timestamp() + 600,
                    "data": {"total_sleep_time": n.asleep_s(), "deepsleepduration": n.deep_s,
                        "lightsleepduration": n.light_s, "remsleepduration": n.rem_s, "wakeupduration": n.awake_s,
                        "sleep_efficiency": n.efficiency as f64 / 100.0, "hr_average": n.avg_hr,
                        "hr_min": n.lowest_hr, "sleep_score": n.score, "total_timeinbed": n.in_bed_s()},
                })
            })
        })
        .collect();
    let (nights, more, offset) = match page(nights, &f, DAYS_PER_PAGE) {
        Ok(p) => p,
        Err(why) => return invalid(d, why),
    };
    wrapped(0, json!({"series": nights, "more": more, "offset": if more { offset } else { 0 }}), None, Some(d))
}
