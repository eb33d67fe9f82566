//! Polar AccessLink: Basic client auth, no refresh token, the user id arrives as `x_user_id`, and the user
//! must be registered (`POST /v3/users`) before any data can be read.
use serde_json::Value;

use super::{AfterConsent, ClientAuth, ProviderId, Revoke};

pub struct Polar;

impl super::Provider for Polar {
    fn id(&self) -> ProviderId {
        ProviderId::Polar
    }
    fn display_name(&self) -> &'static str {
        "Polar"
    }
    fn authorize_url(&self) -> &'static str {
        "https://flow.polar.com/oauth2/authorization"
    }
    fn token_url(&self) -> &'static str {
        "https://polarremote.com/v2/oauth2/token"
    }
    fn default_scopes(&self) -> &'static [&'static str] {
        &["accesslink.read_all"]
    }
    fn client_auth(&self) -> ClientAuth {
        ClientAuth::Basic
    }
    fn user_id_from_token(&self, extra: &serde_json::Map<String, Value>) -> Option<String> {
        extra.get("x_user_id").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    }
    fn revoke(&self) -> Revoke {
        Revoke::BearerDelete("https://www.polaraccesslink.com/v3/users/{user_id}")
    }
    fn after_consent(&self) -> AfterConsent {
        AfterConsent::RegisterUser("https://www.polaraccesslink.com/v3/users")
    }
}
