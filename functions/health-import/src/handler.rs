//! The Lambda side of health-import: takes an uploaded export (an S3 ObjectCreated notification on the import
//! queue) or the continuation of a paused import, streams the object from S3 into the importer (`crate::import`,
//! on a blocking thread, never the whole object in memory or /tmp), stores its batches through the data store,
//! and keeps the import's status. Near the deadline the importer pauses: its checkpoint goes on the import item
//! and a continuation message on the queue, so a fresh invocation resumes where it stopped.

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::datastore::DataStore;
use shared::events::{Event, Events};
use shared::ids::{TenantId, UserId};
use shared::imports::{
    Continuation, ImportFailure, ImportId, ImportMessage, ImportStatus, ImportStore, Progress, object_key,
    parse_message,
};
use shared::model::Batch;
use shared::tenancy::Stores;
use tokio_util::io::SyncIoBridge;

use crate::{Checkpoint, Importer, Options, Outcome, Sink, SourceOrder};

pub struct Handler {
    pub stores: Stores,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub data_table: String,
    pub events: Events,
    /// How long one run may import before it pauses (Lambda: the deadline less a margin).
    pub slice: Duration,
    /// Pause after this many elements in a run (tests force resumes with it); `None` in production.
    pub pause_every: Option<u64>,
}

/// The import failed in a way a retry of the message may fix (S3 or DynamoDB unreachable).
#[derive(Debug)]
struct Retry(String);

impl<E: std::fmt::Display> From<E> for Retry {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// Batches into the data table, from the importer's blocking thread.
struct StoreSink {
    runtime: tokio::runtime::Handle,
    data: DataStore,
    tenant: TenantId,
    user: UserId,
    changed: Batch,
}

impl Sink for StoreSink {
    fn write(&mut self, batch: Batch) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let written = self.runtime.block_on(self.data.put_batch(&self.tenant, &self.user, &batch))?;
        // What changed, for the data.updated event at the end (samples ride with their days).
        self.changed.daily.extend(written.changed.daily);
        self.changed.sleep.extend(written.changed.sleep);
        self.changed.workouts.extend(written.changed.workouts);
        Ok(())
    }
}

