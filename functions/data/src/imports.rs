//! Apple Health export uploads: `POST /v1/users/{user_id}/imports/apple-health` answers a presigned S3 PUT
//! (or, above 5 GB, presigned multipart parts and a completion route); the upload's ObjectCreated event starts
//! `functions/health-import`. `GET /v1/imports/{import_id}` and the lists show how far it is.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::ApiError;
use shared::http::{EndUserScope, Json, PageParams, Query, TenantScope, created, list_body};
use shared::ids::{TenantId, UserId};
use shared::imports::{Import, ImportId, ImportStatus, object_key};

use crate::AppState;
use crate::reads::{Subject, SubjectStore};

/// How long an upload URL stays valid.
const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// A single PUT takes at most 5 GB (S3's limit); above that the upload is multipart.
const SINGLE_PUT_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// S3 allows 10,000 parts of at most 5 GB; we cut parts of at least 64 MiB.
const MIN_PART: u64 = 64 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewImport {
    /// The export's size in bytes, when known; above 5 GB the answer is a multipart upload.
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Serialize)]
struct Part {
    part_number: i32,
    upload_url: String,
}

fn import_id(raw: &str) -> Result<ImportId, ApiError> {
    ImportId::parse(raw).map_err(|_| ApiError::not_found("import"))
}

fn s3_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("the upload store is unavailable: {e}"))
}

/// 201 with where to upload the export.
pub async fn create(
    subject: Subject,
    State(app): State<AppState>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: none, or {"size": bytes}.
    let body: NewImport = if raw.iter().all(u8::is_ascii_whitespace) {
        NewImport::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("expected {{\"size\": <bytes>}} or no body: {e}"))
        })?
    };
    let size = body.size;
    if size == Some(0) {
        return Err(ApiError::bad_request("invalid_body", "size must be the export's size in bytes, above 0"));
    }
    let (tenancy, _) = subject.store(&app).await?;
    let id = ImportId::generate();
    let key = object_key(subject.tenant(), subject.user(), &id);
    let presign = PresigningConfig::expires_in(UPLOAD_TTL).map_err(s3_failed)?;
    let expires_at = shared::time::format(shared::time::now() + UPLOAD_TTL);
    let now = shared::time::now_rfc3339();
    let mut import = Import {
        id: id.clone(),
        user_id: subject.user().clone(),
        status: ImportStatus::WaitingForUpload,
        bytes_read: 0,
        records_imported: 0,
        days_affected: 0,
        resumes: 0,
        error: None,
        created_at: now.clone(),
        updated_at: now,
        upload_id: None,
    };
    let body = match size.filter(|s| *s > SINGLE_PUT_MAX) {
        None => {
            let url =
                app.s3.put_object().bucket(&app.import_bucket).key(&key).presigned(presign).await.map_err(s3_failed)?;
            json!({"id": id, "upload_url": url.uri(), "method": "PUT", "headers": {}, "expires_at": expires_at})
        }
        Some(size) => {
            let part_size = MIN_PART.max(size.div_ceil(MAX_PARTS));
            let parts = size.div_ceil(part_size);
            let upload = app
                .s3
                .create_multipart_upload()
                .bucket(&app.import_bucket)
                .key(&key)
                .send()
                .await
                .map_err(s3_failed)?;
            let upload_id = upload.upload_id().ok_or_else(|| s3_failed("no upload id"))?.to_owned();
            let mut urls = Vec::new();
            for n in 1..=i32::try_from(parts).unwrap_or(i32::MAX) {
                let url = app
                    .s3
                    .upload_part()
                    .bucket(&app.import_bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .presigned(presign.clone())
                    .await
                    .map_err(s3_failed)?;
                urls.push(Part { part_number: n, upload_url: url.uri().to_owned() });
            }
            import.upload_id = Some(upload_id);
            json!({"id": id, "method": "PUT", "part_size": part_size, "parts": urls, "headers": {},
                   "complete_url": format!("/v1/imports/{id}/complete"), "expires_at": expires_at})
        }
    };
    tenancy.import_store().create(subject.tenant(), &import).await.map_err(|e| e.into_api("import"))?;
    tracing::info!(tenant_id = %subject.tenant(), user_id = %subject.user(), import_id = %id, multipart = import.upload_id.is_some(), "import created");
    Ok(created(body))
}

