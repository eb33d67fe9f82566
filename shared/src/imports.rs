//! Apple Health imports: one item per import in the tenancy table, from the presigned upload to the end of
//! the streaming import (`functions/health-import`). Object keys name tenant, user and import, so the S3
//! event alone says whose export arrived: `apple-health/<tenant>/<user>/<import>/export`.

use std::fmt;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::dynamo::{Item, get_s, req_s, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::tenancy::StoreError;

/// `imp_` + lowercase ULID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImportId(String);

impl ImportId {
    pub fn generate() -> Self {
        Self(format!("imp_{}", ulid::Ulid::new().to_string().to_lowercase()))
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = raw.len() == 30
            && raw.starts_with("imp_")
            && raw[4..].bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if ok { Ok(Self(raw.to_owned())) } else { Err(format!("`{raw}` is not an import id")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImportId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<ImportId> for String {
    fn from(i: ImportId) -> String {
        i.0
    }
}

impl fmt::Display for ImportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the export of an import is uploaded.
pub fn object_key(tenant: &TenantId, user: &UserId, id: &ImportId) -> String {
    format!("apple-health/{tenant}/{user}/{id}/export")
}

/// Reads tenant, user and import back from an uploaded object's key; `None` for anything else.
pub fn parse_object_key(key: &str) -> Option<(TenantId, UserId, ImportId)> {
    let mut parts = key.strip_prefix("apple-health/")?.split('/');
    let tenant = TenantId::parse(parts.next()?).ok()?;
    let user = UserId::parse(parts.next()?).ok()?;
    let id = ImportId::parse(parts.next()?).ok()?;
    (parts.next() == Some("export") && parts.next().is_none()).then_some((tenant, user, id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    WaitingForUpload,
    Queued,
    Running,
    Completed,
    Failed,
}

impl ImportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForUpload => "waiting_for_upload",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::WaitingForUpload, Self::Queued, Self::Running, Self::Completed, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// Why an import failed, for the person who uploaded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportFailure {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// An import as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Import {
    pub id: ImportId,
    pub user_id: UserId,
    pub status: ImportStatus,
    pub bytes_read: u64,
    pub records_imported: u64,
    pub days_affected: u64,
    /// How many times the import paused near its deadline and continued in a fresh invocation.
    pub resumes: u64,
    pub error: Option<ImportFailure>,
    pub created_at: String,
    pub updated_at: String,
    /// The multipart upload, for exports over 5 GB.
    #[serde(skip)]
    pub upload_id: Option<String>,
}

/// Progress as the importer reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub bytes_read: u64,
    pub records_imported: u64,
    pub days_affected: u64,
}

fn sk(user: &UserId, id: &ImportId) -> String {
    format!("imp#{user}#{id}")
}

fn marker_sk(id: &ImportId) -> String {
    format!("impid#{id}")
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn num(item: &Item, k: &str) -> u64 {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn import_from(item: &Item) -> anyhow::Result<Import> {
    Ok(Import {
        id: ImportId::parse(&req_s(item, "import_id")?).map_err(anyhow::Error::msg)?,
        user_id: UserId::parse(&req_s(item, "user_id")?)?,
        status: ImportStatus::parse(&req_s(item, "status")?).ok_or_else(|| anyhow::anyhow!("stored import status"))?,
        bytes_read: num(item, "bytes_read"),
        records_imported: num(item, "records_imported"),
        days_affected: num(item, "days_affected"),
        resumes: num(item, "resumes"),
        error: get_s(item, "error").and_then(|e| serde_json::from_str(e).ok()),
        created_at: req_s(item, "created_at")?,
        updated_at: req_s(item, "updated_at")?,
        upload_id: get_s(item, "upload_id").map(str::to_owned),
    })
}

/// Imports on the tenancy table, through a tenant-scoped client. Every status change is conditional on the
/// status it leaves, so a redelivered S3 event or continuation cannot run an import twice at once or
/// reopen a finished one.
#[derive(Clone, Debug)]
pub struct ImportStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl ImportStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Records a new import waiting for its upload, and the marker that finds it by id alone.
    pub async fn create(&self, tenant: &TenantId, import: &Import) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let mut item = Item::from([
            ("pk".to_owned(), s(tenant.as_str())),
            ("sk".to_owned(), s(sk(&import.user_id, &import.id))),
            ("import_id".to_owned(), s(import.id.as_str())),
            ("user_id".to_owned(), s(import.user_id.as_str())),
            ("status".to_owned(), s(import.status.as_str())),
            ("created_at".to_owned(), s(&import.created_at)),
            ("updated_at".to_owned(), s(&import.updated_at)),
        ]);
        if let Some(upload) = &import.upload_id {
            item.insert("upload_id".to_owned(), s(upload));
        }
        let marker = Item::from([
            ("pk".to_owned(), s(tenant.as_str())),
            ("sk".to_owned(), s(marker_sk(&import.id))),
            ("user_id".to_owned(), s(import.user_id.as_str())),
        ]);
        let put = |item: Item| -> Result<TransactWriteItem, StoreError> {
            let p = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| StoreError::Unavailable(e.into()))?;
            Ok(TransactWriteItem::builder().put(p).build())
        };
        self.client
            .transact_write_items()
            .transact_items(put(item)?)
            .transact_items(put(marker)?)
            .send()
            .await
            .map_err(unavailable("creating an import"))?;
        Ok(())
    }

    /// An import by id; `NotFound` when the tenant has none by that id.
    pub async fn get(&self, tenant: &TenantId, id: &ImportId) -> Result<Import, StoreError> {
        let marker = self.item(tenant, &marker_sk(id)).await?.ok_or(StoreError::NotFound)?;
        let user = UserId::parse(&req_s(&marker, "user_id")?).map_err(anyhow::Error::from)?;
        self.of_user(tenant, &user, id).await
    }

    /// An import of this user; `NotFound` when the user has none by that id.
    pub async fn of_user(&self, tenant: &TenantId, user: &UserId, id: &ImportId) -> Result<Import, StoreError> {
        let item = self.item(tenant, &sk(user, id)).await?.ok_or(StoreError::NotFound)?;
        Ok(import_from(&item)?)
    }

    async fn item(&self, tenant: &TenantId, sk: &str) -> Result<Option<Item>, StoreError> {
        crate::dynamo::get_consistent(&self.client, &self.table, tenant.as_str(), sk, "reading an import").await
    }

    /// The user's imports, newest first, a page at a time (the cursor is the sort key).
    pub async fn list(
        &self,
        tenant: &TenantId,
        user: &UserId,
        after: Option<String>,
        limit: i32,
    ) -> Result<(Vec<Import>, Option<String>), StoreError> {
        let start = after.map(|sk| Item::from([("pk".to_owned(), s(tenant.as_str())), ("sk".to_owned(), s(sk))]));
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :t AND begins_with(sk, :p)")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":p", s(format!("imp#{user}#")))
            .scan_index_forward(false)
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .await
            .map_err(unavailable("listing imports"))?;
        let next = out.last_evaluated_key.as_ref().and_then(|k| get_s(k, "sk")).map(str::to_owned);
        let items = out.items.unwrap_or_default().iter().map(import_from).collect::<anyhow::Result<_>>()?;
        Ok((items, next))
    }

    /// Moves an import from one of `from` to `to`; false when it was in none of them (a duplicate event,
    /// a finished import).
    pub async fn transition(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &ImportId,
        from: &[ImportStatus],
        to: ImportStatus,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(sk(user, id)))
            .update_expression("SET #st = :to, updated_at = :now")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()));
        let mut allowed = Vec::new();
        for (i, f) in from.iter().enumerate() {
            req = req.expression_attribute_values(format!(":f{i}"), s(f.as_str()));
            allowed.push(format!(":f{i}"));
        }
        req = req.condition_expression(format!("attribute_exists(pk) AND #st IN ({})", allowed.join(", ")));
        crate::dynamo::update_if(req, "changing an import's status").await
    }

    /// Records progress (and, with `checkpoint`, where a paused import resumes, counting the resume) while it
    /// runs.
    pub async fn progress(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &ImportId,
        p: Progress,
        checkpoint: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(sk(user, id)))
            .expression_attribute_values(":b", n(p.bytes_read))
            .expression_attribute_values(":r", n(p.records_imported))
            .expression_attribute_values(":d", n(p.days_affected))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .condition_expression("attribute_exists(pk)");
        let mut update = "SET bytes_read = :b, records_imported = :r, days_affected = :d, updated_at = :now".to_owned();
        if let Some(c) = checkpoint {
            update.push_str(", checkpoint = :c ADD resumes :one");
            req = req.expression_attribute_values(":c", s(c)).expression_attribute_values(":one", n(1));
        }
        req.update_expression(update).send().await.map_err(unavailable("recording import progress"))?;
        Ok(())
    }

    /// The checkpoint a paused import left, if any.
    pub async fn checkpoint(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &ImportId,
    ) -> Result<Option<String>, StoreError> {
        let item = self.item(tenant, &sk(user, id)).await?.ok_or(StoreError::NotFound)?;
        Ok(get_s(&item, "checkpoint").map(str::to_owned))
    }

    /// Ends an import: completed with its figures, or failed with why. Removes the checkpoint.
    pub async fn finish(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &ImportId,
        outcome: Result<Progress, ImportFailure>,
    ) -> Result<(), StoreError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(sk(user, id)))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .condition_expression("attribute_exists(pk)");
        let req = match outcome {
            Ok(p) => req
                .update_expression("SET #st = :st, bytes_read = :b, records_imported = :r, days_affected = :d, updated_at = :now REMOVE checkpoint, #err")
                .expression_attribute_names("#err", "error")
                .expression_attribute_values(":st", s(ImportStatus::Completed.as_str()))
                .expression_attribute_values(":b", n(p.bytes_read))
                .expression_attribute_values(":r", n(p.records_imported))
                .expression_attribute_values(":d", n(p.days_affected)),
            Err(f) => req
                .update_expression("SET #st = :st, #err = :e, updated_at = :now REMOVE checkpoint")
                .expression_attribute_names("#err", "error")
                .expression_attribute_values(":st", s(ImportStatus::Failed.as_str()))
                .expression_attribute_values(":e", s(serde_json::to_string(&f).unwrap_or_default())),
        };
        req.send().await.map_err(unavailable("finishing an import"))?;
        Ok(())
    }
}

