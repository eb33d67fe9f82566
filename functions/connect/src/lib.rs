//! Device connections: connect sessions (`/v1/users/{id}/connect-sessions`, `/v1/me/connect-sessions`), the
//! hosted Connect page (`/connect/{link}`), the OAuth callback (`/oauth/{provider}/callback`) and the
//! connections API. Tokens are sealed in the vault with the context {tenant, user, provider}.

pub mod page;

use shared::oauth;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::connect::{
    BackfillProgress, ConnectSession, ConnectStore, Connection, ConnectionStatus, OAuthState, token_context,
};
use shared::http::{EndUserScope, Json, Routes, TenantScope, created, list_body};
use shared::ids::{TenantId, UserId};
use shared::providers::{AfterConsent, Overrides, ProviderId, Revoke};
use shared::sync::{SyncJob, SyncQueue, can_sync};
use shared::tenancy::{Status, Stores};
use shared::vault::Vault;

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub vault: Arc<Vault>,
    pub http: reqwest::Client,
    pub public_url: String,
    pub providers: Overrides,
    /// Where Sync now sends its jobs.
    pub sync: SyncQueue,
    /// Events out to the tenant's webhook endpoint.
    pub events: shared::events::Events,
}

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/v1/users/{user_id}/connect-sessions", create_session_for_user)
        .post("/v1/me/connect-sessions", create_session_for_me)
        .get("/v1/users/{user_id}/connections", list_connections)
        .delete("/v1/users/{user_id}/connections/{provider}", delete_connection)
        .get("/v1/me/connections", my_connections)
        .post("/v1/users/{user_id}/connections/{provider}/sync", sync_for_user)
        .post("/v1/me/connections/{provider}/sync", sync_for_me)
        .get("/connect/{link}", show_page)
        .post("/connect/{link}/{provider}/connect", start_connect)
        .post("/connect/{link}/{provider}/disconnect", disconnect_from_page)
        .post("/connect/{link}/{provider}/sync", sync_from_page)
        .get("/oauth/{provider}/callback", callback)
}

pub fn router(state: AppState) -> axum::Router {
    routes().into_router(state)
}

/// How long a Connect link lives, and an OAuth state.
const SESSION_TTL: time::Duration = time::Duration::minutes(30);
const STATE_TTL: time::Duration = time::Duration::minutes(10);

