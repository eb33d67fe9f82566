//! Withings (`wbsapi.withings.net`): weight from `measure?action=getmeas`, daily activity from
//! `v2/measure?action=getactivity`, nights from `v2/sleep?action=getsummary`. Every service is a form POST with
//! the Bearer token answering `{"status": 0, "body": {...}}` with HTTP 200, errors included: a non-zero status
//! is the error (401 reconnect, 601 too many requests). Pages continue while `more` with `offset`. Times are
//! Unix seconds with the user's IANA zone name (`timezone`) beside them.

use serde_json::Value;
use time::{Date, OffsetDateTime, UtcOffset};

use super::{FetchCtx, FetchError, Window, num, post_form, unix};
use crate::model::{Batch, DailyRecord, Metric, SleepSession, Source};
use crate::providers::ProviderId;
use crate::time::{format_day, parse_day};

const BASE: &str = "https://wbsapi.withings.net";
const WEIGHT: i64 = 1;
const MAX_PAGES: usize = 50;
/// Withings asks to wait a minute after status 601.
const RETRY_AFTER_601: i32 = 60;

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let (from, to) = window.utc_cover();
    let meas = vec![
        ("action", "getmeas".to_owned()),
        ("meastype", WEIGHT.to_string()),
        ("category", "1".to_owned()),
        ("startdate", from.unix_timestamp().to_string()),
        ("enddate", to.unix_timestamp().to_string()),
    ];
    let ranged = |action: &str, fields: &str| {
        vec![
            ("action", action.to_owned()),
            ("startdateymd", format_day(window.start)),
            ("enddateymd", format_day(window.end)),
            ("data_fields", fields.to_owned()),
        ]
    };
    let mut batch = Batch::default();
    batch.daily.extend(weights(window, &service(ctx, "measure", &meas, "measuregrps").await?));
    for (a, _) in service(ctx, "v2/measure", &ranged("getactivity", ACTIVITY_FIELDS), "activities").await? {
        batch.daily.extend(activity_day(&a).filter(|d| window.contains(d.day)));
    }
    for (s, _) in service(ctx, "v2/sleep", &ranged("getsummary", SLEEP_FIELDS), "series").await? {
        if let Some((session, day)) = night(&s).filter(|(s, _)| window.contains(s.day)) {
            batch.sleep.push(session);
            batch.daily.push(day);
        }
    }
    Ok(batch)
}

const ACTIVITY_FIELDS: &str = "steps,distance,calories,totalcalories,hr_average";
const SLEEP_FIELDS: &str = "total_sleep_time,deepsleepduration,lightsleepduration,remsleepduration,wakeupduration,\
sleep_efficiency,hr_average,hr_min,sleep_score";

fn source() -> Source {
    Source::provider(ProviderId::Withings)
}

/// The zone's offset at an instant (a bundled tz database: DST included, no zoneinfo needed on Lambda).
pub(super) fn offset_at(zone: &str, at: OffsetDateTime) -> Option<UtcOffset> {
    let tz = jiff::tz::TimeZone::get(zone).ok()?;
    let ts = jiff::Timestamp::from_second(at.unix_timestamp()).ok()?;
    UtcOffset::from_whole_seconds(tz.to_offset(ts).seconds()).ok()
}

/// The zone's offset at noon of a local date.
fn offset_on(zone: &str, day: Date) -> Option<UtcOffset> {
    offset_at(zone, day.with_hms(12, 0, 0).ok()?.assume_utc())
}

/// The last weighing of each local day: `value * 10^unit` kg.
pub(super) fn weights(window: Window, groups: &[(Value, String)]) -> Vec<DailyRecord> {
    let mut by_day: std::collections::BTreeMap<Date, (i64, DailyRecord)> = Default::default();
    for (g, zone) in groups {
        let Some(at) = num(&g["date"]).and_then(unix) else { continue };
        let offset = offset_at(zone, at).unwrap_or(UtcOffset::UTC);
        let local = at.to_offset(offset);
        let weight = g["measures"].as_array().into_iter().flatten().find(|m| m["type"].as_i64() == Some(WEIGHT));
        let Some(kg) = weight.and_then(|m| Some(num(&m["value"])? * 10f64.powi(m["unit"].as_i64()? as i32))) else {
            continue;
        };
        if !window.contains(local.date()) || by_day.get(&local.date()).is_some_and(|(t, _)| *t > at.unix_timestamp()) {
            continue;
        }
        let mut d = DailyRecord::new(local.date(), source());
        d.utc_offset = Some(offset);
        d.set(Metric::WeightKg, Some(kg));
        by_day.insert(local.date(), (at.unix_timestamp(), d));
    }
    by_day.into_values().map(|(_, d)| d).collect()
}

