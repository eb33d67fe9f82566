//! The operator's dead-letter API against a stack whose queue pollers are off, so what a redrive puts
//! back on a source queue stays there to be read: counts, a peek that leaves messages in place, a redrive
//! that moves them (send, then delete), and the refusals (unknown queue, no operator key, bad limit).

use std::collections::HashMap;

use integration_tests::{Auth, TestStack};
use serde_json::{Value, json};
use tenantry_local::{Options, Stack};

/// A stack that serves HTTP but polls no queue and ticks no schedule.
async fn start_without_workers() -> (TestStack, aws_sdk_sqs::Client) {
    shared::telemetry::init();
    assert!(std::env::var("AWS_ENDPOINT_URL").is_ok(), "AWS_ENDPOINT_URL is not set (run with ./dev test)");
    let sdk = shared::aws::sdk_config().await;
    let prefix = format!("t{}", &ulid::Ulid::new().to_string().to_lowercase()[16..]);
    let operator_key = format!("op_test_{}", ulid::Ulid::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("binding a port: {e}"));
    let base = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
    let options = Options {
        prefix: prefix.clone(),
        operator_key: operator_key.clone(),
        jwt: None,
        public_url: base.clone(),
        extra_env: HashMap::new(),
    };
    let stack = Stack::start(sdk.clone(), options).await.unwrap_or_else(|e| panic!("starting the stack: {e:?}"));
    let refs = stack.provisioned.refs.clone();
    tokio::spawn(stack.serve(listener));
    let test_stack = TestStack {
        base,
        operator_key,
        http: reqwest::Client::new(),
        prefix,
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        table: refs.get("TenancyTable").cloned().unwrap_or_default(),
        issuer: String::new(),
        sandboxes: HashMap::new(),
        token_key_id: refs.get("TokenKey").cloned().unwrap_or_default(),
        refs,
        ticks: HashMap::new(),
    };
    (test_stack, aws_sdk_sqs::Client::new(&sdk))
}

fn url(s: &TestStack, logical: &str) -> String {
    s.refs.get(logical).cloned().unwrap_or_else(|| panic!("the template has no {logical}"))
}

async fn put(sqs: &aws_sdk_sqs::Client, queue: &str, body: &str) {
    if let Err(e) = sqs.send_message().queue_url(queue).message_body(body).send().await {
        panic!("sending to {queue}: {e:?}");
    }
}

/// Every body on a queue, read until it is empty (and deleted: this is the test reading, not a worker).
async fn drain(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receiving from {queue}: {e:?}"));
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            bodies.push(m.body().unwrap_or_default().to_owned());
            if let Some(h) = m.receipt_handle() {
                let _ = sqs.delete_message().queue_url(queue).receipt_handle(h).send().await;
            }
        }
    }
    bodies.sort();
    bodies
}

fn count_of(list: &Value, name: &str) -> Option<u64> {
    list["queues"].as_array()?.iter().find(|q| q["name"] == name)?["messages"].as_u64()
}

