//! sync-scheduler: on each tick (EventBridge schedule), finds the connections due for a sync through the
//! due-time index (gsi1 `due#<shard>`, sorted by next-sync time; never a scan), spreads their jobs over the
//! tick's interval with SQS delays, and never plans more jobs for a provider than its budget allows.
//! Each planned connection's next sync moves one interval on, by a conditional write, so two overlapping
//! ticks never plan it twice.

use std::collections::HashMap;

use shared::connect::{ConnectStore, DUE_SHARDS, Due, SYNC_INTERVAL};
use shared::providers::ProviderId;
use shared::sync::{SyncJob, SyncQueue, can_sync};

/// The tick's interval: jobs are spread over it.
pub const TICK_SECONDS: i64 = 300;

/// Sync jobs a provider may take per tick, about half its documented request budget for five minutes
/// (a job makes one or two calls): Oura 5,000 per 5 min, WHOOP 100 per min, Strava 200 per 15 min,
/// Withings 120 per min. Per-user limits are the worker's business (429 back to the queue).
pub fn budget(p: ProviderId) -> usize {
    match p {
        ProviderId::Oura => 2_000,
        ProviderId::Whoop => 200,
        ProviderId::Strava => 60,
        ProviderId::Withings => 250,
        _ => 200,
    }
}

pub struct Scheduler {
    pub store: ConnectStore,
    pub queue: SyncQueue,
    /// Budgets per provider and tick; `budget()` unless a test narrows it.
    pub budgets: HashMap<ProviderId, usize>,
}

/// What a tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub planned: usize,
    /// Due, but over the provider's budget for this tick: planned on a later tick.
    pub deferred: usize,
    /// Due, but another tick planned them first.
    pub lost_race: usize,
}

impl Scheduler {
    pub fn new(store: ConnectStore, queue: SyncQueue) -> Self {
        Self { store, queue, budgets: ProviderId::ALL.into_iter().map(|p| (p, budget(p))).collect() }
    }

    pub async fn tick(&self) -> anyhow::Result<Plan> {
        let now = shared::time::now();
        let now_s = shared::time::format(now);
        let mut due: Vec<Due> = Vec::new();
        let read_cap = self.budgets.values().sum::<usize>().min(10_000) as i32;
        for shard in 0..DUE_SHARDS {
            due.extend(self.store.due(shard, &now_s, read_cap).await?);
        }
        // Oldest first across shards, then cut by each provider's budget.
        due.sort_by(|a, b| a.due_sk.cmp(&b.due_sk));
        let mut used: HashMap<ProviderId, usize> = HashMap::new();
        let mut plan = Plan::default();
        let mut chosen = Vec::new();
        for d in due.into_iter().filter(|d| can_sync(d.provider)) {
            let n = used.entry(d.provider).or_default();
            if *n >= self.budgets.get(&d.provider).copied().unwrap_or(0) {
                plan.deferred += 1;
                continue;
            }
            *n += 1;
            chosen.push(d);
        }
        let next = shared::time::format(now + SYNC_INTERVAL);
        let count = chosen.len().max(1) as i64;
        for (i, d) in chosen.iter().enumerate() {
            if !self.store.plan(d, &next).await? {
                plan.lost_race += 1;
                continue;
            }
            // Staggered over the tick so a provider sees a steady trickle, not a burst.
            let delay = (i as i64 * TICK_SECONDS / count) as i32;
            self.queue
                .send_delayed(&SyncJob::new(d.tenant_id.clone(), d.user_id.clone(), d.provider, 2), delay)
                .await?;
            plan.planned += 1;
        }
        tracing::info!(planned = plan.planned, deferred = plan.deferred, lost_race = plan.lost_race, "sync tick");
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_tick_is_an_eventbridge_scheduled_event() {
        let event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/sync-scheduler/tick.json")).unwrap_or_default();
        assert_eq!(event["detail-type"], "Scheduled Event");
    }

    #[test]
    fn every_provider_has_a_budget_within_its_documented_limits() {
        assert!(budget(ProviderId::Oura) <= 5_000 / 2);
        assert!(budget(ProviderId::Whoop) <= 100 * 5 / 2);
        assert!(budget(ProviderId::Strava) <= 200 / 3);
        assert!(budget(ProviderId::Withings) <= 120 * 5 / 2);
    }
}
