//! The AI meter under load: 1,000 concurrent metered calls against the sandbox LLMs, with injected 529s / 503s,
//! 429s, 500s, hangs (timeouts), streams the upstream drops and clients that leave mid-stream. Afterwards the
//! usage counters and the ledger equal what the upstreams reported, call by call (nothing lost, nothing counted
//! twice), and no user got more calls through than their plan's rate in any 60 seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::{Auth, TestStack, TestTenant, start_with_env};
use serde_json::{Value, json};
use shared::ids::{TenantId, UserId};
use shared::meter::{MeterStore, Period};

const ANTHROPIC_KEY: &str = "sk-ant-load-key-abcd";
const OPENAI_KEY: &str = "sk-load-openai-key-wxyz";
const USERS: usize = 50;
const CALLS: usize = 1000;
/// The rate of the "tight" plan, which half the users are on: their 20 calls each come within about a minute, so
/// it binds.
const TIGHT_RPM: usize = 10;
/// Calls in flight at once. All 1,000 are spawned together and this many hold a connection to the stack at a
/// time: each makes about eight DynamoDB requests on its own connection to moto, whose listen backlog is 128.
/// At 200 in flight, connects to moto overflowed it and timed out (the meter answered 500/503 for its own store,
/// not for the upstream); 100 keeps moto, the bottleneck on two shared cores, saturated all the same.
const IN_FLIGHT: usize = 100;

/// What one call did, as its client saw it.
#[derive(Debug, Clone)]
struct Outcome {
    user: usize,
    anthropic: bool,
    stream: bool,
    /// The client read a couple of chunks and then dropped the response.
    left_early: bool,
    status: u16,
    /// `error.code` of the meter's own errors (they carry `error.request_id`); `None` for the upstream's.
    meter_code: Option<String>,
    retry_after: Option<u64>,
    /// The body ended with an error (a stream the upstream dropped).
    broken: bool,
    sent: Instant,
    answered: Instant,
}

impl Outcome {
    /// The call passed the meter's rate check (every refusal the meter makes here is its 429).
    fn admitted(&self) -> bool {
        !(self.status == 429 && self.meter_code.is_some())
    }
}