pub(super) fn activity_day(a: &Value) -> Option<DailyRecord> {
    let day = a["date"].as_str().and_then(parse_day)?;
    let mut d = DailyRecord::new(day, source());
    d.utc_offset = a["timezone"].as_str().and_then(|z| offset_on(z, day));
    d.set(Metric::Steps, num(&a["steps"]))
        .set(Metric::DistanceM, num(&a["distance"]))
        .set(Metric::ActiveEnergyKcal, num(&a["calories"]))
        .set(Metric::TotalEnergyKcal, num(&a["totalcalories"]));
    Some(d)
}

/// One night: durations in seconds; `sleep_efficiency` a ratio (0.91); `date` the local wake-up date.
pub(super) fn night(s: &Value) -> Option<(SleepSession, DailyRecord)> {
    let day = s["date"].as_str().and_then(parse_day)?;
    let zone = s["timezone"].as_str().unwrap_or("UTC");
    let start = num(&s["startdate"]).and_then(unix)?;
    let end = num(&s["enddate"]).and_then(unix)?;
    let (start, end) = (start.to_offset(offset_at(zone, start)?), end.to_offset(offset_at(zone, end)?));
    let id = s["id"].as_i64().map(|i| i.to_string()).unwrap_or_else(|| format!("{}", start.unix_timestamp()));
    let data = &s["data"];
    let min = |k: &str| num(&data[k]).map(|v| v / 60.0);
    let mut session = SleepSession::new(id, source(), day, start, end);
    session.utc_offset = Some(end.offset());
    session.total_sleep_min = min("total_sleep_time");
    session.deep_min = min("deepsleepduration");
    session.light_min = min("lightsleepduration");
    session.rem_min = min("remsleepduration");
    session.awake_min = min("wakeupduration");
    session.efficiency_pct = num(&data["sleep_efficiency"]).map(|r| r * 100.0);
    session.avg_heart_rate = num(&data["hr_average"]);
    session.lowest_heart_rate = num(&data["hr_min"]);
    let mut d = DailyRecord::new(day, source());
    d.utc_offset = Some(end.offset());
    d.set(Metric::SleepTotalMin, session.total_sleep_min)
        .set(Metric::SleepDeepMin, session.deep_min)
        .set(Metric::SleepLightMin, session.light_min)
        .set(Metric::SleepRemMin, session.rem_min)
        .set(Metric::SleepAwakeMin, session.awake_min)
        .set(Metric::SleepScore, num(&data["sleep_score"]));
    Some((session, d))
}

/// Unwraps `{"status", "body"}`: status 0 is the body, anything else an error.
pub(super) fn unwrap(doc: Value) -> Result<Value, FetchError> {
    let p = ProviderId::Withings;
    match doc["status"].as_i64() {
        Some(0) => Ok(doc["body"].clone()),
        Some(401) => Err(FetchError::Unauthorized(format!("{p} refused the access token (status 401)"))),
        Some(601) => Err(FetchError::RateLimited { provider: p, retry_after: RETRY_AFTER_601 }),
        Some(s) => Err(FetchError::Unavailable(format!(
            "{p} answered status {s}: {}",
            doc["error"].as_str().unwrap_or("no error text")
        ))),
        None => Err(FetchError::Unavailable(format!("{p} sent a body without a status"))),
    }
}

/// Every item under `key` of one service, following `more`/`offset`; measure groups keep the page's zone.
async fn service(
    ctx: &FetchCtx<'_>,
    path: &str,
    form: &[(&str, String)],
    key: &str,
) -> Result<Vec<(Value, String)>, FetchError> {
    let url = ctx.providers.url(ProviderId::Withings, &format!("{BASE}/{path}"));
    let mut out = Vec::new();
    let mut offset: Option<i64> = None;
    for _ in 0..MAX_PAGES {
        let mut f = form.to_vec();
        f.extend(offset.map(|o| ("offset", o.to_string())));
        let body = unwrap(post_form(ctx, ProviderId::Withings, &url, &f).await?)?;
        let zone = body["timezone"].as_str().unwrap_or("UTC").to_owned();
        out.extend(body[key].as_array().into_iter().flatten().map(|v| (v.clone(), zone.clone())));
        let more = body["more"].as_bool().unwrap_or_else(|| body["more"].as_i64().is_some_and(|m| m != 0));
        match body["offset"].as_i64().filter(|_| more) {
            Some(o) => offset = Some(o),
            None => return Ok(out),
        }
    }
    Err(FetchError::Unavailable(format!("{} kept paging past {MAX_PAGES} pages", ProviderId::Withings)))
}
