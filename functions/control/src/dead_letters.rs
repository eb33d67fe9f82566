//! The operator's dead-letter queues (`/admin/v1/dead-letters`): how many messages each holds, a peek that
//! leaves them where they are, and a redrive that moves them back to the queue they came from.
//!
//! A redrive sends each message to its source queue before deleting it from the dead letters, so a crash in
//! between leaves a duplicate, never a loss; the consumers (sync worker, notifier, importer) are idempotent.

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::ApiError;
use shared::http::{Operator, Query};

use crate::AppState;

/// A dead-letter queue the operator may reach: its name in the API, and where its URL and its source
/// queue's URL come from in the configuration. A new queue is one more row.
struct Known {
    name: &'static str,
    dead_letters: fn(&shared::Config) -> Option<&String>,
    source: fn(&shared::Config) -> Option<&String>,
}

const KNOWN: &[Known] = &[
    Known { name: "sync", dead_letters: |c| c.sync_dead_letters_url.as_ref(), source: |c| c.sync_queue_url.as_ref() },
    Known {
        name: "notify",
        dead_letters: |c| c.notify_dead_letters_url.as_ref(),
        source: |c| c.notify_queue_url.as_ref(),
    },
    Known {
        name: "import",
        dead_letters: |c| c.import_dead_letters_url.as_ref(),
        source: |c| c.import_queue_url.as_ref(),
    },
    Known {
        name: "usage",
        dead_letters: |c| c.usage_dead_letters_url.as_ref(),
        source: |c| c.usage_queue_url.as_ref(),
    },
    Known {
        name: "export",
        dead_letters: |c| c.export_dead_letters_url.as_ref(),
        source: |c| c.export_queue_url.as_ref(),
    },
    Known {
        name: "purge",
        dead_letters: |c| c.purge_dead_letters_url.as_ref(),
        source: |c| c.purge_queue_url.as_ref(),
    },
];

/// How long a peeked message stays hidden if putting it back fails: short, so a failed peek heals itself.
const PEEK_HIDE_SECONDS: i32 = 20;
/// How long a message being redriven stays hidden: long enough for one send and one delete.
const REDRIVE_HIDE_SECONDS: i32 = 60;
pub const PEEK_DEFAULT: u32 = 10;
pub const PEEK_MAX: u32 = 100;
pub const REDRIVE_DEFAULT: u32 = 100;
/// Bounded so one request stays well inside the function's timeout; the operator repeats for more.
pub const REDRIVE_MAX: u32 = 500;

/// One dead-letter queue and the queue its messages came from.
#[derive(Clone, Debug)]
pub struct Queue {
    pub name: &'static str,
    pub url: String,
    pub source_url: String,
}

/// The stack's dead-letter queues, as configured.
#[derive(Clone)]
pub struct DeadLetters {
    sqs: aws_sdk_sqs::Client,
    queues: Vec<Queue>,
}

/// A queue's counts (SQS's approximate ones).
#[derive(Debug, Serialize)]
pub struct QueueCounts {
    pub name: &'static str,
    /// Waiting to be peeked or redriven.
    pub messages: u64,
    /// Hidden for now by a peek or redrive in progress; they come back on their own.
    pub in_flight: u64,
}

/// A dead letter as the operator sees it.
#[derive(Debug, Serialize)]
pub struct Peeked {
    pub id: String,
    /// The body, parsed when it is JSON, else the text.
    pub body: Value,
    /// Receives so far, counting those on the source queue that sent it here and this peek.
    pub receive_count: Option<u64>,
    /// When it was first sent (to the source queue), RFC 3339.
    pub sent_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

impl DeadLetters {
    pub fn new(sqs: aws_sdk_sqs::Client, queues: Vec<Queue>) -> Self {
        Self { sqs, queues }
    }

