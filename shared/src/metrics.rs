//! CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout: Lambda ships stdout to CloudWatch Logs,
//! which turns each line into metrics in the `Tenantry` namespace, no API call and no extra permission needed.
//!
//! Every metric has the dimension set `[Function]` (the deployed function's name, `local` outside Lambda), and
//! one set `[Function, <Dimension>]` for each extra dimension given, `TenantId` mostly. Emitting never fails and
//! never blocks on anything but stdout: a metric that cannot be written is dropped.
//!
//! On in Lambda; off elsewhere (the local stack runs every function in the test process, whose stdout it would
//! flood). `TENANTRY_METRICS=off` turns it off in Lambda, `TENANTRY_METRICS=on` on locally.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The CloudWatch namespace of every Tenantry metric.
pub const NAMESPACE: &str = "Tenantry";

/// CloudWatch units used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// One value of one metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub value: f64,
    pub unit: Unit,
}

impl Metric {
    pub fn count(name: &'static str, n: u64) -> Self {
        // Counts here stay far below 2^53, where f64 is exact.
        Self { name, value: n as f64, unit: Unit::Count }
    }

    pub fn millis(name: &'static str, ms: f64) -> Self {
        Self { name, value: ms, unit: Unit::Milliseconds }
    }
}

/// `n` of `name` for a tenant (if known): the one-liner for counters.
pub fn count(name: &'static str, tenant: &str, n: u64) {
    emit(&[("TenantId", tenant)], &[Metric::count(name, n)]);
}

/// Writes one EMF line with `metrics`, under `[Function]` and `[Function, name]` for each `(name, value)` of
/// `dimensions` whose value is not empty.
pub fn emit(dimensions: &[(&'static str, &str)], metrics: &[Metric]) {
    let capturing = CAPTURING.load(Ordering::Relaxed) > 0;
    if !enabled() && !capturing {
        return;
    }
    let mut line = render(now_millis(), function_name(), dimensions, metrics);
    if capturing && let Ok(mut captured) = CAPTURED.lock() {
        captured.push(line.clone());
    }
    if enabled() {
        line.push('\n');
        // One write of the whole line, so concurrent lines do not interleave; a failed write is dropped.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| match std::env::var("TENANTRY_METRICS").as_deref() {
        Ok("off") => false,
        Ok("on") => true,
        _ => std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    })
}

fn function_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned()))
}

fn now_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

