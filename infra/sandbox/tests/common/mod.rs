//! A test's own sandbox server and a client that walks its OAuth flow the way the platform does.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use sandbox::{Provider, Running};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use url::Url;

pub const REDIRECT: &str = "http://app.test/oauth/callback";
pub const CLIENT_ID: &str = "tenant-app-1";
pub const CLIENT_SECRET: &str = "s3cret value";
pub const STATE: &str = "state-0123456789";

pub struct Sandbox {
    pub provider: Provider,
    pub running: Running,
    pub http: reqwest::Client,
}

pub async fn start(provider: Provider) -> Sandbox {
    let running = sandbox::start(provider, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.expect("sandbox starts");
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("reqwest client builds");
    Sandbox { provider, running, http }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce(seed: &str) -> (String, String) {
    let verifier = format!("verifier-{seed}-{}", "x".repeat(40));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The value of query parameter `name` in a redirect's Location.
pub fn query_param(location: &Url, name: &str) -> Option<String> {
    location.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

pub fn authorize_path(p: Provider) -> &'static str {
    match p {
        Provider::Oura | Provider::Strava => "/oauth/authorize",
        Provider::GoogleHealth => "/o/oauth2/v2/auth",
        Provider::Withings => "/oauth2_user/authorize2",
        Provider::Whoop => "/oauth/oauth2/auth",
        Provider::Polar => "/oauth2/authorization",
        Provider::Garmin => "/oauth2Confirm",
    }
}

pub fn token_path(p: Provider) -> &'static str {
    match p {
        Provider::Oura | Provider::Strava => "/oauth/token",
        Provider::GoogleHealth => "/token",
        Provider::Withings => "/v2/oauth2",
        Provider::Whoop => "/oauth/oauth2/token",
        Provider::Polar => "/v2/oauth2/token",
        Provider::Garmin => "/di-oauth2-service/oauth/token",
    }
}

/// Tokens from a successful exchange, whatever the provider's wrapping.
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    pub body: Value,
}

impl Tokens {
    fn parse(provider: Provider, body: Value) -> Tokens {
        let inner = if provider == Provider::Withings { body["body"].clone() } else { body.clone() };
        Tokens {
            access: inner["access_token"].as_str().expect("access_token in the token response").to_string(),
            refresh: inner["refresh_token"].as_str().map(str::to_string),
            body,
        }
    }
}

impl Sandbox {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }

    /// The authorize parameters the platform would send this provider.
    pub fn authorize_params(&self, challenge: Option<&str>) -> Vec<(String, String)> {
        let scope = match self.provider {
            Provider::Oura => "personal daily heartrate",
            Provider::GoogleHealth => "https://www.googleapis.com/auth/health.activity.read",
            Provider::Withings => "user.info,user.activity",
            Provider::Whoop => "read:recovery read:sleep offline",
            Provider::Polar => "accesslink.read_all",
            Provider::Strava => "read,activity:read_all",
            Provider::Garmin => "",
        };
        let mut p =
            vec![("response_type", "code"), ("client_id", CLIENT_ID), ("redirect_uri", REDIRECT), ("state", STATE)];
        if !scope.is_empty() {
            p.push(("scope", scope));
        }
        if self.provider == Provider::GoogleHealth {
            p.push(("access_type", "offline"));
        }
        let mut p: Vec<(String, String)> = p.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if let Some(c) = challenge {
            p.push(("code_challenge".into(), c.into()));
            p.push(("code_challenge_method".into(), "S256".into()));
        }
        p
    }

    pub async fn consent_page(&self, params: &[(String, String)]) -> reqwest::Response {
        let url = Url::parse_with_params(&self.url(authorize_path(self.provider)), params).expect("authorize url");
        self.http.get(url).send().await.expect("consent page answers")
    }

    /// Presses a button on the consent page: posts the request's parameters with the decision and user.
    pub async fn decide(&self, params: &[(String, String)], decision: &str, user: &str) -> reqwest::Response {
        let mut pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pairs.push(("decision", decision));
        pairs.push(("sandbox_user", user));
        self.http
            .post(self.url(authorize_path(self.provider)))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&pairs))
            .send()
            .await
            .expect("consent form answers")
    }

    /// Shows the consent page, approves as `user`, and returns the code from the redirect and the PKCE verifier.
    pub async fn approve(&self, user: &str) -> (String, String) {
        let (verifier, challenge) = pkce(user);
        let params = self.authorize_params(Some(&challenge));
        let page = self.consent_page(&params).await;
        assert_eq!(page.status(), StatusCode::OK, "consent page for {}", self.provider);
        let res = self.decide(&params, "approve", user).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let location = location(&res);
        assert_eq!(query_param(&location, "state").as_deref(), Some(STATE));
        (query_param(&location, "code").expect("code in the redirect"), verifier)
    }

    /// POSTs a token request with the client credentials where this provider wants them.
    pub async fn token_request(&self, fields: &[(&str, &str)], secret: &str) -> (StatusCode, Value) {
        let mut pairs: Vec<(&str, &str)> = fields.to_vec();
        if self.provider == Provider::Withings {
            pairs.push(("action", "requesttoken"));
        }
        let mut req = self.http.post(self.url(token_path(self.provider)));
        match self.provider {
            Provider::Polar | Provider::Oura => req = req.basic_auth(CLIENT_ID, Some(secret)),
            _ => {
                pairs.push(("client_id", CLIENT_ID));
                pairs.push(("client_secret", secret));
            }
        }
        let res = req
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&pairs))
            .send()
            .await
            .expect("token endpoint answers");
        let status = res.status();
        let text = res.text().await.expect("token body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn exchange(&self, code: &str, verifier: &str) -> (StatusCode, Value) {
        self.token_request(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ],
            CLIENT_SECRET,
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)], CLIENT_SECRET).await
    }

    /// Consent plus code exchange: the tokens a freshly connected user has.
    pub async fn connect(&self, user: &str) -> Tokens {
        let (code, verifier) = self.approve(user).await;
        let (status, body) = self.exchange(&code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "exchange at {}: {body}", self.provider);
        Tokens::parse(self.provider, body)
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.expect("data endpoint answers")
    }

    pub async fn state(&self) -> Value {
        let res = self.http.get(self.url("/sandbox/state")).send().await.expect("state answers");
        res.json().await.expect("state is JSON")
    }

    pub async fn set_faults(&self, body: Value) -> reqwest::Response {
        self.http.post(self.url("/sandbox/faults")).json(&body).send().await.expect("faults answer")
    }
}

pub fn location(res: &reqwest::Response) -> Url {
    let raw = res.headers().get(LOCATION).expect("a Location header").to_str().expect("ASCII Location");
    Url::parse(raw).expect("absolute Location")
}
