//! Polar AccessLink v3 (`www.polaraccesslink.com/v3`): exercises (`/exercises`, the last 30 days, no date
//! filter), daily activity (`/users/activities?from=&to=`, 28 days at most) and nights (`/users/sleep`, the
//! last 28 days). Exercises give a local start time plus `start_time_utc_offset` in minutes and ISO 8601
//! durations (`PT1H2M3S`). Older data is not available from AccessLink at all.

use serde_json::Value;
use time::{Duration, PrimitiveDateTime};

use super::{FetchCtx, FetchError, Window, get_json, num, offset_secs};
use crate::model::{Batch, DailyRecord, Metric, SleepSession, Source, Workout};
use crate::providers::ProviderId;
use crate::time::{format_day, parse, parse_day};

const BASE: &str = "https://www.polaraccesslink.com/v3";
/// AccessLink's longest `from`..`to` range for daily activity.
const ACTIVITY_DAYS: i64 = 28;

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let url = |path: &str| ctx.providers.url(ProviderId::Polar, &format!("{BASE}{path}"));
    let mut batch = Batch::default();
    let exercises = get_json(ctx, ProviderId::Polar, &url("/exercises"), &[]).await?;
    batch.workouts.extend(list(&exercises)?.iter().filter_map(exercise).filter(|w| window.contains(w.day)));
    let mut from = window.start;
    while from <= window.end {
        let to = (from + Duration::days(ACTIVITY_DAYS - 1)).min(window.end);
        let q = [("from", format_day(from)), ("to", format_day(to))];
        let days = get_json(ctx, ProviderId::Polar, &url("/users/activities"), &q).await?;
        batch.daily.extend(list(&days)?.iter().filter_map(activity_day).filter(|d| window.contains(d.day)));
        from = to + Duration::days(1);
    }
    let sleep = get_json(ctx, ProviderId::Polar, &url("/users/sleep"), &[]).await?;
    for (session, day) in sleep["nights"].as_array().into_iter().flatten().filter_map(night) {
        if window.contains(day.day) {
            batch.sleep.push(session);
            batch.daily.push(day);
        }
    }
    Ok(batch)
}

fn list(v: &Value) -> Result<&Vec<Value>, FetchError> {
    v.as_array().ok_or_else(|| FetchError::Unavailable(format!("{} sent a page that is not a list", ProviderId::Polar)))
}

fn source() -> Source {
    Source::provider(ProviderId::Polar)
}

/// An ISO 8601 duration of hours, minutes and seconds (`PT1H2M3.5S`), in seconds.
pub(super) fn iso_duration(raw: &str) -> Option<f64> {
    let mut rest = raw.strip_prefix("PT")?;
    let mut total = 0.0;
    while !rest.is_empty() {
        let at = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let n: f64 = rest[..at].parse().ok()?;
        total += n * match &rest[at..=at] {
            "H" => 3600.0,
            "M" => 60.0,
            "S" => 1.0,
            _ => return None,
        };
        rest = &rest[at + 1..];
    }
    Some(total)
}

/// `2026-03-04T18:00:00` (local wall clock, with or without fractional seconds).
fn local_time(raw: &str) -> Option<PrimitiveDateTime> {
    let fmt = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute][optional [:[second]]][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(raw, fmt).ok()
}

pub(super) fn exercise(e: &Value) -> Option<Workout> {
    let offset = offset_secs(num(&e["start_time_utc_offset"])? * 60.0)?;
    let start = local_time(e["start_time"].as_str()?)?.assume_offset(offset);
    let end = start + Duration::seconds_f64(iso_duration(e["duration"].as_str()?)?);
    let kind = e["detailed_sport_info"].as_str().or(e["sport"].as_str()).unwrap_or("OTHER");
    let id = e["id"].as_str().map(str::to_owned).unwrap_or_else(|| e["id"].to_string());
    let mut w = Workout::new(id, source(), kind, start, end);
    let hr = if e["heart_rate"].is_object() { &e["heart_rate"] } else { &e["heart-rate"] };
    w.energy_kcal = num(&e["calories"]);
    w.distance_m = num(&e["distance"]);
    w.avg_heart_rate = num(&hr["average"]);
    w.max_heart_rate = num(&hr["maximum"]);
    Some(w)
}

/// A day of activity; its date is the local date of `start_time` (no offset is given).
pub(super) fn activity_day(a: &Value) -> Option<DailyRecord> {
    let day = a["start_time"].as_str().and_then(|t| local_time(t).map(|t| t.date()).or_else(|| parse_day(t)))?;
    let mut d = DailyRecord::new(day, source());
    d.set(Metric::Steps, num(&a["steps"]))
        .set(Metric::ActiveEnergyKcal, num(&a["active_calories"]))
        .set(Metric::TotalEnergyKcal, num(&a["calories"]))
        .set(Metric::DistanceM, num(&a["distance_from_steps"]));
    Some(d)
}

/// One night; stage durations in seconds, `date` the night's date (the morning it ended).
pub(super) fn night(n: &Value) -> Option<(SleepSession, DailyRecord)> {
    let day = n["date"].as_str().and_then(parse_day)?;
    let start = n["sleep_start_time"].as_str().and_then(parse)?;
    let end = n["sleep_end_time"].as_str().and_then(parse)?;
    let min = |k: &str| num(&n[k]).map(|s| s / 60.0);
    let mut s = SleepSession::new(format!("{}", day), source(), day, start, end);
    s.utc_offset = Some(end.offset());
    s.light_min = min("light_sleep");
    s.deep_min = min("deep_sleep");
    s.rem_min = min("rem_sleep");
    s.awake_min = min("total_interruption_duration");
    s.total_sleep_min = match (s.light_min, s.deep_min, s.rem_min) {
        (Some(l), Some(d), Some(r)) => Some(l + d + r),
        _ => None,
    };
    let mut d = DailyRecord::new(day, source());
    d.utc_offset = Some(end.offset());
    d.set(Metric::SleepTotalMin, s.total_sleep_min)
        .set(Metric::SleepDeepMin, s.deep_min)
        .set(Metric::SleepRemMin, s.rem_min)
        .set(Metric::SleepLightMin, s.light_min)
        .set(Metric::SleepAwakeMin, s.awake_min)
        .set(Metric::SleepScore, num(&n["sleep_score"]));
    Some((s, d))
}
