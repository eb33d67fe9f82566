//! Apple Health exports end to end: the import API hands out a presigned upload, the upload lands in the
//! stack's bucket (moto), its ObjectCreated notification reaches health-import through the queue, and the
//! data arrives in the normalized model.

use std::collections::HashMap;
use std::io::Cursor;
use std::time::Duration;

use health_import::generate::{Expected, Spec, write_zip};
use integration_tests::{Auth, TestStack, TestTenant, start, start_with_env, user_token};
use serde_json::{Value, json};

/// A generated export.zip and what an import of it must find.
fn export(days: u32) -> (Vec<u8>, Expected) {
    let mut out = Cursor::new(Vec::new());
    let expected =
        write_zip(Spec::new(7, days, 0), "export.xml", &mut out).unwrap_or_else(|e| panic!("generating: {e}"));
    (out.into_inner(), expected)
}

/// Starts an import for the user, uploads `body` to its presigned URL, and returns the import id.
async fn upload(s: &TestStack, t: &TestTenant, user_id: &str, body: Vec<u8>) -> String {
    let r = s.call("POST", &format!("/v1/users/{user_id}/imports/apple-health"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["method"], "PUT");
    let url = r.body["upload_url"].as_str().unwrap_or_default();
    let put = s.http.put(url).body(body).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(put.status().is_success(), "upload: {}", put.status());
    r.body["id"].as_str().unwrap_or_default().to_owned()
}

/// Waits until the import is completed or failed.
async fn finished(s: &TestStack, t: &TestTenant, id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..900 {
        last = s.call("GET", &format!("/v1/imports/{id}"), Auth::Bearer(&t.api_key), None).await.body;
        if last["status"] == "completed" || last["status"] == "failed" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the import did not finish: {last}");
}

/// The user's items in the data table, without the partition (so two users' data compare) or write times.
async fn user_items(s: &TestStack, t: &TestTenant, user_id: &str) -> Vec<String> {
    let pk = format!("{}#{user_id}", t.id);
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = s
            .dynamodb
            .query()
            .table_name(&s.refs["DataTable"])
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.clone()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        for item in page.items() {
            let mut pairs: Vec<String> = item
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "pk" | "synced_at"))
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            pairs.sort();
            out.push(pairs.join(","));
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            out.sort();
            return out;
        }
    }
}

async fn steps_by_day(s: &TestStack, t: &TestTenant, user_id: &str, expected: &Expected) -> HashMap<String, f64> {
    let (first, last) = (expected.steps.keys().next(), expected.steps.keys().last());
    let (Some(first), Some(last)) = (first, last) else { return HashMap::new() };
    let path = format!("/v1/users/{user_id}/daily?start={first}&end={last}&metrics=steps");
    let r = s.call("GET", &path, Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["day"].as_str()?.to_owned(), d["steps"].as_f64()?)))
        .collect()
}

#[tokio::test]
async fn an_uploaded_export_is_imported_with_the_steps_apple_health_shows_and_a_reimport_changes_nothing() {
    let s = start().await;
    let t = s.tenant("Imported").await;
    let user_id = s.user(&t, "ann").await["id"].as_str().unwrap_or_default().to_owned();
    let (zip, expected) = export(12);

    let id = upload(&s, &t, &user_id, zip.clone()).await;
    let done = finished(&s, &t, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["records_imported"].as_u64().is_some_and(|n| n > 100), "{done}");
    assert!(done["days_affected"].as_u64().is_some_and(|n| n >= 12), "{done}");
    assert_eq!(done["bytes_read"].as_u64(), Some(zip.len() as u64), "{done}");
    assert!(done["error"].is_null());

    let steps = steps_by_day(&s, &t, &user_id, &expected).await;
    assert_eq!(steps.len(), expected.steps.len(), "{steps:?}");
    for (day, want) in &expected.steps {
        let got = steps.get(&day.to_string()).copied().unwrap_or_default();
        assert!((got - want).abs() < 0.5, "{day}: {got} steps, Apple Health shows {want}");
        let naive = expected.naive_steps.get(day).copied().unwrap_or_default();
        assert!(naive > *want, "{day}: the naive sum {naive} double counts; the import must not");
    }
    let sleep = s
        .call(
            "GET",
            &format!("/v1/users/{user_id}/sleep?start=2000-01-01&end=2000-01-02"),
            Auth::Bearer(&t.api_key),
            None,
        )
        .await;
    assert_eq!(sleep.status, 200);

    // The same export again: a new import, the same items.
    let before = user_items(&s, &t, &user_id).await;
    let again = upload(&s, &t, &user_id, zip).await;
    assert_eq!(finished(&s, &t, &again).await["status"], "completed");
    assert_eq!(user_items(&s, &t, &user_id).await, before, "re-importing changes nothing");

    let listed = s.call("GET", &format!("/v1/users/{user_id}/imports"), Auth::Bearer(&t.api_key), None).await;
    let ids: Vec<&str> =
        listed.body["data"].as_array().into_iter().flatten().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids, vec![again.as_str(), id.as_str()], "newest first");
}

