//! Google Health API v4 (`health.googleapis.com/v4/users/me/dataTypes/{type}/dataPoints`): steps, weight,
//! exercise, sleep and heart rate, filtered by civil (local) time and paged by `pageToken`. int64 fields come
//! as JSON strings; every time is a UTC instant with an offset like `"-25200s"` beside it (local wall clock =
//! instant + offset), which gives `utc_offset` and the local date.

use std::collections::BTreeMap;

use serde_json::Value;
use time::{Date, Duration, OffsetDateTime};

use super::{FetchCtx, FetchError, Window, get_pages, items, num, offset_secs};
use crate::model::{Batch, DailyRecord, Metric, Sample, SampleKind, SleepSession, Source, Workout};
use crate::providers::ProviderId;
use crate::time::{format_day, parse};

const BASE: &str = "https://health.googleapis.com/v4/users/me/dataTypes";

/// (URL data type, filter name, page size): exercise and sleep allow 25 per page, the rest 10,000.
const STEPS: (&str, &str, u32) = ("steps", "steps.interval.civil_start_time", 10_000);
const WEIGHT: (&str, &str, u32) = ("weight", "weight.sample_time.civil_time", 10_000);
const EXERCISE: (&str, &str, u32) = ("exercise", "exercise.interval.civil_start_time", 25);
const SLEEP: (&str, &str, u32) = ("sleep", "sleep.interval.civil_start_time", 25);
const HEART_RATE: (&str, &str, u32) = ("heart-rate", "heart_rate.sample_time.civil_time", 10_000);

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let mut batch = Batch::default();
    batch.daily.extend(steps(&points(ctx, STEPS, window).await?));
    batch.daily.extend(weights(&points(ctx, WEIGHT, window).await?));
    batch.workouts.extend(points(ctx, EXERCISE, window).await?.iter().filter_map(exercise));
    // A night belongs to the day it ends on, so it may start the evening before the window.
    let nights = Window { start: window.start - Duration::days(1), ..window };
    for (session, day) in points(ctx, SLEEP, nights).await?.iter().filter_map(sleep) {
        batch.sleep.push(session);
        batch.daily.push(day);
    }
    batch.samples.extend(points(ctx, HEART_RATE, window).await?.iter().filter_map(heart_rate));
    batch.daily.retain(|d| window.contains(d.day));
    batch.sleep.retain(|s| window.contains(s.day));
    batch.workouts.retain(|w| window.contains(w.day));
    Ok(batch)
}

fn source() -> Source {
    Source::provider(ProviderId::GoogleHealth)
}

/// An instant and its offset (`"-25200s"`), as the local time.
fn local(time: &Value, offset: &Value) -> Option<OffsetDateTime> {
    let seconds = offset.as_str().and_then(|o| o.strip_suffix('s')).and_then(|o| o.parse::<f64>().ok())?;
    Some(time.as_str().and_then(parse)?.to_offset(offset_secs(seconds)?))
}

fn id(p: &Value, t: OffsetDateTime) -> String {
    p["name"]
        .as_str()
        .and_then(|n| n.rsplit('/').next())
        .map(str::to_owned)
        .unwrap_or_else(|| t.unix_timestamp().to_string())
}

/// Step intervals summed per local day of their start.
pub(super) fn steps(points: &[Value]) -> Vec<DailyRecord> {
    let mut days: BTreeMap<Date, DailyRecord> = BTreeMap::new();
    for p in points {
        let s = &p["steps"];
        let (Some(start), Some(count)) =
            (local(&s["interval"]["startTime"], &s["interval"]["startUtcOffset"]), num(&s["count"]))
        else {
            continue;
        };
        let d = days.entry(start.date()).or_insert_with(|| DailyRecord::new(start.date(), source()));
        d.utc_offset = Some(start.offset());
        let sum = d.metrics.get(&Metric::Steps).copied().unwrap_or(0.0) + count;
        d.set(Metric::Steps, Some(sum));
    }
    days.into_values().collect()
}

