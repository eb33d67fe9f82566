use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::meter::MeterStore;
use shared::tenancy::Stores;
use usage_reporter::Reporter;

/// One function, two triggers: the minute schedule (an EventBridge event) sweeps, the queue's batches report.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let meter_table = config.meter_table.clone().context("METER_TABLE is not set")?;
    let reporter = &Reporter {
        meter: MeterStore::new(aws_sdk_dynamodb::Client::new(&aws), &meter_table),
        stores: Stores::from_config(&config, &aws),
        meter_table,
        vault: Arc::new(shared::aws::vault(&config, &aws)?),
        sqs: aws_sdk_sqs::Client::new(&aws),
        queue_url: config.usage_queue_url.clone().context("USAGE_QUEUE_URL is not set")?,
        stripe_url: std::env::var(billing::STRIPE_URL_VAR).ok().filter(|v| !v.is_empty()),
        claim_secs: usage_reporter::claim_secs(|k| std::env::var(k).ok()),
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        if usage_reporter::is_queue_batch(&event.payload) {
            let batch: SqsEvent = serde_json::from_value(event.payload)?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(reporter.handle(batch).await)?)
        } else {
            Ok(serde_json::to_value(reporter.sweep().await?)?)
        }
    }))
    .await
}
