use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use shared::connect::ConnectStore;
use shared::sync::SyncQueue;
use sync_scheduler::Scheduler;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let scheduler = &Scheduler::new(
        ConnectStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.tenancy_table),
        SyncQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.sync_queue_url.clone().context("SYNC_QUEUE_URL is not set")?,
        ),
    );
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        scheduler.tick().await.map_err(lambda_runtime::Error::from)
    }))
    .await
}
