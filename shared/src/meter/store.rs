//! Metering in DynamoDB. Tenant settings (plans, metering settings, sealed LLM keys, a user's plan) live in
//! the tenancy table; budgets, rate windows and the ledger live in `MeterTable`, partitioned by
//! `<tenant>#<user>` so that one busy tenant spreads over its users.
//!
//! A proxied call writes twice: `reserve` (one conditional UpdateItem that checks the budget and the rate
//! window together and takes an estimate) and `settle` (one TransactWriteItems: the period counters move
//! by actual - estimate, and the ledger entry is put only if absent, so a repeated settle counts nothing).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, Update};
use serde::Serialize;
use time::OffsetDateTime;

use super::{LlmProvider, MeterSettings, Period, Plan, PlanName, TokenUsage};
use crate::dynamo::{Item, conditional_failed, get_consistent, get_s, old_item, query_all, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::tenancy::{Status, StoreError};

/// The rate window is kept in slots of this many seconds: the current one and the six before it.
const SLOT_SECS: i64 = 10;
const SLOTS: usize = 6;
/// The share of the budget at which a response carries a warning and `usage.threshold` is sent.
pub const THRESHOLD_PCT: u64 = 80;

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_n(item: &Item, key: &str) -> Option<f64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn get_u(item: &Item, key: &str) -> u64 {
    get_n(item, key).map_or(0, |v| v.max(0.0) as u64)
}

/// Budget and rate state of one user and period, as read.
#[derive(Debug, Default)]
struct Window {
    committed: u64,
    slot: Option<i64>,
    current: u64,
    previous: [u64; SLOTS],
}

impl Window {
    fn of(item: Option<&Item>) -> Self {
        let Some(item) = item else { return Self::default() };
        let mut previous = [0; SLOTS];
        for (i, p) in previous.iter_mut().enumerate() {
            *p = get_u(item, &format!("p{}", i + 1));
        }
        Self {
            committed: get_u(item, "committed"),
            slot: get_n(item, "rw").map(|v| v as i64),
            current: get_u(item, "rc"),
            previous,
        }
    }

    /// When a call stamped at `secs` (in `slot`) is judged: at its stamp, unless the window has moved past it (a
    /// call stamped later was admitted while this one waited on the store, or another instance's clock is
    /// ahead), then at the start of the window's slot, where it is counted. Judged at its own stamp against
    /// the window's counts, its `Retry-After` came out short by the slots between the two.
    fn judged_at(&self, slot: i64, secs: i64) -> (i64, i64) {
        match self.slot {
            Some(rw) if rw > slot => (rw, secs.max(rw * SLOT_SECS)),
            _ => (slot, secs),
        }
    }

    /// Seconds until a call fits in `rpm` again, if none fits now: the slots age out one by one.
    fn wait(&self, slot: i64, now: i64, rpm: u64) -> Option<u64> {
        let counts: Vec<u64> = match self.slot {
            Some(rw) if rw >= slot => std::iter::once(self.current).chain(self.previous).collect(),
            Some(rw) => {
                let k = (slot - rw) as usize;
                let mut all = vec![0; k.min(SLOTS + 1)];
                all.extend(std::iter::once(self.current).chain(self.previous));
                all.truncate(SLOTS + 1);
                all
            }
            None => return None,
        };
        if counts.iter().sum::<u64>() < rpm {
            return None;
        }
        let shifts = (1..=SLOTS + 1).find(|&n| counts[..SLOTS + 1 - n].iter().sum::<u64>() < rpm).unwrap_or(SLOTS + 1);
        Some(((slot + shifts as i64) * SLOT_SECS - now).max(1) as u64)
    }
}

/// A user's budget item as read for one call.
#[derive(Debug)]
pub struct Budget {
    tenant: TenantId,
    user: UserId,
    now: OffsetDateTime,
    item: Option<Item>,
}

/// A reservation taken for one call.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The ledger entry's id (`led_` + ULID); also Stripe's meter event identifier later.
    pub id: String,
    pub period: Period,
    /// Tokens reserved: the input estimate plus `max_output`.
    pub tokens: u64,
    /// `max_tokens` as it may be forwarded: never more than the budget and grace leave.
    pub max_output: u64,
    /// Tokens committed for the period after this reservation (settled use plus calls in flight).
    pub committed: u64,
    pub limit: u64,
    /// This reservation took the user past [`THRESHOLD_PCT`] for the first time this period.
    pub crossed_threshold: bool,
}

