use authorizer::Authorizer;
use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use lambda_runtime::{LambdaEvent, service_fn};
use shared::tenancy::TenancyStore;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let aws = shared::aws::sdk_config().await;
    let store = TenancyStore::new(shared::aws::dynamodb(&aws), &config.tenancy_table);
    let authorizer = &Authorizer::new(&config, store, shared::jwt::http_client());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
        Ok::<_, lambda_runtime::Error>(authorizer.handle(event.payload).await)
    }))
    .await
}
