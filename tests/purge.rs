//! Deleting end users and offboarding tenants, end to end against moto, sandbox Oura and the Stripe sandbox:
//! a deleted user is invisible at once and restorable within the grace period; the purge leaves no item and
//! no object about them in any table or bucket of the stack (scanned here, which the purge itself never does),
//! deletes their Stripe customer and revokes their provider tokens, and touches nobody else; a redelivered
//! purge is harmless; an offboarded tenant is refused at once and then purged whole.

use std::io::Cursor;
use std::time::Duration;

use health_import::generate::{Spec, write_zip};
use integration_tests::connect::{configure, connections, consent, no_redirects, sandbox_state, session};
use integration_tests::meter::{ANTHROPIC_KEY, claude, claude_body};
use integration_tests::{Auth, TestStack, TestTenant, start, user_token};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

/// Every item of every table and every object key of every bucket of this stack that mentions `needle`.
async fn leftovers(s: &TestStack, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut tables = Vec::new();
    let mut start = None;
    loop {
        let out = s.dynamodb.list_tables().set_exclusive_start_table_name(start).send().await;
        let out = out.unwrap_or_else(|e| panic!("{e:?}"));
        tables.extend(out.table_names().iter().filter(|t| t.starts_with(&format!("{}-", s.prefix))).cloned());
        start = out.last_evaluated_table_name().map(str::to_owned);
        if start.is_none() {
            break;
        }
    }
    assert!(tables.len() >= 3, "the stack's tables: {tables:?}");
    for table in tables {
        let mut start = None;
        loop {
            let out = s.dynamodb.scan().table_name(&table).set_exclusive_start_key(start).send().await;
            let out = out.unwrap_or_else(|e| panic!("{e:?}"));
            for item in out.items() {
                let mut pairs: Vec<String> = item.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                pairs.sort();
                let text = pairs.join(", ");
                if text.contains(needle) {
                    found.push(format!("{table}: {text}"));
                }
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
    }
    let s3 = shared::aws::s3(&shared::aws::sdk_config().await);
    let buckets = s3.list_buckets().send().await.unwrap_or_else(|e| panic!("{e:?}"));
    let ours: Vec<String> = buckets
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .filter(|n| n.starts_with(&format!("{}-", s.prefix)))
        .map(str::to_owned)
        .collect();
    assert!(!ours.is_empty(), "the stack's buckets");
    for bucket in ours {
        let objects = s3.list_objects_v2().bucket(&bucket).send().await.unwrap_or_else(|e| panic!("{e:?}"));
        for o in objects.contents() {
            if o.key().is_some_and(|k| k.contains(needle)) {
                found.push(format!("{bucket}: {:?}", o.key()));
            }
        }
        let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await.unwrap_or_else(|e| panic!("{e:?}"));
        for u in uploads.uploads() {
            if u.key().is_some_and(|k| k.contains(needle)) {
                found.push(format!("{bucket} (upload): {:?}", u.key()));
            }
        }
    }
    found
}

/// Every item and object about `needle`, as a sorted list (for "nothing changed" checks). Webhook deliveries
/// and API keys are left out: the notifier and the authorizer move them on their own.
async fn snapshot(s: &TestStack, needle: &str) -> Vec<String> {
    let moving = |i: &String| i.contains("last_used_at") || i.contains("S(\"whd#");
    let mut all: Vec<String> = leftovers(s, needle).await.into_iter().filter(|i| !moving(i)).collect();
    all.sort();
    all
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await)
}

/// Runs the hourly sweep now and waits until the purge queue is empty and `done` holds.
async fn purge_now(s: &TestStack, what: &str, done: impl AsyncFn() -> bool) {
    s.tick("PurgeFunction").await;
    let sqs = sqs().await;
    for _ in 0..600 {
        if integration_tests::messages_waiting(&sqs, &s.refs["PurgeQueue"]).await == 0 && done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the purge of {what} did not finish");
}

async fn item_exists(s: &TestStack, pk: &str, sk: &str) -> bool {
    let out = s
        .dynamodb
        .get_item()
        .table_name(&s.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.to_owned()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.item.is_some()
}

/// A JSON push of a few steps for the user.
async fn push(s: &TestStack, t: &TestTenant, user: &str) {
    let body = json!({"data": {"metrics": [{"name": "step_count", "units": "count", "data": [
        {"date": "2026-11-01 08:00:00 +0000", "qty": 1200}, {"date": "2026-11-02 08:00:00 +0000", "qty": 800}
    ]}]}});
    let r =
        s.call("POST", &format!("/v1/users/{user}/ingest/apple-health"), Auth::Bearer(&t.api_key), Some(body)).await;
    assert!(r.status / 100 == 2, "{}", r.body);
}

async fn daily(s: &TestStack, t: &TestTenant, user: &str) -> integration_tests::Reply {
    let path = format!("/v1/users/{user}/daily?start=2026-11-01&end=2026-11-03");
    s.call("GET", &path, Auth::Bearer(&t.api_key), None).await
}

#[tokio::test]
async fn a_deleted_user_is_gone_at_once_everywhere_and_a_restore_in_the_grace_period_brings_them_back_whole() {
    let s = start().await;
    let t = s.tenant("Forgetful").await;
    let key = Auth::Bearer(&t.api_key);
    let user = id(&s.user(&t, "ana").await);
    push(&s, &t, &user).await;
    let before = daily(&s, &t, &user).await;
    assert_eq!(before.status, 200, "{}", before.body);
    let jwt = user_token(&s, &t, "ana");
    assert_eq!(s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await.status, 200);

    let r = s.call("DELETE", &format!("/v1/users/{user}"), key.clone(), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!((r.body["user_id"].as_str(), r.body["status"].as_str()), (Some(user.as_str()), Some("deleted")));
    let purge_at = r.body["purge_at"].as_str().and_then(shared::time::parse).unwrap_or_else(|| panic!("{}", r.body));
    let in_days = (purge_at - shared::time::now()).whole_hours();
    assert!((30 * 24 - 1..=30 * 24).contains(&in_days), "30 days of grace by default: {}", r.body);
    let again = s.call("DELETE", &format!("/v1/users/{user}"), key.clone(), None).await;
    assert_eq!((again.status, &again.body), (202, &r.body), "a second DELETE answers the same");

    // Gone at once, wherever one looks.
    s.call("GET", &format!("/v1/users/{user}"), key.clone(), None).await.assert_error(404, "not_found");
    let list = s.call("GET", "/v1/users", key.clone(), None).await;
    assert!(!list.body.to_string().contains(&user), "{}", list.body);
    let by_external = s.call("GET", "/v1/users?external_id=ana", key.clone(), None).await;
    assert!(!by_external.body.to_string().contains(&user), "{}", by_external.body);
    daily(&s, &t, &user).await.assert_error(404, "not_found");
    let patch = s.call("PATCH", &format!("/v1/users/{user}"), key.clone(), Some(json!({"status": "active"}))).await;
    patch.assert_error(404, "not_found");
    s.call("GET", &format!("/v1/users/{user}/connections"), key.clone(), None).await.assert_error(404, "not_found");
    s.call("GET", &format!("/v1/users/{user}/plan"), key.clone(), None).await.assert_error(404, "not_found");
    s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await.assert_error(403, "user_deleted");
    let reuse = s.call("POST", "/v1/users", key.clone(), Some(json!({"external_id": "ana"}))).await;
    reuse.assert_error(409, "conflict");
    assert!(reuse.body["error"]["message"].as_str().is_some_and(|m| m.contains("restore")), "{}", reuse.body);

    // Restored within the grace period: the same user, the same data, the same login.
    let back = s.call("POST", &format!("/v1/users/{user}/restore"), key.clone(), None).await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!((back.body["id"].as_str(), back.body["status"].as_str()), (Some(user.as_str()), Some("active")));
    let restored = daily(&s, &t, &user).await;
    assert_eq!((restored.status, &restored.body), (200, &before.body), "the data is intact");
    assert_eq!(s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await.body["id"], json!(user));
    assert_eq!(s.call("POST", &format!("/v1/users/{user}/restore"), key.clone(), None).await.status, 200);

    // Nothing is due: the sweep purges nobody, and the log says what happened.
    s.tick("PurgeFunction").await;
    assert!(item_exists(&s, &t.id, &format!("user#{user}")).await);
    let items = leftovers(&s, &format!("user#{user}")).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(!items[0].contains("purge"), "out of the purge index: {items:?}");
    let audit: Vec<String> =
        leftovers(&s, "audit#").await.into_iter().filter(|i| i.contains(&user) && i.contains("action")).collect();
    assert!(audit.iter().any(|i| i.contains("user.deleted")), "{audit:?}");
    assert!(audit.iter().any(|i| i.contains("user.restored")), "{audit:?}");
}

/// Connects the user to sandbox Oura through the Connect page and waits until its backfill is in.
async fn connect_oura(s: &TestStack, t: &TestTenant, user: &str) {
    configure(s, t, "oura").await;
    let url = session(s, t, user).await;
    let callback = consent(&url, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    let sqs = sqs().await;
    for _ in 0..900 {
        let c = connections(s, t, user).await.into_iter().next().unwrap_or_default();
        let waiting = integration_tests::messages_waiting(&sqs, &s.refs["SyncQueue"]).await;
        if c["status"] == "connected" && c["backfill"]["status"] == "completed" && waiting == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Oura backfill did not finish: {:?}", connections(s, t, user).await);
}

/// Uploads a small generated Apple Health export for the user and waits for its import to complete.
async fn import(s: &TestStack, t: &TestTenant, user: &str) {
    let mut zip = Cursor::new(Vec::new());
    write_zip(Spec::new(3, 2, 0), "export.xml", &mut zip).unwrap_or_else(|e| panic!("{e}"));
    let r = s.call("POST", &format!("/v1/users/{user}/imports/apple-health"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let put = s.http.put(r.body["upload_url"].as_str().unwrap_or_default()).body(zip.into_inner()).send().await;
    assert!(put.is_ok_and(|p| p.status().is_success()));
    for _ in 0..600 {
        let i = s.call("GET", &format!("/v1/imports/{}", id(&r.body)), Auth::Bearer(&t.api_key), None).await;
        if i.body["status"] == "completed" {
            return;
        }
        assert_ne!(i.body["status"], "failed", "{}", i.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the import did not complete");
}

/// A tenant billing through a fresh sandbox Stripe account with a default AI plan and the Anthropic key.
async fn billing_tenant(s: &TestStack, name: &str) -> (TestTenant, String, String) {
    let stripe = s.sandboxes["stripe"].clone();
    let acct = s.stripe_account().await;
    let secret = acct["secret_key"].as_str().unwrap_or_default().to_owned();
    let t = s.tenant(name).await;
    let key = Auth::Bearer(&t.api_key);
    let body = json!({"secret_key": secret, "webhook_secret": "whsec_purge_test_secret_0123456789"});
    let r = s.call("PUT", "/v1/settings/stripe", key.clone(), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let plans = [
        ("free", json!({"monthly_tokens": 100_000, "requests_per_minute": 60})),
        (
            "pro",
            json!({"monthly_tokens": 1_000_000, "requests_per_minute": 60, "stripe_price_id": acct["prices"]["pro_monthly"]}),
        ),
    ];
    for (name, plan) in plans {
        let r = s.call("PUT", &format!("/v1/settings/plans/{name}"), key.clone(), Some(plan)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = s.call("PUT", "/v1/settings/metering", key.clone(), Some(json!({"default_plan": "free"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("PUT", "/v1/settings/llm/anthropic", key, Some(json!({"api_key": ANTHROPIC_KEY}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    (t, stripe, secret)
}

/// Everything a user can leave behind: data pushed, an import, AI usage and a meter event, a Stripe customer.
async fn live_a_little(s: &TestStack, t: &TestTenant, user: &str) -> String {
    push(s, t, user).await;
    import(s, t, user).await;
    let r = claude(s, t, user, &claude_body("hello", 20, false)).await;
    assert_eq!(r.status().as_u16(), 200);
    let event = json!({"user_id": user, "event_name": "reports", "value": 1, "idempotency_key": format!("k-{user}")});
    let r = s.call("POST", "/v1/usage/events", Auth::Bearer(&t.api_key), Some(event)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let body = json!({"plan": "pro", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let r = s.call("POST", &format!("/v1/users/{user}/billing/checkout"), Auth::Bearer(&t.api_key), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let billing = s.call("GET", &format!("/v1/users/{user}/billing"), Auth::Bearer(&t.api_key), None).await;
    let customer = billing.body["customer_id"].as_str().unwrap_or_default().to_owned();
    assert!(customer.starts_with("cus_"), "{}", billing.body);
    customer
}

async fn stripe_customer(s: &TestStack, stripe: &str, secret: &str, customer: &str) -> Value {
    let r = s.http.get(format!("{stripe}/v1/customers/{customer}")).bearer_auth(secret).send().await;
    r.unwrap_or_else(|e| panic!("{e}")).json().await.unwrap_or_default()
}

/// Receives the tenant's webhook deliveries (so deliveries about the user are stored).
async fn webhook_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{}/hooks", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
    let app = axum::Router::new().route("/hooks", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn after_the_purge_nothing_about_the_user_is_left_anywhere_and_everybody_else_keeps_everything() {
    let s = start().await;
    let (t, stripe, secret) = billing_tenant(&s, "Purging").await;
    let key = Auth::Bearer(&t.api_key);
    let hooks = json!({"url": webhook_receiver().await, "events": ["connection.created", "connection.updated", "data.updated"]});
    assert_eq!(s.call("PUT", "/v1/settings/webhooks", key.clone(), Some(hooks)).await.status, 200);
    let r = s.call("PUT", "/v1/settings/accounts", key.clone(), Some(json!({"deletion_grace_days": 0}))).await;
    assert_eq!((r.status, &r.body), (200, &json!({"deletion_grace_days": 0})));

    let user = id(&s.user(&t, "leaving").await);
    let stays = id(&s.user(&t, "staying").await);
    let (other, _, _) = billing_tenant(&s, "Bystander").await;
    let elsewhere = id(&s.user(&other, "leaving").await);
    connect_oura(&s, &t, &user).await;
    let customer = live_a_little(&s, &t, &user).await;
    live_a_little(&s, &t, &stays).await;
    live_a_little(&s, &other, &elsewhere).await;
    let before_delete = leftovers(&s, &user).await;
    for kind in ["DataTable", "MeterTable", "conn#", "puser#", "billing#", "imp#", "cs#", "whd#", "importbucket"] {
        assert!(before_delete.iter().any(|i| i.contains(kind)), "the user has {kind} items before: {before_delete:?}");
    }
    let (stays_before, elsewhere_before) = (snapshot(&s, &stays).await, snapshot(&s, &elsewhere).await);
    let revoked_before = sandbox_state(&s, "oura").await["revocations"].as_u64().unwrap_or(0);

    let r = s.call("DELETE", &format!("/v1/users/{user}"), key.clone(), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let due = r.body["purge_at"].as_str().and_then(shared::time::parse).unwrap_or_else(|| panic!("{}", r.body));
    assert!(due <= shared::time::now(), "no grace: due now: {}", r.body);
    purge_now(&s, "the user", async || !item_exists(&s, &t.id, &format!("user#{user}")).await).await;

    let left = leftovers(&s, &user).await;
    assert!(left.is_empty(), "nothing about the user is left: {left:#?}");
    assert!(leftovers(&s, &customer).await.is_empty(), "nor about their Stripe customer");
    assert_eq!(stripe_customer(&s, &stripe, &secret, &customer).await["deleted"], json!(true), "deleted at Stripe");
    let revoked = sandbox_state(&s, "oura").await["revocations"].as_u64().unwrap_or(0);
    assert!(revoked > revoked_before, "the Oura tokens were revoked at the provider");
    // The audit log keeps what happened, under a pseudonym.
    let audit: Vec<String> = leftovers(&s, "audit#").await.into_iter().filter(|i| i.contains(&t.id)).collect();
    assert!(audit.iter().any(|i| i.contains("user.deleted") && i.contains("deleted_")), "{audit:#?}");
    assert!(audit.iter().any(|i| i.contains("user.purged") && i.contains("deleted_")), "{audit:#?}");
    assert_eq!(snapshot(&s, &stays).await, stays_before, "the other user of the tenant keeps everything");
    assert_eq!(snapshot(&s, &elsewhere).await, elsewhere_before, "another tenant's user keeps everything");
    let stays_billing = s.call("GET", &format!("/v1/users/{stays}/billing"), key.clone(), None).await;
    let stays_customer = stays_billing.body["customer_id"].as_str().unwrap_or_default();
    assert!(stripe_customer(&s, &stripe, &secret, stays_customer).await["deleted"].is_null());

    // A redelivered purge job is harmless, and a job for a user who is not deleted deletes nothing.
    let sqs = sqs().await;
    for job in [json!({"tenant_id": t.id, "user_id": user}), json!({"tenant_id": t.id, "user_id": stays})] {
        let sent = sqs.send_message().queue_url(&s.refs["PurgeQueue"]).message_body(job.to_string()).send().await;
        assert!(sent.is_ok(), "{sent:?}");
    }
    purge_now(&s, "the redelivered jobs", async || true).await;
    assert!(leftovers(&s, &user).await.is_empty());
    assert_eq!(snapshot(&s, &stays).await, stays_before, "a stray job purged nobody");
    let dead = integration_tests::messages_waiting(&sqs, &s.refs["PurgeDeadLetters"]).await;
    assert_eq!(dead, 0, "no job failed");
    // The external id is free again; the purged user stays gone.
    let again = s.call("POST", "/v1/users", key.clone(), Some(json!({"external_id": "leaving"}))).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_ne!(id(&again.body), user);
    s.call("POST", &format!("/v1/users/{user}/restore"), key.clone(), None).await.assert_error(404, "not_found");
    s.call("DELETE", &format!("/v1/users/{user}"), key, None).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn an_offboarded_tenant_is_refused_at_once_then_purged_whole_and_other_tenants_keep_everything() {
    let s = start().await;
    let t = s.tenant("Leaving Co").await;
    let other = s.tenant("Staying Co").await;
    let key = Auth::Bearer(&t.api_key);
    for (tenant, name) in [(&t, "one"), (&t, "two"), (&other, "three")] {
        let user = id(&s.user(tenant, name).await);
        push(&s, tenant, &user).await;
        import(&s, tenant, &user).await;
    }
    let r = s.call("PUT", "/v1/settings/accounts", key.clone(), Some(json!({"deletion_grace_days": 90}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let jwt = user_token(&s, &t, "one");
    assert_eq!(s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await.status, 200);
    assert!(leftovers(&s, &t.id).await.len() > 10, "the tenant has a world");
    let other_before = snapshot(&s, &other.id).await;

    // Only the operator offboards.
    let r = s.call("DELETE", &format!("/admin/v1/tenants/{}", t.id), key.clone(), None).await;
    r.assert_error(403, "operator_key_required");
    let r = s.operator("DELETE", &format!("/admin/v1/tenants/{}", t.id), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!((r.body["tenant_id"].as_str(), r.body["status"].as_str()), (Some(t.id.as_str()), Some("deleted")));
    assert_eq!(s.operator("DELETE", &format!("/admin/v1/tenants/{}", t.id), None).await.status, 202);

    // Refused at once: its keys, its users' tokens; and nobody can enable it again.
    s.call("GET", "/v1/users", key.clone(), None).await.assert_error(403, "tenant_offboarded");
    s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await.assert_error(403, "tenant_disabled");
    let shown = s.operator("GET", &format!("/admin/v1/tenants/{}", t.id), None).await;
    assert_eq!(shown.body["status"], "deleted", "{}", shown.body);
    s.operator("POST", &format!("/admin/v1/tenants/{}/enable", t.id), None).await.assert_error(404, "not_found");

    let tenant_id = t.id.clone();
    purge_now(&s, "the tenant", async || !item_exists(&s, &tenant_id, "tenant").await).await;
    let left = leftovers(&s, &t.id).await;
    assert!(left.is_empty(), "nothing of the tenant is left: {left:#?}");
    assert_eq!(snapshot(&s, &other.id).await, other_before, "the other tenant keeps everything");
    s.call("GET", "/v1/users", key, None).await.assert_error(401, "invalid_api_key");
    s.operator("DELETE", &format!("/admin/v1/tenants/{}", t.id), None).await.assert_error(404, "not_found");
    s.operator("GET", &format!("/admin/v1/tenants/{}", t.id), None).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn unknown_and_foreign_users_are_absent_and_a_grace_period_out_of_range_is_refused() {
    let s = start().await;
    let a = s.tenant("A").await;
    let b = s.tenant("B").await;
    let key = Auth::Bearer(&a.api_key);
    let b_user = id(&s.user(&b, "bea").await);
    for user in ["usr_00000000000000000000000000", "not-a-user", b_user.as_str()] {
        s.call("DELETE", &format!("/v1/users/{user}"), key.clone(), None).await.assert_error(404, "not_found");
        let r = s.call("POST", &format!("/v1/users/{user}/restore"), key.clone(), None).await;
        r.assert_error(404, "not_found");
    }
    assert_eq!(s.call("GET", &format!("/v1/users/{b_user}"), Auth::Bearer(&b.api_key), None).await.status, 200);
    s.operator("DELETE", "/admin/v1/tenants/ten_00000000000000000000000000", None).await.assert_error(404, "not_found");

    let shown = s.call("GET", "/v1/settings/accounts", key.clone(), None).await;
    assert_eq!((shown.status, &shown.body), (200, &json!({"deletion_grace_days": 30})), "30 days unless set");
    for bad in [
        json!({"deletion_grace_days": 366}),
        json!({"deletion_grace_days": -1}),
        json!({"deletion_grace_days": "7"}),
        json!({"deletion_grace_days": 7, "extra": 1}),
        json!({}),
    ] {
        let r = s.call("PUT", "/v1/settings/accounts", key.clone(), Some(bad.clone())).await;
        r.assert_error(400, r.code());
        assert!(r.code().starts_with("invalid_"), "{bad}: {}", r.body);
    }
    let r = s.call("PUT", "/v1/settings/accounts", key.clone(), Some(json!({"deletion_grace_days": 365}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = s.call("GET", "/v1/settings/accounts", key.clone(), None).await;
    assert_eq!(shown.body, json!({"deletion_grace_days": 365}), "nothing bad was stored");
    let user = id(&s.user(&a, "al").await);
    let r = s.call("PATCH", &format!("/v1/users/{user}"), key.clone(), Some(json!({"status": "deleted"}))).await;
    r.assert_error(400, "invalid_body");
    assert_eq!(s.call("GET", &format!("/v1/users/{user}"), key, None).await.body["status"], "active");
}
