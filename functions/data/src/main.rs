use shared::tenancy::Stores;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let stores = Stores::from_config(&config, &aws);
    let data_table = config.data_table.clone().ok_or("DATA_TABLE is not set")?;
    let import_bucket = config.import_bucket.clone().ok_or("IMPORT_BUCKET is not set")?;
    let s3 = shared::aws::s3(&aws);
    lambda_http::run(data::router(data::AppState { stores, data_table, s3, import_bucket })).await
}
