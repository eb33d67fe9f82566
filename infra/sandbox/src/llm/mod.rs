//! Sandbox LLM APIs: local stand-ins for the Anthropic Messages API and OpenAI chat completions that speak their
//! real wire formats (JSON and server-sent events), with deterministic replies and token counts, switchable faults
//! (`/sandbox/faults`) and an account of the usage each response actually sent (`/sandbox/state`).
//!
//! Each API is its own axum app on its own port; the platform points `TENANTRY_ANTHROPIC_URL` /
//! `TENANTRY_OPENAI_URL` at it. See the crate README for directives, faults and the state shape.

mod anthropic;
mod faults;
mod openai;
mod state;
mod stream;
mod text;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng as _;
use serde_json::{Value, json};

pub use text::{DEFAULT_OUTPUT_TOKENS, count_input_tokens};

use faults::FaultsUpdate;
use state::LlmState;

/// One sandboxed LLM API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Llm {
    /// The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`).
    Anthropic,
    /// OpenAI chat completions (`POST /v1/chat/completions`).
    OpenAi,
}

impl Llm {
    pub const ALL: [Llm; 2] = [Llm::Anthropic, Llm::OpenAi];

    pub fn id(self) -> &'static str {
        match self {
            Llm::Anthropic => "anthropic",
            Llm::OpenAi => "openai",
        }
    }

    /// The variable that points the platform at this API's base URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Llm::Anthropic => "TENANTRY_ANTHROPIC_URL",
            Llm::OpenAi => "TENANTRY_OPENAI_URL",
        }
    }

    /// Models the sandbox serves: (name a request may use, name responses report, most output tokens). A request
    /// may also name the dated version itself.
    pub fn models(self) -> &'static [(&'static str, &'static str, u64)] {
        match self {
            Llm::Anthropic => &[
                ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 64_000),
                ("claude-haiku-4-5", "claude-haiku-4-5-20251001", 64_000),
                ("claude-opus-4-1", "claude-opus-4-1-20250805", 32_000),
                ("claude-sonnet-4-0", "claude-sonnet-4-20250514", 64_000),
            ],
            Llm::OpenAi => &[
                ("gpt-4o", "gpt-4o-2024-08-06", 16_384),
                ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 16_384),
                ("gpt-4.1", "gpt-4.1-2025-04-14", 32_768),
                ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", 32_768),
            ],
        }
    }

    /// (reported name, most output tokens) of a requested model, `None` when the sandbox does not serve it.
    fn model(self, requested: &str) -> Option<(&'static str, u64)> {
        self.models().iter().find(|(alias, dated, _)| *alias == requested || *dated == requested).map(|m| (m.1, m.2))
    }
}

impl std::fmt::Display for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// An LLM id that is not `anthropic` or `openai`.
#[derive(Debug, thiserror::Error)]
#[error("unknown LLM {0:?}; expected anthropic or openai")]
pub struct UnknownLlm(pub String);

impl std::str::FromStr for Llm {
    type Err = UnknownLlm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Llm::ALL.into_iter().find(|l| l.id() == s).ok_or_else(|| UnknownLlm(s.to_string()))
    }
}

pub(crate) struct LlmApp {
    pub llm: Llm,
    state: Mutex<LlmState>,
}

pub(crate) type App = Arc<LlmApp>;

impl LlmApp {
    /// Runs `f` under the state lock. A panic elsewhere never leaves the sandbox unusable.
    pub fn with<R>(&self, f: impl FnOnce(&mut LlmState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

/// Request bodies up to Anthropic's documented 32 MB.
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The axum app of one LLM sandbox, with fresh in-memory state.
pub fn router(llm: Llm) -> Router {
    let app: App = Arc::new(LlmApp { llm, state: Mutex::new(LlmState::default()) });
    let r = Router::new()
        .route("/", get(index))
        .route("/sandbox/state", get(state))
        .route("/sandbox/reset", post(reset))
        .route("/sandbox/faults", get(faults).post(set_faults).delete(clear_faults));
    let r = match llm {
        Llm::Anthropic => r
            .route("/v1/messages", post(anthropic::messages))
            .route("/v1/messages/count_tokens", post(anthropic::count_tokens)),
        Llm::OpenAi => r.route("/v1/chat/completions", post(openai::chat_completions)),
    };
    r.fallback(not_found).layer(DefaultBodyLimit::max(BODY_LIMIT)).with_state(app)
}

/// An LLM sandbox running in the background. Dropping it stops the server.
pub struct LlmRunning {
    pub llm: Llm,
    /// `http://HOST:PORT`, the value for [`Llm::env_var`] (the SDKs' base URL).
    pub url: String,
    server: crate::server::Server,
}

impl LlmRunning {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops accepting connections and waits (a few seconds at most) for requests in flight.
    pub async fn stop(self) {
        self.server.stop().await
    }
}

impl std::fmt::Debug for LlmRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRunning").field("llm", &self.llm).field("url", &self.url).finish_non_exhaustive()
    }
}

/// Serves one LLM sandbox on `addr` (port 0 picks a free port).
pub async fn start(llm: Llm, addr: SocketAddr) -> anyhow::Result<LlmRunning> {
    let server = crate::server::Server::start(|_| router(llm), addr, llm.id()).await?;
    Ok(LlmRunning { llm, url: server.url.clone(), server })
}

/// Serves both LLM sandboxes on `host`, each on its own free port.
pub async fn start_all(host: IpAddr) -> anyhow::Result<Vec<LlmRunning>> {
    let mut all = Vec::with_capacity(Llm::ALL.len());
    for llm in Llm::ALL {
        all.push(start(llm, SocketAddr::new(host, 0)).await?);
    }
    Ok(all)
}

/// An API error, rendered in the API's own shape by [`LlmError::render`].
#[derive(Debug, Clone)]
pub(crate) struct LlmError {
    pub status: StatusCode,
    /// Anthropic `error.type` / OpenAI `error.type`.
    pub kind: &'static str,
    pub message: String,
    /// OpenAI only.
    pub param: Option<String>,
    /// OpenAI only.
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl LlmError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        LlmError { status, kind, message: message.into(), param: None, code: None, retry_after: None }
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The error object as a JSON value in `llm`'s shape.
    pub fn body(&self, llm: Llm) -> Value {
        match llm {
            Llm::Anthropic => json!({
                "type": "error",
                "error": {"type": self.kind, "message": self.message},
                "request_id": request_id(),
            }),
            Llm::OpenAi => json!({
                "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code},
            }),
        }
    }

