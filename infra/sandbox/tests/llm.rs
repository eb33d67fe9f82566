//! The LLM sandboxes: the Anthropic Messages and OpenAI chat completions wire formats, token accounting, faults.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sandbox::llm::{self, Llm, LlmRunning, count_input_tokens};
use serde_json::{Value, json};

const ANTHROPIC_KEY: &str = "sk-ant-tenant-key-abcd";
const OPENAI_KEY: &str = "sk-proj-tenant-key-wxyz";

struct Sb {
    running: LlmRunning,
    http: reqwest::Client,
}

async fn start(llm: Llm) -> Sb {
    let running = llm::start(llm, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.expect("LLM sandbox starts");
    Sb { running, http: reqwest::Client::new() }
}

impl Sb {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }

    async fn anthropic(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("x-api-key", ANTHROPIC_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .expect("request is sent")
    }

    async fn message(&self, body: &Value) -> reqwest::Response {
        self.anthropic("/v1/messages", body).await
    }

    async fn chat(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(OPENAI_KEY)
            .json(body)
            .send()
            .await
            .expect("request is sent")
    }

    async fn state(&self) -> Value {
        self.http.get(self.url("/sandbox/state")).send().await.expect("state").json().await.expect("state JSON")
    }

    async fn faults(&self, faults: Value) -> reqwest::Response {
        self.http.post(self.url("/sandbox/faults")).json(&faults).send().await.expect("faults")
    }
}

/// The whole body as text, and whether the connection ended it cleanly.
async fn read_body(mut res: reqwest::Response) -> (String, bool) {
    let mut bytes = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8_lossy(&bytes).into_owned(), true),
            Err(_) => return (String::from_utf8_lossy(&bytes).into_owned(), false),
        }
    }
}

/// Anthropic SSE: (event name, data) pairs; each event must have exactly `event:` then `data:`.
fn anthropic_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines = block.lines();
            let event = lines.next().and_then(|l| l.strip_prefix("event: ")).expect("an event: line");
            let data = lines.next().and_then(|l| l.strip_prefix("data: ")).expect("a data: line");
            assert!(lines.next().is_none(), "one data line per event: {block:?}");
            let data: Value = serde_json::from_str(data).expect("event data is JSON");
            assert_eq!(data["type"], event, "the data's type names the event");
            (event.to_string(), data)
        })
        .collect()
}

/// OpenAI SSE: the `data:` payloads in order.
fn openai_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| block.strip_prefix("data: ").expect("only data: lines").to_string())
        .collect()
}

fn ask(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are terse.",
           "messages": [{"role": "user", "content": text}]})
}

