//! The purge function's doorway: HTTP requests (API Gateway), the hourly sweep (EventBridge) and purge jobs
//! (PurgeQueue) all arrive here and are told apart by their shape.

use aws_lambda_events::sqs::SqsEvent;
use lambda_http::Service;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let settings = purge::Settings::from_lookup(|k| std::env::var(k).ok())?;
    let purger = std::sync::Arc::new(purge::Purger::new(&config, &aws, settings)?);
    let state = purge::AppState { stores: purger.stores.clone() };
    let http = lambda_http::Adapter::from(purge::router(state));
    let purger = &purger;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let mut http = http.clone();
        async move {
            let (payload, context) = event.into_parts();
            if payload.get("Records").is_some() {
                let batch: SqsEvent = serde_json::from_value(payload)?;
                Ok::<_, lambda_runtime::Error>(serde_json::to_value(purger.handle(batch).await)?)
            } else if payload.get("source").and_then(Value::as_str) == Some("aws.events") {
                Ok(serde_json::to_value(purger.sweep().await?)?)
            } else {
                let request: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
                let response = http.call(LambdaEvent::new(request, context)).await?;
                Ok(serde_json::to_value(response)?)
            }
        }
    }))
    .await
}
