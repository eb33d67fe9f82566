use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use shared::sync::SyncQueue;
use shared::tenancy::Stores;
use sync_worker::Worker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let worker = &Worker {
        stores: Stores::from_config(&config, &aws),
        vault: Arc::new(shared::aws::vault(&config, &aws)?),
        http: reqwest::Client::new(),
        providers: config.providers.clone(),
        queue: SyncQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.sync_queue_url.clone().context("SYNC_QUEUE_URL is not set")?,
        ),
        data_table: config.data_table.clone().context("DATA_TABLE is not set")?,
        events: shared::events::Events::new(
            aws_sdk_sqs::Client::new(&aws),
            config.notify_queue_url.clone().context("NOTIFY_QUEUE_URL is not set")?,
        ),
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(worker.handle(event.payload).await)
    }))
    .await
}