    /// The known queues whose dead-letter and source URLs are both configured; the others are left out.
    pub fn from_config(sqs: aws_sdk_sqs::Client, config: &shared::Config) -> Self {
        let queues = KNOWN
            .iter()
            .filter_map(|k| match ((k.dead_letters)(config), (k.source)(config)) {
                (Some(url), Some(source)) => Some(Queue { name: k.name, url: url.clone(), source_url: source.clone() }),
                _ => {
                    tracing::warn!(queue = k.name, "dead-letter or source queue URL not configured; not served");
                    None
                }
            })
            .collect();
        Self { sqs, queues }
    }

    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// The queue called `name`, or a 404 naming the ones there are.
    pub fn queue(&self, name: &str) -> Result<&Queue, ApiError> {
        self.queues.iter().find(|q| q.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.queues.iter().map(|q| q.name).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_queue",
                format!("no dead-letter queue named {name:?}; the queues are: {}", known.join(", ")),
            )
        })
    }

    #[tracing::instrument(skip(self), fields(queue = queue.name), err)]
    pub async fn counts(&self, queue: &Queue) -> anyhow::Result<QueueCounts> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queue.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |a: QueueAttributeName| attrs.get(&a).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(QueueCounts {
            name: queue.name,
            messages: get(QueueAttributeName::ApproximateNumberOfMessages)
                + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    /// Up to `limit` messages; they stay on the queue (made visible again at once).
    #[tracing::instrument(skip(self), fields(queue = queue.name), err)]
    pub async fn peek(&self, queue: &Queue, limit: u32) -> anyhow::Result<Vec<Peeked>> {
        let mut seen = Vec::new();
        let mut handles = Vec::new();
        let mut received = Ok(());
        while seen.len() < limit as usize {
            let want = (limit as usize - seen.len()).min(10);
            let batch = match self.receive(&queue.url, want, PEEK_HIDE_SECONDS).await {
                Ok(b) => b,
                Err(e) => {
                    received = Err(e);
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            for m in batch {
                handles.extend(m.receipt_handle().map(str::to_owned));
                seen.push(peeked(&m));
            }
        }
        // Put back what was seen, even when a later receive failed.
        self.show_again(&queue.url, &handles).await?;
        received?;
        Ok(seen)
    }

    /// Moves up to `limit` messages back to the source queue: send first, then delete.
    #[tracing::instrument(skip(self), fields(queue = queue.name), err)]
    pub async fn redrive(&self, queue: &Queue, limit: u32) -> Result<u64, RedriveError> {
        let mut moved = 0u64;
        while moved < u64::from(limit) {
            let want = usize::try_from(u64::from(limit) - moved).unwrap_or(10).min(10);
            let batch = self
                .receive(&queue.url, want, REDRIVE_HIDE_SECONDS)
                .await
                .map_err(|e| RedriveError { moved, source: e })?;
            if batch.is_empty() {
                break;
            }
            let by_id: HashMap<String, &Message> = batch.iter().enumerate().map(|(i, m)| (i.to_string(), m)).collect();
            let mut entries = Vec::new();
            for (i, m) in batch.iter().enumerate() {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.body().unwrap_or_default())
                    .build()
                    .map_err(|e| RedriveError { moved, source: e.into() })?;
                entries.push(entry);
            }
            let sent =
                self.sqs.send_message_batch().queue_url(&queue.source_url).set_entries(Some(entries)).send().await;
            let sent = match sent {
                Ok(out) => out,
                Err(e) => {
                    let handles: Vec<String> =
                        batch.iter().filter_map(|m| m.receipt_handle().map(str::to_owned)).collect();
                    let _ = self.show_again(&queue.url, &handles).await;
                    return Err(RedriveError { moved, source: e.into() });
                }
            };
            let delivered: Vec<&Message> =
                sent.successful().iter().filter_map(|s| by_id.get(s.id()).copied()).collect();
            let failed: Vec<String> = sent
                .failed()
                .iter()
                .filter_map(|f| by_id.get(f.id()).and_then(|m| m.receipt_handle().map(str::to_owned)))
                .collect();
            self.delete(&queue.url, &delivered).await.map_err(|e| RedriveError { moved, source: e })?;
            moved += delivered.len() as u64;
            if !failed.is_empty() {
                let _ = self.show_again(&queue.url, &failed).await;
                let first = sent.failed().first().map(|f| format!("{}: {}", f.code(), f.message().unwrap_or_default()));
                return Err(RedriveError {
                    moved,
                    source: anyhow::anyhow!(
                        "{} messages were not sent back: {}",
                        failed.len(),
                        first.unwrap_or_default()
                    ),
                });
            }
        }
        tracing::info!(moved, "dead letters redriven");
        Ok(moved)
    }

    async fn receive(&self, url: &str, max: usize, hide_seconds: i32) -> anyhow::Result<Vec<Message>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .visibility_timeout(hide_seconds)
            // Long polling asks every SQS host: a short poll of a small queue may answer empty while messages
            // wait, which would end a peek or redrive early. The last, empty receive costs this second.
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Makes received messages visible again at once.
    async fn show_again(&self, url: &str, handles: &[String]) -> anyhow::Result<()> {
        for chunk in handles.chunks(10) {
            let mut entries = Vec::new();
            for (i, h) in chunk.iter().enumerate() {
                entries.push(
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .visibility_timeout(0)
                        .build()?,
                );
            }
            let out =
                self.sqs.change_message_visibility_batch().queue_url(url).set_entries(Some(entries)).send().await?;
            if !out.failed().is_empty() {
                tracing::warn!(failed = out.failed().len(), "some peeked messages stay hidden until their timeout");
            }
        }
        Ok(())
    }

    async fn delete(&self, url: &str, messages: &[&Message]) -> anyhow::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            entries.push(
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()?,
            );
        }
        let out = self.sqs.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await?;
        if !out.failed().is_empty() {
            // Already on the source queue: a message that stays here is a duplicate for a later redrive.
            tracing::warn!(
                failed = out.failed().len(),
                "some redriven messages were not deleted from the dead letters"
            );
        }
        Ok(())
    }
}

