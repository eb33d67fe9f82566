//! The AI meter end to end: plans and keys set through control, calls through the proxy to the sandbox
//! LLMs, budgets, rate limits, usage, meter events, upstream faults and the circuit breaker.

use std::collections::HashMap;

use integration_tests::meter::{claude, claude_body, gpt, gpt_body, metered_tenant as setup, plan, sandbox};
use integration_tests::{Auth, TestStack, TestTenant, start, start_with_env, user_token};
use serde_json::{Value, json};

async fn usage(s: &TestStack, t: &TestTenant, user: &str) -> Value {
    let r = s.call("GET", &format!("/v1/users/{user}/usage"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// What the sandbox reported, in the usage API's terms: input (without cache), output, cache.
fn reported(state: &Value) -> (u64, u64, u64) {
    let r = &state["reported"];
    let cache = n(&r["cache_read_input_tokens"]) + n(&r["cache_creation_input_tokens"]);
    (n(&r["input_tokens"]), n(&r["output_tokens"]), cache)
}

#[tokio::test]
async fn a_call_goes_upstream_with_the_tenants_key_and_its_reported_usage_is_counted_once() {
    let s = start().await;
    let (t, user) = setup(&s, plan(100_000, 100)).await;

    // WHEN the user chats once without streaming and once streaming
    let r = claude(&s, &t, &user, &claude_body("Hello there [sandbox:tokens=12,cache_read=30]", 200, false)).await;
    assert_eq!(r.status(), 200);
    let remaining: u64 = r.headers()["x-tenantry-tokens-remaining"].to_str().unwrap_or("").parse().unwrap_or(0);
    assert!(r.headers().contains_key("x-tenantry-budget-reset"));
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["type"], "message");
    assert_eq!(body["usage"]["output_tokens"], 12);
    let r = claude(&s, &t, &user, &claude_body("And again, streaming [sandbox:tokens=20]", 200, true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = r.text().await.unwrap_or_default();
    assert_eq!(text.matches("event: content_block_delta").count(), 20);
    assert!(text.contains("event: message_stop"));

    // THEN the upstream saw the tenant's key, and the usage equals what it reported
    let state = sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await;
    let suffixes: Vec<&str> =
        state["responses"].as_array().into_iter().flatten().filter_map(|r| r["api_key_suffix"].as_str()).collect();
    assert_eq!(suffixes, vec!["abcd", "abcd"]);
    let (input, output, cache) = reported(&state);
    let u = usage(&s, &t, &user).await;
    assert_eq!((n(&u["input_tokens"]), n(&u["output_tokens"]), n(&u["cache_tokens"])), (input, output, cache));
    assert_eq!(output, 32);
    assert_eq!(n(&u["tokens_used"]), input + output + cache);
    assert_eq!(n(&u["requests"]), 2);
    assert_eq!(n(&u["in_flight_tokens"]), 0, "every reservation settled");
    assert_eq!(n(&u["tokens_limit"]), 100_000);
    assert_eq!(u["plan"], "basic");
    let model = &u["by_model"]["claude-haiku-4-5"];
    assert_eq!(n(&model["requests"]), 2);
    // claude-haiku-4-5: $1 in, $5 out, $0.10 cache read per million tokens.
    let cost = (input as f64 * 1.0 + output as f64 * 5.0 + cache as f64 * 0.1) / 1e6;
    assert!((u["cost_usd"].as_f64().unwrap_or(-1.0) - cost).abs() < 1e-6, "{} vs {cost}", u["cost_usd"]);
    assert!(remaining < 100_000 && remaining > 99_000, "{remaining}");
    // AND the tenant's month sums its users
    let r = s.call("GET", "/v1/usage", Auth::Bearer(&t.api_key), None).await;
    assert_eq!((n(&r.body["users"]), n(&r.body["tokens_used"])), (1, input + output + cache), "{}", r.body);
}

#[tokio::test]
async fn openai_streams_get_usage_forced_on_and_its_chunk_removed_unless_the_client_asked() {
    let s = start().await;
    let (t, user) = setup(&s, plan(100_000, 100)).await;
    let r = gpt(&s, &t, &user, &gpt_body("Hi [sandbox:tokens=7]", true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap_or_default();
    assert!(!text.contains("prompt_tokens"), "the usage chunk the client did not ask for is gone: {text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let mut asked = gpt_body("Hi again [sandbox:tokens=5]", true);
    asked["stream_options"] = json!({"include_usage": true});
    let text = gpt(&s, &t, &user, &asked).await.text().await.unwrap_or_default();
    assert!(text.contains("\"completion_tokens\":5"), "{text}");
    let r = gpt(&s, &t, &user, &gpt_body("Not streamed [sandbox:tokens=3,cache_read=16]", false)).await;
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["object"], "chat.completion");

    let state = sandbox(&s, "openai", "GET", "/sandbox/state", None).await;
    assert_eq!(n(&state["reported"]["output_tokens"]), 15);
    let u = usage(&s, &t, &user).await;
    let prompt = n(&state["reported"]["input_tokens"]);
    let cached = n(&state["reported"]["cache_read_input_tokens"]);
    assert_eq!(n(&u["output_tokens"]), 15);
    assert_eq!(n(&u["input_tokens"]) + n(&u["cache_tokens"]), prompt, "prompt_tokens include the cached ones");
    assert_eq!(n(&u["cache_tokens"]), cached);
    assert_eq!(n(&u["requests"]), 3);
    // The proxy set an output limit the budget can hold to, since the client named none.
    let sent: Vec<u64> = state["responses"].as_array().into_iter().flatten().map(|r| n(&r["output_tokens"])).collect();
    assert_eq!(sent, vec![7, 5, 3]);
}

#[tokio::test]
async fn a_spent_budget_answers_402_with_the_reset_time_and_calls_are_clamped_to_budget_and_grace() {
    let s = start().await;
    let (t, user) = setup(&s, json!({"monthly_tokens": 400, "requests_per_minute": 100, "grace_tokens": 50})).await;
    let mut calls = 0;
    let mut last = None;
    for _ in 0..20 {
        let r = claude(&s, &t, &user, &claude_body("Tell me more [sandbox:tokens=60]", 100, false)).await;
        if r.status() != 200 {
            last = Some(r);
            break;
        }
        calls += 1;
    }
    let r = last.unwrap_or_else(|| panic!("the budget never ran out"));
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["x-tenantry-tokens-remaining"], "0");
    let reset = r.headers()["x-tenantry-budget-reset"].to_str().unwrap_or("").to_owned();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "budget_exhausted");
    assert_eq!(body["error"]["reset_at"], reset.as_str());
    assert!(reset.contains("-01T00:00:00"), "the first of next month: {reset}");
    assert!(calls >= 2, "{calls} calls fit");
    let u = usage(&s, &t, &user).await;
    assert!(n(&u["tokens_used"]) <= 450, "never past budget + grace: {}", u);
    assert!(n(&u["tokens_used"]) >= 400 - 100, "the budget was used: {}", u);
    assert_eq!(n(&u["remaining"]), 0);
    // A refused call reached no upstream.
    let state = sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await;
    assert_eq!(n(&state["requests"]), calls);
}

#[tokio::test]
async fn the_plans_rate_limit_answers_429_with_retry_after_and_reaches_no_upstream() {
    let s = start().await;
    let (t, user) = setup(&s, plan(100_000, 3)).await;
    for _ in 0..3 {
        assert_eq!(claude(&s, &t, &user, &claude_body("quick", 10, false)).await.status(), 200);
    }
    let r = claude(&s, &t, &user, &claude_body("one too many", 10, false)).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap_or("").parse().unwrap_or(0);
    assert!((1..=70).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "rate_limited");
    let state = sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await;
    assert_eq!(n(&state["requests"]), 3);
    // Another user of the same plan has their own window.
    let other = s.user(&t, "other").await["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(claude(&s, &t, &other, &claude_body("mine", 10, false)).await.status(), 200);
}

#[tokio::test]
async fn bad_calls_get_clear_errors_and_reserve_nothing() {
    let s = start().await;
    let (t, user) =
        setup(&s, json!({"monthly_tokens": 100_000, "requests_per_minute": 100, "models": ["claude-haiku-4-5"]})).await;
    let url = format!("{}/v1/users/{user}/ai/anthropic/v1/messages", s.base);
    let post = |body: Vec<u8>| {
        s.http.post(&url).header("x-api-key", &t.api_key).header("content-type", "application/json").body(body)
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "invalid_json"),
        (
            serde_json::to_vec(&json!({"model": "claude-9000", "max_tokens": 5})).unwrap_or_default(),
            400,
            "unknown_model",
        ),
        (
            serde_json::to_vec(&json!({"model": "claude-haiku-4-5", "messages": []})).unwrap_or_default(),
            400,
            "max_tokens_required",
        ),
        (
            serde_json::to_vec(
                &claude_body("x", 10, false)
                    .as_object()
                    .map(|o| {
                        let mut o = o.clone();
                        o.insert("model".into(), json!("claude-sonnet-4-5"));
                        o
                    })
                    .unwrap_or_default(),
            )
            .unwrap_or_default(),
            403,
            "model_not_allowed",
        ),
        (vec![b' '; 5 << 20], 413, "body_too_large"),
    ];
    for (body, status, code) in cases {
        let r = s.send(post(body)).await;
        r.assert_error(status, code);
    }
    // A user of another tenant is a 404, like one that does not exist.
    let (other_tenant, other_user) = setup(&s, plan(1000, 10)).await;
    let r = claude(&s, &t, &other_user, &claude_body("hi", 10, false)).await;
    assert_eq!(r.status(), 404);
    // A disabled user is refused.
    let r = s
        .call("PATCH", &format!("/v1/users/{user}"), Auth::Bearer(&t.api_key), Some(json!({"status": "disabled"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = claude(&s, &t, &user, &claude_body("hi", 10, false)).await;
    assert_eq!(r.status(), 403);
    // Nothing was reserved, and nothing reached the upstream.
    for (tenant, u) in [(&t, &user), (&other_tenant, &other_user)] {
        let got = usage(&s, tenant, u).await;
        assert_eq!((n(&got["tokens_used"]), n(&got["in_flight_tokens"]), n(&got["requests"])), (0, 0, 0), "{got}");
    }
    assert_eq!(n(&sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await["requests"]), 0);
    // Without a key for the API, the tenant is told how to set one.
    let r = s.call("DELETE", "/v1/settings/llm/openai", Auth::Bearer(&other_tenant.api_key), None).await;
    assert_eq!(r.status, 204);
    let r = gpt(&s, &other_tenant, &other_user, &gpt_body("hi", false)).await;
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn upstream_failures_pass_through_count_nothing_and_open_the_breaker_until_a_probe_succeeds() {
    let env = HashMap::from([
        ("METER_BREAKER_THRESHOLD".to_owned(), "2".to_owned()),
        ("METER_BREAKER_COOLDOWN_MS".to_owned(), "1500".to_owned()),
        ("METER_FIRST_BYTE_TIMEOUT_MS".to_owned(), "1000".to_owned()),
    ]);
    let s = start_with_env(env).await;
    let (t, user) = setup(&s, plan(100_000, 1000)).await;
    // 429 is the caller's business: passed through with its retry-after, not a breaker failure.
    sandbox(&s, "anthropic", "POST", "/sandbox/faults", Some(json!({"rate_limited": 1, "retry_after": 7}))).await;
    let r = claude(&s, &t, &user, &claude_body("hi", 10, false)).await;
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap_or("")), (429, "7"));
    // A 529 and a timeout: passed through / 503, and together they open the breaker.
    sandbox(&s, "anthropic", "POST", "/sandbox/faults", Some(json!({"overloaded": 1, "hang": 0}))).await;
    let r = claude(&s, &t, &user, &claude_body("hi", 10, false)).await;
    assert_eq!(r.status(), 529);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["type"], "overloaded_error");
    sandbox(&s, "anthropic", "POST", "/sandbox/faults", Some(json!({"hang": 1}))).await;
    let hi = || {
        let url = format!("{}/v1/users/{user}/ai/anthropic/v1/messages", s.base);
        s.send(s.http.post(url).header("x-api-key", &t.api_key).json(&claude_body("hi", 10, false)))
    };
    hi().await.assert_error(503, "upstream_timeout");
    let requests_so_far = n(&sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await["requests"]);
    hi().await.assert_error(503, "upstream_unavailable");
    assert_eq!(
        n(&sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await["requests"]),
        requests_so_far,
        "an open breaker calls nobody"
    );
    // OpenAI is a different upstream: unaffected.
    assert_eq!(gpt(&s, &t, &user, &gpt_body("hi", false)).await.status(), 200);
    // After the cooldown one probe goes through; its success closes the breaker.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(claude(&s, &t, &user, &claude_body("probe", 10, false)).await.status(), 200);
    assert_eq!(claude(&s, &t, &user, &claude_body("closed", 10, false)).await.status(), 200);
    // Only the successful calls (two to Anthropic, one to OpenAI) were counted; every failed one gave its
    // reservation back.
    let u = usage(&s, &t, &user).await;
    assert_eq!(n(&u["requests"]), 3);
    assert_eq!(n(&u["by_model"]["claude-haiku-4-5"]["requests"]), 2);
    assert_eq!(n(&u["in_flight_tokens"]), 0, "{u}");
}

#[tokio::test]
async fn a_stream_the_upstream_drops_counts_what_was_reported_and_ends_the_clients_body_with_an_error() {
    let s = start().await;
    let (t, user) = setup(&s, plan(100_000, 100)).await;
    sandbox(&s, "anthropic", "POST", "/sandbox/faults", Some(json!({"drop": 1, "drop_after": 5}))).await;
    let r = claude(&s, &t, &user, &claude_body("a long story [sandbox:tokens=40]", 100, true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "the client sees a broken stream, not a clean end");
    let state = sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await;
    let (input, output, cache) = reported(&state);
    // Settling happens before the proxy ends the body; allow the task a moment all the same.
    let mut u = usage(&s, &t, &user).await;
    for _ in 0..20 {
        if n(&u["requests"]) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        u = usage(&s, &t, &user).await;
    }
    assert_eq!((n(&u["input_tokens"]), n(&u["output_tokens"]), n(&u["cache_tokens"])), (input, output, cache));
    assert_eq!(n(&u["in_flight_tokens"]), 0);
}

#[tokio::test]
async fn meter_events_count_once_per_idempotency_key() {
    let s = start().await;
    let (t, user) = setup(&s, plan(1000, 10)).await;
    let key = Auth::Bearer(&t.api_key);
    let event = json!({"user_id": user, "event_name": "images_generated", "value": 3, "idempotency_key": "job-1"});
    let first = s.call("POST", "/v1/usage/events", key.clone(), Some(event.clone())).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = s.call("POST", "/v1/usage/events", key.clone(), Some(event.clone())).await;
    assert_eq!((again.status, &again.body["duplicate"]), (200, &json!(true)));
    assert_eq!(again.body["id"], first.body["id"]);
    let mut other = event.clone();
    other["value"] = json!(4);
    s.call("POST", "/v1/usage/events", key.clone(), Some(other)).await.assert_error(409, "idempotency_key_reused");
    let mut second = event.clone();
    second["idempotency_key"] = json!("job-2");
    assert_eq!(s.call("POST", "/v1/usage/events", key.clone(), Some(second)).await.status, 201);
    let u = usage(&s, &t, &user).await;
    assert_eq!(u["events"]["images_generated"], json!(6.0));
    let mut bad = event.clone();
    bad["timestamp"] = json!("2020-01-01T00:00:00Z");
    s.call("POST", "/v1/usage/events", key.clone(), Some(bad)).await.assert_error(400, "invalid_timestamp");
    let mut stranger = event;
    stranger["user_id"] = json!("usr_00000000000000000000000000");
    assert_eq!(s.call("POST", "/v1/usage/events", key, Some(stranger)).await.status, 404);
}

#[tokio::test]
async fn an_end_user_chats_and_reads_their_usage_with_the_tenants_login_and_a_plan_change_applies_at_once() {
    let s = start().await;
    let (t, _) = setup(&s, plan(100_000, 100)).await;
    let token = user_token(&s, &t, "jwt-user-1");
    let url = format!("{}/v1/me/ai/openai/v1/chat/completions", s.base);
    let r = s.http.post(&url).bearer_auth(&token).json(&gpt_body("Hi [sandbox:tokens=4]", false)).send().await;
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let me = s.call("GET", "/v1/me/usage", Auth::Bearer(&token), None).await;
    assert_eq!((me.status, n(&me.body["output_tokens"])), (200, 4), "{}", me.body);
    let user = me.body["user_id"].as_str().unwrap_or_default().to_owned();
    // The tenant moves the user to a tiny plan: the next call is held to it.
    let key = Auth::Bearer(&t.api_key);
    let r = s.call("PUT", "/v1/settings/plans/tiny", key.clone(), Some(plan(10, 100))).await;
    assert_eq!(r.status, 200);
    let r = s.call("PUT", &format!("/v1/users/{user}/plan"), key.clone(), Some(json!({"plan": "tiny"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.call("PUT", &format!("/v1/users/{user}/plan"), key.clone(), Some(json!({"plan": "nope"})))
        .await
        .assert_error(400, "unknown_plan");
    let r = s
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&gpt_body("Hi", false))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 402);
    // The default plan cannot be deleted while it is the default.
    s.call("DELETE", "/v1/settings/plans/basic", key, None).await.assert_error(409, "plan_in_use");
}

#[tokio::test]
async fn crossing_80_percent_warns_in_a_header_and_sends_one_usage_threshold_event() {
    let s = start().await;
    let (t, user) = setup(&s, plan(1000, 100)).await;
    // A webhook endpoint of the tenant's that keeps what it gets.
    let got: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(serde_json::from_str(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{}/hook", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = json!({"url": url, "events": ["usage.threshold"]});
    assert_eq!(s.call("PUT", "/v1/settings/webhooks", Auth::Bearer(&t.api_key), Some(body)).await.status, 200);

    // Each call reserves about 140 tokens and settles near 120: the warning starts past 800.
    let mut warned_at = None;
    for i in 0..8 {
        let r = claude(&s, &t, &user, &claude_body("Count for me [sandbox:tokens=100]", 100, false)).await;
        if r.status() != 200 {
            break;
        }
        if warned_at.is_none() && r.headers().contains_key("x-tenantry-budget-warning") {
            warned_at = Some(i);
        }
    }
    let u = usage(&s, &t, &user).await;
    assert!(warned_at.is_some(), "a call past 80% carries the warning header: {u}");
    // THEN exactly one usage.threshold reaches the endpoint
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while got.lock().unwrap_or_else(|p| p.into_inner()).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let events = got.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "usage.threshold");
    assert_eq!(events[0]["data"]["user_id"], user.as_str());
    assert_eq!(events[0]["data"]["percent"], 80);
    assert_eq!(events[0]["data"]["tokens_limit"], 1000);
}

#[tokio::test]
async fn when_the_budget_store_is_unreachable_calls_fail_closed_unless_the_tenant_chose_to_fail_open() {
    let s = start().await;
    let (t, user) = setup(&s, plan(100_000, 100)).await;
    assert_eq!(claude(&s, &t, &user, &claude_body("hi", 10, false)).await.status(), 200);
    // The meter's table goes away (as a throttled or unreachable table would answer errors).
    let deleted = s.dynamodb.delete_table().table_name(&s.refs["MeterTable"]).send().await;
    assert!(deleted.is_ok(), "{deleted:?}");
    let r = s.send(
        s.http
            .post(format!("{}/v1/users/{user}/ai/anthropic/v1/messages", s.base))
            .header("x-api-key", &t.api_key)
            .json(&claude_body("hi", 10, false)),
    );
    r.await.assert_error(503, "meter_unavailable");
    let calls = n(&sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await["requests"]);
    assert_eq!(calls, 1, "a call that cannot be metered is not made");
    // The tenant chooses availability over metering: the call goes through, flagged.
    let body = json!({"default_plan": "basic", "fail_open": true});
    assert_eq!(s.call("PUT", "/v1/settings/metering", Auth::Bearer(&t.api_key), Some(body)).await.status, 200);
    let r = claude(&s, &t, &user, &claude_body("hi", 10, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-tenantry-metering"], "unavailable");
    assert!(!r.headers().contains_key("x-tenantry-tokens-remaining"));
}

#[tokio::test]
async fn a_stream_reaches_the_client_event_by_event_as_the_upstream_sends_it() {
    let s = start().await;
    let (t, user) = setup(&s, plan(100_000, 100)).await;
    // 150 ms between events: 12 events take about 2 s upstream.
    sandbox(&s, "anthropic", "POST", "/sandbox/faults", Some(json!({"slow_ms": 150}))).await;
    let started = std::time::Instant::now();
    let mut r = claude(&s, &t, &user, &claude_body("slowly [sandbox:tokens=6]", 50, true)).await;
    assert_eq!(r.status(), 200);
    let mut first = None;
    let mut text = String::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        first.get_or_insert_with(|| started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (first, all) = (first.unwrap_or_default(), started.elapsed());
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(all >= std::time::Duration::from_millis(1500), "the upstream was slow: {all:?}");
    assert!(first * 3 < all, "the first event came at {first:?}, long before the end at {all:?}");
}
