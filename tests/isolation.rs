//! Tenant isolation, route by route: for every operation in the OpenAPI document, tenant A's key and A's
//! end user, pointed at tenant B's objects, get exactly what they get for objects that do not exist (a
//! 404 where the route is theirs, never a 403), see none of B's data, and change nothing of B's.

use integration_tests::{Auth, TestStack, TestTenant, start, user_token};
use serde_json::{Value, json};

struct World {
    b: TestTenant,
    b_user: Value,
    b_key_id: String,
    b_import: String,
    b_export: String,
}

/// Every string of B's that must never reach A.
fn secrets_of_b(w: &World) -> Vec<String> {
    vec![
        w.b.id.clone(),
        w.b.api_key.clone(),
        w.b.audience.clone(),
        w.b_key_id.clone(),
        w.b_user["id"].as_str().unwrap_or_default().to_owned(),
        w.b_import.clone(),
        w.b_export.clone(),
    ]
}

/// Fills the object ids; `{provider}` and `{link}` name no object of B's (a link is its own credential,
/// tested with the Connect flow), so both requests get the same value there.
fn fill(path: &str, (tenant, user, key, import, export): (&str, &str, &str, &str, &str)) -> String {
    path.replace("{tenant_id}", tenant)
        .replace("{user_id}", user)
        .replace("{key_id}", key)
        .replace("{import_id}", import)
        .replace("{export_id}", export)
        .replace("{provider}", "oura")
        .replace("{link}", "not-a-link")
        + query_for(path)
}

/// A valid query for the data routes that need one, so that only the user id decides the answer.
fn query_for(path: &str) -> &'static str {
    match path.rsplit('/').next() {
        Some("daily" | "sleep" | "workouts") => "?start=2026-11-01&end=2026-11-07",
        Some("samples") => "?type=heart_rate&start=2026-11-01T00:00:00Z&end=2026-11-02T00:00:00Z",
        _ => "",
    }
}

fn names_an_object(path: &str) -> bool {
    ["{tenant_id}", "{user_id}", "{key_id}", "{import_id}", "{export_id}"].iter().any(|p| path.contains(p))
}

/// A body that passes validation, so the request reaches the object lookup.
fn body_for(
    method: &str,
    path: &str,
    a: &TestTenant,
    stack: &TestStack,
    (b_external_id, b_user_id): (&str, &str),
) -> Option<Value> {
    match (method, path) {
        ("POST", "/admin/v1/tenants") => Some(json!({"name": "probe"})),
        ("POST", "/v1/users") => Some(json!({"external_id": b_external_id})),
        ("PATCH", _) => Some(json!({"status": "disabled"})),
        ("POST", p) if p.ends_with("/connect-sessions") => Some(json!({"return_url": "https://a.example/done"})),
        ("POST", p) if p.ends_with("/complete") => Some(json!({"parts": [{"part_number": 1, "etag": "\"x\""}]})),
        ("POST", p) if p.ends_with("/ingest/apple-health") => Some(json!({"data": {"metrics": [
            {"name": "step_count", "units": "count", "data": [{"date": "2026-11-01 08:00:00 +0000", "qty": 5}]}
        ]}})),
        ("PUT", "/v1/settings/providers/{provider}") => {
            Some(json!({"client_id": "a-app", "client_secret": "a-secret"}))
        }
        ("PUT", "/v1/users/{user_id}/plan") => Some(json!({"plan": null})),
        ("PUT", "/v1/settings/plans/{plan}") => Some(json!({"monthly_tokens": 1000, "requests_per_minute": 10})),
        ("PUT", "/v1/settings/metering") => Some(json!({"fail_open": false})),
        ("PUT", "/v1/settings/llm/{provider}") => Some(json!({"api_key": "sk-ant-isolation-a"})),
        ("POST", "/v1/usage/events") => Some(json!({
            "user_id": b_user_id, "event_name": "probe", "value": 1, "idempotency_key": "probe"
        })),
        ("PUT", "/v1/settings/stripe") => {
            Some(json!({"secret_key": "sk_test_isolation_a", "webhook_secret": "whsec_isolation_a"}))
        }
        ("POST", p) if p.ends_with("/billing/checkout") => Some(json!({
            "plan": "pro", "success_url": "https://a.example/ok", "cancel_url": "https://a.example/no"
        })),
        ("POST", p) if p.ends_with("/billing/portal") => Some(json!({"return_url": "https://a.example/back"})),
        ("PUT", "/v1/settings/accounts") => Some(json!({"deletion_grace_days": 7})),
        ("PUT", "/v1/settings/connect") => Some(json!({"allowed_return_urls": ["https://a.example/done"]})),
        ("PUT", "/v1/settings/auth") => Some(json!({
            "issuer": stack.issuer, "jwks_url": format!("{}/jwks.json", stack.issuer), "audience": a.audience
        })),
        _ => None,
    }
}

