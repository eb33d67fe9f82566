//! AWS SDK clients, built once per process. `AWS_ENDPOINT_URL` (read by aws-config) points them at moto
//! locally; unset, they reach AWS.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_sts::types::Tag;
use tokio::sync::Mutex;

use crate::ids::TenantId;

/// The shared SDK configuration: region and credentials from the usual chain.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// Most tenant sessions kept per process; a Lambda instance serves few tenants, a bound keeps it so.
const MAX_SESSIONS: usize = 256;
/// A session is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// DynamoDB clients whose credentials reach one tenant's partition only: `TenantAccessRole` assumed with
/// the session tag `tenant_id`, whose policy limits `dynamodb:LeadingKeys` to that tag. A bug that builds
/// a key from the wrong tenant id is then refused by IAM, not just by our code.
pub struct TenantAccess {
    sts: aws_sdk_sts::Client,
    sdk: aws_config::SdkConfig,
    role_arn: String,
    sessions: Mutex<HashMap<TenantId, Credentials>>,
    /// One client per tenant and session: a client per request would open new connections each time.
    clients: Mutex<HashMap<TenantId, (Credentials, aws_sdk_dynamodb::Client)>>,
}

impl TenantAccess {
    pub fn new(sdk: &aws_config::SdkConfig, role_arn: impl Into<String>) -> Self {
        Self {
            sts: aws_sdk_sts::Client::new(sdk),
            sdk: sdk.clone(),
            role_arn: role_arn.into(),
            sessions: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A client for `tenant` (see [`Self::credentials`]).
    pub async fn dynamodb(&self, tenant: &TenantId) -> anyhow::Result<aws_sdk_dynamodb::Client> {
        let credentials = self.credentials(tenant).await?;
        let mut clients = self.clients.lock().await;
        if let Some((for_credentials, client)) = clients.get(tenant)
            && for_credentials.access_key_id() == credentials.access_key_id()
        {
            return Ok(client.clone());
        }
        let config =
            aws_sdk_dynamodb::config::Builder::from(&self.sdk).credentials_provider(credentials.clone()).build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        if clients.len() >= MAX_SESSIONS {
            clients.clear();
        }
        clients.insert(tenant.clone(), (credentials, client.clone()));
        Ok(client)
    }

    /// The tenant's session credentials, from the cache while they have over five minutes left.
    pub async fn credentials(&self, tenant: &TenantId) -> anyhow::Result<Credentials> {
        let mut sessions = self.sessions.lock().await;
        if let Some(credentials) = sessions.get(tenant)
            && credentials.expiry().is_some_and(|e| e > SystemTime::now() + REFRESH_MARGIN)
        {
            return Ok(credentials.clone());
        }
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(format!("tenant-{tenant}"))
            .tags(Tag::builder().key("tenant_id").value(tenant.as_str()).build()?)
            .duration_seconds(3600)
            .send()
            .await
            .context("assuming the tenant access role")?;
        let c = out.credentials().context("AssumeRole returned no credentials")?;
        let expires = SystemTime::try_from(*c.expiration()).unwrap_or_else(|_| SystemTime::now());
        let credentials = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            Some(expires),
            "tenant-access",
        );
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(tenant.clone(), credentials.clone());
        Ok(credentials)
    }
}

/// The token vault on the configured KMS key (`TOKEN_KEY_ID`).
pub fn vault(config: &crate::Config, sdk: &aws_config::SdkConfig) -> anyhow::Result<crate::vault::Vault> {
    let key = config.token_key_id.clone().context("TOKEN_KEY_ID is not set")?;
    Ok(crate::vault::Vault::new(aws_sdk_kms::Client::new(sdk), key))
}

/// An S3 client; path-style addressing when an endpoint override (the local stack's moto) is set, since
/// `<bucket>.127.0.0.1` does not resolve.
pub fn s3(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let local = sdk.endpoint_url().is_some();
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(local).build())
}
