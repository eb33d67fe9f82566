//! The tenancy domain: tenants (the app makers), their API keys, their end users and their own login.
//! No AWS types here; `store` keeps them in DynamoDB.

pub mod store;

use serde::{Deserialize, Serialize};

use crate::ids::{Email, ExternalId, KeyId, TenantId, UserId};

pub use store::{DELETED_USER_CONFLICT, StoreError, TenancyStore};

use std::sync::Arc;

use crate::aws::TenantAccess;
use crate::error::ApiError;

/// The tenancy store as the function's own role sees it, and as one tenant's scoped session sees it.
#[derive(Clone)]
pub struct Stores {
    own: TenancyStore,
    access: Option<Arc<TenantAccess>>,
}

impl Stores {
    pub fn new(own: TenancyStore, access: Option<TenantAccess>) -> Self {
        Self { own, access: access.map(Arc::new) }
    }

    /// Built from the configuration: the scoped role where `TENANT_ACCESS_ROLE_ARN` is set.
    pub fn from_config(config: &crate::Config, sdk: &aws_config::SdkConfig) -> Self {
        let own = TenancyStore::new(crate::aws::dynamodb(sdk), &config.tenancy_table);
        let access = config.tenant_access_role_arn.as_ref().map(|arn| TenantAccess::new(sdk, arn));
        Self::new(own, access)
    }

    /// For operator work and cross-tenant lookups (the issuer index): the function's own role.
    pub fn own(&self) -> &TenancyStore {
        &self.own
    }

    /// For work on one tenant's items: credentials that reach only that tenant's partition.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<TenancyStore, ApiError> {
        match &self.access {
            None => Ok(self.own.clone()),
            Some(access) => {
                let client = access.dynamodb(tenant).await.map_err(ApiError::internal)?;
                Ok(self.own.with_client(client))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Disabled,
    /// Deleted and waiting for its purge (a user in its grace period, a tenant being offboarded): invisible
    /// to every API as if absent, refused by the authorizer; only `POST /v1/users/{id}/restore` sees it.
    Deleted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// A tenant's display name: 1 to 100 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err("name must be 1 to 100 characters long".into());
        }
        if name.chars().any(char::is_control) {
            return Err("name must not contain control characters".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl From<TenantName> for String {
    fn from(n: TenantName) -> String {
        n.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub status: Status,
    pub created_at: String,
    pub updated_at: String,
}

/// An API key as stored: the hash of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub tenant_id: TenantId,
    pub id: KeyId,
    pub prefix: String,
    pub secret_hash: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// What a tenant may see of its keys.
#[derive(Debug, Serialize)]
pub struct ApiKeyView {
    pub id: KeyId,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub external_id: ExternalId,
    pub email: Option<Email>,
    pub status: Status,
    pub created_at: String,
    pub updated_at: String,
}

/// Changes a tenant may make to a user; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub status: Option<Status>,
    /// `Some(None)` removes the email.
    pub email: Option<Option<Email>>,
}

pub use crate::jwt::IssuerConfig as AuthSettings;
