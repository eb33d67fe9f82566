//! The authorize endpoint: validates the request, shows the consent page, and redirects with a code or an error.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use url::Url;

use crate::app::App;
use crate::pages;
use crate::provider::{Pkce, Provider};
use crate::store::Approval;

/// The user the consent page approves as unless `login_hint` or the form names another.
pub const DEFAULT_USER: &str = "sandbox-user-1";

/// A validated authorization request.
#[derive(Debug)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: String,
    scope: String,
    code_challenge: Option<String>,
    offline: bool,
    login_hint: Option<String>,
}

fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// Parses the parameters every provider's authorize endpoint takes, collecting every problem at once.
fn parse(provider: Provider, params: &[(String, String)]) -> Result<AuthRequest, Vec<String>> {
    let mut problems = Vec::new();
    let mut one = |name: &str| -> Option<String> {
        let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim());
        let first = values.next().map(str::to_string);
        if values.next().is_some() {
            problems.push(format!("{name} is given more than once"));
            return None;
        }
        first.filter(|v| !v.is_empty())
    };
    let response_type = one("response_type");
    let client_id = one("client_id");
    let redirect_uri = one("redirect_uri");
    let state = one("state");
    let scope = one("scope");
    let challenge = one("code_challenge");
    let method = one("code_challenge_method");
    let access_type = one("access_type");
    let login_hint = one("login_hint");

    match response_type.as_deref() {
        Some("code") => {}
        None => problems.push("response_type is missing; it must be \"code\"".into()),
        Some(other) => problems.push(format!("response_type must be \"code\", not {other:?}")),
    }
    if client_id.is_none() {
        problems.push("client_id is missing".into());
    }
    match redirect_uri.as_deref().map(Url::parse) {
        None => problems.push("redirect_uri is missing".into()),
        Some(Err(e)) => problems.push(format!("redirect_uri is not an absolute URL ({e})")),
        Some(Ok(u)) if !matches!(u.scheme(), "http" | "https") => {
            problems.push(format!("redirect_uri must be http or https, not {}", u.scheme()))
        }
        Some(Ok(u)) if u.fragment().is_some() => problems.push("redirect_uri must not contain a fragment".into()),
        Some(Ok(_)) => {}
    }
    match state.as_deref() {
        None => problems.push("state is missing; the sandbox requires it to protect the callback".into()),
        Some(s) if s.chars().count() < provider.min_state_len() => problems.push(format!(
            "state must be at least {} characters ({} rejects shorter ones)",
            provider.min_state_len(),
            provider.display_name()
        )),
        Some(_) => {}
    }
    let code_challenge = match provider.pkce() {
        Pkce::Unsupported => None,
        pkce => {
            match (&challenge, method.as_deref()) {
                (None, _) if pkce == Pkce::Required => problems.push(format!(
                    "code_challenge is missing: {} requires PKCE with code_challenge_method=S256",
                    provider.display_name()
                )),
                (None, _) => {}
                (Some(_), m) if m != Some("S256") => {
                    problems.push(format!("code_challenge_method must be S256, not {}", m.unwrap_or("absent (plain)")))
                }
                (Some(c), _) if !crate::ids::is_pkce_string(c) => {
                    problems.push("code_challenge must be 43-128 characters of base64url".into())
                }
                (Some(_), _) => {}
            }
            challenge
        }
    };
    if provider == Provider::GoogleHealth {
        if scope.is_none() {
            problems.push("scope is missing; Google requires at least one scope".into());
        }
        if let Some(a) = access_type.as_deref().filter(|a| !matches!(*a, "online" | "offline")) {
            problems.push(format!("access_type must be online or offline, not {a:?}"));
        }
    }
    match (client_id, redirect_uri, state) {
        (Some(client_id), Some(redirect_uri), Some(state)) if problems.is_empty() => Ok(AuthRequest {
            client_id,
            redirect_uri,
            state,
            scope: scope.unwrap_or_else(|| provider.default_scope().to_string()),
            code_challenge,
            offline: access_type.as_deref() == Some("offline"),
            login_hint,
        }),
        _ => Err(problems),
    }
}

fn valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b))
}

fn scopes(provider: Provider, scope: &str) -> Vec<&str> {
    let sep: &[char] = match provider {
        Provider::Withings | Provider::Strava => &[','],
        _ => &[' '],
    };
    scope.split(sep).map(str::trim).filter(|s| !s.is_empty()).collect()
}

