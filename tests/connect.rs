//! Connecting a device end to end over HTTP, against the sandbox providers: provider app and Connect
//! settings, a connect session, the page, the provider's consent, the callback, the connections API.

use integration_tests::connect::{
    RETURN_URL, configure, connections, consent, location, no_redirects, sandbox_state, session,
};
use integration_tests::{Auth, start};
use serde_json::json;

#[tokio::test]
async fn a_user_connects_sandbox_oura_and_a_repeated_callback_makes_no_second_connection() {
    let s = start().await;
    let t = s.tenant("Connecting").await;
    configure(&s, &t, "oura").await;
    let user = s.user(&t, "ana").await;
    let user_id = user["id"].as_str().unwrap_or_default();

    let app = s.call("GET", "/v1/settings/providers/oura", Auth::Bearer(&t.api_key), None).await;
    assert!(!app.body.to_string().contains("oura-secret-value"), "the client secret is never shown");
    assert_eq!(app.body["redirect_uri"], format!("{}/oauth/oura/callback", s.base));

    let url = session(&s, &t, user_id).await;
    let page = s.http.get(&url).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap_or_default();
    assert!(html.contains("Oura") && html.contains("Not connected") && html.contains("Connecting"), "{html}");

    let callback = consent(&url, "oura", "approve").await;
    assert!(callback.starts_with(&format!("{}/oauth/oura/callback?", s.base)), "{callback}");
    let back = no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.status().as_u16(), 303);
    assert!(location(&back).contains("result=connected"), "{}", location(&back));
    let page =
        s.http.get(location(&back)).send().await.unwrap_or_else(|e| panic!("{e}")).text().await.unwrap_or_default();
    assert!(page.contains(r#"data-state="connected""#) && page.contains("Oura is connected."), "{page}");
    assert!(
        page.contains(&format!(r#"href="{RETURN_URL}?provider=oura&amp;result=connected""#)),
        "the way back carries the outcome: {page}"
    );

    let list = connections(&s, &t, user_id).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0]["provider"].as_str(), list[0]["status"].as_str()), (Some("oura"), Some("connected")));
    assert!(list[0].get("tokens").is_none() && !list[0].to_string().contains("access_token"));

    // Reload or back button: the state is spent, nothing new is made.
    let again = no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.status().as_u16(), 200);
    assert!(again.text().await.unwrap_or_default().contains("Already done"));
    assert_eq!(connections(&s, &t, user_id).await.len(), 1);

    // Disconnect through the API: revoked at the sandbox, gone here.
    let r = s.call("DELETE", &format!("/v1/users/{user_id}/connections/oura"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(connections(&s, &t, user_id).await.is_empty());
    let state = sandbox_state(&s, "oura").await;
    assert!(state.to_string().contains("\"revocations\":1"), "the sandbox saw one revocation: {state}");
    s.call("DELETE", &format!("/v1/users/{user_id}/connections/oura"), Auth::Bearer(&t.api_key), None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn pkce_providers_connect_too_and_a_declined_consent_connects_nothing() {
    let s = start().await;
    let t = s.tenant("Pkce").await;
    configure(&s, &t, "garmin").await;
    configure(&s, &t, "withings").await;
    configure(&s, &t, "polar").await;
    let user = s.user(&t, "ben").await;
    let user_id = user["id"].as_str().unwrap_or_default();
    let url = session(&s, &t, user_id).await;

    let denied = consent(&url, "garmin", "deny").await;
    let back = no_redirects().get(&denied).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(location(&back).contains("result=error"), "{}", location(&back));
    assert!(connections(&s, &t, user_id).await.is_empty(), "declining connects nothing");

    for provider in ["garmin", "withings", "polar"] {
        let callback = consent(&url, provider, "approve").await;
        let back = no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(location(&back).contains("result=connected"), "{provider}: {}", location(&back));
    }
    let mut providers: Vec<String> =
        connections(&s, &t, user_id).await.iter().filter_map(|c| c["provider"].as_str().map(str::to_owned)).collect();
    providers.sort();
    assert_eq!(providers, vec!["garmin", "polar", "withings"]);
    let polar = connections(&s, &t, user_id).await.into_iter().find(|c| c["provider"] == "polar").unwrap_or_default();
    assert!(polar["provider_user_id"].is_string(), "Polar's x_user_id is kept: {polar}");
}

#[tokio::test]
async fn a_failing_token_endpoint_ends_on_a_clear_error_and_stores_nothing() {
    let s = start().await;
    let t = s.tenant("Faults").await;
    configure(&s, &t, "oura").await;
    let user = s.user(&t, "cid").await;
    let user_id = user["id"].as_str().unwrap_or_default();
    let url = session(&s, &t, user_id).await;
    for fault in ["500", "malformed_json"] {
        let r =
            s.http.post(format!("{}/sandbox/faults", s.sandboxes["oura"])).json(&json!({"token": fault})).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()));
        let callback = consent(&url, "oura", "approve").await;
        let back = no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
        let to = location(&back);
        assert!(to.contains("result=error") && to.contains("message="), "{fault}: {to}");
        assert!(connections(&s, &t, user_id).await.is_empty(), "{fault}: no half-made connection");
    }
}

#[tokio::test]
async fn bad_links_states_and_return_urls_are_refused_clearly() {
    let s = start().await;
    let t = s.tenant("Strict links").await;
    let user = s.user(&t, "dee").await;
    let user_id = user["id"].as_str().unwrap_or_default();
    let body = json!({"return_url": RETURN_URL});
    let path = format!("/v1/users/{user_id}/connect-sessions");
    s.call("POST", &path, Auth::Bearer(&t.api_key), Some(body.clone()))
        .await
        .assert_error(400, "return_url_not_allowed");
    configure(&s, &t, "oura").await;
    let evil = json!({"return_url": "https://app.example/devices/done.evil.example"});
    s.call("POST", &path, Auth::Bearer(&t.api_key), Some(evil)).await.assert_error(400, "return_url_not_allowed");
    let unknown = json!({"return_url": RETURN_URL, "providers": ["fitbit"]});
    s.call("POST", &path, Auth::Bearer(&t.api_key), Some(unknown)).await.assert_error(400, "unknown_provider");
    let unconfigured = json!({"return_url": RETURN_URL, "providers": ["strava"]});
    s.call("POST", &path, Auth::Bearer(&t.api_key), Some(unconfigured))
        .await
        .assert_error(400, "provider_not_configured");
    s.call(
        "PUT",
        "/v1/settings/providers/fitbit",
        Auth::Bearer(&t.api_key),
        Some(json!({"client_id": "a", "client_secret": "b"})),
    )
    .await
    .assert_error(404, "unknown_provider");

    let url = session(&s, &t, user_id).await;
    let forged = format!("{url}x");
    assert_eq!(s.http.get(&forged).send().await.map(|r| r.status().as_u16()).unwrap_or(0), 404);
    let bad_state = format!("{}/oauth/oura/callback?code=abc&state={}.forged", s.base, t.id);
    let r = no_redirects().get(&bad_state).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap_or_default().contains("could not be completed"));
    let no_state = format!("{}/oauth/oura/callback?code=abc", s.base);
    assert_eq!(no_redirects().get(&no_state).send().await.map(|r| r.status().as_u16()).unwrap_or(0), 400);
    assert!(connections(&s, &t, user_id).await.is_empty());
}

