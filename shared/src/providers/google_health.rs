//! Google Health API (the Fitbit successor) with Google OAuth: PKCE, and `access_type=offline` with
//! `prompt=consent` so that a refresh token is issued every time. Scope names are unverified.
use super::{ProviderId, Revoke};

pub struct GoogleHealth;

impl super::Provider for GoogleHealth {
    fn id(&self) -> ProviderId {
        ProviderId::GoogleHealth
    }
    fn display_name(&self) -> &'static str {
        "Google Health"
    }
    fn authorize_url(&self) -> &'static str {
        "https://accounts.google.com/o/oauth2/v2/auth"
    }
    fn token_url(&self) -> &'static str {
        "https://oauth2.googleapis.com/token"
    }
    fn default_scopes(&self) -> &'static [&'static str] {
        &["https://www.googleapis.com/auth/googlehealth.activity_and_fitness.readonly"]
    }
    fn pkce(&self) -> bool {
        true
    }
    fn authorize_params(&self) -> &'static [(&'static str, &'static str)] {
        &[("access_type", "offline"), ("prompt", "consent")]
    }
    fn revoke(&self) -> Revoke {
        Revoke::FormToken("https://oauth2.googleapis.com/revoke")
    }
}