fn vault_error(e: shared::vault::VaultError) -> ApiError {
    ApiError::internal(anyhow::Error::new(e).context("vault"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    return_url: String,
    #[serde(default)]
    providers: Option<Vec<String>>,
}

async fn create_session(
    app: &AppState,
    tenant: &TenantId,
    user: &UserId,
    body: CreateSession,
) -> Result<Response, ApiError> {
    let tenancy = app.stores.tenant(tenant).await?;
    let found = tenancy.get_user(tenant, user).await.map_err(|e| e.into_api("user"))?;
    if found.status == Status::Disabled {
        return Err(ApiError::conflict(
            "user_disabled",
            "this user is disabled; enable them before connecting devices",
        ));
    }
    let store = tenancy.connect_store();
    let settings = store.settings(tenant).await.map_err(|e| e.into_api("connect settings"))?;
    if !settings.allows(&body.return_url) {
        return Err(ApiError::bad_request(
            "return_url_not_allowed",
            "return_url is not on the allow-list; add it with PUT /v1/settings/connect",
        ));
    }
    let configured: Vec<ProviderId> =
        store.apps(tenant).await.map_err(|e| e.into_api("provider app"))?.iter().map(|a| a.provider).collect();
    let providers = match body.providers {
        None => configured.clone(),
        Some(names) => {
            let mut wanted = Vec::new();
            for name in names {
                let p = ProviderId::parse(&name).map_err(|m| ApiError::bad_request("unknown_provider", m))?;
                if !configured.contains(&p) {
                    return Err(ApiError::bad_request(
                        "provider_not_configured",
                        format!("{p} has no app configured; set it with PUT /v1/settings/providers/{p}"),
                    ));
                }
                if !wanted.contains(&p) {
                    wanted.push(p);
                }
            }
            wanted
        }
    };
    if providers.is_empty() {
        return Err(ApiError::conflict(
            "no_provider_configured",
            "configure at least one provider app with PUT /v1/settings/providers/{provider}",
        ));
    }
    let (session, secret) = store
        .create_session(tenant, user, &body.return_url, &providers, SESSION_TTL)
        .await
        .map_err(|e| e.into_api("connect session"))?;
    let url = format!("{}/connect/{}.{}.{}", app.public_url, tenant, session.id, secret);
    tracing::info!(tenant_id = %tenant, user_id = %user, session = %session.id, "connect session created");
    Ok(created(json!({"id": session.id, "url": url, "expires_at": session.expires_at})))
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|_| ApiError::not_found("user"))
}

async fn create_session_for_user(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(user): Path<String>,
    Json(body): Json<CreateSession>,
) -> Result<Response, ApiError> {
    create_session(&app, &scope.tenant_id, &user_id(&user)?, body).await
}

async fn create_session_for_me(
    scope: EndUserScope,
    State(app): State<AppState>,
    Json(body): Json<CreateSession>,
) -> Result<Response, ApiError> {
    create_session(&app, &scope.tenant_id, &scope.user_id, body).await
}

async fn connections_of(app: &AppState, tenant: &TenantId, user: &UserId) -> Result<Response, ApiError> {
    let tenancy = app.stores.tenant(tenant).await?;
    tenancy.get_user(tenant, user).await.map_err(|e| e.into_api("user"))?;
    let list = tenancy.connect_store().connections(tenant, user).await.map_err(|e| e.into_api("connection"))?;
    Ok(axum::Json(list_body(list, None)).into_response())
}

async fn list_connections(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    connections_of(&app, &scope.tenant_id, &user_id(&user)?).await
}

async fn my_connections(scope: EndUserScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    connections_of(&app, &scope.tenant_id, &scope.user_id).await
}

/// Revokes at the provider where it can (best effort: the user's wish to leave wins), then deletes the
/// connection and its tokens.
async fn disconnect(
    app: &AppState,
    store: &ConnectStore,
    tenant: &TenantId,
    user: &UserId,
    p: ProviderId,
) -> Result<(), ApiError> {
    let conn = store.connection(tenant, user, p).await.map_err(|e| e.into_api("connection"))?;
    let conn = conn.ok_or_else(|| ApiError::not_found("connection to this provider"))?;
    match app.vault.open(&token_context(tenant, user, p), &conn.tokens_sealed).await {
        Ok(bytes) => match serde_json::from_slice::<shared::connect::TokenSet>(bytes.expose_secret()) {
            Ok(tokens) => {
                let provider_user = conn.provider_user_id.as_deref();
                revoke(&app.http, &app.providers, &app.vault, store, tenant, p, &tokens, provider_user).await
            }
            Err(_) => tracing::warn!(provider = %p, "stored tokens unreadable; deleting without revoking"),
        },
        Err(e) => tracing::warn!(provider = %p, error = %e, "could not open tokens; deleting without revoking"),
    }
    store.delete_connection(tenant, user, p).await.map_err(|e| e.into_api("connection"))?;
    tracing::info!(tenant_id = %tenant, user_id = %user, provider = %p, "connection removed");
    emit(app, shared::events::Event::connection_updated(tenant, user, p, "disconnected", None)).await;
    Ok(())
}

/// Revokes the tokens at the provider where it has a way to (best effort: failures are logged, never
/// returned, so disconnecting and purging go on). Also used by the purge of a deleted user.
#[allow(clippy::too_many_arguments)]
pub async fn revoke(
    http: &reqwest::Client,
    providers: &Overrides,
    vault: &Vault,
    store: &ConnectStore,
    tenant: &TenantId,
    p: ProviderId,
    tokens: &shared::connect::TokenSet,
    provider_user: Option<&str>,
) {
    let provider = p.provider();
    let url = |real: &str| providers.url(p, &real.replace("{user_id}", provider_user.unwrap_or_default()));
    let request = match provider.revoke() {
        Revoke::None => return,
        Revoke::QueryAccessToken(u) => http.post(url(u)).query(&[("access_token", tokens.access_token.as_str())]),
        Revoke::BearerPost(u) => http.post(url(u)).bearer_auth(&tokens.access_token),
        Revoke::BearerDelete(u) => http.delete(url(u)).bearer_auth(&tokens.access_token),
        Revoke::FormToken(u) => {
            let mut form = vec![("token", tokens.access_token.clone())];
            if let Ok(Some(creds)) = store.open_app(vault, tenant, p).await {
                form.push(("client_id", creds.client_id));
                form.push(("client_secret", creds.client_secret.expose_secret().to_owned()));
            }
            http.post(url(u)).form(&form)
        }
    };
    match request.timeout(std::time::Duration::from_secs(5)).send().await {
        Ok(r) if r.status().is_success() => tracing::info!(provider = %p, "revoked at the provider"),
        Ok(r) => tracing::warn!(provider = %p, status = r.status().as_u16(), "the provider refused the revocation"),
        Err(e) => tracing::warn!(provider = %p, error = %e.without_url(), "revocation failed"),
    }
}

async fn delete_connection(
    scope: TenantScope,
    State(app): State<AppState>,
    Path((user, provider)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let user = user_id(&user)?;
    let p = ProviderId::parse(&provider).map_err(|_| ApiError::not_found("connection to this provider"))?;
    let store = app.stores.tenant(&scope.tenant_id).await?.connect_store();
    disconnect(&app, &store, &scope.tenant_id, &user, p).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    #[serde(default)]
    days: Option<u32>,
}

/// `{"days"?}`, or no body at all (7 days).
fn days_of(body: &[u8]) -> Result<u32, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(7);
    }
    let parsed: SyncRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("the JSON body was not accepted: {e}")))?;
    Ok(parsed.days.unwrap_or(7))
}

