//! The seven providers and the wire facts that set them apart: paths, PKCE, client authentication, token shapes.

use std::fmt;
use std::str::FromStr;

/// A device provider the sandbox can stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Oura,
    GoogleHealth,
    Withings,
    Whoop,
    Polar,
    Strava,
    Garmin,
}

impl Provider {
    pub const ALL: [Provider; 7] = [
        Provider::Oura,
        Provider::GoogleHealth,
        Provider::Withings,
        Provider::Whoop,
        Provider::Polar,
        Provider::Strava,
        Provider::Garmin,
    ];

    /// The id used in URLs, JSON and environment variables: `oura`, `google_health`, ...
    pub fn id(self) -> &'static str {
        match self {
            Provider::Oura => "oura",
            Provider::GoogleHealth => "google_health",
            Provider::Withings => "withings",
            Provider::Whoop => "whoop",
            Provider::Polar => "polar",
            Provider::Strava => "strava",
            Provider::Garmin => "garmin",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Provider::Oura => "Oura",
            Provider::GoogleHealth => "Google Health",
            Provider::Withings => "Withings",
            Provider::Whoop => "WHOOP",
            Provider::Polar => "Polar",
            Provider::Strava => "Strava",
            Provider::Garmin => "Garmin",
        }
    }

    /// The variable that points the platform at this provider: `TENANTRY_OURA_URL`, ...
    pub fn env_var(self) -> &'static str {
        match self {
            Provider::Oura => "TENANTRY_OURA_URL",
            Provider::GoogleHealth => "TENANTRY_GOOGLE_HEALTH_URL",
            Provider::Withings => "TENANTRY_WITHINGS_URL",
            Provider::Whoop => "TENANTRY_WHOOP_URL",
            Provider::Polar => "TENANTRY_POLAR_URL",
            Provider::Strava => "TENANTRY_STRAVA_URL",
            Provider::Garmin => "TENANTRY_GARMIN_URL",
        }
    }

    pub(crate) fn authorize_path(self) -> &'static str {
        match self {
            Provider::Oura | Provider::Strava => "/oauth/authorize",
            Provider::GoogleHealth => "/o/oauth2/v2/auth",
            Provider::Withings => "/oauth2_user/authorize2",
            Provider::Whoop => "/oauth/oauth2/auth",
            Provider::Polar => "/oauth2/authorization",
            Provider::Garmin => "/oauth2Confirm",
        }
    }

    pub(crate) fn token_path(self) -> &'static str {
        match self {
            Provider::Oura | Provider::Strava => "/oauth/token",
            Provider::GoogleHealth => "/token",
            Provider::Withings => "/v2/oauth2",
            Provider::Whoop => "/oauth/oauth2/token",
            Provider::Polar => "/v2/oauth2/token",
            Provider::Garmin => "/di-oauth2-service/oauth/token",
        }
    }

    pub(crate) fn pkce(self) -> Pkce {
        match self {
            Provider::Oura => Pkce::Optional,
            Provider::GoogleHealth | Provider::Garmin => Pkce::Required,
            Provider::Withings | Provider::Whoop | Provider::Polar | Provider::Strava => Pkce::Unsupported,
        }
    }

    pub(crate) fn client_auth(self) -> ClientAuth {
        match self {
            Provider::Oura => ClientAuth::BasicOrForm,
            Provider::Polar => ClientAuth::Basic,
            Provider::GoogleHealth | Provider::Withings | Provider::Whoop | Provider::Strava | Provider::Garmin => {
                ClientAuth::Form
            }
        }
    }

    /// Access token lifetime when no fault overrides it, as the real provider documents it where known.
    pub(crate) fn default_access_ttl(self) -> u64 {
        match self {
            Provider::Withings => 10_800,
            Provider::Strava => 21_600,
            // Polar tokens do not expire unless revoked; the token endpoint says "about a year".
            Provider::Polar => 31_535_999,
            Provider::Oura | Provider::GoogleHealth | Provider::Whoop | Provider::Garmin => 3_600,
        }
    }

    /// Data API budget: (requests, window in seconds).
    pub(crate) fn default_rate_limit(self) -> (u32, u64) {
        match self {
            Provider::Oura => (5_000, 300),
            Provider::Whoop | Provider::Garmin | Provider::GoogleHealth => (100, 60),
            Provider::Withings => (120, 60),
            Provider::Strava => (200, 900),
            Provider::Polar => (500, 900),
        }
    }

    /// Scope granted when the authorize request names none.
    pub(crate) fn default_scope(self) -> &'static str {
        match self {
            Provider::Oura => "personal daily",
            Provider::GoogleHealth => "",
            Provider::Withings => "user.info",
            Provider::Whoop => "",
            Provider::Polar => "accesslink.read_all",
            Provider::Strava => "read",
            Provider::Garmin => "PARTNER_WRITE PARTNER_READ CONNECT_READ CONNECT_WRITE",
        }
    }

    pub(crate) fn min_state_len(self) -> usize {
        match self {
            Provider::Whoop => 8,
            _ => 1,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The id was not one of [`Provider::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown provider {0:?}; expected one of oura, google_health, withings, whoop, polar, strava, garmin")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Provider::ALL.into_iter().find(|p| p.id() == wanted).ok_or_else(|| UnknownProvider(s.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pkce {
    /// Checked when the authorize request carries a challenge.
    Optional,
    /// The authorize request must carry an S256 challenge.
    Required,
    /// Challenges and verifiers are ignored, as providers without PKCE ignore unknown parameters.
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    BasicOrForm,
    /// `client_id` and `client_secret` in the form body (client_secret_post).
    Form,
    /// `Authorization: Basic base64(id:secret)` (client_secret_basic).
    Basic,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_parses_back_from_its_id() {
        for p in Provider::ALL {
            assert_eq!(p.id().parse::<Provider>().ok(), Some(p));
            assert_eq!(serde_json::to_value(p).ok(), Some(serde_json::Value::String(p.id().into())));
            assert!(p.env_var().starts_with("TENANTRY_") && p.env_var().ends_with("_URL"));
        }
        assert_eq!("google-health".parse::<Provider>().ok(), Some(Provider::GoogleHealth));
        assert!("fitbit".parse::<Provider>().is_err());
    }
}
