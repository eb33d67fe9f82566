//! Provider webhook subscriptions: asked for when a tenant saves an app, made by the scheduler's tick
//! against the sandbox (which checks our callback as the provider would), retried when the provider is
//! down, and renewed before they expire.

use integration_tests::connect::configure;
use integration_tests::hooks::{item, keeper, keys, sandbox};
use integration_tests::start;
use serde_json::json;

#[tokio::test]
async fn saving_an_app_asks_for_subscriptions_that_the_tick_makes_and_renews_before_they_expire() {
    let s = start().await;
    let t = s.tenant("Subscribed").await;
    configure(&s, &t, "oura").await;
    let asked = keys(&s, &t.id, "sub#oura#").await;
    assert_eq!(asked.len(), 2, "create and update events of daily activity: {asked:?}");
    let pending = item(&s, &t.id, "sub#oura#create.daily_activity").await.unwrap_or_default();
    assert_eq!(pending.get("status").map(String::as_str), Some("pending"));

    let keeper = keeper(&s).await;
    let upkeep = keeper.tick(shared::time::now()).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((upkeep.created, upkeep.failed), (2, 0), "{upkeep:?}");
    let at_oura = sandbox(&s, "oura", "/sandbox/webhooks/settings", json!({})).await;
    assert_eq!(at_oura["counters"]["subscriptions_created"], 2, "Oura checked our challenge twice: {at_oura}");
    let sub = item(&s, &t.id, "sub#oura#update.daily_activity").await.unwrap_or_default();
    assert_eq!(sub.get("status").map(String::as_str), Some("active"));
    let first_expiry = sub.get("expires_at").cloned().unwrap_or_default();
    let in_29_days = shared::time::format(shared::time::now() + time::Duration::days(29));
    assert!(first_expiry > in_29_days, "the sandbox's 30 days: {first_expiry}");

    let upkeep = keeper.tick(shared::time::now()).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((upkeep.created, upkeep.renewed), (0, 0), "nothing to do with 30 days left and a 7-day threshold");

    // 24 days on, less than the 7-day threshold is left: the tick renews both.
    let later = shared::time::now() + time::Duration::days(24);
    let upkeep = keeper.tick(later).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(upkeep.renewed, 2, "{upkeep:?}");
    let at_oura = sandbox(&s, "oura", "/sandbox/webhooks/settings", json!({})).await;
    assert_eq!(at_oura["counters"]["subscriptions_renewed"], 2);
    assert_eq!(at_oura["counters"]["subscriptions_created"], 2, "renewed, not made again");
    let renewed = item(&s, &t.id, "sub#oura#update.daily_activity").await.unwrap_or_default();
    assert!(renewed.get("expires_at").cloned().unwrap_or_default() >= first_expiry);
}

#[tokio::test]
async fn a_provider_that_is_down_fails_nothing_at_save_and_the_tick_retries_it_later() {
    let s = start().await;
    let t = s.tenant("Patient").await;
    sandbox(&s, "strava", "/sandbox/webhooks/settings", json!({"down": true})).await;
    configure(&s, &t, "strava").await;
    let keeper = keeper(&s).await;
    let upkeep = keeper.tick(shared::time::now()).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((upkeep.created, upkeep.failed), (0, 1));
    let failed = item(&s, &t.id, "sub#strava").await.unwrap_or_default();
    assert_eq!(failed.get("status").map(String::as_str), Some("failed"));
    assert!(failed.get("last_error").is_some_and(|e| e.contains("500") && !e.contains("secret-value")), "{failed:?}");

    sandbox(&s, "strava", "/sandbox/webhooks/settings", json!({"down": false})).await;
    let upkeep = keeper.tick(shared::time::now()).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(upkeep, Default::default(), "the retry waits for its backoff");
    let after_backoff = shared::time::now() + time::Duration::minutes(11);
    let upkeep = keeper.tick(after_backoff).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(upkeep.created, 1, "{upkeep:?}");
    let made = item(&s, &t.id, "sub#strava").await.unwrap_or_default();
    assert_eq!(made.get("status").map(String::as_str), Some("active"));
    assert!(made.contains_key("sub_id") && !made.contains_key("last_error"), "{made:?}");
}