impl Reservation {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.committed)
    }

    pub fn over_threshold(&self) -> bool {
        self.committed * 100 >= self.limit * THRESHOLD_PCT
    }
}

#[derive(Debug)]
pub enum Admission {
    Admitted(Reservation),
    BudgetExhausted { committed: u64, limit: u64, reset_at: OffsetDateTime },
    RateLimited { retry_after_secs: u64 },
}

/// One settled call (or meter event) in the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    pub id: String,
    pub provider: LlmProvider,
    /// The priced model name (dated versions fold into it).
    pub model: String,
    pub usage: TokenUsage,
    pub cost_micros: u64,
    pub stream: bool,
    /// False when the stream ended before the upstream's final usage (a dropped connection).
    pub complete: bool,
    pub created_at: String,
    /// Reported to Stripe as this meter event (the plan is usage-billed); `None` for the rest.
    pub report_as: Option<super::report::ReportAs>,
}

/// A user's (or the tenant's) use of one period.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_tokens: u64,
    pub tokens_used: u64,
    pub requests: u64,
    pub cost_micros: u64,
    /// Reserved for calls still running.
    pub in_flight_tokens: u64,
    pub by_model: BTreeMap<String, ModelUsage>,
    pub events: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_tokens: u64,
    pub requests: u64,
    pub cost_micros: u64,
}

impl Usage {
    fn of(item: &Item) -> Self {
        let mut u = Usage {
            input_tokens: get_u(item, "input_tokens"),
            output_tokens: get_u(item, "output_tokens"),
            cache_tokens: get_u(item, "cache_read_tokens") + get_u(item, "cache_write_tokens"),
            requests: get_u(item, "requests"),
            cost_micros: get_u(item, "cost_micros"),
            ..Default::default()
        };
        u.tokens_used = u.input_tokens + u.output_tokens + u.cache_tokens;
        u.in_flight_tokens = get_u(item, "committed").saturating_sub(u.tokens_used);
        for (key, v) in item {
            let Some(value) = v.as_n().ok().and_then(|v| v.parse::<f64>().ok()) else { continue };
            if let Some(name) = key.strip_prefix("ev#") {
                u.events.insert(name.to_owned(), value);
                continue;
            }
            let Some((field, model)) = key.split_once('#') else { continue };
            let m = u.by_model.entry(model.to_owned());
            let v = value.max(0.0) as u64;
            match field {
                "m_in" => m.or_default().input_tokens += v,
                "m_out" => m.or_default().output_tokens += v,
                "m_cache" => m.or_default().cache_tokens += v,
                "m_req" => m.or_default().requests += v,
                "m_cost" => m.or_default().cost_micros += v,
                _ => {}
            }
        }
        u
    }

    fn add(&mut self, o: &Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_tokens += o.cache_tokens;
        self.tokens_used += o.tokens_used;
        self.requests += o.requests;
        self.cost_micros += o.cost_micros;
        self.in_flight_tokens += o.in_flight_tokens;
        for (k, m) in &o.by_model {
            let e = self.by_model.entry(k.clone()).or_default();
            *e = ModelUsage {
                input_tokens: e.input_tokens + m.input_tokens,
                output_tokens: e.output_tokens + m.output_tokens,
                cache_tokens: e.cache_tokens + m.cache_tokens,
                requests: e.requests + m.requests,
                cost_micros: e.cost_micros + m.cost_micros,
            };
        }
        for (k, v) in &o.events {
            *self.events.entry(k.clone()).or_default() += v;
        }
    }
}

/// A tenant's own meter event, to record once per idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub name: &'a str,
    pub value: f64,
    pub key: &'a str,
    pub at: OffsetDateTime,
    /// Reported to Stripe as this, when the user's plan is usage-billed.
    pub report: Option<&'a super::report::ReportAs>,
}

/// What a recorded meter event came to.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    Recorded {
        id: String,
    },
    /// The idempotency key was used before with the same event: nothing counted again.
    Duplicate {
        id: String,
    },
    /// The key was used before for a different event.
    KeyReused,
}

