//! In-memory state of one provider sandbox: clients, codes, grants, tokens, counters, faults and the rate budget.
//!
//! Every method is synchronous and runs under one mutex; handlers never hold it across an await.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ids;
use crate::provider::Provider;

pub(crate) const CODE_TTL: Duration = Duration::from_secs(600);

/// What the authorize endpoint approved, bound into the code.
#[derive(Debug, Clone)]
pub(crate) struct Approval {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub scope: String,
    pub user: String,
    pub offline: bool,
}

#[derive(Debug)]
struct Code {
    approval: Approval,
    issued: Instant,
    used: bool,
    /// The grant made when the code was redeemed, revoked if the code is presented again (RFC 6749 4.1.2).
    grant: Option<u64>,
}

#[derive(Debug)]
struct Grant {
    client_id: String,
    user: String,
    scope: String,
    refreshable: bool,
    revoked: bool,
}

#[derive(Debug)]
struct AccessToken {
    grant: u64,
    expires: Instant,
}

#[derive(Debug)]
struct RefreshToken {
    grant: u64,
    used: bool,
}

/// The token endpoint's expected failures, each mapped to the provider's own error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) => "invalid_request",
            TokenError::InvalidClient(_) => "invalid_client",
            TokenError::InvalidGrant(_) => "invalid_grant",
            TokenError::UnsupportedGrantType(_) => "unsupported_grant_type",
        }
    }
}

/// Tokens handed out by a successful token request.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: u64,
    pub scope: String,
    pub user: String,
}

/// Who a valid bearer token speaks for.
#[derive(Debug, Clone)]
pub(crate) struct Bearer {
    pub client_id: String,
    pub user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BearerError {
    Unknown,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenFault {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "500")]
    ServerError,
    #[serde(rename = "slow")]
    Slow,
    #[serde(rename = "malformed_json")]
    MalformedJson,
    #[serde(rename = "timeout")]
    Timeout,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataFault {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "500")]
    ServerError,
    #[serde(rename = "429")]
    TooManyRequests,
    #[serde(rename = "slow")]
    Slow,
    /// A page cut off mid-JSON, with a 200.
    #[serde(rename = "malformed_json")]
    MalformedJson,
}

/// The runtime switches, as `GET /sandbox/faults` shows them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Faults {
    pub token: TokenFault,
    pub data: DataFault,
    pub slow_ms: u64,
    pub access_token_ttl_seconds: u64,
    pub rate_limit: u32,
    pub rate_limit_window_seconds: u64,
}

/// A partial update of [`Faults`]: absent fields keep their value, `null` resets a setting to the provider default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsUpdate {
    token: Option<TokenFault>,
    data: Option<DataFault>,
    #[serde(default, deserialize_with = "nullable")]
    slow_ms: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    access_token_ttl_seconds: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    rate_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    rate_limit_window_seconds: Option<Option<u64>>,
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

const DEFAULT_SLOW_MS: u64 = 2_000;

/// What `GET /sandbox/state` counts. The platform's tests assert on these.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Counters {
    pub consents_approved: u64,
    pub consents_denied: u64,
    pub codes_issued: u64,
    pub codes_redeemed: u64,
    pub code_reuse: u64,
    pub token_requests: u64,
    pub refreshes: u64,
    pub revocations: u64,
    pub invalid_grant: u64,
    pub invalid_client: u64,
    pub data_requests: u64,
    pub rate_limited: u64,
    pub registrations: u64,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    used: u32,
}

/// The outcome of spending one request of the data budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
}

#[derive(Debug)]
pub(crate) struct Store {
    provider: Provider,
    /// client_id -> secret pinned by the first token request (trust on first use).
    clients: HashMap<String, Option<String>>,
    codes: HashMap<String, Code>,
    grants: HashMap<u64, Grant>,
    next_grant: u64,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    /// Polar: (client_id, user) pairs registered with `POST /v3/users` -> (member-id, registration date).
    registrations: HashMap<(String, String), (String, String)>,
    pub counters: Counters,
    pub faults: Faults,
    window: Window,
}

impl Store {
    pub fn new(provider: Provider) -> Self {
        let (limit, window) = provider.default_rate_limit();
        Store {
            provider,
            clients: HashMap::new(),
            codes: HashMap::new(),
            grants: HashMap::new(),
            next_grant: 1,
            access: HashMap::new(),
            refresh: HashMap::new(),
            registrations: HashMap::new(),
            counters: Counters::default(),
            faults: Faults {
                token: TokenFault::None,
                data: DataFault::None,
                slow_ms: DEFAULT_SLOW_MS,
                access_token_ttl_seconds: provider.default_access_ttl(),
                rate_limit: limit,
                rate_limit_window_seconds: window,
            },
            window: Window { started: None, used: 0 },
        }
    }

