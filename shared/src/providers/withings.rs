//! Withings: the token endpoint takes `action=requesttoken` and answers HTTP 200 with
//! `{"status": 0, "body": {...tokens, userid}}`; a non-zero status is an error even with HTTP 200.
use serde_json::{Value, json};

use super::ProviderId;

pub struct Withings;

impl super::Provider for Withings {
    fn id(&self) -> ProviderId {
        ProviderId::Withings
    }
    fn display_name(&self) -> &'static str {
        "Withings"
    }
    fn authorize_url(&self) -> &'static str {
        "https://account.withings.com/oauth2_user/authorize2"
    }
    fn token_url(&self) -> &'static str {
        "https://wbsapi.withings.net/v2/oauth2"
    }
    fn default_scopes(&self) -> &'static [&'static str] {
        &["user.info", "user.metrics", "user.activity"]
    }
    fn scope_separator(&self) -> &'static str {
        ","
    }
    fn token_params(&self) -> &'static [(&'static str, &'static str)] {
        &[("action", "requesttoken")]
    }
    fn normalize_token_response(&self, body: Value) -> Value {
        match body.get("status").and_then(Value::as_i64) {
            Some(0) => body.get("body").cloned().unwrap_or(Value::Null),
            Some(status) => json!({
                "error": "invalid_grant",
                "error_description": format!("Withings status {status}: {}", body.get("error").and_then(Value::as_str).unwrap_or("error")),
            }),
            None => body,
        }
    }
    fn user_id_from_token(&self, extra: &serde_json::Map<String, Value>) -> Option<String> {
        extra.get("userid").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    }
}
