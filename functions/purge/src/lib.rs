//! Deleting end users with a grace period, and offboarding tenants. `DELETE /v1/users/{user_id}` makes the
//! user invisible at once (every API answers 404, their tokens are refused, nothing syncs) and due for purge
//! after the tenant's grace period (`/v1/settings/accounts`, 30 days unless set); `POST .../restore` brings
//! them back until the purge begins. `DELETE /admin/v1/tenants/{tenant_id}` (the operator) refuses the
//! tenant's every credential at once and purges all of it. The purge itself is in [`purge`].

pub mod purge;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::ApiError;
use shared::audit::{Actor, NewEntry};
use shared::auth::Principal;
use shared::deletion::{MAX_GRACE_DAYS, Restore};
use shared::http::{Json, Operator, Routes, TenantScope};
use shared::ids::{TenantId, UserId};
use shared::tenancy::{Status, Stores};

pub use purge::{Job, Purger, Settings, Sweep};

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
}

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .delete("/v1/users/{user_id}", delete_user)
        .post("/v1/users/{user_id}/restore", restore_user)
        .get("/v1/settings/accounts", get_settings)
        .put("/v1/settings/accounts", put_settings)
        .delete("/admin/v1/tenants/{tenant_id}", offboard_tenant)
}

pub fn router(state: AppState) -> axum::Router {
    routes().into_router(state)
}

/// An id that cannot be one of the tenant's users is simply absent.
fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|_| ApiError::not_found("user"))
}

/// 202: the user is deleted now (invisible everywhere) and purged at `purge_at`. A repeated DELETE answers
/// the same, with the first deletion's purge time.
async fn delete_user(
    principal: Principal,
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let user = user_id(&raw)?;
    let tenant = &scope.tenant_id;
    let tenancy = app.stores.tenant(tenant).await?;
    let store = tenancy.deletion_store();
    let grace = store.grace_days(tenant).await.map_err(|e| e.into_api("settings"))?;
    let purge_at = shared::time::format(shared::time::now() + time::Duration::days(i64::from(grace)));
    let deletion = store.delete_user(tenant, &user, &purge_at).await.map_err(|e| e.into_api("user"))?;
    // Idempotent, so a DELETE repeated after a failure here finishes the job.
    tenancy.connect_store().set_scheduled(tenant, &user, false).await.map_err(|e| e.into_api("user"))?;
    if deletion.new {
        tracing::info!(tenant_id = %tenant, user_id = %user, purge_at = %deletion.purge_at, "user deleted");
        let entry = NewEntry::new(Actor::of(&principal), "user.deleted")
            .about(&user)
            .details(json!({"purge_at": deletion.purge_at, "grace_days": grace}));
        tenancy.audit_store().record_or_log(tenant, entry).await;
    }
    let body = json!({"user_id": user, "status": Status::Deleted, "purge_at": deletion.purge_at});
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// 200 with the user as they were before the deletion; 409 once the purge has begun; 404 once purged.
async fn restore_user(
    principal: Principal,
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let user = user_id(&raw)?;
    let tenant = &scope.tenant_id;
    let tenancy = app.stores.tenant(tenant).await?;
    match tenancy.deletion_store().restore_user(tenant, &user).await.map_err(|e| e.into_api("user"))? {
        Restore::Restored(status) => {
            tenancy.connect_store().set_scheduled(tenant, &user, true).await.map_err(|e| e.into_api("user"))?;
            tracing::info!(tenant_id = %tenant, user_id = %user, status = status.as_str(), "user restored");
            tenancy
                .audit_store()
                .record_or_log(tenant, NewEntry::new(Actor::of(&principal), "user.restored").about(&user))
                .await;
        }
        Restore::NotDeleted(_) => {}
        Restore::PurgeStarted => {
            return Err(ApiError::conflict(
                "purge_started",
                "the user's purge has begun; their data is being deleted and cannot be restored",
            ));
        }
    }
    let found = tenancy.get_user(tenant, &user).await.map_err(|e| e.into_api("user"))?;
    Ok(axum::Json(found).into_response())
}

/// The tenant's account settings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountSettings {
    /// Days between `DELETE /v1/users/{id}` and the purge; 0 purges at the next hourly sweep.
    deletion_grace_days: u32,
}

async fn get_settings(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let tenancy = app.stores.tenant(&scope.tenant_id).await?;
    let days = tenancy.deletion_store().grace_days(&scope.tenant_id).await.map_err(|e| e.into_api("settings"))?;
    Ok(axum::Json(AccountSettings { deletion_grace_days: days }).into_response())
}

async fn put_settings(
    principal: Principal,
    scope: TenantScope,
    State(app): State<AppState>,
    Json(body): Json<AccountSettings>,
) -> Result<Response, ApiError> {
    if body.deletion_grace_days > MAX_GRACE_DAYS {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("deletion_grace_days must be between 0 and {MAX_GRACE_DAYS}"),
        ));
    }
    let tenant = &scope.tenant_id;
    let tenancy = app.stores.tenant(tenant).await?;
    tenancy
        .deletion_store()
        .put_grace_days(tenant, body.deletion_grace_days)
        .await
        .map_err(|e| e.into_api("settings"))?;
    let entry = NewEntry::new(Actor::of(&principal), "settings.accounts.updated")
        .details(json!({"deletion_grace_days": body.deletion_grace_days}));
    tenancy.audit_store().record_or_log(tenant, entry).await;
    Ok(axum::Json(body).into_response())
}

/// 202: the tenant's keys and its users' tokens are refused from now on; the purge deletes all of it at
/// the next sweep. A repeated DELETE answers the same.
async fn offboard_tenant(
    _: Operator,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = TenantId::parse(&raw).map_err(|_| ApiError::not_found("tenant"))?;
    let tenancy = app.stores.tenant(&tenant).await?;
    let new = tenancy.deletion_store().offboard_tenant(&tenant).await.map_err(|e| e.into_api("tenant"))?;
    if new {
        tracing::info!(tenant_id = %tenant, "tenant offboarding");
        // In the tenant's own log, which the purge then deletes with everything else of the tenant.
        tenancy
            .audit_store()
            .record_or_log(&tenant, NewEntry::new(Actor::Operator, "tenant.offboarded").target("tenant", &tenant))
            .await;
    }
    let body = json!({"tenant_id": tenant, "status": Status::Deleted});
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}
