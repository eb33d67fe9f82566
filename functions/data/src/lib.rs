//! End users of a tenant (`/v1/users`) and the signed-in end user's own view (`/v1/me`), and the normalized
//! data read API (`reads`), and JSON push ingest (`ingest`).

mod imports;
mod ingest;
mod reads;

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
    /// Presigns export uploads into `import_bucket` (`IMPORT_BUCKET`).
    pub s3: aws_sdk_s3::Client,
    pub import_bucket: String,
}

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/v1/users", create_user)
        .get("/v1/users", list_users)
        .get("/v1/users/{user_id}", get_user)
        .patch("/v1/users/{user_id}", patch_user)
        .get("/v1/me", me)
        .get("/v1/users/{user_id}/daily", reads::daily)
        .get("/v1/me/daily", reads::daily)
        .get("/v1/users/{user_id}/sleep", reads::sleep)
        .get("/v1/me/sleep", reads::sleep)
        .get("/v1/users/{user_id}/workouts", reads::workouts)
        .get("/v1/me/workouts", reads::workouts)
        .get("/v1/users/{user_id}/samples", reads::samples)
        .get("/v1/me/samples", reads::samples)
        .post("/v1/users/{user_id}/ingest/apple-health", reads::ingest_apple_health)
        .post("/v1/me/ingest/apple-health", reads::ingest_apple_health)
        .post("/v1/users/{user_id}/imports/apple-health", imports::create)
        .post("/v1/me/imports/apple-health", imports::create)
        .get("/v1/users/{user_id}/imports", imports::list)
        .get("/v1/me/imports", imports::list)
        .get("/v1/imports/{import_id}", imports::get)
        .get("/v1/me/imports/{import_id}", imports::get)
        .post("/v1/imports/{import_id}/complete", imports::complete)
        .post("/v1/me/imports/{import_id}/complete", imports::complete)
}

pub fn router(state: AppState) -> axum::Router {
    let trail = (state.stores.clone(), audited as shared::audit::AuditTable);
    routes().into_router(state).route_layer(axum::middleware::from_fn_with_state(trail, shared::audit::trail))
}

/// The changes to end users that the tenant's audit log records (data is not audited: it is the user's own).
fn audited(method: &axum::http::Method, route: &str) -> Option<shared::audit::Audited> {
    use shared::audit::{Audited, Target};
    match (method.as_str(), route) {
        ("POST", "/v1/users") => Some(Audited::new("user.created", Target::Answer("user", "id"))),
        ("PATCH", "/v1/users/{user_id}") => {
            Some(Audited::new("user.updated", Target::None).about("user_id").with(&["status"]))
        }
        _ => None,
    }
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
    if body.status == Some(Status::Deleted) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "status must be active or disabled; DELETE /v1/users/{user_id} deletes a user",
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
