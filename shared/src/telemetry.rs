//! Logging: JSON lines in Lambda (CloudWatch reads fields), human lines locally; `RUST_LOG` filters.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are harmless (tests start many stacks).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if in_lambda {
        builder.json().flatten_event(true).with_current_span(true).without_time().try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
