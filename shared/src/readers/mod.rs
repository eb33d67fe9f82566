//! Readers: one module per provider turns its data API into the normalized model (`crate::model`). A reader
//! fetches one window of local dates with the connection's access token and returns a `Batch`; it never
//! writes, sleeps or retries: a `FetchError` says what the worker should do (wait for a rate-limit reset,
//! ask the user to reconnect, retry later). `backfill_plan` documents how far back each provider goes and in
//! what chunks (docs/providers.md, "Sync").

mod garmin;
mod google_health;
mod oura;
mod polar;
mod strava;
mod whoop;
mod withings;

use std::time::Duration;

use serde_json::Value;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::model::Batch;
use crate::providers::{Overrides, ProviderId};

/// What a reader needs to call the provider for one user.
pub struct FetchCtx<'a> {
    pub http: &'a reqwest::Client,
    pub providers: &'a Overrides,
    pub access_token: &'a str,
    /// The provider's id of the user, where its API needs it in paths (Polar, Withings).
    pub provider_user_id: Option<&'a str>,
}

/// Local dates `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Date,
    pub end: Date,
}

impl Window {
    /// The `days` days ending today (UTC), today included.
    pub fn last_days(days: u32, today: Date) -> Self {
        let days = i64::from(days.clamp(1, 3660));
        Self { start: today - time::Duration::days(days - 1), end: today }
    }

    pub fn days(&self) -> i64 {
        (self.end - self.start).whole_days() + 1
    }

    pub fn contains(&self, day: Date) -> bool {
        (self.start..=self.end).contains(&day)
    }

