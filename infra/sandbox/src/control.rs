//! The sandbox's own endpoints: `GET /` (what this server serves), `/sandbox/state` and `/sandbox/faults`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::pages;
use crate::provider::Provider;
use crate::store::FaultsUpdate;

/// Every route of a provider sandbox as (method, path, what), for the index page.
pub(crate) fn routes(provider: Provider) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut r = vec![
        ("GET", provider.authorize_path(), "consent page (Approve / Deny)"),
        ("POST", provider.token_path(), "token: authorization_code, refresh_token"),
    ];
    r.extend(match provider {
        Provider::Oura => vec![
            ("POST", "/oauth/revoke", "revoke (?access_token=)"),
            ("GET", "/v2/usercollection/daily_activity", "daily activity"),
            ("GET", "/v2/usercollection/heartrate", "heart rate, 5-minute samples"),
            ("GET", "/v2/usercollection/daily_sleep", "daily sleep score"),
            ("GET", "/v2/usercollection/sleep", "sleep periods (long_sleep, naps)"),
            ("GET", "/v2/usercollection/daily_readiness", "daily readiness"),
            ("GET", "/v2/usercollection/daily_spo2", "daily SpO2"),
            ("GET", "/v2/usercollection/workout", "workouts"),
            ("GET", "/v2/usercollection/personal_info", "who the user is"),
        ],
        Provider::GoogleHealth => vec![
            ("POST", "/revoke", "revoke (token=)"),
            ("GET", "/v4/users/me/dataTypes/{data_type}/dataPoints", "steps, weight, exercise, sleep, heart-rate"),
        ],
        Provider::Withings => vec![
            ("POST", "/measure", "action=getmeas (weight)"),
            ("POST", "/v2/measure", "action=getactivity"),
            ("POST", "/v2/sleep", "action=getsummary"),
        ],
        Provider::Whoop => vec![
            ("DELETE", "/developer/v2/user/access", "revoke (Bearer)"),
            ("GET", "/developer/v2/user/profile/basic", "who the user is"),
            ("GET", "/developer/v2/cycle", "cycles (day strain, energy)"),
            ("GET", "/developer/v2/recovery", "recoveries"),
            ("GET", "/developer/v2/activity/sleep", "sleeps"),
            ("GET", "/developer/v2/activity/workout", "workouts"),
        ],
        Provider::Polar => vec![
            ("POST", "/v3/users", "register the user ({\"member-id\"})"),
            ("GET", "/v3/users/{user_id}", "the registered user"),
            ("DELETE", "/v3/users/{user_id}", "deregister and revoke"),
            ("GET", "/v3/exercises", "exercises of the last 30 days"),
            ("GET", "/v3/users/activities", "daily activity (?from=&to=, 28 days)"),
            ("GET", "/v3/users/sleep", "nights of the last 28 days"),
        ],
        Provider::Strava => vec![
            ("POST", "/oauth/deauthorize", "revoke (Bearer or access_token=)"),
            ("GET", "/api/v3/athlete", "who the athlete is"),
            ("GET", "/api/v3/athlete/activities", "activities (?after=&before=&page=&per_page=)"),
        ],
        Provider::Garmin => vec![
            ("DELETE", "/wellness-api/rest/user/registration", "revoke (Bearer)"),
            ("GET", "/wellness-api/rest/user/id", "who the user is"),
            ("GET", "/wellness-api/rest/dailies", "daily summaries by upload time (86,400 s max)"),
        ],
    });
    r.extend([("GET", "/sandbox/state", "counters (JSON)"), ("GET, POST", "/sandbox/faults", "fault switches (JSON)")]);
    r
}

pub(crate) async fn index(State(app): State<App>) -> Html<String> {
    Html(pages::index(app.provider, &routes(app.provider)))
}

/// `GET /sandbox/state`: the counters, flat, plus the fault switches and the remaining budget.
pub(crate) async fn state(State(app): State<App>) -> Response {
    let body = app.with(|s| {
        let (limit, remaining) = s.budget();
        let mut body = serde_json::to_value(&s.counters).unwrap_or_else(|_| json!({}));
        if let Some(obj) = body.as_object_mut() {
            obj.insert("provider".into(), json!(app.provider.id()));
            obj.insert("clients".into(), json!(s.clients()));
            obj.insert("live_grants".into(), json!(s.live_grants()));
            obj.insert("rate_limit".into(), json!({"limit": limit, "remaining": remaining}));
            obj.insert("faults".into(), serde_json::to_value(&s.faults).unwrap_or_else(|_| json!({})));
        }
        body
    });
    axum::Json(body).into_response()
}

pub(crate) async fn faults(State(app): State<App>) -> Response {
    axum::Json(app.with(|s| serde_json::to_value(&s.faults).unwrap_or_else(|_| json!({})))).into_response()
}

/// `POST /sandbox/faults`: a partial update; answers with the switches as they now stand.
pub(crate) async fn set_faults(State(app): State<App>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultsUpdate>(&body) {
        Ok(update) => {
            let now = app.with(|s| {
                s.apply(update);
                serde_json::to_value(&s.faults).unwrap_or_else(|_| json!({}))
            });
            tracing::info!(provider = %app.provider, faults = %now, "faults switched");
            axum::Json(now).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": "invalid_faults",
                "error_description": format!("{e}; expected e.g. {{\"token\": \"none|500|slow|malformed_json|timeout\", \"data\": \"none|500|429|slow\"}}"),
            })),
        )
            .into_response(),
    }
}
