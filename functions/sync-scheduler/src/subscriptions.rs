//! The scheduler's upkeep of provider webhook subscriptions: makes the ones a tenant's app asked for
//! (saving an app only writes a pending item, so it never waits on the provider), retries failures with
//! backoff, renews Oura's before they expire, and subscribes each Withings user lazily, with the user's
//! token, when their connection comes due.
//!
//! Provider calls (real paths; `TENANTRY_<PROVIDER>_URL` replaces the host):
//! - Oura: `POST /v2/webhook/subscription` (`x-client-id`, `x-client-secret`; `{callback_url,
//!   verification_token, event_type, data_type}`) -> `{id, expiration_time, ...}`; renew with
//!   `PUT /v2/webhook/subscription/renew/{id}`.
//! - Strava: `POST /api/v3/push_subscriptions` (form `client_id, client_secret, callback_url, verify_token`)
//!   -> `{id}`, after Strava checked our callback's `hub.challenge`.
//! - Polar: `POST /v3/webhooks` (Basic) `{events, url}` -> `{data: {id, signature_secret_key, ...}}`, after
//!   a PING to the URL; the key is shown once, so it is sealed and stored at once.
//! - Withings: `POST /notify` (Bearer, form `action=subscribe, callbackurl, appli`) -> `{status: 0}`.

use std::sync::Arc;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::connect::{ConnectStore, TokenSet, token_context};
use shared::ids::{TenantId, UserId};
use shared::oauth::App;
use shared::providers::{Overrides, ProviderId};
use shared::subscriptions::{
    SubStatus, Subscription, SubscriptionStore, callback_url, signing_key_context, verification_token,
};
use shared::vault::Vault;
use time::OffsetDateTime;

/// Polar events we subscribe to.
const POLAR_EVENTS: [&str; 3] = ["EXERCISE", "SLEEP", "ACTIVITY_SUMMARY"];

/// Withings notification categories we subscribe each user to: weight (1), activity (16), sleep (44).
const WITHINGS_APPLIS: [u32; 3] = [1, 16, 44];

/// How long a failed Withings subscription waits before the next attempt.
const WITHINGS_RETRY: time::Duration = time::Duration::hours(1);

/// What a tick did to subscriptions.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Upkeep {
    pub created: usize,
    pub renewed: usize,
    pub failed: usize,
}

pub struct Keeper {
    /// Built on the scheduler's own role: the due index reads across tenants.
    pub subs: SubscriptionStore,
    pub connect: ConnectStore,
    pub vault: Arc<Vault>,
    pub http: reqwest::Client,
    pub providers: Overrides,
    /// Where providers reach our webhooks (`TENANTRY_PUBLIC_URL`).
    pub public_url: String,
    /// Renew when less than this is left; `shared::subscriptions::RENEW_BEFORE` unless a test changes it.
    pub renew_before: time::Duration,
}

/// A subscription as the provider answered it.
struct Made {
    id: String,
    expires_at: Option<String>,
    key: Option<String>,
}

/// Backoff after `attempts` failures: 5 minutes doubling, at most a day.
fn backoff(attempts: u32) -> time::Duration {
    time::Duration::minutes(5 * (1_i64 << attempts.min(9))).min(time::Duration::days(1))
}

/// A provider time (any RFC 3339 offset) in our fixed-width UTC form, so it compares as a string.
fn normalized(raw: Option<&str>) -> Option<String> {
    let t = OffsetDateTime::parse(raw?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(shared::time::format(t))
}

fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()
}

async fn json_of(res: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what} answered {status}");
    }
    Ok(body)
}

