//! The slice of each provider's API the platform touches: Oura's data (deterministic per user and day), the
//! "who is this user" calls, and Polar's user registration.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset, Weekday};

use crate::app::{App, data_fault, rate_headers, token_fault, too_many_requests};
use crate::auth::{bearer_token, unauthorized};
use crate::ids;
use crate::people::{self, Person};

use crate::store::{Bearer, RateDecision};

pub(crate) const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");
pub(crate) const NAIVE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
/// Oura writes offsets as `+00:00`, never `Z`.
const STAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]");
const DAYS_PER_PAGE: i64 = 31;
const SAMPLES_PER_PAGE: usize = 1_000;
const SAMPLE_SECONDS: i64 = 300;

/// The preamble of every data call: count it, apply the data fault, check the bearer, spend the budget.
pub(crate) async fn gate(app: &App, headers: &HeaderMap) -> Result<(Bearer, RateDecision), Response> {
    app.with(|s| s.counters.data_requests += 1);
    if let Some(res) = data_fault(app).await {
        return Err(res);
    }
    let Some(token) = bearer_token(headers) else {
        return Err(unauthorized(app.provider, None));
    };
    let bearer = app.with(|s| s.bearer(token)).map_err(|e| unauthorized(app.provider, Some(e)))?;
    let decision = app.with(|s| s.spend());
    if !decision.allowed {
        return Err(too_many_requests(decision));
    }
    Ok((bearer, decision))
}

pub(crate) fn ok(d: RateDecision, body: Value) -> Response {
    let mut res = (StatusCode::OK, axum::Json(body)).into_response();
    rate_headers(res.headers_mut(), d);
    res
}

pub(crate) fn with_rate(d: RateDecision, status: StatusCode, body: Option<Value>) -> Response {
    let mut res = match body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    rate_headers(res.headers_mut(), d);
    res
}

pub(crate) fn bad_request(d: RateDecision, detail: impl Into<String>) -> Response {
    with_rate(d, StatusCode::BAD_REQUEST, Some(json!({"detail": detail.into()})))
}

pub(crate) fn query(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

pub(crate) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

pub(crate) fn offset(p: &Person) -> UtcOffset {
    UtcOffset::from_whole_seconds(p.utc_offset_minutes * 60).unwrap_or(UtcOffset::UTC)
}

pub(crate) fn stamp(t: OffsetDateTime) -> String {
    t.format(STAMP).unwrap_or_default()
}

/// RFC 3339, or a naive datetime taken as UTC. A `+` that arrived unencoded in the query became a space; it is
/// read back as `+`, as a lenient server would.
pub(crate) fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim().replace(' ', "+");
    OffsetDateTime::parse(&s, &Rfc3339)
        .ok()
        .or_else(|| PrimitiveDateTime::parse(&s, NAIVE).ok().map(PrimitiveDateTime::assume_utc))
        .or_else(|| Date::parse(&s, DATE).ok().map(|d| d.midnight().assume_utc()))
}

