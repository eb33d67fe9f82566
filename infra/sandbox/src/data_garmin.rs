//! Garmin Health API pull `GET /wellness-api/rest/dailies?uploadStartTimeInSeconds=&uploadEndTimeInSeconds=`:
//! the daily summaries UPLOADED in the range (at most 86,400 s). Each day is uploaded once, 10 minutes to
//! 5 hours after its local midnight ends, so a day's summary is found in the following day's uploads.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::app::App;
use crate::data::{gate, ok, param, query, with_rate};
use crate::days::{Day, dates};
use crate::people;

const MAX_RANGE: i64 = 86_400;

fn uploaded(d: &Day<'_>) -> OffsetDateTime {
    d.at(24 * 60 + d.r("upload", 10, 300))
}

#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn garmin_dailies(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let q = query(raw);
    let secs = |n: &str| {
        param(&q, n).and_then(|v| v.parse::<i64>().ok()).and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
    };
    let (start, end) = match (secs("uploadStartTimeInSeconds"), secs("uploadEndTimeInSeconds")) {
        (Some(s), Some(e)) if s < e && (e - s).whole_seconds() <= MAX_RANGE => (s, e),
        _ => {
            let message = format!(
                "uploadStartTimeInSeconds and uploadEndTimeInSeconds are required, in order, at most {MAX_RANGE} s apart"
            );
            return with_rate(d, StatusCode::BAD_REQUEST, Some(json!({"errorMessage": message})));
        }
    };
    let person = people::person(app.provider, &bearer.user);
    let now = OffsetDateTime::now_utc();
    let list: Vec<Value> = dates(start.date() - Duration::days(2), end.date())
        .filter_map(|date| {
            let day = Day::new(app.provider, &bearer.user, &person, date);
            let at = uploaded(&day);
            if at < start || at >= end || at > now {
                return None;
            }
            let a = day.activity();
            let n = day.night();
            let bmr = a.total_kcal - a.active_kcal;
            Some(json!({
                "summaryId": format!("x{}-{}", &day.id("summary")[..8], day.at(0).unix_timestamp()),
                "calendarDate": date.to_string(), "activityType": "WALKING",
                "activeTimeInSeconds": day.r("active", 2_400, 9_000), "startTimeInSeconds": day.at(0).unix_timestamp(),
                "startTimeOffsetInSeconds": day.offset().whole_seconds(), "durationInSeconds": 86_400,
                "steps": a.steps, "distanceInMeters": a.distance_m as f64, "activeKilocalories": a.active_kcal,
                "bmrKilocalories": bmr, "moderateIntensityDurationInSeconds": day.r("mod", 600, 3_000),
                "vigorousIntensityDurationInSeconds": day.r("vig", 0, 1_800), "floorsClimbed": day.r("floors", 0, 20),
                "minHeartRateInBeatsPerMinute": n.lowest_hr, "averageHeartRateInBeatsPerMinute": n.avg_hr + 14,
                "maxHeartRateInBeatsPerMinute": day.r("max-hr", 130, 180), "restingHeartRateInBeatsPerMinute": n.lowest_hr + 2,
                "averageStressLevel": day.r("stress", 15, 55), "stepsGoal": 8_000,
            }))
        })
        .collect();
    ok(d, Value::Array(list))
}
