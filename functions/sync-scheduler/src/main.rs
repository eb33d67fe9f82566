use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use shared::connect::ConnectStore;
use shared::subscriptions::SubscriptionStore;
use shared::sync::SyncQueue;
use sync_scheduler::{Keeper, Scheduler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let connect = ConnectStore::new(dynamodb.clone(), &config.tenancy_table);
    let keeper = Keeper::new(
        SubscriptionStore::new(dynamodb, &config.tenancy_table),
        connect.clone(),
        Arc::new(shared::aws::vault(&config, &aws)?),
        config.providers.clone(),
        config.public_url.clone().context("TENANTRY_PUBLIC_URL is not set")?,
    );
    let scheduler = &Scheduler::new(
        connect,
        SyncQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.sync_queue_url.clone().context("SYNC_QUEUE_URL is not set")?,
        ),
    )
    .with_keeper(keeper);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        scheduler.tick().await.map_err(lambda_runtime::Error::from)
    }))
    .await
}