impl Handler {
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        shared::batch::partial(&event, |m| self.one(m)).await
    }

    /// One queue message; true when it must come back.
    async fn one(&self, message: &SqsMessage) -> bool {
        let mut retry = false;
        for m in parse_message(message.body.as_deref().unwrap_or_default()) {
            let outcome = match m {
                ImportMessage::Uploaded { tenant, user, id, .. } => {
                    shared::telemetry::record_tenant(&tenant);
                    self.run(tenant, user, id, None).await
                }
                ImportMessage::Continue { tenant, user, id, device_order } => {
                    shared::telemetry::record_tenant(&tenant);
                    self.run(tenant, user, id, Some(device_order)).await
                }
                ImportMessage::Ignored(why) => {
                    tracing::info!(why = %why, "import queue message ignored");
                    Ok(())
                }
            };
            if let Err(Retry(why)) = outcome {
                tracing::warn!(why = %why, "import will be retried from its last checkpoint");
                retry = true;
            }
        }
        retry
    }

    /// Runs an import: a fresh upload (`resumed` is `None`) or a continuation with the device order it began
    /// with.
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant, user_id = %user, import_id = %id))]
    async fn run(
        &self,
        tenant: TenantId,
        user: UserId,
        id: ImportId,
        resumed: Option<Vec<String>>,
    ) -> Result<(), Retry> {
        let tenancy = self.stores.tenant(&tenant).await?;
        let store = tenancy.import_store();
        let resume = resumed.is_some();
        let device_order = match resumed {
            Some(order) => order,
            None => tenancy.priority_store().get(&tenant).await?.apple_health_devices,
        };
        let options = Options {
            order: if device_order.is_empty() { SourceOrder::default() } else { SourceOrder(device_order.clone()) },
            ..Options::default()
        };
        let checkpoint = if resume {
            match store.of_user(&tenant, &user, &id).await {
                Ok(i) if i.status == ImportStatus::Running => {}
                Ok(_) | Err(shared::tenancy::StoreError::NotFound) => {
                    tracing::info!("continuation of an import that is not running; nothing to do");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            match store.checkpoint(&tenant, &user, &id).await?.map(|c| serde_json::from_str::<Checkpoint>(&c)) {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => return self.fail(&store, &tenant, &user, &id, "bad_checkpoint", e.to_string()).await,
                None => None,
            }
        } else {
            let claimed = store
                .transition(
                    &tenant,
                    &user,
                    &id,
                    &[ImportStatus::WaitingForUpload, ImportStatus::Queued],
                    ImportStatus::Running,
                )
                .await;
            match claimed {
                Ok(true) => None,
                // A duplicate notification, or an upload over a finished import: the first one counts.
                Ok(false) | Err(shared::tenancy::StoreError::NotFound) => {
                    tracing::info!("upload of an import that is not waiting for one; ignored");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        };
        let object = self.s3.get_object().bucket(&self.bucket).key(object_key(&tenant, &user, &id)).send().await;
        let object = match object {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return self.fail(&store, &tenant, &user, &id, "no_upload", "the uploaded export is gone".into()).await;
            }
            Err(e) => return Err(Retry(format!("reading the upload: {}", aws_sdk_s3::error::DisplayErrorContext(e)))),
        };
        let size = object.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let reader = SyncIoBridge::new(object.body.into_async_read());
        let mut sink = StoreSink {
            runtime: tokio::runtime::Handle::current(),
            data: tenancy.data_store(&self.data_table),
            tenant: tenant.clone(),
            user: user.clone(),
            changed: Batch::default(),
        };
        let (slice, pause_every) = (self.slice, self.pause_every);
        let ran = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut elements = 0u64;
            let outcome = Importer::new(options).run(reader, &mut sink, checkpoint, |_| {
                elements += 1;
                pause_every.is_some_and(|n| elements >= n) || started.elapsed() >= slice
            });
            (outcome, sink.changed)
        })
        .await?;
        match ran {
            (Ok(Outcome::Completed(stats)), changed) => {
                let progress = Progress {
                    bytes_read: size,
                    records_imported: stats.records_imported,
                    days_affected: stats.days_affected,
                };
                store.finish(&tenant, &user, &id, Ok(progress)).await?;
                tracing::info!(records = stats.records_imported, days = stats.days_affected, "import completed");
                self.announce(&tenant, &user, &changed).await;
                Ok(())
            }
            (Ok(Outcome::Paused(checkpoint)), changed) => {
                let stats = checkpoint.stats();
                let progress = Progress {
                    bytes_read: 0,
                    records_imported: stats.records_imported,
                    days_affected: stats.days_affected,
                };
                let saved = serde_json::to_string(&checkpoint)?;
                store.progress(&tenant, &user, &id, progress, Some(&saved)).await?;
                let next = Continuation {
                    continue_import: id.clone(),
                    tenant_id: tenant.clone(),
                    user_id: user.clone(),
                    device_order,
                };
                self.sqs
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(serde_json::to_string(&next)?)
                    .send()
                    .await?;
                tracing::info!(consumed = checkpoint.consumed(), "import paused; continues in a fresh invocation");
                self.announce(&tenant, &user, &changed).await;
                Ok(())
            }
            (Err(e), _) if e.is_retryable() => Err(Retry(e.to_string())),
            (Err(e), _) => {
                let failure = ImportFailure { code: e.code().to_owned(), message: e.to_string(), line: e.line() };
                tracing::warn!(code = %failure.code, message = %failure.message, "import refused");
                store.finish(&tenant, &user, &id, Err(failure)).await?;
                Ok(())
            }
        }
    }

    async fn fail(
        &self,
        store: &ImportStore,
        tenant: &TenantId,
        user: &UserId,
        id: &ImportId,
        code: &str,
        message: String,
    ) -> Result<(), Retry> {
        store.finish(tenant, user, id, Err(ImportFailure { code: code.to_owned(), message, line: None })).await?;
        Ok(())
    }

    /// `data.updated` for what the import changed (source `apple_health`).
    async fn announce(&self, tenant: &TenantId, user: &UserId, changed: &Batch) {
        if changed.is_empty() {
            return;
        }
        let (metrics, dates) = changed.touched();
        let metrics: Vec<&str> = metrics.iter().map(String::as_str).collect();
        let dates: Vec<String> = dates.into_iter().map(shared::time::format_day).collect();
        let event = Event::data_updated_from(tenant, user, "apple_health", &metrics, &dates);
        if let Err(e) = self.events.emit(&event).await {
            tracing::error!(error = ?e, "could not queue data.updated");
        }
    }
}
