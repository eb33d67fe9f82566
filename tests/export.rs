//! GDPR export of an end user: everything held about them lands in one zip (manifest, profile, connections
//! without secrets, health data, imports, usage, billing, audit), downloaded through a short-lived URL; one
//! export runs per user at a time, a day has a limit, and nobody reads another user's or tenant's export.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::connect::{connections, stored_tokens};
use integration_tests::hooks::connect_user;
use integration_tests::meter::{ANTHROPIC_KEY, OPENAI_KEY, claude, claude_body, metered_tenant, plan};
use integration_tests::{Auth, TestStack, TestTenant, start, start_with_env, user_token};
use serde_json::{Value, json};
use sha2::Digest;

const FILES: [&str; 11] = [
    "profile.json",
    "connections.json",
    "data/daily.ndjson",
    "data/sleep.ndjson",
    "data/workouts.ndjson",
    "data/samples.ndjson",
    "imports.json",
    "usage/periods.json",
    "usage/ledger.ndjson",
    "billing.json",
    "audit.ndjson",
];

fn push() -> Value {
    json!({"data": {
        "metrics": [
            {"name": "step_count", "units": "count", "data": [
                {"date": "2026-03-04 08:00:00 -0500", "qty": 4000, "source": "iPhone"},
                {"date": "2026-03-05 07:00:00 -0500", "qty": 2500, "source": "iPhone"}
            ]},
            {"name": "heart_rate", "units": "count/min", "data": [
                {"date": "2026-03-04 08:00:00 -0500", "Min": 70, "Avg": 80, "Max": 95}
            ]}
        ],
        "workouts": [{"name": "Outdoor Walk", "start": "2026-03-04 12:00:00 -0500", "end": "2026-03-04 12:30:00 -0500",
                      "distance": {"qty": 2.4, "units": "km"}}]
    }})
}

async fn backfilled(s: &TestStack, t: &TestTenant, user_id: &str) {
    for _ in 0..1200 {
        let cs = connections(s, t, user_id).await;
        if cs.len() == 1 && cs[0]["backfill"]["status"] == "completed" && cs[0]["status"] == "connected" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the backfill did not finish: {:?}", connections(s, t, user_id).await);
}

/// Polls an export (`path`) until it is completed or failed.
async fn finished(s: &TestStack, path: &str, auth: &str) -> Value {
    for _ in 0..240 {
        let r = s.call("GET", path, Auth::Bearer(auth), None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        if r.body["status"] == "completed" || r.body["status"] == "failed" {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{path} did not finish");
}

/// Starts an export of `user` with the tenant's key and waits for it; the finished export.
async fn export_of(s: &TestStack, t: &TestTenant, user: &str) -> Value {
    let r = s.call("POST", &format!("/v1/users/{user}/export"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "pending", "{}", r.body);
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let done = finished(s, &format!("/v1/exports/{id}"), &t.api_key).await;
    assert_eq!(done["status"], "completed", "{done}");
    done
}

/// The archive behind a completed export's URL: file name -> contents.
async fn download(s: &TestStack, export: &Value) -> BTreeMap<String, Vec<u8>> {
    let url = export["url"].as_str().unwrap_or_else(|| panic!("a completed export has a url: {export}"));
    let r = s.http.get(url).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200, "the download URL works");
    let bytes = r.bytes().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(export["size_bytes"].as_u64(), Some(bytes.len() as u64), "size_bytes is the zip's size");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap_or_else(|e| panic!("{e}"));
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap_or_else(|e| panic!("{e}"));
        let mut content = Vec::new();
        f.read_to_end(&mut content).unwrap_or_else(|e| panic!("{e}"));
        let name = f.name().unwrap_or_else(|e| panic!("{e}")).into_owned();
        files.insert(name, content);
    }
    files
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("an NDJSON line: {e}: {l}")))
        .collect()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("a JSON file: {e}"))
}

/// Every page of a list route.
async fn all_pages(s: &TestStack, path: &str, auth: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..500 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = cursor.as_ref().map_or_else(|| path.to_owned(), |c| format!("{path}{sep}cursor={c}"));
        let r = s.call("GET", &url, Auth::Bearer(auth), None).await;
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        out.extend(r.body["data"].as_array().cloned().unwrap_or_default());
        cursor = r.body["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            return out;
        }
    }
    panic!("{path} kept paging");
}

