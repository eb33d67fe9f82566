//! The official Anthropic and OpenAI Python SDKs (pinned in infra/requirements.txt, installed into .venv by
//! ./dev) against the meter's drop-in proxy: with only their base URL and API key changed they chat, stream, and
//! see the meter's refusals as the errors they raise; the usage the meter counted is what the sandbox reported.

use std::path::PathBuf;
use std::process::Command;

use integration_tests::{Auth, TestStack, TestTenant, start, user_token};
use serde_json::{Value, json};

const ANTHROPIC_KEY: &str = "sk-ant-sdk-key-abcd";
const OPENAI_KEY: &str = "sk-sdk-openai-key-wxyz";

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

async fn put(s: &TestStack, t: &TestTenant, path: &str, body: Value) {
    let r = s.call("PUT", path, Auth::Bearer(&t.api_key), Some(body)).await;
    assert_eq!(r.status, 200, "PUT {path}: {}", r.body);
}

async fn user_on(s: &TestStack, t: &TestTenant, external_id: &str, plan: Option<&str>) -> String {
    let id = s.user(t, external_id).await["id"].as_str().unwrap_or_default().to_owned();
    if let Some(p) = plan {
        put(s, t, &format!("/v1/users/{id}/plan"), json!({"plan": p})).await;
    }
    id
}

async fn sandbox_state(s: &TestStack, llm: &str) -> Value {
    let r = s.http.get(format!("{}/sandbox/state", s.sandboxes[llm])).send().await;
    r.unwrap_or_else(|e| panic!("{e}")).json().await.unwrap_or(Value::Null)
}

