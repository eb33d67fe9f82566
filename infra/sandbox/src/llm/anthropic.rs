//! The Anthropic Messages API: `POST /v1/messages` (JSON, or server-sent events with `stream: true`) and
//! `POST /v1/messages/count_tokens`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::Fault;
use super::state::{ResponseRecord, Usage};
use super::stream::{self, SseEvent};
use super::text::{DEFAULT_OUTPUT_TOKENS, Directives, count_input_tokens, last_user_text, reply_pieces};
use super::{App, Llm, LlmError, hang, key_suffix, random_id, request_id};

/// A well-formed `anthropic-version` (a date, `YYYY-MM-DD`). The API has `2023-06-01`; SDK releases of late 2026
/// send later dates (`2026-10-21`), so any date is taken.
fn is_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

fn invalid(message: impl Into<String>) -> LlmError {
    LlmError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// A request that passed the API's checks.
struct Checked {
    key_suffix: String,
    model: &'static str,
    max_tokens: u64,
    stream: bool,
    body: Value,
    directives: Directives,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The checks the real API makes, in its order: key, version, JSON, fields, model. `generation` adds
/// `max_tokens` and `stream` (count_tokens takes neither).
fn check(headers: &HeaderMap, raw: &[u8], generation: bool) -> Result<Checked, LlmError> {
    // The key comes in `x-api-key`, or as `Authorization: Bearer` (how the Python SDK 2.x sends it).
    let bearer = header_str(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let key = header_str(headers, "x-api-key").or(bearer).filter(|k| !k.is_empty()).ok_or_else(|| {
        LlmError::new(StatusCode::UNAUTHORIZED, "authentication_error", "x-api-key header is required")
    })?;
    if !key.starts_with("sk-ant-") {
        return Err(LlmError::new(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key"));
    }
    match header_str(headers, "anthropic-version") {
        None => return Err(invalid("anthropic-version: header is required")),
        Some(v) if !is_version(v) => {
            return Err(invalid(format!("anthropic-version: invalid version {v:?}; expected a date like 2023-06-01")));
        }
        Some(_) => {}
    }
    let body: Value = serde_json::from_slice(raw)
        .map_err(|e| invalid(format!("There was an error parsing the body as JSON: {e}")))?;
    if !body.is_object() {
        return Err(invalid("The request body must be a JSON object"));
    }
    let model = match body.get("model") {
        None => return Err(invalid("model: Field required")),
        Some(m) => m.as_str().ok_or_else(|| invalid("model: Input should be a valid string"))?,
    };
    check_system(body.get("system"))?;
    check_messages(body.get("messages"))?;
    let max_tokens = if generation {
        match body.get("max_tokens") {
            None => return Err(invalid("max_tokens: Field required")),
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("max_tokens: Input should be a valid integer greater than or equal to 1"))?,
        }
    } else {
        0
    };
    let stream = match body.get("stream") {
        Some(v) if generation && !v.is_null() => {
            v.as_bool().ok_or_else(|| invalid("stream: Input should be a valid boolean"))?
        }
        _ => false,
    };
    let (reported, most) = Llm::Anthropic
        .model(model)
        .ok_or_else(|| LlmError::new(StatusCode::NOT_FOUND, "not_found_error", format!("model: {model}")))?;
    if generation && max_tokens > most {
        return Err(invalid(format!(
            "max_tokens: {max_tokens} > {most}, which is the maximum allowed number of output tokens for {reported}"
        )));
    }
    let directives = Directives::parse(&last_user_text(&body)).map_err(invalid)?;
    Ok(Checked { key_suffix: key_suffix(key), model: reported, max_tokens, stream, body, directives })
}

fn check_system(system: Option<&Value>) -> Result<(), LlmError> {
    match system {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") || !b.get("text").is_some_and(Value::is_string)
                {
                    return Err(invalid(format!(
                        "system.{i}: each system block must be {{\"type\": \"text\", \"text\": ...}}"
                    )));
                }
            }
            Ok(())
        }
        Some(_) => Err(invalid("system: Input should be a valid string or a list of text blocks")),
    }
}

fn check_messages(messages: Option<&Value>) -> Result<(), LlmError> {
    let msgs = match messages {
        None => return Err(invalid("messages: Field required")),
        Some(v) => v.as_array().ok_or_else(|| invalid("messages: Input should be a valid list"))?,
    };
    if msgs.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    for (i, m) in msgs.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            _ => return Err(invalid(format!("messages.{i}.role: Input should be 'user' or 'assistant'"))),
        }
        match m.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) if blocks.iter().all(|b| b.get("type").is_some_and(Value::is_string)) => {}
            Some(Value::Array(_)) => {
                return Err(invalid(format!("messages.{i}.content: every content block needs a \"type\"")));
            }
            _ => return Err(invalid(format!("messages.{i}.content: Field required (a string or a list of blocks)"))),
        }
    }
    Ok(())
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": u.cache_creation_input_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": u.output_tokens,
        "service_tier": "standard",
    })
}

