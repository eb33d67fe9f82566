//! An Apple Health export end to end through the local stack: the import API, a presigned PUT into moto's
//! bucket, the S3 notification on the import queue, health-import streaming it into the data table. Not a
//! target (moto answers each write in milliseconds); the importer's own speed is `health-import`'s bench.

use std::io::Cursor;
use std::time::{Duration, Instant};

use health_import::generate::{Spec, write_zip};
use integration_tests::{Auth, TestStack};

use crate::sync::figure;

pub async fn import_through_moto(s: &TestStack, mb: u64) {
    let t = s.tenant("Bench imports").await;
    let user = s.user(&t, "importer").await["id"].as_str().unwrap_or_default().to_owned();
    let mut zip = Cursor::new(Vec::new());
    let expected = match write_zip(Spec::new(11, 90, mb << 20), "export.xml", &mut zip) {
        Ok(e) => e,
        Err(e) => return figure("health-import through moto", format!("could not generate: {e}")),
    };
    let zip = zip.into_inner();
    let r = s.call("POST", &format!("/v1/users/{user}/imports/apple-health"), Auth::Bearer(&t.api_key), None).await;
    let (id, url) = (r.body["id"].as_str().unwrap_or_default(), r.body["upload_url"].as_str().unwrap_or_default());
    let started = Instant::now();
    let put = s.http.put(url).body(zip.clone()).send().await;
    if !put.is_ok_and(|p| p.status().is_success()) {
        return figure("health-import through moto", "the upload failed".into());
    }
    let mut last = serde_json::Value::Null;
    while started.elapsed() < Duration::from_secs(1800) {
        last = s.call("GET", &format!("/v1/imports/{id}"), Auth::Bearer(&t.api_key), None).await.body;
        if last["status"] == "completed" || last["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    figure(
        &format!(
            "health-import: {:.0} MB export.xml ({:.1} MB zip) through moto",
            expected.xml_bytes as f64 / 1e6,
            zip.len() as f64 / 1e6
        ),
        format!(
            "{} in {took:.1?}: {} records, {} days, {:.1} MB/s of XML",
            last["status"].as_str().unwrap_or("?"),
            last["records_imported"],
            last["days_affected"],
            expected.xml_bytes as f64 / 1e6 / took.as_secs_f64()
        ),
    );
}