/// Queues a sync job for the connection and marks it syncing; the job id lets the caller follow it.
async fn start_sync(
    app: &AppState,
    store: &ConnectStore,
    tenant: &TenantId,
    user: &UserId,
    p: ProviderId,
    days: u32,
) -> Result<String, ApiError> {
    if !(1..=365).contains(&days) {
        return Err(ApiError::bad_request("invalid_body", "days must be between 1 and 365"));
    }
    store
        .connection(tenant, user, p)
        .await
        .map_err(|e| e.into_api("connection"))?
        .ok_or_else(|| ApiError::not_found("connection to this provider"))?;
    if !can_sync(p) {
        return Err(ApiError::conflict(
            "sync_not_available",
            format!("syncing {p} is not available yet; its data reader has not landed"),
        ));
    }
    let job = SyncJob::new(tenant.clone(), user.clone(), p, days);
    store.set_status(tenant, user, p, ConnectionStatus::Syncing).await.map_err(|e| e.into_api("connection"))?;
    if let Err(e) = app.sync.send(&job).await {
        // Nothing was queued: the connection must not stay "syncing" for a job that will never run.
        let _ = store.set_status(tenant, user, p, ConnectionStatus::Connected).await;
        return Err(ApiError::unavailable(format!("the sync queue could not be reached; retry shortly ({e:#})")));
    }
    tracing::info!(tenant_id = %tenant, user_id = %user, provider = %p, job_id = %job.job_id, "sync queued");
    Ok(job.job_id)
}

async fn sync_for_user(
    scope: TenantScope,
    State(app): State<AppState>,
    Path((user, provider)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let days = days_of(&body)?;
    let user = user_id(&user)?;
    let p = ProviderId::parse(&provider).map_err(|_| ApiError::not_found("connection to this provider"))?;
    let tenancy = app.stores.tenant(&scope.tenant_id).await?;
    tenancy.get_user(&scope.tenant_id, &user).await.map_err(|e| e.into_api("user"))?;
    let job = start_sync(&app, &tenancy.connect_store(), &scope.tenant_id, &user, p, days).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"job_id": job, "status": "syncing"}))).into_response())
}

async fn sync_for_me(
    scope: EndUserScope,
    State(app): State<AppState>,
    Path(provider): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let days = days_of(&body)?;
    let p = ProviderId::parse(&provider).map_err(|_| ApiError::not_found("connection to this provider"))?;
    let store = app.stores.tenant(&scope.tenant_id).await?.connect_store();
    let job = start_sync(&app, &store, &scope.tenant_id, &scope.user_id, p, days).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"job_id": job, "status": "syncing"}))).into_response())
}

async fn sync_from_page(State(app): State<AppState>, Path((link, provider)): Path<(String, String)>) -> Response {
    let (session, store) = match session_of(&app, &link).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Ok(p) = ProviderId::parse(&provider) else { return invalid_link() };
    match start_sync(&app, &store, &session.tenant_id, &session.user_id, p, 7).await {
        Ok(_) => Redirect::to(&page_url(&app, &link, p, "sync_started", None)).into_response(),
        Err(e) => Redirect::to(&page_url(&app, &link, p, "error", Some(&e.message))).into_response(),
    }
}

/// A page answer with a status.
fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (status, [("cache-control", "no-store")], Html(markup.into_string())).into_response()
}

