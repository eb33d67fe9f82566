//! One provider sandbox as an axum app: shared state, the route table, and the fault switches' effects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

use crate::provider::Provider;
use crate::store::{DataFault, RateDecision, Store, TokenFault};
use crate::{
    consent, control, data, data_garmin, data_google, data_oura, data_polar, data_strava, data_whoop, data_withings,
    hooks, token,
};

pub(crate) struct Sandbox {
    pub provider: Provider,
    store: Mutex<Store>,
    pub hooks: crate::hooks::HooksState,
}

pub(crate) type App = Arc<Sandbox>;

impl Sandbox {
    /// Runs `f` under the state lock. A panic elsewhere never leaves the sandbox unusable.
    pub fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut guard = self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

/// How long the `timeout` fault holds a request before giving up with 504; clients time out long before.
const TIMEOUT_HOLD: Duration = Duration::from_secs(600);

pub(crate) fn router(provider: Provider) -> Router {
    let app: App = Arc::new(Sandbox { provider, store: Mutex::new(Store::new(provider)), hooks: Default::default() });
    let mut r = Router::new()
        .route("/", get(control::index))
        .route("/sandbox/state", get(control::state))
        .route("/sandbox/faults", get(control::faults).post(control::set_faults))
        .route(provider.authorize_path(), get(consent::show).post(consent::decide))
        .route(provider.token_path(), post(token::token))
        .route("/sandbox/webhooks", get(hooks::state))
        .route("/sandbox/webhooks/settings", post(hooks::settings))
        .route("/sandbox/webhooks/send", post(hooks::send));
    r = match provider {
        Provider::Oura => r
            .route("/oauth/revoke", post(token::revoke_oura).get(token::revoke_oura))
            .route("/v2/usercollection/daily_activity", get(data::oura_daily_activity))
            .route("/v2/usercollection/heartrate", get(data::oura_heartrate))
            .route("/v2/usercollection/daily_sleep", get(data_oura::oura_daily_sleep))
            .route("/v2/usercollection/sleep", get(data_oura::oura_sleep))
            .route("/v2/usercollection/daily_readiness", get(data_oura::oura_daily_readiness))
            .route("/v2/usercollection/daily_spo2", get(data_oura::oura_daily_spo2))
            .route("/v2/usercollection/workout", get(data_oura::oura_workout))
            .route("/v2/usercollection/personal_info", get(data::oura_personal_info))
            .route("/v2/webhook/subscription", post(hooks::oura_create).get(hooks::oura_list))
            .route("/v2/webhook/subscription/renew/{id}", axum::routing::put(hooks::oura_renew)),
        Provider::GoogleHealth => r
            .route("/revoke", post(token::revoke_google))
            .route("/v4/users/me/dataTypes/{data_type}/dataPoints", get(data_google::google_data_points)),
        Provider::Withings => r
            .route("/notify", post(hooks::withings_notify))
            .route("/measure", post(data_withings::withings_measure))
            .route("/v2/measure", post(data_withings::withings_activity))
            .route("/v2/sleep", post(data_withings::withings_sleep)),
        Provider::Whoop => r
            .route("/developer/v2/user/access", delete(token::revoke_user_bearer))
            .route("/developer/v2/user/profile/basic", get(data::whoop_profile))
            .route("/developer/v2/cycle", get(data_whoop::whoop_cycles))
            .route("/developer/v2/recovery", get(data_whoop::whoop_recoveries))
            .route("/developer/v2/activity/sleep", get(data_whoop::whoop_sleeps))
            .route("/developer/v2/activity/workout", get(data_whoop::whoop_workouts)),
        Provider::Polar => r
            .route("/v3/users", post(data::polar_register))
            .route("/v3/users/{user_id}", get(data::polar_user_info).delete(data::polar_delete_user))
            .route("/v3/exercises", get(data_polar::polar_exercises))
            .route("/v3/users/activities", get(data_polar::polar_activities))
            .route("/v3/users/sleep", get(data_polar::polar_sleep))
            .route("/v3/webhooks", post(hooks::polar_create)),
        Provider::Strava => r
            .route("/oauth/deauthorize", post(token::revoke_strava))
            .route("/api/v3/athlete", get(data::strava_athlete))
            .route("/api/v3/athlete/activities", get(data_strava::strava_activities))
            .route("/api/v3/push_subscriptions", post(hooks::strava_create)),
        Provider::Garmin => r
            .route("/wellness-api/rest/user/registration", delete(token::revoke_user_bearer))
            .route("/wellness-api/rest/user/id", get(data::garmin_user_id))
            .route("/wellness-api/rest/dailies", get(data_garmin::garmin_dailies)),
    };
    r.fallback(not_found).with_state(app)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let body = json!({"error": "not_found", "error_description": format!("the sandbox serves no {}", uri.path())});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// Applies the token fault. `Some` is the whole answer; `None` means carry on (after any delay).
pub(crate) async fn token_fault(app: &App) -> Option<Response> {
    let (fault, slow_ms) = app.with(|s| (s.faults.token, s.faults.slow_ms));
    match fault {
        TokenFault::None => None,
        TokenFault::Slow => {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            None
        }
        TokenFault::ServerError => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(
                    json!({"error": "server_error", "error_description": "sandbox fault: token endpoint answers 500"}),
                ),
            )
                .into_response(),
        ),
        TokenFault::MalformedJson => Some(
            ([(header::CONTENT_TYPE, "application/json")], "{\"access_token\": \"sandbox-malformed").into_response(),
        ),
        TokenFault::Timeout => {
            tokio::time::sleep(TIMEOUT_HOLD).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
    }
}

/// Applies the data fault. `Some` is the whole answer; `None` means carry on (after any delay).
pub(crate) async fn data_fault(app: &App) -> Option<Response> {
    let (fault, slow_ms) = app.with(|s| (s.faults.data, s.faults.slow_ms));
    match fault {
        DataFault::None => None,
        DataFault::Slow => {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            None
        }
        DataFault::ServerError => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"detail": "sandbox fault: data endpoint answers 500"})),
            )
                .into_response(),
        ),
        DataFault::MalformedJson => {
            Some(([(header::CONTENT_TYPE, "application/json")], "{\"data\": [{\"day\": \"2026-").into_response())
        }
        DataFault::TooManyRequests => {
            let (limit, window) = app.with(|s| (s.faults.rate_limit, s.faults.rate_limit_window_seconds));
            let decision = RateDecision { allowed: false, limit, remaining: 0, reset_seconds: window };
            Some(too_many_requests(decision))
        }
    }
}

pub(crate) fn rate_headers(headers: &mut HeaderMap, d: RateDecision) {
    let pairs: [(&str, u64); 3] = [
        ("x-ratelimit-limit", u64::from(d.limit)),
        ("x-ratelimit-remaining", u64::from(d.remaining)),
        ("x-ratelimit-reset", d.reset_seconds),
    ];
    for (name, value) in pairs {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

pub(crate) fn too_many_requests(d: RateDecision) -> Response {
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(
            json!({"detail": format!("rate limit of {} requests exceeded; retry in {} s", d.limit, d.reset_seconds)}),
        ),
    )
        .into_response();
    rate_headers(res.headers_mut(), d);
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(d.reset_seconds));
    res
}