fn ask_openai(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]})
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn an_anthropic_message_has_the_real_shape_and_deterministic_usage() {
    let sb = start(Llm::Anthropic).await;
    let body = ask("What is a fjord?");
    let res = sb.message(&body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"));
    assert!(res.headers().contains_key("request-id"));
    let msg: Value = res.json().await.expect("JSON");

    assert!(msg["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!((msg["type"].as_str(), msg["role"].as_str()), (Some("message"), Some("assistant")));
    assert_eq!(msg["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(msg["stop_reason"], "end_turn");
    assert!(msg["stop_sequence"].is_null());
    assert_eq!(msg["content"][0]["type"], "text");
    let text = msg["content"][0]["text"].as_str().expect("text");
    assert_eq!(text.split(' ').count() as u64, llm::DEFAULT_OUTPUT_TOKENS, "one word per output token: {text}");
    let usage = &msg["usage"];
    assert_eq!(usage["input_tokens"].as_u64(), Some(count_input_tokens(&body)));
    assert_eq!(usage["output_tokens"].as_u64(), Some(llm::DEFAULT_OUTPUT_TOKENS));
    assert_eq!(
        (usage["cache_read_input_tokens"].as_u64(), usage["cache_creation_input_tokens"].as_u64()),
        (Some(0), Some(0))
    );

    let again: Value = sb.message(&body).await.json().await.expect("JSON");
    assert_eq!(again["content"], msg["content"], "the same question gets the same answer");
    let other: Value = sb.message(&ask("Something else entirely")).await.json().await.expect("JSON");
    assert_ne!(other["content"], msg["content"]);
}

#[tokio::test]
async fn the_tokens_directive_sets_the_reply_length_and_max_tokens_caps_it() {
    let sb = start(Llm::Anthropic).await;
    let msg: Value = sb.message(&ask("long please [sandbox:tokens=300]")).await.json().await.expect("JSON");
    assert_eq!(msg["usage"]["output_tokens"], 300);
    assert_eq!(msg["stop_reason"], "end_turn");

    let capped = with(ask("long please [sandbox:tokens=300]"), json!({"max_tokens": 10}));
    let msg: Value = sb.message(&capped).await.json().await.expect("JSON");
    assert_eq!(msg["usage"]["output_tokens"], 10);
    assert_eq!(msg["stop_reason"], "max_tokens");

    let bad = sb.message(&ask("[sandbox:tokenz=3]")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let err: Value = bad.json().await.expect("JSON");
    assert!(err["error"]["message"].as_str().expect("message").contains("tokenz"), "{err}");
}

#[tokio::test]
async fn count_tokens_equals_the_input_side_of_a_messages_usage_cached_tokens_included() {
    let sb = start(Llm::Anthropic).await;
    for text in ["hello", "hello again [sandbox:cache_read=100,cache_write=20]"] {
        let body = ask(text);
        let counted: Value = sb.anthropic("/v1/messages/count_tokens", &body).await.json().await.expect("JSON");
        let msg: Value = sb.message(&body).await.json().await.expect("JSON");
        let u = &msg["usage"];
        let sum = ["input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
            .iter()
            .map(|k| u[*k].as_u64().expect("a count"))
            .sum::<u64>();
        assert_eq!(counted["input_tokens"].as_u64(), Some(sum), "{text}: {u}");
        assert_eq!(counted["input_tokens"].as_u64(), Some(count_input_tokens(&body)));
    }
    let msg: Value =
        sb.message(&ask("again [sandbox:cache_read=100,cache_write=20]")).await.json().await.expect("JSON");
    assert_eq!(
        (msg["usage"]["cache_read_input_tokens"].as_u64(), msg["usage"]["cache_creation_input_tokens"].as_u64()),
        (Some(100), Some(20))
    );
    assert_eq!(msg["usage"]["cache_creation"]["ephemeral_5m_input_tokens"], 20);
    assert_eq!(sb.state().await["count_tokens_requests"], 2);
}

#[tokio::test]
async fn an_anthropic_stream_sends_the_documented_events_with_cumulative_output_tokens() {
    let sb = start(Llm::Anthropic).await;
    let body = with(ask("stream it [sandbox:tokens=7,cache_read=5]"), json!({"stream": true}));
    let res = sb.message(&body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let (text, clean) = read_body(res).await;
    assert!(clean);
    let events = anthropic_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", 7));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start = &events[0].1["message"];
    assert_eq!((start["role"].as_str(), start["type"].as_str()), (Some("assistant"), Some("message")));
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    assert_eq!(start["usage"]["input_tokens"].as_u64(), Some(count_input_tokens(&body) - 5));
    assert_eq!(start["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(start["usage"]["output_tokens"], 1);
    let deltas: Vec<&str> = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(deltas.len(), 7);
    assert!(events.iter().filter(|(n, _)| n == "content_block_delta").all(|(_, d)| d["delta"]["type"] == "text_delta"));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["usage"]["output_tokens"].as_u64(), Some(deltas.len() as u64), "cumulative, not per event");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");

    let whole: Value = sb.message(&with(body, json!({"stream": false}))).await.json().await.expect("JSON");
    assert_eq!(whole["content"][0]["text"].as_str(), Some(deltas.concat().as_str()), "stream and JSON agree");
    let state = sb.state().await;
    assert_eq!(state["responses"][0]["complete"], true);
    assert_eq!(state["responses"][0]["output_tokens"], 7);
    assert_eq!(state["responses"][0]["text_tokens_sent"], 7);
}

#[tokio::test]
async fn an_openai_completion_has_the_real_shape_and_usage_with_cached_tokens() {
    let sb = start(Llm::OpenAi).await;
    let body = ask_openai("Hi there [sandbox:tokens=9,cache_read=64]");
    let res = sb.chat(&body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("x-ratelimit-remaining-requests"));
    let c: Value = res.json().await.expect("JSON");
    assert!(c["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(c["object"], "chat.completion");
    assert!(c["created"].as_i64().expect("created") > 1_700_000_000);
    assert_eq!(c["model"], "gpt-4o-mini-2024-07-18");
    let choice = &c["choices"][0];
    assert_eq!((choice["index"].as_u64(), choice["finish_reason"].as_str()), (Some(0), Some("stop")));
    assert!(choice["logprobs"].is_null());
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"].as_str().expect("content").split(' ').count(), 9);
    let u = &c["usage"];
    let prompt = count_input_tokens(&body);
    assert_eq!(u["prompt_tokens"].as_u64(), Some(prompt), "prompt_tokens includes the cached tokens");
    assert_eq!(u["completion_tokens"], 9);
    assert_eq!(u["total_tokens"].as_u64(), Some(prompt + 9));
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 64);

    let capped: Value = sb.chat(&with(body, json!({"max_completion_tokens": 4}))).await.json().await.expect("JSON");
    assert_eq!(
        (capped["usage"]["completion_tokens"].as_u64(), capped["choices"][0]["finish_reason"].as_str()),
        (Some(4), Some("length"))
    );
}

#[tokio::test]
async fn an_openai_stream_carries_usage_only_when_asked_and_ends_with_done() {
    let sb = start(Llm::OpenAi).await;
    let body = with(ask_openai("go [sandbox:tokens=5]"), json!({"stream": true}));
    let (text, clean) = read_body(sb.chat(&body).await).await;
    assert!(clean);
    let data = openai_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).expect("chunk JSON")).collect();
    assert_eq!(chunks.len(), 1 + 5 + 1, "role chunk, one per token, finish chunk");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c.get("usage").is_none()));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));

    let body = with(body, json!({"stream_options": {"include_usage": true}}));
    let (text, clean) = read_body(sb.chat(&body).await).await;
    assert!(clean);
    let data = openai_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).expect("chunk JSON")).collect();
    let (last, rest) = chunks.split_last().expect("chunks");
    assert!(rest.iter().all(|c| c["usage"].is_null() && c.get("usage").is_some()), "usage: null on the others");
    assert_eq!(last["choices"], json!([]));
    let content_chunks =
        rest.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())).count();
    assert_eq!(last["usage"]["completion_tokens"].as_u64(), Some(content_chunks as u64));
    assert_eq!(last["usage"]["prompt_tokens"].as_u64(), Some(count_input_tokens(&body)));

    let reported = &sb.state().await["reported"];
    assert_eq!(reported["output_tokens"], 5, "only the stream with include_usage reported usage");
    assert_eq!(reported["input_tokens"].as_u64(), Some(count_input_tokens(&body)));
}