#[tokio::test]
async fn an_end_user_opens_their_own_connect_link_and_sees_their_connections() {
    let s = start().await;
    let t = s.tenant("Self service").await;
    configure(&s, &t, "oura").await;
    let jwt = integration_tests::user_token(&s, &t, "self-user");
    let r =
        s.call("POST", "/v1/me/connect-sessions", Auth::Bearer(&jwt), Some(json!({"return_url": RETURN_URL}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let url = r.body["url"].as_str().unwrap_or_default().to_owned();
    let callback = consent(&url, "oura", "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    let mine = s.call("GET", "/v1/me/connections", Auth::Bearer(&jwt), None).await;
    assert_eq!(mine.body["data"].as_array().map(Vec::len), Some(1), "{}", mine.body);
    // The tenant key is not an end user, and the end user is not the tenant.
    s.call("GET", "/v1/me/connections", Auth::Bearer(&t.api_key), None)
        .await
        .assert_error(403, "end_user_token_required");
    let me = s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await;
    let path = format!("/v1/users/{}/connections", me.body["id"].as_str().unwrap_or_default());
    s.call("GET", &path, Auth::Bearer(&jwt), None).await.assert_error(403, "tenant_key_required");
}

#[tokio::test]
async fn a_token_endpoint_that_hangs_ends_on_a_clear_error_after_the_timeout() {
    let s = start().await;
    let t = s.tenant("Slow provider").await;
    configure(&s, &t, "oura").await;
    let user = s.user(&t, "fay").await;
    let user_id = user["id"].as_str().unwrap_or_default();
    let url = session(&s, &t, user_id).await;
    let r =
        s.http.post(format!("{}/sandbox/faults", s.sandboxes["oura"])).json(&json!({"token": "timeout"})).send().await;
    assert!(r.is_ok_and(|r| r.status().is_success()));
    let callback = consent(&url, "oura", "approve").await;
    let back = no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    let to = location(&back);
    assert!(to.contains("result=error") && to.contains("did+not+answer+in+time"), "{to}");
    assert!(connections(&s, &t, user_id).await.is_empty());
}

#[tokio::test]
async fn an_expired_state_is_refused_and_connects_nothing() {
    let s = start().await;
    let t = s.tenant("Late").await;
    configure(&s, &t, "oura").await;
    let user = s.user(&t, "ivy").await;
    let user_id = user["id"].as_str().unwrap_or_default();
    let tenant = shared::ids::TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e}"));
    let store = shared::connect::ConnectStore::new(s.dynamodb.clone(), &s.table);
    let secret = shared::connect::random_secret();
    let state = shared::connect::OAuthState {
        session_id: "cs_expired".into(),
        user_id: shared::ids::UserId::parse(user_id).unwrap_or_else(|e| panic!("{e}")),
        provider: shared::providers::ProviderId::Oura,
        pkce_sealed: None,
        redirect_uri: format!("{}/oauth/oura/callback", s.base),
    };
    let used = |secret: String| {
        let (dynamodb, table, pk) = (s.dynamodb.clone(), s.table.clone(), t.id.clone());
        async move {
            let sk = format!("oauth#{}", shared::apikey::hash_secret(&secret));
            let item = dynamodb
                .get_item()
                .table_name(table)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            item.item().is_some_and(|i| i.contains_key("used_at"))
        }
    };
    // A live state is redeemed (marked used) by the callback; an expired one is refused before that.
    let live = shared::connect::random_secret();
    store.put_state(&tenant, &live, &state, time::Duration::minutes(10)).await.unwrap_or_else(|e| panic!("{e:?}"));
    no_redirects()
        .get(format!("{}/oauth/oura/callback?code=abc&state={}.{live}", s.base, t.id))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(used(live).await, "the live state was spent");

    store.put_state(&tenant, &secret, &state, time::Duration::minutes(-1)).await.unwrap_or_else(|e| panic!("{e:?}"));
    let callback = format!("{}/oauth/oura/callback?code=abc&state={}.{secret}", s.base, t.id);
    let r = no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap_or_default().contains("not valid or has expired"));
    assert!(!used(secret).await, "the expired state was refused, not redeemed");
    assert!(connections(&s, &t, user_id).await.is_empty());
}
