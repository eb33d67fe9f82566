//! The token endpoint (code exchange and rotating refresh) and the revoke endpoints, in each provider's wire format.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::{App, token_fault};
use crate::auth::{bearer_token, client_credentials, field, unauthorized};
use crate::people;
use crate::provider::{Pkce, Provider};
use crate::store::{Issued, TokenError};

fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Code,
    Refresh,
}

/// `POST <token>`: `grant_type=authorization_code` or `grant_type=refresh_token`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn token(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    app.with(|s| s.counters.token_requests += 1);
    if let Some(res) = token_fault(&app).await {
        return res;
    }
    let provider = app.provider;
    let form = pairs(&body);
    let grant = match field(&form, "grant_type") {
        Ok(Some("refresh_token")) => Grant::Refresh,
        _ => Grant::Code,
    };
    let result = exchange(&app, &headers, &form);
    match &result {
        Ok(_) => tracing::info!(?grant, "tokens issued"),
        Err(e) => tracing::info!(?grant, error = e.code(), "token request refused"),
    }
    match result {
        Ok(issued) => success(provider, &issued, grant),
        Err(e) => failure(provider, &e, grant),
    }
}

fn exchange(app: &App, headers: &HeaderMap, form: &[(String, String)]) -> Result<Issued, TokenError> {
    let provider = app.provider;
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        return Err(TokenError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()));
    }
    if provider == Provider::Withings && field(form, "action")? != Some("requesttoken") {
        return Err(TokenError::InvalidRequest("action must be requesttoken".into()));
    }
    let (client_id, secret) = client_credentials(provider, headers, form).inspect_err(|_| {
        app.with(|s| s.counters.invalid_client += 1);
    })?;
    let grant_type = field(form, "grant_type")?;
    let code = field(form, "code")?;
    let redirect_uri = field(form, "redirect_uri")?;
    let verifier = field(form, "code_verifier")?;
    let refresh_token = field(form, "refresh_token")?;
    app.with(|s| {
        s.authenticate(&client_id, &secret)?;
        match grant_type {
            Some("authorization_code") => {
                let code = code.ok_or_else(|| TokenError::InvalidRequest("code is missing".into()))?;
                s.redeem_code(&client_id, code, redirect_uri, verifier, provider.pkce() != Pkce::Unsupported)
            }
            Some("refresh_token") if provider == Provider::Polar => Err(TokenError::UnsupportedGrantType(
                "Polar issues no refresh tokens; its access tokens last until revoked".into(),
            )),
            Some("refresh_token") => {
                let token =
                    refresh_token.ok_or_else(|| TokenError::InvalidRequest("refresh_token is missing".into()))?;
                s.refresh(&client_id, token)
            }
            Some(other) => Err(TokenError::UnsupportedGrantType(format!("grant_type {other:?} is not supported"))),
            None => Err(TokenError::InvalidRequest("grant_type is missing".into())),
        }
    })
}

fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The provider's success body.
fn success(provider: Provider, t: &Issued, grant: Grant) -> Response {
    let body: Value = match provider {
        Provider::Oura => json!({
            "access_token": t.access_token,
            "token_type": "bearer",
            "expires_in": t.expires_in,
            "refresh_token": t.refresh_token,
            "scope": t.scope,
        }),
        Provider::GoogleHealth => {
            let mut body = json!({
                "access_token": t.access_token,
                "expires_in": t.expires_in,
                "scope": t.scope,
                "token_type": "Bearer",
            });
            if let (Some(rt), Some(obj)) = (&t.refresh_token, body.as_object_mut()) {
                obj.insert("refresh_token".into(), json!(rt));
            }
            body
        }
        Provider::Withings => json!({
            "status": 0,
            "body": {
                "userid": people::numeric_id(provider, &t.user).to_string(),
                "access_token": t.access_token,
                "refresh_token": t.refresh_token,
                "expires_in": t.expires_in,
                "scope": t.scope,
                "token_type": "Bearer",
            },
        }),
        Provider::Whoop => {
            let mut body = json!({
                "access_token": t.access_token,
                "expires_in": t.expires_in,
                "scope": t.scope,
                "token_type": "bearer",
            });
            if let (Some(rt), Some(obj)) = (&t.refresh_token, body.as_object_mut()) {
                obj.insert("refresh_token".into(), json!(rt));
            }
            body
        }
        Provider::Polar => json!({
            "access_token": t.access_token,
            "token_type": "bearer",
            "expires_in": t.expires_in,
            "x_user_id": people::numeric_id(provider, &t.user),
        }),
        Provider::Strava => {
            let mut body = json!({
                "token_type": "Bearer",
                "expires_at": now_unix() + t.expires_in as i64,
                "expires_in": t.expires_in,
                "refresh_token": t.refresh_token,
                "access_token": t.access_token,
            });
            // The code exchange also introduces the athlete; a refresh does not.
            if let (Grant::Code, Some(obj)) = (grant, body.as_object_mut()) {
                let who = people::person(provider, &t.user);
                obj.insert(
                    "athlete".into(),
                    json!({
                        "id": people::numeric_id(provider, &t.user),
                        "resource_state": 2,
                        "firstname": who.first_name,
                        "lastname": who.last_name,
                    }),
                );
            }
            body
        }
        Provider::Garmin => json!({
            "access_token": t.access_token,
            "expires_in": t.expires_in,
            "token_type": "bearer",
            "refresh_token": t.refresh_token,
            "scope": t.scope,
            "jti": crate::ids::uuid_like(&[&t.access_token]),
            "refresh_token_expires_in": 7_775_998,
        }),
    };
    no_store((StatusCode::OK, axum::Json(body)).into_response())
}

