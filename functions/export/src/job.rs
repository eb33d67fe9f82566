//! The export job (an `ExportQueue` message `{tenant_id, user_id, export_id}`): takes the export with a
//! lease, streams everything held about the user into one zip through an S3 multipart upload, and marks the
//! export completed. A redelivered message for a finished export does nothing; a run that crashed is
//! restarted from scratch once its lease lapses (its upload aborted first).

use std::collections::BTreeMap;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use shared::audit::{Actor, AuditStore, NewEntry};
use shared::dynamo::{Item, get_s, s};
use shared::ids::{TenantId, UserId};
use shared::tenancy::StoreError;

use crate::archive::{PartSink, ZipStream};
use crate::store::{ExportId, ExportStore};
use crate::{Exporter, Tenant, object_key};

/// Version of the archive's layout (`manifest.json` `format_version`).
pub const FORMAT_VERSION: u32 = 1;
/// How long a run holds the export: the function's 900 s timeout and a margin.
const LEASE_SECS: i64 = 960;
/// The queue's `maxReceiveCount`: the last receive marks the export failed instead of leaving it to the
/// dead letters.
const MAX_RECEIVES: u32 = 3;

/// One message on `ExportQueue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub export_id: String,
}

/// Why a run stopped short.
#[derive(Debug, thiserror::Error)]
enum Stop {
    /// Storage or S3 failed: the message comes back and the run starts again.
    #[error("{0:#}")]
    Retry(#[from] anyhow::Error),
    /// Nothing to retry (the user is gone): the export fails with this code.
    #[error("{0}")]
    Permanent(&'static str),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::Permanent("user_not_found"),
            other => Self::Retry(anyhow::Error::new(other)),
        }
    }
}

/// The parts of one multipart upload.
pub struct S3Parts {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    done: Vec<CompletedPart>,
}

impl S3Parts {
    /// Parts of the upload `upload_id` (already created) of `bucket`/`key`.
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) -> Self {
        Self { s3, bucket: bucket.to_owned(), key: key.to_owned(), upload_id: upload_id.to_owned(), done: Vec::new() }
    }

    /// Completes the upload with the parts handed on (the object appears only now).
    pub async fn complete(self) -> anyhow::Result<()> {
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(self.done)).build())
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context("completing the export upload"))?;
        Ok(())
    }
}

impl PartSink for S3Parts {
    async fn put_part(&mut self, number: i32, bytes: Vec<u8>) -> anyhow::Result<()> {
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context("uploading a part of an export"))?;
        self.done.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build());
        Ok(())
    }
}

