//! OAuth 2 against each provider with the `oauth2` crate: the authorize URL (state, scopes, PKCE S256 where
//! the provider supports it) and the code exchange. Provider quirks (Withings' wrapped token responses) are
//! undone in the HTTP layer before `oauth2` parses the answer, so one exchange path serves every provider.

use std::time::Duration;

use crate::connect::TokenSet;
use crate::providers::{ClientAuth, Overrides, Provider};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Every field of the token response beyond the standard ones (Polar's `x_user_id`, Strava's `athlete`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extra {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl oauth2::ExtraTokenFields for Extra {}

type TokenResp = StandardTokenResponse<Extra, BasicTokenType>;
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A tenant's app at the provider, its secret opened from the vault.
pub struct App {
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
}

fn client(provider: &dyn Provider, urls: &Overrides, app: &App, redirect_uri: &str) -> anyhow::Result<OAuthClient> {
    Ok(oauth2::Client::new(ClientId::new(app.client_id.clone()))
        .set_client_secret(ClientSecret::new(app.client_secret.expose_secret().to_owned()))
        .set_auth_uri(AuthUrl::new(urls.url(provider.id(), provider.authorize_url()))?)
        .set_token_uri(TokenUrl::new(urls.url(provider.id(), provider.token_url()))?)
        .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned())?)
        .set_auth_type(match provider.client_auth() {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Form => AuthType::RequestBody,
        }))
}

/// The provider's consent URL, and the PKCE verifier to keep for the exchange (when PKCE is used).
pub fn authorize_url(
    provider: &dyn Provider,
    urls: &Overrides,
    app: &App,
    redirect_uri: &str,
    state: String,
) -> anyhow::Result<(String, Option<String>)> {
    let client = client(provider, urls, app, redirect_uri)?;
    let mut req = client.authorize_url(|| CsrfToken::new(state));
    if !app.scopes.is_empty() {
        // oauth2 joins scopes with spaces; providers that want commas get one pre-joined scope.
        req = match provider.scope_separator() {
            " " => req.add_scopes(app.scopes.iter().cloned().map(Scope::new)),
            sep => req.add_scope(Scope::new(app.scopes.join(sep))),
        };
    }
    for (k, v) in provider.authorize_params() {
        req = req.add_extra_param(*k, *v);
    }
    let mut verifier = None;
    if provider.pkce() {
        let (challenge, v) = PkceCodeChallenge::new_random_sha256();
        req = req.set_pkce_challenge(challenge);
        verifier = Some(v.secret().to_owned());
    }
    let (url, _) = req.url();
    Ok((url.to_string(), verifier))
}

/// What went wrong at the token endpoint, in words for the person on the page.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{provider} refused the authorization: {code}{description}")]
    Refused { provider: String, code: String, description: String },
    #[error("{0} did not answer in time or could not be reached; please try again")]
    Unreachable(String),
    #[error("{0} answered with something we could not read; please try again later")]
    Garbled(String),
}

