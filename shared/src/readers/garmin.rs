//! Garmin Health (Wellness) API pull: `GET /wellness-api/rest/dailies?uploadStartTimeInSeconds=&
//! uploadEndTimeInSeconds=`, ranged by UPLOAD time, at most 86,400 s per call. Garmin mostly pushes (the
//! webhooks function); this read backs it up. Each daily summary carries its `calendarDate` and
//! `startTimeOffsetInSeconds`. A day uploaded several times appears several times: the last upload wins.

use std::collections::BTreeMap;

use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::{FetchCtx, FetchError, Window, get_json, num, offset_secs};
use crate::model::{Batch, DailyRecord, Metric, Source};
use crate::providers::ProviderId;
use crate::time::parse_day;

const URL: &str = "https://apis.garmin.com/wellness-api/rest/dailies";
const MAX_RANGE: i64 = 86_400;

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let url = ctx.providers.url(ProviderId::Garmin, URL);
    // A day's summary is uploaded during or after it: from the window's first UTC midnight minus the widest
    // offset, to a day after its end.
    let (from, to) = window.utc_cover();
    let to = to.min(OffsetDateTime::now_utc());
    let mut days = BTreeMap::new();
    let mut at = from;
    while at < to {
        let until = (at + Duration::seconds(MAX_RANGE)).min(to);
        let q = [
            ("uploadStartTimeInSeconds", at.unix_timestamp().to_string()),
            ("uploadEndTimeInSeconds", until.unix_timestamp().to_string()),
        ];
        let page = get_json(ctx, ProviderId::Garmin, &url, &q).await?;
        let Some(list) = page.as_array() else {
            return Err(FetchError::Unavailable(format!("{} sent a page that is not a list", ProviderId::Garmin)));
        };
        for d in list.iter().filter_map(daily).filter(|d| window.contains(d.day)) {
            days.insert(d.day, d);
        }
        at = until;
    }
    Ok(Batch { daily: days.into_values().collect(), ..Batch::default() })
}

pub(super) fn daily(s: &Value) -> Option<DailyRecord> {
    let day = s["calendarDate"].as_str().and_then(parse_day)?;
    let mut d = DailyRecord::new(day, Source::provider(ProviderId::Garmin));
    d.utc_offset = num(&s["startTimeOffsetInSeconds"]).and_then(offset_secs);
    let active = num(&s["activeKilocalories"]);
    let total = active.zip(num(&s["bmrKilocalories"])).map(|(a, b)| a + b);
    d.set(Metric::Steps, num(&s["steps"]))
        .set(Metric::DistanceM, num(&s["distanceInMeters"]))
        .set(Metric::ActiveEnergyKcal, active)
        .set(Metric::TotalEnergyKcal, total)
        .set(Metric::RestingHeartRate, num(&s["restingHeartRateInBeatsPerMinute"]));
    Some(d)
}
