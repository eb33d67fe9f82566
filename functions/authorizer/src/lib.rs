//! The Lambda authorizer of the HTTP API: tells who is calling, from the operator key, a tenant API key
//! (`Authorization: Bearer` or `x-api-key`) or an end user's JWT from the tenant's own login.
//!
//! It always answers `isAuthorized: true` with the verdict in the context: API Gateway's own denial is a
//! bare `{"message":"Forbidden"}`, whereas a refused caller must get our error shape saying what to fix.
//! The routes' extractors (`shared::http`) turn an `Anonymous` verdict into that error, and no tenant data
//! is reachable without a verified principal. API Gateway's authorizer cache is off (the key may come in
//! either of two headers) and this function keeps no cache of keys, so a revoked key fails on the next request.

use std::collections::HashMap;

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use lambda_http::http::HeaderMap;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::apikey::{self, PresentedKey};
use shared::auth::Principal;
use shared::ids::ExternalId;
use shared::jwt::{self, JwtVerifier};
use shared::tenancy::{Status, StoreError, TenancyStore};
use tracing::instrument;

/// API Gateway's "simple response" for payload format 2.0.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleResponse {
    pub is_authorized: bool,
    pub context: HashMap<String, Value>,
}

pub struct Authorizer {
    store: TenancyStore,
    operator_key_hash: Option<[u8; 32]>,
    jwt: JwtVerifier,
}

fn digest(v: &str) -> [u8; 32] {
    Sha256::digest(v.as_bytes()).into()
}

fn unavailable(e: StoreError) -> Principal {
    tracing::error!(error = ?e, "tenancy store unavailable during authorization");
    Principal::anonymous(503, "auth_unavailable", "we could not check your credentials just now; retry shortly")
}

impl Authorizer {
    pub fn new(config: &shared::Config, store: TenancyStore, http: reqwest::Client) -> Self {
        Self {
            store,
            operator_key_hash: config.operator_key.as_ref().map(|k| digest(k.expose_secret())),
            jwt: JwtVerifier::new(http),
        }
    }

    pub fn with_jwt_verifier(mut self, jwt: JwtVerifier) -> Self {
        self.jwt = jwt;
        self
    }

    /// The Lambda entry: every request is let through with the verdict in its context.
    pub async fn handle(&self, event: ApiGatewayV2CustomAuthorizerV2Request) -> SimpleResponse {
        let principal = self.authorize(&event.headers).await;
        SimpleResponse { is_authorized: true, context: principal.to_context() }
    }

    #[instrument(skip_all)]
    pub async fn authorize(&self, headers: &HeaderMap) -> Principal {
        let Some(credential) = credential(headers) else {
            return Principal::missing();
        };
        if let Some(expected) = &self.operator_key_hash
            && apikey::constant_time_eq(expected, &digest(credential))
        {
            return Principal::Operator;
        }
        if apikey::looks_like_api_key(credential) {
            return self.api_key(credential).await;
        }
        if jwt::looks_like_jwt(credential) {
            return self.end_user(credential).await;
        }
        Principal::anonymous(401, "invalid_credentials", "the credential is neither a Tenantry API key nor a JWT")
    }

    async fn api_key(&self, credential: &str) -> Principal {
        let invalid =
            || Principal::anonymous(401, "invalid_api_key", "the API key is not valid; check that it was copied whole");
        let Some(presented) = PresentedKey::parse(credential) else {
            return invalid();
        };
        let (tenant, key) = match self.store.tenant_and_key(&presented.tenant_id, &presented.key_id).await {
            Ok(found) => found,
            Err(e) => return unavailable(e),
        };
        let (Some(tenant), Some(key)) = (tenant, key) else {
            return invalid();
        };
        if !presented.matches(&key.secret_hash) {
            return invalid();
        }
        if key.revoked_at.is_some() {
            return Principal::anonymous(401, "api_key_revoked", "this API key was revoked; use another of your keys");
        }
        if tenant.status == Status::Disabled {
            return Principal::anonymous(403, "tenant_disabled", "this tenant is disabled; contact the operator");
        }
        if tenant.status != Status::Active {
            return Principal::anonymous(
                403,
                "tenant_offboarded",
                "this tenant is being offboarded; its data is deleted",
            );
        }
        let stale = key
            .last_used_at
            .as_deref()
            .is_none_or(|t| t < shared::time::format(shared::time::now() - time::Duration::minutes(1)).as_str());
        if stale && let Err(e) = self.store.touch_key(&tenant.id, &key.id).await {
            tracing::warn!(error = ?e, "could not stamp the key's last use");
        }
        tracing::info!(tenant_id = %tenant.id, key_id = %key.id, "tenant key accepted");
        Principal::Tenant { tenant_id: tenant.id, key_id: key.id }
    }

