use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use health_import::handler::Handler;
use lambda_runtime::{LambdaEvent, service_fn};
use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let handler = &Handler {
        stores: Stores::from_config(&config, &aws),
        s3: shared::aws::s3(&aws),
        bucket: config.import_bucket.clone().context("IMPORT_BUCKET is not set")?,
        sqs: sqs.clone(),
        queue_url: config.import_queue_url.clone().context("IMPORT_QUEUE_URL is not set")?,
        data_table: config.data_table.clone().context("DATA_TABLE is not set")?,
        events: shared::events::Events::new(
            sqs,
            config.notify_queue_url.clone().context("NOTIFY_QUEUE_URL is not set")?,
        ),
        // Lambda gives 900 s; leave a minute to write the checkpoint and queue the continuation.
        slice: std::time::Duration::from_secs(840),
        pause_every: None,
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await)
    }))
    .await
}