fn invalid_link() -> Response {
    html(
        StatusCode::NOT_FOUND,
        page::message_page(
            "This link is not valid",
            "Open the Connect link again from the app that sent you here.",
            None,
        ),
    )
}

/// A session link `<tenant>.<session>.<secret>`, checked: the session must exist, match and be unexpired.
async fn session_of(app: &AppState, link: &str) -> Result<(ConnectSession, ConnectStore), Response> {
    let mut parts = link.splitn(3, '.');
    let (Some(tenant), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid_link());
    };
    let Ok(tenant) = TenantId::parse(tenant) else { return Err(invalid_link()) };
    let store = match app.stores.tenant(&tenant).await {
        Ok(t) => t.connect_store(),
        Err(e) => return Err(e.into_response()),
    };
    let session = match store.session(&tenant, id, secret).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(invalid_link()),
        Err(e) => return Err(e.into_api("connect session").into_response()),
    };
    if session.expires_at < shared::time::now_rfc3339() {
        return Err(html(
            StatusCode::GONE,
            page::message_page(
                "This link has expired",
                "Connect links last 30 minutes. Go back to the app and open Connect again.",
                Some((&session.return_url, "Back to the app")),
            ),
        ));
    }
    Ok((session, store))
}

#[derive(Deserialize, Default)]
struct PageQuery {
    provider: Option<String>,
    result: Option<String>,
    message: Option<String>,
}

async fn show_page(State(app): State<AppState>, Path(link): Path<String>, Query(q): Query<PageQuery>) -> Response {
    let (session, store) = match session_of(&app, &link).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let tenant = match app.stores.tenant(&session.tenant_id).await {
        Ok(t) => t.get_tenant(&session.tenant_id).await,
        Err(e) => return e.into_response(),
    };
    let tenant = match tenant {
        Ok(t) if t.status == Status::Active => t,
        Ok(_) => return invalid_link(),
        Err(e) => return e.into_api("tenant").into_response(),
    };
    let (settings, connections) = match tokio::try_join!(
        store.settings(&session.tenant_id),
        store.connections(&session.tenant_id, &session.user_id)
    ) {
        Ok(found) => found,
        Err(e) => return e.into_api("connections").into_response(),
    };
    let cards: Vec<page::Card> = session
        .providers
        .iter()
        .map(|p| page::Card { provider: *p, connection: connections.iter().find(|c| c.provider == *p).cloned() })
        .collect();
    let name = |p: &str| ProviderId::parse(p).map(|p| p.provider().display_name()).unwrap_or("the provider");
    let banner = match (q.result.as_deref(), q.provider.as_deref()) {
        (Some("connected"), Some(p)) => Some((true, format!("{} is connected.", name(p)))),
        (Some("disconnected"), Some(p)) => Some((true, format!("{} is disconnected.", name(p)))),
        (Some("sync_started"), Some(p)) => {
            Some((true, format!("Syncing {} now; this page shows when it is done.", name(p))))
        }
        (Some("error"), Some(p)) => Some((
            false,
            format!("{} was not connected: {}", name(p), q.message.as_deref().unwrap_or("something went wrong")),
        )),
        _ => None,
    };
    // The way back tells the app what happened, as the callback's outcome.
    let back = match (q.result.as_deref(), q.provider.as_deref().map(ProviderId::parse)) {
        (Some(result @ ("connected" | "disconnected" | "error")), Some(Ok(p))) => {
            let sep = if session.return_url.contains('?') { '&' } else { '?' };
            format!("{}{sep}provider={p}&result={result}", session.return_url)
        }
        _ => session.return_url.clone(),
    };
    html(
        StatusCode::OK,
        page::connect_page(tenant.name.as_str(), settings.logo_url.as_deref(), &link, &back, &cards, banner),
    )
}

fn page_url(app: &AppState, link: &str, provider: ProviderId, result: &str, message: Option<&str>) -> String {
    let mut url = format!("{}/connect/{link}?provider={provider}&result={result}", app.public_url);
    if let Some(m) = message {
        url.push_str("&message=");
        url.push_str(&url::form_urlencoded::byte_serialize(m.as_bytes()).collect::<String>());
    }
    url
}

/// What a state carries, sealed: the PKCE verifier and the page link to come back to.
#[derive(serde::Serialize, Deserialize)]
struct StateSecrets {
    link: String,
    pkce: Option<String>,
}

async fn open_app(
    app: &AppState,
    store: &ConnectStore,
    tenant: &TenantId,
    p: ProviderId,
) -> Result<Option<oauth::App>, ApiError> {
    store.open_app(&app.vault, tenant, p).await.map_err(ApiError::internal)
}

