//! GDPR export of an end user: `POST /v1/users/{user_id}/export` (and `/v1/me/export`) queues a job that
//! writes everything held about the user (profile, connections without secrets, health data, imports, usage,
//! billing state, audit entries) to S3 as one zip with a manifest; `GET /v1/exports/{export_id}` (and
//! `/v1/me/exports/{export_id}`) shows its progress and, once completed, a fresh download URL valid for
//! 15 minutes. One export runs per user at a time (409 `export_in_progress` names it) and at most
//! `EXPORT_DAILY_LIMIT` (5) start per user and UTC day (429).

pub mod archive;
pub mod job;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::presigning::PresigningConfig;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shared::ApiError;
use shared::audit::{Actor, AuditStore, NewEntry};
use shared::auth::Principal;
use shared::aws::TenantAccess;
use shared::http::{EndUserScope, PageParams, Query, Routes, Subject, TenantScope, list_body};
use shared::ids::{TenantId, UserId};
use shared::tenancy::TenancyStore;

pub use store::{Claimed, Export, ExportId, ExportStore, SlotClock, Status};

/// How long a download URL works.
pub const URL_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a started export holds the user's slot at most (three runs of 15 minutes and the waits between);
/// a crashed export frees it then.
const SLOT_SECS: i64 = 3600;

/// Where the archive of an export lives in `EXPORT_BUCKET`.
pub fn object_key(tenant: &TenantId, user: &UserId, id: &ExportId) -> String {
    format!("exports/{tenant}/{user}/{id}.zip")
}

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tenancy_table: String,
    pub data_table: String,
    pub meter_table: String,
    /// `EXPORT_BUCKET`.
    pub bucket: String,
    /// `EXPORT_QUEUE_URL`.
    pub queue_url: String,
    /// `EXPORT_DAILY_LIMIT`: exports a user may start per UTC day (5).
    pub daily_limit: u32,
    /// `EXPORT_PART_BYTES`: size of the upload's parts (8 MiB; S3 refuses parts under 5 MiB but the last).
    pub part_bytes: usize,
}