impl Exporter {
    /// A batch of `ExportQueue` messages; the ones to retry are reported back.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        shared::batch::partial(&event, |m| self.one(m)).await
    }

    /// True when the message must come back.
    async fn one(&self, message: &SqsMessage) -> bool {
        let Some(msg) = message.body.as_deref().and_then(|b| serde_json::from_str::<Message>(b).ok()) else {
            tracing::warn!(message_id = ?message.message_id, "export queue message is not one of ours; dropped");
            return false;
        };
        shared::telemetry::record_tenant(&msg.tenant_id);
        let Some(id) = ExportId::parse(&msg.export_id) else {
            tracing::warn!(export_id = %msg.export_id, "export queue message with a malformed export id; dropped");
            return false;
        };
        let receives = message.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        match self.run(&msg.tenant_id, &msg.user_id, &id, receives).await {
            Ok(()) => false,
            Err(e) => {
                tracing::error!(tenant_id = %msg.tenant_id, export_id = %id, error = ?e, "export run failed");
                true
            }
        }
    }

    /// One run of an export.
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant, user_id = %user, export_id = %id))]
    pub async fn run(&self, tenant: &TenantId, user: &UserId, id: &ExportId, receives: u32) -> anyhow::Result<()> {
        let t = self.tenant(tenant).await?;
        let Some(export) = t.exports.get(tenant, id).await? else {
            tracing::warn!("no such export; message dropped");
            return Ok(());
        };
        if export.status.is_done() || &export.user_id != user {
            tracing::info!(status = export.status.as_str(), "export already finished; nothing to do");
            return Ok(());
        }
        let now = shared::time::now().unix_timestamp();
        let run_id = ulid::Ulid::new().to_string();
        let Some(before) = t.exports.start_run(tenant, id, &run_id, now, now + LEASE_SECS).await? else {
            // Finished meanwhile, or a live run holds it: that run ends it (or, crashed, its message returns).
            tracing::info!("export is finished or another run holds it");
            return Ok(());
        };
        let key = object_key(tenant, user, id);
        if let Some(stale) = &before.upload_id {
            tracing::info!(attempt = before.attempts + 1, "restarting a crashed export run");
            self.abort(&key, stale).await;
        }
        match self.write(&t, tenant, user, id, &run_id, &key).await {
            Ok((size, files)) => {
                // Completed last: whoever sees it completed finds the slot free and the audit entry written.
                t.exports.release_slot(tenant, user, id).await?;
                let entry = NewEntry::new(Actor::system("export"), "export.completed")
                    .target("export", id)
                    .about(user)
                    .details(json!({"size_bytes": size, "files": files}));
                t.audit.record(tenant, entry).await?;
                t.exports.complete(tenant, id, &run_id, size, &files).await?;
                tracing::info!(size_bytes = size, "export completed");
                Ok(())
            }
            Err(Stop::Permanent(code)) => {
                tracing::warn!(code, "export failed for good");
                t.exports.release_slot(tenant, user, id).await?;
                t.exports.fail(tenant, id, &run_id, code).await?;
                Ok(())
            }
            Err(Stop::Retry(e)) if receives >= MAX_RECEIVES => {
                tracing::error!(error = ?e, receives, "export failed on its last attempt");
                t.exports.release_slot(tenant, user, id).await?;
                t.exports.fail(tenant, id, &run_id, "export_failed").await?;
                Ok(())
            }
            Err(Stop::Retry(e)) => {
                t.exports.pause(tenant, id, &run_id).await?;
                Err(e)
            }
        }
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let out =
            self.s3.abort_multipart_upload().bucket(&self.settings.bucket).key(key).upload_id(upload_id).send().await;
        if let Err(e) = out {
            // Gone already (aborted, or completed by the crashed run); the lifecycle rule cleans up the rest.
            tracing::info!(error = %e, "aborting an earlier export upload");
        }
    }

    /// Streams the archive to S3; its size and the records of each file.
    async fn write(
        &self,
        t: &Tenant,
        tenant: &TenantId,
        user: &UserId,
        id: &ExportId,
        run_id: &str,
        key: &str,
    ) -> Result<(u64, BTreeMap<String, u64>), Stop> {
        // The user first: a deleted user is no export, and nothing is uploaded.
        let profile = profile(t, tenant, user).await?;
        let created = self
            .s3
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(key)
            .content_type("application/zip")
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context("starting the export upload"))?;
        let upload_id = created.upload_id().ok_or_else(|| anyhow::anyhow!("S3 gave no upload id"))?.to_owned();
        t.exports.set_upload(tenant, id, run_id, &upload_id).await?;
        let sink = S3Parts::new(self.s3.clone(), &self.settings.bucket, key, &upload_id);
        let mut z = ZipStream::new(sink, self.settings.part_bytes);
        let written = self.contents(&mut z, t, tenant, user, id, profile).await;
        let finished = match written {
            Ok(()) => z.finish().await,
            Err(e) => Err(e),
        };
        let finished = match finished {
            Ok(f) => f,
            Err(e) => {
                self.abort(key, &upload_id).await;
                return Err(Stop::Retry(e));
            }
        };
        let size = finished.size;
        let files = finished.entries.iter().map(|e| (e.name.clone(), e.records)).collect();
        if let Err(e) = finished.sink.complete().await {
            self.abort(key, &upload_id).await;
            return Err(Stop::Retry(e));
        }
        Ok((size, files))
    }

    /// Every file of the archive, the manifest last.
    async fn contents(
        &self,
        z: &mut ZipStream<S3Parts>,
        t: &Tenant,
        tenant: &TenantId,
        user: &UserId,
        id: &ExportId,
        profile: Value,
    ) -> anyhow::Result<()> {
        let generated_at = shared::time::now_rfc3339();
        z.document("profile.json", &profile, 1).await?;

        let connections: Vec<Value> =
            t.tenancy.connect_store().connections(tenant, user).await?.iter().map(connection_json).collect();
        z.document("connections.json", &connections, connections.len() as u64).await?;

        let data_pk = format!("{tenant}#{user}");
        let data = &self.settings.data_table;
        ndjson(z, &t.client, data, &data_pk, "daily#", "data/daily.ndjson", daily_json).await?;
        ndjson(z, &t.client, data, &data_pk, "sleep#", "data/sleep.ndjson", doc_json).await?;
        ndjson(z, &t.client, data, &data_pk, "workout#", "data/workouts.ndjson", doc_json).await?;
        ndjson(z, &t.client, data, &data_pk, "samples#", "data/samples.ndjson", samples_json).await?;

        let imports = t.tenancy.import_store();
        let (mut all, mut after) = (Vec::new(), None);
        loop {
            let (page, next) = imports.list(tenant, user, after, 100).await?;
            all.extend(page.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>()?);
            after = next;
            if after.is_none() {
                break;
            }
        }
        z.document("imports.json", &all, all.len() as u64).await?;

        let meter = &self.settings.meter_table;
        let periods = query_all(&t.client, meter, &data_pk, "period#").await?;
        let periods: Vec<Value> = periods.iter().map(period_json).collect();
        z.document("usage/periods.json", &periods, periods.len() as u64).await?;
        ndjson(z, &t.client, meter, &data_pk, "ledger#", "usage/ledger.ndjson", ledger_json).await?;

        let billing = t.tenancy.billing_store().state(tenant, user).await?;
        z.document("billing.json", &billing, 1).await?;

        z.start("audit.ndjson")?;
        for item in t.audit.of_user(tenant, user).await? {
            z.line(&shared::audit::entry_json(&item))?;
        }
        z.end()?;
        z.flush().await?;

        let manifest = json!({
            "format_version": FORMAT_VERSION,
            "export_id": id,
            "tenant_id": tenant,
            "user_id": user,
            "generated_at": generated_at,
            "files": z.entries(),
        });
        z.document("manifest.json", &manifest, 1).await
    }
}