fn redirect_uri(app: &AppState, p: ProviderId) -> String {
    format!("{}/oauth/{p}/callback", app.public_url)
}

async fn start_connect(State(app): State<AppState>, Path((link, provider)): Path<(String, String)>) -> Response {
    let (session, store) = match session_of(&app, &link).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let p = match ProviderId::parse(&provider) {
        Ok(p) if session.providers.contains(&p) => p,
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                page::message_page("Unknown provider", "This provider is not offered here.", None),
            );
        }
    };
    let result: Result<String, ApiError> = async {
        let creds = open_app(&app, &store, &session.tenant_id, p).await?.ok_or_else(|| {
            ApiError::conflict("provider_not_configured", "this provider is no longer configured by the app")
        })?;
        let secret = shared::connect::random_secret();
        let state_param = format!("{}.{secret}", session.tenant_id);
        let (url, pkce) =
            oauth::authorize_url(p.provider(), &app.providers, &creds, &redirect_uri(&app, p), state_param)
                .map_err(ApiError::internal)?;
        let secrets = serde_json::to_vec(&StateSecrets { link: link.clone(), pkce }).map_err(anyhow::Error::from)?;
        let sealed = app
            .vault
            .seal(&token_context(&session.tenant_id, &session.user_id, p), &secrets)
            .await
            .map_err(vault_error)?;
        let state = OAuthState {
            session_id: session.id.clone(),
            user_id: session.user_id.clone(),
            provider: p,
            pkce_sealed: Some(sealed),
            redirect_uri: redirect_uri(&app, p),
        };
        store.put_state(&session.tenant_id, &secret, &state, STATE_TTL).await.map_err(|e| e.into_api("state"))?;
        Ok(url)
    }
    .await;
    match result {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => html(e.status, page::message_page("Could not start the connection", &e.message, None)),
    }
}