/// The EMF document, one line of JSON. Values that are not finite (JSON has no NaN) are left out.
pub fn render(timestamp_ms: u128, function: &str, dimensions: &[(&'static str, &str)], metrics: &[Metric]) -> String {
    let dimensions: Vec<&(&str, &str)> = dimensions.iter().filter(|(_, value)| !value.is_empty()).collect();
    let metrics: Vec<&Metric> = metrics.iter().filter(|m| m.value.is_finite()).collect();
    let mut out = String::with_capacity(256 + 48 * metrics.len());
    let _ = write!(out, r#"{{"_aws":{{"Timestamp":{timestamp_ms},"CloudWatchMetrics":[{{"Namespace":"{NAMESPACE}","#);
    out.push_str(r#""Dimensions":[["Function"]"#);
    for (name, _) in &dimensions {
        out.push_str(r#",["Function","#);
        push_json_string(&mut out, name);
        out.push(']');
    }
    out.push_str(r#"],"Metrics":["#);
    for (i, metric) in metrics.iter().enumerate() {
        out.push_str(if i == 0 { r#"{"Name":"# } else { r#",{"Name":"# });
        push_json_string(&mut out, metric.name);
        let _ = write!(out, r#","Unit":"{}"}}"#, metric.unit.as_str());
    }
    out.push_str(r#"]}]},"Function":"#);
    push_json_string(&mut out, function);
    for (name, value) in &dimensions {
        out.push(',');
        push_json_string(&mut out, name);
        out.push(':');
        push_json_string(&mut out, value);
    }
    for metric in &metrics {
        out.push(',');
        push_json_string(&mut out, metric.name);
        let _ = write!(out, ":{}", metric.value);
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The coarse kind of an HTTP route (its template, never the raw path), a dimension with few values.
pub fn route_class(route: &str) -> &'static str {
    let mut segments = route.trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some("admin"), _) => "admin",
        (Some("v1"), Some("me")) => "end_user",
        (Some("v1"), _) => "tenant",
        (Some("connect"), _) => "connect",
        (Some("oauth"), _) => "oauth",
        (Some("webhooks"), _) => "webhooks",
        (Some("openapi.json"), _) => "public",
        _ => "other",
    }
}

/// One HTTP request: `Requests`, `Latency`, `Http4xx` and `Http5xx` (0 or 1, so their averages are rates), by
/// tenant and by route class.
pub fn http_request(tenant: &str, route: &str, status: u16, latency_ms: f64) {
    emit(
        &[("TenantId", tenant), ("RouteClass", route_class(route))],
        &[
            Metric::count("Requests", 1),
            Metric::millis("Latency", latency_ms),
            Metric::count("Http4xx", u64::from((400..500).contains(&status))),
            Metric::count("Http5xx", u64::from(status >= 500)),
        ],
    );
}

static CAPTURING: AtomicUsize = AtomicUsize::new(0);
static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Test support: while one is alive, every emitted line is also kept in memory (whether or not stdout gets
/// it). Lines of every thread are kept; tests pick theirs by a tenant id of their own.
pub struct Captured(());

impl Captured {
    #[allow(clippy::new_without_default)]
    pub fn start() -> Self {
        CAPTURING.fetch_add(1, Ordering::Relaxed);
        Self(())
    }

    /// The lines so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let captured = CAPTURED.lock().map(|c| c.clone()).unwrap_or_default();
        captured.iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if CAPTURING.fetch_sub(1, Ordering::Relaxed) == 1
            && let Ok(mut captured) = CAPTURED.lock()
        {
            captured.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_is_the_exact_emf_document_with_a_tenant_dimension() {
        let line = render(
            1_764_400_000_123,
            "tenantry-SyncWorkerFunction-Ab12",
            &[("TenantId", "ten_01J")],
            &[Metric::count("SyncJobsDone", 2), Metric::millis("Latency", 12.5)],
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("a line is JSON");
        assert_eq!(
            parsed,
            json!({
                "_aws": {
                    "Timestamp": 1_764_400_000_123_u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Tenantry",
                        "Dimensions": [["Function"], ["Function", "TenantId"]],
                        "Metrics": [{"Name": "SyncJobsDone", "Unit": "Count"}, {"Name": "Latency", "Unit": "Milliseconds"}]
                    }]
                },
                "Function": "tenantry-SyncWorkerFunction-Ab12",
                "TenantId": "ten_01J",
                "SyncJobsDone": 2,
                "Latency": 12.5
            })
        );
        assert!(!line.contains('\n'), "one line: {line}");
    }

    #[test]
    fn an_unknown_tenant_leaves_out_its_dimension_set_and_odd_text_stays_valid_json() {
        let line = render(
            1,
            "fn \"quoted\"\\\n",
            &[("TenantId", ""), ("RouteClass", "tenant")],
            &[Metric::count("Requests", 1), Metric::millis("Latency", f64::NAN)],
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("a line is JSON");
        assert_eq!(
            parsed["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"], ["Function", "RouteClass"]])
        );
        assert_eq!(parsed["_aws"]["CloudWatchMetrics"][0]["Metrics"], json!([{"Name": "Requests", "Unit": "Count"}]));
        assert_eq!(parsed["Function"], "fn \"quoted\"\\\n");
        assert!(parsed.get("TenantId").is_none() && parsed.get("Latency").is_none(), "{parsed}");
    }

    #[test]
    fn routes_fall_into_a_few_classes() {
        assert_eq!(route_class("/admin/v1/tenants"), "admin");
        assert_eq!(route_class("/v1/me/connections"), "end_user");
        assert_eq!(route_class("/v1/users/{user_id}"), "tenant");
        assert_eq!(route_class("/connect/{link}"), "connect");
        assert_eq!(route_class("/webhooks/{provider}/{tenant_id}"), "webhooks");
        assert_eq!(route_class("/openapi.json"), "public");
        assert_eq!(route_class("unmatched"), "other");
    }

    #[test]
    fn a_capture_sees_emitted_lines_even_when_stdout_is_off() {
        let captured = Captured::start();
        count("ExampleCounted", "ten_capturetest", 3);
        let mine: Vec<_> = captured.lines().into_iter().filter(|l| l["TenantId"] == "ten_capturetest").collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0]["ExampleCounted"], 3);
        assert_eq!(mine[0]["Function"], "local");
    }
}