/// Runs tests/sdk/meter_sdk.py with the project's Python; its JSON output.
async fn run_sdk_script(env: Vec<(&'static str, String)>) -> Value {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = tests.join("../.venv/bin/python");
    let script = tests.join("sdk/meter_sdk.py");
    assert!(
        python.exists(),
        "{} is missing: run ./dev test (or ./dev up), which creates .venv and installs infra/requirements.txt \
         (the anthropic and openai SDKs among them)",
        python.display()
    );
    let out = tokio::task::spawn_blocking(move || Command::new(&python).arg(&script).envs(env).output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("could not run the SDK script: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "the Python SDKs are not installed in .venv: run ./dev test (or ./dev up) to install infra/requirements.txt\n\
         {stderr}"
    );
    assert!(out.status.success(), "the SDK script failed ({}):\n{stderr}", out.status);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the SDK script printed no JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdks_chat_stream_and_see_refusals_through_the_meter_with_only_url_and_key_changed() {
    let s = start().await;
    let t = s.tenant("SDK Co").await;
    for (api, k) in [("anthropic", ANTHROPIC_KEY), ("openai", OPENAI_KEY)] {
        put(&s, &t, &format!("/v1/settings/llm/{api}"), json!({"api_key": k})).await;
    }
    put(&s, &t, "/v1/settings/plans/basic", json!({"monthly_tokens": 100_000, "requests_per_minute": 100})).await;
    put(&s, &t, "/v1/settings/plans/tiny", json!({"monthly_tokens": 10, "requests_per_minute": 100})).await;
    put(&s, &t, "/v1/settings/plans/slow", json!({"monthly_tokens": 100_000, "requests_per_minute": 1})).await;
    put(&s, &t, "/v1/settings/metering", json!({"default_plan": "basic"})).await;
    let user = user_on(&s, &t, "sdk-user", None).await;
    let broke = user_on(&s, &t, "sdk-broke", Some("tiny")).await;
    let slow = user_on(&s, &t, "sdk-slow", Some("slow")).await;
    let jwt = user_token(&s, &t, "sdk-end-user");

    // WHEN the SDKs call through the meter, as the tenant for a user and as the end user with their login
    let out = run_sdk_script(vec![
        ("METER_BASE", s.base.clone()),
        ("METER_TENANT_KEY", t.api_key.clone()),
        ("METER_USER", user.clone()),
        ("METER_JWT", jwt.clone()),
        ("METER_BROKE_USER", broke),
        ("METER_RATE_USER", slow),
    ])
    .await;
    eprintln!("SDKs {}", out["versions"]);

    // THEN each call came back as the SDK's own types, with the sandbox's usage
    for who in ["as_tenant", "as_end_user"] {
        let a = &out[who]["anthropic"];
        let create = &a["create"];
        assert_eq!((create["type"].as_str(), create["stop_reason"].as_str()), (Some("message"), Some("end_turn")));
        assert_eq!(create["model"], "claude-haiku-4-5-20251001");
        assert_eq!(create["text"].as_str().map(|t| t.split_whitespace().count()), Some(6), "{create}");
        assert_eq!((n(&create["usage"]["output_tokens"]), n(&create["usage"]["cache_read_input_tokens"])), (6, 12));
        let remaining: u64 = create["remaining"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0);
        assert!(remaining > 0 && remaining < 100_000, "the meter's headers reach the SDK: {create}");
        let stream = &a["stream"];
        assert_eq!(stream["text"], stream["final_text"], "{stream}");
        assert_eq!(stream["text"].as_str().map(|t| t.split_whitespace().count()), Some(9));
        assert_eq!((n(&stream["usage"]["output_tokens"]), stream["stop_reason"].as_str()), (9, Some("end_turn")));
        assert!(n(&stream["usage"]["input_tokens"]) > 0);

        let o = &out[who]["openai"];
        let create = &o["create"];
        assert_eq!(
            (create["object"].as_str(), create["finish_reason"].as_str()),
            (Some("chat.completion"), Some("stop"))
        );
        assert_eq!(n(&create["usage"]["completion_tokens"]), 4);
        assert_eq!(n(&create["usage"]["prompt_tokens_details"]["cached_tokens"]), 8);
        let stream = &o["stream"];
        assert_eq!(stream["text"].as_str().map(|t| t.split_whitespace().count()), Some(7), "{stream}");
        assert_eq!(stream["finish_reason"], "stop");
        assert_eq!(n(&stream["usage_chunks"]), 0, "the usage chunk the meter asked for is not shown to the SDK");
        let with_usage = &o["stream_with_usage"];
        assert_eq!(with_usage["text"].as_str().map(|t| t.split_whitespace().count()), Some(5));
        assert_eq!(n(&with_usage["usage"]["completion_tokens"]), 5, "{with_usage}");
    }

    // AND a spent budget and the plan's rate are errors the SDKs raise, with the meter's body and headers
    // (Caught as the SDK's APIStatusError; Anthropic's SDK has a subclass for 402, OpenAI's does not.)
    let refusals = [
        ("anthropic", "anthropic", "PaymentRequiredError"),
        ("openai", "openai", "APIStatusError"),
        ("anthropic_stream", "anthropic", "PaymentRequiredError"),
    ];
    for (k, module, class) in refusals {
        let e = &out["budget_exhausted"][k];
        assert_eq!((e["module"].as_str(), e["class"].as_str(), n(&e["status_code"])), (Some(module), Some(class), 402));
        // OpenAI's SDK keeps only the `error` object as the body, and reads its code into `e.code`.
        let code = if module == "openai" { &e["code"] } else { &e["body"]["error"]["code"] };
        assert_eq!(code, "budget_exhausted", "{k}: {e}");
        assert!(e["reset"].as_str().is_some_and(|r| r.contains("-01T00:00:00")), "{k}: {e}");
    }
    assert!(out["rate_limited"]["first"].is_null(), "{}", out["rate_limited"]);
    let e = &out["rate_limited"]["second"];
    assert_eq!((e["class"].as_str(), n(&e["status_code"])), (Some("RateLimitError"), 429), "{e}");
    assert_eq!(e["body"]["error"]["code"], "rate_limited");
    assert!(e["retry_after"].as_str().and_then(|r| r.parse::<u64>().ok()).is_some_and(|r| (1..=70).contains(&r)));

    // AND the meter counted, per user and for the tenant, exactly what the sandbox reported
    let states = [sandbox_state(&s, "anthropic").await, sandbox_state(&s, "openai").await];
    let (a, o) = (&states[0]["reported"], &states[1]["reported"]);
    let reported = (
        n(&a["input_tokens"]) + n(&o["input_tokens"]) - n(&o["cache_read_input_tokens"]),
        n(&a["output_tokens"]) + n(&o["output_tokens"]),
        n(&a["cache_read_input_tokens"]) + n(&a["cache_creation_input_tokens"]) + n(&o["cache_read_input_tokens"]),
    );
    let tenant = s.call("GET", "/v1/usage", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(tenant.status, 200, "{}", tenant.body);
    let b = &tenant.body;
    assert_eq!((n(&b["input_tokens"]), n(&b["output_tokens"]), n(&b["cache_tokens"])), reported, "{b}");
    // The SDK calls (5 a caller) and the rate-limited user's first call reached the upstreams; nothing else.
    let upstream_calls = n(&states[0]["requests"]) + n(&states[1]["requests"]);
    assert_eq!((n(&b["requests"]), upstream_calls), (11, 11), "{b}");
    let mine = s.call("GET", &format!("/v1/users/{user}/usage"), Auth::Bearer(&t.api_key), None).await;
    let me = s.call("GET", "/v1/me/usage", Auth::Bearer(&jwt), None).await;
    for u in [&mine.body, &me.body] {
        // Output: 6 + 9 (Anthropic), 4 + 7 + 5 (OpenAI); cache: 12 + 8.
        assert_eq!((n(&u["output_tokens"]), n(&u["cache_tokens"]), n(&u["requests"])), (31, 20, 5), "{u}");
        assert_eq!(n(&u["in_flight_tokens"]), 0, "{u}");
    }
}
