//! The normalized data read API: `/v1/users/{user_id}/{daily,sleep,workouts,samples}` with a tenant key and
//! the `/v1/me/...` twins with an end user's token. Daily values are merged across sources by the tenant's
//! source priority (one value per metric and day, never a sum) unless `view=sources` asks for every source.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shared::ApiError;
use shared::datastore::{DataStore, DayRecord, parse_sample_position};
use shared::http::{Json, PageParams, Query, list_body};
use shared::model::{Metric, SampleKind, SleepSession, Workout};
use shared::time::{format_day, format_offset, parse, parse_day};
use time::Date;

use crate::AppState;

pub use shared::http::Subject;

/// The user's data store, after checking that the user is the tenant's (another tenant's is a 404).
pub trait SubjectStore {
    async fn store(&self, app: &AppState) -> Result<(shared::tenancy::TenancyStore, DataStore), ApiError>;
}

impl SubjectStore for Subject {
    async fn store(&self, app: &AppState) -> Result<(shared::tenancy::TenancyStore, DataStore), ApiError> {
        let tenancy = app.stores.tenant(&self.tenant).await?;
        tenancy.get_user(&self.tenant, &self.user).await.map_err(|e| e.into_api("user"))?;
        let data = tenancy.data_store(&app.data_table);
        Ok((tenancy, data))
    }
}

fn date(field: &str, raw: &str) -> Result<Date, ApiError> {
    parse_day(raw)
        .ok_or_else(|| ApiError::bad_request("invalid_query", format!("{field} must be a date like 2026-11-29")))
}

/// `start..=end`, both local dates, at most 366 days.
fn date_range(start: &str, end: &str) -> Result<(Date, Date), ApiError> {
    let (start, end) = (date("start", start)?, date("end", end)?);
    if end < start || (end - start).whole_days() > 366 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`end` must be on or after `start`, at most 366 days later",
        ));
    }
    Ok((start, end))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyQuery {
    start: String,
    end: String,
    /// Comma-separated metric names to keep (`steps,distance_m`); all when absent.
    metrics: Option<String>,
    /// `merged` (default): one entry per day by source priority; `sources`: one entry per day and source.
    view: Option<String>,
}

/// Daily summaries of `start..=end` (the user's local dates).
pub async fn daily(
    subject: Subject,
    State(app): State<AppState>,
    Query(q): Query<DailyQuery>,
) -> Result<Response, ApiError> {
    let (start, end) = date_range(&q.start, &q.end)?;
    let wanted: Option<Vec<Metric>> = q
        .metrics
        .as_deref()
        .map(|m| {
            m.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| Metric::parse(m).map_err(|e| ApiError::bad_request("invalid_query", e)))
                .collect::<Result<_, _>>()
        })
        .transpose()?;
    let keep = |m: &Metric| wanted.as_ref().is_none_or(|w| w.contains(m));
    let by_source = match q.view.as_deref() {
        None | Some("merged") => false,
        Some("sources") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("unknown view `{other}`; use merged or sources"),
            ));
        }
    };
    let (tenancy, data) = subject.store(&app).await?;
    let days = data.daily(&subject.tenant, &subject.user, start, end).await.map_err(|e| e.into_api("daily summary"))?;
    let mut out = Vec::new();
    if by_source {
        for d in days {
            let mut entry = Map::new();
            entry.insert("day".into(), json!(format_day(d.record.day)));
            entry.insert("utc_offset".into(), json!(d.record.utc_offset.map(format_offset)));
            entry.insert("source".into(), json!(d.record.source.name));
            if let Some(device) = &d.record.source.device {
                entry.insert("device".into(), json!(device));
            }
            for (m, v) in d.record.metrics.iter().filter(|(m, _)| keep(m)) {
                entry.insert(m.as_str().into(), number(*v));
            }
            entry.insert("synced_at".into(), json!(d.synced_at));
            out.push(Value::Object(entry));
        }
    } else {
        let priority =
            tenancy.priority_store().get(&subject.tenant).await.map_err(|e| e.into_api("source priority"))?;
        let mut per_day: BTreeMap<Date, Vec<shared::model::DailyRecord>> = BTreeMap::new();
        for d in days {
            per_day.entry(d.record.day).or_default().push(d.record);
        }
        for (day, records) in per_day {
            let (values, sources) = priority.merge(&records);
            let mut entry = Map::new();
            entry.insert("day".into(), json!(format_day(day)));
            entry.insert("utc_offset".into(), json!(records.iter().find_map(|r| r.utc_offset).map(format_offset)));
            for (m, v) in values.iter().filter(|(m, _)| keep(m)) {
                entry.insert(m.as_str().into(), number(*v));
            }
            let chosen: Map<String, Value> =
                sources.iter().filter(|(m, _)| keep(m)).map(|(m, s)| (m.as_str().to_owned(), json!(s))).collect();
            entry.insert("sources".into(), Value::Object(chosen));
            out.push(Value::Object(entry));
        }
    }
    Ok(axum::Json(list_body(out, None)).into_response())
}

