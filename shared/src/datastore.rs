//! The data table (`DATA_TABLE`): the normalized model of `crate::model`, one partition per user
//! (`<tenant>#<user>`). Every write is an idempotent upsert keyed by what the provider calls the thing (day
//! and source, a sleep period's id, a sample's hour), so a redelivered sync rewrites the same items and
//! changes nothing. Items and access paths: docs/data-model.md.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use serde::Serialize;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::dynamo::{Item, get_s, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::model::{Batch, DailyRecord, Metric, Sample, SampleKind, SleepSession, Source, SourceName, Workout};
use crate::tenancy::StoreError;
use crate::time::{format_day, format_offset, parse_day, parse_offset};

#[derive(Clone, Debug)]
pub struct DataStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// A record kept per local day under its provider's id: `<PREFIX>#<day>#<source>#<id>`.
pub trait DayRecord: Serialize + serde::de::DeserializeOwned {
    const PREFIX: &'static str;
    fn key(&self) -> (Date, &SourceName, &str);
}

impl DayRecord for SleepSession {
    const PREFIX: &'static str = "sleep";
    fn key(&self) -> (Date, &SourceName, &str) {
        (self.day, &self.source.name, &self.id)
    }
}

impl DayRecord for Workout {
    const PREFIX: &'static str = "workout";
    fn key(&self) -> (Date, &SourceName, &str) {
        (self.day, &self.source.name, &self.id)
    }
}

/// A daily record as stored, with when it was last written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredDaily {
    #[serde(flatten)]
    pub record: DailyRecord,
    pub synced_at: String,
}

/// What `put_batch` did: items written (or found unchanged), and the part of the batch that changed
/// something (its `touched()` names the metrics and dates of a `data.updated` event).
#[derive(Debug, Default)]
pub struct Written {
    pub items: usize,
    pub changed: Batch,
}

/// One page of a list read; `next` is the sort key to continue after.
#[derive(Debug)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Samples of one kind, source and UTC hour live in one item: `points` is JSON `[[unix seconds, value], ...]`.
fn hour_key(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!("{}T{:02}", format_day(t.date()), t.hour())
}

fn pk(tenant: &TenantId, user: &UserId) -> String {
    format!("{tenant}#{user}")
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn doc<T: Serialize>(v: &T) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(v).map(AttributeValue::S).map_err(|e| StoreError::Unavailable(e.into()))
}

fn from_doc<T: serde::de::DeserializeOwned>(item: &Item) -> Option<T> {
    get_s(item, "doc").and_then(|d| serde_json::from_str(d).ok())
}