/// The API's view of `what` (daily per source, sleep, workouts) over every day from `first` to `last`.
async fn api_records(s: &TestStack, t: &TestTenant, user: &str, what: &str, first: &str, last: &str) -> Vec<Value> {
    let parse = |d: &str| time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"));
    let (mut from, last) =
        (parse(first).unwrap_or_else(|e| panic!("{e}")), parse(last).unwrap_or_else(|e| panic!("{e}")));
    let mut out = Vec::new();
    while from <= last {
        let to = (from + time::Duration::days(300)).min(last);
        let view = if what == "daily" { "&view=sources" } else { "" };
        out.extend(all_pages(s, &format!("/v1/users/{user}/{what}?start={from}&end={to}{view}"), &t.api_key).await);
        from = to + time::Duration::days(1);
    }
    out
}

fn day_span(records: &[Value]) -> (String, String) {
    let days: BTreeSet<String> = records.iter().filter_map(|r| r["day"].as_str().map(str::to_owned)).collect();
    (days.first().cloned().unwrap_or_default(), days.last().cloned().unwrap_or_default())
}

#[tokio::test]
async fn an_export_holds_everything_held_about_the_user_and_no_token_or_secret() {
    let s = start().await;
    // GIVEN a user with AI usage, a synced Oura connection, an Apple Health push, an import and audit entries,
    // in a tenant with Stripe keys, LLM keys and a provider app secret.
    let (t, user) = metered_tenant(&s, plan(100_000, 60)).await;
    let key = t.api_key.clone();
    let r = s
        .call(
            "PUT",
            "/v1/settings/stripe",
            Auth::Bearer(&key),
            Some(json!({"secret_key": "sk_test_export_secret_9k2j", "webhook_secret": "whsec_export_secret_7h1q"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (same_user, _) = connect_user(&s, &t, "oura", "chatty").await;
    assert_eq!(same_user, user);
    backfilled(&s, &t, &user).await;
    let r = s.call("POST", &format!("/v1/users/{user}/ingest/apple-health"), Auth::Bearer(&key), Some(push())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let import = s.call("POST", &format!("/v1/users/{user}/imports/apple-health"), Auth::Bearer(&key), None).await;
    assert_eq!(import.status, 201, "{}", import.body);
    let answered = claude(&s, &t, &user, &claude_body("hello", 50, false)).await;
    assert_eq!(answered.status(), 200);
    let tenant_id = shared::ids::TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e}"));
    let user_id = shared::ids::UserId::parse(&user).unwrap_or_else(|e| panic!("{e}"));
    let audit = shared::audit::AuditStore::new(s.dynamodb.clone(), &s.table);
    let entry = shared::audit::NewEntry::new(shared::audit::Actor::system("test"), "user.plan_changed").about(&user_id);
    let audited = audit.record(&tenant_id, entry).await.unwrap_or_else(|e| panic!("{e:?}"));
    let tokens = stored_tokens(&s, &t, &user).await;

    // WHEN the tenant exports the user
    let export = export_of(&s, &t, &user).await;
    let export_id = export["id"].as_str().unwrap_or_default().to_owned();
    assert!(export["url_expires_at"].is_string(), "{export}");
    let files = download(&s, &export).await;

    // THEN the manifest lists every file with its true count and hash
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let mut expected: BTreeSet<&str> = FILES.into_iter().collect();
    expected.insert("manifest.json");
    assert_eq!(names, expected);
    let manifest = json_of(&files["manifest.json"]);
    assert_eq!(
        (manifest["format_version"].as_u64(), manifest["export_id"].as_str(), manifest["user_id"].as_str()),
        (Some(1), Some(export_id.as_str()), Some(user.as_str())),
        "{manifest}"
    );
    assert_eq!(manifest["tenant_id"], t.id);
    let listed = manifest["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.iter().filter_map(|f| f["name"].as_str()).collect::<Vec<_>>(), FILES.to_vec());
    for f in &listed {
        let name = f["name"].as_str().unwrap_or_default();
        let bytes = &files[name];
        let records =
            if name.ends_with(".ndjson") { lines(bytes).len() } else { json_of(bytes).as_array().map_or(1, Vec::len) };
        assert_eq!(f["records"].as_u64(), Some(records as u64), "{name}");
        assert_eq!(f["bytes"].as_u64(), Some(bytes.len() as u64), "{name}");
        let hash: String = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(f["sha256"].as_str(), Some(hash.as_str()), "{name}");
        assert_eq!(export["files"][name].as_u64(), Some(records as u64), "the API's counts: {name}");
    }

    // ... the profile and connections are the user's, and nothing secret is anywhere in the archive
    let profile = json_of(&files["profile.json"]);
    assert_eq!((profile["id"].as_str(), profile["external_id"].as_str()), (Some(user.as_str()), Some("chatty")));
    let conns = json_of(&files["connections.json"]);
    assert_eq!(conns[0]["provider"], "oura", "{conns}");
    assert_eq!(conns[0]["backfill"]["status"], "completed", "{conns}");
    for key in conns[0].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        assert!(!key.contains("token") && !key.contains("secret"), "connections.json has no `{key}`");
    }
    let access = tokens["access_token"].as_str().unwrap_or_default().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap_or_default().to_owned();
    assert!(access.len() > 8 && refresh.len() > 8, "the sandbox's tokens: {tokens}");
    let everything: String = files.values().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    for secret in [
        access.as_str(),
        refresh.as_str(),
        "oura-secret-value",
        "sk_test_export_secret_9k2j",
        "whsec_export_secret_7h1q",
        ANTHROPIC_KEY,
        OPENAI_KEY,
        t.api_key.as_str(),
    ] {
        assert!(!everything.contains(secret), "the archive leaks {secret}");
    }

    // ... daily records per source and sleep sessions are what the data API serves
    let daily = lines(&files["data/daily.ndjson"]);
    assert!(daily.len() > 300, "a year of Oura days and the push: {}", daily.len());
    assert!(daily.iter().any(|d| d["day"] == "2026-03-04" && d["steps"] == 4000), "the pushed steps are there");
    let (first, last) = day_span(&daily);
    let served = api_records(&s, &t, &user, "daily", &first, &last).await;
    assert_eq!(served.len(), daily.len(), "one record per day and source");
    let by_key: HashMap<(String, String), &Value> =
        daily.iter().map(|d| ((d["day"].to_string(), d["source"].to_string()), d)).collect();
    for api in &served {
        let mine = by_key
            .get(&(api["day"].to_string(), api["source"].to_string()))
            .unwrap_or_else(|| panic!("exported: {api}"));
        for (k, v) in api.as_object().into_iter().flatten().filter(|(_, v)| !v.is_null()) {
            assert_eq!(&mine[k], v, "{k} of {api}");
        }
    }
    let sleep = lines(&files["data/sleep.ndjson"]);
    assert!(!sleep.is_empty());
    let (first, last) = day_span(&sleep);
    let served_sleep = api_records(&s, &t, &user, "sleep", &first, &last).await;
    let ids = |v: &[Value]| v.iter().filter_map(|x| x["id"].as_str().map(str::to_owned)).collect::<BTreeSet<_>>();
    assert_eq!(ids(&sleep), ids(&served_sleep));
    let workouts = lines(&files["data/workouts.ndjson"]);
    assert!(workouts.iter().any(|w| w["day"] == "2026-03-04"), "the pushed walk");
    let samples = lines(&files["data/samples.ndjson"]);
    assert!(samples.iter().any(|x| x["type"] == "heart_rate" && x["points"].as_array().is_some_and(|p| !p.is_empty())));

    // ... imports, usage, billing and audit
    let imports = json_of(&files["imports.json"]);
    assert_eq!(imports[0]["id"], import.body["id"], "{imports}");
    let usage = s.call("GET", &format!("/v1/users/{user}/usage"), Auth::Bearer(&key), None).await.body;
    let periods = json_of(&files["usage/periods.json"]);
    let month = periods
        .as_array()
        .and_then(|p| p.iter().find(|p| p["period"] == usage["period"]))
        .unwrap_or_else(|| panic!("this month: {periods}"));
    for k in ["input_tokens", "output_tokens", "requests"] {
        assert_eq!(month[k], usage[k], "{k}: {month} vs {usage}");
    }
    assert!(usage["requests"].as_u64().is_some_and(|r| r >= 1), "{usage}");
    let ledger = lines(&files["usage/ledger.ndjson"]);
    assert_eq!(Some(ledger.len() as u64), usage["requests"].as_u64());
    assert_eq!(ledger[0]["model"], "claude-haiku-4-5", "{:?}", ledger[0]);
    let billing = json_of(&files["billing.json"]);
    assert!(billing.as_object().is_some_and(|b| b.contains_key("customer_id")), "{billing}");
    let entries = lines(&files["audit.ndjson"]);
    assert!(entries.iter().any(|e| e["id"] == audited), "the tenant's entry about the user");
    assert!(
        entries.iter().any(|e| e["action"] == "export.requested" && e["target"]["id"] == export_id.as_str()),
        "{entries:?}"
    );

    // ... and the user's exports list it.
    let listed = s.call("GET", &format!("/v1/users/{user}/exports"), Auth::Bearer(&key), None).await;
    assert_eq!(listed.body["data"][0]["id"], export_id.as_str(), "{}", listed.body);
}

#[tokio::test]
async fn an_end_user_exports_their_own_data_and_nobody_else_reads_it() {
    let s = start().await;
    let t = s.tenant("Selfserve").await;
    let jwt = user_token(&s, &t, "end-user-1");
    let r = s.call("POST", "/v1/me/export", Auth::Bearer(&jwt), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let done = finished(&s, &format!("/v1/me/exports/{id}"), &jwt).await;
    assert_eq!(done["status"], "completed", "{done}");
    let files = download(&s, &done).await;
    let profile = json_of(&files["profile.json"]);
    assert_eq!(profile["external_id"], "end-user-1");
    assert_eq!(profile["id"], done["user_id"]);

    // Another end user of the tenant, and another tenant's key, get 404; the tenant's own key sees it.
    let other = user_token(&s, &t, "end-user-2");
    s.call("GET", &format!("/v1/me/exports/{id}"), Auth::Bearer(&other), None).await.assert_error(404, "not_found");
    let u = s.tenant("Elsewhere").await;
    s.call("GET", &format!("/v1/exports/{id}"), Auth::Bearer(&u.api_key), None).await.assert_error(404, "not_found");
    let mine = s.call("GET", &format!("/v1/exports/{id}"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!((mine.status, mine.body["status"].as_str()), (200, Some("completed")), "{}", mine.body);
    // An end user cannot export anyone by id.
    let user = done["user_id"].as_str().unwrap_or_default();
    let r = s.call("POST", &format!("/v1/users/{user}/export"), Auth::Bearer(&other), None).await;
    r.assert_error(403, "tenant_key_required");
}

#[tokio::test]
async fn bad_ids_are_404_and_a_second_export_while_one_runs_is_409() {
    let s = start().await;
    let t = s.tenant("Strict").await;
    let key = Auth::Bearer(&t.api_key);
    s.call("POST", "/v1/users/usr_00000000000000000000000000/export", key.clone(), None)
        .await
        .assert_error(404, "not_found");
    s.call("POST", "/v1/users/not-a-user/export", key.clone(), None).await.assert_error(404, "not_found");
    s.call("GET", "/v1/exports/exp_00000000000000000000000000", key.clone(), None).await.assert_error(404, "not_found");
    s.call("GET", "/v1/exports/nonsense", key.clone(), None).await.assert_error(404, "not_found");
    s.call("GET", "/v1/users/usr_00000000000000000000000000/exports", key.clone(), None)
        .await
        .assert_error(404, "not_found");

    // Two requests at once: one export starts, the other is told which one runs.
    let user = s.user(&t, "racer").await["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/users/{user}/export");
    let (a, b) = tokio::join!(s.call("POST", &path, key.clone(), None), s.call("POST", &path, key.clone(), None));
    let (won, lost) = if a.status == 202 { (a, b) } else { (b, a) };
    assert_eq!(won.status, 202, "{}", won.body);
    lost.assert_error(409, "export_in_progress");
    assert_eq!(lost.body["error"]["export_id"], won.body["id"], "{}", lost.body);
    let id = won.body["id"].as_str().unwrap_or_default().to_owned();
    let done = finished(&s, &format!("/v1/exports/{id}"), &t.api_key).await;
    assert_eq!(done["status"], "completed");

    // Once it is done, the next one starts; both are listed newest first, a page at a time.
    let next = s.call("POST", &path, key.clone(), None).await;
    assert_eq!(next.status, 202, "{}", next.body);
    let page = s.call("GET", &format!("/v1/users/{user}/exports?limit=1"), key.clone(), None).await;
    assert_eq!(page.body["data"][0]["id"], next.body["id"], "{}", page.body);
    let cursor = page.body["next_cursor"].as_str().unwrap_or_default().to_owned();
    let page2 = s.call("GET", &format!("/v1/users/{user}/exports?limit=1&cursor={cursor}"), key.clone(), None).await;
    assert_eq!(page2.body["data"][0]["id"], id.as_str(), "{}", page2.body);
    s.call("GET", &format!("/v1/users/{user}/exports?cursor=Zm9v"), key.clone(), None)
        .await
        .assert_error(400, "invalid_cursor");
}

#[tokio::test]
async fn the_daily_limit_answers_429_with_retry_after() {
    let s = start_with_env(HashMap::from([("EXPORT_DAILY_LIMIT".to_owned(), "2".to_owned())])).await;
    let t = s.tenant("Limited").await;
    let user = s.user(&t, "eager").await["id"].as_str().unwrap_or_default().to_owned();
    export_of(&s, &t, &user).await;
    export_of(&s, &t, &user).await;
    let r = s
        .http
        .post(format!("{}/v1/users/{user}/export", s.base))
        .bearer_auth(&t.api_key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 429);
    let retry: u64 =
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or_default();
    assert!((1..=86_400).contains(&retry), "until the UTC day ends: {retry}");
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}

async fn export_item(s: &TestStack, tenant: &str, id: &str) -> HashMap<String, AttributeValue> {
    let out = s
        .dynamodb
        .get_item()
        .table_name(&s.table)
        .key("pk", AttributeValue::S(tenant.to_owned()))
        .key("sk", AttributeValue::S(format!("export#{id}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.item.unwrap_or_default()
}

async fn queue_drained(s: &TestStack, sqs: &aws_sdk_sqs::Client) {
    for _ in 0..100 {
        if integration_tests::messages_waiting(sqs, &s.refs["ExportQueue"]).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the export queue did not drain");
}

#[tokio::test]
async fn a_redelivered_message_for_a_completed_export_changes_nothing() {
    let s = start().await;
    let t = s.tenant("Redelivered").await;
    let user = s.user(&t, "twice").await["id"].as_str().unwrap_or_default().to_owned();
    let done = export_of(&s, &t, &user).await;
    let id = done["id"].as_str().unwrap_or_default().to_owned();
    let item = export_item(&s, &t.id, &id).await;
    let s3 = shared::aws::s3(&shared::aws::sdk_config().await);
    let key = format!("exports/{}/{user}/{id}.zip", t.id);
    let head = s3.head_object().bucket(&s.refs["ExportBucket"]).key(&key).send().await;
    let etag = head.unwrap_or_else(|e| panic!("{e:?}")).e_tag().map(str::to_owned);

    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    let body = json!({"tenant_id": t.id, "user_id": user, "export_id": id}).to_string();
    let sent = sqs.send_message().queue_url(&s.refs["ExportQueue"]).message_body(body).send().await;
    sent.unwrap_or_else(|e| panic!("{e:?}"));
    queue_drained(&s, &sqs).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(export_item(&s, &t.id, &id).await, item, "the export item is as it was");
    let head = s3.head_object().bucket(&s.refs["ExportBucket"]).key(&key).send().await;
    assert_eq!(head.unwrap_or_else(|e| panic!("{e:?}")).e_tag().map(str::to_owned), etag, "the archive too");
}

#[tokio::test]
async fn a_run_that_crashed_is_restarted_from_scratch_and_its_upload_aborted() {
    let s = start().await;
    let t = s.tenant("Crashed").await;
    let user = s.user(&t, "phoenix").await["id"].as_str().unwrap_or_default().to_owned();
    let done = export_of(&s, &t, &user).await;
    let id = done["id"].as_str().unwrap_or_default().to_owned();
    // GIVEN the export as a run that died mid-upload left it: running, its lease lapsed, an upload open.
    let s3 = shared::aws::s3(&shared::aws::sdk_config().await);
    let bucket = s.refs["ExportBucket"].clone();
    let key = format!("exports/{}/{user}/{id}.zip", t.id);
    let upload = s.dynamodb.clone();
    let created = s3.create_multipart_upload().bucket(&bucket).key(&key).send().await;
    let upload_id = created.unwrap_or_else(|e| panic!("{e:?}")).upload_id().unwrap_or_default().to_owned();
    upload
        .update_item()
        .table_name(&s.table)
        .key("pk", AttributeValue::S(t.id.clone()))
        .key("sk", AttributeValue::S(format!("export#{id}")))
        .update_expression("SET #st = :r, lease_until = :past, upload_id = :u, run_id = :run REMOVE completed_at")
        .expression_attribute_names("#st", "status")
        .expression_attribute_values(":r", AttributeValue::S("running".into()))
        .expression_attribute_values(":past", AttributeValue::N("1".into()))
        .expression_attribute_values(":u", AttributeValue::S(upload_id.clone()))
        .expression_attribute_values(":run", AttributeValue::S("dead-run".into()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));

    // WHEN its message comes back
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    let body = json!({"tenant_id": t.id, "user_id": user, "export_id": id}).to_string();
    sqs.send_message()
        .queue_url(&s.refs["ExportQueue"])
        .message_body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));

    // THEN a new run completes it, and the dead run's upload is gone.
    let again = finished(&s, &format!("/v1/exports/{id}"), &t.api_key).await;
    assert_eq!(again["status"], "completed", "{again}");
    let files = download(&s, &again).await;
    assert!(files.contains_key("manifest.json"));
    let item = export_item(&s, &t.id, &id).await;
    assert_eq!(item.get("attempts").and_then(|a| a.as_n().ok()).map(String::as_str), Some("2"), "{item:?}");
    assert!(!item.contains_key("upload_id") && !item.contains_key("run_id"), "{item:?}");
    let open = s3.list_multipart_uploads().bucket(&bucket).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        open.uploads().iter().all(|u| u.upload_id() != Some(upload_id.as_str())),
        "the dead run's upload was aborted"
    );
}

#[tokio::test]
async fn a_large_archive_goes_up_in_several_s3_parts_and_comes_down_whole() {
    let s = start().await;
    let s3 = shared::aws::s3(&shared::aws::sdk_config().await);
    let bucket = s.refs["ExportBucket"].clone();
    let key = "exports/large-archive-test.zip";
    let created = s3.create_multipart_upload().bucket(&bucket).key(key).send().await;
    let upload_id = created.unwrap_or_else(|e| panic!("{e:?}")).upload_id().unwrap_or_default().to_owned();
    let sink = export::job::S3Parts::new(s3.clone(), &bucket, key, &upload_id);
    // S3's smallest part size; hex noise deflates to about half, so 14 MB of lines make three parts.
    let mut z = export::archive::ZipStream::new(sink, 5 * 1024 * 1024);
    z.start("data/samples.ndjson").unwrap_or_else(|e| panic!("{e:?}"));
    let mut digest = sha2::Sha256::digest(b"seed");
    let mut text = String::new();
    for i in 0..14_000u32 {
        text.clear();
        for _ in 0..16 {
            digest = sha2::Sha256::digest(digest);
            text.extend(digest.iter().map(|b| format!("{b:02x}")));
        }
        z.line(&json!({"i": i, "noise": text})).unwrap_or_else(|e| panic!("{e:?}"));
        z.flush().await.unwrap_or_else(|e| panic!("{e:?}"));
    }
    let done = z.finish().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(done.parts >= 2, "several parts: {}", done.parts);
    let entry = done.entries[0].clone();
    let size = done.size;
    done.sink.complete().await.unwrap_or_else(|e| panic!("{e:?}"));

    let object = s3.get_object().bucket(&bucket).key(key).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    let bytes = object.body.collect().await.unwrap_or_else(|e| panic!("{e:?}")).into_bytes();
    assert_eq!(bytes.len() as u64, size);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap_or_else(|e| panic!("{e}"));
    let mut content = Vec::new();
    archive
        .by_name("data/samples.ndjson")
        .unwrap_or_else(|e| panic!("{e}"))
        .read_to_end(&mut content)
        .unwrap_or_default();
    let hash: String = sha2::Sha256::digest(&content).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!((entry.records, entry.bytes, entry.sha256), (14_000, content.len() as u64, hash));
}
