//! The HTTP side: one request to the Tenantry API with a credential, and its failures in words an operator
//! can act on (the API's own `error.code` and `error.message`, or which URL could not be reached).

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

/// Why a command failed. Each maps to its own exit code (see [`CliError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error.
    #[error("{code} ({status}): {message}{}", request_id.as_deref().map(|r| format!("\n  request id: {r}")).unwrap_or_default())]
    Api { status: u16, code: String, message: String, request_id: Option<String> },
    /// Nothing answered at the API's address.
    #[error(
        "cannot reach the Tenantry API at {url}: {reason}\n  start the local stack with `./dev up`, or point --api (or TENANTRY_API) at a deployed API"
    )]
    Unreachable { url: String, reason: String },
    /// The command cannot be sent as given (a missing credential, a bad URL).
    #[error("{0}")]
    Usage(String),
    /// The API answered something that is not what it documents.
    #[error("unexpected answer from the API: {0}")]
    Protocol(String),
}

impl CliError {
    /// 1 for an API error, 2 for a command that could not be sent, 3 when the API could not be reached.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Api { .. } | CliError::Protocol(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
        }
    }
}

/// A client for one API base URL.
pub struct Api {
    base: Url,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Result<Self, CliError> {
        let base = Url::parse(base).map_err(|e| {
            CliError::Usage(format!("--api {base:?} is not a URL ({e}); for example http://127.0.0.1:3000"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!("--api {base} must be an http:// or https:// URL")));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("tenantry-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { base, http })
    }

    /// The URL of `segments` under the base, each segment percent-encoded (an id can never climb the path).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends one request with `credential` as a bearer token; the JSON body of a 2xx answer (Null when
    /// empty), else the API's error.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        credential: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = self.url(segments);
        let mut req = self.http.request(method.clone(), url.clone()).bearer_auth(credential);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let response = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return match parsed {
                Some(v) => Ok(v),
                None if text.trim().is_empty() => Ok(Value::Null),
                None => {
                    Err(CliError::Protocol(format!("{method} {url} answered {status} with a body that is not JSON")))
                }
            };
        }
        Err(api_error(status.as_u16(), status.canonical_reason(), parsed.as_ref(), &text, &method, &url))
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        let reason = if e.is_timeout() {
            "no answer within 60 seconds".to_owned()
        } else if e.is_connect() {
            format!("could not connect ({})", root_cause(e))
        } else {
            root_cause(e)
        };
        CliError::Unreachable { url: self.base.to_string(), reason }
    }
}

/// The innermost cause: reqwest's own text ("error sending request") says less than the OS's.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An error answer in DESIGN.md's shape (`{"error": {"code", "message", "request_id"}}`), or, from API
/// Gateway itself (an unknown route, a refused authorizer), `{"message"}`, or anything else.
fn api_error(
    status: u16,
    reason: Option<&str>,
    body: Option<&Value>,
    text: &str,
    method: &Method,
    url: &Url,
) -> CliError {
    let error = body.map(|b| &b["error"]);
    if let Some(code) = error.and_then(|e| e["code"].as_str()) {
        return CliError::Api {
            status,
            code: code.to_owned(),
            message: error.and_then(|e| e["message"].as_str()).unwrap_or_default().to_owned(),
            request_id: error.and_then(|e| e["request_id"].as_str()).filter(|r| !r.is_empty()).map(str::to_owned),
        };
    }
    let gateway_message = body.and_then(|b| b["message"].as_str());
    let (code, message) = match (status, gateway_message) {
        (404, Some(_)) => (
            "route_not_found".to_owned(),
            format!("the API has no route {method} {}; it may not be deployed there yet", url.path()),
        ),
        (_, Some(m)) => (snake(reason.unwrap_or("error")), m.to_owned()),
        (_, None) => {
            let shown: String = text.chars().take(200).collect();
            (snake(reason.unwrap_or("error")), if shown.trim().is_empty() { "(no body)".to_owned() } else { shown })
        }
    };
    CliError::Api { status, code, message, request_id: None }
}

fn snake(reason: &str) -> String {
    reason.to_ascii_lowercase().replace([' ', '-'], "_")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn url() -> Url {
        Url::parse("http://127.0.0.1:3000/v1/exports/exp_1").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_error_in_the_apis_shape_keeps_its_code_message_and_request_id() {
        let body = json!({"error": {"code": "not_found", "message": "no tenant with that id", "request_id": "req1"}});
        let e = api_error(404, Some("Not Found"), Some(&body), "", &Method::GET, &url());
        assert_eq!(e.to_string(), "not_found (404): no tenant with that id\n  request id: req1");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn a_gateway_404_names_the_missing_route() {
        let e = api_error(404, Some("Not Found"), Some(&json!({"message": "Not Found"})), "", &Method::GET, &url());
        assert_eq!(
            e.to_string(),
            "route_not_found (404): the API has no route GET /v1/exports/exp_1; it may not be deployed there yet"
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_shown_as_text() {
        let e = api_error(502, Some("Bad Gateway"), None, "upstream died", &Method::GET, &url());
        assert_eq!(e.to_string(), "bad_gateway (502): upstream died");
    }

    #[test]
    fn ids_are_percent_encoded_path_segments_under_the_base_path() {
        let api = Api::new("https://api.example.com/prod/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            api.url(&["admin", "v1", "tenants", "../x?y"]).as_str(),
            "https://api.example.com/prod/admin/v1/tenants/..%2Fx%3Fy"
        );
    }

    #[test]
    fn an_api_url_must_be_http_or_https() {
        assert!(matches!(Api::new("127.0.0.1:3000"), Err(CliError::Usage(_))));
        assert!(matches!(Api::new("ftp://x"), Err(CliError::Usage(_))));
        assert!(Api::new("http://127.0.0.1:3000").is_ok());
    }
}
