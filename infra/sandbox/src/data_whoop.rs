//! WHOOP v2 collections: `/developer/v2/cycle`, `/recovery`, `/activity/sleep`, `/activity/workout`. Records
//! whose `start` falls in `[start, end)`, newest first, `limit` (default 10, at most 25) per page with an
//! opaque `nextToken`; times in UTC with the person's `timezone_offset`.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

use crate::app::App;
use crate::data::{bad_request, decode_token, encode_token, gate, ok, param, parse_datetime, query};
use crate::days::{Day, SPORTS, dates};
use crate::people;

fn utc(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC).format(fmt).unwrap_or_default()
}

fn tz(d: &Day<'_>) -> String {
    crate::data::offset(d.person)
        .format(format_description!("[offset_hour sign:mandatory]:[offset_minute]"))
        .unwrap_or_default()
}

fn cycle_id(d: &Day<'_>) -> u64 {
    d.r("cycle-id", 100_000_000, 999_999_999)
}

/// The records of one local day, each with the instant the range filter compares (its `start`).
fn records(kind: &str, d: &Day<'_>, user_id: u64, now: OffsetDateTime) -> Vec<(OffsetDateTime, Value)> {
    let n = d.night();
    let scored = |t: OffsetDateTime| (utc(t + Duration::minutes(20)), utc(t + Duration::hours(3)));
    match kind {
        "cycle" => {
            let next = Day::new(crate::provider::Provider::Whoop, d.user, d.person, d.date + Duration::days(1)).night();
            let end = (next.start <= now).then_some(next.start);
            let (created, updated) = scored(n.start);
            vec![(
                n.start,
                json!({
                    "id": cycle_id(d), "user_id": user_id, "created_at": created, "updated_at": updated,
                    "start": utc(n.start), "end": end.map(utc), "timezone_offset": tz(d), "score_state": "SCORED",
                    "score": {"strain": d.r("strain", 40, 190) as f64 / 10.0,
                        "kilojoule": (d.activity().total_kcal as f64 * 4.184).round(),
                        "average_heart_rate": n.avg_hr + 14, "max_heart_rate": d.r("max-hr", 140, 185)},
                }),
            )]
        }
        "sleep" => {
            let (created, updated) = scored(n.end);
            vec![(
                n.start,
                json!({
                    "id": d.id("whoop-sleep"), "cycle_id": cycle_id(d), "v1_id": null, "user_id": user_id,
                    "created_at": created, "updated_at": updated, "start": utc(n.start), "end": utc(n.end),
                    "timezone_offset": tz(d), "nap": false, "score_state": "SCORED",
                    "score": {
                        "stage_summary": {
                            "total_in_bed_time_milli": n.in_bed_s() * 1000, "total_awake_time_milli": n.awake_s * 1000,
                            "total_no_data_time_milli": 0, "total_light_sleep_time_milli": n.light_s * 1000,
                            "total_slow_wave_sleep_time_milli": n.deep_s * 1000,
                            "total_rem_sleep_time_milli": n.rem_s * 1000,
                            "sleep_cycle_count": d.r("cycles", 3, 6), "disturbance_count": d.r("dist", 3, 18)},
                        "sleep_needed": {"baseline_milli": 27_000_000, "need_from_sleep_debt_milli": 0,
                            "need_from_recent_strain_milli": 0, "need_from_recent_nap_milli": 0},
                        "respiratory_rate": 15.5, "sleep_performance_percentage": n.score,
                        "sleep_consistency_percentage": d.r("consistency", 60, 95),
                        "sleep_efficiency_percentage": n.efficiency as f64 + 0.5},
                }),
            )]
        }
        "recovery" => {
            let (created, updated) = scored(n.end);
            vec![(
                n.start,
                json!({
                    "cycle_id": cycle_id(d), "sleep_id": d.id("whoop-sleep"), "user_id": user_id,
                    "created_at": created, "updated_at": updated, "score_state": "SCORED",
                    "score": {"user_calibrating": false, "recovery_score": d.r("recovery", 20, 98),
                        "resting_heart_rate": n.lowest_hr + 2, "hrv_rmssd_milli": n.hrv_ms as f64 + 0.42,
                        "spo2_percentage": 94.0 + d.r("spo2", 0, 40) as f64 / 10.0, "skin_temp_celsius": 33.7},
                }),
            )]
        }
        _ => d
            .workout()
            .into_iter()
            .map(|w| {
                let (created, updated) = scored(w.end);
                (
                    w.start,
                    json!({
                        "id": d.id("whoop-workout"), "v1_id": null, "user_id": user_id, "created_at": created,
                        "updated_at": updated, "start": utc(w.start), "end": utc(w.end), "timezone_offset": tz(d),
                        "sport_name": SPORTS[w.sport], "sport_id": w.sport, "score_state": "SCORED",
                        "score": {"strain": d.r("w-strain", 60, 160) as f64 / 10.0, "average_heart_rate": w.avg_hr,
                            "max_heart_rate": w.max_hr, "kilojoule": (w.kcal as f64 * 4.184).round(),
                            "percent_recorded": 100.0, "distance_meter": w.distance_m, "altitude_gain_meter": null,
                            "altitude_change_meter": null, "zone_durations": null},
                    }),
                )
            })
            .collect(),
    }
}