impl DataStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Stores everything a fetch brought: daily records merged per (day, source) into one update each, sleep
    /// sessions and workouts one conditional put each, sample hours in batches of 25 puts. Says how many
    /// items it wrote and which daily metrics, sessions and dates actually changed (nothing, for the same
    /// data again).
    pub async fn put_batch(&self, tenant: &TenantId, user: &UserId, batch: &Batch) -> Result<Written, StoreError> {
        let mut changed = Batch::default();
        let synced_at = crate::time::now_rfc3339();
        let mut merged: BTreeMap<(Date, SourceName), DailyRecord> = BTreeMap::new();
        for d in &batch.daily {
            let entry = merged
                .entry((d.day, d.source.name.clone()))
                .or_insert_with(|| DailyRecord { metrics: BTreeMap::new(), ..d.clone() });
            entry.metrics.extend(d.metrics.iter().map(|(k, v)| (*k, *v)));
            entry.utc_offset = entry.utc_offset.or(d.utc_offset);
            entry.source.device = entry.source.device.take().or_else(|| d.source.device.clone());
        }
        for d in merged.values() {
            if self.put_daily(tenant, user, d, &synced_at).await? {
                changed.daily.push(d.clone());
            }
        }
        for sl in &batch.sleep {
            if self.put_changed(self.keyed(tenant, user, sl)?).await? {
                changed.sleep.push(sl.clone());
            }
        }
        for w in &batch.workouts {
            if self.put_changed(self.keyed(tenant, user, w)?).await? {
                changed.workouts.push(w.clone());
            }
        }
        let mut puts = Vec::new();
        let mut hours: BTreeMap<(SampleKind, String, SourceName), Vec<&Sample>> = BTreeMap::new();
        for x in &batch.samples {
            hours.entry((x.kind, hour_key(x.time), x.source.name.clone())).or_default().push(x);
        }
        for ((kind, hour, source), mut samples) in hours {
            samples.sort_by_key(|x| x.time);
            samples.dedup_by_key(|x| x.time);
            let points: Vec<(i64, f64)> = samples.iter().map(|x| (x.time.unix_timestamp(), x.value)).collect();
            let mut item = Item::from([
                ("pk".to_owned(), s(pk(tenant, user))),
                ("sk".to_owned(), s(format!("samples#{}#{hour}#{source}", kind.as_str()))),
                ("source".to_owned(), s(source.as_str())),
                ("points".to_owned(), doc(&points)?),
            ]);
            if let Some(device) = &samples[0].source.device {
                item.insert("device".to_owned(), s(&**device));
            }
            if let Some(o) = samples[0].utc_offset {
                item.insert("utc_offset".to_owned(), s(format_offset(o)));
            }
            puts.push(item);
        }
        let items = merged.len() + batch.sleep.len() + batch.workouts.len() + puts.len();
        for chunk in puts.chunks(25) {
            self.batch_put(chunk.to_vec()).await?;
        }
        Ok(Written { items, changed })
    }

    /// Puts an item unless the stored one has the same `doc`; true when it wrote.
    async fn put_changed(&self, item: Item) -> Result<bool, StoreError> {
        let doc = item.get("doc").cloned().unwrap_or(AttributeValue::Null(true));
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk) OR doc <> :doc")
            .expression_attribute_values(":doc", doc)
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if crate::dynamo::conditional_failed(&e) => Ok(false),
            Err(e) => Err(unavailable("writing a session")(e)),
        }
    }

    fn keyed<T: DayRecord>(&self, tenant: &TenantId, user: &UserId, v: &T) -> Result<Item, StoreError> {
        let (day, source, id) = v.key();
        let sk = format!("{}#{}#{source}#{id}", T::PREFIX, format_day(day));
        Ok(Item::from([("pk".to_owned(), s(pk(tenant, user))), ("sk".to_owned(), s(sk)), ("doc".to_owned(), doc(v)?)]))
    }

    /// BatchWriteItem, resending what DynamoDB hands back as unprocessed (with a short backoff).
    async fn batch_put(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let mut requests: Vec<WriteRequest> = items
            .into_iter()
            .filter_map(|item| PutRequest::builder().set_item(Some(item)).build().ok())
            .map(|put| WriteRequest::builder().put_request(put).build())
            .collect();
        for attempt in 0..8u32 {
            if requests.is_empty() {
                return Ok(());
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(unavailable("writing synced data"))?;
            requests = out.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
            if !requests.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!("DynamoDB kept items unprocessed after 8 attempts")))
    }

    /// Upserts one day from one source: each metric is its own attribute, so records of the same day from
    /// different calls (activity, sleep, readiness) merge instead of replacing each other. Unchanged values
    /// are not rewritten (a condition), so a redelivered job leaves the item byte for byte as it was.
    async fn put_daily(
        &self,
        tenant: &TenantId,
        user: &UserId,
        d: &DailyRecord,
        synced_at: &str,
    ) -> Result<bool, StoreError> {
        let mut sets = vec!["#day = :day", "#source = :source", "synced_at = :synced_at"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk(tenant, user)))
            .key("sk", s(format!("daily#{}#{}", format_day(d.day), d.source.name)))
            .expression_attribute_names("#day", "day")
            .expression_attribute_names("#source", "source")
            .expression_attribute_values(":day", s(format_day(d.day)))
            .expression_attribute_values(":source", s(d.source.name.as_str()))
            .expression_attribute_values(":synced_at", s(synced_at));
        if let Some(o) = d.utc_offset {
            sets.push("utc_offset = :utc_offset");
            req = req.expression_attribute_values(":utc_offset", s(format_offset(o)));
        }
        if let Some(device) = &d.source.device {
            sets.push("device = :device");
            req = req.expression_attribute_values(":device", s(&**device));
        }
        let metric_sets: Vec<String> = d.metrics.keys().map(|m| format!("{0} = :{0}", m.as_str())).collect();
        for (m, v) in &d.metrics {
            req = req.expression_attribute_values(format!(":{}", m.as_str()), n(v));
        }
        // Only a change is written (and moves synced_at): the same data again leaves the item as it was.
        let mut changed = vec!["attribute_not_exists(sk)".to_owned()];
        let names = d.metrics.keys().map(|m| m.as_str()).chain(d.utc_offset.map(|_| "utc_offset"));
        changed.extend(
            names
                .chain(d.source.device.as_ref().map(|_| "device"))
                .map(|a| format!("(attribute_not_exists({a}) OR {a} <> :{a})")),
        );
        let expr = sets.into_iter().map(str::to_owned).chain(metric_sets).collect::<Vec<_>>().join(", ");
        let out = req.update_expression(format!("SET {expr}")).condition_expression(changed.join(" OR ")).send().await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if crate::dynamo::conditional_failed(&e) => Ok(false),
            Err(e) => Err(unavailable("writing a daily summary")(e)),
        }
    }

    /// Every item of `prefix` between `from` and `to` (sort-key strings), in order.
    async fn query_all(
        &self,
        tenant: &TenantId,
        user: &UserId,
        from: String,
        to: String,
    ) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s(pk(tenant, user)))
            .expression_attribute_values(":a", s(&from))
            .expression_attribute_values(":b", s(&to));
        crate::dynamo::query_all(query, "reading synced data").await
    }

    /// One page of items between `from` and `to`, continuing after the sort key `after`.
    async fn query_page(
        &self,
        tenant: &TenantId,
        user: &UserId,
        (from, to): (String, String),
        after: Option<String>,
        limit: i32,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let pk = pk(tenant, user);
        // The cursor holds only the sort key; the partition is always the caller's.
        let start = after.map(|sk| HashMap::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(sk))]));
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":a", s(from))
            .expression_attribute_values(":b", s(to))
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .await
            .map_err(unavailable("reading synced data"))?;
        let next = page.last_evaluated_key.as_ref().and_then(|k| get_s(k, "sk")).map(str::to_owned);
        Ok((page.items.unwrap_or_default(), next))
    }

    /// Days `from..=to` of every source, in date order, then source order.
    pub async fn daily(
        &self,
        tenant: &TenantId,
        user: &UserId,
        from: Date,
        to: Date,
    ) -> Result<Vec<StoredDaily>, StoreError> {
        let items = self
            .query_all(tenant, user, format!("daily#{}", format_day(from)), format!("daily#{}#~", format_day(to)))
            .await?;
        Ok(items.iter().filter_map(daily_of).collect())
    }

    /// Records kept per local day (sleep sessions, workouts) of dates `from..=to`, oldest first, a page at
    /// a time.
    pub async fn day_records<T: DayRecord>(
        &self,
        tenant: &TenantId,
        user: &UserId,
        (from, to): (Date, Date),
        after: Option<String>,
        limit: i32,
    ) -> Result<Listed<T>, StoreError> {
        let range = (format!("{}#{}", T::PREFIX, format_day(from)), format!("{}#{}#~", T::PREFIX, format_day(to)));
        let (items, next) = self.query_page(tenant, user, range, after, limit).await?;
        Ok(Listed { items: items.iter().filter_map(from_doc).collect(), next })
    }

    /// Samples of one kind in `[from, to)`, every source, in time order (then source), at most `limit`,
    /// continuing after the position `after` (`<unix seconds>#<source>`).
    pub async fn samples(
        &self,
        tenant: &TenantId,
        user: &UserId,
        kind: SampleKind,
        (from, to): (OffsetDateTime, OffsetDateTime),
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Listed<Sample>, StoreError> {
        let k = kind.as_str();
        let first_hour = match &after {
            Some((t, _)) => OffsetDateTime::from_unix_timestamp(*t).unwrap_or(from).max(from),
            None => from,
        };
        let items = self
            .query_all(
                tenant,
                user,
                format!("samples#{k}#{}", hour_key(first_hour)),
                format!("samples#{k}#{}#~", hour_key(to)),
            )
            .await?;
        let mut all: Vec<(i64, String, Sample)> = Vec::new();
        for item in &items {
            let Some(source) = get_s(item, "source").and_then(|s| SourceName::parse(s).ok()) else { continue };
            let Some(points) = get_s(item, "points").and_then(|p| serde_json::from_str::<Vec<(i64, f64)>>(p).ok())
            else {
                continue;
            };
            let utc_offset = get_s(item, "utc_offset").and_then(parse_offset);
            let device: Option<std::sync::Arc<str>> = get_s(item, "device").map(Into::into);
            for (t, value) in points {
                let Ok(time) = OffsetDateTime::from_unix_timestamp(t) else { continue };
                let position = (t, source.as_str().to_owned());
                if time < from || time >= to || after.as_ref().is_some_and(|a| &position <= a) {
                    continue;
                }
                let source = Source { name: source.clone(), device: device.clone() };
                all.push((position.0, position.1, Sample { kind, time, utc_offset, value, source }));
            }
        }
        all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let next = (all.len() > limit).then(|| format!("{}#{}", all[limit - 1].0, all[limit - 1].1));
        Ok(Listed { items: all.into_iter().take(limit).map(|(_, _, x)| x).collect(), next })
    }
}

fn daily_of(item: &Item) -> Option<StoredDaily> {
    let day = get_s(item, "day").and_then(parse_day)?;
    let name = get_s(item, "source").and_then(|s| SourceName::parse(s).ok())?;
    let mut record = DailyRecord::new(day, Source { name, device: get_s(item, "device").map(Into::into) });
    record.utc_offset = get_s(item, "utc_offset").and_then(parse_offset);
    for m in Metric::ALL {
        record.set(m, item.get(m.as_str()).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()));
    }
    Some(StoredDaily { record, synced_at: get_s(item, "synced_at").unwrap_or_default().to_owned() })
}

/// Reads a sample cursor (`<unix seconds>#<source>`) back.
pub fn parse_sample_position(raw: &str) -> Option<(i64, String)> {
    let (t, source) = raw.split_once('#')?;
    Some((t.parse().ok()?, SourceName::parse(source).ok()?.as_str().to_owned()))
}