/// What arrives on the import queue: an S3 notification of an uploaded export, or the continuation of an
/// import that paused near its deadline.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportMessage {
    Uploaded {
        tenant: TenantId,
        user: UserId,
        id: ImportId,
        size: Option<u64>,
    },
    Continue {
        tenant: TenantId,
        user: UserId,
        id: ImportId,
        device_order: Vec<String>,
    },
    /// S3's `s3:TestEvent`, or an object outside `apple-health/`: nothing to do.
    Ignored(String),
}

/// The body of a continuation message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Continuation {
    pub continue_import: ImportId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The device order the import began with, so a tenant's change mid-import cannot split one import
    /// between two orders.
    #[serde(default)]
    pub device_order: Vec<String>,
}

/// Reads one SQS message body of the import queue. S3 notifications are read leniently (moto leaves out
/// fields real S3 sends), and keys arrive URL-encoded (`+` for spaces, `%2F`...).
pub fn parse_message(body: &str) -> Vec<ImportMessage> {
    if let Ok(c) = serde_json::from_str::<Continuation>(body) {
        return vec![ImportMessage::Continue {
            tenant: c.tenant_id,
            user: c.user_id,
            id: c.continue_import,
            device_order: c.device_order,
        }];
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return vec![ImportMessage::Ignored("not JSON".into())];
    };
    if v.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return vec![ImportMessage::Ignored("s3:TestEvent".into())];
    }
    let records = v.get("Records").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    if records.is_empty() {
        return vec![ImportMessage::Ignored("no Records".into())];
    }
    records
        .iter()
        .map(|r| {
            let object = &r["s3"]["object"];
            let raw = object["key"].as_str().unwrap_or_default();
            let key = percent_decode(&raw.replace('+', " "));
            match parse_object_key(&key) {
                Some((tenant, user, id)) => ImportMessage::Uploaded { tenant, user, id, size: object["size"].as_u64() },
                None => ImportMessage::Ignored(format!("not an export upload: {key}")),
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_key_names_its_tenant_user_and_import_and_nothing_else_parses() {
        let (t, u) = (TenantId::generate(), UserId::generate());
        let id = ImportId::generate();
        assert_eq!(parse_object_key(&object_key(&t, &u, &id)), Some((t.clone(), u.clone(), id.clone())));
        assert_eq!(parse_object_key(&format!("apple-health/{t}/{u}/{id}/export/x")), None);
        assert_eq!(parse_object_key(&format!("other/{t}/{u}/{id}/export")), None);
        assert_eq!(parse_object_key("apple-health/../../etc/passwd"), None);
    }

    #[test]
    fn queue_messages_read_as_uploads_continuations_or_nothing_to_do() {
        let (t, u, id) = (TenantId::generate(), UserId::generate(), ImportId::generate());
        // As moto sends it: no userIdentity or sequencer, the key URL-encoded.
        let key = object_key(&t, &u, &id).replace('/', "%2F");
        let s3 = format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}","size":42}}}}}}]}}"#
        );
        assert_eq!(
            parse_message(&s3),
            vec![ImportMessage::Uploaded { tenant: t.clone(), user: u.clone(), id: id.clone(), size: Some(42) }]
        );
        let next = Continuation {
            continue_import: id.clone(),
            tenant_id: t.clone(),
            user_id: u.clone(),
            device_order: vec!["watch".into()],
        };
        let cont = serde_json::to_string(&next).unwrap_or_default();
        assert_eq!(
            parse_message(&cont),
            vec![ImportMessage::Continue { tenant: t, user: u, id, device_order: vec!["watch".into()] }]
        );
        assert!(matches!(
            parse_message(r#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#)[..],
            [ImportMessage::Ignored(_)]
        ));
        assert!(matches!(parse_message("garbage")[..], [ImportMessage::Ignored(_)]));
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