/// A tenant's plans, metering settings, sealed LLM keys and users' plans, in the tenancy table.
#[derive(Clone)]
pub struct PlanStore {
    client: Client,
    tenancy_table: String,
}

/// Budgets, rate windows, usage counters and the ledger, in the meter table.
#[derive(Clone)]
pub struct MeterStore {
    client: Client,
    meter_table: String,
}

fn user_pk(tenant: &TenantId, user: &UserId) -> String {
    format!("{tenant}#{user}")
}

fn new_ledger_id() -> String {
    format!("led_{}", ulid::Ulid::new().to_string().to_lowercase())
}

impl PlanStore {
    pub fn new(client: Client, tenancy_table: impl Into<String>) -> Self {
        Self { client, tenancy_table: tenancy_table.into() }
    }

    async fn get_doc<T: serde::de::DeserializeOwned>(
        &self,
        tenant: &TenantId,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        let item =
            get_consistent(&self.client, &self.tenancy_table, tenant.as_str(), sk, "reading metering settings").await?;
        Ok(item.as_ref().and_then(|i| get_s(i, "doc")).and_then(|d| serde_json::from_str(d).ok()))
    }

    async fn put_doc(&self, tenant: &TenantId, sk: &str, doc: &impl Serialize) -> Result<(), StoreError> {
        let doc = serde_json::to_string(doc).map_err(|e| StoreError::Unavailable(e.into()))?;
        self.client
            .put_item()
            .table_name(&self.tenancy_table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(sk))
            .item("doc", s(doc))
            .item("updated_at", s(crate::time::now_rfc3339()))
            .send()
            .await
            .map_err(unavailable("storing metering settings"))?;
        Ok(())
    }

    pub async fn put_plan(&self, tenant: &TenantId, name: &PlanName, plan: &Plan) -> Result<(), StoreError> {
        self.put_doc(tenant, &format!("plan#{name}"), plan).await
    }

    pub async fn get_plan(&self, tenant: &TenantId, name: &PlanName) -> Result<Option<Plan>, StoreError> {
        self.get_doc(tenant, &format!("plan#{name}")).await
    }

