use std::sync::Arc;

use anyhow::Context;
use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let state = webhooks::AppState {
        stores: Stores::from_config(&config, &aws),
        vault: Arc::new(shared::aws::vault(&config, &aws)?),
        sync: shared::sync::SyncQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.sync_queue_url.clone().context("SYNC_QUEUE_URL is not set")?,
        ),
    };
    lambda_http::run(webhooks::router(state)).await
}
