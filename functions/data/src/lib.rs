//! End users of a tenant (`/v1/users`) and the signed-in end user's own view (`/v1/me`). The normalized
//! data read API and JSON push ingest join this function with their issues.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use shared::ApiError;
use shared::http::{EndUserScope, Json, PageParams, Query, Routes, TenantScope, created, list_body};
use shared::ids::{Email, ExternalId, UserId};
use shared::tenancy::{Status, Stores, UserPatch};

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    /// The normalized data table (`DATA_TABLE`).
    pub data_table: String,
}

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/v1/users", create_user)
        .get("/v1/users", list_users)
        .get("/v1/users/{user_id}", get_user)
        .patch("/v1/users/{user_id}", patch_user)
        .get("/v1/me", me)
        .get("/v1/users/{user_id}/daily", daily)
        .get("/v1/me/daily", my_daily)
}

pub fn router(state: AppState) -> axum::Router {
    routes().into_router(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    external_id: ExternalId,
    #[serde(default)]
    email: Option<Email>,
}

/// 201 for a new user; 200 with the existing user when the external id is already known.
async fn create_user(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(body): Json<CreateUser>,
) -> Result<Response, ApiError> {
    let (user, is_new) = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .create_user(&scope.tenant_id, &body.external_id, body.email)
        .await
        .map_err(|e| e.into_api("user"))?;
    if is_new {
        tracing::info!(tenant_id = %scope.tenant_id, user_id = %user.id, "user created");
        Ok(created(user))
    } else {
        Ok(axum::Json(user).into_response())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListUsers {
    limit: Option<u32>,
    cursor: Option<String>,
    external_id: Option<ExternalId>,
}

/// All users, or with `?external_id=` the one user the tenant knows by that id.
async fn list_users(
    scope: TenantScope,
    State(app): State<AppState>,
    Query(q): Query<ListUsers>,
) -> Result<Response, ApiError> {
    let page = PageParams { limit: q.limit, cursor: q.cursor }.page()?;
    if let Some(external_id) = q.external_id {
        let found = app
            .stores
            .tenant(&scope.tenant_id)
            .await?
            .user_by_external_id(&scope.tenant_id, &external_id)
            .await
            .map_err(|e| e.into_api("user"))?;
        return Ok(axum::Json(list_body(found.into_iter().collect(), None)).into_response());
    }
    let (users, next) = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .list_users(&scope.tenant_id, &page)
        .await
        .map_err(|e| e.into_api("user"))?;
    Ok(axum::Json(list_body(users, next)).into_response())
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|_| ApiError::not_found("user"))
}

async fn get_user(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .get_user(&scope.tenant_id, &user_id(&id)?)
        .await
        .map_err(|e| e.into_api("user"))?;
    Ok(axum::Json(user).into_response())
}

/// `null` and absent differ for `email`: null removes it, absent keeps it.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    #[serde(default)]
    status: Option<Status>,
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<Email>>,
}

async fn patch_user(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<PatchUser>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    if body.status.is_none() && body.email.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "nothing to change: send `status` (active|disabled) and/or `email`",
        ));
    }
    let patch = UserPatch { status: body.status, email: body.email };
    let user = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .update_user(&scope.tenant_id, &id, patch)
        .await
        .map_err(|e| e.into_api("user"))?;
    tracing::info!(tenant_id = %scope.tenant_id, user_id = %user.id, status = user.status.as_str(), "user changed");
    Ok((StatusCode::OK, axum::Json(user)).into_response())
}

async fn me(scope: EndUserScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let user = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .get_user(&scope.tenant_id, &scope.user_id)
        .await
        .map_err(|e| e.into_api("user"))?;
    Ok(axum::Json(user).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DailyQuery {
    start: String,
    end: String,
    /// Comma-separated metric names to keep (`steps,distance_m`); all when absent.
    metrics: Option<String>,
}

const METRICS: [&str; 5] = ["steps", "active_energy_kcal", "total_energy_kcal", "distance_m", "activity_score"];

fn date(field: &str, raw: &str) -> Result<time::Date, ApiError> {
    time::Date::parse(raw, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| ApiError::bad_request("invalid_query", format!("{field} must be a date like 2026-11-29")))
}

async fn daily_of(
    app: &AppState,
    tenant: &shared::ids::TenantId,
    user: &UserId,
    q: DailyQuery,
) -> Result<Response, ApiError> {
    let (start, end) = (date("start", &q.start)?, date("end", &q.end)?);
    if end < start || (end - start).whole_days() > 366 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`end` must be on or after `start`, at most 366 days later",
        ));
    }
    let wanted: Option<Vec<&str>> =
        q.metrics.as_deref().map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).collect());
    if let Some(unknown) = wanted.iter().flatten().find(|m| !METRICS.contains(m)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("unknown metric `{unknown}`; known: {}", METRICS.join(", ")),
        ));
    }
    let tenancy = app.stores.tenant(tenant).await?;
    tenancy.get_user(tenant, user).await.map_err(|e| e.into_api("user"))?;
    let days = tenancy
        .data_store(&app.data_table)
        .daily(tenant, user, &q.start, &q.end)
        .await
        .map_err(|e| e.into_api("daily summary"))?;
    let mut out = Vec::with_capacity(days.len());
    for day in days {
        let mut v = serde_json::to_value(day).map_err(anyhow::Error::from)?;
        if let (Some(wanted), Some(obj)) = (&wanted, v.as_object_mut()) {
            obj.retain(|k, _| !METRICS.contains(&k.as_str()) || wanted.contains(&k.as_str()));
        }
        out.push(v);
    }
    Ok(axum::Json(list_body(out, None)).into_response())
}

/// Daily summaries of `start..=end` (the user's local dates), one entry per day and source.
async fn daily(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DailyQuery>,
) -> Result<Response, ApiError> {
    daily_of(&app, &scope.tenant_id, &user_id(&id)?, q).await
}

async fn my_daily(
    scope: EndUserScope,
    State(app): State<AppState>,
    Query(q): Query<DailyQuery>,
) -> Result<Response, ApiError> {
    daily_of(&app, &scope.tenant_id, &scope.user_id, q).await
}
