//! The sample events in events/ are real: each one, parsed the way lambda_http parses what API Gateway
//! sends, is served by its function's router with the answer the event is about.

use http_body_util::BodyExt;
use integration_tests::start;
use shared::tenancy::{Stores, TenancyStore};
use tower::ServiceExt;

async fn serve(router: axum::Router, event: &str) -> (u16, serde_json::Value) {
    let request = lambda_http::request::from_str(event).unwrap_or_else(|e| panic!("event does not parse: {e}"));
    let response = match router.oneshot(request.map(axum::body::Body::new)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn every_sample_event_is_served_by_its_function() {
    let s = start().await;
    let stores = Stores::new(TenancyStore::new(s.dynamodb.clone(), &s.table), None);
    let sdk = shared::aws::sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms.create_key().send().await.ok().and_then(|k| k.key_metadata).map(|m| m.key_id).unwrap_or_default();
    let vault = std::sync::Arc::new(shared::vault::Vault::new(kms, key));
    let events = shared::events::Events::new(aws_sdk_sqs::Client::new(&sdk), "http://unused.invalid/queue");
    let control = || {
        control::router(control::AppState {
            stores: stores.clone(),
            allow_loopback_jwks: false,
            vault: vault.clone(),
            public_url: s.base.clone(),
            events: events.clone(),
            dead_letters: control::dead_letters::DeadLetters::new(aws_sdk_sqs::Client::new(&sdk), Vec::new()),
            meter_table: "unused".into(),
        })
    };
    let data = || {
        data::router(data::AppState {
            stores: stores.clone(),
            data_table: "unused-in-these-events".into(),
            s3: shared::aws::s3(&sdk),
            import_bucket: "unused-in-these-events".into(),
        })
    };

    let (status, body) = serve(control(), include_str!("../events/control/openapi.json")).await;
    assert_eq!((status, body["openapi"].as_str().is_some()), (200, true));
    let (status, body) = serve(control(), include_str!("../events/control/create-tenant.json")).await;
    assert_eq!((status, &body["name"]), (201, &serde_json::json!("Acme Fitness")), "{body}");
    let (status, body) = serve(control(), include_str!("../events/control/list-tenants.json")).await;
    assert_eq!((status, body["data"].as_array().map(Vec::len)), (200, Some(1)), "{body}");

    let (status, body) = serve(data(), include_str!("../events/data/create-user.json")).await;
    assert_eq!((status, &body["external_id"]), (201, &serde_json::json!("user-42")), "{body}");
    let (status, body) = serve(data(), include_str!("../events/data/list-users.json")).await;
    assert_eq!((status, body["data"].as_array().map(Vec::len)), (200, Some(1)), "{body}");
    let connect = connect::router(connect::AppState {
        stores: stores.clone(),
        vault: vault.clone(),
        http: reqwest::Client::new(),
        public_url: s.base.clone(),
        providers: shared::providers::Overrides::default(),
        sync: shared::sync::SyncQueue::new(aws_sdk_sqs::Client::new(&sdk), "http://unused.invalid/queue"),
        events: events.clone(),
    });
    let (status, body) = serve(connect.clone(), include_str!("../events/connect/list-connections.json")).await;
    assert_eq!((status, &body["error"]["code"]), (404, &serde_json::json!("not_found")), "an unknown user: {body}");
    let (status, _) = serve(connect, include_str!("../events/connect/invalid-link.json")).await;
    assert_eq!(status, 404, "an invalid Connect link gets the error page");

    let (status, body) = serve(data(), include_str!("../events/data/missing-credentials.json")).await;
    assert_eq!((status, &body["error"]["code"]), (401, &serde_json::json!("missing_credentials")), "{body}");

    // A Function URL event (the meter's): no authorizer in front, the meter authenticates it itself.
    let config = shared::Config::from_lookup(|k| (k == "TENANCY_TABLE").then(|| s.table.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let authorizer =
        authorizer::Authorizer::new(&config, TenancyStore::new(s.dynamodb.clone(), &s.table), reqwest::Client::new());
    let meter = meter::router(meter::AppState::new(
        stores.clone(),
        "unused-in-these-events".into(),
        vault.clone(),
        events.clone(),
        reqwest::Client::new(),
        std::collections::HashMap::new(),
        meter::Tuning::default(),
        std::sync::Arc::new(authorizer),
    ));
    let (status, body) = serve(meter, include_str!("../events/meter/function-url-without-key.json")).await;
    assert_eq!((status, &body["error"]["code"]), (401, &serde_json::json!("missing_credentials")), "{body}");
}
