//! Oura API v2 (`/v2/usercollection/*`): daily activity so far.

use super::{FetchCtx, FetchError, Window, get_pages};
use crate::model::{Batch, DailyRecord, Metric, Source};
use crate::providers::ProviderId;
use crate::time::{format_day, parse, parse_day};

const BASE: &str = "https://api.ouraring.com/v2/usercollection";

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let mut batch = Batch::default();
    for doc in collection(ctx, "daily_activity", window).await? {
        let Some(day) = doc["day"].as_str().and_then(parse_day) else { continue };
        let mut d = DailyRecord::new(day, Source::provider(ProviderId::Oura));
        d.utc_offset = doc["timestamp"].as_str().and_then(parse).map(|t| t.offset());
        d.set(Metric::Steps, doc["steps"].as_f64())
            .set(Metric::ActiveEnergyKcal, doc["active_calories"].as_f64())
            .set(Metric::TotalEnergyKcal, doc["total_calories"].as_f64())
            .set(Metric::DistanceM, doc["equivalent_walking_distance"].as_f64())
            .set(Metric::ActivityScore, doc["score"].as_f64());
        batch.daily.push(d);
    }
    Ok(batch)
}

/// Every document of a date-ranged collection, following `next_token`.
async fn collection(ctx: &FetchCtx<'_>, name: &str, window: Window) -> Result<Vec<serde_json::Value>, FetchError> {
    let url = ctx.providers.url(ProviderId::Oura, &format!("{BASE}/{name}"));
    let (start, end) = (format_day(window.start), format_day(window.end));
    let pages = get_pages(
        ctx,
        ProviderId::Oura,
        &url,
        |cursor| {
            let mut q = vec![("start_date", start.clone()), ("end_date", end.clone())];
            if let Some(c) = cursor {
                q.push(("next_token", c.to_owned()));
            }
            q
        },
        |page| page["next_token"].as_str().map(str::to_owned),
    )
    .await?;
    Ok(pages.into_iter().flat_map(|mut p| p["data"].as_array_mut().map(std::mem::take).unwrap_or_default()).collect())
}
