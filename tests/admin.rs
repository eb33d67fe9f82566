//! The tenant's admin view and audit log: aggregates of users, connections, syncs, imports and AI tokens
//! with no personal data in them; every change (keys, settings, users, plans, the operator's) in the log,
//! newest first, paged, and only the tenant's own.

use std::time::Duration;

use integration_tests::connect::{configure, connections, consent, no_redirects, session};
use integration_tests::meter::{claude, claude_body, metered_tenant, plan};
use integration_tests::{Auth, TestStack, TestTenant, start};
use serde_json::{Value, json};

async fn stats(s: &TestStack, t: &TestTenant, query: &str) -> Value {
    let r = s.call("GET", &format!("/v1/admin/stats{query}"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

async fn audit(s: &TestStack, t: &TestTenant, query: &str) -> Value {
    let r = s.call("GET", &format!("/v1/audit{query}"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn the_admin_view_counts_users_connections_syncs_and_tokens_without_naming_anyone() {
    let s = start().await;
    let (t, chatty) = metered_tenant(&s, plan(100_000, 60)).await;
    let key = Auth::Bearer(&t.api_key);
    // GIVEN three more users, one disabled, one connected to sandbox Oura and synced, and some AI use
    let mut ids = vec![chatty.clone()];
    for (i, email) in ["ana@example.com", "bo@example.com", "cy@example.com"].into_iter().enumerate() {
        let r = s
            .call("POST", "/v1/users", key.clone(), Some(json!({"external_id": format!("ext-{i}"), "email": email})))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap_or_default().to_owned());
    }
    let r = s.call("PATCH", &format!("/v1/users/{}", ids[3]), key.clone(), Some(json!({"status": "disabled"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    configure(&s, &t, "oura").await;
    let callback = consent(&session(&s, &t, &ids[1]).await, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..100 {
        let c = connections(&s, &t, &ids[1]).await;
        if c.first().is_some_and(|c| c["backfill"]["status"] == "completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..2 {
        let r = claude(&s, &t, &chatty, &claude_body(&format!("hi {i}"), 20, false)).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap_or_default();
    }

    // WHEN the tenant reads its admin view
    let body = stats(&s, &t, "").await;

    // THEN the aggregates are right
    assert_eq!(body["users"]["total"], 4, "{body}");
    assert_eq!(body["users"]["by_status"]["disabled"], 1, "{body}");
    assert_eq!(body["users"]["by_status"]["active"], 3, "{body}");
    assert_eq!(body["connections"]["total"], 1, "{body}");
    assert_eq!(body["connections"]["by_provider"]["oura"]["connected"], 1, "{body}");
    assert!(body["sync"]["succeeded"].as_u64() >= Some(1), "the backfill's jobs count: {body}");
    assert_eq!(body["sync"]["failed"], 0, "{body}");
    assert_eq!(body["sync"]["success_rate"], 1.0, "{body}");
    assert_eq!(body["ai"]["requests"], 2, "{body}");
    assert!(body["ai"]["tokens_used"].as_u64() > Some(0), "{body}");
    assert_eq!(body["ai"]["users"], 1, "{body}");
    // AND no user id, external id or email appears anywhere in it
    let text = body.to_string();
    for needle in ids.iter().map(String::as_str).chain(["ext-0", "ext-1", "@example.com"]) {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
    // AND its parameters are checked
    let r = s.call("GET", "/v1/admin/stats?days=0", key.clone(), None).await;
    r.assert_error(400, "invalid_query");
    let r = s.call("GET", "/v1/admin/stats?period=2026-13", key.clone(), None).await;
    r.assert_error(400, "invalid_query");
    // AND another tenant sees only its own (empty) service
    let other = s.tenant("Other Co").await;
    let theirs = stats(&s, &other, "").await;
    assert_eq!((theirs["users"]["total"].clone(), theirs["connections"]["total"].clone()), (json!(0), json!(0)));
}

#[tokio::test]
async fn every_change_is_in_the_audit_log_newest_first_paged_and_only_for_its_tenant() {
    let s = start().await;
    let t = s.tenant("Audited Co").await;
    let key = Auth::Bearer(&t.api_key);
    // WHEN the tenant creates and revokes a key, changes settings, disables a user and gives them a plan,
    // and the operator disables and enables the tenant
    let made = s.call("POST", "/v1/api-keys", key.clone(), None).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let new_key = made.body["id"].as_str().unwrap_or_default().to_owned();
    let r = s.call("DELETE", &format!("/v1/api-keys/{new_key}"), key.clone(), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("PUT", "/v1/settings/plans/basic", key.clone(), Some(plan(1000, 5))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = s.user(&t, "audited-user").await["id"].as_str().unwrap_or_default().to_owned();
    let r = s.call("PATCH", &format!("/v1/users/{user}"), key.clone(), Some(json!({"status": "disabled"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("PUT", &format!("/v1/users/{user}/plan"), key.clone(), Some(json!({"plan": "basic"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // (a refused change records nothing)
    let r = s.call("PUT", "/v1/settings/plans/bad", key.clone(), Some(json!({"monthly_tokens": -1}))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(s.operator("POST", &format!("/admin/v1/tenants/{}/disable", t.id), None).await.status, 200);
    assert_eq!(s.operator("POST", &format!("/admin/v1/tenants/{}/enable", t.id), None).await.status, 200);

    // THEN the log has them all, newest first, by whom and on what
    let log = audit(&s, &t, "?limit=100").await;
    let entries = log["data"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "tenant.enabled",
            "tenant.disabled",
            "user.plan_changed",
            "user.updated",
            "user.created",
            "settings.plan.updated",
            "api_key.revoked",
            "api_key.created",
            "settings.auth.updated",
            "tenant.created",
        ],
        "{log}"
    );
    let by_action = |a: &str| entries.iter().find(|e| e["action"] == a).cloned().unwrap_or(Value::Null);
    assert_eq!(by_action("api_key.revoked")["target"], json!({"type": "api_key", "id": new_key}));
    assert_eq!(by_action("api_key.revoked")["actor"]["type"], "api_key");
    assert_eq!(by_action("tenant.disabled")["actor"], json!({"type": "operator"}));
    assert_eq!(by_action("user.updated")["details"], json!({"status": "disabled"}));
    assert_eq!(by_action("user.updated")["user_id"], user.as_str());
    assert_eq!(by_action("user.plan_changed")["details"], json!({"plan": "basic"}));
    assert!(
        entries.iter().all(|e| e["at"].as_str().is_some() && e["id"].as_str().is_some_and(|i| i.starts_with("aud_")))
    );
    // AND the secret of the created key is nowhere in the log
    let secret = made.body["api_key"].as_str().unwrap_or("no key");
    assert!(!log.to_string().contains(secret), "{log}");

    // AND it pages with a cursor, without repeats
    let first = audit(&s, &t, "?limit=4").await;
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    let second = audit(&s, &t, &format!("?limit=4&cursor={cursor}")).await;
    let ids: Vec<Value> = [&first, &second]
        .iter()
        .flat_map(|p| p["data"].as_array().cloned().unwrap_or_default())
        .map(|e| e["id"].clone())
        .collect();
    let expected: Vec<Value> = entries.iter().take(8).map(|e| e["id"].clone()).collect();
    assert_eq!(ids, expected);
    s.call("GET", "/v1/audit?cursor=bm90LW91cnM", key.clone(), None).await.assert_error(400, "invalid_cursor");

    // AND another tenant's log has none of it
    let other = s.tenant("Other Co").await;
    let theirs = audit(&s, &other, "").await;
    assert!(!theirs.to_string().contains(&t.id) && !theirs.to_string().contains(&user), "{theirs}");
}
