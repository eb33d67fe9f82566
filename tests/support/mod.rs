//! Test support: each test starts its own local stack (fresh resource prefix in the shared moto, its own
//! port), its own JWKS server, and talks to it over HTTP like a tenant would.

pub mod connect;
pub mod hooks;
pub mod meter;

use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shared::jwt::JwtVerifier;
use tenantry_local::{Options, Stack};

pub const RSA_PEM: &str = include_str!("../fixtures/jwt/rsa.pem");
pub const RSA_OTHER_PEM: &str = include_str!("../fixtures/jwt/rsa_other.pem");
pub const EC_PEM: &str = include_str!("../fixtures/jwt/ec.pem");
pub const JWKS: &str = include_str!("../fixtures/jwt/jwks.json");

/// A running stack and a client for it.
pub struct TestStack {
    pub base: String,
    pub operator_key: String,
    pub http: reqwest::Client,
    pub prefix: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
    /// The issuer URL of this test's JWKS server (its JWKS is at `{issuer}/jwks.json`).
    pub issuer: String,
    /// This test's sandbox providers by provider id (`oura` -> `http://127.0.0.1:PORT`), and the sandbox
    /// LLM APIs (`anthropic`, `openai`) and Stripe (`stripe`).
    pub sandboxes: std::collections::HashMap<String, String>,
    /// The KMS key of this stack's token vault.
    pub token_key_id: String,
    /// What each logical resource of template.yaml became (table names, queue URLs, ...).
    pub refs: std::collections::HashMap<String, String>,
    /// The scheduled functions' runs, to run one now instead of waiting for its tick.
    pub ticks: std::collections::HashMap<String, tenantry_local::workers::TickHandler>,
}

/// A tenant made through the operator API.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub api_key: String,
    pub audience: String,
}

/// Starts a stack in the moto that `./dev test` runs (`AWS_ENDPOINT_URL`).
pub async fn start() -> TestStack {
    start_with_env(std::collections::HashMap::new()).await
}

/// [`start`], with extra environment for every function (e.g. shorter retry windows).
pub async fn start_with_env(env: std::collections::HashMap<String, String>) -> TestStack {
    match try_start(env, None, true).await {
        Ok(s) => s,
        Err(e) => panic!("could not start the local stack: {e:?}\n(run the tests with ./dev test, which starts moto)"),
    }
}

/// [`start`] on a given SDK configuration (the bench counts its requests); `ticks: false` leaves the
/// schedules (the sync scheduler) unticked, so only what the caller queues runs.
pub async fn start_on(sdk: aws_config::SdkConfig, ticks: bool) -> TestStack {
    match try_start(std::collections::HashMap::new(), Some(sdk), ticks).await {
        Ok(s) => s,
        Err(e) => panic!("could not start the local stack: {e:?}\n(run the tests with ./dev test, which starts moto)"),
    }
}

async fn try_start(
    mut extra_env: std::collections::HashMap<String, String>,
    sdk: Option<aws_config::SdkConfig>,
    ticks: bool,
) -> anyhow::Result<TestStack> {
    shared::telemetry::init();
    std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL is not set")?;
    let prefix = format!("t{}", &ulid::Ulid::new().to_string().to_lowercase()[16..]);
    let operator_key = format!("op_test_{}", ulid::Ulid::new());
    let sdk = match sdk {
        Some(sdk) => sdk,
        None => shared::aws::sdk_config().await,
    };
    let jwt = JwtVerifier::with_settings(shared::jwt::http_client(), Duration::from_secs(600), Duration::ZERO, 5);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut sandboxes = std::collections::HashMap::new();
    let running = sandbox::start_all(std::net::Ipv4Addr::LOCALHOST.into()).await?;
    for r in &running {
        extra_env.insert(r.provider.env_var().to_owned(), r.url.clone());
        sandboxes.insert(r.provider.id().to_owned(), r.url.clone());
    }
    // The LLM APIs behind the meter, by id too (`anthropic`, `openai`); a test's own env wins.
    let llms = sandbox::llm::start_all(std::net::Ipv4Addr::LOCALHOST.into()).await?;
    for r in &llms {
        extra_env.entry(r.llm.env_var().to_owned()).or_insert_with(|| r.url.clone());
        sandboxes.insert(r.llm.id().to_owned(), r.url.clone());
    }
    // Stripe for billing, by id too (`stripe`); a test's own env wins.
    let stripe = sandbox::stripe::start((std::net::Ipv4Addr::LOCALHOST, 0).into()).await?;
    extra_env.entry(sandbox::stripe::ENV_VAR.to_owned()).or_insert_with(|| stripe.url.clone());
    sandboxes.insert("stripe".to_owned(), stripe.url.clone());
    let options = Options {
        prefix: prefix.clone(),
        operator_key: operator_key.clone(),
        jwt: Some(jwt),
        public_url: base.clone(),
        extra_env,
    };
    let mut stack = Stack::start(sdk.clone(), options).await?;
    let runs = stack.workers.ticks.clone();
    if !ticks {
        stack.workers.ticks.clear();
    }
    let table = stack.provisioned.refs.get("TenancyTable").cloned().context("no TenancyTable")?;
    let token_key_id = stack.provisioned.refs.get("TokenKey").cloned().context("no TokenKey")?;
    let refs = stack.provisioned.refs.clone();
    // The sandboxes live as long as the test's runtime: they stop when `running` is dropped with it.
    tokio::spawn(async move {
        let _keep = (running, llms, stripe);
        std::future::pending::<()>().await
    });
    // Sync jobs run as they would in Lambda; the pollers end with the test's runtime.
    let _workers = stack.spawn_workers();
    tokio::spawn(stack.serve(listener));
    let issuer = serve_jwks().await?;
    Ok(TestStack {
        base,
        operator_key,
        http: reqwest::Client::new(),
        prefix,
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        table,
        issuer,
        sandboxes,
        token_key_id,
        refs,
        ticks: runs,
    })
}

