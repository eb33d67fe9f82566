//! Oura API v2 (`/v2/usercollection/*`): daily activity, sleep, readiness and SpO2, sleep periods, workouts and
//! heart rate. One call per collection plus `next_token` pages; documents carry their local `day`.

use serde_json::Value;
use time::{Date, OffsetDateTime};

use super::{FetchCtx, FetchError, Window, get_pages, items, num};
use crate::model::{Batch, DailyRecord, Metric, Sample, SampleKind, SleepSession, Source, Workout};
use crate::providers::ProviderId;
use crate::time::{format_day, parse, parse_day};

const BASE: &str = "https://api.ouraring.com/v2/usercollection";
/// Oura answers 400 for a heart-rate range over 30 days.
const HEARTRATE_DAYS: i64 = 30;

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let mut batch = Batch::default();
    for doc in collection(ctx, "daily_activity", window).await? {
        batch.daily.extend(daily_activity(&doc));
    }
    for doc in collection(ctx, "daily_sleep", window).await? {
        batch.daily.extend(daily_score(&doc, Metric::SleepScore));
    }
    for doc in collection(ctx, "daily_readiness", window).await? {
        batch.daily.extend(daily_score(&doc, Metric::ReadinessScore));
    }
    for doc in collection(ctx, "daily_spo2", window).await? {
        batch.daily.extend(daily_spo2(&doc));
    }
    let docs = collection(ctx, "sleep", window).await?;
    let periods: Vec<SleepSession> = docs.iter().filter_map(sleep).collect();
    batch.daily.extend(sleep_days(&docs, &periods));
    batch.sleep.extend(periods);
    batch.workouts.extend(collection(ctx, "workout", window).await?.iter().filter_map(workout));
    batch.samples.extend(heartrate(ctx, window).await?);
    Ok(batch)
}

fn source() -> Source {
    Source::provider(ProviderId::Oura)
}

fn day_record(doc: &Value) -> Option<DailyRecord> {
    let day = doc["day"].as_str().and_then(parse_day)?;
    let mut d = DailyRecord::new(day, source());
    d.utc_offset = doc["timestamp"].as_str().and_then(parse).map(|t| t.offset());
    Some(d)
}

pub(super) fn daily_activity(doc: &Value) -> Option<DailyRecord> {
    let mut d = day_record(doc)?;
    d.set(Metric::Steps, num(&doc["steps"]))
        .set(Metric::ActiveEnergyKcal, num(&doc["active_calories"]))
        .set(Metric::TotalEnergyKcal, num(&doc["total_calories"]))
        .set(Metric::DistanceM, num(&doc["equivalent_walking_distance"]))
        .set(Metric::ActivityScore, num(&doc["score"]));
    Some(d)
}

fn daily_score(doc: &Value, metric: Metric) -> Option<DailyRecord> {
    let mut d = day_record(doc)?;
    d.set(metric, num(&doc["score"]));
    Some(d)
}

fn daily_spo2(doc: &Value) -> Option<DailyRecord> {
    let mut d = day_record(doc)?;
    d.set(Metric::Spo2Pct, num(&doc["spo2_percentage"]["average"]));
    Some(d)
}

fn minutes(v: &Value) -> Option<f64> {
    num(v).map(|s| s / 60.0)
}

/// One sleep period; durations come in seconds.
pub(super) fn sleep(doc: &Value) -> Option<SleepSession> {
    let id = doc["id"].as_str()?;
    let day = doc["day"].as_str().and_then(parse_day)?;
    let start = doc["bedtime_start"].as_str().and_then(parse)?;
    let end = doc["bedtime_end"].as_str().and_then(parse)?;
    let mut s = SleepSession::new(id, source(), day, start, end);
    s.total_sleep_min = minutes(&doc["total_sleep_duration"]);
    s.deep_min = minutes(&doc["deep_sleep_duration"]);
    s.rem_min = minutes(&doc["rem_sleep_duration"]);
    s.light_min = minutes(&doc["light_sleep_duration"]);
    s.awake_min = minutes(&doc["awake_time"]);
    s.efficiency_pct = num(&doc["efficiency"]);
    s.avg_heart_rate = num(&doc["average_heart_rate"]);
    s.lowest_heart_rate = num(&doc["lowest_heart_rate"]);
    s.avg_hrv_ms = num(&doc["average_hrv"]);
    Some(s)
}

