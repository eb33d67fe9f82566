use std::sync::Arc;

use anyhow::Context;
use shared::events::Events;
use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let stores = Stores::from_config(&config, &aws);
    let http = reqwest::Client::new();
    let authorizer = authorizer::Authorizer::new(&config, stores.own().clone(), http.clone());
    let state = meter::AppState::new(
        stores,
        config.meter_table.clone().context("METER_TABLE is not set")?,
        Arc::new(shared::aws::vault(&config, &aws)?),
        Events::new(
            aws_sdk_sqs::Client::new(&aws),
            config.notify_queue_url.clone().context("NOTIFY_QUEUE_URL is not set")?,
        ),
        http,
        config.llm_urls.clone(),
        meter::Tuning::from_lookup(|k| std::env::var(k).ok()),
        Arc::new(authorizer),
    );
    // Streaming: SSE from the upstream passes through the Function URL as it arrives.
    lambda_http::run_with_streaming_response(meter::router(state)).await
}