#[tokio::test]
async fn overloaded_answers_529_from_anthropic_and_503_from_openai_for_exactly_n_requests() {
    let a = start(Llm::Anthropic).await;
    a.faults(json!({"overloaded": 2})).await;
    for _ in 0..2 {
        let res = a.message(&ask("hi")).await;
        assert_eq!(res.status().as_u16(), 529);
        let err: Value = res.json().await.expect("JSON");
        assert_eq!(err["type"], "error");
        assert_eq!(err["error"], json!({"type": "overloaded_error", "message": "Overloaded"}));
    }
    assert_eq!(a.message(&ask("hi")).await.status(), StatusCode::OK);
    assert_eq!(a.state().await["by_status"], json!({"200": 1, "529": 2}));

    let o = start(Llm::OpenAi).await;
    o.faults(json!({"overloaded": 1})).await;
    let res = o.chat(&ask_openai("hi")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let err: Value = res.json().await.expect("JSON");
    assert_eq!(err["error"]["type"], "server_error");
    assert!(err["error"].get("param").is_some() && err["error"].get("code").is_some());
    assert_eq!(o.chat(&ask_openai("hi")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn rate_limited_and_server_error_faults_answer_429_with_retry_after_and_500() {
    let a = start(Llm::Anthropic).await;
    a.faults(json!({"rate_limited": 1, "retry_after": 7, "server_error": 1})).await;
    let res = a.message(&ask("hi")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "7");
    assert_eq!(res.json::<Value>().await.expect("JSON")["error"]["type"], "rate_limit_error");
    let res = a.message(&ask("hi")).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.json::<Value>().await.expect("JSON")["error"]["type"], "api_error");
    assert_eq!(a.message(&ask("hi")).await.status(), StatusCode::OK);

    let o = start(Llm::OpenAi).await;
    o.faults(json!({"rate_limited": 1, "retry_after": 2})).await;
    let res = o.chat(&ask_openai("hi")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "2");
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(res.headers()["x-ratelimit-reset-requests"], "2s");
    assert_eq!(res.json::<Value>().await.expect("JSON")["error"]["code"], "rate_limit_exceeded");
    let state = o.state().await;
    assert_eq!(state["reported"]["input_tokens"], 0, "a failed request reports no usage");
    assert_eq!(state["responses"], json!([]));
}

#[tokio::test]
async fn a_dropped_anthropic_stream_is_cut_mid_body_and_reports_only_what_was_sent() {
    let sb = start(Llm::Anthropic).await;
    sb.faults(json!({"drop": 1, "drop_after": 5})).await;
    // A non-streaming request does not use up the drop.
    assert_eq!(sb.message(&ask("plain")).await.status(), StatusCode::OK);
    let body = with(ask("cut me [sandbox:tokens=10,cache_read=3]"), json!({"stream": true}));
    let res = sb.message(&body).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (text, clean) = read_body(res).await;
    assert!(!clean, "the connection is aborted, not ended");
    let names: Vec<String> = anthropic_events(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta"]);

    let state = sb.state().await;
    let cut = &state["responses"][1];
    assert_eq!((cut["complete"].as_bool(), cut["dropped"].as_bool()), (Some(false), Some(true)));
    assert_eq!(cut["input_tokens"].as_u64(), Some(count_input_tokens(&body) - 3));
    assert_eq!(cut["cache_read_input_tokens"], 3);
    assert_eq!(cut["output_tokens"], 1, "message_start's output_tokens is the last count the client saw");
    assert_eq!(cut["text_tokens_sent"], 2);
    assert_eq!(state["dropped"], 1);
    let plain = &state["responses"][0];
    assert_eq!(state["reported"]["output_tokens"].as_u64(), Some(plain["output_tokens"].as_u64().expect("count") + 1));

    // The next stream is whole again.
    let (_, clean) = read_body(sb.message(&body).await).await;
    assert!(clean);
}

#[tokio::test]
async fn a_dropped_openai_stream_reports_no_usage_and_never_sends_done() {
    let sb = start(Llm::OpenAi).await;
    sb.faults(json!({"drop": 1, "drop_after": 3})).await;
    let body =
        with(ask_openai("cut [sandbox:tokens=10]"), json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (text, clean) = read_body(sb.chat(&body).await).await;
    assert!(!clean);
    let data = openai_data(&text);
    assert_eq!(data.len(), 3);
    assert!(!text.contains("[DONE]"));
    let state = sb.state().await;
    assert_eq!(
        state["reported"],
        json!({"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    );
    assert_eq!(state["responses"][0]["text_tokens_sent"], 2);
    assert_eq!(state["responses"][0]["dropped"], true);
}

#[tokio::test]
async fn a_drop_after_past_the_end_still_withholds_the_final_event() {
    let sb = start(Llm::Anthropic).await;
    sb.faults(json!({"drop": 1, "drop_after": 1000})).await;
    let (text, clean) = read_body(sb.message(&with(ask("x [sandbox:tokens=2]"), json!({"stream": true}))).await).await;
    assert!(!clean);
    let names: Vec<String> = anthropic_events(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().map(String::as_str), Some("message_delta"));
    let state = sb.state().await;
    assert_eq!(state["reported"]["output_tokens"], 2, "the message_delta went out");
    assert_eq!(state["responses"][0]["complete"], false);
}

#[tokio::test]
async fn a_stream_error_fault_sends_an_error_event_and_ends_the_stream() {
    let sb = start(Llm::Anthropic).await;
    sb.faults(json!({"stream_error": 1, "stream_error_after": 4})).await;
    let (text, clean) = read_body(sb.message(&with(ask("x"), json!({"stream": true}))).await).await;
    assert!(clean);
    let events = anthropic_events(&text);
    assert_eq!(events.len(), 5);
    assert_eq!(events[4].0, "error");
    assert_eq!(events[4].1["error"]["type"], "overloaded_error");
    assert_eq!(sb.state().await["responses"][0]["stream_error"], true);

    let o = start(Llm::OpenAi).await;
    o.faults(json!({"stream_error": 1, "stream_error_after": 2})).await;
    let (text, clean) = read_body(o.chat(&with(ask_openai("x"), json!({"stream": true}))).await).await;
    assert!(clean);
    let data = openai_data(&text);
    assert_eq!(data.len(), 3);
    let err: Value = serde_json::from_str(&data[2]).expect("JSON");
    assert_eq!(err["error"]["type"], "server_error");
}

#[tokio::test]
async fn a_hung_request_times_out_a_client_and_the_next_one_is_answered() {
    let sb = start(Llm::OpenAi).await;
    sb.faults(json!({"hang": 1})).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
    let began = Instant::now();
    let err = impatient
        .post(sb.url("/v1/chat/completions"))
        .bearer_auth(OPENAI_KEY)
        .json(&ask_openai("hi"))
        .send()
        .await
        .expect_err("the request hangs");
    assert!(err.is_timeout(), "{err}");
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(sb.chat(&ask_openai("hi")).await.status(), StatusCode::OK);
    assert_eq!(sb.state().await["hung"], 1);
}

#[tokio::test]
async fn slow_ms_spaces_the_stream_events() {
    let sb = start(Llm::Anthropic).await;
    sb.faults(json!({"slow_ms": 40})).await;
    let began = Instant::now();
    let (text, clean) = read_body(sb.message(&with(ask("x [sandbox:tokens=3]"), json!({"stream": true}))).await).await;
    assert!(clean);
    let events = anthropic_events(&text).len() as u32;
    assert_eq!(events, 9);
    assert!(began.elapsed() >= Duration::from_millis(40) * (events - 1));
}

#[tokio::test]
async fn anthropic_refuses_bad_keys_versions_bodies_and_models_like_the_real_api() {
    let sb = start(Llm::Anthropic).await;
    let url = sb.url("/v1/messages");
    let send = |key: Option<&str>, version: Option<&str>, body: String| {
        let mut req = sb.http.post(&url).header("content-type", "application/json").body(body);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(v) = version {
            req = req.header("anthropic-version", v);
        }
        req.send()
    };
    let good = ask("hi").to_string();
    let cases = [
        (None, Some("2023-06-01"), good.clone(), 401, "authentication_error"),
        (Some("not-a-key-1234"), Some("2023-06-01"), good.clone(), 401, "authentication_error"),
        (Some(ANTHROPIC_KEY), None, good.clone(), 400, "invalid_request_error"),
        (Some(ANTHROPIC_KEY), Some("latest"), good.clone(), 400, "invalid_request_error"),
        (Some(ANTHROPIC_KEY), Some("2023-06-01"), "{\"model\": ".into(), 400, "invalid_request_error"),
        (
            Some(ANTHROPIC_KEY),
            Some("2023-06-01"),
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            Some(ANTHROPIC_KEY),
            Some("2023-06-01"),
            with(ask("hi"), json!({"model": "claude-9"})).to_string(),
            404,
            "not_found_error",
        ),
        (
            Some(ANTHROPIC_KEY),
            Some("2023-06-01"),
            with(ask("hi"), json!({"max_tokens": 999_999})).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            Some(ANTHROPIC_KEY),
            Some("2023-06-01"),
            with(ask("hi"), json!({"messages": []})).to_string(),
            400,
            "invalid_request_error",
        ),
    ];
    for (key, version, body, status, kind) in cases {
        let res = send(key, version, body.clone()).await.expect("sent");
        assert_eq!(res.status().as_u16(), status, "{key:?} {version:?} {body}");
        let err: Value = res.json().await.expect("JSON");
        assert_eq!(err["type"], "error");
        assert_eq!(err["error"]["type"], kind, "{err}");
        assert!(!err["error"]["message"].as_str().expect("message").is_empty());
    }
    let missing = send(
        Some(ANTHROPIC_KEY),
        Some("2023-06-01"),
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await
    .expect("sent");
    let err: Value = missing.json().await.expect("JSON");
    assert!(err["error"]["message"].as_str().expect("message").contains("max_tokens"), "{err}");
    let state = sb.state().await;
    assert_eq!(state["responses"], json!([]), "refused requests report nothing");
    assert_eq!(state["by_status"]["400"], 7);
}

#[tokio::test]
async fn anthropic_takes_the_key_as_a_bearer_token_and_any_dated_version_as_the_python_sdk_2_sends_them() {
    let sb = start(Llm::Anthropic).await;
    let res = sb
        .http
        .post(sb.url("/v1/messages"))
        .bearer_auth("sk-ant-sdk-two-5678")
        .header("anthropic-version", "2026-10-21")
        .json(&ask("hi"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let res = sb
        .http
        .post(sb.url("/v1/messages"))
        .bearer_auth("not-anthropic")
        .header("anthropic-version", "2026-10-21")
        .json(&ask("hi"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sb.state().await["responses"][0]["api_key_suffix"], "5678");
}

#[tokio::test]
async fn openai_refuses_bad_keys_bodies_and_models_like_the_real_api() {
    let sb = start(Llm::OpenAi).await;
    let url = sb.url("/v1/chat/completions");
    let send = |auth: Option<&str>, body: String| {
        let mut req = sb.http.post(&url).header("content-type", "application/json").body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let bearer = format!("Bearer {OPENAI_KEY}");
    let good = ask_openai("hi").to_string();
    let cases = [
        (None, good.clone(), 401, Value::Null),
        (Some("Bearer nope-1234"), good.clone(), 401, json!("invalid_api_key")),
        (Some(bearer.as_str()), "not json".into(), 400, Value::Null),
        (
            Some(bearer.as_str()),
            with(ask_openai("hi"), json!({"model": "gpt-9"})).to_string(),
            404,
            json!("model_not_found"),
        ),
        (Some(bearer.as_str()), json!({"model": "gpt-4o"}).to_string(), 400, json!("missing_required_parameter")),
        (
            Some(bearer.as_str()),
            with(ask_openai("hi"), json!({"stream_options": {"include_usage": true}})).to_string(),
            400,
            Value::Null,
        ),
        (
            Some(bearer.as_str()),
            with(ask_openai("hi"), json!({"max_tokens": 1_000_000})).to_string(),
            400,
            json!("invalid_value"),
        ),
    ];
    for (auth, body, status, code) in cases {
        let res = send(auth, body.clone()).await.expect("sent");
        assert_eq!(res.status().as_u16(), status, "{auth:?} {body}");
        let err: Value = res.json().await.expect("JSON");
        let e = &err["error"];
        assert_eq!(e["code"], code, "{err}");
        assert!(e.get("param").is_some() && e["type"].is_string() && e["message"].is_string(), "{err}");
    }
    assert_eq!(sb.state().await["responses"], json!([]));
}

#[tokio::test]
async fn sandbox_state_sums_the_usage_sent_and_names_each_callers_key() {
    let sb = start(Llm::Anthropic).await;
    let bodies = [ask("one [sandbox:tokens=3]"), ask("two [sandbox:tokens=5,cache_read=40,cache_write=8]")];
    let mut expected =
        json!({"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0});
    for body in &bodies {
        let msg: Value = sb.message(body).await.json().await.expect("JSON");
        for k in ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"] {
            expected[k] = json!(expected[k].as_u64().expect("n") + msg["usage"][k].as_u64().expect("n"));
        }
    }
    let (_, clean) = read_body(sb.message(&with(ask("three [sandbox:tokens=4]"), json!({"stream": true}))).await).await;
    assert!(clean);
    expected["output_tokens"] = json!(expected["output_tokens"].as_u64().expect("n") + 4);
    expected["input_tokens"] =
        json!(expected["input_tokens"].as_u64().expect("n") + count_input_tokens(&ask("three [sandbox:tokens=4]")));

    let other = sb
        .http
        .post(sb.url("/v1/messages"))
        .header("x-api-key", "sk-ant-other-tenant-9876")
        .header("anthropic-version", "2023-06-01")
        .json(&ask("four"))
        .send()
        .await
        .expect("sent");
    let four: Value = other.json().await.expect("JSON");
    for k in ["input_tokens", "output_tokens"] {
        expected[k] = json!(expected[k].as_u64().expect("n") + four["usage"][k].as_u64().expect("n"));
    }

    let state = sb.state().await;
    assert_eq!(state["requests"], 4);
    assert_eq!(state["by_status"], json!({"200": 4}));
    assert_eq!(state["reported"], expected);
    let suffixes: Vec<&str> =
        state["responses"].as_array().expect("list").iter().map(|r| r["api_key_suffix"].as_str().expect("s")).collect();
    assert_eq!(suffixes, ["abcd", "abcd", "abcd", "9876"]);
    assert_eq!(state["responses"][2]["stream"], true);
    assert_eq!(state["responses"][0]["model"], "claude-sonnet-4-5-20250929");

    let reset: Value = sb.http.post(sb.url("/sandbox/reset")).send().await.expect("reset").json().await.expect("JSON");
    assert_eq!((reset["requests"].as_u64(), reset["responses"].as_array().map(Vec::len)), (Some(0), Some(0)));
}

#[tokio::test]
async fn the_random_mix_is_the_same_for_the_same_seed() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let sb = start(Llm::OpenAi).await;
        let res = sb.faults(json!({"random": {"seed": seed, "overloaded": 0.3, "rate_limited": 0.2}})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut out = Vec::new();
        for _ in 0..30 {
            out.push(sb.chat(&ask_openai("hi")).await.status().as_u16());
        }
        out
    }
    let a = statuses(11).await;
    assert_eq!(a, statuses(11).await);
    assert!(a.contains(&503) && a.contains(&429) && a.contains(&200), "{a:?}");
}

#[tokio::test]
async fn faults_are_validated_shown_and_cleared_by_delete() {
    let sb = start(Llm::Anthropic).await;
    assert_eq!(sb.faults(json!({"overloded": 1})).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sb.faults(json!({"random": {"hang": 2.0}})).await.status(), StatusCode::BAD_REQUEST);
    let now: Value = sb.faults(json!({"overloaded": 3, "slow_ms": 5})).await.json().await.expect("JSON");
    assert_eq!((now["overloaded"].as_u64(), now["slow_ms"].as_u64()), (Some(3), Some(5)));
    let cleared: Value =
        sb.http.delete(sb.url("/sandbox/faults")).send().await.expect("delete").json().await.expect("JSON");
    assert_eq!((cleared["overloaded"].as_u64(), cleared["slow_ms"].as_u64()), (Some(0), Some(0)));
    assert_eq!(sb.message(&ask("hi")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn start_all_serves_both_apis_on_their_own_ports() {
    let all = llm::start_all(Ipv4Addr::LOCALHOST.into()).await.expect("both start");
    let ids: Vec<&str> = all.iter().map(|r| r.llm.id()).collect();
    assert_eq!(ids, ["anthropic", "openai"]);
    assert_ne!(all[0].url, all[1].url);
    assert_eq!(Llm::OpenAi.env_var(), "TENANTRY_OPENAI_URL");
    let index: Value = reqwest::get(format!("{}/", all[1].url)).await.expect("index").json().await.expect("JSON");
    assert_eq!(index["llm"], "openai");
    for r in all {
        r.stop().await;
    }
}