    async fn end_user(&self, token: &str) -> Principal {
        let refuse = |e: jwt::JwtError| Principal::anonymous(e.status(), e.code(), e.to_string());
        let peek = match jwt::peek(token) {
            Ok(p) => p,
            Err(e) => return refuse(e),
        };
        let Some(issuer) = peek.iss else {
            return Principal::anonymous(401, "token_malformed", "the token has no `iss` claim");
        };
        let configs = match self.store.auth_by_issuer(&issuer).await {
            Ok(c) => c,
            Err(e) => return unavailable(e),
        };
        let mut candidates = configs.into_iter().filter(|(_, c)| peek.aud.contains(&c.audience));
        let (Some((tenant_id, config)), None) = (candidates.next(), candidates.next()) else {
            return Principal::anonymous(
                401,
                "unknown_issuer",
                format!(
                    "no tenant accepts tokens from issuer `{issuer}` for this audience; the tenant sets it with PUT /v1/settings/auth"
                ),
            );
        };
        let claims = match self.jwt.verify(token, &config).await {
            Ok(c) => c,
            Err(e) => return refuse(e),
        };
        match self.store.get_tenant(&tenant_id).await {
            Ok(t) if t.status == Status::Active => {}
            Ok(_) => {
                return Principal::anonymous(403, "tenant_disabled", "this app's account is disabled");
            }
            Err(StoreError::NotFound) => {
                return Principal::anonymous(401, "unknown_issuer", "no tenant accepts this token");
            }
            Err(e) => return unavailable(e),
        }
        let Ok(external_id) = ExternalId::parse(&claims.sub) else {
            return Principal::anonymous(
                401,
                "token_bad_subject",
                "the token's `sub` is not a usable user id (1 to 256 printable characters)",
            );
        };
        match self.store.create_user(&tenant_id, &external_id, None).await {
            Ok((user, _)) if user.status == Status::Active => Principal::EndUser { tenant_id, user_id: user.id },
            Ok(_) => Principal::anonymous(403, "user_disabled", "this user is disabled by the app"),
            // A deleted user (waiting for the purge) keeps their external id: their tokens are refused.
            Err(StoreError::Conflict(m)) if m.starts_with(shared::tenancy::DELETED_USER_CONFLICT) => {
                Principal::anonymous(403, "user_deleted", "this user was deleted by the app")
            }
            Err(e) => unavailable(e),
        }
    }
}

/// `Authorization: Bearer <x>` first, then `x-api-key`.
fn credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = v.parse() {
                h.insert(*k, v);
            }
        }
        h
    }

    #[test]
    fn the_credential_comes_from_a_bearer_header_or_x_api_key() {
        assert_eq!(credential(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(credential(&headers(&[("authorization", "bearer  abc ")])), Some("abc"));
        assert_eq!(credential(&headers(&[("x-api-key", "xyz")])), Some("xyz"));
        assert_eq!(credential(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(credential(&headers(&[("authorization", "Bearer ")])), None);
    }

    #[test]
    fn the_sample_event_parses() {
        let event: Result<ApiGatewayV2CustomAuthorizerV2Request, _> =
            serde_json::from_str(include_str!("../../../events/authorizer/api-key.json"));
        assert!(event.is_ok_and(|e| e.headers.contains_key("x-api-key")));
    }
}