/// Who asks about one import: the tenant (any of its users' imports, `/v1/imports/{id}`) or an end user (only
/// their own, `/v1/me/imports/{id}`).
pub struct Asker {
    tenant: TenantId,
    user: Option<UserId>,
}

impl FromRequestParts<AppState> for Asker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.uri.path().starts_with("/v1/me/") {
            let scope = EndUserScope::from_request_parts(parts, state).await?;
            Ok(Self { tenant: scope.tenant_id, user: Some(scope.user_id) })
        } else {
            let scope = TenantScope::from_request_parts(parts, state).await?;
            Ok(Self { tenant: scope.tenant_id, user: None })
        }
    }
}

impl Asker {
    async fn import(&self, app: &AppState, id: &ImportId) -> Result<Import, ApiError> {
        let store = app.stores.tenant(&self.tenant).await?.import_store();
        match &self.user {
            Some(user) => store.of_user(&self.tenant, user, id).await,
            None => store.get(&self.tenant, id).await,
        }
        .map_err(|e| e.into_api("import"))
    }
}

/// An import as the API shows it: an uploaded export that has not started yet is `queued`.
async fn shown(app: &AppState, tenant: &TenantId, import: Import) -> Result<serde_json::Value, ApiError> {
    let mut import = import;
    if import.status == ImportStatus::WaitingForUpload {
        let key = object_key(tenant, &import.user_id, &import.id);
        let head = app.s3.head_object().bucket(&app.import_bucket).key(&key).send().await;
        if head.is_ok() {
            import.status = ImportStatus::Queued;
        }
    }
    Ok(serde_json::to_value(import).map_err(anyhow::Error::from)?)
}

/// `GET /v1/imports/{import_id}` (tenant) and `/v1/me/imports/{import_id}` (end user: only their own).
pub async fn get(asker: Asker, State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let import = asker.import(&app, &import_id(&raw)?).await?;
    Ok(axum::Json(shown(&app, &asker.tenant, import).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The user's imports, newest first.
pub async fn list(
    subject: Subject,
    State(app): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let page = PageParams { limit: q.limit, cursor: q.cursor }.page()?;
    let (tenancy, _) = subject.store(&app).await?;
    let (imports, next) = tenancy
        .import_store()
        .list(subject.tenant(), subject.user(), page.after, page.limit)
        .await
        .map_err(|e| e.into_api("import"))?;
    let mut out = Vec::with_capacity(imports.len());
    for i in imports {
        out.push(shown(&app, subject.tenant(), i).await?);
    }
    Ok(axum::Json(list_body(out, next)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    parts: Vec<CompletedPart>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletedPart {
    part_number: i32,
    etag: String,
}

/// Completes a multipart upload with the parts' ETags; S3's ObjectCreated event then starts the import.
pub async fn complete(
    asker: Asker,
    State(app): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<Completion>,
) -> Result<Response, ApiError> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3Part};
    let id = import_id(&raw)?;
    let import = asker.import(&app, &id).await?;
    let Some(upload_id) = import.upload_id.clone() else {
        return Err(ApiError::conflict(
            "not_multipart",
            "this import takes a single PUT; there is nothing to complete",
        ));
    };
    if import.status != ImportStatus::WaitingForUpload {
        return Err(ApiError::conflict("already_uploaded", "this import's upload is already complete"));
    }
    if body.parts.is_empty() || body.parts.windows(2).any(|w| w[0].part_number >= w[1].part_number) {
        return Err(ApiError::bad_request("invalid_body", "parts must list every part once, in part_number order"));
    }
    let parts =
        body.parts.iter().map(|p| S3Part::builder().part_number(p.part_number).e_tag(&p.etag).build()).collect();
    let key = object_key(&asker.tenant, &import.user_id, &id);
    app.s3
        .complete_multipart_upload()
        .bucket(&app.import_bucket)
        .key(&key)
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_parts",
                format!("S3 refused the parts: {}", aws_sdk_s3::error::DisplayErrorContext(e)),
            )
        })?;
    Ok(axum::Json(shown(&app, &asker.tenant, import).await?).into_response())
}
