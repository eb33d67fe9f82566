//! Oura API v2. No PKCE documented; plain OAuth 2 with form client credentials.
use super::{ProviderId, Revoke};

pub struct Oura;

impl super::Provider for Oura {
    fn id(&self) -> ProviderId {
        ProviderId::Oura
    }
    fn display_name(&self) -> &'static str {
        "Oura"
    }
    fn authorize_url(&self) -> &'static str {
        "https://cloud.ouraring.com/oauth/authorize"
    }
    fn token_url(&self) -> &'static str {
        "https://api.ouraring.com/oauth/token"
    }
    fn default_scopes(&self) -> &'static [&'static str] {
        &["email", "personal", "daily", "heartrate", "workout", "tag", "session", "spo2Daily"]
    }
    fn revoke(&self) -> Revoke {
        Revoke::QueryAccessToken("https://api.ouraring.com/oauth/revoke")
    }
    fn user_info(&self) -> Option<(&'static str, &'static str)> {
        Some(("https://api.ouraring.com/v2/usercollection/personal_info", "id"))
    }
}
