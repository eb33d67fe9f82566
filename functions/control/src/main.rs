use shared::tenancy::TenancyStore;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let store = TenancyStore::new(shared::aws::dynamodb(&aws), &config.tenancy_table);
    lambda_http::run(control::router(control::AppState {
        store,
        allow_loopback_jwks: false,
    }))
    .await
}
