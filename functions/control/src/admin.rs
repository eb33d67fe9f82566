//! The tenant's own admin view: how its service runs, in aggregates only (no user ids, no emails, no data),
//! and its audit log.
//!
//! `GET /v1/admin/stats?days=7&period=YYYY-MM`: users by status, connections by provider and status, sync
//! attempts of the last `days` days and their success rate, Apple Health imports by status, subscriptions
//! by status, and the month's AI tokens. Each figure is one query of the tenant's own partition (or one
//! item), never a table scan; cost grows with the tenant's number of users and connections.
//!
//! `GET /v1/audit?limit=&cursor=`: the audit log, newest first.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::ApiError;
use shared::http::{PageParams, Query, TenantScope, list_body};
use shared::meter::Period;

use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    days: Option<u32>,
    period: Option<String>,
}

/// `{"<a>": n}` from one-field tallies.
fn by_one(t: BTreeMap<Vec<String>, u64>) -> BTreeMap<String, u64> {
    t.into_iter()
        .map(|(k, n)| (k.into_iter().next().filter(|v| !v.is_empty()).unwrap_or("unknown".into()), n))
        .collect()
}

pub async fn stats(
    scope: TenantScope,
    State(app): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let days = q.days.unwrap_or(7);
    if !(1..=31).contains(&days) {
        return Err(ApiError::bad_request("invalid_query", "days must be between 1 and 31"));
    }
    let period =
        Period::parse_or_current(q.period.as_deref()).map_err(|e| ApiError::bad_request("invalid_query", e))?;
    let tenant = &scope.tenant_id;
    let store = app.stores.tenant(tenant).await?;
    let (stats, meter) = (store.stats_store(), store.meter_store(&app.meter_table));
    let (users, connections, imports, billing, sync, usage) = tokio::join!(
        store.tally(tenant, "user#", &["status"]),
        store.tally(tenant, "conn#", &["provider", "status"]),
        store.tally(tenant, "imp#", &["status"]),
        store.tally(tenant, "billing#", &["status"]),
        stats.sum(tenant, shared::time::now(), days),
        meter.tenant_usage(tenant, period),
    );
    let users = by_one(users.map_err(|e| e.into_api("users"))?);
    let mut by_provider: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (key, n) in connections.map_err(|e| e.into_api("connections"))? {
        let (provider, status) = (key.first().cloned().unwrap_or_default(), key.get(1).cloned().unwrap_or_default());
        *by_provider.entry(provider).or_default().entry(status).or_default() += n;
    }
    let sync = sync.map_err(|e| e.into_api("activity"))?;
    let (ok, retried, failed) = (sync["sync_ok"], sync["sync_retried"], sync["sync_failed"]);
    let attempts = ok + retried + failed;
    let (usage, active_users) = usage.map_err(|e| e.into_api("usage"))?;
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    Ok(axum::Json(json!({
        "generated_at": shared::time::now_rfc3339(),
        "users": {"total": total(&users), "by_status": users},
        "connections": {
            "total": by_provider.values().map(total).sum::<u64>(),
            "by_provider": by_provider,
        },
        "sync": {
            "days": days,
            "succeeded": ok,
            "retried": retried,
            "failed": failed,
            // Of the attempts that ended (a retried attempt ends too: the job comes back later).
            "success_rate": if attempts == 0 { Value::Null } else { json!(ok as f64 / attempts as f64) },
        },
        "imports": by_one(imports.map_err(|e| e.into_api("imports"))?),
        "subscriptions": by_one(billing.map_err(|e| e.into_api("billing"))?),
        "ai": {
            "period": period.to_string(),
            "users": active_users,
            "tokens_used": usage.tokens_used,
            "requests": usage.requests,
            "cost_usd": usage.cost_micros as f64 / 1e6,
        },
    }))
    .into_response())
}

pub async fn audit(
    scope: TenantScope,
    State(app): State<AppState>,
    Query(q): Query<PageParams>,
) -> Result<Response, ApiError> {
    let page = q.page()?;
    let store = app.stores.tenant(&scope.tenant_id).await?;
    let (entries, next) = store.audit_store().list(&scope.tenant_id, &page).await.map_err(|e| e.into_api("audit"))?;
    Ok(axum::Json(list_body(entries, next)).into_response())
}
