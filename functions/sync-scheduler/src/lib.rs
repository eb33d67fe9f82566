//! sync-scheduler: on each tick (EventBridge schedule), finds the connections due for a sync through the
//! due-time index (gsi1 `due#<shard>`, sorted by next-sync time; never a scan), spreads their jobs over the
//! tick's interval with SQS delays, and never plans more jobs for a provider than its budget allows.
//! Each planned connection's next sync moves one interval on, by a conditional write, so two overlapping
//! ticks never plan it twice.
//!
//! Polling fallback: while a connection's webhooks are live (a verified event within `WEBHOOK_SILENCE`, and,
//! for providers with a subscription API, a live subscription), a due connection synced within
//! `WEBHOOK_POLL_INTERVAL` rests instead (no job; its next check moves to six hours after its last sync).
//! When its webhooks fall silent, or the subscription expires or fails, it is polled hourly again.
//!
//! Per-user limit: at most `MAX_JOBS_PER_USER_PER_TICK` jobs for one user per tick (a user with several
//! connections due at once gets the rest on the next tick), so one person's data partition and their
//! providers' per-user budgets see a trickle, never a burst. Each connection is planned at most once per
//! interval (the due index), and `calls_per_job` times the jobs a day stays within every per-user limit
//! we know of (see the test below and docs/sync.md).
//!
//! The tick also keeps webhook subscriptions (`subscriptions::Keeper`): makes, retries and renews them.

pub mod subscriptions;

use std::collections::HashMap;

use shared::connect::{ConnectStore, DUE_SHARDS, Due, SYNC_INTERVAL};
use shared::ids::{TenantId, UserId};
use shared::providers::ProviderId;
use shared::subscriptions::{WEBHOOK_SILENCE, has_subscription_api};
use shared::sync::{SyncJob, SyncQueue, can_sync};
use time::OffsetDateTime;

pub use subscriptions::{Keeper, Upkeep};

/// How often a connection whose webhooks are live is polled anyway (a safety net for missed events).
pub const WEBHOOK_POLL_INTERVAL: time::Duration = time::Duration::hours(6);

/// Jobs one user may get from one tick.
pub const MAX_JOBS_PER_USER_PER_TICK: usize = 2;

/// Provider calls an hourly job (the last two days) makes, counted against the sandboxes (`./dev bench`
/// prints them): one per collection the reader reads, plus paging.
pub fn calls_per_job(p: ProviderId) -> u32 {
    match p {
        // daily_activity, daily_sleep, daily_readiness, daily_spo2, sleep, workout, heartrate (+1 page).
        ProviderId::Oura => 8,
        ProviderId::GoogleHealth => 5,
        // Dailies by upload time, 86,400 s a call: the window's days plus two.
        ProviderId::Garmin => 4,
        ProviderId::Whoop => 4,
        ProviderId::Withings | ProviderId::Polar => 3,
        ProviderId::Strava => 2,
    }
}

/// Documented per-user limits (calls, per seconds), where a provider has one. Fitbit's legacy 150 an hour
/// per user is the pattern Google Health is expected to keep (unverified); WHOOP's 10,000 a day is an app
/// limit, which one user's hourly jobs cannot approach either.
pub fn per_user_limit(p: ProviderId) -> Option<(u32, u32)> {
    match p {
        ProviderId::GoogleHealth => Some((150, 3_600)),
        ProviderId::Whoop => Some((10_000, 86_400)),
        ProviderId::Strava => Some((2_000, 86_400)),
        _ => None,
    }
}

/// The tick's interval: jobs are spread over it.
pub const TICK_SECONDS: i64 = 300;