    pub async fn list_plans(&self, tenant: &TenantId) -> Result<Vec<(PlanName, Plan)>, StoreError> {
        let items = self.query_prefix(tenant.as_str(), "plan#").await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let name = PlanName::parse(get_s(i, "sk")?.strip_prefix("plan#")?).ok()?;
                Some((name, serde_json::from_str(get_s(i, "doc")?).ok()?))
            })
            .collect())
    }

    pub async fn delete_plan(&self, tenant: &TenantId, name: &PlanName) -> Result<(), StoreError> {
        crate::dynamo::delete_existing(
            &self.client,
            &self.tenancy_table,
            tenant.as_str(),
            &format!("plan#{name}"),
            "deleting a plan",
        )
        .await
    }

    pub async fn settings(&self, tenant: &TenantId) -> Result<MeterSettings, StoreError> {
        Ok(self.get_doc(tenant, "meter_settings").await?.unwrap_or_default())
    }

    pub async fn put_settings(&self, tenant: &TenantId, settings: &MeterSettings) -> Result<(), StoreError> {
        self.put_doc(tenant, "meter_settings", settings).await
    }

    /// Stores a sealed LLM key with a hint (its last four characters) that may be shown.
    pub async fn put_llm_key(
        &self,
        tenant: &TenantId,
        provider: LlmProvider,
        sealed: &str,
        hint: &str,
    ) -> Result<String, StoreError> {
        let now = crate::time::now_rfc3339();
        self.client
            .put_item()
            .table_name(&self.tenancy_table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("llm#{provider}")))
            .item("key", s(sealed))
            .item("hint", s(hint))
            .item("updated_at", s(&now))
            .send()
            .await
            .map_err(unavailable("storing an LLM key"))?;
        Ok(now)
    }

    /// The sealed key, its hint and when it was set.
    pub async fn llm_key(
        &self,
        tenant: &TenantId,
        provider: LlmProvider,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        let item = get_consistent(
            &self.client,
            &self.tenancy_table,
            tenant.as_str(),
            &format!("llm#{provider}"),
            "reading an LLM key",
        )
        .await?;
        Ok(item.and_then(|i| {
            Some((
                get_s(&i, "key")?.to_owned(),
                get_s(&i, "hint").unwrap_or_default().to_owned(),
                get_s(&i, "updated_at").unwrap_or_default().to_owned(),
            ))
        }))
    }

    pub async fn delete_llm_key(&self, tenant: &TenantId, provider: LlmProvider) -> Result<(), StoreError> {
        crate::dynamo::delete_existing(
            &self.client,
            &self.tenancy_table,
            tenant.as_str(),
            &format!("llm#{provider}"),
            "deleting an LLM key",
        )
        .await
    }

    /// A user's status and own plan; `NotFound` for a user the tenant does not have.
    pub async fn user_plan(&self, tenant: &TenantId, user: &UserId) -> Result<(Status, Option<PlanName>), StoreError> {
        let item = get_consistent(
            &self.client,
            &self.tenancy_table,
            tenant.as_str(),
            &format!("user#{user}"),
            "reading a user",
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        let status = get_s(&item, "status").and_then(Status::parse).unwrap_or(Status::Active);
        // A deleted user waiting for its purge is absent here too.
        if status == Status::Deleted {
            return Err(StoreError::NotFound);
        }
        Ok((status, get_s(&item, "plan").and_then(|p| PlanName::parse(p).ok())))
    }

    /// The plan that applies to a user: their own, else the tenant's default; its name and the plan (`None`
    /// when the name is of a plan since deleted).
    pub async fn effective_plan(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> Result<Option<(PlanName, Option<Plan>)>, StoreError> {
        let (_, own) = self.user_plan(tenant, user).await?;
        let name = match own {
            Some(p) => p,
            None => match self.settings(tenant).await?.default_plan {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let plan = self.get_plan(tenant, &name).await?;
        Ok(Some((name, plan)))
    }

    /// Gives a user a plan (`None`: back to the tenant's default).
    pub async fn set_user_plan(
        &self,
        tenant: &TenantId,
        user: &UserId,
        plan: Option<&PlanName>,
    ) -> Result<(), StoreError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.tenancy_table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(format!("user#{user}")))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()));
        let req = match plan {
            Some(p) => req
                .update_expression("SET #plan = :p, updated_at = :now")
                .expression_attribute_names("#plan", "plan")
                .expression_attribute_values(":p", s(p.as_str())),
            None => {
                req.update_expression("REMOVE #plan SET updated_at = :now").expression_attribute_names("#plan", "plan")
            }
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(unavailable("setting a user's plan")(e)),
        }
    }

    async fn query_prefix(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.tenancy_table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":p", s(prefix));
        query_all(query, "listing metering settings").await
    }
}

