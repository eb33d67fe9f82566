//! The export function: HTTP requests (API Gateway) start and show exports; `ExportQueue` batches run them.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let aws = shared::aws::sdk_config().await;
    let exporter = export::Exporter::from_lookup(|k| std::env::var(k).ok(), &aws)?;
    let router = export::router(exporter.clone());
    let (exporter, router) = (&exporter, &router);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| export::invoke(exporter, router, event))).await
}