/// A provider's documented limits for ONE app (each tenant brings its own app), as (calls, per seconds):
/// Oura 5,000 per 5 min; WHOOP 100 per min and 10,000 a day; Strava 200 per 15 min and 2,000 a day;
/// Withings 120 per min. Polar, Google Health and Garmin publish no plain figure we could verify; we assume
/// Polar's 500 per 15 min and 5,000 a day (its floor for few users), and 1,000 per 5 min for the others.
pub fn app_limits(p: ProviderId) -> &'static [(u32, u32)] {
    match p {
        ProviderId::Oura => &[(5_000, 300)],
        ProviderId::Whoop => &[(100, 60), (10_000, 86_400)],
        ProviderId::Strava => &[(200, 900), (2_000, 86_400)],
        ProviderId::Withings => &[(120, 60)],
        ProviderId::Polar => &[(500, 900), (5_000, 86_400)],
        ProviderId::GoogleHealth | ProviderId::Garmin => &[(1_000, 300)],
    }
}

/// Provider calls one tenant's app may spend per tick: half of the tightest limit scaled to a tick, so Sync
/// now, backfills and webhook jobs keep the other half.
pub fn call_budget(p: ProviderId) -> u32 {
    let per_tick = |(calls, seconds): &(u32, u32)| u64::from(*calls) * TICK_SECONDS as u64 / u64::from(*seconds);
    let tightest = app_limits(p).iter().map(per_tick).min().unwrap_or(0);
    u32::try_from(tightest / 2).unwrap_or(u32::MAX)
}

/// Scheduled jobs one tenant's app may take per tick: its call budget over the calls a job makes (at least
/// one, so a tight daily cap slows a tenant's polling down rather than stopping it).
pub fn budget(p: ProviderId) -> usize {
    (call_budget(p) / calls_per_job(p)).max(1) as usize
}

pub struct Scheduler {
    pub store: ConnectStore,
    pub queue: SyncQueue,
    /// Jobs per tenant app (tenant and provider) and tick; `budget()` unless a test narrows it.
    pub budgets: HashMap<ProviderId, usize>,
    /// Subscription upkeep and the webhook liveness the polling fallback needs; without it every connection
    /// is polled hourly.
    pub keeper: Option<Keeper>,
    pub per_user_per_tick: usize,
}

/// What a tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub planned: usize,
    /// Due, but over the provider's budget for this tick: planned on a later tick.
    pub deferred: usize,
    /// Due, but another tick planned them first.
    pub lost_race: usize,
    /// Due, but their webhooks are live and they synced recently: checked again later, no job.
    pub resting: usize,
    /// Due, but their user already got `per_user_per_tick` jobs this tick: planned on a later tick.
    pub deferred_user: usize,
    pub subscriptions: Upkeep,
}

/// Cuts due connections (oldest first) by each tenant app's budget for the tick (limits are per app, and
/// every tenant brings its own) and each user's share of it; the rest wait for a later tick (counted in
/// `plan`).
fn choose(due: Vec<Due>, budgets: &HashMap<ProviderId, usize>, per_user_cap: usize, plan: &mut Plan) -> Vec<Due> {
    let mut used: HashMap<(TenantId, ProviderId), usize> = HashMap::new();
    let mut per_user: HashMap<(TenantId, UserId), usize> = HashMap::new();
    let mut chosen = Vec::new();
    for d in due {
        let n = used.entry((d.tenant_id.clone(), d.provider)).or_default();
        if *n >= budgets.get(&d.provider).copied().unwrap_or(0) {
            plan.deferred += 1;
            continue;
        }
        let u = per_user.entry((d.tenant_id.clone(), d.user_id.clone())).or_default();
        if *u >= per_user_cap {
            plan.deferred_user += 1;
            continue;
        }
        *n += 1;
        *u += 1;
        chosen.push(d);
    }
    chosen
}

/// Whether a connection's webhooks are live; cached per tenant, provider (and Withings user) within a tick.
type Liveness = HashMap<(TenantId, ProviderId, Option<UserId>), bool>;

impl Scheduler {
    pub fn new(store: ConnectStore, queue: SyncQueue) -> Self {
        Self {
            store,
            queue,
            budgets: ProviderId::ALL.into_iter().map(|p| (p, budget(p))).collect(),
            keeper: None,
            per_user_per_tick: MAX_JOBS_PER_USER_PER_TICK,
        }
    }

    pub fn with_keeper(mut self, keeper: Keeper) -> Self {
        self.keeper = Some(keeper);
        self
    }

