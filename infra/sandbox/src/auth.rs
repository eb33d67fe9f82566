//! Reading credentials off a request: client credentials at the token endpoint, bearer tokens on the APIs.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::provider::{ClientAuth, Provider};
use crate::store::{BearerError, TokenError};

/// The value of the single form field `name`; `Err` when it is repeated (RFC 6749 3.1).
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, TokenError> {
    let mut values = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(TokenError::InvalidRequest(format!("{name} is given more than once")));
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// Decodes `%XX` and `+` as `application/x-www-form-urlencoded` does (RFC 6749 2.3.1 encodes Basic credentials so).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Authorization: Basic ...` credentials, if the header uses the Basic scheme.
fn basic(headers: &HeaderMap) -> Option<Result<(String, String), TokenError>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let malformed = || TokenError::InvalidClient("malformed Basic credentials".into());
    let decoded = STANDARD
        .decode(rest.trim())
        .map_err(|_| malformed())
        .and_then(|b| String::from_utf8(b).map_err(|_| malformed()));
    Some(decoded.and_then(|text| {
        let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
        Ok((form_decode(id), form_decode(secret)))
    }))
}

/// Client id and secret, read the way this provider expects them and no other.
pub(crate) fn client_credentials(
    provider: Provider,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(String, String), TokenError> {
    let basic = basic(headers);
    let form_pair = match (field(form, "client_id")?, field(form, "client_secret")?) {
        (Some(id), Some(secret)) => Some((id.to_string(), secret.to_string())),
        _ => None,
    };
    let missing = || TokenError::InvalidClient("client authentication is missing".into());
    match provider.client_auth() {
        ClientAuth::BasicOrForm => basic.or(form_pair.map(Ok)).unwrap_or_else(|| Err(missing())),
        ClientAuth::Basic => match basic {
            Some(creds) => creds,
            None if form_pair.is_some() => Err(TokenError::InvalidClient(format!(
                "{} expects the client credentials in an Authorization: Basic header, not in the form",
                provider.display_name()
            ))),
            None => Err(missing()),
        },
        ClientAuth::Form => match form_pair {
            Some(pair) => Ok(pair),
            None if basic.is_some() => Err(TokenError::InvalidClient(format!(
                "{} expects client_id and client_secret in the form body, not in a Basic header",
                provider.display_name()
            ))),
            None => Err(missing()),
        },
    }
}

/// The token of `Authorization: Bearer <token>`.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// 401 for a missing, unknown, expired or revoked bearer token, in the provider's manner.
pub(crate) fn unauthorized(provider: Provider, why: Option<BearerError>) -> Response {
    let message = match why {
        None => "missing bearer token",
        Some(BearerError::Unknown) => "invalid access token",
        Some(BearerError::Expired) => "access token expired",
        Some(BearerError::Revoked) => "access token revoked",
    };
    let mut res = match provider {
        Provider::Polar => StatusCode::UNAUTHORIZED.into_response(),
        Provider::Strava => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "message": "Authorization Error",
                "errors": [{"resource": "Athlete", "field": "access_token", "code": "invalid"}],
            })),
        )
            .into_response(),
        Provider::GoogleHealth => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}})),
        )
            .into_response(),
        Provider::Oura => (StatusCode::UNAUTHORIZED, axum::Json(json!({"detail": message}))).into_response(),
        Provider::Withings | Provider::Whoop | Provider::Garmin => {
            (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_token", "error_description": message})))
                .into_response()
        }
    };
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode("my%20id:s%3Acret+x"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")));
        let creds = client_credentials(Provider::Polar, &headers, &[]);
        assert_eq!(creds, Ok(("my id".to_string(), "s:cret x".to_string())));
    }

    #[test]
    fn a_form_only_provider_refuses_basic_and_says_why() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        let Err(TokenError::InvalidClient(why)) = client_credentials(Provider::GoogleHealth, &headers, &[]) else {
            panic!("Basic was accepted");
        };
        assert!(why.contains("form body"));
    }

    #[test]
    fn a_stray_percent_survives_decoding() {
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%4"), "%4");
        assert_eq!(form_decode("%41%zz"), "A%zz");
    }
}
