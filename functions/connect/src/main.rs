use std::sync::Arc;

use anyhow::Context;
use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let state = connect::AppState {
        stores: Stores::from_config(&config, &aws),
        vault: Arc::new(shared::aws::vault(&config, &aws)?),
        http: reqwest::Client::new(),
        public_url: config.public_url.clone().context("TENANTRY_PUBLIC_URL is not set")?,
        providers: config.providers.clone(),
        sync: shared::sync::SyncQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.sync_queue_url.clone().context("SYNC_QUEUE_URL is not set")?,
        ),
        events: shared::events::Events::new(
            aws_sdk_sqs::Client::new(&aws),
            config.notify_queue_url.clone().context("NOTIFY_QUEUE_URL is not set")?,
        ),
    };
    lambda_http::run(connect::router(state)).await
}
