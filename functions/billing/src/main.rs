use std::sync::Arc;

use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let state = billing::AppState {
        stores: Stores::from_config(&config, &aws),
        vault: Arc::new(shared::aws::vault(&config, &aws)?),
        stripe_url: std::env::var(billing::STRIPE_URL_VAR).ok().filter(|v| !v.is_empty()),
        meter_table: config.meter_table.clone().ok_or("METER_TABLE is not set")?,
    };
    lambda_http::run(billing::router(state)).await
}
