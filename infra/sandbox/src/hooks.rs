//! Webhooks: each provider's subscription endpoints (Oura `/v2/webhook/subscription` with renewal, Strava
//! `/api/v3/push_subscriptions`, Polar `/v3/webhooks`, Withings `/notify`), each checking the callback the way
//! the provider does before it answers, and `/sandbox/webhooks/*` to deliver a signed (or forged, or stale)
//! event to a callback, so the platform's webhook path runs end to end.

use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::app::App;
use crate::auth::bearer_token;
use crate::ids;
use crate::people;
use crate::provider::Provider;

/// How long an Oura subscription lives unless `/sandbox/webhooks/settings` says otherwise (Oura does not
/// document it; subscriptions are known to expire).
const DEFAULT_TTL_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone, serde::Serialize)]
struct Sub {
    id: String,
    client_id: String,
    callback_url: String,
    /// The key deliveries are signed with: Oura's client secret, Polar's signature_secret_key.
    #[serde(skip)]
    key: String,
    event_type: Option<String>,
    data_type: Option<String>,
    /// Withings: the user and category.
    user: Option<String>,
    appli: Option<i64>,
    expires_at: Option<i64>,
}

#[derive(Debug, Default, serde::Serialize)]
struct Counters {
    subscriptions_created: u64,
    subscriptions_renewed: u64,
    deliveries: u64,
}

/// Webhook state of one provider sandbox.
#[derive(Debug)]
pub(crate) struct Hooks {
    subs: Vec<Sub>,
    counters: Counters,
    ttl_seconds: i64,
    /// Subscription endpoints answer 500 while set.
    down: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Self { subs: Vec::new(), counters: Counters::default(), ttl_seconds: DEFAULT_TTL_SECONDS, down: false }
    }
}

pub(crate) type HooksState = Mutex<Hooks>;

fn with<R>(app: &App, f: impl FnOnce(&mut Hooks) -> R) -> R {
    let mut guard = app.hooks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": "invalid_request", "error_description": message.into()}))).into_response()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else { return Vec::new() };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes.iter().map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") }).collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap_or_default()
}

/// Checks client credentials against the secret the client pinned at its first token request (any, if none yet).
fn client_ok(app: &App, client_id: &str, secret: &str) -> bool {
    !client_id.is_empty() && app.with(|s| s.pinned_secret(client_id)).is_none_or(|pinned| pinned == secret)
}

fn down(app: &App) -> Option<Response> {
    with(app, |h| h.down).then(|| error(StatusCode::INTERNAL_SERVER_ERROR, "sandbox fault: subscriptions are down"))
}

// ---- Oura ----

fn oura_model(sub: &Sub) -> Value {
    json!({"id": sub.id, "callback_url": sub.callback_url, "event_type": sub.event_type, "data_type": sub.data_type,
           "expiration_time": sub.expires_at.map(rfc3339)})
}

/// The Oura client credentials of a subscription call, if they are valid.
fn oura_client(app: &App, headers: &HeaderMap) -> Option<(String, String)> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (id, secret) = (get("x-client-id"), get("x-client-secret"));
    client_ok(app, &id, &secret).then_some((id, secret))
}

fn oura_unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, axum::Json(json!({"detail": "invalid client credentials"}))).into_response()
}

#[derive(Deserialize)]
pub(crate) struct OuraCreate {
    callback_url: String,
    verification_token: String,
    event_type: String,
    data_type: String,
}

