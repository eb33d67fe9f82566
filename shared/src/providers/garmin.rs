//! Garmin Connect: OAuth 2 with PKCE (OAuth 1.0a retires at the end of 2026); permissions are set on the
//! app, not asked as scopes; revocation deletes the user's registration.
use super::{ProviderId, Revoke};

pub struct Garmin;

impl super::Provider for Garmin {
    fn id(&self) -> ProviderId {
        ProviderId::Garmin
    }
    fn display_name(&self) -> &'static str {
        "Garmin"
    }
    fn authorize_url(&self) -> &'static str {
        "https://connect.garmin.com/oauth2Confirm"
    }
    fn token_url(&self) -> &'static str {
        "https://diauth.garmin.com/di-oauth2-service/oauth/token"
    }
    fn default_scopes(&self) -> &'static [&'static str] {
        &[]
    }
    fn pkce(&self) -> bool {
        true
    }
    fn revoke(&self) -> Revoke {
        Revoke::BearerDelete("https://apis.garmin.com/wellness-api/rest/user/registration")
    }
    fn user_info(&self) -> Option<(&'static str, &'static str)> {
        Some(("https://apis.garmin.com/wellness-api/rest/user/id", "userId"))
    }
}