impl Keeper {
    pub fn new(
        subs: SubscriptionStore,
        connect: ConnectStore,
        vault: Arc<Vault>,
        providers: Overrides,
        public_url: String,
    ) -> Self {
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(15)).build().unwrap_or_default();
        Self { subs, connect, vault, http, providers, public_url, renew_before: shared::subscriptions::RENEW_BEFORE }
    }

    fn url(&self, p: ProviderId, real: &str) -> String {
        self.providers.url(p, real)
    }

    /// Makes, retries and renews the subscriptions due at `now`.
    pub async fn tick(&self, now: OffsetDateTime) -> anyhow::Result<Upkeep> {
        let mut upkeep = Upkeep::default();
        for sub in self.subs.due(&shared::time::format(now), 200).await? {
            let renewing = sub.status == SubStatus::Active;
            match self.upkeep(sub, now).await {
                Ok(true) if renewing => upkeep.renewed += 1,
                Ok(true) => upkeep.created += 1,
                Ok(false) => upkeep.failed += 1,
                Err(e) => {
                    upkeep.failed += 1;
                    tracing::warn!(error = %format!("{e:#}"), "storing a subscription failed");
                }
            }
        }
        if upkeep != Upkeep::default() {
            tracing::info!(created = upkeep.created, renewed = upkeep.renewed, failed = upkeep.failed, "subscriptions");
        }
        Ok(upkeep)
    }

    /// One due subscription; `Ok(true)` when it is now active.
    async fn upkeep(&self, mut sub: Subscription, now: OffsetDateTime) -> anyhow::Result<bool> {
        let (tenant, p) = (sub.tenant_id.clone(), sub.provider);
        let Some(app) = self.connect.open_app(&self.vault, &tenant, p).await? else {
            sub.status = SubStatus::Failed;
            sub.last_error = Some("the tenant has no app at this provider any more".into());
            self.subs.save(&sub, None).await?;
            return Ok(false);
        };
        let renewing = sub.status == SubStatus::Active && sub.id.is_some();
        let result = match (renewing, sub.id.clone()) {
            (true, Some(id)) => match self.renew(p, &app, &id).await {
                Ok(made) => Ok(made),
                // Gone or expired at the provider: make a new one.
                Err(e) => {
                    tracing::info!(tenant_id = %tenant, provider = %p, error = %format!("{e:#}"), "renewal failed; subscribing anew");
                    self.create(&tenant, p, &sub.scope, &app).await
                }
            },
            _ => self.create(&tenant, p, &sub.scope, &app).await,
        };
        match result {
            Ok(made) => {
                if let Some(key) = made.key {
                    sub.key_sealed = Some(self.vault.seal(&signing_key_context(&tenant, p), key.as_bytes()).await?);
                }
                sub.status = SubStatus::Active;
                sub.id = Some(made.id);
                sub.expires_at = made.expires_at;
                sub.client_id = app.client_id.clone();
                sub.attempts = 0;
                sub.last_error = None;
                let renew_at = sub
                    .expires_at
                    .as_deref()
                    .and_then(parse_time)
                    .map(|e| shared::time::format((e - self.renew_before).max(now)));
                self.subs.save(&sub, renew_at.as_deref()).await?;
                tracing::info!(tenant_id = %tenant, provider = %p, renewing, expires_at = ?sub.expires_at, "webhook subscription active");
                Ok(true)
            }
            Err(e) => {
                sub.attempts += 1;
                if !(renewing && sub.is_live(&shared::time::format(now))) {
                    sub.status = SubStatus::Failed;
                }
                sub.last_error = Some(format!("{e:#}"));
                let retry = shared::time::format(now + backoff(sub.attempts));
                self.subs.save(&sub, Some(&retry)).await?;
                tracing::warn!(tenant_id = %tenant, provider = %p, attempts = sub.attempts, error = %format!("{e:#}"), "webhook subscription failed; retried later");
                Ok(false)
            }
        }
    }

    async fn create(&self, tenant: &TenantId, p: ProviderId, scope: &str, app: &App) -> anyhow::Result<Made> {
        let callback = callback_url(&self.public_url, tenant, p);
        let secret = app.client_secret.expose_secret();
        let token = verification_token(secret.as_bytes(), tenant);
        match p {
            ProviderId::Oura => {
                let (event_type, data_type) = scope.split_once('.').context("an Oura scope is event_type.data_type")?;
                let res = self
                    .http
                    .post(self.url(p, "https://api.ouraring.com/v2/webhook/subscription"))
                    .header("x-client-id", &app.client_id)
                    .header("x-client-secret", secret)
                    .json(&json!({"callback_url": callback, "verification_token": token,
                                  "event_type": event_type, "data_type": data_type}))
                    .send()
                    .await
                    .context("calling Oura's subscription endpoint")?;
                let body = json_of(res, "Oura's subscription endpoint").await?;
                let id = body["id"].as_str().context("Oura's answer has no id")?.to_owned();
                Ok(Made { id, expires_at: normalized(body["expiration_time"].as_str()), key: None })
            }
            ProviderId::Strava => {
                let form = [
                    ("client_id", app.client_id.as_str()),
                    ("client_secret", secret),
                    ("callback_url", callback.as_str()),
                    ("verify_token", token.as_str()),
                ];
                let res = self
                    .http
                    .post(self.url(p, "https://www.strava.com/api/v3/push_subscriptions"))
                    .form(&form)
                    .send()
                    .await
                    .context("calling Strava's push subscription endpoint")?;
                let body = json_of(res, "Strava's push subscription endpoint").await?;
                let id =
                    body.get("id").filter(|v| v.is_number() || v.is_string()).context("Strava's answer has no id")?;
                Ok(Made { id: id.as_str().map_or_else(|| id.to_string(), str::to_owned), expires_at: None, key: None })
            }
            ProviderId::Polar => {
                let res = self
                    .http
                    .post(self.url(p, "https://www.polaraccesslink.com/v3/webhooks"))
                    .basic_auth(&app.client_id, Some(secret))
                    .json(&json!({"events": POLAR_EVENTS, "url": callback}))
                    .send()
                    .await
                    .context("calling Polar's webhook endpoint")?;
                let body = json_of(res, "Polar's webhook endpoint").await?;
                let data = if body["data"].is_object() { &body["data"] } else { &body };
                let id = data["id"].as_str().context("Polar's answer has no id")?.to_owned();
                let key =
                    data["signature_secret_key"].as_str().context("Polar's answer has no signature_secret_key")?;
                Ok(Made { id, expires_at: None, key: Some(key.to_owned()) })
            }
            _ => bail!("{p} has no per-app subscription API"),
        }
    }

    async fn renew(&self, p: ProviderId, app: &App, id: &str) -> anyhow::Result<Made> {
        if p != ProviderId::Oura {
            bail!("{p} subscriptions do not expire");
        }
        let res = self
            .http
            .put(self.url(p, &format!("https://api.ouraring.com/v2/webhook/subscription/renew/{id}")))
            .header("x-client-id", &app.client_id)
            .header("x-client-secret", app.client_secret.expose_secret())
            .send()
            .await
            .context("calling Oura's renewal endpoint")?;
        let body = json_of(res, "Oura's renewal endpoint").await?;
        let expires_at =
            normalized(body["expiration_time"].as_str()).context("Oura's answer has no expiration_time")?;
        Ok(Made { id: id.to_owned(), expires_at: Some(expires_at), key: None })
    }

    /// Subscribes a Withings user to notifications with their own token, once; `Ok(true)` when it did now.
    /// A token about to expire is left for the sync worker to refresh (one refresher per connection), and
    /// this waits for a later tick.
    pub async fn ensure_user(&self, tenant: &TenantId, user: &UserId, p: ProviderId) -> anyhow::Result<bool> {
        if p != ProviderId::Withings {
            return Ok(false);
        }
        let now = shared::time::now();
        if let Some(sub) = self.subs.get(tenant, p, user.as_str()).await? {
            let recent = sub.updated_at.as_deref().and_then(parse_time).is_some_and(|t| now - t < WITHINGS_RETRY);
            if sub.status == SubStatus::Active || recent {
                return Ok(false);
            }
        }
        let Some(conn) = self.connect.connection(tenant, user, p).await? else { return Ok(false) };
        let opened = self.vault.open_string(&token_context(tenant, user, p), &conn.tokens_sealed).await?;
        let tokens: TokenSet = serde_json::from_str(opened.expose_secret()).context("stored tokens")?;
        if tokens.expires_at.is_some_and(|e| e < now.unix_timestamp() + 60) {
            return Ok(false);
        }
        let mut sub = Subscription::pending(tenant, p, user.as_str(), "");
        let callback = callback_url(&self.public_url, tenant, p);
        let mut failure = None;
        for appli in WITHINGS_APPLIS {
            let appli = appli.to_string();
            let form = [("action", "subscribe"), ("callbackurl", callback.as_str()), ("appli", appli.as_str())];
            let res = self
                .http
                .post(self.url(p, "https://wbsapi.withings.net/notify"))
                .bearer_auth(&tokens.access_token)
                .form(&form)
                .send()
                .await;
            let status = match res {
                Ok(r) => r.json::<Value>().await.ok().and_then(|b| b["status"].as_i64()),
                Err(_) => None,
            };
            if status != Some(0) {
                failure = Some(format!("Withings notify subscribe (appli {appli}) answered status {status:?}"));
                break;
            }
        }
        sub.status = if failure.is_some() { SubStatus::Failed } else { SubStatus::Active };
        sub.id = failure.is_none().then(|| format!("notify:{}", user.as_str()));
        sub.attempts = u32::from(failure.is_some());
        sub.last_error = failure;
        self.subs.save(&sub, None).await?;
        tracing::info!(tenant_id = %tenant, user_id = %user, provider = %p, status = sub.status.as_str(), "withings notifications");
        Ok(sub.status == SubStatus::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_minutes_up_to_a_day() {
        assert_eq!(backoff(0), time::Duration::minutes(5));
        assert_eq!(backoff(1), time::Duration::minutes(10));
        assert_eq!(backoff(3), time::Duration::minutes(40));
        assert_eq!(backoff(30), time::Duration::days(1));
    }

    #[test]
    fn provider_times_become_fixed_width_utc() {
        assert_eq!(normalized(Some("2026-12-29T01:02:03+01:00")).as_deref(), Some("2026-12-29T00:02:03.000Z"));
        assert_eq!(normalized(Some("soon")), None);
    }
}