fn sse(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn with_request_id(mut res: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        res.headers_mut().insert(HeaderName::from_static("request-id"), v);
    }
    res
}

/// `POST /v1/messages`.
pub(crate) async fn messages(State(app): State<App>, headers: HeaderMap, raw: Bytes) -> Response {
    app.with(|s| s.count_request());
    let res = match generate(&app, &headers, &raw).await {
        Ok(res) => res,
        Err(e) => e.render(Llm::Anthropic),
    };
    app.with(|s| s.count_status(res.status().as_u16()));
    with_request_id(res)
}

async fn generate(app: &App, headers: &HeaderMap, raw: &[u8]) -> Result<Response, LlmError> {
    let req = check(headers, raw, true)?;
    let (fault, slow_ms) = app.with(|s| (s.faults.next(req.stream), s.faults.slow_ms));
    let cut = match fault {
        Fault::None => None,
        Fault::Cut(cut) => Some(cut),
        Fault::Hang => return Err(hang(app).await),
        Fault::Overloaded => {
            let overloaded = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Err(LlmError::new(overloaded, "overloaded_error", "Overloaded"));
        }
        Fault::RateLimited { retry_after } => {
            let mut e = LlmError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute. \
                 (sandbox fault)",
            );
            e.retry_after = Some(retry_after);
            return Err(e);
        }
        Fault::ServerError => {
            return Err(LlmError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Internal server error"));
        }
    };

    let d = req.directives;
    let total = count_input_tokens(&req.body);
    let wanted = d.tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
    let n = wanted.min(req.max_tokens);
    let stop_reason = if wanted > req.max_tokens { "max_tokens" } else { "end_turn" };
    let pieces = reply_pieces(&last_user_text(&req.body), n);
    let usage = Usage {
        input_tokens: total.saturating_sub(d.cache_read + d.cache_write),
        output_tokens: n,
        cache_read_input_tokens: d.cache_read,
        cache_creation_input_tokens: d.cache_write,
    };
    let id = format!("msg_01{}", random_id(22));
    let record = ResponseRecord::new(&id, req.model, req.stream, req.key_suffix);

    if !req.stream {
        let text: String = pieces.concat();
        let content = if n == 0 { json!([]) } else { json!([{"type": "text", "text": text}]) };
        let body = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage_json(&usage),
        });
        app.with(|s| s.push(ResponseRecord { usage, text_tokens_sent: n, complete: true, ..record }));
        return Ok(axum::Json(body).into_response());
    }

    let at = app.with(|s| s.push(record));
    let start_usage = Usage { output_tokens: n.min(1), ..usage };
    let mut events = Vec::with_capacity(pieces.len() + 6);
    events.push(SseEvent {
        usage: Some(start_usage),
        ..SseEvent::new(sse(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": req.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage_json(&start_usage),
            }}),
        ))
    });
    events.push(SseEvent::new(sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    )));
    events.push(SseEvent::new(sse("ping", &json!({"type": "ping"}))));
    for piece in &pieces {
        events.push(SseEvent {
            text: true,
            ..SseEvent::new(sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            ))
        });
    }
    events.push(SseEvent::new(sse("content_block_stop", &json!({"type": "content_block_stop", "index": 0}))));
    events.push(SseEvent {
        usage: Some(usage),
        ..SseEvent::new(sse(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": n}}),
        ))
    });
    events.push(SseEvent { last: true, ..SseEvent::new(sse("message_stop", &json!({"type": "message_stop"}))) });
    let error_event = Bytes::from(sse(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let body: Body = stream::body(app.clone(), at, events, cut, error_event, slow_ms);
    Ok(([(header::CONTENT_TYPE, "text/event-stream; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response())
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": n}`, the same count a message's usage reports as
/// `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`. Faults do not apply here.
pub(crate) async fn count_tokens(State(app): State<App>, headers: HeaderMap, raw: Bytes) -> Response {
    app.with(|s| s.count_tokens_request());
    let res = match check(&headers, &raw, false) {
        Ok(req) => axum::Json(json!({"input_tokens": count_input_tokens(&req.body)})).into_response(),
        Err(e) => e.render(Llm::Anthropic),
    };
    with_request_id(res)
}
