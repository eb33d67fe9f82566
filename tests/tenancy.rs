//! Tenancy through the local stack: operator, tenant keys, end users, bring-your-own login, bad input.

use integration_tests::{Auth, Claims, EC_PEM, RSA_OTHER_PEM, RSA_PEM, start, token, user_token};
use jsonwebtoken::Algorithm;
use serde_json::json;

#[tokio::test]
async fn the_operator_creates_a_tenant_whose_key_is_shown_once_and_works_in_either_header() {
    let s = start().await;
    let r = s.operator("POST", "/admin/v1/tenants", Some(json!({"name": "Acme Fitness"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["name"], "Acme Fitness");
    assert_eq!(r.body["status"], "active");
    let key = r.body["api_key"].as_str().unwrap_or_default().to_owned();
    assert!(key.starts_with("tnty_"));

    assert_eq!(s.call("GET", "/v1/users", Auth::Bearer(&key), None).await.status, 200);
    assert_eq!(s.call("GET", "/v1/users", Auth::ApiKeyHeader(&key), None).await.status, 200);

    let got =
        s.operator("GET", &format!("/admin/v1/tenants/{}", r.body["id"].as_str().unwrap_or_default()), None).await;
    assert_eq!(got.status, 200);
    assert!(got.body.get("api_key").is_none(), "the key is shown once only");
    assert!(!s.table_snapshot().await.iter().any(|item| item.contains(&key)), "the key itself is never stored");
}

#[tokio::test]
async fn the_tenant_list_is_paginated_with_a_cursor() {
    let s = start().await;
    for i in 0..5 {
        s.operator("POST", "/admin/v1/tenants", Some(json!({"name": format!("Tenant {i}")}))).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/tenants?limit=2&cursor={c}"),
            None => "/admin/v1/tenants?limit=2".to_owned(),
        };
        let r = s.operator("GET", &path, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.body["data"].as_array().cloned().unwrap_or_default();
        assert!(page.len() <= 2);
        seen.extend(page.iter().filter_map(|t| t["id"].as_str().map(str::to_owned)));
        cursor = r.body["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    seen.sort();
    seen.dedup();
    assert!(seen.len() >= 5, "every tenant is listed once: {seen:?}");
    s.operator("GET", "/admin/v1/tenants?limit=0", None).await.assert_error(400, "invalid_query");
    s.operator("GET", "/admin/v1/tenants?cursor=!!!", None).await.assert_error(400, "invalid_cursor");
}

#[tokio::test]
async fn disabling_a_tenant_stops_its_keys_and_its_users_tokens_until_it_is_enabled() {
    let s = start().await;
    let t = s.tenant("Soon Disabled").await;
    let jwt = user_token(&s, &t, "user-1");
    assert_eq!(s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await.status, 200);

    let r = s.operator("POST", &format!("/admin/v1/tenants/{}/disable", t.id), None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("disabled")));
    s.call("GET", "/v1/users", Auth::Bearer(&t.api_key), None).await.assert_error(403, "tenant_disabled");
    s.call("GET", "/v1/me", Auth::Bearer(&jwt), None).await.assert_error(403, "tenant_disabled");

    s.operator("POST", &format!("/admin/v1/tenants/{}/enable", t.id), None).await;
    assert_eq!(s.call("GET", "/v1/users", Auth::Bearer(&t.api_key), None).await.status, 200);
    s.operator("POST", "/admin/v1/tenants/ten_00000000000000000000000000/disable", None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn api_keys_are_listed_without_secrets_and_a_revoked_key_fails_at_once() {
    let s = start().await;
    let t = s.tenant("Keys").await;
    let r = s.call("POST", "/v1/api-keys", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let second = r.body["api_key"].as_str().unwrap_or_default().to_owned();
    let second_id = r.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(s.call("GET", "/v1/users", Auth::ApiKeyHeader(&second), None).await.status, 200);

    let list = s.call("GET", "/v1/api-keys", Auth::Bearer(&t.api_key), None).await;
    let keys = list.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 2);
    let text = list.body.to_string();
    assert!(!text.contains(&second) && !text.contains(&t.api_key), "no secret in the listing");
    assert!(
        keys.iter()
            .all(|k| k["prefix"].as_str().is_some_and(|p| p.starts_with("tnty_")) && k["created_at"].is_string())
    );
    assert!(keys.iter().any(|k| k["id"] == second_id.as_str() && k["last_used_at"].is_string()), "last use is stamped");

    let r = s.call("DELETE", &format!("/v1/api-keys/{second_id}"), Auth::Bearer(&t.api_key), None).await;
    assert!(r.status == 200 && r.body["revoked_at"].is_string(), "{}", r.body);
    s.call("GET", "/v1/users", Auth::Bearer(&second), None).await.assert_error(401, "api_key_revoked");

    let first_id =
        keys.iter().find(|k| k["id"] != second_id.as_str()).and_then(|k| k["id"].as_str()).unwrap_or_default();
    s.call("DELETE", &format!("/v1/api-keys/{first_id}"), Auth::Bearer(&t.api_key), None)
        .await
        .assert_error(409, "last_active_key");
    assert_eq!(s.call("GET", "/v1/users", Auth::Bearer(&t.api_key), None).await.status, 200);
}

#[tokio::test]
async fn a_user_is_created_once_per_external_id_listed_fetched_and_disabled() {
    let s = start().await;
    let t = s.tenant("Users").await;
    let auth = Auth::Bearer(&t.api_key);
    let r = s
        .call("POST", "/v1/users", auth.clone(), Some(json!({"external_id": "ana", "email": "ana@example.com"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!((r.body["external_id"].as_str(), r.body["status"].as_str()), (Some("ana"), Some("active")));

    let again = s.call("POST", "/v1/users", auth.clone(), Some(json!({"external_id": "ana"}))).await;
    assert_eq!((again.status, again.body["id"].as_str()), (200, Some(id.as_str())));

    for i in 0..4 {
        s.user(&t, &format!("user-{i}")).await;
    }
    let page = s.call("GET", "/v1/users?limit=3", auth.clone(), None).await;
    assert_eq!(page.body["data"].as_array().map(Vec::len), Some(3));
    let cursor = page.body["next_cursor"].as_str().unwrap_or_default();
    let rest = s.call("GET", &format!("/v1/users?limit=3&cursor={cursor}"), auth.clone(), None).await;
    assert_eq!(rest.body["data"].as_array().map(Vec::len), Some(2));
    let by_ext = s.call("GET", "/v1/users?external_id=ana", auth.clone(), None).await;
    assert_eq!(by_ext.body["data"][0]["id"].as_str(), Some(id.as_str()));

    let got = s.call("GET", &format!("/v1/users/{id}"), auth.clone(), None).await;
    assert_eq!(got.body["email"], "ana@example.com");
    let patched = s
        .call("PATCH", &format!("/v1/users/{id}"), auth.clone(), Some(json!({"status": "disabled", "email": null})))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["status"], "disabled");
    assert!(patched.body["email"].is_null());
    s.call("PATCH", &format!("/v1/users/{id}"), auth.clone(), Some(json!({}))).await.assert_error(400, "invalid_body");
    s.call("GET", "/v1/users/usr_00000000000000000000000000", auth.clone(), None).await.assert_error(404, "not_found");
    s.call("GET", "/v1/users/not-an-id", auth.clone(), None).await.assert_error(404, "not_found");
    let keys_cursor = shared::http::encode_cursor("key#key_00000000000000000000000000");
    s.call("GET", &format!("/v1/users?cursor={keys_cursor}"), auth, None).await.assert_error(400, "invalid_cursor");
}

#[tokio::test]
async fn an_end_user_with_the_tenants_jwt_acts_as_themselves_created_on_first_use() {
    let s = start().await;
    let t = s.tenant("Own Login").await;
    let rs = user_token(&s, &t, "auth0|ana");
    let me = s.call("GET", "/v1/me", Auth::Bearer(&rs), None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["external_id"], "auth0|ana");

    let es = token(
        Algorithm::ES256,
        EC_PEM,
        "ec-1",
        &Claims { iss: &s.issuer, aud: &t.audience, sub: "auth0|ana", exp_in: 600, nbf_in: None },
    );
    let again = s.call("GET", "/v1/me", Auth::Bearer(&es), None).await;
    assert_eq!((again.status, &again.body["id"]), (200, &me.body["id"]), "ES256 too, same user");

    let users = s.call("GET", "/v1/users?external_id=auth0%7Cana", Auth::Bearer(&t.api_key), None).await;
    assert_eq!(users.body["data"].as_array().map(Vec::len), Some(1));

    // The end user is not the tenant: tenant routes refuse the token.
    s.call("GET", "/v1/users", Auth::Bearer(&rs), None).await.assert_error(403, "tenant_key_required");
    // And a tenant key is not an end user.
    s.call("GET", "/v1/me", Auth::Bearer(&t.api_key), None).await.assert_error(403, "end_user_token_required");

    let id = me.body["id"].as_str().unwrap_or_default();
    s.call("PATCH", &format!("/v1/users/{id}"), Auth::Bearer(&t.api_key), Some(json!({"status": "disabled"}))).await;
    s.call("GET", "/v1/me", Auth::Bearer(&rs), None).await.assert_error(403, "user_disabled");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_clear_error_and_create_nobody() {
    let s = start().await;
    let t = s.tenant("Strict").await;
    let before = s.table_snapshot().await;
    let c = |sub, exp_in, nbf_in, aud, iss| Claims { iss, aud, sub, exp_in, nbf_in };
    let iss = s.issuer.as_str();
    let aud = t.audience.as_str();
    let cases = [
        (token(Algorithm::RS256, RSA_PEM, "rsa-1", &c("u1", -3600, None, aud, iss)), 401, "token_expired"),
        (token(Algorithm::RS256, RSA_PEM, "rsa-1", &c("u2", 3600, Some(1800), aud, iss)), 401, "token_not_yet_valid"),
        (token(Algorithm::RS256, RSA_PEM, "rsa-1", &c("u3", 600, None, "someone-else", iss)), 401, "unknown_issuer"),
        (
            token(Algorithm::RS256, RSA_PEM, "rsa-1", &c("u4", 600, None, aud, "https://evil.example")),
            401,
            "unknown_issuer",
        ),
        (token(Algorithm::RS256, RSA_OTHER_PEM, "rsa-9", &c("u5", 600, None, aud, iss)), 401, "token_unknown_key"),
        (token(Algorithm::RS256, RSA_OTHER_PEM, "rsa-1", &c("u6", 600, None, aud, iss)), 401, "token_bad_signature"),
    ];
    for (jwt, status, code) in &cases {
        s.call("GET", "/v1/me", Auth::Bearer(jwt), None).await.assert_error(*status, code);
    }
    // alg none and HS256 keyed with the public key: classic forgeries.
    use base64::Engine;
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = b64(json!({"iss": iss, "aud": aud, "sub": "forger", "exp": integration_tests::now() + 600}));
    let none = format!("{}.{payload}.", b64(json!({"alg": "none", "typ": "JWT"})));
    s.call("GET", "/v1/me", Auth::Bearer(&none), None).await.assert_error(401, "token_unsupported_algorithm");
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header { kid: Some("rsa-1".into()), ..jsonwebtoken::Header::new(Algorithm::HS256) },
        &json!({"iss": iss, "aud": aud, "sub": "forger", "exp": integration_tests::now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(include_bytes!("fixtures/jwt/rsa_pub.pem")),
    )
    .unwrap_or_default();
    s.call("GET", "/v1/me", Auth::Bearer(&hs), None).await.assert_error(401, "token_unsupported_algorithm");
    assert_eq!(s.table_snapshot().await, before, "a refused token creates no user");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let s = start().await;
    let t = s.tenant("Careful").await;
    let user = s.user(&t, "kept").await;
    let before = s.table_snapshot().await;
    let key = t.api_key.as_str();
    let raw = |method: &str, path: &str, body: &'static str| {
        s.http
            .request(method.parse().unwrap_or(reqwest::Method::POST), format!("{}{}", s.base, path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
    };
    s.send(raw("POST", "/v1/users", "{\"external_id\": ")).await.assert_error(400, "invalid_json");
    s.send(raw("POST", "/v1/users", "{\"external_id\": 42}")).await.assert_error(400, "invalid_body");
    s.send(raw("POST", "/v1/users", "{\"external_id\": \"x\", \"admin\": true}"))
        .await
        .assert_error(400, "invalid_body");
    s.send(raw("POST", "/v1/users", "{\"external_id\": \"x\", \"email\": \"not an email\"}"))
        .await
        .assert_error(400, "invalid_body");
    s.send(raw("POST", "/v1/users", "{\"external_id\": \"\"}")).await.assert_error(400, "invalid_body");
    s.send(raw(
        "PATCH",
        &format!("/v1/users/{}", user["id"].as_str().unwrap_or_default()),
        "{\"status\": \"deleted\"}",
    ))
    .await
    .assert_error(400, "invalid_body");
    s.send(raw(
        "PUT",
        "/v1/settings/auth",
        "{\"issuer\": \"x\", \"jwks_url\": \"http://example.com/jwks\", \"audience\": \"a\"}",
    ))
    .await
    .assert_error(400, "invalid_jwks_url");
    let big = format!("{{\"external_id\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let r = s
        .send(
            s.http
                .post(format!("{}/v1/users", s.base))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    r.assert_error(413, "payload_too_large");
    let r = s.send(s.http.post(format!("{}/v1/users", s.base)).bearer_auth(key).body("external_id=x")).await;
    r.assert_error(415, "unsupported_media_type");

    s.call("GET", "/v1/users", Auth::None, None).await.assert_error(401, "missing_credentials");
    s.call("GET", "/v1/users", Auth::Bearer("tnty_garbled"), None).await.assert_error(401, "invalid_api_key");
    let forged = format!("{}x", &key[..key.len() - 1]);
    s.call("GET", "/v1/users", Auth::Bearer(&forged), None).await.assert_error(401, "invalid_api_key");
    s.call("GET", "/v1/users", Auth::Bearer("hello"), None).await.assert_error(401, "invalid_credentials");
    s.call("GET", "/admin/v1/tenants", Auth::Bearer(key), None).await.assert_error(403, "operator_key_required");
    s.call("GET", "/v1/users", Auth::Bearer(&s.operator_key), None).await.assert_error(403, "tenant_key_required");
    s.call("GET", "/admin/v1/tenants", Auth::Bearer("op_wrong_key_wrong_key_wrong_key_0000"), None)
        .await
        .assert_error(401, "invalid_credentials");
    s.operator("POST", "/admin/v1/tenants", Some(json!({"name": "  "}))).await.assert_error(400, "invalid_body");
    s.operator("POST", "/admin/v1/tenants", Some(json!({}))).await.assert_error(400, "invalid_body");
    assert_eq!(s.table_snapshot().await, before, "nothing changed");
}

#[tokio::test]
async fn an_unknown_route_gets_api_gateways_not_found_and_the_openapi_document_is_public() {
    let s = start().await;
    let r = s.call("GET", "/v1/nothing-here", Auth::None, None).await;
    assert_eq!(r.status, 404);
    let doc = s.call("GET", "/openapi.json", Auth::None, None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
}

#[tokio::test]
async fn tenant_work_runs_on_a_per_tenant_sts_session_that_is_reused() {
    let s = start().await;
    let sdk = shared::aws::sdk_config().await;
    let access = shared::aws::TenantAccess::new(&sdk, "arn:aws:iam::123456789012:role/t-TenantAccessRole");
    let tenant = shared::ids::TenantId::generate();
    let key = |c: Result<aws_sdk_dynamodb::config::Credentials, anyhow::Error>| match c {
        Ok(c) => c.access_key_id().to_owned(),
        Err(e) => panic!("{e:?}"),
    };
    let first = key(access.credentials(&tenant).await);
    let again = key(access.credentials(&tenant).await);
    let other = key(access.credentials(&shared::ids::TenantId::generate()).await);
    assert!(first.starts_with("ASIA"), "temporary credentials from STS, not the process's own: {first}");
    assert_eq!(first, again, "the session is reused");
    assert_ne!(first, other, "another tenant gets its own session");
    let client = access.dynamodb(&tenant).await.unwrap_or_else(|e| panic!("{e:?}"));
    let listed = client
        .query()
        .table_name(&s.table)
        .key_condition_expression("pk = :t")
        .expression_attribute_values(":t", aws_sdk_dynamodb::types::AttributeValue::S(tenant.to_string()))
        .send()
        .await;
    assert!(listed.is_ok(), "the session reaches the table: {listed:?}");
}

#[tokio::test]
async fn the_authorizer_fails_closed_with_503_when_the_tenancy_table_cannot_be_read() {
    let s = start().await;
    let t = s.tenant("Closed").await;
    let config = shared::Config::from_lookup(|k| (k == "TENANCY_TABLE").then(|| "no-such-table".to_owned()))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let store = shared::tenancy::TenancyStore::new(s.dynamodb.clone(), "no-such-table");
    let authorizer = authorizer::Authorizer::new(&config, store, shared::jwt::http_client());
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", t.api_key.parse().unwrap_or_else(|e| panic!("{e}")));
    let verdict = authorizer.authorize(&headers).await;
    assert!(
        matches!(&verdict, shared::auth::Principal::Anonymous { status: 503, code, .. } if code == "auth_unavailable"),
        "{verdict:?}"
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", integration_tests::user_token(&s, &t, "u")).parse().unwrap_or_else(|e| panic!("{e}")),
    );
    let verdict = authorizer.authorize(&headers).await;
    assert!(matches!(verdict, shared::auth::Principal::Anonymous { status: 503, .. }), "{verdict:?}");
}
