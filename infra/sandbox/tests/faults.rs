//! The fault switches: each turns a failure on at runtime and off again.

mod common;

use std::time::{Duration, Instant};

use common::start;
use reqwest::StatusCode;
use sandbox::Provider;
use serde_json::json;

#[tokio::test]
async fn a_token_endpoint_500_switches_on_and_off_without_consuming_the_code() {
    let sb = start(Provider::Oura).await;
    let (code, verifier) = sb.approve("u").await;

    let res = sb.set_faults(json!({"token": "500"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (status, body) = sb.exchange(&code, &verifier).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");

    sb.set_faults(json!({"token": "none"})).await;
    let (status, body) = sb.exchange(&code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = sb.state().await;
    assert_eq!((state["token_requests"].as_u64(), state["codes_redeemed"].as_u64()), (Some(2), Some(1)));
}

#[tokio::test]
async fn malformed_json_from_the_token_endpoint_switches_on_and_off() {
    let sb = start(Provider::GoogleHealth).await;
    let tokens = sb.connect("u").await;
    let refresh = tokens.refresh.expect("refresh token");

    sb.set_faults(json!({"token": "malformed_json"})).await;
    let (status, body) = sb.refresh(&refresh).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("the body is not JSON");
    assert!(serde_json::from_str::<serde_json::Value>(text).is_err());

    sb.set_faults(json!({"token": "none"})).await;
    let (status, body) = sb.refresh(&refresh).await;
    assert_eq!(status, StatusCode::OK, "the refresh token was not spent by the faulty answer: {body}");
}

#[tokio::test]
async fn data_faults_answer_500_or_429_until_switched_off() {
    let sb = start(Provider::Oura).await;
    let t = sb.connect("u").await;
    let path = "/v2/usercollection/personal_info";

    sb.set_faults(json!({"data": "500"})).await;
    assert_eq!(sb.get_bearer(path, &t.access).await.status(), StatusCode::INTERNAL_SERVER_ERROR);

    sb.set_faults(json!({"data": "429"})).await;
    let res = sb.get_bearer(path, &t.access).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");

    sb.set_faults(json!({"data": "none"})).await;
    assert_eq!(sb.get_bearer(path, &t.access).await.status(), StatusCode::OK);
    assert_eq!(sb.state().await["data_requests"], 3);
}

#[tokio::test]
async fn the_slow_faults_delay_answers_by_slow_ms() {
    let sb = start(Provider::Oura).await;
    let t = sb.connect("u").await;
    sb.set_faults(json!({"token": "slow", "data": "slow", "slow_ms": 300})).await;

    let began = Instant::now();
    let res = sb.get_bearer("/v2/usercollection/personal_info", &t.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (status, _) = sb.refresh(t.refresh.as_deref().unwrap_or_default()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(began.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn the_timeout_fault_holds_the_token_request_past_the_clients_patience() {
    let sb = start(Provider::Withings).await;
    sb.set_faults(json!({"token": "timeout"})).await;

    let res = sb
        .http
        .post(sb.url("/v2/oauth2"))
        .timeout(Duration::from_millis(300))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=requesttoken&grant_type=refresh_token")
        .send()
        .await;

    assert!(res.is_err_and(|e| e.is_timeout()));
}

#[tokio::test]
async fn a_zero_token_lifetime_makes_new_access_tokens_expire_at_once() {
    let sb = start(Provider::Oura).await;
    let res = sb.set_faults(json!({"access_token_ttl_seconds": 0})).await;
    let faults: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(faults["access_token_ttl_seconds"], 0);

    let t = sb.connect("u").await;
    assert_eq!(t.body["expires_in"], 0);
    let res = sb.get_bearer("/v2/usercollection/personal_info", &t.access).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    sb.set_faults(json!({"access_token_ttl_seconds": null})).await;
    let (_, body) = sb.refresh(t.refresh.as_deref().unwrap_or_default()).await;
    assert_eq!(body["expires_in"], 3600, "null restores the provider default");
}

#[tokio::test]
async fn unknown_fault_names_are_refused_with_400_and_change_nothing() {
    let sb = start(Provider::Strava).await;
    for body in [json!({"token": "503"}), json!({"tokens": "500"}), json!("500")] {
        let res = sb.set_faults(body.clone()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let faults: serde_json::Value =
        sb.http.get(sb.url("/sandbox/faults")).send().await.expect("ok").json().await.expect("JSON");
    assert_eq!((faults["token"].as_str(), faults["data"].as_str()), (Some("none"), Some("none")));
}