    /// UTC instants that surely cover every local day of the window in any time zone (UTC-12 to UTC+14):
    /// a day before the first midnight to a day after the last. Readers of instant-ranged APIs ask for this
    /// and keep what falls on the window's local dates.
    pub fn utc_cover(&self) -> (OffsetDateTime, OffsetDateTime) {
        let start = (self.start - time::Duration::days(1)).midnight().assume_utc();
        let end = (self.end + time::Duration::days(2)).midnight().assume_utc();
        (start, end)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FetchError {
    /// 429: try again after this many seconds (the provider's reset).
    #[error("{provider} rate limit; retry in {retry_after} s")]
    RateLimited { provider: ProviderId, retry_after: i32 },
    /// 401: the token is no longer accepted; the user must reconnect.
    #[error("{0}")]
    Unauthorized(String),
    /// 5xx, a timeout, a malformed page: retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// Whether Tenantry can read this provider's data yet.
pub fn can_sync(p: ProviderId) -> bool {
    match p {
        ProviderId::Oura
        | ProviderId::Whoop
        | ProviderId::Withings
        | ProviderId::Strava
        | ProviderId::Polar
        | ProviderId::GoogleHealth
        | ProviderId::Garmin => true,
    }
}

/// How far back a first sync reaches, and how many days each backfill job fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillPlan {
    pub max_days: u32,
    pub chunk_days: u32,
}

/// docs/providers.md, "Sync", explains each row.
pub fn backfill_plan(p: ProviderId) -> BackfillPlan {
    let (max_days, chunk_days) = match p {
        // Whole histories, read in 30-day chunks: about 7 + 9 heart-rate pages per Oura chunk, 2 pages per
        // WHOOP collection, one call per Withings service, 1-2 Strava pages, 5 Google data types.
        ProviderId::Oura | ProviderId::Whoop | ProviderId::Withings | ProviderId::Strava | ProviderId::GoogleHealth => {
            (365, 30)
        }
        // AccessLink keeps exercises 30 days and sleep 28 days: one chunk is all there is.
        ProviderId::Polar => (28, 28),
        // Pull reads by upload time, one call per day of uploads: weekly chunks keep a job under 10 calls.
        ProviderId::Garmin => (30, 7),
    };
    BackfillPlan { max_days, chunk_days }
}

/// Reads one window of one provider's data.
pub async fn fetch(p: ProviderId, ctx: &FetchCtx<'_>, window: Window) -> Result<Batch, FetchError> {
    match p {
        ProviderId::Oura => oura::fetch(ctx, window).await,
        ProviderId::Whoop => whoop::fetch(ctx, window).await,
        ProviderId::Withings => withings::fetch(ctx, window).await,
        ProviderId::Strava => strava::fetch(ctx, window).await,
        ProviderId::Polar => polar::fetch(ctx, window).await,
        ProviderId::GoogleHealth => google_health::fetch(ctx, window).await,
        ProviderId::Garmin => garmin::fetch(ctx, window).await,
    }
}

/// GET a JSON document from a provider with the user's bearer token, mapping the answers every provider
/// shares: 429 (with `Retry-After`, or `X-RateLimit-Reset` seconds), 401/403, 5xx, timeouts, bad JSON.
pub(crate) async fn get_json(
    ctx: &FetchCtx<'_>,
    provider: ProviderId,
    url: &str,
    query: &[(&str, String)],
) -> Result<Value, FetchError> {
    send(ctx.http.get(url).query(query), ctx, provider).await
}

/// POST a form with the user's bearer token (Withings' `action=...` services); answers mapped as `get_json`.
pub(crate) async fn post_form(
    ctx: &FetchCtx<'_>,
    provider: ProviderId,
    url: &str,
    form: &[(&str, String)],
) -> Result<Value, FetchError> {
    send(ctx.http.post(url).form(form), ctx, provider).await
}

async fn send(request: reqwest::RequestBuilder, ctx: &FetchCtx<'_>, provider: ProviderId) -> Result<Value, FetchError> {
    let response = request
        .bearer_auth(ctx.access_token)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_err(|e| FetchError::Unavailable(format!("{provider} unreachable: {}", e.without_url())))?;
    let status = response.status().as_u16();
    let header = |name: &str| -> Option<i32> {
        response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
    };
    match status {
        429 => {
            let retry_after = header("retry-after").or_else(|| header("x-ratelimit-reset")).unwrap_or(60).max(1);
            Err(FetchError::RateLimited { provider, retry_after })
        }
        401 | 403 => Err(FetchError::Unauthorized(format!("{provider} refused the access token ({status})"))),
        s if s >= 500 => Err(FetchError::Unavailable(format!("{provider} answered {status}"))),
        s if s >= 400 => Err(FetchError::Unavailable(format!("{provider} refused the request ({status})"))),
        _ => response.json().await.map_err(|_| FetchError::Unavailable(format!("{provider} sent unreadable JSON"))),
    }
}

/// Follows a cursor-paged collection: `page(cursor)` gives the query of one call, `next` reads the next
/// cursor from a page; stops after `max_pages` so a provider that loops cannot hold a worker forever.
pub(crate) async fn get_pages(
    ctx: &FetchCtx<'_>,
    provider: ProviderId,
    url: &str,
    page: impl Fn(Option<&str>) -> Vec<(&'static str, String)>,
    next: impl Fn(&Value) -> Option<String>,
) -> Result<Vec<Value>, FetchError> {
    const MAX_PAGES: usize = 200;
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let body = get_json(ctx, provider, url, &page(cursor.as_deref())).await?;
        cursor = next(&body).filter(|c| !c.is_empty());
        out.push(body);
        if cursor.is_none() {
            return Ok(out);
        }
    }
    Err(FetchError::Unavailable(format!("{provider} kept paging past {MAX_PAGES} pages")))
}

/// The array under `key` of every page, flattened.
pub(crate) fn items(pages: Vec<Value>, key: &str) -> Vec<Value> {
    pages.into_iter().flat_map(|mut p| p[key].as_array_mut().map(std::mem::take).unwrap_or_default()).collect()
}

/// A number, also when sent as a JSON string (Google's int64 fields).
pub(crate) fn num(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())).filter(|f| f.is_finite())
}

/// A UTC offset from whole seconds east of UTC.
pub(crate) fn offset_secs(seconds: f64) -> Option<UtcOffset> {
    UtcOffset::from_whole_seconds(seconds.round() as i32).ok()
}

/// An instant from Unix seconds.
pub(crate) fn unix(seconds: f64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds as i64).ok()
}

#[cfg(test)]
mod tests;