    pub async fn tick(&self) -> anyhow::Result<Plan> {
        let now = shared::time::now();
        let now_s = shared::time::format(now);
        let mut plan = Plan::default();
        if let Some(keeper) = &self.keeper {
            match keeper.tick(now).await {
                Ok(upkeep) => plan.subscriptions = upkeep,
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "subscription upkeep failed; retried next tick"),
            }
        }
        let mut due: Vec<Due> = Vec::new();
        let read_cap = self.budgets.values().sum::<usize>().min(10_000) as i32;
        for shard in 0..DUE_SHARDS {
            due.extend(self.store.due(shard, &now_s, read_cap).await?);
        }
        // Oldest first across shards, then cut by each provider's budget and each user's share.
        due.sort_by(|a, b| a.due_sk.cmp(&b.due_sk));
        let mut live = Liveness::new();
        let mut candidates = Vec::new();
        for d in due {
            if let Some(keeper) = &self.keeper
                && let Err(e) = keeper.ensure_user(&d.tenant_id, &d.user_id, d.provider).await
            {
                tracing::warn!(tenant_id = %d.tenant_id, provider = %d.provider, error = %format!("{e:#}"), "user subscription failed");
            }
            if !can_sync(d.provider) {
                continue;
            }
            if let Some(rest_until) = self.resting_until(&d, now, &mut live).await? {
                if self.store.plan(&d, &rest_until).await? {
                    plan.resting += 1;
                } else {
                    plan.lost_race += 1;
                }
                continue;
            }
            candidates.push(d);
        }
        let chosen = choose(candidates, &self.budgets, self.per_user_per_tick, &mut plan);
        let next = shared::time::format(now + SYNC_INTERVAL);
        let count = chosen.len().max(1) as i64;
        let mut jobs = Vec::with_capacity(chosen.len());
        for (i, d) in chosen.iter().enumerate() {
            if !self.store.plan(d, &next).await? {
                plan.lost_race += 1;
                continue;
            }
            // Staggered over the tick so a provider sees a steady trickle, not a burst.
            let delay = (i as i64 * TICK_SECONDS / count) as i32;
            jobs.push((SyncJob::new(d.tenant_id.clone(), d.user_id.clone(), d.provider, 2), delay));
        }
        // Ten jobs to a SendMessageBatch call, each with its own delay.
        self.queue.send_many(&jobs).await?;
        plan.planned += jobs.len();
        tracing::info!(
            planned = plan.planned,
            deferred = plan.deferred,
            deferred_user = plan.deferred_user,
            resting = plan.resting,
            lost_race = plan.lost_race,
            "sync tick"
        );
        Ok(plan)
    }

    /// When a due connection whose webhooks are live and which synced within `WEBHOOK_POLL_INTERVAL` should
    /// be checked again (six hours after its last sync); `None` when it should be polled now.
    async fn resting_until(&self, d: &Due, now: OffsetDateTime, live: &mut Liveness) -> anyhow::Result<Option<String>> {
        let Some(keeper) = &self.keeper else { return Ok(None) };
        let parse = |s: &Option<String>| {
            s.as_deref().and_then(|v| OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok())
        };
        let (Some(webhook), Some(synced)) = (parse(&d.last_webhook_at), parse(&d.last_synced_at)) else {
            return Ok(None);
        };
        if now - webhook > WEBHOOK_SILENCE || now - synced >= WEBHOOK_POLL_INTERVAL {
            return Ok(None);
        }
        if has_subscription_api(d.provider) {
            let user = (d.provider == ProviderId::Withings).then(|| d.user_id.clone());
            let key = (d.tenant_id.clone(), d.provider, user.clone());
            let subscribed = match live.get(&key) {
                Some(v) => *v,
                None => {
                    let scope = user.as_ref().map_or("", UserId::as_str);
                    let subs = keeper.subs.list(&d.tenant_id, d.provider, scope).await?;
                    let now_s = shared::time::format(now);
                    let v = subs.iter().any(|s| s.is_live(&now_s));
                    live.insert(key, v);
                    v
                }
            };
            if !subscribed {
                return Ok(None);
            }
        }
        Ok(Some(shared::time::format(synced + WEBHOOK_POLL_INTERVAL)))
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

    fn due(tenant: &str, user: &str, p: ProviderId) -> Due {
        Due {
            tenant_id: TenantId::parse(tenant).unwrap_or_else(|e| panic!("{e}")),
            user_id: UserId::parse(user).unwrap_or_else(|e| panic!("{e}")),
            provider: p,
            due_sk: String::new(),
            last_synced_at: None,
            last_webhook_at: None,
        }
    }

    #[test]
    fn one_user_gets_at_most_their_share_of_a_tick_and_the_provider_budget_still_holds() {
        let (t, ann, bob) =
            ("ten_01hzzzzzzzzzzzzzzzzzzzzzzz", "usr_01hzzzzzzzzzzzzzzzzzzzzzzz", "usr_01hyyyyyyyyyyyyyyyyyyyyyyy");
        let dues = vec![
            due(t, ann, ProviderId::Oura),
            due(t, ann, ProviderId::Whoop),
            due(t, ann, ProviderId::Strava),
            due(t, bob, ProviderId::Oura),
            due(t, bob, ProviderId::Whoop),
        ];
        let budgets = HashMap::from([(ProviderId::Oura, 10), (ProviderId::Whoop, 1), (ProviderId::Strava, 10)]);
        let mut plan = Plan::default();
        let chosen = choose(dues, &budgets, 2, &mut plan);
        let picked: Vec<(String, ProviderId)> = chosen.iter().map(|d| (d.user_id.to_string(), d.provider)).collect();
        assert_eq!(
            picked,
            vec![
                (ann.to_owned(), ProviderId::Oura),
                (ann.to_owned(), ProviderId::Whoop),
                (bob.to_owned(), ProviderId::Oura)
            ]
        );
        assert_eq!(
            (plan.deferred_user, plan.deferred),
            (1, 1),
            "ann's third waits; bob's WHOOP is over WHOOP's budget"
        );
    }

    #[test]
    fn a_connection_synced_hourly_stays_within_every_known_per_user_limit() {
        for p in ProviderId::ALL {
            let Some((calls, window)) = per_user_limit(p) else { continue };
            let jobs_per_window = u64::from(window).div_ceil(SYNC_INTERVAL.whole_seconds() as u64).max(1);
            assert!(jobs_per_window * u64::from(calls_per_job(p)) <= u64::from(calls), "{p}");
        }
    }

    #[test]
    fn a_ticks_jobs_times_their_calls_stay_within_half_of_every_app_limit() {
        for p in ProviderId::ALL {
            let calls = budget(p) as u64 * u64::from(calls_per_job(p));
            for (limit, seconds) in app_limits(p) {
                let share = u64::from(*limit) * TICK_SECONDS as u64 / u64::from(*seconds);
                // The one-job floor may exceed a tight daily share; that is the only slack.
                assert!(calls <= share / 2 || budget(p) == 1, "{p}: {calls} calls a tick vs {limit} per {seconds} s");
            }
        }
        assert_eq!(budget(ProviderId::Oura), 2_500 / 8);
        assert_eq!(budget(ProviderId::Strava), 1, "2,000 a day is 6.9 calls a tick; half is 3: one 2-call job");
    }

    #[test]
    fn every_tenant_app_has_its_own_budget() {
        let (a, b, u) =
            ("ten_01hzzzzzzzzzzzzzzzzzzzzzzz", "ten_01hyyyyyyyyyyyyyyyyyyyyyyy", "usr_01hzzzzzzzzzzzzzzzzzzzzzzz");
        let dues = vec![due(a, u, ProviderId::Whoop), due(b, u, ProviderId::Whoop), due(a, u, ProviderId::Whoop)];
        let mut plan = Plan::default();
        let chosen = choose(dues, &HashMap::from([(ProviderId::Whoop, 1)]), 5, &mut plan);
        assert_eq!(chosen.len(), 2, "one job for each tenant's WHOOP app");
        assert_eq!(plan.deferred, 1);
    }
}
