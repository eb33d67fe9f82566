//! Configuration, read once at start-up. Lambdas read the process environment; the local stack and tests
//! pass their own lookup so several stacks can live in one process.

use anyhow::{Context, bail};
use secrecy::SecretString;

#[derive(Clone, Debug)]
pub struct Config {
    /// The DynamoDB table holding tenants, API keys, end users and auth settings.
    pub tenancy_table: String,
    /// The operator key; only the authorizer needs it.
    pub operator_key: Option<SecretString>,
    /// The role assumed per tenant for tenant-keyed tables (`TenantAccessRole`); unset, the function's own
    /// role is used.
    pub tenant_access_role_arn: Option<String>,
    /// The KMS key of the token vault (`TOKEN_KEY_ID`); functions that seal or open secrets need it.
    pub token_key_id: Option<String>,
    /// Where the API is reachable from a browser (`TENANTRY_PUBLIC_URL`), for Connect links and OAuth
    /// redirect URIs.
    pub public_url: Option<String>,
    /// The normalized data table (`DATA_TABLE`).
    pub data_table: Option<String>,
    /// The sync job queue (`SYNC_QUEUE_URL`).
    pub sync_queue_url: Option<String>,
    /// The queue of events out to tenants' webhooks (`NOTIFY_QUEUE_URL`).
    pub notify_queue_url: Option<String>,
    /// Where deliveries go after their retry window (`NOTIFY_DEAD_LETTERS_URL`); the notifier needs it.
    pub notify_dead_letters_url: Option<String>,
    /// The bucket Apple Health exports are uploaded to (`IMPORT_BUCKET`).
    pub import_bucket: Option<String>,
    /// The queue of uploaded exports and import continuations (`IMPORT_QUEUE_URL`).
    pub import_queue_url: Option<String>,
    /// `TENANTRY_<PROVIDER>_URL` overrides of provider endpoints.
    pub providers: crate::providers::Overrides,
    /// Budgets, rate windows and the usage ledger (`METER_TABLE`).
    pub meter_table: Option<String>,
    /// `TENANTRY_ANTHROPIC_URL` and `TENANTRY_OPENAI_URL`: where the AI proxy sends calls (unset: the real APIs).
    pub llm_urls: std::collections::HashMap<crate::meter::LlmProvider, String>,
    /// Ledger entries on their way to Stripe meters (`USAGE_QUEUE_URL`).
    pub usage_queue_url: Option<String>,
    /// Usage report batches after their last receive (`USAGE_DEAD_LETTERS_URL`); the dead-letter API.
    pub usage_dead_letters_url: Option<String>,
    /// Export jobs, and where they land after their last receive (`EXPORT_QUEUE_URL`,
    /// `EXPORT_DEAD_LETTERS_URL`); the dead-letter API.
    pub export_queue_url: Option<String>,
    pub export_dead_letters_url: Option<String>,
    /// Purge jobs, and their dead letters (`PURGE_QUEUE_URL`, `PURGE_DEAD_LETTERS_URL`); the dead-letter API.
    pub purge_queue_url: Option<String>,
    pub purge_dead_letters_url: Option<String>,
    /// Where sync jobs land after their last receive (`SYNC_DEAD_LETTERS_URL`); the operator's dead-letter API.
    pub sync_dead_letters_url: Option<String>,
    /// Where import messages land after their last receive (`IMPORT_DEAD_LETTERS_URL`); the same API.
    pub import_dead_letters_url: Option<String>,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let tenancy_table = get("TENANCY_TABLE").filter(|v| !v.is_empty()).context("TENANCY_TABLE is not set")?;
        let operator_key = match get("TENANTRY_OPERATOR_KEY").filter(|v| !v.is_empty()) {
            Some(k) if k.len() < 32 => {
                bail!("TENANTRY_OPERATOR_KEY must be at least 32 characters long")
            }
            Some(k) => Some(SecretString::from(k)),
            None => None,
        };
        let tenant_access_role_arn = get("TENANT_ACCESS_ROLE_ARN").filter(|v| !v.is_empty());
        let token_key_id = get("TOKEN_KEY_ID").filter(|v| !v.is_empty());
        let public_url =
            get("TENANTRY_PUBLIC_URL").filter(|v| !v.is_empty()).map(|u| u.trim_end_matches('/').to_owned());
        let providers = crate::providers::Overrides::from_lookup(|k| get(k).filter(|v| !v.is_empty()));
        let data_table = get("DATA_TABLE").filter(|v| !v.is_empty());
        let sync_queue_url = get("SYNC_QUEUE_URL").filter(|v| !v.is_empty());
        let notify_queue_url = get("NOTIFY_QUEUE_URL").filter(|v| !v.is_empty());
        let notify_dead_letters_url = get("NOTIFY_DEAD_LETTERS_URL").filter(|v| !v.is_empty());
        let import_bucket = get("IMPORT_BUCKET").filter(|v| !v.is_empty());
        let import_queue_url = get("IMPORT_QUEUE_URL").filter(|v| !v.is_empty());
        let meter_table = get("METER_TABLE").filter(|v| !v.is_empty());
        let llm_urls = crate::meter::LlmProvider::ALL
            .into_iter()
            .filter_map(|p| get(p.env_var()).filter(|v| !v.is_empty()).map(|u| (p, u)))
            .collect();
        let usage_queue_url = get("USAGE_QUEUE_URL").filter(|v| !v.is_empty());
        let usage_dead_letters_url = get("USAGE_DEAD_LETTERS_URL").filter(|v| !v.is_empty());
        let export_queue_url = get("EXPORT_QUEUE_URL").filter(|v| !v.is_empty());
        let export_dead_letters_url = get("EXPORT_DEAD_LETTERS_URL").filter(|v| !v.is_empty());
        let purge_queue_url = get("PURGE_QUEUE_URL").filter(|v| !v.is_empty());
        let purge_dead_letters_url = get("PURGE_DEAD_LETTERS_URL").filter(|v| !v.is_empty());
        let sync_dead_letters_url = get("SYNC_DEAD_LETTERS_URL").filter(|v| !v.is_empty());
        let import_dead_letters_url = get("IMPORT_DEAD_LETTERS_URL").filter(|v| !v.is_empty());
        Ok(Self {
            usage_queue_url,
            usage_dead_letters_url,
            export_queue_url,
            export_dead_letters_url,
            purge_queue_url,
            purge_dead_letters_url,
            sync_dead_letters_url,
            import_dead_letters_url,
            meter_table,
            llm_urls,
            import_bucket,
            import_queue_url,
            tenancy_table,
            operator_key,
            tenant_access_role_arn,
            token_key_id,
            public_url,
            providers,
            data_table,
            sync_queue_url,
            notify_queue_url,
            notify_dead_letters_url,
        })
    }
}