/// The provider's error body: RFC 6749 JSON for most, Withings wraps it in HTTP 200.
fn failure(provider: Provider, e: &TokenError, grant: Grant) -> Response {
    let description = e.to_string();
    let res = match provider {
        Provider::Withings => (
            StatusCode::OK,
            axum::Json(json!({"status": 503, "body": {}, "error": format!("Invalid Params: {description}")})),
        )
            .into_response(),
        Provider::Strava => {
            // Strava's own shape is {message, errors}; the RFC fields ride along so either parser understands it.
            let (resource, field) = match (e, grant) {
                (TokenError::InvalidClient(_), _) => ("Application", "client_id"),
                (_, Grant::Refresh) => ("RefreshToken", "refresh_token"),
                (_, Grant::Code) => ("AuthorizationCode", "code"),
            };
            let body = json!({
                "error": e.code(),
                "error_description": description,
                "message": "Bad Request",
                "errors": [{"resource": resource, "field": field, "code": "invalid"}],
            });
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
        _ => {
            let status = match e {
                TokenError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, axum::Json(json!({"error": e.code(), "error_description": description}))).into_response()
        }
    };
    no_store(res)
}

/// `POST|GET /oauth/revoke?access_token=...` (Oura). Answers 200 whether or not the token was live (RFC 7009 2.2).
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn revoke_oura(State(app): State<App>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    if let Some(res) = token_fault(&app).await {
        return res;
    }
    let mut params = pairs(query.unwrap_or_default().as_bytes());
    params.extend(pairs(&body));
    let token = params.iter().find(|(k, _)| k == "access_token" || k == "token").map(|(_, v)| v.clone());
    match token {
        Some(token) => {
            let revoked = app.with(|s| s.revoke_token(&token));
            tracing::info!(revoked, "revoke");
            StatusCode::OK.into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": "access_token is missing"})),
        )
            .into_response(),
    }
}

/// `POST /revoke` with `token=` in the form or the query (Google). Unknown or dead tokens get 400 `invalid_token`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn revoke_google(State(app): State<App>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    if let Some(res) = token_fault(&app).await {
        return res;
    }
    let mut params = pairs(&body);
    params.extend(pairs(query.unwrap_or_default().as_bytes()));
    let token = params.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone());
    let Some(token) = token else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": "Missing required parameter: token"})),
        )
            .into_response();
    };
    if app.with(|s| s.revoke_token(&token)) {
        tracing::info!("revoked");
        StatusCode::OK.into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_token", "error_description": "Token expired or revoked"})),
        )
            .into_response()
    }
}

/// WHOOP `DELETE /developer/v2/user/access` and Garmin `DELETE /wellness-api/rest/user/registration`: the bearer's
/// user withdraws every grant they gave this client. 204 on success.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn revoke_user_bearer(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(res) = token_fault(&app).await {
        return res;
    }
    let Some(token) = bearer_token(&headers) else {
        return unauthorized(app.provider, None);
    };
    let outcome = app.with(|s| s.bearer(token).map(|b| s.revoke_user(&b.client_id, &b.user)));
    match outcome {
        Ok(_) => {
            tracing::info!("user access revoked");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => unauthorized(app.provider, Some(e)),
    }
}

/// Strava `POST /oauth/deauthorize` with a Bearer header or `access_token` in the form: 200 `{"access_token"}`.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn revoke_strava(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(res) = token_fault(&app).await {
        return res;
    }
    let form = pairs(&body);
    let token = bearer_token(&headers)
        .map(str::to_string)
        .or_else(|| form.iter().find(|(k, _)| k == "access_token").map(|(_, v)| v.clone()));
    let Some(token) = token else {
        return unauthorized(app.provider, None);
    };
    let outcome = app.with(|s| s.bearer(&token).map(|b| s.revoke_user(&b.client_id, &b.user)));
    match outcome {
        Ok(_) => {
            tracing::info!("athlete deauthorized");
            (StatusCode::OK, axum::Json(json!({"access_token": token}))).into_response()
        }
        Err(e) => unauthorized(app.provider, Some(e)),
    }
}
