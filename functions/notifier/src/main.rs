use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use notifier::{Notifier, Policy};
use shared::events::Events;
use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let notifier = &Notifier {
        stores: Stores::from_config(&config, &aws),
        vault: Arc::new(shared::aws::vault(&config, &aws)?),
        http: notifier::http_client(),
        queue: Events::new(sqs.clone(), config.notify_queue_url.clone().context("NOTIFY_QUEUE_URL is not set")?),
        dead_letters: Events::new(
            sqs,
            config.notify_dead_letters_url.clone().context("NOTIFY_DEAD_LETTERS_URL is not set")?,
        ),
        policy: Policy::from_lookup(|k| std::env::var(k).ok()),
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(notifier.handle(event.payload).await)
    }))
    .await
}
