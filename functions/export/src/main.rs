//! The export function: HTTP requests (API Gateway) start and show exports; `ExportQueue` batches run them.

use aws_lambda_events::sqs::SqsEvent;
use lambda_http::tower::ServiceExt;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let aws = shared::aws::sdk_config().await;
    let exporter = export::Exporter::from_lookup(|k| std::env::var(k).ok(), &aws)?;
    let router = export::router(exporter.clone());
    let exporter = &exporter;
    // One function, two triggers: SQS batches carry `Records`; everything else is an API Gateway request.
    let http: lambda_http::Adapter<'_, _, _> = lambda_http::Adapter::from(router);
    let http = &http;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        if event.payload.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(event.payload)?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(exporter.handle(batch).await)?)
        } else {
            let (payload, context) = event.into_parts();
            let request: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
            let response = http.clone().oneshot(LambdaEvent::new(request, context)).await?;
            Ok(serde_json::to_value(response)?)
        }
    }))
    .await
}