/// The last weighing of each local day, grams to kg.
pub(super) fn weights(points: &[Value]) -> Vec<DailyRecord> {
    let mut days: BTreeMap<Date, (OffsetDateTime, DailyRecord)> = BTreeMap::new();
    for p in points {
        let w = &p["weight"];
        let (Some(at), Some(grams)) =
            (local(&w["sampleTime"]["physicalTime"], &w["sampleTime"]["utcOffset"]), num(&w["weightGrams"]))
        else {
            continue;
        };
        if days.get(&at.date()).is_some_and(|(t, _)| *t > at) {
            continue;
        }
        let mut d = DailyRecord::new(at.date(), source());
        d.utc_offset = Some(at.offset());
        d.set(Metric::WeightKg, Some(grams / 1000.0));
        days.insert(at.date(), (at, d));
    }
    days.into_values().map(|(_, d)| d).collect()
}

pub(super) fn exercise(p: &Value) -> Option<Workout> {
    let e = &p["exercise"];
    let start = local(&e["interval"]["startTime"], &e["interval"]["startUtcOffset"])?;
    let active = || e["activeDuration"].as_str()?.strip_suffix('s')?.parse::<f64>().ok();
    let end = local(&e["interval"]["endTime"], &e["interval"]["endUtcOffset"])
        .or_else(|| Some(start + Duration::seconds_f64(active()?)))?;
    let mut w = Workout::new(id(p, start), source(), e["exerciseType"].as_str().unwrap_or("OTHER"), start, end);
    let m = &e["metricsSummary"];
    w.energy_kcal = num(&m["caloriesKcal"]);
    w.avg_heart_rate = num(&m["averageHeartRateBeatsPerMinute"]);
    Some(w)
}

/// One sleep; its day is the local date it ended on; stage minutes come as int64 strings.
pub(super) fn sleep(p: &Value) -> Option<(SleepSession, DailyRecord)> {
    let s = &p["sleep"];
    let start = local(&s["interval"]["startTime"], &s["interval"]["startUtcOffset"])?;
    let end = local(&s["interval"]["endTime"], &s["interval"]["endUtcOffset"])?;
    let stage = |kind: &str| {
        s["summary"]["stagesSummary"].as_array()?.iter().find(|x| x["type"] == kind).and_then(|x| num(&x["minutes"]))
    };
    let mut session = SleepSession::new(id(p, start), source(), end.date(), start, end);
    session.utc_offset = Some(end.offset());
    session.total_sleep_min = num(&s["summary"]["minutesAsleep"]);
    session.deep_min = stage("DEEP");
    session.rem_min = stage("REM");
    session.light_min = stage("LIGHT");
    session.awake_min = stage("AWAKE").or_else(|| num(&s["summary"]["minutesAwake"]));
    let mut d = DailyRecord::new(end.date(), source());
    d.utc_offset = Some(end.offset());
    d.set(Metric::SleepTotalMin, session.total_sleep_min)
        .set(Metric::SleepDeepMin, session.deep_min)
        .set(Metric::SleepRemMin, session.rem_min)
        .set(Metric::SleepLightMin, session.light_min)
        .set(Metric::SleepAwakeMin, session.awake_min);
    Some((session, d))
}

pub(super) fn heart_rate(p: &Value) -> Option<Sample> {
    let h = &p["heartRate"];
    let at = local(&h["sampleTime"]["physicalTime"], &h["sampleTime"]["utcOffset"])?;
    Some(Sample {
        kind: SampleKind::HeartRate,
        time: at,
        utc_offset: Some(at.offset()),
        value: num(&h["beatsPerMinute"])?,
        source: source(),
    })
}

/// Every point of a data type whose civil (local) time falls on the window's dates.
async fn points(
    ctx: &FetchCtx<'_>,
    (kind, field, size): (&str, &str, u32),
    window: Window,
) -> Result<Vec<Value>, FetchError> {
    let url = ctx.providers.url(ProviderId::GoogleHealth, &format!("{BASE}/{kind}/dataPoints"));
    let filter = format!(
        "{field} >= \"{}\" AND {field} < \"{}\"",
        format_day(window.start),
        format_day(window.end + Duration::days(1))
    );
    let pages = get_pages(
        ctx,
        ProviderId::GoogleHealth,
        &url,
        |cursor| {
            let mut q = vec![("pageSize", size.to_string()), ("filter", filter.clone())];
            q.extend(cursor.map(|c| ("pageToken", c.to_owned())));
            q
        },
        |page| page["nextPageToken"].as_str().map(str::to_owned),
    )
    .await?;
    Ok(items(pages, "dataPoints"))
}