async fn collection(app: &App, headers: &HeaderMap, raw: Option<String>, kind: &'static str) -> Response {
    let (bearer, d) = match gate(app, headers).await {
        Ok(g) => g,
        Err(res) => return res,
    };
    let q = query(raw);
    let now = OffsetDateTime::now_utc();
    let parse = |name: &str| param(&q, name).map(|v| parse_datetime(v).ok_or_else(|| name.to_string())).transpose();
    let (start, end) = match (parse("start"), parse("end")) {
        (Ok(s), Ok(e)) => (s.unwrap_or(now - Duration::days(30)), e.unwrap_or(now).min(now)),
        (Err(name), _) | (_, Err(name)) => return bad_request(d, format!("{name} must be an ISO 8601 date-time")),
    };
    let limit = match param(&q, "limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(l)) if (1..=25).contains(&l) => l,
        _ => return bad_request(d, "limit must be between 1 and 25"),
    };
    if end - start > Duration::days(400) {
        return bad_request(d, "the sandbox serves at most 400 days between start and end");
    }
    let prefix = format!("{kind}:{}:{}:", start.unix_timestamp(), end.unix_timestamp());
    let skip = match param(&q, "nextToken") {
        None => 0,
        Some(t) => match decode_token(t, &prefix).and_then(|s| s.parse::<usize>().ok()) {
            Some(n) => n,
            None => return bad_request(d, "nextToken is not one this server issued for this range"),
        },
    };
    let person = people::person(app.provider, &bearer.user);
    let user_id = people::numeric_id(app.provider, &bearer.user);
    let mut all: Vec<(OffsetDateTime, Value)> = dates(start.date() - Duration::days(1), end.date() + Duration::days(1))
        .flat_map(|date| records(kind, &Day::new(app.provider, &bearer.user, &person, date), user_id, now))
        .filter(|(t, v)| {
            *t >= start && *t < end && v["end"].as_str().is_none_or(|e| parse_datetime(e).is_some_and(|e| e <= now))
        })
        .collect();
    all.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    let page: Vec<Value> = all.iter().skip(skip).take(limit).map(|(_, v)| v.clone()).collect();
    let next = (skip + limit < all.len()).then(|| encode_token(&format!("{prefix}{}", skip + limit)));
    ok(d, json!({"records": page, "next_token": next}))
}

macro_rules! route {
    ($fn_name:ident, $kind:literal) => {
        #[tracing::instrument(skip_all, fields(provider = %app.provider))]
        pub(crate) async fn $fn_name(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
            collection(&app, &headers, raw, $kind).await
        }
    };
}

route!(whoop_cycles, "cycle");
route!(whoop_recoveries, "recovery");
route!(whoop_sleeps, "sleep");
route!(whoop_workouts, "workout");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_records_on_a_workout_day() {
        let p = people::person(crate::provider::Provider::Whoop, "u");
        let far = OffsetDateTime::now_utc() + Duration::days(3650);
        let with_workout = dates(time::macros::date!(2026 - 01 - 01), time::macros::date!(2026 - 01 - 10))
            .find(|date| Day::new(crate::provider::Provider::Whoop, "u", &p, *date).workout().is_some());
        let Some(date) = with_workout else { panic!("no workout in ten days") };
        for kind in ["cycle", "recovery", "sleep", "workout"] {
            let d = Day::new(crate::provider::Provider::Whoop, "u", &p, date);
            assert_eq!(records(kind, &d, 1, far).len(), 1, "{kind}");
        }
    }
}