/// `POST /v2/webhook/subscription`: checks the callback with a challenge, then answers the subscription.
pub(crate) async fn oura_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(res) = down(&app) {
        return res;
    }
    let Some((client_id, secret)) = oura_client(&app, &headers) else { return oura_unauthorized() };
    let Ok(req) = serde_json::from_slice::<OuraCreate>(&body) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "callback_url, verification_token, event_type and data_type are required",
        );
    };
    let challenge = ids::secret("challenge-");
    let check = http()
        .get(&req.callback_url)
        .query(&[("verification_token", req.verification_token.as_str()), ("challenge", challenge.as_str())])
        .send()
        .await;
    let echoed = match check {
        Ok(r) if r.status().is_success() => {
            r.json::<Value>().await.ok().and_then(|v| v["challenge"].as_str().map(str::to_owned))
        }
        _ => None,
    };
    if echoed.as_deref() != Some(challenge.as_str()) {
        return error(StatusCode::BAD_REQUEST, "the callback did not echo the challenge for this verification_token");
    }
    let sub = with(&app, |h| {
        let sub = Sub {
            id: ids::uuid_like(&[&client_id, &req.callback_url, &req.event_type, &req.data_type, &now().to_string()]),
            client_id,
            callback_url: req.callback_url,
            key: secret,
            event_type: Some(req.event_type),
            data_type: Some(req.data_type),
            user: None,
            appli: None,
            expires_at: Some(now() + h.ttl_seconds),
        };
        h.subs.push(sub.clone());
        h.counters.subscriptions_created += 1;
        sub
    });
    (StatusCode::CREATED, axum::Json(oura_model(&sub))).into_response()
}

/// `PUT /v2/webhook/subscription/renew/{id}`.
pub(crate) async fn oura_renew(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(res) = down(&app) {
        return res;
    }
    let Some((client_id, _)) = oura_client(&app, &headers) else { return oura_unauthorized() };
    let renewed = with(&app, |h| {
        let ttl = h.ttl_seconds;
        let sub = h.subs.iter_mut().find(|s| s.id == id && s.client_id == client_id)?;
        sub.expires_at = Some(now() + ttl);
        let model = oura_model(sub);
        h.counters.subscriptions_renewed += 1;
        Some(model)
    });
    match renewed {
        Some(model) => axum::Json(model).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "no such subscription"}))).into_response(),
    }
}

/// `GET /v2/webhook/subscription`: the client's subscriptions.
pub(crate) async fn oura_list(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((client_id, _)) = oura_client(&app, &headers) else { return oura_unauthorized() };
    let list: Vec<Value> = with(&app, |h| h.subs.iter().filter(|s| s.client_id == client_id).map(oura_model).collect());
    axum::Json(list).into_response()
}

// ---- Strava ----

/// `POST /api/v3/push_subscriptions` (form): checks the callback with `hub.challenge`, one per client.
pub(crate) async fn strava_create(State(app): State<App>, body: Bytes) -> Response {
    if let Some(res) = down(&app) {
        return res;
    }
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (client_id, secret, callback, verify) =
        (field("client_id"), field("client_secret"), field("callback_url"), field("verify_token"));
    if !client_ok(&app, &client_id, &secret) || callback.is_empty() {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Authorization Error", "errors": []})))
            .into_response();
    }
    if with(&app, |h| h.subs.iter().any(|s| s.client_id == client_id)) {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "Bad Request", "errors": [{"resource": "PushSubscription", "field": "callback url", "code": "already exists"}]}))).into_response();
    }
    let challenge = ids::secret("hub-");
    let check = http()
        .get(&callback)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.challenge", challenge.as_str()),
            ("hub.verify_token", verify.as_str()),
        ])
        .send()
        .await;
    let echoed = match check {
        Ok(r) if r.status().is_success() => {
            r.json::<Value>().await.ok().and_then(|v| v["hub.challenge"].as_str().map(str::to_owned))
        }
        _ => None,
    };
    if echoed.as_deref() != Some(challenge.as_str()) {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "Bad Request", "errors": [{"resource": "PushSubscription", "field": "callback url", "code": "GET to callback URL does not return 200"}]}))).into_response();
    }
    let id = ids::in_range(&[&client_id, &callback], 100_000, 999_999);
    with(&app, |h| {
        h.subs.push(Sub {
            id: id.to_string(),
            client_id,
            callback_url: callback,
            key: String::new(),
            event_type: None,
            data_type: None,
            user: None,
            appli: None,
            expires_at: None,
        });
        h.counters.subscriptions_created += 1;
    });
    (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response()
}