async fn profile(t: &Tenant, tenant: &TenantId, user: &UserId) -> Result<Value, Stop> {
    let u = t.tenancy.get_user(tenant, user).await?;
    let (_, plan) = t.tenancy.plan_store().user_plan(tenant, user).await?;
    let mut profile = serde_json::to_value(&u).map_err(anyhow::Error::from)?;
    profile["plan"] = json!(plan);
    Ok(profile)
}

/// A connection as the export shows it: what the API shows, and never a token or secret (the struct keeps
/// its sealed tokens out of serialization; the filter keeps any future field named so out too).
pub fn connection_json(c: &shared::connect::Connection) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.retain(|k, _| !k.contains("token") && !k.contains("secret"));
    }
    v
}

async fn query_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    prefix: &str,
) -> anyhow::Result<Vec<Item>> {
    let query = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":p", s(prefix))
        .consistent_read(true);
    Ok(shared::dynamo::query_all(query, "reading a user's items for their export").await?)
}

/// One NDJSON entry of every item under `pk` whose sort key starts with `prefix`, a page of the query at a
/// time (the part buffer flushed after each).
async fn ndjson(
    z: &mut ZipStream<S3Parts>,
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    prefix: &str,
    name: &str,
    convert: fn(&Item) -> Value,
) -> anyhow::Result<()> {
    z.start(name)?;
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":p", s(prefix))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context("reading a user's items for their export"))?;
        for item in page.items() {
            z.line(&convert(item))?;
        }
        z.flush().await?;
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    z.end()
}

/// A DynamoDB value as JSON: numbers as numbers, sets as arrays.
pub fn attr_json(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!(s),
        AttributeValue::N(n) => n
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| n.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| json!(n)),
        AttributeValue::Bool(b) => json!(b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Ss(v) => json!(v),
        AttributeValue::Ns(v) => Value::Array(v.iter().map(|n| attr_json(&AttributeValue::N(n.clone()))).collect()),
        AttributeValue::L(v) => Value::Array(v.iter().map(attr_json).collect()),
        AttributeValue::M(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect()),
        _ => Value::Null,
    }
}

