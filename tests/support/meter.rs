//! A tenant ready for the AI meter: both LLM keys set, a default plan, one user.

use serde_json::{Value, json};

use crate::{Auth, TestStack, TestTenant};

pub const ANTHROPIC_KEY: &str = "sk-ant-tenant-key-abcd";
pub const OPENAI_KEY: &str = "sk-tenant-openai-key-wxyz";

/// `{"monthly_tokens", "requests_per_minute"}`.
pub fn plan(monthly_tokens: u64, rpm: u32) -> Value {
    json!({"monthly_tokens": monthly_tokens, "requests_per_minute": rpm})
}

/// A tenant with both LLM keys, `plan` as its default plan `basic`, and one user; returns the user's id.
pub async fn metered_tenant(s: &TestStack, plan: Value) -> (TestTenant, String) {
    let t = s.tenant("Meter Co").await;
    let key = Auth::Bearer(&t.api_key);
    for (api, k) in [("anthropic", ANTHROPIC_KEY), ("openai", OPENAI_KEY)] {
        let r = s.call("PUT", &format!("/v1/settings/llm/{api}"), key.clone(), Some(json!({"api_key": k}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["key_hint"], format!("…{}", &k[k.len() - 4..]));
    }
    let r = s.call("PUT", "/v1/settings/plans/basic", key.clone(), Some(plan)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("PUT", "/v1/settings/metering", key.clone(), Some(json!({"default_plan": "basic"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = s.user(&t, "chatty").await["id"].as_str().unwrap_or_default().to_owned();
    (t, user)
}

pub fn claude_body(text: &str, max_tokens: u64, stream: bool) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": max_tokens, "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

pub fn gpt_body(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// `POST .../v1/users/{user}/ai/anthropic/v1/messages` with the tenant's key, as the Anthropic SDK would.
pub async fn claude(s: &TestStack, t: &TestTenant, user: &str, body: &Value) -> reqwest::Response {
    let url = format!("{}/v1/users/{user}/ai/anthropic/v1/messages", s.base);
    let req = s.http.post(url).header("x-api-key", &t.api_key).header("anthropic-version", "2023-06-01").json(body);
    req.send().await.unwrap_or_else(|e| panic!("{e}"))
}

/// `POST .../v1/users/{user}/ai/openai/v1/chat/completions` with the tenant's key.
pub async fn gpt(s: &TestStack, t: &TestTenant, user: &str, body: &Value) -> reqwest::Response {
    let url = format!("{}/v1/users/{user}/ai/openai/v1/chat/completions", s.base);
    s.http.post(url).bearer_auth(&t.api_key).json(body).send().await.unwrap_or_else(|e| panic!("{e}"))
}

/// A call to a sandbox LLM's own routes (`/sandbox/state`, `/sandbox/faults`); its JSON answer.
pub async fn sandbox(s: &TestStack, llm: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut req = s.http.request(method.parse().unwrap_or(reqwest::Method::GET), format!("{}{path}", s.sandboxes[llm]));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    r.json().await.unwrap_or(Value::Null)
}