// ---- Polar ----

fn basic_client(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = headers.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(raw.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// `POST /v3/webhooks` (Basic): pings the URL, signed with a fresh key that the answer carries once.
pub(crate) async fn polar_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(res) = down(&app) {
        return res;
    }
    let Some((client_id, secret)) = basic_client(&headers).filter(|(id, s)| client_ok(&app, id, s)) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let _ = secret;
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "a JSON body {events, url} is required");
    };
    let (Some(url), Some(events)) = (req["url"].as_str(), req["events"].as_array()) else {
        return error(StatusCode::BAD_REQUEST, "events and url are required");
    };
    if with(&app, |h| h.subs.iter().any(|s| s.client_id == client_id)) {
        return error(StatusCode::CONFLICT, "a webhook already exists for this client");
    }
    let key = ids::secret("polar-whk-");
    let ping = json!({"timestamp": rfc3339(now()), "event": "PING"}).to_string();
    let pinged = http()
        .post(url)
        .header("content-type", "application/json")
        .header("polar-webhook-signature", hex(&mac(key.as_bytes(), &[ping.as_bytes()]), false))
        .body(ping)
        .send()
        .await;
    if !pinged.is_ok_and(|r| r.status() == StatusCode::OK) {
        return error(StatusCode::BAD_REQUEST, "the webhook URL did not answer the PING with 200 OK");
    }
    let id = ids::uuid_like(&[&client_id, url]);
    with(&app, |h| {
        h.subs.push(Sub {
            id: id.clone(),
            client_id,
            callback_url: url.to_owned(),
            key: key.clone(),
            event_type: None,
            data_type: None,
            user: None,
            appli: None,
            expires_at: None,
        });
        h.counters.subscriptions_created += 1;
    });
    let data = json!({"id": id, "events": events, "url": url, "signature_secret_key": key});
    (StatusCode::CREATED, axum::Json(json!({"data": data}))).into_response()
}

// ---- Withings ----

fn withings_error(status: i64, message: &str) -> Response {
    axum::Json(json!({"status": status, "body": {}, "error": message})).into_response()
}

/// `POST /notify` (Bearer, form `action=subscribe&callbackurl=&appli=`): HEADs the callback first.
pub(crate) async fn withings_notify(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(res) = down(&app) {
        return res;
    }
    let Some(bearer) = bearer_token(&headers).and_then(|t| app.with(|s| s.bearer(t)).ok()) else {
        return withings_error(401, "invalid_token");
    };
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("action").map(String::as_str) != Some("subscribe") {
        return withings_error(503, "Invalid Params: only action=subscribe is served by the sandbox");
    }
    let (Some(callback), Some(appli)) =
        (form.get("callbackurl"), form.get("appli").and_then(|a| a.parse::<i64>().ok()))
    else {
        return withings_error(503, "Invalid Params: callbackurl and appli are required");
    };
    let reachable = http().head(callback).send().await.is_ok_and(|r| r.status().is_success());
    if !reachable {
        return withings_error(293, "The callback URL is either absent or incorrect");
    }
    with(&app, |h| {
        h.subs.retain(|s| {
            !(s.user.as_deref() == Some(bearer.user.as_str()) && s.appli == Some(appli) && s.callback_url == *callback)
        });
        h.subs.push(Sub {
            id: format!("{}-{appli}", bearer.user),
            client_id: bearer.client_id,
            callback_url: callback.clone(),
            key: String::new(),
            event_type: None,
            data_type: None,
            user: Some(bearer.user),
            appli: Some(appli),
            expires_at: None,
        });
        h.counters.subscriptions_created += 1;
    });
    axum::Json(json!({"status": 0, "body": {}})).into_response()
}

// ---- The sandbox's own webhook controls ----