/// A redrive that stopped part way, and how many it had moved by then.
#[derive(Debug, thiserror::Error)]
#[error("redrive stopped after {moved} messages: {source}")]
pub struct RedriveError {
    pub moved: u64,
    #[source]
    pub source: anyhow::Error,
}

fn peeked(m: &Message) -> Peeked {
    let text = m.body().unwrap_or_default();
    let body = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    let attrs = m.attributes();
    let attr = |a: MessageSystemAttributeName| attrs.and_then(|x| x.get(&a)).and_then(|v| v.parse::<u64>().ok());
    let sent_at = attr(MessageSystemAttributeName::SentTimestamp).and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok().map(shared::time::format)
    });
    Peeked {
        id: m.message_id().unwrap_or_default().to_owned(),
        tenant_id: tenant_of(&body),
        body,
        receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount),
        sent_at,
    }
}

/// The tenant a message is about: a sync job's or continuation's `tenant_id`, a webhook notice's
/// `event.tenant_id`, or the tenant in an uploaded export's key (`apple-health/<tenant>/...`).
fn tenant_of(body: &Value) -> Option<String> {
    let direct = body["tenant_id"].as_str().or_else(|| body["event"]["tenant_id"].as_str());
    let from_key =
        || body["Records"][0]["s3"]["object"]["key"].as_str()?.strip_prefix("apple-health/")?.split('/').next();
    direct.or_else(from_key).filter(|t| !t.is_empty()).map(str::to_owned)
}

