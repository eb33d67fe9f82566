//! Device providers: one module per provider says where its OAuth endpoints are and how it differs from
//! plain OAuth 2; `registry()` lists them. Adding a provider is a module and a line in `registry()`
//! (docs/providers.md). Sync and webhooks join the trait with the sync issue.
//!
//! `TENANTRY_<PROVIDER>_URL` replaces the scheme and host of every endpoint of that provider, keeping the
//! real paths, so the sandbox providers (infra/sandbox) or a test server can stand in for it.

mod garmin;
mod google_health;
mod oura;
mod polar;
mod strava;
mod whoop;
mod withings;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The providers Tenantry connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderId {
    Oura,
    GoogleHealth,
    Withings,
    Whoop,
    Polar,
    Strava,
    Garmin,
}

impl ProviderId {
    pub const ALL: [ProviderId; 7] = [
        ProviderId::Oura,
        ProviderId::GoogleHealth,
        ProviderId::Withings,
        ProviderId::Whoop,
        ProviderId::Polar,
        ProviderId::Strava,
        ProviderId::Garmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oura => "oura",
            Self::GoogleHealth => "google_health",
            Self::Withings => "withings",
            Self::Whoop => "whoop",
            Self::Polar => "polar",
            Self::Strava => "strava",
            Self::Garmin => "garmin",
        }
    }

    /// Parses a provider name from a path or body; the error lists the known ones.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown provider `{raw}`; known: {}", known.join(", "))
        })
    }

    /// The environment variable that redirects this provider's endpoints (`TENANTRY_OURA_URL`, ...).
    pub fn env_var(self) -> String {
        format!("TENANTRY_{}_URL", self.as_str().to_uppercase())
    }

    pub fn provider(self) -> &'static dyn Provider {
        match self {
            Self::Oura => &oura::Oura,
            Self::GoogleHealth => &google_health::GoogleHealth,
            Self::Withings => &withings::Withings,
            Self::Whoop => &whoop::Whoop,
            Self::Polar => &polar::Polar,
            Self::Strava => &strava::Strava,
            Self::Garmin => &garmin::Garmin,
        }
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the app's client credentials reach the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(id:secret)`.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Form,
}

/// How a connection is revoked at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// The provider offers no revocation; deleting our tokens is all we can do.
    None,
    /// RFC 7009 style: POST form `token=<access token>` (client credentials as for the token endpoint).
    FormToken(&'static str),
    /// POST with `?access_token=<token>` in the query.
    QueryAccessToken(&'static str),
    /// POST with the access token as Bearer.
    BearerPost(&'static str),
    /// DELETE with the access token as Bearer; `{user_id}` in the URL is the provider's user id.
    BearerDelete(&'static str),
}

/// Something a provider requires after consent, before data can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterConsent {
    Nothing,
    /// Polar AccessLink: `POST <url>` with `{"member-id": <our user id>}`; 409 means already registered.
    RegisterUser(&'static str),
}

/// What every provider module describes. Real URLs only; `endpoint()` applies the override.
pub trait Provider: Send + Sync {
    fn id(&self) -> ProviderId;
    fn display_name(&self) -> &'static str;
    fn authorize_url(&self) -> &'static str;
    fn token_url(&self) -> &'static str;
    /// Scopes asked for when the tenant's app configures none.
    fn default_scopes(&self) -> &'static [&'static str];
    /// How scopes are joined in the authorize URL (most use a space; Strava and Withings a comma).
    fn scope_separator(&self) -> &'static str {
        " "
    }
    /// PKCE S256, where the provider supports it.
    fn pkce(&self) -> bool {
        false
    }
    fn client_auth(&self) -> ClientAuth {
        ClientAuth::Form
    }
    /// Extra authorize parameters (Google's `access_type=offline`).
    fn authorize_params(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Extra token-request parameters (Withings' `action=requesttoken`).
    fn token_params(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Turns the provider's token response body into a standard OAuth 2 one, or an error body
    /// `{"error": ..., "error_description": ...}` (Withings wraps both in `{"status", "body"}`).
    fn normalize_token_response(&self, body: serde_json::Value) -> serde_json::Value {
        body
    }
    /// The provider's user id, from extra fields of the token response.
    fn user_id_from_token(&self, _extra: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
        None
    }
    fn revoke(&self) -> Revoke {
        Revoke::None
    }
    /// Where to ask who the user is when the token response does not say (URL, JSON field of the id);
    /// webhooks name users by this id.
    fn user_info(&self) -> Option<(&'static str, &'static str)> {
        None
    }
    fn after_consent(&self) -> AfterConsent {
        AfterConsent::Nothing
    }
}

/// Every provider, in display order.
pub fn registry() -> impl Iterator<Item = &'static dyn Provider> {
    ProviderId::ALL.into_iter().map(ProviderId::provider)
}

/// `real` with its scheme and host replaced by `base` (from `TENANTRY_<PROVIDER>_URL`), path kept.
pub fn endpoint(real: &str, base: Option<&str>) -> String {
    let Some(base) = base.map(|b| b.trim_end_matches('/')) else { return real.to_owned() };
    let after_scheme = real.split_once("://").map_or(real, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    format!("{base}{path}")
}

/// Where each provider's endpoints are, read once from the environment (or the local stack's lookup).
#[derive(Debug, Clone, Default)]
pub struct Overrides(std::collections::HashMap<ProviderId, String>);

impl Overrides {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        Self(ProviderId::ALL.into_iter().filter_map(|p| get(&p.env_var()).map(|u| (p, u))).collect())
    }

    pub fn url(&self, provider: ProviderId, real: &str) -> String {
        endpoint(real, self.0.get(&provider).map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_keeps_the_real_path_and_query() {
        assert_eq!(
            endpoint("https://api.ouraring.com/oauth/token", Some("http://127.0.0.1:4000/")),
            "http://127.0.0.1:4000/oauth/token"
        );
        assert_eq!(endpoint("https://x.example/a?b=c", Some("http://h:1")), "http://h:1/a?b=c");
        assert_eq!(endpoint("https://x.example/a", None), "https://x.example/a");
    }

    #[test]
    fn every_provider_parses_from_its_name_and_is_registered_once() {
        let ids: Vec<ProviderId> = registry().map(|p| p.id()).collect();
        assert_eq!(ids, ProviderId::ALL.to_vec());
        for p in ProviderId::ALL {
            assert_eq!(ProviderId::parse(p.as_str()), Ok(p));
            assert!(p.provider().authorize_url().starts_with("https://"));
            assert!(p.provider().token_url().starts_with("https://"));
        }
        assert!(ProviderId::parse("fitbit").is_err_and(|e| e.contains("oura")));
    }
}