pub(crate) fn encode_token(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

pub(crate) fn decode_token(token: &str, prefix: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()?.strip_prefix(prefix).map(str::to_string)
}

/// One Oura `daily_activity` document for (user, day): the same numbers every time.
fn daily_activity(user: &str, person: &Person, day: Date) -> Value {
    let d = day.to_string();
    let r = |what: &str, lo: u64, hi: u64| ids::in_range(&["oura", user, &d, what], lo, hi);
    let base = ids::in_range(&["oura", user, "steps-base"], 5_000, 11_000);
    let weekend = matches!(day.weekday(), Weekday::Saturday | Weekday::Sunday);
    let factor = r("steps-factor", 55, 145) + if weekend { 15 } else { 0 };
    let steps = base * factor / 100;
    let active_calories = steps * r("kcal-per-1000-steps", 36, 48) / 1_000 + r("kcal-extra", 0, 120);
    let bmr = (10.0 * person.weight_kg + 625.0 * person.height_m - 5.0 * person.age as f64
        + if person.female { -161.0 } else { 5.0 }) as u64;
    let high = r("high", 0, 1_800);
    let medium = r("medium", 1_200, 4_800);
    let low = r("low", 7_200, 18_000);
    let non_wear = r("non-wear", 0, 3_600);
    let resting = r("resting", 25_200, 32_400);
    let sedentary = 86_400u64.saturating_sub(high + medium + low + non_wear + resting);
    let distance = steps * 78 / 100;
    let target_calories = r("target", 7, 12) * 50;
    let target_meters = target_calories * 20;
    let start = PrimitiveDateTime::new(day, time::Time::MIDNIGHT).assume_offset(offset(person)) + Duration::hours(4);
    json!({
        "id": ids::uuid_like(&["oura", user, "daily_activity", &d]),
        "class_5_min": null,
        "score": r("score", 55, 98),
        "active_calories": active_calories,
        "average_met_minutes": (r("met", 120, 220) as f64) / 100.0,
        "contributors": {
            "meet_daily_targets": r("c1", 40, 100),
            "move_every_hour": r("c2", 40, 100),
            "recovery_time": r("c3", 40, 100),
            "stay_active": r("c4", 40, 100),
            "training_frequency": r("c5", 40, 100),
            "training_volume": r("c6", 40, 100),
        },
        "equivalent_walking_distance": distance,
        "high_activity_met_minutes": high / 60 * 8,
        "high_activity_time": high,
        "inactivity_alerts": r("alerts", 0, 4),
        "low_activity_met_minutes": low / 60 * 2,
        "low_activity_time": low,
        "medium_activity_met_minutes": medium / 60 * 4,
        "medium_activity_time": medium,
        "meters_to_target": target_meters.saturating_sub(distance),
        "non_wear_time": non_wear,
        "resting_time": resting,
        "sedentary_met_minutes": sedentary / 60,
        "sedentary_time": sedentary,
        "steps": steps,
        "target_calories": target_calories,
        "target_meters": target_meters,
        "total_calories": bmr + active_calories,
        "day": d,
        "timestamp": stamp(start),
    })
}

/// One Oura heart rate sample at a 5-minute instant: asleep at night, a workout some evenings, awake otherwise.
fn heartrate_sample(user: &str, person: &Person, t: OffsetDateTime) -> Value {
    let unix = t.unix_timestamp().to_string();
    let local = t.to_offset(offset(person));
    let day = local.date().to_string();
    let hour = local.hour();
    let workout_day = ids::seed(&["oura", user, &day, "workout"]).is_multiple_of(3);
    let r = |lo: u64, hi: u64| ids::in_range(&["oura", user, &unix, "bpm"], lo, hi);
    let resting = ids::in_range(&["oura", user, "resting-hr"], 48, 62);
    let (source, bpm) = match hour {
        h if !(7..23).contains(&h) => ("sleep", resting + r(0, 8)),
        18 if workout_day && local.minute() < 45 => ("workout", r(118, 162)),
        _ => ("awake", resting + r(10, 38)),
    };
    json!({"bpm": bpm, "source": source, "timestamp": stamp(t)})
}

/// Oura `GET /v2/usercollection/daily_activity?start_date=&end_date=&next_token=`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn oura_daily_activity(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let q = query(raw);
    let person = people::person(app.provider, &bearer.user);
    let today = OffsetDateTime::now_utc().to_offset(offset(&person)).date();
    let parse = |name: &str| param(&q, name).map(|v| Date::parse(v, DATE).map_err(|_| name.to_string())).transpose();
    let (start, end) = match (parse("start_date"), parse("end_date")) {
        (Ok(s), Ok(e)) => {
            let end = e.unwrap_or(today);
            (s.unwrap_or(end - Duration::days(1)), end)
        }
        (Err(name), _) | (_, Err(name)) => return bad_request(d, format!("{name} must be a date YYYY-MM-DD")),
    };
    if start > end {
        return bad_request(d, "start_date must not be after end_date");
    }
    let start = match param(&q, "next_token") {
        None => start,
        Some(t) => match decode_token(t, "daily_activity:").and_then(|s| Date::parse(&s, DATE).ok()) {
            Some(from) => from,
            None => return bad_request(d, "next_token is not one this server issued"),
        },
    };
    let last = end.min(today);
    let mut data = Vec::new();
    let mut day = start;
    while day <= last && (data.len() as i64) < DAYS_PER_PAGE {
        data.push(daily_activity(&bearer.user, &person, day));
        day += Duration::days(1);
    }
    let next = (day <= last).then(|| encode_token(&format!("daily_activity:{day}")));
    ok(d, json!({"data": data, "next_token": next}))
}