async fn disconnect_from_page(State(app): State<AppState>, Path((link, provider)): Path<(String, String)>) -> Response {
    let (session, store) = match session_of(&app, &link).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Ok(p) = ProviderId::parse(&provider) else { return invalid_link() };
    match disconnect(&app, &store, &session.tenant_id, &session.user_id, p).await {
        Ok(()) => Redirect::to(&page_url(&app, &link, p, "disconnected", None)).into_response(),
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            Redirect::to(&page_url(&app, &link, p, "disconnected", None)).into_response()
        }
        Err(e) => html(e.status, page::message_page("Could not disconnect", &e.message, None)),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn bad_state() -> Response {
    html(
        StatusCode::BAD_REQUEST,
        page::message_page(
            "This sign-in could not be completed",
            "The link back from the provider is not valid or has expired. Open Connect again from the app.",
            None,
        ),
    )
}

async fn callback(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Ok(p) = ProviderId::parse(&provider) else { return bad_state() };
    let Some((tenant, secret)) = q.state.as_deref().and_then(|s| s.split_once('.')) else { return bad_state() };
    let Ok(tenant) = TenantId::parse(tenant) else { return bad_state() };
    let store = match app.stores.tenant(&tenant).await {
        Ok(t) => t.connect_store(),
        Err(e) => return e.into_response(),
    };
    let state = match store.redeem_state(&tenant, secret).await {
        Ok(Some(state)) if state.provider == p => state,
        Ok(_) => return bad_state(),
        Err(shared::tenancy::StoreError::Conflict(why)) if why == "state_used" => {
            return html(
                StatusCode::OK,
                page::message_page(
                    "Already done",
                    "This sign-in was already completed; nothing more to do. You can go back to the app.",
                    None,
                ),
            );
        }
        Err(shared::tenancy::StoreError::Conflict(_)) => return bad_state(),
        Err(e) => return e.into_api("state").into_response(),
    };
    let secrets: Option<StateSecrets> = match &state.pkce_sealed {
        Some(sealed) => match app.vault.open(&token_context(&tenant, &state.user_id, p), sealed).await {
            Ok(bytes) => serde_json::from_slice(bytes.expose_secret()).ok(),
            Err(e) => return vault_error(e).into_response(),
        },
        None => None,
    };
    let Some(secrets) = secrets else { return bad_state() };
    let back = |result: &str, message: Option<&str>| {
        Redirect::to(&page_url(&app, &secrets.link, p, result, message)).into_response()
    };
    if let Some(error) = q.error.as_deref() {
        let message = match error {
            "access_denied" => "you declined access, so nothing was connected".to_owned(),
            other => format!(
                "the provider answered `{other}`{}",
                q.error_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
        };
        tracing::info!(tenant_id = %tenant, provider = %p, error = %error, "consent not given");
        return back("error", Some(&message));
    }
    let Some(code) = q.code else { return back("error", Some("the provider sent no authorization code")) };
    match complete(&app, &store, &tenant, &state, p, code, secrets.pkce).await {
        Ok(()) => back("connected", None),
        Err(message) => back("error", Some(&message)),
    }
}

/// Exchanges the code and stores the connection; on any failure stores nothing and says why.
async fn complete(
    app: &AppState,
    store: &ConnectStore,
    tenant: &TenantId,
    state: &OAuthState,
    p: ProviderId,
    code: String,
    pkce: Option<String>,
) -> Result<(), String> {
    let generic = "something failed on our side; please try again";
    let creds = match open_app(app, store, tenant, p).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err("this provider is no longer configured by the app".into()),
        Err(_) => return Err(generic.into()),
    };
    let exchanged = oauth::exchange(&app.http, p.provider(), &app.providers, &creds, &state.redirect_uri, code, pkce)
        .await
        .map_err(|e| {
            tracing::warn!(tenant_id = %tenant, provider = %p, error = %e, "code exchange failed");
            e.to_string()
        })?;
    if let AfterConsent::RegisterUser(url) = p.provider().after_consent() {
        let response = app
            .http
            .post(app.providers.url(p, url))
            .bearer_auth(&exchanged.tokens.access_token)
            .json(&json!({"member-id": state.user_id}))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::CONFLICT => {}
            Ok(r) => {
                return Err(format!(
                    "{} refused to register the user ({})",
                    p.provider().display_name(),
                    r.status().as_u16()
                ));
            }
            Err(_) => return Err(format!("{} could not be reached to register the user", p.provider().display_name())),
        }
    }
    let mut provider_user_id = exchanged.provider_user_id.clone();
    if provider_user_id.is_none()
        && let Some((url, field)) = p.provider().user_info()
    {
        let info = app
            .http
            .get(app.providers.url(p, url))
            .bearer_auth(&exchanged.tokens.access_token)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        match info {
            Ok(r) if r.status().is_success() => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                provider_user_id =
                    body[field].as_str().map(str::to_owned).or_else(|| body[field].as_i64().map(|n| n.to_string()));
            }
            // Only webhooks need the id; the connection works without it.
            _ => tracing::warn!(provider = %p, "could not read the provider's user id"),
        }
    }
    let plain = serde_json::to_vec(&exchanged.tokens).map_err(|_| generic.to_owned())?;
    let sealed =
        app.vault.seal(&token_context(tenant, &state.user_id, p), &plain).await.map_err(|_| generic.to_owned())?;
    // A first sync reaches back as far as the provider allows, a chunk per job (docs/providers.md).
    let backfill = can_sync(p)
        .then(|| SyncJob::backfill(tenant.clone(), state.user_id.clone(), p, time::OffsetDateTime::now_utc().date()));
    let connection = Connection {
        backfill: backfill.as_ref().and_then(|j| j.backfill.as_ref()).map(BackfillProgress::starting),
        provider: p,
        status: ConnectionStatus::Connected,
        provider_user_id,
        scopes: exchanged.scopes,
        connected_at: shared::time::now_rfc3339(),
        last_synced_at: None,
        last_error: None,
        tokens_sealed: sealed,
        token_version: 1,
    };
    store.put_connection(tenant, &state.user_id, &connection).await.map_err(|_| generic.to_owned())?;
    tracing::info!(tenant_id = %tenant, user_id = %state.user_id, provider = %p, "connection stored");
    emit(app, shared::events::Event::connection_created(tenant, &state.user_id, p)).await;
    if let Some(job) = backfill
        && let Err(e) = app.sync.send(&job).await
    {
        // The hourly sync still runs; only the history waits for the next connect.
        tracing::error!(error = ?e, tenant_id = %tenant, provider = %p, "could not queue the backfill");
    }
    Ok(())
}

/// Queues an event for the tenant's webhooks; a failure is logged, never the user's problem.
async fn emit(app: &AppState, event: shared::events::Event) {
    if let Err(e) = app.events.emit(&event).await {
        tracing::error!(event_id = %event.id, event_type = %event.kind, error = ?e, "could not queue an event");
    }
}
