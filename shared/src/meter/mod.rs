//! AI metering: plans (a monthly token budget and a request rate per end user), the tenant's LLM keys, the
//! price table, and what one proxied call used. No AWS types here; `store` keeps budgets, rate windows and
//! the ledger in DynamoDB.

pub mod prices;
pub mod report;
pub mod store;

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime};

pub use prices::{ModelPrice, price};
pub use report::{PendingReport, ReportAs, ReportStatus};
pub use store::{
    Admission, Budget, EventOutcome, LedgerEntry, MeterStore, ModelUsage, NewEvent, PlanStore, Reservation, Usage,
};

/// The LLM APIs the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    Anthropic,
    #[serde(rename = "openai")]
    OpenAi,
}

impl LlmProvider {
    pub const ALL: [LlmProvider; 2] = [LlmProvider::Anthropic, LlmProvider::OpenAi];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }

    /// `TENANTRY_ANTHROPIC_URL` / `TENANTRY_OPENAI_URL`: where the proxy sends calls instead of the real API.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Anthropic => "TENANTRY_ANTHROPIC_URL",
            Self::OpenAi => "TENANTRY_OPENAI_URL",
        }
    }

    pub fn real_base_url(self) -> &'static str {
        match self {
            Self::Anthropic => "https://api.anthropic.com",
            Self::OpenAi => "https://api.openai.com",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Self::Anthropic => "Anthropic",
            Self::OpenAi => "OpenAI",
        }
    }
}

impl fmt::Display for LlmProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a tenant's key for `api` is sealed: a tenant-level secret, so a ciphertext moved to another tenant's
/// row does not open.
pub fn llm_key_context(tenant: &crate::ids::TenantId, api: LlmProvider) -> crate::vault::SecretContext {
    crate::vault::SecretContext::tenant(tenant.clone(), format!("llm_key:{api}"))
}

/// A plan's name: 1 to 40 of lowercase letters, digits, `-` and `_` (`free`, `pro`, `team-2025`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanName(String);

impl PlanName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 40
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("`{raw}` is not a plan name: use 1 to 40 of a-z, 0-9, `-` and `_`"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PlanName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<PlanName> for String {
    fn from(p: PlanName) -> String {
        p.0
    }
}

impl fmt::Display for PlanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a plan allows one end user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Tokens (input, output and cache) per calendar month, UTC.
    pub monthly_tokens: u64,
    /// Proxied calls in any 60 seconds.
    pub requests_per_minute: u32,
    /// How far past the budget a call that began under it may finish.
    #[serde(default)]
    pub grace_tokens: u64,
    /// Models the plan may call; absent means every priced model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The Stripe price (in the tenant's own account) a subscription to this plan pays: `price_...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_price_id: Option<String>,
    /// For a usage-based (metered) price: the Stripe billing meter's `event_name` usage is reported under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
}

impl Plan {
    pub fn check(&self) -> Result<(), String> {
        if self.monthly_tokens > 1_000_000_000_000 {
            return Err("monthly_tokens is over 10^12".into());
        }
        if self.requests_per_minute == 0 || self.requests_per_minute > 100_000 {
            return Err("requests_per_minute must be between 1 and 100000".into());
        }
        if self.grace_tokens > self.monthly_tokens.max(1_000_000) {
            return Err("grace_tokens must not exceed monthly_tokens (or 1000000)".into());
        }
        if let Some(models) = &self.models {
            if models.is_empty() {
                return Err("models is empty: leave it out to allow every model".into());
            }
            if let Some(unknown) = models.iter().find(|m| prices::price_any(m).is_none()) {
                return Err(format!(
                    "`{unknown}` is not a model the proxy knows; see GET /v1/settings/llm for the list"
                ));
            }
        }
        if let Some(price) = &self.stripe_price_id {
            let ok = price.len() > 6
                && price.len() <= 255
                && price.starts_with("price_")
                && price.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(format!(
                    "`{price}` is not a Stripe price id: copy the `price_...` id from your Stripe account"
                ));
            }
        }
        if let Some(name) = &self.event_name {
            let ok = !name.is_empty()
                && name.len() <= 100
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !ok {
                return Err("event_name must be 1 to 100 of letters, digits, `_`, `-` and `.`".into());
            }
            if self.stripe_price_id.is_none() {
                return Err("event_name is for a usage-based Stripe price: set stripe_price_id too".into());
            }
        }
        Ok(())
    }

    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|ms| {
            let canonical = prices::price_any(model).map(|p| p.model);
            ms.iter().any(|m| m == model || Some(m.as_str()) == canonical)
        })
    }
}