/// The item's attributes but the keys and bookkeeping named in `drop`, sorted by name.
fn fields(item: &Item, drop: &[&str]) -> Map<String, Value> {
    let mut keys: Vec<&String> = item.keys().filter(|k| !drop.contains(&k.as_str())).collect();
    keys.sort();
    keys.into_iter().map(|k| (k.clone(), attr_json(&item[k]))).collect()
}

fn daily_json(item: &Item) -> Value {
    Value::Object(fields(item, &["pk", "sk"]))
}

/// Sleep sessions and workouts are stored as the model's JSON.
fn doc_json(item: &Item) -> Value {
    get_s(item, "doc")
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_else(|| Value::Object(fields(item, &["pk", "sk"])))
}

/// One stored hour of samples: `samples#<type>#<UTC hour>#<source>`.
fn samples_json(item: &Item) -> Value {
    let mut v = fields(item, &["pk", "sk", "points"]);
    let mut key = get_s(item, "sk").unwrap_or_default().splitn(4, '#').skip(1);
    v.insert("type".into(), json!(key.next()));
    v.insert("hour".into(), json!(key.next()));
    let points = get_s(item, "points").and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null);
    v.insert("points".into(), points);
    Value::Object(v)
}

/// A month of usage; the rate window's slots are bookkeeping, not usage.
fn period_json(item: &Item) -> Value {
    let mut v = fields(item, &["pk", "sk", "gsi1pk", "gsi1sk", "rw", "rc", "p1", "p2", "p3", "p4", "p5", "p6"]);
    v.insert("period".into(), json!(get_s(item, "sk").unwrap_or_default().trim_start_matches("period#")));
    Value::Object(v)
}

/// A ledger entry; the reporting outbox's index keys are bookkeeping.
fn ledger_json(item: &Item) -> Value {
    Value::Object(fields(item, &["pk", "sk", "rpk", "rdue"]))
}

/// For `Tenant`: the audit store on the tenant's client.
pub(crate) fn audit_store(client: &aws_sdk_dynamodb::Client, table: &str) -> AuditStore {
    AuditStore::new(client.clone(), table)
}

/// For `Tenant`: the export store on the tenant's client.
pub(crate) fn export_store(client: &aws_sdk_dynamodb::Client, table: &str) -> ExportStore {
    ExportStore::new(client.clone(), table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_numbers_and_sets_become_arrays() {
        assert_eq!(attr_json(&AttributeValue::N("42".into())), json!(42));
        assert_eq!(attr_json(&AttributeValue::N("4.5".into())), json!(4.5));
        assert_eq!(attr_json(&AttributeValue::Ss(vec!["a".into()])), json!(["a"]));
    }

    #[test]
    fn a_sample_hour_names_its_type_and_hour_and_keeps_its_points() {
        let item = Item::from([
            ("pk".to_owned(), s("ten_x#usr_y")),
            ("sk".to_owned(), s("samples#heart_rate#2026-03-04T13#apple_health")),
            ("source".to_owned(), s("apple_health")),
            ("points".to_owned(), s("[[1772629200,80.0]]")),
        ]);
        assert_eq!(
            samples_json(&item),
            json!({"type": "heart_rate", "hour": "2026-03-04T13", "source": "apple_health", "points": [[1772629200, 80.0]]})
        );
    }

    #[test]
    fn a_period_loses_its_rate_window_and_keys() {
        let item = Item::from([
            ("pk".to_owned(), s("ten_x#usr_y")),
            ("sk".to_owned(), s("period#2026-11")),
            ("gsi1pk".to_owned(), s("ten_x#2026-11")),
            ("rw".to_owned(), AttributeValue::N("1".into())),
            ("input_tokens".to_owned(), AttributeValue::N("12".into())),
        ]);
        assert_eq!(period_json(&item), json!({"period": "2026-11", "input_tokens": 12}));
    }
}