/// The exchange's result: the tokens, the granted scopes and the provider's id for the user, if given.
pub struct Exchanged {
    pub tokens: TokenSet,
    pub scopes: Vec<String>,
    pub provider_user_id: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Exchanges the code. Never logs a token.
pub async fn exchange(
    http: &reqwest::Client,
    provider: &'static dyn Provider,
    urls: &Overrides,
    app: &App,
    redirect_uri: &str,
    code: String,
    verifier: Option<String>,
) -> Result<Exchanged, ExchangeError> {
    let name = provider.display_name().to_owned();
    let client = client(provider, urls, app, redirect_uri).map_err(|_| ExchangeError::Garbled(name.clone()))?;
    let mut req = client.exchange_code(AuthorizationCode::new(code));
    for (k, v) in provider.token_params() {
        req = req.add_extra_param(*k, *v);
    }
    if let Some(v) = verifier {
        req = req.set_pkce_verifier(PkceCodeVerifier::new(v));
    }
    let client = Http { client: http.clone(), provider };
    let response = req.request_async(&client).await.map_err(|e| token_error(&name, e))?;
    let expires_at = response.expires_in().map(|d| crate::time::now().unix_timestamp() + d.as_secs() as i64);
    let scopes =
        response.scopes().map(|s| s.iter().map(|s| s.to_string()).collect()).unwrap_or_else(|| app.scopes.clone());
    Ok(Exchanged {
        provider_user_id: provider.user_id_from_token(&response.extra_fields().fields),
        tokens: TokenSet {
            access_token: response.access_token().secret().to_owned(),
            refresh_token: response.refresh_token().map(|t| t.secret().to_owned()),
            expires_at,
        },
        scopes,
    })
}

/// Trades a refresh token for new tokens. Providers rotate refresh tokens: the old one is spent, so the
/// caller must store the answer before anyone else refreshes (see the single-flight refresh in sync-worker).
pub async fn refresh(
    http: &reqwest::Client,
    provider: &'static dyn Provider,
    urls: &Overrides,
    app: &App,
    refresh_token: String,
) -> Result<Exchanged, ExchangeError> {
    let name = provider.display_name().to_owned();
    let client = client(provider, urls, app, "http://localhost/").map_err(|_| ExchangeError::Garbled(name.clone()))?;
    let token = oauth2::RefreshToken::new(refresh_token.clone());
    let mut req = client.exchange_refresh_token(&token);
    for (k, v) in provider.token_params() {
        // Withings names the grant through its `action` too.
        let v = if *k == "action" { "requesttoken" } else { v };
        req = req.add_extra_param(*k, v);
    }
    let http_client = Http { client: http.clone(), provider };
    let response = req.request_async(&http_client).await.map_err(|e| token_error(&name, e))?;
    let expires_at = response.expires_in().map(|d| crate::time::now().unix_timestamp() + d.as_secs() as i64);
    Ok(Exchanged {
        provider_user_id: provider.user_id_from_token(&response.extra_fields().fields),
        tokens: TokenSet {
            access_token: response.access_token().secret().to_owned(),
            // A provider that does not rotate keeps the old refresh token valid.
            refresh_token: response.refresh_token().map(|t| t.secret().to_owned()).or(Some(refresh_token)),
            expires_at,
        },
        scopes: response.scopes().map(|s| s.iter().map(|s| s.to_string()).collect()).unwrap_or_default(),
    })
}

/// What a failed token request means for the person or the job.
fn token_error<RE: std::error::Error + 'static>(
    name: &str,
    e: RequestTokenError<RE, oauth2::StandardErrorResponse<oauth2::basic::BasicErrorResponseType>>,
) -> ExchangeError {
    match e {
        RequestTokenError::ServerResponse(r) => ExchangeError::Refused {
            provider: name.to_owned(),
            code: r.error().as_ref().to_owned(),
            description: r.error_description().map(|d| format!(" ({d})")).unwrap_or_default(),
        },
        RequestTokenError::Request(_) => ExchangeError::Unreachable(name.to_owned()),
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => ExchangeError::Garbled(name.to_owned()),
    }
}

/// The HTTP client `oauth2` calls: ours, with the provider's quirks undone. A named type (not a closure)
/// so the future is `Send` for every lifetime, as axum handlers need.
struct Http {
    client: reqwest::Client,
    provider: &'static dyn Provider,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Http {
    type Error = reqwest::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send(&self.client, self.provider, request))
    }
}

/// The HTTP call under `oauth2`, with a timeout, and the provider's response normalized to plain OAuth 2.
async fn send(
    http: &reqwest::Client,
    provider: &dyn Provider,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .timeout(TIMEOUT)
        .send()
        .await?;
    let mut status = response.status();
    let headers = response.headers().clone();
    let mut bytes = response.bytes().await?.to_vec();
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        let normalized = provider.normalize_token_response(json);
        if normalized.get("error").is_some() && status.is_success() {
            status = http::StatusCode::BAD_REQUEST;
        }
        bytes = serde_json::to_vec(&normalized).unwrap_or_default();
    }
    let mut out = http::Response::builder().status(status);
    for (k, v) in &headers {
        if k != http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    Ok(out.body(bytes).unwrap_or_default())
}