    pub fn apply(&mut self, update: FaultsUpdate) {
        let (limit, window) = self.provider.default_rate_limit();
        if let Some(token) = update.token {
            self.faults.token = token;
        }
        if let Some(data) = update.data {
            self.faults.data = data;
        }
        if let Some(v) = update.slow_ms {
            self.faults.slow_ms = v.unwrap_or(DEFAULT_SLOW_MS);
        }
        if let Some(v) = update.access_token_ttl_seconds {
            self.faults.access_token_ttl_seconds = v.unwrap_or(self.provider.default_access_ttl());
        }
        let mut budget_changed = false;
        if let Some(v) = update.rate_limit {
            self.faults.rate_limit = v.unwrap_or(limit);
            budget_changed = true;
        }
        if let Some(v) = update.rate_limit_window_seconds {
            self.faults.rate_limit_window_seconds = v.unwrap_or(window).max(1);
            budget_changed = true;
        }
        if budget_changed {
            self.window = Window { started: None, used: 0 };
        }
    }

    /// The secret a client pinned at its first token request (webhook signing and subscription calls use it).
    pub fn pinned_secret(&self, client_id: &str) -> Option<String> {
        self.clients.get(client_id).cloned().flatten()
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    pub fn live_grants(&self) -> usize {
        self.grants.values().filter(|g| !g.revoked).count()
    }

    /// Issues a single-use code for an approved consent; the client id becomes known here.
    pub fn issue_code(&mut self, approval: Approval) -> String {
        let now = Instant::now();
        // Used or expired codes are kept an hour, long enough to recognise a replay.
        self.codes.retain(|_, c| now.duration_since(c.issued) < Duration::from_secs(3_600));
        self.clients.entry(approval.client_id.clone()).or_insert(None);
        let code = ids::secret(&format!("{}-code-", self.provider.id()));
        self.codes.insert(code.clone(), Code { approval, issued: now, used: false, grant: None });
        self.counters.codes_issued += 1;
        code
    }

    /// Checks client credentials; the first secret seen for a client id is the one it must keep using.
    pub fn authenticate(&mut self, client_id: &str, secret: &str) -> Result<(), TokenError> {
        let result = match self.clients.get_mut(client_id) {
            None => Err(TokenError::InvalidClient(format!(
                "unknown client_id {client_id:?}: the sandbox learns a client id when a user approves it on the consent page"
            ))),
            Some(pinned @ None) => {
                *pinned = Some(secret.to_string());
                Ok(())
            }
            Some(Some(known)) if known == secret => Ok(()),
            Some(Some(_)) => {
                Err(TokenError::InvalidClient("client_secret differs from the one this client id first used".into()))
            }
        };
        if result.is_err() {
            self.counters.invalid_client += 1;
        }
        result
    }

    /// Redeems a code once. A second presentation fails and revokes what the first one issued.
    pub fn redeem_code(
        &mut self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        pkce_checked: bool,
    ) -> Result<Issued, TokenError> {
        let result = self.redeem_code_inner(client_id, code, redirect_uri, verifier, pkce_checked);
        if matches!(result, Err(TokenError::InvalidGrant(_))) {
            self.counters.invalid_grant += 1;
        }
        result
    }

    fn redeem_code_inner(
        &mut self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        pkce_checked: bool,
    ) -> Result<Issued, TokenError> {
        let entry =
            self.codes.get_mut(code).ok_or_else(|| TokenError::InvalidGrant("unknown authorization code".into()))?;
        if entry.approval.client_id != client_id {
            return Err(TokenError::InvalidGrant("the code was issued to another client".into()));
        }
        if entry.used {
            let grant = entry.grant;
            self.counters.code_reuse += 1;
            if let Some(g) = grant.and_then(|id| self.grants.get_mut(&id)) {
                g.revoked = true;
            }
            return Err(TokenError::InvalidGrant(
                "authorization code already used; the tokens issued for it are now revoked".into(),
            ));
        }
        // Any authenticated attempt consumes the code, so a verifier cannot be guessed twice.
        entry.used = true;
        if entry.issued.elapsed() > CODE_TTL {
            return Err(TokenError::InvalidGrant("authorization code expired (codes live 10 minutes)".into()));
        }
        match redirect_uri {
            None => {
                return Err(TokenError::InvalidGrant(
                    "redirect_uri is required and must match the authorize request".into(),
                ));
            }
            Some(r) if r != entry.approval.redirect_uri => {
                return Err(TokenError::InvalidGrant("redirect_uri does not match the authorize request".into()));
            }
            Some(_) => {}
        }
        if pkce_checked && let Some(challenge) = &entry.approval.code_challenge {
            let verifier = verifier.ok_or_else(|| TokenError::InvalidGrant("code_verifier is required".into()))?;
            if !ids::is_pkce_string(verifier) {
                return Err(TokenError::InvalidGrant("code_verifier must be 43-128 unreserved characters".into()));
            }
            if &ids::s256(verifier) != challenge {
                return Err(TokenError::InvalidGrant("code_verifier does not match the code_challenge".into()));
            }
        }
        let approval = entry.approval.clone();
        let refreshable = self.refreshable(&approval);
        let grant_id = self.next_grant;
        self.next_grant += 1;
        self.grants.insert(
            grant_id,
            Grant {
                client_id: approval.client_id.clone(),
                user: approval.user.clone(),
                scope: approval.scope.clone(),
                refreshable,
                revoked: false,
            },
        );
        if let Some(entry) = self.codes.get_mut(code) {
            entry.grant = Some(grant_id);
        }
        self.counters.codes_redeemed += 1;
        Ok(self.mint(grant_id))
    }

    fn refreshable(&self, approval: &Approval) -> bool {
        match self.provider {
            Provider::Polar => false,
            Provider::GoogleHealth => approval.offline,
            Provider::Whoop => approval.scope.split([' ', ',']).any(|s| s == "offline"),
            Provider::Oura | Provider::Withings | Provider::Strava | Provider::Garmin => true,
        }
    }

    fn mint(&mut self, grant_id: u64) -> Issued {
        let p = self.provider.id();
        let ttl = self.faults.access_token_ttl_seconds;
        let access_token = ids::secret(&format!("{p}-at-"));
        self.access.insert(
            access_token.clone(),
            AccessToken { grant: grant_id, expires: Instant::now() + Duration::from_secs(ttl) },
        );
        let (scope, user, refreshable) = match self.grants.get(&grant_id) {
            Some(g) => (g.scope.clone(), g.user.clone(), g.refreshable),
            None => (String::new(), String::new(), false),
        };
        let refresh_token = refreshable.then(|| {
            let token = ids::secret(&format!("{p}-rt-"));
            self.refresh.insert(token.clone(), RefreshToken { grant: grant_id, used: false });
            token
        });
        Issued { access_token, refresh_token, expires_in: ttl, scope, user }
    }

    /// Swaps a refresh token for new tokens. Each refresh token works once; the answer carries its successor.
    pub fn refresh(&mut self, client_id: &str, token: &str) -> Result<Issued, TokenError> {
        let result = self.refresh_inner(client_id, token);
        if matches!(result, Err(TokenError::InvalidGrant(_))) {
            self.counters.invalid_grant += 1;
        }
        result
    }

    fn refresh_inner(&mut self, client_id: &str, token: &str) -> Result<Issued, TokenError> {
        let entry =
            self.refresh.get_mut(token).ok_or_else(|| TokenError::InvalidGrant("unknown refresh token".into()))?;
        let grant_id = entry.grant;
        let grant =
            self.grants.get(&grant_id).ok_or_else(|| TokenError::InvalidGrant("unknown refresh token".into()))?;
        if grant.client_id != client_id {
            return Err(TokenError::InvalidGrant("the refresh token was issued to another client".into()));
        }
        if entry.used {
            return Err(TokenError::InvalidGrant(
                "refresh token already used: each refresh returns a new one and retires the old".into(),
            ));
        }
        if grant.revoked {
            return Err(TokenError::InvalidGrant("the grant was revoked".into()));
        }
        entry.used = true;
        self.counters.refreshes += 1;
        Ok(self.mint(grant_id))
    }

    /// Resolves a bearer token to the grant it speaks for.
    pub fn bearer(&self, token: &str) -> Result<Bearer, BearerError> {
        let at = self.access.get(token).ok_or(BearerError::Unknown)?;
        let grant = self.grants.get(&at.grant).ok_or(BearerError::Unknown)?;
        if grant.revoked {
            return Err(BearerError::Revoked);
        }
        if Instant::now() >= at.expires {
            return Err(BearerError::Expired);
        }
        Ok(Bearer { client_id: grant.client_id.clone(), user: grant.user.clone() })
    }

    /// Revokes the grant behind an access or refresh token. Returns whether a live grant was revoked.
    pub fn revoke_token(&mut self, token: &str) -> bool {
        let grant_id = self.access.get(token).map(|t| t.grant).or_else(|| self.refresh.get(token).map(|t| t.grant));
        let revoked = match grant_id.and_then(|id| self.grants.get_mut(&id)) {
            Some(g) if !g.revoked => {
                g.revoked = true;
                true
            }
            _ => false,
        };
        if revoked {
            self.counters.revocations += 1;
        }
        revoked
    }

    /// Revokes every grant a user gave a client (deauthorize / deregister). Returns how many were live.
    pub fn revoke_user(&mut self, client_id: &str, user: &str) -> usize {
        let mut n = 0;
        for g in self.grants.values_mut() {
            if g.client_id == client_id && g.user == user && !g.revoked {
                g.revoked = true;
                n += 1;
            }
        }
        self.registrations.remove(&(client_id.to_string(), user.to_string()));
        if n > 0 {
            self.counters.revocations += 1;
        }
        n
    }

    /// Polar: registers a user with a client; `false` when the user or the member-id is already registered.
    pub fn register(&mut self, client_id: &str, user: &str, member_id: &str, at: &str) -> bool {
        let key = (client_id.to_string(), user.to_string());
        let member_taken = self.registrations.iter().any(|((c, _), (m, _))| c == client_id && m == member_id);
        if self.registrations.contains_key(&key) || member_taken {
            return false;
        }
        self.registrations.insert(key, (member_id.to_string(), at.to_string()));
        self.counters.registrations += 1;
        true
    }

    /// Polar: the member-id and registration date of a registered user.
    pub fn registration(&self, client_id: &str, user: &str) -> Option<(String, String)> {
        self.registrations.get(&(client_id.to_string(), user.to_string())).cloned()
    }

    /// Spends one request of the data budget (a fixed window that starts with its first request).
    pub fn spend(&mut self) -> RateDecision {
        let now = Instant::now();
        let window = Duration::from_secs(self.faults.rate_limit_window_seconds);
        let started = match self.window.started {
            Some(s) if now.duration_since(s) < window => s,
            _ => {
                self.window = Window { started: Some(now), used: 0 };
                now
            }
        };
        let limit = self.faults.rate_limit;
        let allowed = self.window.used < limit;
        if allowed {
            self.window.used += 1;
        } else {
            self.counters.rate_limited += 1;
        }
        let reset = window.saturating_sub(now.duration_since(started));
        RateDecision {
            allowed,
            limit,
            remaining: limit.saturating_sub(self.window.used),
            reset_seconds: reset.as_secs() + u64::from(reset.subsec_nanos() > 0),
        }
    }

    /// The budget as it stands, without spending.
    pub fn budget(&self) -> (u32, u32) {
        let limit = self.faults.rate_limit;
        let window = Duration::from_secs(self.faults.rate_limit_window_seconds);
        let used = match self.window.started {
            Some(s) if s.elapsed() < window => self.window.used,
            _ => 0,
        };
        (limit, limit.saturating_sub(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(challenge: Option<&str>) -> Approval {
        Approval {
            client_id: "c1".into(),
            redirect_uri: "http://app.test/cb".into(),
            code_challenge: challenge.map(String::from),
            scope: "daily".into(),
            user: "sandbox-user-1".into(),
            offline: true,
        }
    }

    #[test]
    fn a_code_works_once_and_its_replay_revokes_the_tokens_it_issued() {
        let mut s = Store::new(Provider::Oura);
        let code = s.issue_code(approval(None));
        let issued = s.redeem_code("c1", &code, Some("http://app.test/cb"), None, true);
        let Ok(issued) = issued else { panic!("first redemption failed: {issued:?}") };
        assert!(s.bearer(&issued.access_token).is_ok());
        let again = s.redeem_code("c1", &code, Some("http://app.test/cb"), None, true);
        assert!(matches!(again, Err(TokenError::InvalidGrant(_))));
        assert_eq!(s.bearer(&issued.access_token).err(), Some(BearerError::Revoked));
        assert_eq!((s.counters.code_reuse, s.counters.invalid_grant), (1, 1));
    }

    #[test]
    fn the_first_secret_a_client_presents_is_the_one_it_must_keep() {
        let mut s = Store::new(Provider::Oura);
        assert!(s.authenticate("c1", "x").is_err());
        s.issue_code(approval(None));
        assert!(s.authenticate("c1", "right").is_ok());
        assert!(s.authenticate("c1", "right").is_ok());
        assert!(matches!(s.authenticate("c1", "wrong"), Err(TokenError::InvalidClient(_))));
    }

    #[test]
    fn the_budget_runs_out_and_says_when_it_resets() {
        let mut s = Store::new(Provider::Oura);
        s.apply(FaultsUpdate { rate_limit: Some(Some(2)), ..FaultsUpdate::default() });
        assert!(s.spend().allowed);
        let second = s.spend();
        assert!(second.allowed && second.remaining == 0);
        let third = s.spend();
        assert!(!third.allowed && third.reset_seconds > 0 && third.reset_seconds <= 300);
    }
}