fn bad_request(provider: Provider, problems: &[String]) -> Response {
    (StatusCode::BAD_REQUEST, Html(pages::bad_request(provider, problems))).into_response()
}

/// `GET <authorize>`: the consent page, or 400 with what is wrong.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn show(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    let params = pairs(query.unwrap_or_default().as_bytes());
    let provider = app.provider;
    let req = match parse(provider, &params) {
        Ok(req) => req,
        Err(problems) => return bad_request(provider, &problems),
    };
    let user = req.login_hint.as_deref().filter(|u| valid_user(u)).unwrap_or(DEFAULT_USER);
    let hidden: Vec<(String, String)> =
        params.into_iter().filter(|(k, _)| k != "decision" && k != "sandbox_user").collect();
    let page = pages::consent(&pages::Consent {
        provider,
        action: provider.authorize_path(),
        client_id: &req.client_id,
        redirect_uri: &req.redirect_uri,
        scopes: scopes(provider, &req.scope),
        hidden: &hidden,
        user,
        offline: req.offline,
    });
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// `POST <authorize>`: the person pressed Approve or Deny.
#[tracing::instrument(skip_all, fields(provider = %app.provider))]
pub(crate) async fn decide(State(app): State<App>, body: Bytes) -> Response {
    let provider = app.provider;
    let params = pairs(&body);
    let field = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string());
    let decision = field("decision");
    let user = field("sandbox_user").unwrap_or_else(|| DEFAULT_USER.to_string());
    let req = match parse(provider, &params) {
        Ok(req) => req,
        Err(problems) => return bad_request(provider, &problems),
    };
    match decision.as_deref() {
        Some("approve") => {
            if !valid_user(&user) {
                return bad_request(
                    provider,
                    &["the sandbox user must be 1-64 letters, digits, '.', '_', '-', '@' or '+'".into()],
                );
            }
            let accepted_scope = req.scope.clone();
            let code = app.with(|s| {
                s.counters.consents_approved += 1;
                s.issue_code(Approval {
                    client_id: req.client_id.clone(),
                    redirect_uri: req.redirect_uri.clone(),
                    code_challenge: req.code_challenge.clone(),
                    scope: req.scope.clone(),
                    user: user.clone(),
                    offline: req.offline,
                })
            });
            tracing::info!("consent approved; code issued");
            let mut back = vec![("code", code.as_str()), ("state", req.state.as_str())];
            if provider == Provider::Strava {
                // Strava reports the scopes the athlete accepted in the callback.
                back.push(("scope", accepted_scope.as_str()));
            }
            redirect(&req.redirect_uri, &back)
        }
        Some("deny") => {
            app.with(|s| s.counters.consents_denied += 1);
            tracing::info!("consent denied");
            redirect(&req.redirect_uri, &[("error", "access_denied"), ("state", req.state.as_str())])
        }
        _ => bad_request(provider, &["decision must be approve or deny (press one of the buttons)".into()]),
    }
}

/// 302 to a redirect URI that `parse` already validated, with `params` appended to its query.
fn redirect(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    url.query_pairs_mut().extend_pairs(params);
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let Err(problems) = parse(Provider::GoogleHealth, &params(&[("response_type", "token")])) else {
            panic!("a request without client_id parsed");
        };
        let text = problems.join("\n");
        for needle in ["response_type", "client_id", "redirect_uri", "state", "code_challenge", "scope"] {
            assert!(text.contains(needle), "{needle} not reported in {text}");
        }
    }

    #[test]
    fn whoop_rejects_a_short_state_and_others_do_not() {
        let p = params(&[
            ("response_type", "code"),
            ("client_id", "c"),
            ("redirect_uri", "https://app.test/cb"),
            ("state", "abc"),
        ]);
        assert!(parse(Provider::Whoop, &p).is_err());
        assert!(parse(Provider::Strava, &p).is_ok());
    }

    #[test]
    fn a_redirect_keeps_the_existing_query() {
        let res = redirect("https://app.test/cb?x=1", &[("code", "a b"), ("state", "s")]);
        let location = res.headers().get(header::LOCATION).and_then(|v| v.to_str().ok());
        assert_eq!(location, Some("https://app.test/cb?x=1&code=a+b&state=s"));
    }
}