/// Whole numbers as integers (steps are counts), the rest as they are.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 { json!(v as i64) } else { json!(v) }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    start: String,
    end: String,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Sleep sessions whose local day is in `start..=end`, oldest first, cursor-paged.
pub async fn sleep(
    subject: Subject,
    State(app): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    day_records::<SleepSession>(subject, app, q, "sleep session").await
}

/// Workouts whose local day is in `start..=end`, oldest first, cursor-paged.
pub async fn workouts(
    subject: Subject,
    State(app): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    day_records::<Workout>(subject, app, q, "workout").await
}

async fn day_records<T: DayRecord>(
    subject: Subject,
    app: AppState,
    q: RangeQuery,
    what: &str,
) -> Result<Response, ApiError> {
    let range = date_range(&q.start, &q.end)?;
    let page = PageParams { limit: q.limit, cursor: q.cursor }.page()?;
    let (_, data) = subject.store(&app).await?;
    let listed = data
        .day_records::<T>(&subject.tenant, &subject.user, range, page.after, page.limit)
        .await
        .map_err(|e| e.into_api(what))?;
    Ok(axum::Json(list_body(listed.items, listed.next)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplesQuery {
    #[serde(rename = "type")]
    kind: String,
    start: String,
    end: String,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Samples of one type in `[start, end)` (RFC 3339 times, at most 31 days), in time order, cursor-paged
/// (up to 1,000 a page, default 500).
pub async fn samples(
    subject: Subject,
    State(app): State<AppState>,
    Query(q): Query<SamplesQuery>,
) -> Result<Response, ApiError> {
    let kind = SampleKind::parse(&q.kind).map_err(|e| ApiError::bad_request("invalid_query", e))?;
    let time = |field: &str, raw: &str| {
        parse(raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("{field} must be an RFC 3339 time like 2026-11-29T00:00:00Z"),
            )
        })
    };
    let (start, end) = (time("start", &q.start)?, time("end", &q.end)?);
    if end <= start || (end - start).whole_days() > 31 {
        return Err(ApiError::bad_request("invalid_query", "`end` must be after `start`, at most 31 days later"));
    }
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit must be between 1 and 1000"));
    }
    let after = match q.cursor {
        None => None,
        Some(c) => {
            Some(shared::http::decode_cursor(&c).as_deref().and_then(parse_sample_position).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one we issued; pass next_cursor back unchanged")
            })?)
        }
    };
    let (_, data) = subject.store(&app).await?;
    let listed = data
        .samples(&subject.tenant, &subject.user, kind, (start, end), after, limit as usize)
        .await
        .map_err(|e| e.into_api("sample"))?;
    let unit = kind.unit();
    let rows: Vec<Value> = listed
        .items
        .into_iter()
        .map(|x| {
            let mut v = serde_json::to_value(&x).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("unit".into(), json!(unit));
            }
            v
        })
        .collect();
    Ok(axum::Json(list_body(rows, listed.next)).into_response())
}

/// A Health Auto Export style JSON push (`crate::ingest`): 200 with the days it wrote. The same payload
/// twice changes nothing.
pub async fn ingest_apple_health(
    subject: Subject,
    State(app): State<AppState>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let (batch, mut summary) = crate::ingest::parse(&body).map_err(|e| ApiError::bad_request("invalid_body", e.0))?;
    let (_, data) = subject.store(&app).await?;
    let stored = data.put_batch(&subject.tenant, &subject.user, &batch).await.map_err(|e| e.into_api("health data"))?;
    let (_, changed_days) = stored.changed.touched();
    summary.changed_days = changed_days.into_iter().map(shared::time::format_day).collect();
    tracing::info!(tenant_id = %subject.tenant, user_id = %subject.user, records = summary.records, "apple health push stored");
    Ok(axum::Json(summary).into_response())
}
