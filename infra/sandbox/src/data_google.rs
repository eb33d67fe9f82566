//! Google Health API v4 `GET /v4/users/me/dataTypes/{dataType}/dataPoints?pageSize=&pageToken=&filter=` for
//! `steps` (hourly intervals here), `weight`, `exercise`, `sleep` and `heart-rate` (every 15 minutes). The
//! filter is a civil-time range on the type's field (`steps.interval.civil_start_time >= "2026-03-01" AND
//! steps.interval.civil_start_time < "2026-03-08"`); int64 fields are strings; offsets like `"-18000s"`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime};

use crate::app::App;
use crate::data::{DATE, decode_token, encode_token, gate, ok, param, query, with_rate};
use crate::days::{Day, dates};
use crate::people;
use crate::store::RateDecision;

const EXERCISE: [&str; 4] = ["RUNNING", "BIKING", "WEIGHTLIFTING", "WALKING"];

fn error(d: RateDecision, status: StatusCode, message: String) -> Response {
    let label = if status == StatusCode::NOT_FOUND { "NOT_FOUND" } else { "INVALID_ARGUMENT" };
    with_rate(d, status, Some(json!({"error": {"code": status.as_u16(), "message": message, "status": label}})))
}

fn rfc(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
        .unwrap_or_default()
}

fn off(d: &Day<'_>) -> String {
    format!("{}s", d.offset().whole_seconds())
}

/// The filter field each data type is ranged by, and its page size limit.
fn kind(data_type: &str) -> Option<(&'static str, usize)> {
    Some(match data_type {
        "steps" => ("steps.interval.civil_start_time", 10_000),
        "weight" => ("weight.sample_time.civil_time", 10_000),
        "exercise" => ("exercise.interval.civil_start_time", 25),
        "sleep" => ("sleep.interval.civil_start_time", 25),
        "heart-rate" => ("heart_rate.sample_time.civil_time", 10_000),
        _ => return None,
    })
}

/// `FIELD >= "A" AND FIELD < "B"` with civil dates or date-times.
fn civil_range(filter: &str, field: &str) -> Option<(PrimitiveDateTime, PrimitiveDateTime)> {
    let civil = |s: &str| {
        let s = s.trim().trim_matches('"');
        Date::parse(s, DATE).ok().map(|d| d.midnight()).or_else(|| PrimitiveDateTime::parse(s, crate::data::NAIVE).ok())
    };
    let (lo, hi) = filter.split_once(" AND ")?;
    let lo = lo.trim().strip_prefix(field)?.trim().strip_prefix(">=")?;
    let hi = hi.trim().strip_prefix(field)?.trim().strip_prefix('<')?;
    Some((civil(lo)?, civil(hi)?))
}

fn name(d: &Day<'_>, kind: &str, n: u64) -> String {
    format!(
        "users/me/dataTypes/{kind}/dataPoints/{}",
        crate::ids::in_range(&[d.provider, d.user, &d.date.to_string(), kind, &n.to_string()], 1, u64::MAX / 2)
    )
}

fn source() -> Value {
    json!({"recordingMethod": "PASSIVELY_MEASURED", "device": {"manufacturer": "Google", "displayName": "Pixel Watch 4"}, "platform": "FITBIT"})
}

