//! Export jobs in the tenancy table (`pk = <tenant>`, `sk = export#<id>`, indexed per user in gsi1 as
//! `<tenant>#exports#<user>` / `<id>`), and the per-user export slot on the end user's item: which export
//! runs (at most one) and how many were started today (the daily limit). Every change is conditional.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use serde::Serialize;
use shared::dynamo::{Item, conditional_failed, get_consistent, get_s, old_item, s, unavailable, update_if};
use shared::ids::{TenantId, UserId};
use shared::tenancy::StoreError;

/// An export id: `exp_` and a lowercase ULID (time ordered, so the user's index lists newest first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ExportId(String);

impl ExportId {
    pub fn generate() -> Self {
        Self(format!("exp_{}", ulid::Ulid::new().to_string().to_lowercase()))
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 30
            && raw.starts_with("exp_")
            && raw[4..].bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ExportId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Completed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Completed, Self::Failed].into_iter().find(|s| s.as_str() == raw)
    }

    pub fn is_done(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// An export as stored.
#[derive(Debug, Clone)]
pub struct Export {
    pub id: ExportId,
    pub user_id: UserId,
    pub status: Status,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub size_bytes: Option<u64>,
    /// Records per file of the finished archive.
    pub files: BTreeMap<String, u64>,
    pub error: Option<String>,
    pub attempts: u64,
    /// The multipart upload of the run in progress (aborted when a crashed run is restarted).
    pub upload_id: Option<String>,
    /// Epoch seconds until which the current run holds the export.
    pub lease_until: Option<i64>,
    pub run_id: Option<String>,
}

fn sk(id: &ExportId) -> String {
    format!("export#{id}")
}

pub fn user_index(tenant: &TenantId, user: &UserId) -> String {
    format!("{tenant}#exports#{user}")
}

fn num(item: &Item, key: &str) -> Option<i64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn export_from(item: &Item) -> anyhow::Result<Export> {
    let req = |k: &str| shared::dynamo::req_s(item, k);
    Ok(Export {
        id: ExportId::parse(&req("export_id")?).ok_or_else(|| anyhow::anyhow!("stored export id"))?,
        user_id: UserId::parse(&req("user_id")?)?,
        status: Status::parse(&req("status")?).ok_or_else(|| anyhow::anyhow!("stored export status"))?,
        created_at: req("created_at")?,
        started_at: get_s(item, "started_at").map(str::to_owned),
        completed_at: get_s(item, "completed_at").map(str::to_owned),
        size_bytes: num(item, "size_bytes").map(|v| v.max(0) as u64),
        files: get_s(item, "file_counts").and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default(),
        error: get_s(item, "error").map(str::to_owned),
        attempts: num(item, "attempts").unwrap_or(0).max(0) as u64,
        upload_id: get_s(item, "upload_id").map(str::to_owned),
        lease_until: num(item, "lease_until"),
        run_id: get_s(item, "run_id").map(str::to_owned),
    })
}

/// What the user's export slot allows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The first export of the day (or the day's counter is from another day).
    FirstToday,
    /// Another export today, under the limit.
    AgainToday,
    /// One is running (its id).
    Busy(String),
    /// The day's limit is reached.
    Limited,
    /// No such user.
    Gone,
}

/// Decides from the user's item as read (or as a failed condition returned it).
pub fn slot_of(user_item: Option<&Item>, now: i64, today: &str, daily_limit: u32) -> Slot {
    let Some(item) = user_item else { return Slot::Gone };
    if let Some(running) = get_s(item, "export_running")
        && num(item, "export_running_until").is_some_and(|until| until >= now)
    {
        return Slot::Busy(running.to_owned());
    }
    if get_s(item, "export_day") == Some(today) {
        if num(item, "export_count").unwrap_or(0) >= i64::from(daily_limit) {
            return Slot::Limited;
        }
        return Slot::AgainToday;
    }
    Slot::FirstToday
}

/// When a slot is asked for: now and until when it is held (epoch seconds), today (UTC `YYYY-MM-DD`) and
/// the day's limit.
#[derive(Debug, Clone, Copy)]
pub struct SlotClock<'a> {
    pub now: i64,
    pub until: i64,
    pub today: &'a str,
    pub daily_limit: u32,
}

/// The outcome of asking for the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    Yes,
    Busy(String),
    Limited,
    Gone,
}

#[derive(Clone)]
pub struct ExportStore {
    client: Client,
    table: String,
}

