//! AWS SDK clients, built once per process. `AWS_ENDPOINT_URL` (read by aws-config) points them at moto
//! locally; unset, they reach AWS.

use aws_config::BehaviorVersion;

/// The shared SDK configuration: region and credentials from the usual chain.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}