impl MeterStore {
    pub fn new(client: Client, meter_table: impl Into<String>) -> Self {
        Self { client, meter_table: meter_table.into() }
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn table(&self) -> &str {
        &self.meter_table
    }

    /// Checks the plan's budget and rate for one call and reserves `input_estimate + max_output` tokens in one
    /// conditional write. `max_output` is lowered to what the budget and grace leave; a call that would
    /// not fit one output token is refused. A write that loses a race (another call moved the window or
    /// the budget between read and write) re-decides on the item DynamoDB returns with the failure.
    pub async fn reserve(
        &self,
        tenant: &TenantId,
        user: &UserId,
        plan: &Plan,
        input_estimate: u64,
        max_output: u64,
        now: OffsetDateTime,
    ) -> Result<Admission, StoreError> {
        let budget = self.budget(tenant, user, now).await?;
        self.reserve_on(budget, plan, input_estimate, max_output).await
    }

    /// Reads the budget item of `now`'s period: the first half of [`Self::reserve`], for a caller that reads it
    /// side by side with other things.
    pub async fn budget(&self, tenant: &TenantId, user: &UserId, now: OffsetDateTime) -> Result<Budget, StoreError> {
        let (period, pk) = (Period::of(now), user_pk(tenant, user));
        let sk = format!("period#{period}");
        let item = get_consistent(&self.client, &self.meter_table, &pk, &sk, "reading a budget").await?;
        Ok(Budget { tenant: tenant.clone(), user: user.clone(), now, item })
    }

    /// The second half of [`Self::reserve`]: decides on the budget as read and writes the reservation.
    pub async fn reserve_on(
        &self,
        budget: Budget,
        plan: &Plan,
        input_estimate: u64,
        max_output: u64,
    ) -> Result<Admission, StoreError> {
        let Budget { tenant, user, now, mut item } = budget;
        let period = Period::of(now);
        let pk = user_pk(&tenant, &user);
        let sk = format!("period#{period}");
        let (limit, rpm) = (plan.monthly_tokens, u64::from(plan.requests_per_minute));
        let (mut secs, mut slot) = (now.unix_timestamp(), now.unix_timestamp().div_euclid(SLOT_SECS));
        for _ in 0..6 {
            let w = Window::of(item.as_ref());
            (slot, secs) = w.judged_at(slot, secs);
            let exhausted = Admission::BudgetExhausted { committed: w.committed, limit, reset_at: period.reset_at() };
            if w.committed >= limit {
                return Ok(exhausted);
            }
            let room = (limit + plan.grace_tokens).saturating_sub(w.committed + input_estimate);
            let out = max_output.min(room);
            if out == 0 {
                return Ok(exhausted);
            }
            if let Some(retry_after_secs) = w.wait(slot, secs, rpm) {
                return Ok(Admission::RateLimited { retry_after_secs });
            }
            let tokens = input_estimate + out;
            let mut values: HashMap<String, AttributeValue> = HashMap::from([
                (":tokens".into(), n(tokens)),
                (":limit".into(), n(limit)),
                (":bcap".into(), n((limit + plan.grace_tokens).saturating_sub(tokens))),
                (":g".into(), s(format!("{tenant}#{period}"))),
                (":u".into(), s(user.as_str())),
                (":one".into(), n(1)),
                (":slot".into(), n(slot)),
            ]);
            let budget = "(attribute_not_exists(committed) OR (committed < :limit AND committed <= :bcap))";
            let mut sets = vec!["gsi1pk = :g".to_owned(), "gsi1sk = :u".to_owned()];
            let mut adds = vec!["committed :tokens".to_owned()];
            let rate = match w.slot {
                Some(rw) if rw == slot => {
                    // The same slot: the earlier slots are fixed.
                    values.insert(":rw".into(), n(rw));
                    values.insert(":rcap".into(), n(rpm.saturating_sub(w.previous.iter().sum::<u64>())));
                    adds.push("rc :one".into());
                    "rw = :rw AND rc < :rcap".to_owned()
                }
                Some(rw) => {
                    // Later slots: shift the counts by k, keeping what is still inside the window.
                    let k = (slot - rw) as usize;
                    values.insert(":rw".into(), n(rw));
                    values.insert(":zero".into(), n(0));
                    sets.push("rw = :slot".into());
                    sets.push("rc = :one".into());
                    for j in 1..=SLOTS {
                        let from = match j.cmp(&k) {
                            std::cmp::Ordering::Less => ":zero".to_owned(),
                            std::cmp::Ordering::Equal => "if_not_exists(rc, :zero)".to_owned(),
                            std::cmp::Ordering::Greater => format!("if_not_exists(p{}, :zero)", j - k),
                        };
                        sets.push(format!("p{j} = {from}"));
                    }
                    if k <= SLOTS {
                        let kept: u64 = w.previous[..SLOTS - k].iter().sum();
                        values.insert(":rcap".into(), n(rpm.saturating_sub(kept)));
                        "rw = :rw AND rc < :rcap".to_owned()
                    } else {
                        "rw = :rw".to_owned()
                    }
                }
                None => {
                    values.insert(":zero".into(), n(0));
                    sets.push("rw = :slot".into());
                    sets.push("rc = :one".into());
                    for j in 1..=SLOTS {
                        sets.push(format!("p{j} = :zero"));
                    }
                    "attribute_not_exists(rw)".to_owned()
                }
            };
            if !sets.iter().any(|s| s.contains(":slot")) {
                values.remove(":slot");
            }
            let result = self
                .client
                .update_item()
                .table_name(&self.meter_table)
                .key("pk", s(&pk))
                .key("sk", s(&sk))
                .update_expression(format!("SET {} ADD {}", sets.join(", "), adds.join(", ")))
                .condition_expression(format!("{budget} AND {rate}"))
                .set_expression_attribute_values(Some(values))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match result {
                Ok(written) => {
                    let committed = written.attributes.as_ref().map_or(tokens, |a| get_u(a, "committed"));
                    let before = committed.saturating_sub(tokens);
                    let crossing = before * 100 < limit * THRESHOLD_PCT && committed * 100 >= limit * THRESHOLD_PCT;
                    let crossed_threshold = crossing && self.mark_threshold(&pk, &sk).await;
                    return Ok(Admission::Admitted(Reservation {
                        id: new_ledger_id(),
                        period,
                        tokens,
                        max_output: out,
                        committed,
                        limit,
                        crossed_threshold,
                    }));
                }
                Err(e) if conditional_failed(&e) => item = old_item(&e),
                Err(e) => return Err(unavailable("reserving tokens")(e)),
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!("the budget kept changing under six attempts to reserve")))
    }

    /// The first call past the threshold in a period marks it, so `usage.threshold` goes out once.
    async fn mark_threshold(&self, pk: &str, sk: &str) -> bool {
        let out = self
            .client
            .update_item()
            .table_name(&self.meter_table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("SET threshold_at = :now")
            .condition_expression("attribute_not_exists(threshold_at)")
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .send()
            .await;
        match out {
            Ok(_) => true,
            Err(e) if conditional_failed(&e) => false,
            Err(e) => {
                tracing::warn!(error = ?e, "could not mark the usage threshold");
                false
            }
        }
    }

    /// Settles a reservation to what the call used and puts its ledger entry, in one transaction that a
    /// repeat (same entry id) cannot count twice. Retried on transient failures: a lost settle is lost usage.
    pub async fn settle(
        &self,
        tenant: &TenantId,
        user: &UserId,
        r: &Reservation,
        entry: &LedgerEntry,
    ) -> Result<(), StoreError> {
        let pk = user_pk(tenant, user);
        let u = entry.usage;
        let delta = u.total() as i64 - r.tokens as i64;
        let update = Update::builder()
            .table_name(&self.meter_table)
            .key("pk", s(&pk))
            .key("sk", s(format!("period#{}", r.period)))
            .update_expression(
                "ADD committed :delta, input_tokens :i, output_tokens :o, cache_read_tokens :cr, \
                 cache_write_tokens :cw, cost_micros :c, requests :one, #mi :i, #mo :o, #mc :cache, #mcost :c, #mreq :one",
            )
            .expression_attribute_names("#mi", format!("m_in#{}", entry.model))
            .expression_attribute_names("#mo", format!("m_out#{}", entry.model))
            .expression_attribute_names("#mc", format!("m_cache#{}", entry.model))
            .expression_attribute_names("#mcost", format!("m_cost#{}", entry.model))
            .expression_attribute_names("#mreq", format!("m_req#{}", entry.model))
            .expression_attribute_values(":delta", n(delta))
            .expression_attribute_values(":i", n(u.input))
            .expression_attribute_values(":o", n(u.output))
            .expression_attribute_values(":cr", n(u.cache_read))
            .expression_attribute_values(":cw", n(u.cache_write))
            .expression_attribute_values(":cache", n(u.cache()))
            .expression_attribute_values(":c", n(entry.cost_micros))
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let put = Put::builder()
            .table_name(&self.meter_table)
            .item("pk", s(&pk))
            .item("sk", s(format!("ledger#{}#{}", r.period, entry.id)))
            .item("kind", s("llm"))
            .item("id", s(&entry.id))
            .item("provider", s(entry.provider.as_str()))
            .item("model", s(&entry.model))
            .item("input_tokens", n(u.input))
            .item("output_tokens", n(u.output))
            .item("cache_read_tokens", n(u.cache_read))
            .item("cache_write_tokens", n(u.cache_write))
            .item("tokens", n(u.total()))
            .item("cost_micros", n(entry.cost_micros))
            .item("stream", AttributeValue::Bool(entry.stream))
            .item("complete", AttributeValue::Bool(entry.complete))
            .item("created_at", s(&entry.created_at))
            .condition_expression("attribute_not_exists(sk)");
        let at = crate::time::parse(&entry.created_at).map_or(0, |t| t.unix_timestamp());
        let put = super::report::with_report(put, &entry.id, entry.report_as.as_ref(), at)
            .build()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=4 {
            let out = self
                .client
                .transact_write_items()
                .transact_items(aws_sdk_dynamodb::types::TransactWriteItem::builder().update(update.clone()).build())
                .transact_items(aws_sdk_dynamodb::types::TransactWriteItem::builder().put(put.clone()).build())
                .send()
                .await;
            match out {
                Ok(_) => return Ok(()),
                Err(e) if already_settled(&e) => return Ok(()),
                Err(e) if attempt == 4 => return Err(unavailable("settling a call's usage")(e)),
                Err(e) => {
                    tracing::warn!(error = ?e, attempt, "settling failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
        Ok(())
    }

    /// Gives back a reservation whose call used nothing (the upstream refused it or was down).
    pub async fn release(&self, tenant: &TenantId, user: &UserId, r: &Reservation) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.meter_table)
            .key("pk", s(user_pk(tenant, user)))
            .key("sk", s(format!("period#{}", r.period)))
            .update_expression("ADD committed :neg")
            .expression_attribute_values(":neg", n(-(r.tokens as i64)))
            .send()
            .await
            .map_err(unavailable("releasing a reservation"))?;
        Ok(())
    }

    /// One user's use of a period.
    pub async fn usage(&self, tenant: &TenantId, user: &UserId, period: Period) -> Result<Usage, StoreError> {
        let item = get_consistent(
            &self.client,
            &self.meter_table,
            &user_pk(tenant, user),
            &format!("period#{period}"),
            "reading usage",
        )
        .await?;
        Ok(item.as_ref().map(Usage::of).unwrap_or_default())
    }

    /// The tenant's use of a period, summed over its users, and how many users it counts.
    pub async fn tenant_usage(&self, tenant: &TenantId, period: Period) -> Result<(Usage, u64), StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.meter_table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :g")
            .expression_attribute_values(":g", s(format!("{tenant}#{period}")));
        let items = query_all(query, "summing a tenant's usage").await?;
        let mut total = Usage::default();
        for item in &items {
            total.add(&Usage::of(item));
        }
        Ok((total, items.len() as u64))
    }

    /// The ledger of one user and period, oldest first.
    pub async fn ledger(&self, tenant: &TenantId, user: &UserId, period: Period) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.meter_table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(user_pk(tenant, user)))
            .expression_attribute_values(":p", s(format!("ledger#{period}#")))
            .consistent_read(true);
        query_all(query, "reading the ledger").await
    }

    /// Counts a tenant's own meter event once per idempotency key: the key's marker, the period counter and
    /// the ledger entry are written in one transaction.
    pub async fn record_event(
        &self,
        tenant: &TenantId,
        user: &UserId,
        event: &NewEvent<'_>,
    ) -> Result<EventOutcome, StoreError> {
        let NewEvent { name, value, key, at, report } = *event;
        let pk = user_pk(tenant, user);
        let period = Period::of(at);
        let id = new_ledger_id();
        let marker_sk = format!("evkey#{key}");
        let at_text = crate::time::format(at);
        let tx = |b: aws_sdk_dynamodb::types::builders::TransactWriteItemBuilder| b.build();
        let marker = Put::builder()
            .table_name(&self.meter_table)
            .item("pk", s(&pk))
            .item("sk", s(&marker_sk))
            .item("id", s(&id))
            .item("event_name", s(name))
            .item("value", n(value))
            .item("timestamp", s(&at_text))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let counter = Update::builder()
            .table_name(&self.meter_table)
            .key("pk", s(&pk))
            .key("sk", s(format!("period#{period}")))
            .update_expression("ADD #ev :v SET gsi1pk = :g, gsi1sk = :u")
            .expression_attribute_names("#ev", format!("ev#{name}"))
            .expression_attribute_values(":v", n(value))
            .expression_attribute_values(":g", s(format!("{tenant}#{period}")))
            .expression_attribute_values(":u", s(user.as_str()))
            .build()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let ledger = Put::builder()
            .table_name(&self.meter_table)
            .item("pk", s(&pk))
            .item("sk", s(format!("ledger#{period}#{id}")))
            .item("kind", s("event"))
            .item("id", s(&id))
            .item("event_name", s(name))
            .item("value", n(value))
            .item("idempotency_key", s(key))
            .item("created_at", s(&at_text));
        let ledger = super::report::with_report(ledger, &id, report, at.unix_timestamp())
            .build()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let out = self
            .client
            .transact_write_items()
            .transact_items(tx(aws_sdk_dynamodb::types::TransactWriteItem::builder().put(marker)))
            .transact_items(tx(aws_sdk_dynamodb::types::TransactWriteItem::builder().update(counter)))
            .transact_items(tx(aws_sdk_dynamodb::types::TransactWriteItem::builder().put(ledger)))
            .send()
            .await;
        match out {
            Ok(_) => Ok(EventOutcome::Recorded { id }),
            Err(e) if already_settled(&e) => {
                let item = get_consistent(&self.client, &self.meter_table, &pk, &marker_sk, "reading an event key")
                    .await?
                    .ok_or_else(|| StoreError::Unavailable(anyhow::anyhow!("the event key vanished")))?;
                // A retry without a timestamp gets a later "now": the event is the same by name and value.
                let same = get_s(&item, "event_name") == Some(name) && get_n(&item, "value") == Some(value);
                let id = get_s(&item, "id").unwrap_or_default().to_owned();
                Ok(if same { EventOutcome::Duplicate { id } } else { EventOutcome::KeyReused })
            }
            Err(e) => Err(unavailable("recording a meter event")(e)),
        }
    }
}

/// A transaction refused because an item it puts only-if-absent was there: the write happened before.
fn already_settled<E: ProvideErrorMetadata, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool {
    let Some(service) = e.as_service_error() else { return false };
    service.code() == Some("TransactionCanceledException")
        && service.message().is_some_and(|m| m.contains("ConditionalCheckFailed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(slot: i64, current: u64, previous: [u64; SLOTS]) -> Window {
        Window { committed: 0, slot: Some(slot), current, previous }
    }

    #[test]
    fn a_full_window_waits_until_enough_slots_age_out() {
        // 10 rpm, all 10 calls in the current slot (100): nothing fits until that slot leaves the window,
        // seven slots later.
        let w = window(100, 10, [0; SLOTS]);
        assert_eq!(w.wait(100, 1005, 10), Some(1070 - 1005));
        // Spread over the window, the oldest slot leaving frees room.
        let w = window(100, 1, [1, 1, 1, 1, 1, 5]);
        assert_eq!(w.wait(100, 1000, 10), Some(10));
        assert_eq!(w.wait(100, 1000, 12), None);
    }

    #[test]
    fn a_call_that_waited_while_the_window_moved_on_is_judged_in_the_windows_slot() {
        // 10 rpm, all used in slot 101 by calls stamped after ours (1009, slot 100), which waited on the store.
        let w = window(101, 10, [0; SLOTS]);
        let (slot, secs) = w.judged_at(100, 1009);
        assert_eq!((slot, secs), (101, 1010));
        // Slot 101 leaves the window at slot 108: a retry after 70 s fits, one after 61 s (judged at its own
        // stamp) would be refused again.
        assert_eq!(w.wait(slot, secs, 10), Some(70));
        assert_eq!(w.wait(108, 1080, 10), None);
        assert!(w.wait(107, 1070, 10).is_some());
        // A window at or behind the call's slot changes nothing.
        assert_eq!(w.judged_at(101, 1015), (101, 1015));
        assert_eq!(w.judged_at(103, 1030), (103, 1030));
    }

    #[test]
    fn a_window_read_slots_ago_counts_only_what_is_still_inside() {
        let w = window(100, 4, [3, 3, 0, 0, 0, 0]);
        // Two slots later: current 0, then 0, 4, 3, 3 = 10 in the window.
        // Slot 98 leaves the window at slot 105.
        assert_eq!(w.wait(102, 1020, 10), Some(1050 - 1020));
        assert_eq!(w.wait(102, 1020, 11), None);
        // Past the whole window, nothing counts.
        assert_eq!(w.wait(108, 1080, 1), None);
    }
}
