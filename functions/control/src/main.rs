use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let stores = Stores::from_config(&config, &aws);
    lambda_http::run(control::router(control::AppState { stores, allow_loopback_jwks: false })).await
}