/// The function: HTTP routes and queue jobs share it.
#[derive(Clone)]
pub struct Exporter {
    pub settings: Arc<Settings>,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// `TenantAccessRole`, when set: every tenant item is reached through a session limited to its tenant.
    pub access: Option<Arc<TenantAccess>>,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// One tenant's stores, on credentials that reach only its items.
pub(crate) struct Tenant {
    pub client: aws_sdk_dynamodb::Client,
    pub tenancy: TenancyStore,
    pub exports: ExportStore,
    pub audit: AuditStore,
}

impl Exporter {
    /// From the environment (`get`), as Lambda and the local stack give it.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, sdk: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        let config = shared::Config::from_lookup(&get)?;
        let var = |k: &str| get(k).filter(|v| !v.is_empty()).with_context(|| format!("{k} is not set"));
        let settings = Settings {
            tenancy_table: config.tenancy_table.clone(),
            data_table: config.data_table.clone().context("DATA_TABLE is not set")?,
            meter_table: config.meter_table.clone().context("METER_TABLE is not set")?,
            bucket: var("EXPORT_BUCKET")?,
            queue_url: var("EXPORT_QUEUE_URL")?,
            daily_limit: get("EXPORT_DAILY_LIMIT").and_then(|v| v.parse().ok()).unwrap_or(5),
            part_bytes: get("EXPORT_PART_BYTES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(archive::PART_BYTES)
                .max(5 * 1024 * 1024),
        };
        Ok(Self {
            settings: Arc::new(settings),
            dynamodb: shared::aws::dynamodb(sdk),
            access: config.tenant_access_role_arn.as_ref().map(|arn| Arc::new(TenantAccess::new(sdk, arn))),
            s3: shared::aws::s3(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
        })
    }

    pub(crate) async fn tenant(&self, tenant: &TenantId) -> anyhow::Result<Tenant> {
        let client = match &self.access {
            None => self.dynamodb.clone(),
            Some(access) => access.dynamodb(tenant).await?,
        };
        let table = &self.settings.tenancy_table;
        Ok(Tenant {
            tenancy: TenancyStore::new(client.clone(), table),
            exports: job::export_store(&client, table),
            audit: job::audit_store(&client, table),
            client,
        })
    }

    async fn tenant_api(&self, tenant: &TenantId) -> Result<Tenant, ApiError> {
        self.tenant(tenant).await.map_err(ApiError::internal)
    }
}

pub fn routes() -> Routes<Exporter> {
    Routes::new()
        .post("/v1/users/{user_id}/export", create)
        .post("/v1/me/export", create)
        .get("/v1/users/{user_id}/exports", list)
        .get("/v1/exports/{export_id}", get_export)
        .get("/v1/me/exports/{export_id}", get_my_export)
}

pub fn router(state: Exporter) -> axum::Router {
    routes().into_router(state)
}

/// One Lambda invocation: an `ExportQueue` batch (it carries `Records`) runs jobs; anything else is an API
/// Gateway request for `router`.
pub async fn invoke(
    exporter: &Exporter,
    router: &axum::Router,
    event: lambda_runtime::LambdaEvent<Value>,
) -> Result<Value, lambda_runtime::Error> {
    use lambda_http::tower::ServiceExt;
    if event.payload.get("Records").is_some() {
        let batch: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(event.payload)?;
        return Ok(serde_json::to_value(exporter.handle(batch).await)?);
    }
    let (payload, context) = event.into_parts();
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
    let http: lambda_http::Adapter<'_, _, _> = lambda_http::Adapter::from(router.clone());
    let response = http.oneshot(lambda_runtime::LambdaEvent::new(request, context)).await?;
    Ok(serde_json::to_value(response)?)
}

/// Seconds until the next UTC midnight (when the daily limit starts over).
fn until_tomorrow(now: time::OffsetDateTime) -> u64 {
    let next = now.date().next_day().map(|d| d.midnight().assume_utc());
    next.map_or(86_400, |n| (n - now).whole_seconds().max(1) as u64)
}

/// `POST /v1/users/{user_id}/export`, `POST /v1/me/export`: 202 with the pending export.
async fn create(subject: Subject, principal: Principal, State(app): State<Exporter>) -> Result<Response, ApiError> {
    let (tenant, user) = (subject.tenant(), subject.user());
    let t = app.tenant_api(tenant).await?;
    t.tenancy.get_user(tenant, user).await.map_err(|e| e.into_api("user"))?;
    let id = ExportId::generate();
    let now = shared::time::now();
    let today = shared::time::format_day(now.date());
    let limit = app.settings.daily_limit;
    let ts = now.unix_timestamp();
    let clock = SlotClock { now: ts, until: ts + SLOT_SECS, today: &today, daily_limit: limit };
    match t.exports.claim_slot(tenant, user, &id, &clock).await {
        Ok(Claimed::Yes) => {}
        Ok(Claimed::Busy(running)) => {
            return Err(ApiError::conflict(
                "export_in_progress",
                format!("export {running} of this user is still running; poll it and start another once it is done"),
            )
            .with_detail("export_id", running));
        }
        Ok(Claimed::Limited) => {
            return Err(ApiError::rate_limited(
                format!("at most {limit} exports per user and day; try again tomorrow (UTC)"),
                until_tomorrow(now),
            ));
        }
        Ok(Claimed::Gone) => return Err(ApiError::not_found("user")),
        Err(e) => return Err(e.into_api("user")),
    }
    let created_at = shared::time::format(now);
    let started = start(&app, &t, tenant, user, &id, &created_at, &principal).await;
    if let Err(e) = started {
        // Nothing runs: the export shows failed and the slot is free for a retry.
        let _ = t.exports.fail_pending(tenant, &id, "not_started").await;
        let _ = t.exports.release_slot(tenant, user, &id).await;
        return Err(e);
    }
    tracing::info!(tenant_id = %tenant, user_id = %user, export_id = %id, "export requested");
    let location = match principal {
        Principal::EndUser { .. } => format!("/v1/me/exports/{id}"),
        _ => format!("/v1/exports/{id}"),
    };
    let body = json!({"id": id, "user_id": user, "status": Status::Pending, "created_at": created_at});
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Stores the export, audits the request and queues the job.
async fn start(
    app: &Exporter,
    t: &Tenant,
    tenant: &TenantId,
    user: &UserId,
    id: &ExportId,
    now: &str,
    principal: &Principal,
) -> Result<(), ApiError> {
    t.exports.create(tenant, user, id, now).await.map_err(|e| e.into_api("export"))?;
    let entry = NewEntry::new(Actor::of(principal), "export.requested").target("export", id).about(user);
    t.audit.record(tenant, entry).await.map_err(|e| e.into_api("audit entry"))?;
    let message = job::Message { tenant_id: tenant.clone(), user_id: user.clone(), export_id: id.to_string() };
    let body = serde_json::to_string(&message).map_err(|e| ApiError::internal(e.into()))?;
    app.sqs.send_message().queue_url(&app.settings.queue_url).message_body(body).send().await.map_err(|e| {
        tracing::error!(error = ?e, "queueing an export");
        ApiError::unavailable("the export could not be queued; try again in a minute")
    })?;
    Ok(())
}

/// The export as the API shows it; a completed one carries a download URL made now.
async fn view(app: &Exporter, tenant: &TenantId, e: &Export) -> Result<Value, ApiError> {
    let mut body = json!({
        "id": e.id,
        "user_id": e.user_id,
        "status": e.status,
        "created_at": e.created_at,
        "started_at": e.started_at,
        "completed_at": e.completed_at,
        "size_bytes": e.size_bytes,
        "files": e.files,
        "error": e.error,
    });
    if e.status == Status::Completed {
        let presign = PresigningConfig::expires_in(URL_TTL).map_err(|e| ApiError::internal(e.into()))?;
        let url = app
            .s3
            .get_object()
            .bucket(&app.settings.bucket)
            .key(object_key(tenant, &e.user_id, &e.id))
            .response_content_disposition(format!("attachment; filename=\"{}.zip\"", e.id))
            .presigned(presign)
            .await
            .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("presigning an export download")))?;
        body["url"] = json!(url.uri());
        body["url_expires_at"] = json!(shared::time::format(shared::time::now() + URL_TTL));
    }
    Ok(body)
}

async fn find(app: &Exporter, tenant: &TenantId, raw: &str) -> Result<Export, ApiError> {
    let id = ExportId::parse(raw).ok_or_else(|| ApiError::not_found("export"))?;
    let t = app.tenant_api(tenant).await?;
    t.exports.get(tenant, &id).await.map_err(|e| e.into_api("export"))?.ok_or_else(|| ApiError::not_found("export"))
}

/// `GET /v1/exports/{export_id}` (tenant key).
async fn get_export(
    scope: TenantScope,
    State(app): State<Exporter>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let export = find(&app, &scope.tenant_id, &raw).await?;
    Ok(axum::Json(view(&app, &scope.tenant_id, &export).await?).into_response())
}

/// `GET /v1/me/exports/{export_id}`: only the signed-in user's own exports.
async fn get_my_export(
    scope: EndUserScope,
    State(app): State<Exporter>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let export = find(&app, &scope.tenant_id, &raw).await?;
    if export.user_id != scope.user_id {
        return Err(ApiError::not_found("export"));
    }
    Ok(axum::Json(view(&app, &scope.tenant_id, &export).await?).into_response())
}

/// `GET /v1/users/{user_id}/exports`: newest first, paged.
async fn list(
    subject: Subject,
    State(app): State<Exporter>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    let (tenant, user) = (subject.tenant(), subject.user());
    let page = params.page()?;
    let after = match page.after {
        None => None,
        Some(raw) => Some(ExportId::parse(&raw).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "cursor is not one we issued for this list; pass next_cursor back")
        })?),
    };
    let t = app.tenant_api(tenant).await?;
    t.tenancy.get_user(tenant, user).await.map_err(|e| e.into_api("user"))?;
    let (exports, next) = t.exports.list(tenant, user, after, page.limit).await.map_err(|e| e.into_api("export"))?;
    let mut data = Vec::with_capacity(exports.len());
    for e in &exports {
        data.push(view(&app, tenant, e).await?);
    }
    Ok(axum::Json(list_body(data, next)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_limit_resets_at_utc_midnight() {
        let now = time::macros::datetime!(2026-11-29 23:59:00 UTC);
        assert_eq!(until_tomorrow(now), 60);
    }

    fn offline() -> Exporter {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let env = std::collections::HashMap::from([
            ("TENANCY_TABLE", "t-TenancyTable"),
            ("DATA_TABLE", "t-DataTable"),
            ("METER_TABLE", "t-MeterTable"),
            ("EXPORT_BUCKET", "t-exportbucket"),
            ("EXPORT_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/t-ExportQueue"),
        ]);
        match Exporter::from_lookup(|k| env.get(k).map(|v| (*v).to_owned()), &sdk) {
            Ok(e) => e,
            Err(e) => panic!("{e:?}"),
        }
    }

    async fn invoked(sample: &str) -> Value {
        let exporter = offline();
        let router = router(exporter.clone());
        let payload: Value = serde_json::from_str(sample).unwrap_or_default();
        let event = lambda_runtime::LambdaEvent::new(payload, lambda_runtime::Context::default());
        match invoke(&exporter, &router, event).await {
            Ok(v) => v,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[tokio::test]
    async fn an_api_gateway_request_reaches_the_router_through_the_lambda_entry() {
        let out = invoked(include_str!("../../../events/export/get-unknown-export.json")).await;
        assert_eq!(out["statusCode"], 404, "{out}");
        let body: Value = serde_json::from_str(out["body"].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(body["error"]["code"], "not_found", "{out}");
    }

    #[tokio::test]
    async fn a_queue_message_that_is_not_an_export_job_is_dropped_not_retried() {
        let out = invoked(include_str!("../../../events/export/not-ours.json")).await;
        assert_eq!(out["batchItemFailures"], serde_json::json!([]), "{out}");
    }

    #[test]
    fn the_sample_job_is_a_queue_message_of_ours() {
        let event: aws_lambda_events::sqs::SqsEvent =
            serde_json::from_str(include_str!("../../../events/export/job.json")).unwrap_or_default();
        let body = event.records.first().and_then(|r| r.body.clone()).unwrap_or_default();
        let message: Result<job::Message, _> = serde_json::from_str(&body);
        assert!(message.is_ok_and(|m| ExportId::parse(&m.export_id).is_some()), "{body}");
    }

    #[test]
    fn archives_live_under_the_tenant_and_user() {
        let (t, u, e) = (TenantId::generate(), UserId::generate(), ExportId::generate());
        assert_eq!(object_key(&t, &u, &e), format!("exports/{t}/{u}/{e}.zip"));
    }
}
