//! `GET /v1/billing/reconciliation?period=YYYY-MM`: the tenant's metered usage of a month, ledger against
//! reports. For each user and meter event: what the ledger holds, how much of it Stripe took, what is still
//! pending, and what could not be billed (failed, expired, no customer); and, when the tenant's Stripe
//! account has a meter for the event, what Stripe itself has aggregated for the customer over the month.
//! No personal data: user ids, Stripe customer ids and numbers only.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::ApiError;
use shared::dynamo::{Item, get_s};
use shared::http::{Query, TenantScope};
use shared::ids::UserId;
use shared::meter::{Period, ReportStatus};

use crate::AppState;

/// Problem entries listed at most.
const MAX_PROBLEMS: usize = 100;
/// Users read side by side.
const CONCURRENCY: usize = 8;
/// Reported and Stripe's totals within this count as equal (values are decimals).
const EPSILON: f64 = 1e-6;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileQuery {
    period: Option<String>,
    /// `false` skips asking Stripe for its totals.
    stripe: Option<bool>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Amount {
    entries: u64,
    value: f64,
}

impl Amount {
    fn add(&mut self, value: f64) {
        self.entries += 1;
        self.value += value;
    }

    fn merge(&mut self, o: Amount) {
        self.entries += o.entries;
        self.value += o.value;
    }
}

#[derive(Debug, Default, Serialize)]
struct Row {
    user_id: String,
    event_name: String,
    customer_id: Option<String>,
    ledger: Amount,
    by_status: BTreeMap<ReportStatus, Amount>,
    /// What Stripe aggregated for the customer on the event's meter over the month; `None` when unknown.
    stripe_value: Option<f64>,
    status: &'static str,
}

#[derive(Debug, Serialize)]
struct Problem {
    user_id: String,
    entry_id: String,
    status: ReportStatus,
    error: Option<String>,
}

fn value_of(item: &Item) -> f64 {
    item.get("report_value").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

impl Row {
    fn amount(&self, s: ReportStatus) -> Amount {
        self.by_status.get(&s).copied().unwrap_or_default()
    }

    fn judge(&mut self) {
        let reported = self.amount(ReportStatus::Reported).value;
        let unbilled = [ReportStatus::Failed, ReportStatus::Expired, ReportStatus::Unbillable]
            .iter()
            .any(|s| self.amount(*s).entries > 0);
        self.status = if self.stripe_value.is_some_and(|v| (v - reported).abs() > EPSILON) {
            "mismatch"
        } else if self.amount(ReportStatus::Pending).entries > 0 {
            "pending"
        } else if unbilled {
            "unbilled"
        } else {
            "balanced"
        };
    }
}

pub async fn reconciliation(
    scope: TenantScope,
    State(app): State<AppState>,
    Query(q): Query<ReconcileQuery>,
) -> Result<Response, ApiError> {
    let period =
        Period::parse_or_current(q.period.as_deref()).map_err(|e| ApiError::bad_request("invalid_query", e))?;
    let tenant = &scope.tenant_id;
    let tenancy = app.stores.tenant(tenant).await?;
    let meter = tenancy.meter_store(&app.meter_table);
    let billing = tenancy.billing_store();
    let users = meter.period_users(tenant, period).await.map_err(|e| e.into_api("usage"))?;
    let ledgers: Vec<Result<(UserId, Vec<Item>), ApiError>> = futures::stream::iter(users)
        .map(|user| {
            let meter = &meter;
            async move {
                let items = meter.ledger(tenant, &user, period).await.map_err(|e| e.into_api("ledger"))?;
                Ok((user, items))
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut problem_count = 0usize;
    for ledger in ledgers {
        let (user, items) = ledger?;
        for item in &items {
            let (Some(event), Some(status)) =
                (get_s(item, "meter_event"), get_s(item, "report").and_then(ReportStatus::parse))
            else {
                continue;
            };
            let value = value_of(item);
            let row = rows.entry((user.to_string(), event.to_owned())).or_insert_with(|| Row {
                user_id: user.to_string(),
                event_name: event.to_owned(),
                ..Row::default()
            });
            row.ledger.add(value);
            row.by_status.entry(status).or_default().add(value);
            if matches!(status, ReportStatus::Failed | ReportStatus::Expired | ReportStatus::Unbillable) {
                problem_count += 1;
                if problems.len() < MAX_PROBLEMS {
                    problems.push(Problem {
                        user_id: user.to_string(),
                        entry_id: get_s(item, "id").unwrap_or_default().to_owned(),
                        status,
                        error: get_s(item, "report_error").map(str::to_owned),
                    });
                }
            }
        }
    }
    let mut customers: HashMap<String, Option<String>> = HashMap::new();
    for row in rows.values_mut() {
        if !customers.contains_key(&row.user_id) {
            let user = UserId::parse(&row.user_id).map_err(|_| ApiError::internal(anyhow::anyhow!("bad user id")))?;
            let state = billing.state(tenant, &user).await.map_err(|e| e.into_api("billing"))?;
            customers.insert(row.user_id.clone(), state.customer_id);
        }
        row.customer_id = customers.get(&row.user_id).cloned().flatten();
    }
    let stripe = if q.stripe == Some(false) || rows.is_empty() {
        json!({"checked": false})
    } else {
        stripe_totals(&app, tenant, period, &mut rows).await
    };
    let mut totals: BTreeMap<String, (Amount, BTreeMap<ReportStatus, Amount>)> = BTreeMap::new();
    for row in rows.values_mut() {
        row.judge();
        let t = totals.entry(row.event_name.clone()).or_default();
        t.0.merge(row.ledger);
        for (s, a) in &row.by_status {
            t.1.entry(*s).or_default().merge(*a);
        }
    }
    let balanced = rows.values().all(|r| r.status == "balanced");
    let by_event: BTreeMap<String, serde_json::Value> = totals
        .into_iter()
        .map(|(event, (ledger, by_status))| (event, json!({"ledger": ledger, "by_status": by_status})))
        .collect();
    Ok(axum::Json(json!({
        "period": period.to_string(),
        "generated_at": shared::time::now_rfc3339(),
        "balanced": balanced,
        "by_event": by_event,
        "users": rows.into_values().collect::<Vec<_>>(),
        "stripe": stripe,
        "problems": problems,
        "problem_count": problem_count,
    }))
    .into_response())
}

/// Fills in Stripe's own totals where the account has a meter for the event; says what it could not check.
async fn stripe_totals(
    app: &AppState,
    tenant: &shared::ids::TenantId,
    period: Period,
    rows: &mut BTreeMap<(String, String), Row>,
) -> serde_json::Value {
    let t = match crate::tenant(app, tenant).await {
        Ok(t) => t,
        Err(e) => return json!({"checked": false, "error": e.message}),
    };
    let stripe = match crate::stripe(app, &t, tenant).await {
        Ok(s) => s,
        Err(e) => return json!({"checked": false, "error": e.message}),
    };
    let meters = match stripe.meters().await {
        Ok(m) => m,
        Err(e) => return json!({"checked": false, "error": e.message}),
    };
    let (start, end) = (period.start().unix_timestamp(), period.next().start().unix_timestamp());
    let mut missing: Vec<String> = Vec::new();
    for row in rows.values_mut() {
        let Some(meter) = meters.get(&row.event_name) else {
            if !missing.contains(&row.event_name) {
                missing.push(row.event_name.clone());
            }
            continue;
        };
        let Some(customer) = &row.customer_id else { continue };
        match stripe.meter_total(meter, customer, start, end).await {
            Ok(v) => row.stripe_value = Some(v),
            Err(e) => return json!({"checked": false, "error": e.message}),
        }
    }
    json!({"checked": true, "events_without_meter": missing,
           "note": "Stripe aggregates meter events asynchronously: a report minutes old may not show yet"})
}