pub async fn list(_: Operator, State(app): State<AppState>) -> Result<Response, ApiError> {
    let mut queues = Vec::new();
    for q in app.dead_letters.queues() {
        queues.push(app.dead_letters.counts(q).await?);
    }
    Ok(axum::Json(json!({ "queues": queues })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeekParams {
    limit: Option<u32>,
}

pub async fn peek(
    _: Operator,
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PeekParams>,
) -> Result<Response, ApiError> {
    let queue = app.dead_letters.queue(&name)?;
    let limit = bounded(q.limit, PEEK_DEFAULT, PEEK_MAX)?;
    let messages = app.dead_letters.peek(queue, limit).await?;
    let counts = app.dead_letters.counts(queue).await?;
    Ok(axum::Json(json!({ "queue": queue.name, "messages": counts.messages, "data": messages })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    limit: Option<u32>,
}

/// `POST .../redrive` with `{"limit": N}`, `{}` or no body at all.
pub async fn redrive(
    _: Operator,
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let queue = app.dead_letters.queue(&name)?;
    let body = parse_redrive_body(&body)?;
    let limit = bounded(body.limit, REDRIVE_DEFAULT, REDRIVE_MAX)?;
    match app.dead_letters.redrive(queue, limit).await {
        Ok(moved) => Ok(axum::Json(json!({ "queue": queue.name, "moved": moved })).into_response()),
        Err(e) => {
            tracing::error!(queue = queue.name, moved = e.moved, error = ?e.source, "redrive stopped");
            Err(ApiError::unavailable(format!(
                "the redrive stopped after moving {} messages; the rest are still in the dead letters, retry",
                e.moved
            ))
            .with_detail("moved", e.moved))
        }
    }
}

fn parse_redrive_body(raw: &[u8]) -> Result<RedriveBody, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(RedriveBody::default());
    }
    serde_json::from_slice(raw).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the body must be {{\"limit\": <number>}} or empty: {e}"))
    })
}

fn bounded(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", format!("limit must be between 1 and {max}")));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> shared::Config {
        let mut vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        vars.insert("TENANCY_TABLE".into(), "t".into());
        shared::Config::from_lookup(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sqs() -> aws_sdk_sqs::Client {
        let conf =
            aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    #[test]
    fn only_queues_with_both_urls_configured_are_served_and_an_unknown_name_lists_them() {
        let c = config(&[
            ("SYNC_DEAD_LETTERS_URL", "http://q/sync-dlq"),
            ("SYNC_QUEUE_URL", "http://q/sync"),
            ("NOTIFY_DEAD_LETTERS_URL", "http://q/notify-dlq"),
            ("NOTIFY_QUEUE_URL", "http://q/notify"),
            ("IMPORT_DEAD_LETTERS_URL", "http://q/import-dlq"),
        ]);
        let d = DeadLetters::from_config(sqs(), &c);
        let names: Vec<&str> = d.queues().iter().map(|q| q.name).collect();
        assert_eq!(names, ["sync", "notify"]);
        assert_eq!(d.queue("sync").map(|q| q.source_url.as_str()).ok(), Some("http://q/sync"));
        let e = d.queue("import").err().unwrap_or_else(|| panic!("import has no source queue here"));
        assert_eq!((e.status, e.code.as_ref()), (StatusCode::NOT_FOUND, "unknown_queue"));
        assert!(e.message.contains("sync, notify"), "{}", e.message);
    }

    #[test]
    fn the_tenant_of_a_message_is_found_in_jobs_notices_and_upload_notifications() {
        assert_eq!(tenant_of(&json!({"tenant_id": "ten_a", "user_id": "usr_b"})).as_deref(), Some("ten_a"));
        assert_eq!(tenant_of(&json!({"event": {"tenant_id": "ten_b"}})).as_deref(), Some("ten_b"));
        let s3 = json!({"Records": [{"s3": {"object": {"key": "apple-health/ten_c/usr_d/imp_e/export.zip"}}}]});
        assert_eq!(tenant_of(&s3).as_deref(), Some("ten_c"));
        assert_eq!(tenant_of(&json!("plain text")), None);
        assert_eq!(tenant_of(&json!({"tenant_id": ""})), None);
    }

    #[test]
    fn a_redrive_body_may_be_empty_or_a_limit_and_nothing_else() {
        assert_eq!(parse_redrive_body(b"").ok().and_then(|b| b.limit), None);
        assert!(parse_redrive_body(b"  \n").is_ok());
        assert_eq!(parse_redrive_body(br#"{"limit": 3}"#).ok().and_then(|b| b.limit), Some(3));
        assert!(parse_redrive_body(br#"{"limt": 3}"#).is_err());
        assert!(parse_redrive_body(b"three").is_err());
    }

    #[test]
    fn limits_outside_their_range_are_refused() {
        assert_eq!(bounded(None, 10, 100).ok(), Some(10));
        assert_eq!(bounded(Some(100), 10, 100).ok(), Some(100));
        assert!(bounded(Some(0), 10, 100).is_err());
        assert!(bounded(Some(101), 10, 100).is_err());
    }
}
