//! Who is calling: the authorizer's verdict, carried to the functions in the API Gateway request context
//! (`requestContext.authorizer.lambda`). The authorizer never answers API Gateway's bare 403: a refused
//! caller is passed on as `Anonymous` with the reason, and the route's extractor answers in our error shape.
//! No tenant data is reachable without a `Principal` other than `Anonymous` (see `http::Scope`).

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::ids::{KeyId, TenantId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Holder of `TENANTRY_OPERATOR_KEY`: the `/admin/v1` routes.
    Operator,
    /// A tenant's API key: the tenant's `/v1` routes.
    Tenant { tenant_id: TenantId, key_id: KeyId },
    /// An end user signed in with the tenant's own login (a JWT checked against the tenant's JWKS).
    EndUser { tenant_id: TenantId, user_id: UserId },
    /// No accepted credentials; `status` and `code` say why, for routes that need a principal.
    Anonymous { status: u16, code: String, message: String },
}

impl Principal {
    pub fn missing() -> Self {
        Self::anonymous(
            401,
            "missing_credentials",
            "send your API key as `Authorization: Bearer <key>` or `x-api-key: <key>`",
        )
    }

    pub fn anonymous(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::Anonymous { status, code: code.to_owned(), message: message.into() }
    }

    /// The authorizer's `context` (simple response): flat string values only, as API Gateway passes on.
    pub fn to_context(&self) -> HashMap<String, Value> {
        let v = match self {
            Self::Operator => json!({"principal": "operator"}),
            Self::Tenant { tenant_id, key_id } => {
                json!({"principal": "tenant", "tenant_id": tenant_id, "key_id": key_id})
            }
            Self::EndUser { tenant_id, user_id } => {
                json!({"principal": "end_user", "tenant_id": tenant_id, "user_id": user_id})
            }
            Self::Anonymous { status, code, message } => json!({
                "principal": "anonymous", "auth_status": status.to_string(), "auth_error": code, "auth_message": message
            }),
        };
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Reads the context back. Anything unexpected is `missing()`: a route never trusts a half context.
    pub fn from_context(ctx: &HashMap<String, Value>) -> Self {
        let s = |k: &str| ctx.get(k).and_then(Value::as_str);
        let tenant = || s("tenant_id").and_then(|t| TenantId::parse(t).ok());
        let parsed = match s("principal") {
            Some("operator") => Some(Self::Operator),
            Some("tenant") => tenant()
                .zip(s("key_id").and_then(|k| KeyId::parse(k).ok()))
                .map(|(tenant_id, key_id)| Self::Tenant { tenant_id, key_id }),
            Some("end_user") => tenant()
                .zip(s("user_id").and_then(|u| UserId::parse(u).ok()))
                .map(|(tenant_id, user_id)| Self::EndUser { tenant_id, user_id }),
            Some("anonymous") => Some(Self::Anonymous {
                status: s("auth_status").and_then(|v| v.parse().ok()).unwrap_or(401),
                code: s("auth_error").unwrap_or("missing_credentials").to_owned(),
                message: s("auth_message").unwrap_or("credentials are required").to_owned(),
            }),
            _ => None,
        };
        parsed.unwrap_or_else(Self::missing)
    }

    pub fn tenant_id(&self) -> Option<&TenantId> {
        match self {
            Self::Tenant { tenant_id, .. } | Self::EndUser { tenant_id, .. } => Some(tenant_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_principal_survives_the_trip_through_the_context() {
        for p in [
            Principal::Operator,
            Principal::Tenant { tenant_id: TenantId::generate(), key_id: KeyId::generate() },
            Principal::EndUser { tenant_id: TenantId::generate(), user_id: UserId::generate() },
            Principal::anonymous(403, "tenant_disabled", "the tenant is disabled"),
        ] {
            assert_eq!(Principal::from_context(&p.to_context()), p);
        }
    }

    #[test]
    fn a_forged_or_partial_context_is_no_principal() {
        let ctx = serde_json::from_value(json!({"principal": "tenant", "tenant_id": "ten_x"})).unwrap_or_default();
        assert_eq!(Principal::from_context(&ctx), Principal::missing());
        assert_eq!(Principal::from_context(&HashMap::new()), Principal::missing());
    }
}
