//! `./dev up`: provisions template.yaml into the running moto and serves every HTTP function on
//! 127.0.0.1:${TENANTRY_PORT:-3000} until Ctrl-C.

use anyhow::Context;
use tenantry_local::{Options, Stack};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let port: u16 =
        std::env::var("TENANTRY_PORT").ok().map(|p| p.parse()).transpose().context("TENANTRY_PORT")?.unwrap_or(3000);
    let operator_key =
        std::env::var("TENANTRY_OPERATOR_KEY").context("TENANTRY_OPERATOR_KEY is not set (./dev up sets it)")?;
    let prefix = std::env::var("TENANTRY_LOCAL_PREFIX").unwrap_or_else(|_| "tenantry".into());
    let sdk = shared::aws::sdk_config().await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("port {port} is taken; set TENANTRY_PORT"))?;
    let base = format!("http://127.0.0.1:{port}");
    // Every provider is a local sandbox unless TENANTRY_<PROVIDER>_URL already points somewhere.
    let mut extra_env = std::collections::HashMap::new();
    let sandboxes = sandbox::start_all(std::net::Ipv4Addr::LOCALHOST.into()).await?;
    for running in &sandboxes {
        let var = running.provider.env_var();
        extra_env.insert(var.to_owned(), std::env::var(var).unwrap_or_else(|_| running.url.clone()));
    }
    // And the LLM APIs behind the AI proxy.
    let llms = sandbox::llm::start_all(std::net::Ipv4Addr::LOCALHOST.into()).await?;
    for running in &llms {
        let var = running.llm.env_var();
        extra_env.insert(var.to_owned(), std::env::var(var).unwrap_or_else(|_| running.url.clone()));
    }
    // And Stripe, for billing (each tenant's account is any sk_test_ key; see infra/sandbox/README.md).
    let stripe = sandbox::stripe::start((std::net::Ipv4Addr::LOCALHOST, 0).into()).await?;
    let var = sandbox::stripe::ENV_VAR;
    extra_env.insert(var.to_owned(), std::env::var(var).unwrap_or_else(|_| stripe.url.clone()));
    let options =
        Options { prefix, operator_key: operator_key.clone(), jwt: None, public_url: base.clone(), extra_env };
    let stack = Stack::start(sdk, options).await?;
    let _workers = stack.spawn_workers();
    let routes: usize = stack.template.functions.iter().map(|f| f.routes.len()).sum();
    println!(
        r#"
Tenantry is up at {base} ({routes} routes from template.yaml, AWS in moto at {endpoint}).

Operator key: {operator_key}

Begin by creating a tenant:
  curl -s -X POST {base}/admin/v1/tenants -H "Authorization: Bearer {operator_key}" \
       -H 'content-type: application/json' -d '{{"name": "Acme Fitness"}}'
then use the api_key it returns:
  curl -s -X POST {base}/v1/users -H "x-api-key: <api_key>" -H 'content-type: application/json' \
       -d '{{"external_id": "user-42", "email": "ana@example.com"}}'
The API is described at {base}/openapi.json. Stripe (billing) is a sandbox at {stripe_url}.
Ctrl-C stops everything.
"#,
        stripe_url = stripe.url,
        endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default(),
    );
    tokio::select! {
        served = stack.serve(listener) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
