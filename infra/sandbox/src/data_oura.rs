//! Oura's date-ranged collections beyond daily activity: `daily_sleep`, `sleep`, `daily_readiness`,
//! `daily_spo2` and `workout`, each deterministic per (user, day), paged like `daily_activity`.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use time::{Date, Duration, OffsetDateTime};

use crate::app::App;
use crate::data::{DATE, bad_request, decode_token, encode_token, gate, ok, param, query, stamp};
use crate::days::{Day, SPORTS};
use crate::people::{self, Person};

const DAYS_PER_PAGE: i64 = 31;

/// The documents one collection holds for one local day.
type Docs = fn(&Day<'_>) -> Vec<Value>;

/// `GET /v2/usercollection/{name}?start_date=&end_date=&next_token=`: `end_date` defaults to today and is
/// inclusive, `start_date` to the day before; 31 days per page.
pub(crate) async fn collection(
    app: &App,
    headers: &HeaderMap,
    raw: Option<String>,
    name: &str,
    docs: Docs,
) -> Response {
    let (bearer, d) = match gate(app, headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let q = query(raw);
    let person: Person = people::person(app.provider, &bearer.user);
    let today = OffsetDateTime::now_utc().to_offset(crate::data::offset(&person)).date();
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
    let prefix = format!("{name}:");
    let start = match param(&q, "next_token") {
        None => start,
        Some(t) => match decode_token(t, &prefix).and_then(|s| Date::parse(&s, DATE).ok()) {
            Some(from) => from,
            None => return bad_request(d, "next_token is not one this server issued"),
        },
    };
    let last = end.min(today);
    let mut data = Vec::new();
    let mut day = start;
    let mut days = 0;
    while day <= last && days < DAYS_PER_PAGE {
        data.extend(docs(&Day::new(app.provider, &bearer.user, &person, day)));
        day += Duration::days(1);
        days += 1;
    }
    let next = (day <= last).then(|| encode_token(&format!("{prefix}{day}")));
    ok(d, json!({"data": data, "next_token": next}))
}

fn at_4am(d: &Day<'_>) -> String {
    stamp(d.at(4 * 60))
}

fn daily_sleep(d: &Day<'_>) -> Vec<Value> {
    let n = d.night();
    let c = |w: &str| d.r(w, 50, 100);
    vec![json!({
        "id": d.id("daily_sleep"), "day": d.date.to_string(), "score": n.score, "timestamp": at_4am(d),
        "contributors": {"deep_sleep": c("c-deep"), "efficiency": c("c-eff"), "latency": c("c-lat"),
            "rem_sleep": c("c-rem"), "restfulness": c("c-rest"), "timing": c("c-time"), "total_sleep": c("c-total")},
    })]
}

fn sleep_doc(d: &Day<'_>, id: String, kind: &str, start: OffsetDateTime, n: &crate::days::Night) -> Value {
    json!({
        "id": id, "day": d.date.to_string(), "type": kind, "period": 0,
        "bedtime_start": stamp(start), "bedtime_end": stamp(start + Duration::seconds(n.in_bed_s() as i64)),
        "time_in_bed": n.in_bed_s(), "total_sleep_duration": n.asleep_s(), "awake_time": n.awake_s,
        "deep_sleep_duration": n.deep_s, "rem_sleep_duration": n.rem_s, "light_sleep_duration": n.light_s,
        "efficiency": n.efficiency, "latency": d.r("latency", 120, 1_500),
        "average_heart_rate": n.avg_hr as f64 + 0.25, "lowest_heart_rate": n.lowest_hr,
        "average_hrv": n.hrv_ms, "average_breath": 14.5, "restless_periods": d.r("restless", 80, 300),
        "readiness_score_delta": null, "sleep_score_delta": null, "sleep_phase_5_min": null,
        "heart_rate": null, "hrv": null, "movement_30_sec": null,
    })
}

/// The night's `long_sleep` period, and on some days an afternoon nap (`type: "sleep"`) the reader must not
/// take for the night.
fn sleep(d: &Day<'_>) -> Vec<Value> {
    let n = d.night();
    let mut out = vec![sleep_doc(d, d.id("sleep"), "long_sleep", n.start, &n)];
    if d.r("nap", 0, 3) == 0 {
        let nap = crate::days::Night {
            start: d.at(14 * 60),
            end: d.at(14 * 60 + 30),
            deep_s: 0,
            rem_s: 300,
            light_s: 1_200,
            awake_s: 300,
            efficiency: 83,
            avg_hr: n.avg_hr + 6,
            lowest_hr: n.lowest_hr + 5,
            hrv_ms: n.hrv_ms / 2,
            score: 0,
        };
        out.push(sleep_doc(d, d.id("nap"), "sleep", nap.start, &nap));
    }
    out
}

fn daily_readiness(d: &Day<'_>) -> Vec<Value> {
    vec![json!({
        "id": d.id("daily_readiness"), "day": d.date.to_string(), "score": d.r("readiness", 50, 96),
        "temperature_deviation": (d.r("temp", 0, 60) as f64 - 30.0) / 100.0, "temperature_trend_deviation": null,
        "timestamp": at_4am(d),
        "contributors": {"activity_balance": d.r("c1", 40, 100), "body_temperature": d.r("c2", 40, 100),
            "hrv_balance": d.r("c3", 40, 100), "previous_day_activity": d.r("c4", 40, 100),
            "previous_night": d.r("c5", 40, 100), "recovery_index": d.r("c6", 40, 100),
            "resting_heart_rate": d.r("c7", 40, 100), "sleep_balance": d.r("c8", 40, 100)},
    })]
}

fn daily_spo2(d: &Day<'_>) -> Vec<Value> {
    vec![json!({
        "id": d.id("daily_spo2"), "day": d.date.to_string(),
        "spo2_percentage": {"average": 94.0 + d.r("spo2", 0, 40) as f64 / 10.0},
        "breathing_disturbance_index": d.r("bdi", 0, 20),
    })]
}

fn workout(d: &Day<'_>) -> Vec<Value> {
    let Some(w) = d.workout() else { return vec![] };
    vec![json!({
        "id": d.id("workout"), "activity": SPORTS[w.sport], "calories": w.kcal, "day": d.date.to_string(),
        "distance": w.distance_m, "end_datetime": stamp(w.end), "intensity": "moderate", "label": null,
        "source": "autodetected", "start_datetime": stamp(w.start),
    })]
}

macro_rules! route {
    ($fn_name:ident, $name:literal, $docs:expr) => {
        #[tracing::instrument(skip_all, fields(provider = %app.provider))]
        pub(crate) async fn $fn_name(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
            collection(&app, &headers, raw, $name, $docs).await
        }
    };
}

route!(oura_daily_sleep, "daily_sleep", daily_sleep);
route!(oura_sleep, "sleep", sleep);
route!(oura_daily_readiness, "daily_readiness", daily_readiness);
route!(oura_daily_spo2, "daily_spo2", daily_spo2);
route!(oura_workout, "workout", workout);
