//! Strava `GET /api/v3/athlete/activities?before=&after=&page=&per_page=`: summary activities, page-numbered
//! (`per_page` default 30, at most 200), oldest first when `after` is given, newest first otherwise.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

use crate::app::App;
use crate::data::{bad_request, gate, ok, param, query};
use crate::days::{Day, dates};
use crate::people;

const NAMES: [&str; 4] = ["Run", "Ride", "WeightTraining", "Walk"];

fn z(t: OffsetDateTime) -> String {
    t.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z")).unwrap_or_default()
}

#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn strava_activities(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let (bearer, d) = match gate(&app, &headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let q = query(raw);
    let num = |name: &str, default: i64| {
        param(&q, name).map_or(Ok(default), |v| v.parse::<i64>().map_err(|_| name.to_string()))
    };
    let now = OffsetDateTime::now_utc();
    let (after, before, page, per_page) =
        match (num("after", 0), num("before", now.unix_timestamp()), num("page", 1), num("per_page", 30)) {
            (Ok(a), Ok(b), Ok(p), Ok(pp)) => (a, b, p, pp),
            (Err(n), ..) | (_, Err(n), ..) | (_, _, Err(n), _) | (.., Err(n)) => {
                return bad_request(d, format!("{n} must be a whole number"));
            }
        };
    if page < 1 || !(1..=200).contains(&per_page) {
        return bad_request(d, "page must be at least 1 and per_page between 1 and 200");
    }
    let (Ok(from), Ok(to)) = (OffsetDateTime::from_unix_timestamp(after), OffsetDateTime::from_unix_timestamp(before))
    else {
        return bad_request(d, "after and before must be Unix seconds");
    };
    let from = from.max(now - Duration::days(800));
    let to = to.min(now);
    let person = people::person(app.provider, &bearer.user);
    let athlete = people::numeric_id(app.provider, &bearer.user);
    let offset = crate::data::offset(&person);
    let mut all: Vec<(OffsetDateTime, Value)> = if from >= to {
        Vec::new()
    } else {
        dates(from.date() - Duration::days(1), to.date() + Duration::days(1))
            .filter_map(|date| {
                let day = Day::new(app.provider, &bearer.user, &person, date);
                let w = day.workout()?;
                let secs = (w.end - w.start).whole_seconds();
                (w.start.unix_timestamp() > after && w.start.unix_timestamp() < before && w.end <= now).then(|| {
                    let local = w.start.to_offset(offset);
                    let name = NAMES[w.sport];
                    (w.start, json!({
                        "resource_state": 2, "athlete": {"id": athlete, "resource_state": 1},
                        "name": format!("Evening {name}"), "distance": w.distance_m.unwrap_or(0) as f64,
                        "moving_time": secs - day.r("stops", 0, 120) as i64, "elapsed_time": secs,
                        "total_elevation_gain": day.r("elev", 0, 120) as f64, "type": name, "sport_type": name,
                        "workout_type": null, "id": day.r("activity-id", 10_000_000_000, 19_999_999_999),
                        "start_date": z(w.start.to_offset(time::UtcOffset::UTC)),
                        "start_date_local": z(local.replace_offset(time::UtcOffset::UTC)),
                        "timezone": format!("(GMT{}) {}", local.offset().format(format_description!("[offset_hour sign:mandatory]:[offset_minute]")).unwrap_or_default(), crate::days::zone_name(person.utc_offset_minutes)),
                        "utc_offset": offset.whole_seconds() as f64, "has_heartrate": true,
                        "average_heartrate": w.avg_hr as f64, "max_heartrate": w.max_hr as f64,
                        "kilojoules": (w.sport == 1).then_some(w.kcal as f64 * 0.95),
                    }))
                })
            })
            .collect()
    };
    if param(&q, "after").is_some() {
        all.sort_by_key(|(t, _)| *t);
    } else {
        all.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    }
    let items: Vec<Value> =
        all.into_iter().skip(((page - 1) * per_page) as usize).take(per_page as usize).map(|(_, v)| v).collect();
    ok(d, Value::Array(items))
}
