//! The sync scheduler: due connections found through the index, planned within a provider's budget,
//! staggered, never twice, and synced by the worker.

use std::time::Duration;

use integration_tests::connect::{configure, connections, consent, no_redirects, session};
use integration_tests::{TestStack, TestTenant, start};
use shared::connect::ConnectStore;
use shared::providers::ProviderId;
use shared::sync::SyncQueue;
use sync_scheduler::{Plan, Scheduler};

async fn connect_user(s: &TestStack, t: &TestTenant, name: &str) -> String {
    let user = s.user(t, name).await;
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let url = session(s, t, &user_id).await;
    let callback = consent(&url, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    user_id
}

async fn scheduler(s: &TestStack, oura_budget: usize) -> Scheduler {
    let sdk = shared::aws::sdk_config().await;
    let mut scheduler = Scheduler::new(
        ConnectStore::new(s.dynamodb.clone(), &s.table),
        SyncQueue::new(aws_sdk_sqs::Client::new(&sdk), s.refs["SyncQueue"].clone()),
    );
    scheduler.budgets.insert(ProviderId::Oura, oura_budget);
    scheduler
}

fn plan(planned: usize, deferred: usize, lost_race: usize) -> Plan {
    Plan { planned, deferred, lost_race, ..Plan::default() }
}

#[tokio::test]
async fn due_connections_are_planned_within_the_budget_once_each_and_then_synced() {
    let s = start().await;
    let t = s.tenant("Scheduled").await;
    configure(&s, &t, "oura").await;
    let mut users = Vec::new();
    for name in ["ann", "bob", "cy"] {
        users.push(connect_user(&s, &t, name).await);
    }
    let scheduler = scheduler(&s, 2).await;
    assert_eq!(scheduler.tick().await.ok(), Some(plan(2, 1, 0)), "two within the budget, one deferred");
    assert_eq!(scheduler.tick().await.ok(), Some(plan(1, 0, 0)), "the deferred one on the next tick");
    assert_eq!(scheduler.tick().await.ok(), Some(plan(0, 0, 0)), "nothing is due until the interval has passed");

    // The jobs are staggered over the tick (the first at once); the worker runs those that are visible.
    let mut synced = 0;
    for _ in 0..100 {
        synced = 0;
        for u in &users {
            if connections(&s, &t, u).await.first().is_some_and(|c| c["last_synced_at"].is_string()) {
                synced += 1;
            }
        }
        if synced >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced >= 1, "the first planned job ran");
}

#[tokio::test]
async fn two_ticks_at_once_never_plan_a_connection_twice() {
    let s = start().await;
    let t = s.tenant("Overlapping").await;
    configure(&s, &t, "oura").await;
    for name in ["dee", "eli", "fox", "gil"] {
        connect_user(&s, &t, name).await;
    }
    let (a, b) = (scheduler(&s, 100).await, scheduler(&s, 100).await);
    let (x, y) = tokio::join!(a.tick(), b.tick());
    let (x, y) = (x.unwrap_or_default(), y.unwrap_or_default());
    assert_eq!(x.planned + y.planned, 4, "each due connection planned exactly once: {x:?} {y:?}");
}

mod polling_fallback {
    //! While a connection's webhooks are live it is polled every six hours instead of hourly; when they
    //! fall silent, or the subscription lapses, it is polled hourly again.

    use std::time::Duration;

    use integration_tests::hooks::{connect_user, item, keeper, set};
    use integration_tests::start;

    fn ago(d: time::Duration) -> String {
        shared::time::format(shared::time::now() - d)
    }

    #[tokio::test]
    async fn a_connection_with_live_webhooks_rests_and_is_polled_hourly_again_when_they_fall_silent() {
        let s = start().await;
        let t = s.tenant("Quiet").await;
        let (user, _) = connect_user(&s, &t, "oura", "quinn").await;
        let scheduler = super::scheduler(&s, 100).await.with_keeper(keeper(&s).await);
        let first = scheduler.tick().await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((first.planned, first.subscriptions.created), (1, 2), "{first:?}");
        let conn_sk = format!("conn#{user}#oura");
        let mut synced = None;
        // The first-connect backfill and the planned job both end before the test moves the due time.
        for _ in 0..300 {
            let now = item(&s, &t.id, &conn_sk).await.unwrap_or_default();
            let quiet =
                now.get("backfill_status").map(String::as_str) == Some("completed") && !now.contains_key("lease_job");
            synced = now.get("last_synced_at").cloned().filter(|_| quiet);
            if synced.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let synced = synced.unwrap_or_else(|| panic!("the planned job ran"));
        let due_now = |at: String| format!("{at}#{}#{user}#oura", t.id);

        // A webhook arrived a minute ago; the connection comes due: it rests until six hours after its sync.
        set(
            &s,
            &t.id,
            &conn_sk,
            &[
                ("last_webhook_at", &ago(time::Duration::minutes(1))),
                ("gsi1sk", &due_now(ago(time::Duration::seconds(1)))),
            ],
        )
        .await;
        let resting = scheduler.tick().await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((resting.planned, resting.resting), (0, 1), "{resting:?}");
        let next = item(&s, &t.id, &conn_sk).await.and_then(|i| i.get("gsi1sk").cloned()).unwrap_or_default();
        let synced_at = time::OffsetDateTime::parse(&synced, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = shared::time::format(synced_at + sync_scheduler::WEBHOOK_POLL_INTERVAL);
        assert!(next.starts_with(&expected), "next check six hours after the sync: {next} vs {expected}");

        // The webhooks fell silent a day ago: polled again.
        set(
            &s,
            &t.id,
            &conn_sk,
            &[
                ("last_webhook_at", &ago(time::Duration::hours(25))),
                ("gsi1sk", &due_now(ago(time::Duration::seconds(1)))),
            ],
        )
        .await;
        let polled = scheduler.tick().await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((polled.planned, polled.resting), (1, 0), "{polled:?}");

        // Let that job finish first: its end moves the due time an hour on.
        for _ in 0..100 {
            let now_synced = item(&s, &t.id, &conn_sk).await.and_then(|i| i.get("last_synced_at").cloned());
            if now_synced.is_some_and(|v| v != synced) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A fresh event, but the subscriptions expired (renewal failed): polled again too.
        for scope in ["create.daily_activity", "update.daily_activity"] {
            set(&s, &t.id, &format!("sub#oura#{scope}"), &[("expires_at", &ago(time::Duration::minutes(5)))]).await;
        }
        set(
            &s,
            &t.id,
            &conn_sk,
            &[
                ("last_webhook_at", &ago(time::Duration::minutes(1))),
                ("gsi1sk", &due_now(ago(time::Duration::seconds(1)))),
            ],
        )
        .await;
        let lapsed = scheduler.tick().await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((lapsed.planned, lapsed.resting), (1, 0), "{lapsed:?}");
    }
}
