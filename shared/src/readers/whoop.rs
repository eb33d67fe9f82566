//! WHOOP API v2 (`/developer/v2/...`): cycles (day energy), recoveries, sleeps and workouts. Collections are
//! ranged by UTC instants (`start`, `end`), paged by `nextToken` with `limit` <= 25; records carry UTC times and
//! a `timezone_offset` like `-05:00`. The reader asks for a range covering the window in any zone and keeps the
//! records whose local day falls in it.

use std::collections::HashMap;

use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::{FetchCtx, FetchError, Window, get_pages, items, num};
use crate::model::{Batch, DailyRecord, Metric, SleepSession, Source, Workout};
use crate::providers::ProviderId;
use crate::time::{parse, parse_offset};

const BASE: &str = "https://api.prod.whoop.com/developer/v2";
const LIMIT: &str = "25";
const KJ_PER_KCAL: f64 = 4.184;

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let cycles = collection(ctx, "cycle", window).await?;
    let sleeps = collection(ctx, "activity/sleep", window).await?;
    let recoveries = collection(ctx, "recovery", window).await?;
    let workouts = collection(ctx, "activity/workout", window).await?;
    Ok(map(window, &cycles, &sleeps, &recoveries, &workouts))
}

/// Maps the four collections; recoveries take the day of their sleep (else of their cycle).
pub(super) fn map(
    window: Window,
    cycles: &[Value],
    sleeps: &[Value],
    recoveries: &[Value],
    workouts: &[Value],
) -> Batch {
    let mut batch = Batch::default();
    let mut cycle_days = HashMap::new();
    for c in cycles {
        let Some((start, end)) = span(c) else { continue };
        // A cycle runs from falling asleep to falling asleep: its day is the one its middle falls on.
        let length: Duration = end.unwrap_or(start + Duration::hours(24)) - start;
        let day = (start + length / 2_i32).date();
        cycle_days.insert(c["id"].to_string(), (day, start.offset()));
        if !window.contains(day) {
            continue;
        }
        let mut d = DailyRecord::new(day, source());
        d.utc_offset = Some(start.offset());
        d.set(Metric::TotalEnergyKcal, num(&c["score"]["kilojoule"]).map(|kj| kj / KJ_PER_KCAL));
        batch.daily.push(d);
    }
    let mut sleep_days = HashMap::new();
    for s in sleeps {
        let Some(session) = sleep(s) else { continue };
        sleep_days.insert(session.id.clone(), (session.day, session.end.offset()));
        if !window.contains(session.day) {
            continue;
        }
        if s["nap"] != Value::Bool(true) {
            let mut d = DailyRecord::new(session.day, source());
            d.utc_offset = session.utc_offset;
            d.set(Metric::SleepTotalMin, session.total_sleep_min)
                .set(Metric::SleepDeepMin, session.deep_min)
                .set(Metric::SleepRemMin, session.rem_min)
                .set(Metric::SleepLightMin, session.light_min)
                .set(Metric::SleepAwakeMin, session.awake_min);
            batch.daily.push(d);
        }
        batch.sleep.push(session);
    }
    for r in recoveries {
        let by_sleep = r["sleep_id"].as_str().and_then(|id| sleep_days.get(id));
        let Some(&(day, offset)) = by_sleep.or_else(|| cycle_days.get(&r["cycle_id"].to_string())) else { continue };
        if !window.contains(day) {
            continue;
        }
        let score = &r["score"];
        let mut d = DailyRecord::new(day, source());
        d.utc_offset = Some(offset);
        d.set(Metric::ReadinessScore, num(&score["recovery_score"]))
            .set(Metric::RestingHeartRate, num(&score["resting_heart_rate"]))
            .set(Metric::HrvMs, num(&score["hrv_rmssd_milli"]))
            .set(Metric::Spo2Pct, num(&score["spo2_percentage"]));
        batch.daily.push(d);
    }
    batch.workouts.extend(workouts.iter().filter_map(workout).filter(|w| window.contains(w.day)));
    batch
}

fn source() -> Source {
    Source::provider(ProviderId::Whoop)
}

/// `start` and `end` in the record's local offset (`end` is null while a cycle is ongoing).
fn span(r: &Value) -> Option<(OffsetDateTime, Option<OffsetDateTime>)> {
    let offset = r["timezone_offset"].as_str().and_then(parse_offset)?;
    let start = r["start"].as_str().and_then(parse)?.to_offset(offset);
    Some((start, r["end"].as_str().and_then(parse).map(|t| t.to_offset(offset))))
}

fn minutes(v: &Value) -> Option<f64> {
    num(v).map(|ms| ms / 60_000.0)
}

/// A sleep's day is the local date it ended on; stage times come in milliseconds.
pub(super) fn sleep(r: &Value) -> Option<SleepSession> {
    let (start, end) = span(r)?;
    let end = end?;
    let id = r["id"].as_str().map(str::to_owned).unwrap_or_else(|| r["id"].to_string());
    let mut s = SleepSession::new(id, source(), end.date(), start, end);
    let stages = &r["score"]["stage_summary"];
    s.light_min = minutes(&stages["total_light_sleep_time_milli"]);
    s.deep_min = minutes(&stages["total_slow_wave_sleep_time_milli"]);
    s.rem_min = minutes(&stages["total_rem_sleep_time_milli"]);
    s.awake_min = minutes(&stages["total_awake_time_milli"]);
    s.total_sleep_min = match (s.light_min, s.deep_min, s.rem_min) {
        (Some(l), Some(d), Some(r)) => Some(l + d + r),
        _ => None,
    };
    s.efficiency_pct = num(&r["score"]["sleep_efficiency_percentage"]);
    Some(s)
}

pub(super) fn workout(r: &Value) -> Option<Workout> {
    let (start, end) = span(r)?;
    let id = r["id"].as_str().map(str::to_owned).unwrap_or_else(|| r["id"].to_string());
    let mut w = Workout::new(id, source(), r["sport_name"].as_str().unwrap_or("activity"), start, end?);
    let score = &r["score"];
    w.energy_kcal = num(&score["kilojoule"]).map(|kj| kj / KJ_PER_KCAL);
    w.distance_m = num(&score["distance_meter"]);
    w.avg_heart_rate = num(&score["average_heart_rate"]);
    w.max_heart_rate = num(&score["max_heart_rate"]);
    Some(w)
}

async fn collection(ctx: &FetchCtx<'_>, path: &str, window: Window) -> Result<Vec<Value>, FetchError> {
    let url = ctx.providers.url(ProviderId::Whoop, &format!("{BASE}/{path}"));
    let (start, end) = window.utc_cover();
    let (start, end) = (crate::time::format(start), crate::time::format(end));
    let pages = get_pages(
        ctx,
        ProviderId::Whoop,
        &url,
        |cursor| {
            let mut q = vec![("start", start.clone()), ("end", end.clone()), ("limit", LIMIT.to_owned())];
            q.extend(cursor.map(|c| ("nextToken", c.to_owned())));
            q
        },
        |page| page["next_token"].as_str().map(str::to_owned),
    )
    .await?;
    Ok(items(pages, "records"))
}
