//! WHOOP v2: a refresh token only with the `offline` scope; revocation by DELETE of the user's access.
use super::{ProviderId, Revoke};

pub struct Whoop;

impl super::Provider for Whoop {
    fn id(&self) -> ProviderId {
        ProviderId::Whoop
    }
    fn display_name(&self) -> &'static str {
        "WHOOP"
    }
    fn authorize_url(&self) -> &'static str {
        "https://api.prod.whoop.com/oauth/oauth2/auth"
    }
    fn token_url(&self) -> &'static str {
        "https://api.prod.whoop.com/oauth/oauth2/token"
    }
    fn default_scopes(&self) -> &'static [&'static str] {
        &["offline", "read:recovery", "read:cycles", "read:sleep", "read:workout", "read:profile"]
    }
    fn revoke(&self) -> Revoke {
        Revoke::BearerDelete("https://api.prod.whoop.com/developer/v2/user/access")
    }
    fn user_info(&self) -> Option<(&'static str, &'static str)> {
        Some(("https://api.prod.whoop.com/developer/v2/user/profile/basic", "user_id"))
    }
}