    pub fn render(&self, llm: Llm) -> Response {
        let mut res = (self.status, axum::Json(self.body(llm))).into_response();
        if let Some(seconds) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        res
    }
}

/// `req_` + 24 random letters and digits, as Anthropic's `request-id`.
pub(crate) fn request_id() -> String {
    format!("req_{}", random_id(24))
}

pub(crate) fn random_id(len: usize) -> String {
    rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(len).map(char::from).collect()
}

/// The last four characters of an API key, so tests can tell whose key reached the upstream.
pub(crate) fn key_suffix(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// How long a `hang` holds a request before giving up; clients time out long before.
const HANG_HOLD: Duration = Duration::from_secs(600);

/// Holds a hung request, then answers 504 (a client that waited that long sees a gateway timeout).
pub(crate) async fn hang(app: &App) -> LlmError {
    app.with(|s| s.count_hang());
    tokio::time::sleep(HANG_HOLD).await;
    LlmError::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "sandbox fault: the request hung")
}

fn json_response(body: Value) -> Response {
    axum::Json(body).into_response()
}

async fn index(State(app): State<App>) -> Response {
    let routes: Vec<Value> = match app.llm {
        Llm::Anthropic => vec![
            json!({"method": "POST", "path": "/v1/messages", "what": "Messages API, JSON or SSE (stream: true)"}),
            json!({"method": "POST", "path": "/v1/messages/count_tokens", "what": "{\"input_tokens\": n}"}),
        ],
        Llm::OpenAi => {
            vec![json!({"method": "POST", "path": "/v1/chat/completions", "what": "chat completions, JSON or SSE"})]
        }
    };
    let models: Vec<&str> = app.llm.models().iter().flat_map(|(alias, dated, _)| [*alias, *dated]).collect();
    json_response(json!({
        "llm": app.llm.id(),
        "routes": routes,
        "models": models,
        "sandbox": ["GET /sandbox/state", "POST /sandbox/reset", "GET|POST|DELETE /sandbox/faults"],
    }))
}

async fn state(State(app): State<App>) -> Response {
    json_response(app.with(|s| s.to_json(app.llm.id())))
}

async fn reset(State(app): State<App>) -> Response {
    app.with(|s| s.reset());
    json_response(app.with(|s| s.to_json(app.llm.id())))
}

fn faults_json(app: &App) -> Value {
    app.with(|s| serde_json::to_value(&s.faults).unwrap_or_else(|_| json!({})))
}

async fn faults(State(app): State<App>) -> Response {
    json_response(faults_json(&app))
}

/// `POST /sandbox/faults`: a partial update; answers with the switches as they now stand.
async fn set_faults(State(app): State<App>, body: Bytes) -> Response {
    let applied = serde_json::from_slice::<FaultsUpdate>(&body)
        .map_err(|e| e.to_string())
        .and_then(|update| app.with(|s| s.faults.apply(update)));
    match applied {
        Ok(()) => {
            let now = faults_json(&app);
            tracing::info!(llm = %app.llm, faults = %now, "LLM faults switched");
            json_response(now)
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": "invalid_faults",
                "error_description": format!(
                    "{e}; expected e.g. {{\"overloaded\": 1}}, {{\"rate_limited\": 2, \"retry_after\": 1}}, \
                     {{\"drop\": 1, \"drop_after\": 5}}, {{\"slow_ms\": 50}} or \
                     {{\"random\": {{\"seed\": 1, \"overloaded\": 0.05, \"drop\": 0.05}}}}"
                ),
            })),
        )
            .into_response(),
    }
}

async fn clear_faults(State(app): State<App>) -> Response {
    app.with(|s| s.faults = Default::default());
    json_response(faults_json(&app))
}

async fn not_found(State(app): State<App>, method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let err = match app.llm {
        Llm::Anthropic => LlmError::new(StatusCode::NOT_FOUND, "not_found_error", "Not Found"),
        Llm::OpenAi => LlmError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {})", uri.path()),
        ),
    };
    err.render(app.llm)
}