/// The points of one local day, each with its civil (local) time for the filter.
fn points(kind: &str, d: &Day<'_>, now: OffsetDateTime) -> Vec<(PrimitiveDateTime, Value)> {
    let civil = |t: OffsetDateTime| {
        let l = t.to_offset(d.offset());
        PrimitiveDateTime::new(l.date(), l.time())
    };
    let mut out = Vec::new();
    match kind {
        "steps" => {
            let total = d.activity().steps;
            let hours: Vec<u64> = (7..23).collect();
            let weights: Vec<u64> = hours.iter().map(|h| d.r(&format!("h{h}"), 1, 10)).collect();
            let sum: u64 = weights.iter().sum();
            let mut left = total;
            for (i, h) in hours.iter().enumerate() {
                let count = if i + 1 == hours.len() { left } else { total * weights[i] / sum };
                left -= count;
                let start = d.at(h * 60);
                if start + Duration::hours(1) > now {
                    break;
                }
                out.push((civil(start), json!({"name": name(d, "steps", *h), "dataSource": source(),
                    "steps": {"interval": {"startTime": rfc(start), "startUtcOffset": off(d),
                        "endTime": rfc(start + Duration::hours(1)), "endUtcOffset": off(d)}, "count": count.to_string()}})));
            }
        }
        "weight" => {
            if let Some((at, kg)) = d.weighing().filter(|(at, _)| *at <= now) {
                out.push((civil(at), json!({"name": name(d, "weight", 0), "dataSource": source(),
                    "weight": {"sampleTime": {"physicalTime": rfc(at), "utcOffset": off(d)}, "weightGrams": kg * 1000.0}})));
            }
        }
        "exercise" => {
            if let Some(w) = d.workout().filter(|w| w.end <= now) {
                out.push((civil(w.start), json!({"name": name(d, "exercise", 0), "dataSource": source(),
                    "exercise": {"interval": {"startTime": rfc(w.start), "startUtcOffset": off(d), "endTime": rfc(w.end),
                        "endUtcOffset": off(d)}, "exerciseType": EXERCISE[w.sport], "displayName": EXERCISE[w.sport],
                        "activeDuration": format!("{}s", (w.end - w.start).whole_seconds()),
                        "metricsSummary": {"caloriesKcal": w.kcal as f64, "averageHeartRateBeatsPerMinute": w.avg_hr.to_string()}}})));
            }
        }
        "sleep" => {
            let n = d.night();
            if n.end <= now {
                let stage = |t: &str, s: u64| json!({"type": t, "minutes": (s / 60).to_string(), "count": "4"});
                out.push((civil(n.start), json!({"name": name(d, "sleep", 0), "dataSource": source(),
                    "sleep": {"interval": {"startTime": rfc(n.start), "startUtcOffset": off(d), "endTime": rfc(n.end),
                        "endUtcOffset": off(d)}, "type": "STAGES",
                        "summary": {"minutesInSleepPeriod": (n.in_bed_s() / 60).to_string(),
                            "minutesAsleep": (n.asleep_s() / 60).to_string(), "minutesAwake": (n.awake_s / 60).to_string(),
                            "stagesSummary": [stage("AWAKE", n.awake_s), stage("LIGHT", n.light_s), stage("DEEP", n.deep_s), stage("REM", n.rem_s)]}}})));
            }
        }
        _ => {
            let resting = crate::ids::in_range(&[d.provider, d.user, "resting-hr"], 48, 62);
            for q in 0..96u64 {
                let at = d.at(q * 15);
                if at > now {
                    break;
                }
                out.push((
                    civil(at),
                    json!({"name": name(d, "heart-rate", q), "dataSource": source(),
                    "heartRate": {"sampleTime": {"physicalTime": rfc(at), "utcOffset": off(d)},
                        "beatsPerMinute": (resting + d.r(&format!("bpm{q}"), 0, 40)).to_string()}}),
                ));
            }
        }
    }
    out
}

#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn google_data_points(
    State(app): State<App>,
    headers: HeaderMap,
    Path(data_type): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let Some((field, max)) = kind(&data_type) else {
        return error(d, StatusCode::NOT_FOUND, format!("the sandbox serves no data type `{data_type}`"));
    };
    let q = query(raw);
    let Some((lo, hi)) = param(&q, "filter").and_then(|f| civil_range(f, field)) else {
        return error(
            d,
            StatusCode::BAD_REQUEST,
            format!("filter must be `{field} >= \"YYYY-MM-DD\" AND {field} < \"YYYY-MM-DD\"`"),
        );
    };
    if hi - lo > Duration::days(400) {
        return error(d, StatusCode::BAD_REQUEST, "the sandbox serves at most 400 days per filter".into());
    }
    let size = match param(&q, "pageSize").map(str::parse::<usize>) {
        None => {
            if max == 25 {
                25
            } else {
                1_440
            }
        }
        Some(Ok(s)) if s >= 1 => s.min(max),
        _ => return error(d, StatusCode::BAD_REQUEST, "pageSize must be a positive number".into()),
    };
    let prefix = format!("{data_type}:{lo}:{hi}:");
    let skip = match param(&q, "pageToken") {
        None => 0,
        Some(t) => match decode_token(t, &prefix).and_then(|s| s.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                return error(
                    d,
                    StatusCode::BAD_REQUEST,
                    "pageToken is not one this server issued for this filter".into(),
                );
            }
        },
    };
    let person = people::person(app.provider, &bearer.user);
    let now = OffsetDateTime::now_utc();
    let all: Vec<Value> = dates(lo.date() - Duration::days(1), hi.date())
        .flat_map(|date| points(&data_type, &Day::new(app.provider, &bearer.user, &person, date), now))
        .filter(|(t, _)| *t >= lo && *t < hi)
        .map(|(_, v)| v)
        .collect();
    let page: Vec<Value> = all.iter().skip(skip).take(size).cloned().collect();
    let mut body = json!({"dataPoints": page});
    if skip + size < all.len() {
        body["nextPageToken"] = json!(encode_token(&format!("{prefix}{}", skip + size)));
    }
    ok(d, body)
}
