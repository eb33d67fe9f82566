//! Counts the AWS requests every SDK client built from one `SdkConfig` sends, by service and operation, and
//! the DynamoDB write request units they would cost.
//!
//! The counter sits in the SDK's HTTP client (`aws_smithy_runtime_api`'s `HttpClient`/`HttpConnector`), the one
//! pluggable layer an `SdkConfig` hands to every client made from it: aws-types' `SdkConfig` carries no
//! interceptors, and the stack builds its clients with `Client::new(&sdk)` in many places (and STS-scoped
//! tenant clients from it), so a per-client `Intercept` would have meant changing production code. Counting at
//! the connector also counts retries, as AWS bills them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;

/// Requests by (service, operation), and DynamoDB write request units (1 per started KB of each item written).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub requests: BTreeMap<(String, String), u64>,
    /// Time spent waiting for each kind of request, summed.
    pub time: BTreeMap<(String, String), std::time::Duration>,
    pub write_units: u64,
    pub items_written: u64,
}

impl Tally {
    pub fn service(&self, service: &str) -> u64 {
        self.requests.iter().filter(|((s, _), _)| s == service).map(|(_, n)| n).sum()
    }

    pub fn op(&self, service: &str, op: &str) -> u64 {
        self.requests.get(&(service.to_owned(), op.to_owned())).copied().unwrap_or(0)
    }

    /// DynamoDB reads: one read request unit per request (a strongly consistent read of up to 4 KB; an
    /// upper bound for the small items and pages a sync reads).
    pub fn read_units(&self) -> u64 {
        ["GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"].iter().map(|op| self.op("dynamodb", op)).sum()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<Mutex<Tally>>);

impl Counter {
    pub fn take(&self) -> Tally {
        match self.0.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => Tally::default(),
        }
    }

    fn record(&self, request: &HttpRequest) {
        let (service, op) = classify(request);
        let (items, units) = if service == "dynamodb" { write_units(&op, request.body().bytes()) } else { (0, 0) };
        if let Ok(mut t) = self.0.lock() {
            *t.requests.entry((service, op)).or_default() += 1;
            t.items_written += items;
            t.write_units += units;
        }
    }

    /// `sdk` with its HTTP client replaced by a counting one (plain HTTP: the bench talks to moto).
    pub fn wrap(&self, sdk: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        let inner = aws_smithy_http_client::Builder::new().build_http();
        sdk.to_builder().http_client(CountingClient { inner, counter: self.clone() }).build()
    }
}

/// Service from the SigV4 credential scope (`.../us-east-1/dynamodb/aws4_request`); operation from
/// `X-Amz-Target` (JSON protocols: DynamoDB, SQS, KMS) or the query protocol's `Action=` (STS).
fn classify(request: &HttpRequest) -> (String, String) {
    let headers = request.headers();
    let service = headers
        .get("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unknown")
        .to_owned();
    let op = match headers.get("x-amz-target") {
        Some(target) => target.rsplit('.').next().unwrap_or(target).to_owned(),
        None => request
            .body()
            .bytes()
            .and_then(|b| url::form_urlencoded::parse(b).find(|(k, _)| k == "Action").map(|(_, v)| v.into_owned()))
            .unwrap_or_else(|| "unknown".to_owned()),
    };
    (service, op)
}

/// Items a DynamoDB write request writes and the write request units they cost (one per started KB; the
/// request's JSON of an item is a little larger than the item, so this leans high). Transactions cost double.
fn write_units(op: &str, body: Option<&[u8]>) -> (u64, u64) {
    let units = |item: &serde_json::Value| (item.to_string().len() as u64).div_ceil(1024).max(1);
    let Some(v) = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) else { return (0, 0) };
    match op {
        "PutItem" => (1, units(&v["Item"])),
        "UpdateItem" | "DeleteItem" => (1, 1),
        "BatchWriteItem" => {
            let writes: Vec<&serde_json::Value> = v["RequestItems"]
                .as_object()
                .map(|tables| tables.values().filter_map(|w| w.as_array()).flatten().collect())
                .unwrap_or_default();
            let u =
                writes.iter().map(|w| if w["PutRequest"].is_object() { units(&w["PutRequest"]["Item"]) } else { 1 });
            (writes.len() as u64, u.sum())
        }
        "TransactWriteItems" => {
            let n = v["TransactItems"].as_array().map_or(0, Vec::len) as u64;
            (n, 2 * n)
        }
        _ => (0, 0),
    }
}

#[derive(Debug)]
struct CountingClient {
    inner: SharedHttpClient,
    counter: Counter,
}

impl HttpClient for CountingClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        CountingConnector { inner: self.inner.http_connector(settings, components), counter: self.counter.clone() }
            .into_shared()
    }
}

#[derive(Debug)]
struct CountingConnector {
    inner: SharedHttpConnector,
    counter: Counter,
}

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let key = classify(&request);
        self.counter.record(&request);
        let (inner, counter) = (self.inner.call(request), self.counter.clone());
        HttpConnectorFuture::new(async move {
            let started = std::time::Instant::now();
            let out = inner.await;
            if let Ok(mut t) = counter.0.lock() {
                *t.time.entry(key).or_default() += started.elapsed();
            }
            out
        })
    }
}