/// One call of the mix, derived from its number so every run sends the same requests.
fn request(i: usize) -> (bool, bool, bool, Value) {
    let anthropic = (i / USERS).is_multiple_of(2);
    let kind = (i / (2 * USERS)) % 5;
    let (stream, left_early) = (kind >= 2, kind == 4);
    let tokens = 3 + (i * 7) % 29;
    let cache_read = if i.is_multiple_of(3) { 10 + i % 13 } else { 0 };
    let directive = if anthropic && i.is_multiple_of(7) {
        format!("[sandbox:tokens={tokens},cache_read={cache_read},cache_write=5]")
    } else {
        format!("[sandbox:tokens={tokens},cache_read={cache_read}]")
    };
    let text = format!("Load call number {i}, tell me something {directive}");
    let mut body = json!({"stream": stream, "messages": [{"role": "user", "content": text}]});
    if anthropic {
        body["model"] = json!("claude-haiku-4-5");
        // Some limits below the reply's length: the sandbox caps the reply, the meter counts what it reports.
        body["max_tokens"] = json!(20 + i % 30);
    } else {
        body["model"] = json!("gpt-4o-mini");
        if i % 3 == 1 {
            body["max_completion_tokens"] = json!(25);
        }
        if stream && i.is_multiple_of(4) {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    (anthropic, stream, left_early, body)
}

async fn call(
    s: Arc<TestStack>,
    tenant: Arc<TestTenant>,
    (user, uid): (usize, String),
    (anthropic, stream, left_early, body): (bool, bool, bool, Value),
    sem: Arc<tokio::sync::Semaphore>,
) -> Outcome {
    let what = body["messages"][0]["content"].as_str().unwrap_or("").to_owned();
    let _permit = sem.acquire_owned().await.unwrap_or_else(|e| panic!("{e}"));
    let url = if anthropic {
        format!("{}/v1/users/{uid}/ai/anthropic/v1/messages", s.base)
    } else {
        format!("{}/v1/users/{uid}/ai/openai/v1/chat/completions", s.base)
    };
    let req = s.http.post(url).timeout(Duration::from_secs(180)).json(&body);
    let req = if anthropic {
        req.header("x-api-key", &tenant.api_key).header("anthropic-version", "2023-06-01")
    } else {
        req.bearer_auth(&tenant.api_key)
    };
    let sent = Instant::now();
    let mut r = req.send().await.unwrap_or_else(|e| panic!("{what:?} got no answer: {e:?}"));
    let answered = Instant::now();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let (mut meter_code, mut broken) = (None, false);
    if status != 200 {
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if body["error"]["request_id"].is_string() {
            meter_code = body["error"]["code"].as_str().map(str::to_owned);
        }
    } else if stream && left_early {
        // Two chunks, then the client goes away mid-stream.
        for _ in 0..2 {
            if !matches!(r.chunk().await, Ok(Some(_))) {
                break;
            }
        }
        drop(r);
    } else {
        broken = r.bytes().await.is_err();
    }
    Outcome { user, anthropic, stream, left_early, status, meter_code, retry_after, broken, sent, answered }
}

async fn sandbox(s: &TestStack, llm: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut req = s.http.request(method.parse().unwrap_or(reqwest::Method::GET), format!("{}{path}", s.sandboxes[llm]));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    r.json().await.unwrap_or(Value::Null)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn attr_n(item: &HashMap<String, AttributeValue>, key: &str) -> u64 {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn attr_s<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> &'a str {
    item.get(key).and_then(|v| v.as_s().ok()).map_or("", String::as_str)
}

/// One response's usage in the meter's terms: (input without cache, output, cache read, cache write, complete).
type Usage5 = (u64, u64, u64, u64, bool);

/// The sandbox's record of each 200 it sent, in the meter's terms (OpenAI's `prompt_tokens` include the cached
/// tokens; the meter's input does not), as a sorted multiset.
fn sandbox_records(state: &Value, openai: bool) -> Vec<Usage5> {
    let mut out: Vec<Usage5> = state["responses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let (input, cache_read) = (n(&r["input_tokens"]), n(&r["cache_read_input_tokens"]));
            let input = if openai { input - cache_read } else { input };
            let complete = r["complete"].as_bool().unwrap_or(false);
            (input, n(&r["output_tokens"]), cache_read, n(&r["cache_creation_input_tokens"]), complete)
        })
        .collect();
    out.sort();
    out
}

async fn usage(s: &TestStack, t: &TestTenant, user: &str) -> Value {
    let r = s.call("GET", &format!("/v1/users/{user}/usage"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// A tenant with both LLM keys, a roomy default plan, a tight plan for every other user, and the users.
async fn setup(s: &TestStack) -> (TestTenant, Vec<String>) {
    let t = s.tenant("Load Co").await;
    let key = Auth::Bearer(&t.api_key);
    for (api, k) in [("anthropic", ANTHROPIC_KEY), ("openai", OPENAI_KEY)] {
        let r = s.call("PUT", &format!("/v1/settings/llm/{api}"), key.clone(), Some(json!({"api_key": k}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let roomy = json!({"monthly_tokens": 100_000_000u64, "requests_per_minute": 1000});
    let tight = json!({"monthly_tokens": 100_000_000u64, "requests_per_minute": TIGHT_RPM});
    for (name, plan) in [("roomy", roomy), ("tight", tight)] {
        let r = s.call("PUT", &format!("/v1/settings/plans/{name}"), key.clone(), Some(plan)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = s.call("PUT", "/v1/settings/metering", key.clone(), Some(json!({"default_plan": "roomy"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut users = Vec::with_capacity(USERS);
    for u in 0..USERS {
        let id = s.user(&t, &format!("load-{u}")).await["id"].as_str().unwrap_or_default().to_owned();
        if u % 2 == 1 {
            let r = s.call("PUT", &format!("/v1/users/{id}/plan"), key.clone(), Some(json!({"plan": "tight"}))).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        users.push(id);
    }
    (t, users)
}

fn tight(user: usize) -> bool {
    user % 2 == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_with_faults_and_leaving_clients_are_each_counted_once_and_held_to_the_rate() {
    let env = HashMap::from([
        // The breaker would turn later calls away unseen by the upstream; here every call is to reach it.
        ("METER_BREAKER_THRESHOLD".to_owned(), "1000000".to_owned()),
        // Hung requests become timeouts quickly.
        ("METER_FIRST_BYTE_TIMEOUT_MS".to_owned(), "1500".to_owned()),
    ]);
    let s = Arc::new(start_with_env(env).await);
    let (t, users) = setup(&s).await;
    let t = Arc::new(t);
    // Each user is seen once before the burst. Moto, unlike DynamoDB, does not make a conditional write that
    // creates an item atomic: two first calls of a user at once can both pass `attribute_not_exists` and the
    // later write overwrites the earlier (seen here as 11 calls in a 10-a-minute window).
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let warm_up = |u: usize| {
        let body = json!({"model": "claude-haiku-4-5", "max_tokens": 10, "stream": false,
                          "messages": [{"role": "user", "content": format!("Hello from {u} [sandbox:tokens=5]")}]});
        call(s.clone(), t.clone(), (u, users[u].clone()), (true, false, false, body), sem.clone())
    };
    let mut outcomes = futures::future::join_all((0..USERS).map(warm_up)).await;
    assert!(outcomes.iter().all(|o| o.status == 200), "{outcomes:?}");
    let mix = json!({"random": {"seed": 6, "overloaded": 0.05, "hang": 0.02, "drop": 0.05, "rate_limited": 0.02,
                                "server_error": 0.01},
                     // Streams take a while, so clients leave while the upstream is still sending.
                     "slow_ms": 5});
    for llm in ["anthropic", "openai"] {
        let faults = sandbox(&s, llm, "POST", "/sandbox/faults", Some(mix.clone())).await;
        assert!(faults["random"].is_object(), "{faults}");
    }

    // WHEN 1,000 calls go out at once
    let began = Instant::now();
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let user = (i % USERS, users[i % USERS].clone());
            tokio::spawn(call(s.clone(), t.clone(), user, request(i), sem.clone()))
        })
        .collect();
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|e| panic!("a call task failed: {e}")));
    }
    let fired = began.elapsed();

    // AND every reservation is settled or released (a stream whose client left settles after it has gone)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut usages = Vec::with_capacity(USERS);
    loop {
        usages.clear();
        for u in &users {
            usages.push(usage(&s, &t, u).await);
        }
        let in_flight: u64 = usages.iter().map(|u| n(&u["in_flight_tokens"])).sum();
        if in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{in_flight} tokens still reserved a minute after the last call");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = began.elapsed();

    // THEN every answer is one the meter or the upstream meant
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u64;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for o in &outcomes {
        let api = if o.anthropic { "anthropic" } else { "openai" };
        let from = o.meter_code.as_deref().unwrap_or("upstream");
        *by_kind.entry(format!("{api} {} {from}", o.status)).or_default() += 1;
    }
    eprintln!("{CALLS} calls answered in {fired:?}, settled in {settled:?}: {by_kind:#?}");
    for o in &outcomes {
        let expected = match (o.status, o.meter_code.as_deref(), o.anthropic) {
            (200, None, _) => true,
            (429, Some("rate_limited"), _) => o.retry_after.is_some_and(|s| (1..=70).contains(&s)),
            (429, None, _) => o.retry_after.is_some(),
            (503, Some("upstream_timeout"), _) => true,
            (529, None, true) | (500, None, _) | (503, None, false) => true,
            _ => false,
        };
        assert!(expected, "an unexpected answer: {o:?}");
    }
    assert!(count(&|o| o.status == 429 && o.meter_code.is_some()) > 0, "the tight plan's rate never bound");

    // AND per API, what reached the upstream is what the clients saw come back
    let states = [
        sandbox(&s, "anthropic", "GET", "/sandbox/state", None).await,
        sandbox(&s, "openai", "GET", "/sandbox/state", None).await,
    ];
    for (state, anthropic) in states.iter().zip([true, false]) {
        let mine = |f: &dyn Fn(&Outcome) -> bool| count(&|o: &Outcome| o.anthropic == anthropic && f(o));
        let upstream_said = |status: u16| mine(&|o| o.status == status && o.meter_code.is_none());
        for (status, seen) in state["by_status"].as_object().into_iter().flatten() {
            assert_eq!(upstream_said(status.parse().unwrap_or(0)), n(seen), "status {status}: {}", state["by_status"]);
        }
        let timeouts = mine(&|o| o.meter_code.as_deref() == Some("upstream_timeout"));
        assert_eq!(timeouts, n(&state["hung"]), "every hung request, and only those, timed out");
        assert_eq!(mine(&|o| o.admitted()), n(&state["requests"]), "every admitted call reached the upstream once");
        assert!(n(&state["hung"]) > 0 && n(&state["dropped"]) > 0, "the mix injected hangs and drops: {state}");
        let broken = mine(&|o| o.broken);
        assert!(broken > 0 && broken <= n(&state["dropped"]), "{broken} clients saw a broken stream");
    }

    // AND the usage counters, summed over users, equal what the upstreams reported
    let (a, o) = (&states[0]["reported"], &states[1]["reported"]);
    let reported = (
        n(&a["input_tokens"]) + n(&o["input_tokens"]) - n(&o["cache_read_input_tokens"]),
        n(&a["output_tokens"]) + n(&o["output_tokens"]),
        n(&a["cache_read_input_tokens"]) + n(&a["cache_creation_input_tokens"]) + n(&o["cache_read_input_tokens"]),
    );
    let sum = |key: &str| usages.iter().map(|u| n(&u[key])).sum::<u64>();
    assert_eq!((sum("input_tokens"), sum("output_tokens"), sum("cache_tokens")), reported);
    let responses: u64 = states.iter().map(|s| s["responses"].as_array().map_or(0, |r| r.len() as u64)).sum();
    assert_eq!(sum("requests"), responses, "one counted request per answer the upstream began");

    // AND the ledger holds one entry per upstream answer, with that answer's usage, and sums to the counters
    let period = Period::parse(usages[0]["period"].as_str().unwrap_or("")).unwrap_or_else(|e| panic!("{e}"));
    let store = MeterStore::new(s.dynamodb.clone(), s.refs["MeterTable"].clone());
    let tenant = TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e:?}"));
    let (mut ids, mut ledger_anthropic, mut ledger_openai) = (HashSet::new(), Vec::new(), Vec::new());
    for (user, u) in users.iter().zip(&usages) {
        let uid = UserId::parse(user).unwrap_or_else(|e| panic!("{e:?}"));
        let entries = store.ledger(&tenant, &uid, period).await.unwrap_or_else(|e| panic!("{e:?}"));
        let mut sums = [0u64; 4];
        for e in &entries {
            assert_eq!(attr_s(e, "kind"), "llm");
            assert!(ids.insert(attr_s(e, "id").to_owned()), "a ledger id twice: {e:?}");
            let row: Usage5 = (
                attr_n(e, "input_tokens"),
                attr_n(e, "output_tokens"),
                attr_n(e, "cache_read_tokens"),
                attr_n(e, "cache_write_tokens"),
                e.get("complete").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
            );
            assert_eq!(attr_n(e, "tokens"), row.0 + row.1 + row.2 + row.3, "{e:?}");
            for (sum, v) in sums.iter_mut().zip([row.0, row.1, row.2 + row.3, attr_n(e, "tokens")]) {
                *sum += v;
            }
            match attr_s(e, "provider") {
                "anthropic" => ledger_anthropic.push(row),
                "openai" => ledger_openai.push(row),
                other => panic!("a ledger entry for {other}"),
            }
        }
        let counters = [n(&u["input_tokens"]), n(&u["output_tokens"]), n(&u["cache_tokens"]), n(&u["tokens_used"])];
        assert_eq!(sums, counters, "user {user}: the ledger sums to the counters");
        assert_eq!(entries.len() as u64, n(&u["requests"]), "user {user}");
    }
    ledger_anthropic.sort();
    ledger_openai.sort();
    assert_eq!(ledger_anthropic, sandbox_records(&states[0], false), "Anthropic: call by call");
    assert_eq!(ledger_openai, sandbox_records(&states[1], true), "OpenAI: call by call");
    let incomplete = ledger_anthropic.iter().chain(&ledger_openai).filter(|r| !r.4).count() as u64;
    let dropped: u64 = states.iter().map(|s| n(&s["dropped"])).sum();
    assert_eq!(incomplete, dropped, "exactly the dropped streams are recorded incomplete");

    // AND no user got more calls past the meter than their plan allows in any 60 seconds. A call was admitted
    // somewhere between sending and its answer, so any plan + 1 calls all sent and answered within 60 s
    // of each other would prove the rate broken.
    for (user, uid) in users.iter().enumerate() {
        let rpm = if tight(user) { TIGHT_RPM } else { 1000 };
        let mut admitted: Vec<&Outcome> = outcomes.iter().filter(|o| o.user == user && o.admitted()).collect();
        admitted.sort_by_key(|o| o.sent);
        for (i, first) in admitted.iter().enumerate() {
            let inside: Vec<(Duration, Duration)> = admitted[i..]
                .iter()
                .filter(|o| o.answered.duration_since(first.sent) < Duration::from_secs(60))
                .map(|o| (o.sent.duration_since(began), o.answered.duration_since(began)))
                .collect();
            assert!(
                inside.len() <= rpm,
                "user {user} ({}) had {} calls admitted within 60 s on a plan of {rpm}; sent and answered, \
                 from the burst's start: {inside:?}",
                uid,
                inside.len()
            );
        }
        if tight(user) {
            assert!(!admitted.is_empty(), "user {user} got no call through");
        } else {
            assert_eq!(admitted.len(), CALLS / USERS + 1, "user {user} on the roomy plan was never limited");
        }
    }
    let left = count(&|o| o.left_early && o.status == 200);
    assert!(left > 0, "some clients left mid-stream");
    assert!(count(&|o| o.stream) > 0);
}