/// `GET /sandbox/webhooks`: the subscriptions and counters.
pub(crate) async fn state(State(app): State<App>) -> Response {
    let body = with(
        &app,
        |h| json!({"subscriptions": h.subs, "counters": h.counters, "subscription_ttl_seconds": h.ttl_seconds, "down": h.down}),
    );
    axum::Json(body).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    subscription_ttl_seconds: Option<i64>,
    down: Option<bool>,
}

/// `POST /sandbox/webhooks/settings`: `{"subscription_ttl_seconds"?, "down"?}`.
pub(crate) async fn settings(State(app): State<App>, body: Bytes) -> Response {
    let Ok(s) = serde_json::from_slice::<Settings>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"subscription_ttl_seconds\": 86400, \"down\": false}");
    };
    with(&app, |h| {
        if let Some(ttl) = s.subscription_ttl_seconds {
            h.ttl_seconds = ttl;
        }
        if let Some(d) = s.down {
            h.down = d;
        }
    });
    state(State(app)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Send {
    /// The sandbox user the event is about.
    #[serde(default = "default_user")]
    user: String,
    /// Where to deliver: WHOOP and Garmin (URL set in their portals) need it; others use their subscriptions.
    url: Option<String>,
    /// WHOOP: whose client secret signs.
    client_id: Option<String>,
    /// Garmin: `ping` (default) or `push`.
    kind: Option<String>,
    /// Oura `data_type` / Polar `event` / WHOOP `type`.
    data_type: Option<String>,
    /// Sign with a wrong key.
    #[serde(default)]
    forge: bool,
    /// Shift the signed timestamp back this many seconds (stale deliveries).
    #[serde(default)]
    age_seconds: i64,
}

fn default_user() -> String {
    crate::DEFAULT_USER.to_owned()
}

/// One delivery to make.
struct Delivery {
    url: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// `POST /sandbox/webhooks/send`: delivers one event the way the provider would, to every matching
/// subscription (or `url`), and answers what each callback said.
pub(crate) async fn send(State(app): State<App>, body: Bytes) -> Response {
    let req = match serde_json::from_slice::<Send>(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e}")),
    };
    let deliveries = match deliveries(&app, &req) {
        Ok(d) => d,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut results = Vec::new();
    for d in deliveries {
        let mut r = http().post(&d.url).header("content-type", d.content_type).body(d.body.clone());
        for (k, v) in &d.headers {
            r = r.header(*k, v);
        }
        let status = match r.send().await {
            Ok(res) => res.status().as_u16(),
            Err(_) => 0,
        };
        with(&app, |h| h.counters.deliveries += 1);
        results.push(json!({"url": d.url, "status": status, "body": d.body}));
    }
    axum::Json(json!({"deliveries": results})).into_response()
}

fn deliveries(app: &App, req: &Send) -> Result<Vec<Delivery>, String> {
    let p = app.provider;
    let t = now() - req.age_seconds;
    let subs: Vec<Sub> = with(app, |h| h.subs.clone());
    let wrong = |key: &str| if req.forge { format!("{key}-forged") } else { key.to_owned() };
    let json_to = |url: &str, headers, body: Value| Delivery {
        url: url.to_owned(),
        content_type: "application/json",
        headers,
        body: body.to_string(),
    };
    let numeric = people::numeric_id(p, &req.user);
    Ok(match p {
        Provider::Oura => subs
            .iter()
            .filter(|s| req.data_type.is_none() || s.data_type == req.data_type)
            .map(|s| {
                let body = json!({"event_type": s.event_type, "data_type": s.data_type, "object_id": ids::secret("obj-"),
                                  "event_time": rfc3339(t), "user_id": people::uuid_id(p, &req.user)})
                .to_string();
                let sig = hex(&mac(wrong(&s.key).as_bytes(), &[t.to_string().as_bytes(), body.as_bytes()]), true);
                let headers = vec![("x-oura-timestamp", t.to_string()), ("x-oura-signature", sig)];
                Delivery { url: s.callback_url.clone(), content_type: "application/json", headers, body }
            })
            .collect(),
        Provider::Whoop => {
            let (Some(url), Some(client)) = (&req.url, &req.client_id) else {
                return Err("WHOOP webhooks need url and client_id (the app's URL and client, set in WHOOP's portal)".into());
            };
            let secret = app.with(|s| s.pinned_secret(client)).ok_or("that client has not used the token endpoint yet")?;
            let body = json!({"user_id": numeric, "id": ids::uuid_like(&[&req.user, &t.to_string()]),
                              "type": req.data_type.clone().unwrap_or_else(|| "recovery.updated".into()),
                              "trace_id": ids::uuid_like(&["trace", &t.to_string()])})
            .to_string();
            let ts = (t * 1000).to_string();
            let sig = base64::engine::general_purpose::STANDARD
                .encode(mac(wrong(&secret).as_bytes(), &[ts.as_bytes(), body.as_bytes()]));
            let headers = vec![("x-whoop-signature-timestamp", ts), ("x-whoop-signature", sig)];
            vec![Delivery { url: url.clone(), content_type: "application/json", headers, body }]
        }
        Provider::Polar => subs
            .iter()
            .map(|s| {
                let body = json!({"event": req.data_type.clone().unwrap_or_else(|| "EXERCISE".into()), "user_id": numeric,
                                  "entity_id": ids::secret("ent-"), "timestamp": rfc3339(t),
                                  "url": format!("https://www.polaraccesslink.com/v3/exercises/{}", ids::secret(""))})
                .to_string();
                let sig = hex(&mac(wrong(&s.key).as_bytes(), &[body.as_bytes()]), false);
                Delivery { url: s.callback_url.clone(), content_type: "application/json", headers: vec![("polar-webhook-signature", sig)], body }
            })
            .collect(),
        Provider::Strava => subs
            .iter()
            .map(|s| {
                let sub_id: i64 = if req.forge { 1 } else { s.id.parse().unwrap_or(0) };
                let body = json!({"aspect_type": "create", "event_time": t, "object_id": ids::in_range(&[&t.to_string()], 1, 1 << 40),
                                  "object_type": "activity", "owner_id": numeric, "subscription_id": sub_id, "updates": {}});
                json_to(&s.callback_url, Vec::new(), body)
            })
            .collect(),
        Provider::Withings => subs
            .iter()
            .filter(|s| s.user.as_deref() == Some(req.user.as_str()))
            .map(|s| Delivery {
                url: s.callback_url.clone(),
                content_type: "application/x-www-form-urlencoded",
                headers: Vec::new(),
                body: format!("userid={numeric}&appli={}&startdate={}&enddate={}", s.appli.unwrap_or(1), t - 3_600, t),
            })
            .collect(),
        Provider::Garmin => {
            let Some(url) = &req.url else { return Err("Garmin webhooks need url (set in Garmin's portal)".into()) };
            let user = people::uuid_id(p, &req.user);
            let item = match req.kind.as_deref().unwrap_or("ping") {
                "ping" => json!({"userId": user, "uploadStartTimeInSeconds": t - 3_600, "uploadEndTimeInSeconds": t,
                                 "callbackURL": format!("https://apis.garmin.com/wellness-api/rest/dailies?uploadStartTimeInSeconds={}&uploadEndTimeInSeconds={t}", t - 3_600)}),
                "push" => json!({"userId": user, "summaryId": ids::secret("sum-"), "calendarDate": rfc3339(t)[..10].to_owned(),
                                 "steps": ids::in_range(&[&req.user, "steps"], 2_000, 15_000), "startTimeInSeconds": t - 86_400}),
                other => return Err(format!("kind must be ping or push, not {other}")),
            };
            vec![json_to(url, Vec::new(), json!({"dailies": [item]}))]
        }
        Provider::GoogleHealth => return Err("the Google Health sandbox sends no webhooks".into()),
    })
}