fn ids(peek: &Value) -> Vec<String> {
    let mut ids: Vec<String> = peek["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn dead_letters_can_be_counted_peeked_without_being_consumed_and_redriven_to_their_source_queue() {
    let (s, sqs) = start_without_workers().await;
    let dead = url(&s, "SyncDeadLetters");
    let job_a = json!({"job_id": "job_a", "tenant_id": "ten_0000000000000000000000000a", "user_id": "usr_a",
        "provider": "oura", "days": 3});
    let job_b = json!({"job_id": "job_b", "tenant_id": "ten_0000000000000000000000000b", "user_id": "usr_b",
        "provider": "whoop", "days": 1});
    put(&sqs, &dead, &job_a.to_string()).await;
    put(&sqs, &dead, &job_b.to_string()).await;
    put(&sqs, &dead, "not json at all").await;

    // GIVEN three sync dead letters, WHEN the operator lists the queues, THEN each is counted.
    let list = s.operator("GET", "/admin/v1/dead-letters", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let names: Vec<&str> = list.body["queues"]
        .as_array()
        .map(|q| q.iter().filter_map(|q| q["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["sync", "notify", "import", "usage", "export", "purge"]);
    assert_eq!(count_of(&list.body, "sync"), Some(3), "{}", list.body);
    assert_eq!(count_of(&list.body, "notify"), Some(0), "{}", list.body);

    // Peeking twice shows the same three messages: a peek consumes nothing.
    let first = s.operator("GET", "/admin/v1/dead-letters/sync", None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(ids(&first.body).len(), 3, "{}", first.body);
    let second = s.operator("GET", "/admin/v1/dead-letters/sync?limit=10", None).await;
    assert_eq!(ids(&second.body), ids(&first.body), "{}", second.body);
    let data = first.body["data"].as_array().cloned().unwrap_or_default();
    let a = data.iter().find(|m| m["body"]["job_id"] == "job_a").unwrap_or_else(|| panic!("job_a: {}", first.body));
    assert_eq!(a["body"], job_a, "a JSON body comes back parsed");
    assert_eq!(a["tenant_id"], "ten_0000000000000000000000000a");
    assert!(a["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{a}");
    assert!(a["receive_count"].as_u64().is_some_and(|n| n >= 1), "{a}");
    let text = data.iter().find(|m| m["body"] == "not json at all").unwrap_or_else(|| panic!("{}", first.body));
    assert!(text.get("tenant_id").is_none(), "{text}");
    let two = s.operator("GET", "/admin/v1/dead-letters/sync?limit=2", None).await;
    assert_eq!(ids(&two.body).len(), 2, "{}", two.body);
    assert_eq!(count_of(&s.operator("GET", "/admin/v1/dead-letters", None).await.body, "sync"), Some(3));

    // A redrive moves at most its limit; one without a body moves the rest.
    let moved = s.operator("POST", "/admin/v1/dead-letters/sync/redrive", Some(json!({"limit": 2}))).await;
    assert_eq!((moved.status, moved.body["moved"].as_u64()), (200, Some(2)), "{}", moved.body);
    let rest = s
        .send(s.http.post(format!("{}/admin/v1/dead-letters/sync/redrive", s.base)).bearer_auth(&s.operator_key))
        .await;
    assert_eq!((rest.status, rest.body["moved"].as_u64()), (200, Some(1)), "{}", rest.body);
    let again = s.operator("POST", "/admin/v1/dead-letters/sync/redrive", Some(json!({}))).await;
    assert_eq!(again.body["moved"].as_u64(), Some(0), "nothing is left to move: {}", again.body);

    // THEN the dead letters are empty and every message is on the sync queue, unchanged.
    assert_eq!(count_of(&s.operator("GET", "/admin/v1/dead-letters", None).await.body, "sync"), Some(0));
    let mut expected = vec![job_a.to_string(), job_b.to_string(), "not json at all".to_owned()];
    expected.sort();
    assert_eq!(drain(&sqs, &url(&s, "SyncQueue")).await, expected);
    assert!(drain(&sqs, &dead).await.is_empty());
}

#[tokio::test]
async fn an_import_dead_letter_is_redriven_to_the_import_queue_with_its_tenant_shown() {
    let (s, sqs) = start_without_workers().await;
    let upload = json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object":
        {"key": "apple-health/ten_0000000000000000000000000c/usr_c/imp_c/export.zip", "size": 10}}}]});
    put(&sqs, &url(&s, "ImportDeadLetters"), &upload.to_string()).await;
    let peek = s.operator("GET", "/admin/v1/dead-letters/import", None).await;
    assert_eq!(peek.body["data"][0]["tenant_id"], "ten_0000000000000000000000000c", "{}", peek.body);
    let moved = s.operator("POST", "/admin/v1/dead-letters/import/redrive", Some(json!({"limit": 5}))).await;
    assert_eq!(moved.body["moved"].as_u64(), Some(1), "{}", moved.body);
    // S3 also put its own `s3:TestEvent` on the import queue when the bucket's notifications were set up.
    let arrived: Vec<String> =
        drain(&sqs, &url(&s, "ImportQueue")).await.into_iter().filter(|b| !b.contains("s3:TestEvent")).collect();
    assert_eq!(arrived, vec![upload.to_string()]);
}

#[tokio::test]
async fn unknown_queues_bad_limits_and_callers_without_the_operator_key_are_refused_and_nothing_moves() {
    let (s, sqs) = start_without_workers().await;
    let dead = url(&s, "NotifyDeadLetters");
    put(&sqs, &dead, r#"{"event": {"tenant_id": "ten_0000000000000000000000000d"}}"#).await;

    let unknown = s.operator("GET", "/admin/v1/dead-letters/billing", None).await;
    unknown.assert_error(404, "unknown_queue");
    let message = unknown.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sync, notify, import, usage, export, purge"),
        "the message names the queues there are: {message}"
    );
    s.operator("POST", "/admin/v1/dead-letters/billing/redrive", None).await.assert_error(404, "unknown_queue");

    s.operator("GET", "/admin/v1/dead-letters/notify?limit=0", None).await.assert_error(400, "invalid_limit");
    s.operator("GET", "/admin/v1/dead-letters/notify?limit=101", None).await.assert_error(400, "invalid_limit");
    s.operator("GET", "/admin/v1/dead-letters/notify?max=3", None).await.assert_error(400, "invalid_query");
    s.operator("POST", "/admin/v1/dead-letters/notify/redrive", Some(json!({"limit": 501})))
        .await
        .assert_error(400, "invalid_limit");
    s.operator("POST", "/admin/v1/dead-letters/notify/redrive", Some(json!({"count": 1})))
        .await
        .assert_error(400, "invalid_body");

    let created = s.operator("POST", "/admin/v1/tenants", Some(json!({"name": "Not an operator"}))).await;
    let tenant_key = created.body["api_key"].as_str().unwrap_or_default().to_owned();
    for (method, path) in [
        ("GET", "/admin/v1/dead-letters"),
        ("GET", "/admin/v1/dead-letters/notify"),
        ("POST", "/admin/v1/dead-letters/notify/redrive"),
    ] {
        let anonymous = s.call(method, path, Auth::None, None).await;
        assert_eq!(anonymous.status, 401, "{method} {path}: {}", anonymous.body);
        s.call(method, path, Auth::Bearer(&tenant_key), None).await.assert_error(403, "operator_key_required");
    }

    // Nothing was moved or consumed by any of it.
    assert_eq!(drain(&sqs, &url(&s, "NotifyQueue")).await, Vec::<String>::new());
    assert_eq!(drain(&sqs, &dead).await.len(), 1);
}