/// Serves the fixture JWKS on its own port; returns the issuer URL.
async fn serve_jwks() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/jwks.json", axum::routing::get(|| async { ([("content-type", "application/json")], JWKS) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(issuer)
}

/// A response: status and parsed JSON body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the DESIGN.md error shape and returns the code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "body: {}", self.body);
        let e = &self.body["error"];
        assert!(e["message"].as_str().is_some_and(|m| m.len() > 10), "a message that says what to fix: {e}");
        assert!(e["request_id"].as_str().is_some_and(|r| !r.is_empty()), "a request id: {e}");
    }
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    ApiKeyHeader(&'a str),
}

impl TestStack {
    pub async fn call(&self, method: &str, path: &str, auth: Auth<'_>, body: Option<Value>) -> Reply {
        let mut req =
            self.http.request(method.parse().unwrap_or(reqwest::Method::GET), format!("{}{}", self.base, path));
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::ApiKeyHeader(k) => req.header("x-api-key", k),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Reply { status, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
    }

    /// Runs a scheduled function (by logical id) once, now.
    pub async fn tick(&self, function: &str) {
        let run = self.ticks.get(function).unwrap_or_else(|| panic!("no scheduled function {function}"));
        if let Err(e) = run().await {
            panic!("{function} failed: {e:?}");
        }
    }

    /// A fresh account of this test's Stripe sandbox: `{account, secret_key, prices: {lookup key: id}}`.
    pub async fn stripe_account(&self) -> Value {
        let url = format!("{}/sandbox/accounts", self.sandboxes["stripe"]);
        let r = self.http.post(url).send().await.unwrap_or_else(|e| panic!("{e}"));
        r.json().await.unwrap_or_default()
    }

    pub async fn operator(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Auth::Bearer(&self.operator_key), body).await
    }

    /// Creates a tenant with a unique name and sets its login to this test's JWKS, audience unique too.
    pub async fn tenant(&self, name: &str) -> TestTenant {
        let r = self.operator("POST", "/admin/v1/tenants", Some(json!({"name": name}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let t = TestTenant {
            id: r.body["id"].as_str().unwrap_or_default().to_owned(),
            api_key: r.body["api_key"].as_str().unwrap_or_default().to_owned(),
            audience: format!("aud-{}", r.body["id"].as_str().unwrap_or_default()),
        };
        let auth =
            json!({"issuer": self.issuer, "jwks_url": format!("{}/jwks.json", self.issuer), "audience": t.audience});
        let r = self.call("PUT", "/v1/settings/auth", Auth::Bearer(&t.api_key), Some(auth)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        t
    }

    pub async fn user(&self, tenant: &TestTenant, external_id: &str) -> Value {
        let r = self
            .call("POST", "/v1/users", Auth::Bearer(&tenant.api_key), Some(json!({"external_id": external_id})))
            .await;
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        r.body
    }

    /// Every item of the tenancy table, for "nothing changed" checks.
    pub async fn table_snapshot(&self) -> Vec<String> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = match self.dynamodb.scan().table_name(&self.table).set_exclusive_start_key(start).send().await {
                Ok(o) => o,
                Err(e) => panic!("scan failed: {e:?}"),
            };
            for item in out.items() {
                let mut pairs: Vec<String> = item
                    .iter()
                    .filter(|(k, _)| k.as_str() != "last_used_at")
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect();
                pairs.sort();
                items.push(pairs.join(","));
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        items.sort();
        items
    }
}

/// Messages in a queue, visible, in flight or delayed (SQS's approximate counts).
pub async fn messages_waiting(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .ok()
        .and_then(|o| o.attributes)
        .unwrap_or_default();
    attrs
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("ApproximateNumberOfMessages"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// Claims of a test token; `exp` and `nbf` relative to now.
pub struct Claims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: &'a str,
    pub exp_in: i64,
    pub nbf_in: Option<i64>,
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims_json(c: &Claims<'_>) -> Value {
    let mut v = json!({"iss": c.iss, "aud": c.aud, "sub": c.sub, "exp": now() + c.exp_in, "iat": now()});
    if let Some(nbf) = c.nbf_in {
        v["nbf"] = json!(now() + nbf);
    }
    v
}

/// A token signed with one of the fixture keys.
pub fn token(alg: Algorithm, pem: &str, kid: &str, c: &Claims<'_>) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    match key.and_then(|k| jsonwebtoken::encode(&header, &claims_json(c), &k)) {
        Ok(t) => t,
        Err(e) => panic!("signing a test token: {e}"),
    }
}

/// A well-formed RS256 token for the tenant's login.
pub fn user_token(stack: &TestStack, tenant: &TestTenant, sub: &str) -> String {
    token(
        Algorithm::RS256,
        RSA_PEM,
        "rsa-1",
        &Claims { iss: &stack.issuer, aud: &tenant.audience, sub, exp_in: 600, nbf_in: None },
    )
}
