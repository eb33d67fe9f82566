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
    Plan { planned, deferred, lost_race }
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
