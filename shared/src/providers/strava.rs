//! Strava: comma-separated scopes, the athlete in the token response, deauthorize to revoke.
use serde_json::Value;

use super::{ProviderId, Revoke};

pub struct Strava;

impl super::Provider for Strava {
    fn id(&self) -> ProviderId {
        ProviderId::Strava
    }
    fn display_name(&self) -> &'static str {
        "Strava"
    }
    fn authorize_url(&self) -> &'static str {
        "https://www.strava.com/oauth/authorize"
    }
    fn token_url(&self) -> &'static str {
        "https://www.strava.com/oauth/token"
    }
    fn default_scopes(&self) -> &'static [&'static str] {
        &["read", "activity:read_all"]
    }
    fn scope_separator(&self) -> &'static str {
        ","
    }
    fn authorize_params(&self) -> &'static [(&'static str, &'static str)] {
        &[("approval_prompt", "auto")]
    }
    fn user_id_from_token(&self, extra: &serde_json::Map<String, Value>) -> Option<String> {
        extra.get("athlete").and_then(|a| a.get("id")).map(ToString::to_string)
    }
    fn revoke(&self) -> Revoke {
        Revoke::BearerPost("https://www.strava.com/oauth/deauthorize")
    }
}
