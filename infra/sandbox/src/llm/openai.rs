//! OpenAI chat completions: `POST /v1/chat/completions`, JSON or server-sent events (`stream: true`, with the
//! usage chunk only under `stream_options: {"include_usage": true}`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::Fault;
use super::state::{ResponseRecord, Usage};
use super::stream::{self, SseEvent};
use super::text::{DEFAULT_OUTPUT_TOKENS, Directives, count_input_tokens, last_user_text, reply_pieces};
use super::{App, Llm, LlmError, hang, key_suffix, random_id};

const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

/// The sandbox's fixed per-minute budgets, reported in the `x-ratelimit-*` headers.
const LIMIT_REQUESTS: u64 = 10_000;
const LIMIT_TOKENS: u64 = 30_000_000;

/// Fingerprint of the "backend" every response reports.
const FINGERPRINT: &str = "fp_5ad0c1f1e2";

fn invalid(message: impl Into<String>) -> LlmError {
    LlmError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

struct Checked {
    key_suffix: String,
    model: &'static str,
    max_tokens: u64,
    stream: bool,
    include_usage: bool,
    body: Value,
    directives: Directives,
}

/// `sk-a...wxyz`, as OpenAI shows a wrong key.
fn mask(key: &str) -> String {
    let head: String = key.chars().take(3).collect();
    format!("{head}*****{}", key_suffix(key))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(headers: &HeaderMap, raw: &[u8]) -> Result<Checked, LlmError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = bearer else {
        return Err(LlmError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization header using \
             Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ));
    };
    if !key.starts_with("sk-") {
        return Err(LlmError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                mask(key)
            ),
        )
        .code("invalid_api_key"));
    }
    let body: Value = serde_json::from_slice(raw).map_err(|e| {
        invalid(format!(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP \
             library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON: {e})"
        ))
    })?;
    if !body.is_object() {
        return Err(invalid(format!(
            "Invalid type for body: expected an object, but got {} instead.",
            json_type(&body)
        ))
        .code("invalid_type"));
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("you must provide a model parameter").param("model"))?;
    check_messages(body.get("messages"))?;

    let mut max_tokens = None;
    for name in ["max_completion_tokens", "max_tokens"] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let n = v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                    invalid(format!("Invalid '{name}': expected an integer greater than or equal to 1."))
                        .param(name)
                        .code("invalid_value")
                })?;
                max_tokens = max_tokens.or(Some((name, n)));
            }
        }
    }
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => return Err(invalid("The sandbox serves n=1 only.").param("n").code("invalid_value")),
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            invalid(format!("Invalid type for 'stream': expected a boolean, but got {} instead.", json_type(v)))
                .param("stream")
                .code("invalid_type")
        })?,
    };
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(_) if !stream => {
            return Err(invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
                .param("stream_options"));
        }
        Some(opts) => opts.get("include_usage").and_then(Value::as_bool).unwrap_or(false),
    };
    let (reported, most) = Llm::OpenAi.model(model).ok_or_else(|| {
        LlmError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .code("model_not_found")
    })?;
    if let Some((name, n)) = max_tokens
        && n > most
    {
        return Err(invalid(format!(
            "{name} is too large: {n}. This model supports at most {most} completion tokens, whereas you provided {n}."
        ))
        .param(name)
        .code("invalid_value"));
    }
    let directives = Directives::parse(&last_user_text(&body)).map_err(|e| invalid(e).param("messages"))?;
    Ok(Checked {
        key_suffix: key_suffix(key),
        model: reported,
        max_tokens: max_tokens.map(|(_, n)| n).unwrap_or(most),
        stream,
        include_usage,
        body,
        directives,
    })
}

fn check_messages(messages: Option<&Value>) -> Result<(), LlmError> {
    let msgs = match messages {
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'messages'.")
                .param("messages")
                .code("missing_required_parameter"));
        }
        Some(v) => v.as_array().ok_or_else(|| {
            invalid(format!("Invalid type for 'messages': expected an array, but got {} instead.", json_type(v)))
                .param("messages")
                .code("invalid_type")
        })?,
    };
    if msgs.is_empty() {
        return Err(invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        )
        .param("messages")
        .code("empty_array"));
    }
    for (i, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !role.is_some_and(|r| ROLES.contains(&r)) {
            return Err(invalid(format!(
                "Invalid value: '{}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and \
                 'developer'.",
                role.unwrap_or_default()
            ))
            .param(format!("messages[{i}].role"))
            .code("invalid_value"));
        }
        match m.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            None | Some(Value::Null) if role == Some("assistant") => {}
            _ => {
                return Err(invalid(format!("Missing required parameter: 'messages[{i}].content'."))
                    .param(format!("messages[{i}].content"))
                    .code("missing_required_parameter"));
            }
        }
    }
    Ok(())
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    })
}