/// A day's sleep metrics come from its main period: the `long_sleep` one, else the longest (naps and short
/// periods would otherwise overwrite the night).
pub(super) fn sleep_days(docs: &[Value], periods: &[SleepSession]) -> Vec<DailyRecord> {
    let mut main: std::collections::BTreeMap<Date, (bool, f64, &SleepSession)> = Default::default();
    for s in periods {
        let long = docs.iter().any(|d| d["id"].as_str() == Some(&s.id) && d["type"] == "long_sleep");
        let length = (s.end - s.start).as_seconds_f64();
        let better = main.get(&s.day).is_none_or(|(l, len, _)| (long, length) > (*l, *len));
        if better {
            main.insert(s.day, (long, length, s));
        }
    }
    main.into_values()
        .map(|(_, _, s)| {
            let mut d = DailyRecord::new(s.day, source());
            d.utc_offset = Some(s.end.offset());
            d.set(Metric::SleepTotalMin, s.total_sleep_min)
                .set(Metric::SleepDeepMin, s.deep_min)
                .set(Metric::SleepRemMin, s.rem_min)
                .set(Metric::SleepLightMin, s.light_min)
                .set(Metric::SleepAwakeMin, s.awake_min)
                .set(Metric::RestingHeartRate, s.lowest_heart_rate)
                .set(Metric::HrvMs, s.avg_hrv_ms);
            d
        })
        .collect()
}

pub(super) fn workout(doc: &Value) -> Option<Workout> {
    let start = doc["start_datetime"].as_str().and_then(parse)?;
    let end = doc["end_datetime"].as_str().and_then(parse)?;
    let mut w = Workout::new(doc["id"].as_str()?, source(), doc["activity"].as_str().unwrap_or("other"), start, end);
    if let Some(day) = doc["day"].as_str().and_then(parse_day) {
        w.day = day;
    }
    w.energy_kcal = num(&doc["calories"]);
    w.distance_m = num(&doc["distance"]);
    Some(w)
}

/// Heart rate: UTC timestamps, no offset; the window's dates read as UTC days (so consecutive windows neither
/// overlap nor leave gaps), in ranges of at most 30 days.
async fn heartrate(ctx: &FetchCtx<'_>, window: Window) -> Result<Vec<Sample>, FetchError> {
    let mut from = window.start.midnight().assume_utc();
    let end = (window.end + time::Duration::days(1)).midnight().assume_utc().min(OffsetDateTime::now_utc());
    let url = ctx.providers.url(ProviderId::Oura, &format!("{BASE}/heartrate"));
    let mut out = Vec::new();
    while from < end {
        let to = (from + time::Duration::days(HEARTRATE_DAYS)).min(end);
        let (a, b) = (crate::time::format(from), crate::time::format(to));
        let pages = get_pages(
            ctx,
            ProviderId::Oura,
            &url,
            |cursor| {
                let mut q = vec![("start_datetime", a.clone()), ("end_datetime", b.clone())];
                q.extend(cursor.map(|c| ("next_token", c.to_owned())));
                q
            },
            |page| page["next_token"].as_str().map(str::to_owned),
        )
        .await?;
        out.extend(items(pages, "data").iter().filter_map(heartrate_sample));
        from = to;
    }
    Ok(out)
}

pub(super) fn heartrate_sample(doc: &Value) -> Option<Sample> {
    let time = doc["timestamp"].as_str().and_then(parse)?;
    Some(Sample { kind: SampleKind::HeartRate, time, utc_offset: None, value: num(&doc["bpm"])?, source: source() })
}

/// Every document of a date-ranged collection, following `next_token`.
async fn collection(ctx: &FetchCtx<'_>, name: &str, window: Window) -> Result<Vec<Value>, FetchError> {
    let url = ctx.providers.url(ProviderId::Oura, &format!("{BASE}/{name}"));
    let (start, end) = (format_day(window.start), format_day(window.end));
    let pages = get_pages(
        ctx,
        ProviderId::Oura,
        &url,
        |cursor| {
            let mut q = vec![("start_date", start.clone()), ("end_date", end.clone())];
            q.extend(cursor.map(|c| ("next_token", c.to_owned())));
            q
        },
        |page| page["next_token"].as_str().map(str::to_owned),
    )
    .await?;
    Ok(items(pages, "data"))
}