/// An export of B's user, run to the end (so nothing of B's moves while A probes).
async fn finished_export(s: &TestStack, b: &TestTenant, user: &str) -> String {
    let r = s.call("POST", &format!("/v1/users/{user}/export"), Auth::Bearer(&b.api_key), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    for _ in 0..120 {
        let r = s.call("GET", &format!("/v1/exports/{id}"), Auth::Bearer(&b.api_key), None).await;
        if r.body["status"] == "completed" {
            return id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("B's export did not complete");
}

async fn partition_of(s: &TestStack, tenant: &str) -> Vec<String> {
    s.table_snapshot().await.into_iter().filter(|item| item.contains(&format!("pk=S(\"{tenant}\")"))).collect()
}

#[tokio::test]
async fn tenant_a_can_never_read_change_or_learn_of_tenant_bs_objects_on_any_route() {
    let s = start().await;
    let a = s.tenant("Tenant A").await;
    let b = s.tenant("Tenant B").await;
    let b_user = s.user(&b, "b-secret-user").await;
    s.user(&a, "a-user").await;
    let b_key = s.call("POST", "/v1/api-keys", Auth::Bearer(&b.api_key), None).await;
    let b_key_id = b_key.body["id"].as_str().unwrap_or_default().to_owned();
    // B's own end user exists too.
    assert_eq!(s.call("GET", "/v1/me", Auth::Bearer(&user_token(&s, &b, "b-end-user")), None).await.status, 200);
    let b_user_id = b_user["id"].as_str().unwrap_or_default();
    let import =
        s.call("POST", &format!("/v1/users/{b_user_id}/imports/apple-health"), Auth::Bearer(&b.api_key), None).await;
    assert_eq!(import.status, 201, "{}", import.body);
    let b_import = import.body["id"].as_str().unwrap_or_default().to_owned();
    let b_export = finished_export(&s, &b, b_user_id).await;
    let w = World { b: b.clone(), b_user: b_user.clone(), b_key_id: b_key_id.clone(), b_import, b_export };
    let b_before = partition_of(&s, &b.id).await;
    assert!(b_before.len() >= 6, "B's world is there: {b_before:?}");

    let a_jwt = user_token(&s, &a, "a-end-user");
    let principals = [("A's API key", a.api_key.clone()), ("A's end user", a_jwt)];
    let ghost = (
        "ten_00000000000000000000000000",
        "usr_00000000000000000000000000",
        "key_00000000000000000000000000",
        "imp_00000000000000000000000000",
        "exp_00000000000000000000000000",
    );
    let b_ids = (
        b.id.as_str(),
        b_user["id"].as_str().unwrap_or_default(),
        b_key_id.as_str(),
        w.b_import.as_str(),
        w.b_export.as_str(),
    );
    let b_external = b_user["external_id"].as_str().unwrap_or_default();

    let operations = shared::openapi::operations();
    assert!(operations.len() >= 16, "every route is probed: {operations:?}");
    for (method, path) in &operations {
        for (who, credential) in &principals {
            let body = body_for(method, path, &a, &s, (b_external, b_ids.1));
            let on_b = s.call(method, &fill(path, b_ids), Auth::Bearer(credential), body.clone()).await;
            let on_ghost = s.call(method, &fill(path, ghost), Auth::Bearer(credential), body).await;
            let ctx = format!("{who}: {method} {path}: {} {}", on_b.status, on_b.body);
            if names_an_object(path) {
                assert_eq!(
                    (on_b.status, on_b.code()),
                    (on_ghost.status, on_ghost.code()),
                    "B's object looks absent. {ctx}"
                );
                assert_ne!(on_b.status / 100, 2, "{ctx}");
                let route_is_theirs = match *who {
                    "A's API key" => path.starts_with("/v1/") && !path.starts_with("/v1/me"),
                    _ => path.starts_with("/v1/me"),
                };
                if route_is_theirs {
                    assert_eq!(on_b.status, 404, "{ctx}");
                }
            }
            if (method.as_str(), path.as_str(), *who) == ("POST", "/v1/users", "A's API key") {
                assert_eq!(on_b.status, 201, "B's external id is unknown to A, so A gets a new user of its own. {ctx}");
            }
            let text = on_b.body.to_string();
            for secret in secrets_of_b(&w) {
                assert!(!text.contains(&secret), "{ctx} leaks {secret}");
            }
        }
    }

    // Cursors and filters cannot reach into B's partition either.
    let cursor = shared::http::encode_cursor(&format!("user#{}", b_ids.1));
    for path in [format!("/v1/users?cursor={cursor}"), format!("/v1/users?external_id={b_external}")] {
        let r = s.call("GET", &path, Auth::Bearer(&a.api_key), None).await;
        assert!(!r.body.to_string().contains(b_ids.1), "{path}: {}", r.body);
    }
    assert_eq!(partition_of(&s, &b.id).await, b_before, "nothing of B's changed");
    // And B still works.
    assert_eq!(s.call("GET", &format!("/v1/users/{}", b_ids.1), Auth::Bearer(&b.api_key), None).await.status, 200);
}