/// Oura `GET /v2/usercollection/heartrate?start_datetime=&end_datetime=&next_token=`: 5-minute samples, UTC stamps.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn oura_heartrate(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let q = query(raw);
    let now = OffsetDateTime::now_utc();
    let parse = |name: &str| param(&q, name).map(|v| parse_datetime(v).ok_or_else(|| name.to_string())).transpose();
    let (start, end) = match (parse("start_datetime"), parse("end_datetime")) {
        (Ok(s), Ok(e)) => {
            let end = e.unwrap_or(now);
            (s.unwrap_or(end - Duration::days(1)), end)
        }
        (Err(name), _) | (_, Err(name)) => {
            return bad_request(d, format!("{name} must be an ISO 8601 datetime, e.g. 2026-03-04T00:00:00+00:00"));
        }
    };
    if start > end {
        return bad_request(d, "start_datetime must not be after end_datetime");
    }
    if end - start > Duration::days(30) {
        return bad_request(d, "the range between start_datetime and end_datetime is limited to 30 days");
    }
    let first = match param(&q, "next_token") {
        None => {
            start.unix_timestamp().div_euclid(SAMPLE_SECONDS) * SAMPLE_SECONDS
                + if start.unix_timestamp().rem_euclid(SAMPLE_SECONDS) == 0 { 0 } else { SAMPLE_SECONDS }
        }
        Some(t) => match decode_token(t, "heartrate:").and_then(|s| s.parse::<i64>().ok()) {
            Some(from) => from,
            None => return bad_request(d, "next_token is not one this server issued"),
        },
    };
    let person = people::person(app.provider, &bearer.user);
    let stop = end.min(now).unix_timestamp();
    let mut data = Vec::new();
    let mut t = first;
    while t < stop && data.len() < SAMPLES_PER_PAGE {
        if let Ok(at) = OffsetDateTime::from_unix_timestamp(t) {
            data.push(heartrate_sample(&bearer.user, &person, at));
        }
        t += SAMPLE_SECONDS;
    }
    let next = (t < stop).then(|| encode_token(&format!("heartrate:{t}")));
    ok(d, json!({"data": data, "next_token": next}))
}

/// Oura `GET /v2/usercollection/personal_info`: who the token's user is.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn oura_personal_info(State(app): State<App>, headers: HeaderMap) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let p = people::person(app.provider, &bearer.user);
    ok(
        d,
        json!({
            "id": people::uuid_id(app.provider, &bearer.user),
            "age": p.age,
            "weight": p.weight_kg,
            "height": p.height_m,
            "biological_sex": if p.female { "female" } else { "male" },
            "email": p.email,
        }),
    )
}

/// WHOOP `GET /developer/v2/user/profile/basic`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn whoop_profile(State(app): State<App>, headers: HeaderMap) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let p = people::person(app.provider, &bearer.user);
    ok(
        d,
        json!({
            "user_id": people::numeric_id(app.provider, &bearer.user),
            "email": p.email,
            "first_name": p.first_name,
            "last_name": p.last_name,
        }),
    )
}

/// Strava `GET /api/v3/athlete`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn strava_athlete(State(app): State<App>, headers: HeaderMap) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let p = people::person(app.provider, &bearer.user);
    ok(
        d,
        json!({
            "id": people::numeric_id(app.provider, &bearer.user),
            "username": bearer.user,
            "resource_state": 3,
            "firstname": p.first_name,
            "lastname": p.last_name,
            "sex": if p.female { "F" } else { "M" },
            "premium": false,
            "weight": p.weight_kg,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }),
    )
}

/// Garmin `GET /wellness-api/rest/user/id`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn garmin_user_id(State(app): State<App>, headers: HeaderMap) -> Response {
    match gate(&app, &headers).await {
        Ok((bearer, d)) => ok(d, json!({"userId": people::uuid_id(app.provider, &bearer.user)})),
        Err(res) => res,
    }
}