/// The headers OpenAI puts on every answer; a rate-limited answer shows an empty request budget.
fn add_headers(res: &mut Response, retry_after: Option<u64>) {
    let remaining = if retry_after.is_some() { 0 } else { LIMIT_REQUESTS - 1 };
    let reset = retry_after.map(|s| format!("{s}s")).unwrap_or_else(|| "6ms".into());
    let pairs = [
        ("x-request-id", format!("req_{}", random_id(32).to_lowercase())),
        ("openai-processing-ms", "12".into()),
        ("x-ratelimit-limit-requests", LIMIT_REQUESTS.to_string()),
        ("x-ratelimit-remaining-requests", remaining.to_string()),
        ("x-ratelimit-reset-requests", reset),
        ("x-ratelimit-limit-tokens", LIMIT_TOKENS.to_string()),
        ("x-ratelimit-remaining-tokens", LIMIT_TOKENS.to_string()),
        ("x-ratelimit-reset-tokens", "0s".into()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(State(app): State<App>, headers: HeaderMap, raw: Bytes) -> Response {
    app.with(|s| s.count_request());
    let res = match generate(&app, &headers, &raw).await {
        Ok(mut res) => {
            add_headers(&mut res, None);
            res
        }
        Err(e) => {
            let mut res = e.render(Llm::OpenAi);
            add_headers(&mut res, e.retry_after);
            res
        }
    };
    app.with(|s| s.count_status(res.status().as_u16()));
    res
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

async fn generate(app: &App, headers: &HeaderMap, raw: &[u8]) -> Result<Response, LlmError> {
    let req = check(headers, raw)?;
    let (fault, slow_ms) = app.with(|s| (s.faults.next(req.stream), s.faults.slow_ms));
    let cut = match fault {
        Fault::None => None,
        Fault::Cut(cut) => Some(cut),
        Fault::Hang => return Err(hang(app).await),
        Fault::Overloaded => {
            return Err(LlmError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The server is overloaded or not ready yet.",
            ));
        }
        Fault::RateLimited { retry_after } => {
            let mut e = LlmError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                format!(
                    "Rate limit reached for requests per min (RPM): Limit {LIMIT_REQUESTS}, Used {LIMIT_REQUESTS}. \
                     Please try again in {retry_after}s. (sandbox fault)"
                ),
            )
            .code("rate_limit_exceeded");
            e.retry_after = Some(retry_after);
            return Err(e);
        }
        Fault::ServerError => {
            return Err(LlmError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            ));
        }
    };

    let d = req.directives;
    let wanted = d.tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
    let n = wanted.min(req.max_tokens);
    let finish_reason = if wanted > req.max_tokens { "length" } else { "stop" };
    let pieces = reply_pieces(&last_user_text(&req.body), n);
    // OpenAI's prompt_tokens includes the cached ones; it reports no cache writes.
    let usage = Usage {
        input_tokens: count_input_tokens(&req.body),
        output_tokens: n,
        cache_read_input_tokens: d.cache_read,
        cache_creation_input_tokens: 0,
    };
    let id = format!("chatcmpl-{}", random_id(29));
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let record = ResponseRecord::new(&id, req.model, req.stream, req.key_suffix);

    if !req.stream {
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": pieces.concat(), "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage_json(&usage),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        });
        app.with(|s| s.push(ResponseRecord { usage, text_tokens_sent: n, complete: true, ..record }));
        return Ok(axum::Json(body).into_response());
    }

    let at = app.with(|s| s.push(record));
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": req.model,
            "service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": choices,
        });
        if req.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        data(&c)
    };
    let choice = |delta: Value, finish: Option<&str>| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut events = Vec::with_capacity(pieces.len() + 4);
    events.push(SseEvent::new(chunk(choice(json!({"role": "assistant", "content": "", "refusal": null}), None), None)));
    for piece in &pieces {
        events.push(SseEvent { text: true, ..SseEvent::new(chunk(choice(json!({"content": piece}), None), None)) });
    }
    events.push(SseEvent::new(chunk(choice(json!({}), Some(finish_reason)), None)));
    if req.include_usage {
        events.push(SseEvent { usage: Some(usage), ..SseEvent::new(chunk(json!([]), Some(usage_json(&usage)))) });
    }
    events.push(SseEvent { last: true, ..SseEvent::new("data: [DONE]\n\n".into()) });
    let error_event = Bytes::from(data(&json!({"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": null, "code": null,
    }})));
    let body = stream::body(app.clone(), at, events, cut, error_event, slow_ms);
    Ok(([(header::CONTENT_TYPE, "text/event-stream; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response())
}
