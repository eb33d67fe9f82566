//! Strava API v3: `GET /athlete/activities?after=&before=&page=&per_page=` (page-numbered, newest last), each
//! activity a workout. `start_date` is UTC; `utc_offset` (seconds) or `start_date_local` gives the wall clock.

use serde_json::Value;
use time::Duration;

use super::{FetchCtx, FetchError, Window, get_json, num, offset_secs};
use crate::model::{Batch, Source, Workout};
use crate::providers::ProviderId;
use crate::time::parse;

const URL: &str = "https://www.strava.com/api/v3/athlete/activities";
const PER_PAGE: usize = 100;
const MAX_PAGES: u32 = 100;

pub(super) async fn fetch(ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    let url = ctx.providers.url(ProviderId::Strava, URL);
    let (after, before) = window.utc_cover();
    let mut batch = Batch::default();
    for page in 1..=MAX_PAGES {
        let query = [
            ("after", after.unix_timestamp().to_string()),
            ("before", before.unix_timestamp().to_string()),
            ("page", page.to_string()),
            ("per_page", PER_PAGE.to_string()),
        ];
        let body = get_json(ctx, ProviderId::Strava, &url, &query).await?;
        let Some(activities) = body.as_array() else {
            return Err(FetchError::Unavailable(format!("{} sent a page that is not a list", ProviderId::Strava)));
        };
        batch.workouts.extend(activities.iter().filter_map(activity).filter(|w| window.contains(w.day)));
        if activities.len() < PER_PAGE {
            return Ok(batch);
        }
    }
    Err(FetchError::Unavailable(format!("{} kept paging past {MAX_PAGES} pages", ProviderId::Strava)))
}

pub(super) fn activity(a: &Value) -> Option<Workout> {
    let start = a["start_date"].as_str().and_then(parse)?;
    // `start_date_local` is the wall clock written with a `Z`: its difference to `start_date` is the offset.
    let local = a["start_date_local"].as_str().and_then(parse).map(|l| (l - start).whole_seconds() as f64);
    let offset = num(&a["utc_offset"]).or(local).and_then(offset_secs)?;
    let start = start.to_offset(offset);
    let end = start + Duration::seconds(num(&a["elapsed_time"]).unwrap_or(0.0) as i64);
    let kind = a["sport_type"].as_str().or(a["type"].as_str()).unwrap_or("Workout");
    let id = a["id"].as_str().map(str::to_owned).unwrap_or_else(|| a["id"].to_string());
    let mut w = Workout::new(id, Source::provider(ProviderId::Strava), kind, start, end);
    w.distance_m = num(&a["distance"]);
    w.energy_kcal = num(&a["calories"]);
    w.avg_heart_rate = num(&a["average_heartrate"]);
    w.max_heart_rate = num(&a["max_heartrate"]);
    Some(w)
}