impl ExportStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Takes the user's export slot for `id` until `until` (epoch seconds; a crashed export frees it then),
    /// counting it against today's limit. Races are settled by the conditions: two requests never both win.
    pub async fn claim_slot(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &ExportId,
        at: &SlotClock<'_>,
    ) -> Result<Claimed, StoreError> {
        let SlotClock { now, until, today, daily_limit } = *at;
        let user_sk = format!("user#{user}");
        let mut seen =
            get_consistent(&self.client, &self.table, tenant.as_str(), &user_sk, "reading the user's export slot")
                .await?;
        for _ in 0..4 {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(tenant.as_str()))
                .key("sk", s(&user_sk))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .expression_attribute_values(":id", s(id.as_str()))
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":today", s(today))
                .expression_attribute_values(":one", n(1));
            let free = "attribute_exists(pk) AND (attribute_not_exists(export_running) OR export_running_until < :now)";
            let update = match slot_of(seen.as_ref(), now, today, daily_limit) {
                Slot::Gone => return Ok(Claimed::Gone),
                Slot::Busy(running) => return Ok(Claimed::Busy(running)),
                Slot::Limited => return Ok(Claimed::Limited),
                Slot::FirstToday => update
                    .update_expression(
                        "SET export_running = :id, export_running_until = :until, export_day = :today, \
                         export_count = :one",
                    )
                    .condition_expression(format!(
                        "{free} AND (attribute_not_exists(export_day) OR export_day <> :today)"
                    )),
                Slot::AgainToday => update
                    .update_expression("SET export_running = :id, export_running_until = :until ADD export_count :one")
                    .condition_expression(format!("{free} AND export_day = :today AND export_count < :max"))
                    .expression_attribute_values(":max", n(daily_limit)),
            };
            match update.send().await {
                Ok(_) => return Ok(Claimed::Yes),
                Err(e) if conditional_failed(&e) => seen = old_item(&e),
                Err(e) => return Err(unavailable("claiming the user's export slot")(e)),
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!("the user's export slot kept changing")))
    }

    /// Frees the slot if `id` holds it (a finished or failed export). Nothing happens for a deleted user.
    pub async fn release_slot(&self, tenant: &TenantId, user: &UserId, id: &ExportId) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(format!("user#{user}")))
            .update_expression("REMOVE export_running, export_running_until")
            .condition_expression("export_running = :id")
            .expression_attribute_values(":id", s(id.as_str()));
        update_if(update, "releasing the user's export slot").await.map(|_| ())
    }

    /// Stores a new export, pending.
    pub async fn create(&self, tenant: &TenantId, user: &UserId, id: &ExportId, now: &str) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(sk(id)))
            .item("export_id", s(id.as_str()))
            .item("user_id", s(user.as_str()))
            .item("status", s(Status::Pending.as_str()))
            .item("created_at", s(now))
            .item("updated_at", s(now))
            .item("attempts", n(0))
            .item("gsi1pk", s(user_index(tenant, user)))
            .item("gsi1sk", s(id.as_str()));
        if shared::dynamo::put_if_absent(put, "storing an export").await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("export {id} exists")))
        }
    }

    pub async fn get(&self, tenant: &TenantId, id: &ExportId) -> Result<Option<Export>, StoreError> {
        let item = get_consistent(&self.client, &self.table, tenant.as_str(), &sk(id), "reading an export").await?;
        item.as_ref().map(export_from).transpose().map_err(StoreError::Unavailable)
    }

    /// The user's exports, newest first, a page at a time (the cursor is the export id).
    pub async fn list(
        &self,
        tenant: &TenantId,
        user: &UserId,
        after: Option<ExportId>,
        limit: i32,
    ) -> Result<(Vec<Export>, Option<String>), StoreError> {
        let start = after.map(|id| {
            Item::from([
                ("pk".to_owned(), s(tenant.as_str())),
                ("sk".to_owned(), s(sk(&id))),
                ("gsi1pk".to_owned(), s(user_index(tenant, user))),
                ("gsi1sk".to_owned(), s(id.as_str())),
            ])
        });
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :u AND begins_with(gsi1sk, :p)")
            .expression_attribute_values(":u", s(user_index(tenant, user)))
            .expression_attribute_values(":p", s("exp_"))
            .scan_index_forward(false)
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .await
            .map_err(unavailable("listing exports"))?;
        let next = out.last_evaluated_key.as_ref().and_then(|k| get_s(k, "gsi1sk")).map(str::to_owned);
        let items = out.items().iter().map(export_from).collect::<anyhow::Result<_>>()?;
        Ok((items, next))
    }

    /// Takes the export for a run: pending, or running with its lease lapsed (a crashed run). The export as
    /// it was before (to abort a crashed run's upload); `None` when it is done or another run holds it.
    pub async fn start_run(
        &self,
        tenant: &TenantId,
        id: &ExportId,
        run_id: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<Export>, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(sk(id)))
            .update_expression(
                "SET #st = :running, run_id = :run, lease_until = :lease, started_at = :at, updated_at = :at \
                 ADD attempts :one",
            )
            .condition_expression(
                "attribute_exists(pk) AND #st IN (:pending, :running) \
                 AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":running", s(Status::Running.as_str()))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":run", s(run_id))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":at", s(shared::time::now_rfc3339()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Some(export_from(&out.attributes.unwrap_or_default())?)),
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(unavailable("starting an export run")(e)),
        }
    }

    fn run_update(
        &self,
        tenant: &TenantId,
        id: &ExportId,
        run_id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(sk(id)))
            .condition_expression("run_id = :run")
            .expression_attribute_values(":run", s(run_id))
            .expression_attribute_values(":at", s(shared::time::now_rfc3339()))
    }

    /// Records the run's multipart upload, so a restart can abort it.
    pub async fn set_upload(
        &self,
        tenant: &TenantId,
        id: &ExportId,
        run_id: &str,
        upload_id: &str,
    ) -> Result<bool, StoreError> {
        let update = self
            .run_update(tenant, id, run_id)
            .update_expression("SET upload_id = :u, updated_at = :at")
            .expression_attribute_values(":u", s(upload_id));
        update_if(update, "recording an export's upload").await
    }

    /// The run finished: completed with the archive's size and per-file counts.
    pub async fn complete(
        &self,
        tenant: &TenantId,
        id: &ExportId,
        run_id: &str,
        size: u64,
        files: &BTreeMap<String, u64>,
    ) -> Result<bool, StoreError> {
        let files = serde_json::to_string(files).map_err(|e| StoreError::Unavailable(e.into()))?;
        let update = self
            .run_update(tenant, id, run_id)
            .update_expression(
                "SET #st = :done, completed_at = :at, updated_at = :at, size_bytes = :size, file_counts = :files \
                 REMOVE run_id, lease_until, upload_id",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":done", s(Status::Completed.as_str()))
            .expression_attribute_values(":size", n(size))
            .expression_attribute_values(":files", s(files));
        update_if(update, "completing an export").await
    }

    /// The run gave up for good (`error` says why, for the caller).
    pub async fn fail(&self, tenant: &TenantId, id: &ExportId, run_id: &str, error: &str) -> Result<bool, StoreError> {
        let update = self
            .run_update(tenant, id, run_id)
            .update_expression(
                "SET #st = :failed, completed_at = :at, updated_at = :at, #err = :err \
                 REMOVE run_id, lease_until, upload_id",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#err", "error")
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":err", s(error));
        update_if(update, "failing an export").await
    }

    /// A pending export that could not be queued: failed at once (no run holds it).
    pub async fn fail_pending(&self, tenant: &TenantId, id: &ExportId, error: &str) -> Result<bool, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(sk(id)))
            .update_expression("SET #st = :failed, completed_at = :at, updated_at = :at, #err = :err")
            .condition_expression("#st = :pending")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#err", "error")
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":at", s(shared::time::now_rfc3339()))
            .expression_attribute_values(":err", s(error));
        update_if(update, "failing an export").await
    }

    /// The run stops early but may be retried: the lease goes, so the redelivered message starts at once.
    pub async fn pause(&self, tenant: &TenantId, id: &ExportId, run_id: &str) -> Result<bool, StoreError> {
        let update =
            self.run_update(tenant, id, run_id).update_expression("SET updated_at = :at REMOVE lease_until, upload_id");
        update_if(update, "releasing an export run").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(pairs: &[(&str, AttributeValue)]) -> Item {
        let mut item = Item::from([("pk".to_owned(), s("ten_x"))]);
        item.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        item
    }

    #[test]
    fn the_slot_is_busy_while_an_export_runs_and_free_after_its_deadline() {
        let running = user(&[("export_running", s("exp_1")), ("export_running_until", n(100))]);
        assert_eq!(slot_of(Some(&running), 100, "2026-11-29", 5), Slot::Busy("exp_1".into()));
        assert_eq!(slot_of(Some(&running), 101, "2026-11-29", 5), Slot::FirstToday);
    }

    #[test]
    fn the_daily_limit_counts_only_todays_exports() {
        let four = user(&[("export_day", s("2026-11-29")), ("export_count", n(4))]);
        let five = user(&[("export_day", s("2026-11-29")), ("export_count", n(5))]);
        assert_eq!(slot_of(Some(&four), 0, "2026-11-29", 5), Slot::AgainToday);
        assert_eq!(slot_of(Some(&five), 0, "2026-11-29", 5), Slot::Limited);
        assert_eq!(slot_of(Some(&five), 0, "2026-11-30", 5), Slot::FirstToday);
        assert_eq!(slot_of(None, 0, "2026-11-30", 5), Slot::Gone);
    }

    #[test]
    fn export_ids_are_parsed_strictly() {
        let id = ExportId::generate();
        assert_eq!(ExportId::parse(id.as_str()), Some(id));
        for bad in ["exp_", "imp_00000000000000000000000000", "exp_0000000000000000000000000A", ""] {
            assert_eq!(ExportId::parse(bad), None, "{bad}");
        }
    }
}
