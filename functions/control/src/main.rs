use std::sync::Arc;

use anyhow::Context;
use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let state = control::AppState {
        stores: Stores::from_config(&config, &aws),
        allow_loopback_jwks: false,
        vault: Arc::new(shared::aws::vault(&config, &aws)?),
        public_url: config.public_url.clone().context("TENANTRY_PUBLIC_URL is not set")?,
        events: shared::events::Events::new(
            aws_sdk_sqs::Client::new(&aws),
            config.notify_queue_url.clone().context("NOTIFY_QUEUE_URL is not set")?,
        ),
        dead_letters: control::dead_letters::DeadLetters::from_config(aws_sdk_sqs::Client::new(&aws), &config),
        meter_table: config.meter_table.clone().context("METER_TABLE is not set")?,
    };
    lambda_http::run(control::router(state)).await
}