/// A tenant's metering settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSettings {
    /// The plan of users who have none of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_plan: Option<PlanName>,
    /// When the budget store cannot be reached: refuse calls (false, the default) or let them through
    /// unmetered, flagged with `X-Tenantry-Metering: unavailable` and logged.
    #[serde(default)]
    pub fail_open: bool,
}

/// A calendar month (UTC): the budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u8,
}

impl Period {
    pub fn of(t: OffsetDateTime) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        Self { year: t.year(), month: u8::from(t.month()) }
    }

    pub fn current() -> Self {
        Self::of(crate::time::now())
    }

    /// `YYYY-MM`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || format!("`{raw}` is not a period: use YYYY-MM");
        let (y, m) = raw.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 2000 {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// A `?period=` query value; absent means the current month.
    pub fn parse_or_current(raw: Option<&str>) -> Result<Self, String> {
        raw.map_or_else(|| Ok(Self::current()), Self::parse)
    }

    pub fn start(self) -> OffsetDateTime {
        let month = Month::try_from(self.month).unwrap_or(Month::January);
        Date::from_calendar_date(self.year, month, 1).map_or(OffsetDateTime::UNIX_EPOCH, |d| d.midnight().assume_utc())
    }

    pub fn next(self) -> Self {
        if self.month == 12 { Self { year: self.year + 1, month: 1 } } else { Self { month: self.month + 1, ..self } }
    }

    /// When the budget starts over: the first instant of the next month.
    pub fn reset_at(self) -> OffsetDateTime {
        self.next().start()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// What one call used, as the upstream reported it, in one shape for both APIs. `input` excludes cached
/// input (Anthropic reports it apart; OpenAI's `prompt_tokens` includes `cached_tokens`, which we subtract).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl TokenUsage {
    /// What counts against the budget.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }

    pub fn cache(&self) -> u64 {
        self.cache_read + self.cache_write
    }

    /// Cost in millionths of a dollar at the model's list price.
    pub fn cost_micros(&self, price: &ModelPrice) -> u64 {
        let part = |tokens: u64, per_mtok: f64| tokens as f64 * per_mtok;
        (part(self.input, price.input)
            + part(self.output, price.output)
            + part(self.cache_read, price.cache_read)
            + part(self.cache_write, price.cache_write))
        .round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_resets_at_the_start_of_the_next_month() {
        let p = Period::parse("2026-12").unwrap_or(Period { year: 0, month: 0 });
        assert_eq!(p.to_string(), "2026-12");
        assert_eq!(crate::time::format(p.reset_at()), "2027-01-01T00:00:00.000Z");
        assert!(Period::parse("2026-13").is_err());
        assert!(Period::parse("26-01").is_err());
    }

    #[test]
    fn plan_names_and_plans_are_checked() {
        assert!(PlanName::parse("pro-2026").is_ok());
        assert!(PlanName::parse("Pro").is_err());
        let plan = Plan {
            monthly_tokens: 1000,
            requests_per_minute: 0,
            grace_tokens: 0,
            models: None,
            stripe_price_id: None,
            event_name: None,
        };
        assert!(plan.check().is_err());
        let plan = Plan { requests_per_minute: 10, models: Some(vec!["gpt-9".into()]), ..plan };
        assert!(plan.check().is_err_and(|e| e.contains("gpt-9")));
        let plan = Plan { models: None, stripe_price_id: Some("prod_1".into()), ..plan };
        assert!(plan.check().is_err_and(|e| e.contains("price_")));
        let plan = Plan { stripe_price_id: None, event_name: Some("tokens".into()), ..plan };
        assert!(plan.check().is_err_and(|e| e.contains("stripe_price_id")));
        let plan = Plan { stripe_price_id: Some("price_1Abc".into()), ..plan };
        assert!(plan.check().is_ok());
    }

    #[test]
    fn a_plans_model_list_accepts_dated_versions_of_a_listed_model() {
        let plan = Plan {
            monthly_tokens: 1000,
            requests_per_minute: 10,
            grace_tokens: 0,
            models: Some(vec!["claude-haiku-4-5".into()]),
            stripe_price_id: None,
            event_name: None,
        };
        assert!(plan.allows("claude-haiku-4-5-20251001"));
        assert!(!plan.allows("claude-opus-4-1"));
    }

    #[test]
    fn cost_is_priced_per_million_tokens() {
        let price = ModelPrice {
            provider: LlmProvider::Anthropic,
            model: "m",
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        };
        let u = TokenUsage { input: 1000, output: 100, cache_read: 10_000, cache_write: 0 };
        // 1000*3 + 100*15 + 10000*0.3 micro-dollars.
        assert_eq!(u.cost_micros(&price), 3000 + 1500 + 3000);
        assert_eq!(u.total(), 11_100);
    }
}