fn polar_user(app: &App, bearer: &Bearer, member_id: &str, registered: &str) -> Value {
    let p = people::person(app.provider, &bearer.user);
    json!({
        "polar-user-id": people::numeric_id(app.provider, &bearer.user),
        "member-id": member_id,
        "registration-date": registered,
        "first-name": p.first_name,
        "last-name": p.last_name,
        "birthdate": format!("{}-06-15", p.birth_year),
        "gender": if p.female { "FEMALE" } else { "MALE" },
        "weight": p.weight_kg,
        "height": (p.height_m * 100.0).round(),
        "extra-info": [],
    })
}

/// Polar `POST /v3/users {"member-id": "..."}`: 200 with the user, 409 when already registered.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn polar_register(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let member_id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("member-id").and_then(Value::as_str).map(str::to_string))
        .filter(|m| !m.trim().is_empty());
    let Some(member_id) = member_id else {
        return bad_request(d, "the body must be JSON {\"member-id\": \"...\"}");
    };
    let now = OffsetDateTime::now_utc();
    let at = format!("{}.000Z", now.format(NAIVE).unwrap_or_default());
    if app.with(|s| s.register(&bearer.client_id, &bearer.user, &member_id, &at)) {
        tracing::info!("user registered");
        ok(d, polar_user(&app, &bearer, &member_id, &at))
    } else {
        with_rate(d, StatusCode::CONFLICT, None)
    }
}

/// The token's user may only read itself; an unregistered user gets 403, as before registration at Polar.
pub(crate) fn polar_registered(app: &App, bearer: &Bearer, path_user: Option<&str>) -> Option<(String, String)> {
    let own = people::numeric_id(app.provider, &bearer.user).to_string();
    if path_user.is_some_and(|u| u != own) {
        return None;
    }
    app.with(|s| s.registration(&bearer.client_id, &bearer.user))
}

/// Polar `GET /v3/users/{user_id}`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn polar_user_info(
    State(app): State<App>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    match polar_registered(&app, &bearer, Some(&user_id)) {
        Some((member_id, at)) => ok(d, polar_user(&app, &bearer, &member_id, &at)),
        None => with_rate(d, StatusCode::FORBIDDEN, None),
    }
}

/// Polar `DELETE /v3/users/{user_id}`: deregisters the user and revokes the token. 204. Token faults apply.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn polar_delete_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    if let Some(res) = token_fault(&app).await {
        return res;
    }
    let Some(token) = bearer_token(&headers) else {
        return unauthorized(app.provider, None);
    };
    let bearer = match app.with(|s| s.bearer(token)) {
        Ok(b) => b,
        Err(e) => return unauthorized(app.provider, Some(e)),
    };
    if user_id != people::numeric_id(app.provider, &bearer.user).to_string() {
        return StatusCode::FORBIDDEN.into_response();
    }
    app.with(|s| s.revoke_user(&bearer.client_id, &bearer.user));
    tracing::info!("user deregistered");
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Provider;

    #[test]
    fn datetimes_are_read_leniently() {
        let want = parse_datetime("2026-03-04T10:00:00+02:00").map(|t| t.unix_timestamp());
        assert!(want.is_some());
        assert_eq!(parse_datetime("2026-03-04T10:00:00 02:00").map(|t| t.unix_timestamp()), want);
        assert_eq!(parse_datetime("2026-03-04T08:00:00").map(|t| t.unix_timestamp()), want);
        assert_eq!(parse_datetime("2026-03-04T08:00:00Z").map(|t| t.unix_timestamp()), want);
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn an_activity_day_adds_up_to_a_day() {
        let p = people::person(Provider::Oura, "u");
        let Ok(day) = Date::from_calendar_date(2026, time::Month::March, 4) else { panic!("bad date") };
        let a = daily_activity("u", &p, day);
        let secs: u64 = [
            "high_activity_time",
            "medium_activity_time",
            "low_activity_time",
            "non_wear_time",
            "resting_time",
            "sedentary_time",
        ]
        .iter()
        .filter_map(|k| a[*k].as_u64())
        .sum();
        assert_eq!(secs, 86_400);
        assert_eq!(a["day"], "2026-03-04");
        assert_eq!(a, daily_activity("u", &p, day));
    }
}
