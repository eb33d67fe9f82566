//! `./dev bench`: what every request pays before any work, measured side by side in one run.
//! - the authorizer's checks in-process: an API key (parse, SHA-256, compare), and JWTs (RS256, ES256)
//!   with the JWKS cached;
//! - whole requests through the local stack (gateway, authorizer, router, moto): a public route, a route
//!   behind an API key, and one behind an end user's JWT. Moto dominates those; compare them to each other.
//!
//! Medians of many runs, with the 10th and 90th percentiles.
//!
//! Then the sync engine's figures (`sync.rs`, docs/benchmarks.md) and the AI meter's (`meter.rs`: latency added
//! over the sandbox LLM, AWS requests per call; `llm_calls=N`). `./dev bench sync` or `./dev bench meter` runs
//! only those;
//! `connections=N` and `jobs=N` size the scheduler and worker runs; `import_mb=N` the Apple Health export sent
//! through the stack.

mod counting;
mod health;
mod meter;
mod sync;

use std::time::{Duration, Instant};

use integration_tests::{Auth, start_on, user_token};

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    (at(0.1), at(0.5), at(0.9))
}

fn row(name: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let (p10, p50, p90) = percentiles(samples);
    println!("| {name:<44} | {n:>6} | {:>10.1?} | {:>10.1?} | {:>10.1?} |", p10, p50, p90);
}

fn time_each<F: FnMut()>(n: usize, mut f: F) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: usize| {
        args.iter().find_map(|a| a.strip_prefix(&format!("{name}=")).and_then(|v| v.parse().ok())).unwrap_or(default)
    };
    // Every SDK client of the stack counts its requests; the schedules are not ticked, so only what the bench
    // queues runs.
    let counter = counting::Counter::default();
    let s = start_on(counter.wrap(&shared::aws::sdk_config().await), false).await;
    let only =
        |part: &str| !["sync", "meter"].iter().any(|p| args.iter().any(|a| a == p)) || args.iter().any(|a| a == part);
    if only("auth") {
        auth(&s).await;
    }
    if only("sync") {
        let (t, oura_user) = sync::requests_per_sync(&s, &counter).await;
        sync::worker_throughput(&s, &t, &oura_user, arg("jobs", 200)).await;
        sync::scheduler_planning(&s, &counter, arg("connections", 5_000)).await;
        health::import_through_moto(&s, arg("import_mb", 50) as u64).await;
    }
    if only("meter") {
        meter::proxy(&s, &counter, arg("llm_calls", 200)).await;
    }
}

async fn auth(s: &integration_tests::TestStack) {
    let t = s.tenant("Bench").await;
    let jwt = user_token(s, &t, "bench-user");
    let presented = t.api_key.clone();

    println!("| {:<44} | {:>6} | {:>10} | {:>10} | {:>10} |", "what", "runs", "p10", "median", "p90");
    println!("|{:-<46}|{:->8}|{:->12}|{:->12}|{:->12}|", "", "", "", "", "");

    let stored = shared::apikey::mint(&shared::ids::TenantId::generate());
    row(
        "API key: parse + SHA-256 + compare",
        time_each(20_000, || {
            let p = shared::apikey::PresentedKey::parse(&presented);
            std::hint::black_box(p.map(|p| p.matches(&stored.secret_hash)));
        }),
    );

    let verifier = shared::jwt::JwtVerifier::new(shared::jwt::http_client());
    let config = shared::jwt::IssuerConfig {
        issuer: s.issuer.clone(),
        jwks_url: format!("{}/jwks.json", s.issuer),
        audience: t.audience.clone(),
    };
    let es = integration_tests::token(
        jsonwebtoken::Algorithm::ES256,
        integration_tests::EC_PEM,
        "ec-1",
        &integration_tests::Claims { iss: &s.issuer, aud: &t.audience, sub: "bench-user", exp_in: 600, nbf_in: None },
    );
    for (name, token) in [("JWT RS256 verify (JWKS cached)", &jwt), ("JWT ES256 verify (JWKS cached)", &es)] {
        let _ = verifier.verify(token, &config).await;
        let mut samples = Vec::new();
        for _ in 0..2_000 {
            let t0 = Instant::now();
            let ok = verifier.verify(token, &config).await.is_ok();
            samples.push(t0.elapsed());
            assert!(ok);
        }
        row(name, samples);
    }

    for (name, path, auth) in [
        ("HTTP GET /openapi.json (no authorizer)", "/openapi.json", Auth::None),
        ("HTTP GET /v1/users (API key)", "/v1/users?limit=1", Auth::ApiKeyHeader(&t.api_key)),
        ("HTTP GET /v1/me (end user JWT)", "/v1/me", Auth::Bearer(&jwt)),
    ] {
        let mut samples = Vec::new();
        for _ in 0..300 {
            let t0 = Instant::now();
            let r = s.call("GET", path, auth.clone(), None).await;
            samples.push(t0.elapsed());
            assert_eq!(r.status, 200, "{name}: {}", r.body);
        }
        row(name, samples);
    }
}