#[tokio::test]
async fn an_import_resumed_every_forty_elements_ends_with_exactly_the_data_of_an_uninterrupted_one() {
    let (zip, _) = export(6);
    let env = HashMap::from([("HEALTH_IMPORT_PAUSE_EVERY".to_owned(), "40".to_owned())]);
    let (paused, plain) = (start_with_env(env).await, start().await);
    let (tp, tu) = (paused.tenant("Paused").await, plain.tenant("Uninterrupted").await);
    let up = paused.user(&tp, "bea").await["id"].as_str().unwrap_or_default().to_owned();
    let uu = plain.user(&tu, "bea").await["id"].as_str().unwrap_or_default().to_owned();

    let (ip, iu) = (upload(&paused, &tp, &up, zip.clone()).await, upload(&plain, &tu, &uu, zip).await);
    let (dp, du) = (finished(&paused, &tp, &ip).await, finished(&plain, &tu, &iu).await);
    assert_eq!((dp["status"].as_str(), du["status"].as_str()), (Some("completed"), Some("completed")), "{dp} {du}");
    assert!(dp["resumes"].as_u64().is_some_and(|n| n >= 10), "paused and resumed many times: {dp}");
    assert_eq!(du["resumes"], 0);
    assert_eq!((&dp["records_imported"], &dp["days_affected"]), (&du["records_imported"], &du["days_affected"]));
    let (a, b) = (user_items(&paused, &tp, &up).await, user_items(&plain, &tu, &uu).await);
    assert!(a.len() > 50, "{}", a.len());
    assert_eq!(a, b, "every item the same");
}

#[tokio::test]
async fn a_file_that_is_not_an_export_fails_with_a_clear_error_and_keeps_what_an_earlier_import_stored() {
    let s = start().await;
    let t = s.tenant("Refused").await;
    let user_id = s.user(&t, "cid").await["id"].as_str().unwrap_or_default().to_owned();
    let (zip, _) = export(4);
    let good = upload(&s, &t, &user_id, zip.clone()).await;
    assert_eq!(finished(&s, &t, &good).await["status"], "completed");
    let before = user_items(&s, &t, &user_id).await;

    let png = b"\x89PNG\r\n\x1a\n not a health export at all".to_vec();
    let bad = finished(&s, &t, &upload(&s, &t, &user_id, png).await).await;
    assert_eq!(
        (bad["status"].as_str(), bad["error"]["code"].as_str()),
        (Some("failed"), Some("not_an_export")),
        "{bad}"
    );
    assert!(bad["error"]["message"].as_str().is_some_and(|m| m.contains("not an Apple Health export")), "{bad}");

    let cut = finished(&s, &t, &upload(&s, &t, &user_id, zip[..zip.len() / 2].to_vec()).await).await;
    assert_eq!(cut["status"], "failed", "{cut}");
    assert!(cut["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{cut}");
    assert_eq!(user_items(&s, &t, &user_id).await, before, "nothing stored was lost or changed");
}

#[tokio::test]
async fn the_import_api_refuses_bad_input_offers_multipart_above_5_gb_and_keeps_tenants_apart() {
    let s = start().await;
    let t = s.tenant("Uploads").await;
    let user_id = s.user(&t, "dee").await["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/users/{user_id}/imports/apple-health");

    let big = s.call("POST", &path, Auth::Bearer(&t.api_key), Some(json!({"size": 6_u64 << 30}))).await;
    assert_eq!(big.status, 201, "{}", big.body);
    let parts = big.body["parts"].as_array().cloned().unwrap_or_default();
    assert_eq!(parts.len(), 96, "6 GiB in 64 MiB parts");
    assert!(big.body.get("upload_url").is_none());
    let id = big.body["id"].as_str().unwrap_or_default().to_owned();
    let shown = s.call("GET", &format!("/v1/imports/{id}"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(shown.body["status"], "waiting_for_upload", "{}", shown.body);
    let complete = format!("/v1/imports/{id}/complete");
    let bogus = json!({"parts": [{"part_number": 1, "etag": "\"nope\""}]});
    s.call("POST", &complete, Auth::Bearer(&t.api_key), Some(bogus)).await.assert_error(400, "invalid_parts");
    s.call("POST", &complete, Auth::Bearer(&t.api_key), Some(json!({"parts": []})))
        .await
        .assert_error(400, "invalid_body");

    for body in [json!({"size": 0}), json!({"size": "big"}), json!({"bytes": 10})] {
        s.call("POST", &path, Auth::Bearer(&t.api_key), Some(body)).await.assert_error(400, "invalid_body");
    }
    let other = s.tenant("Other").await;
    s.call("GET", &format!("/v1/imports/{id}"), Auth::Bearer(&other.api_key), None)
        .await
        .assert_error(404, "not_found");
    s.call("POST", &path, Auth::Bearer(&other.api_key), None).await.assert_error(404, "not_found");

    // The end user starts and reads their own import.
    let jwt = user_token(&s, &t, "dee");
    let mine = s.call("POST", "/v1/me/imports/apple-health", Auth::Bearer(&jwt), None).await;
    assert_eq!(mine.status, 201, "{}", mine.body);
    let mine_id = mine.body["id"].as_str().unwrap_or_default();
    assert_eq!(s.call("GET", &format!("/v1/me/imports/{mine_id}"), Auth::Bearer(&jwt), None).await.status, 200);
    let listed = s.call("GET", "/v1/me/imports", Auth::Bearer(&jwt), None).await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(2), "{}", listed.body);
}
