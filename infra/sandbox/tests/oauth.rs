//! The OAuth flows of the sandbox providers, driven over HTTP as the platform drives the real ones.

mod common;

use common::{CLIENT_ID, CLIENT_SECRET, REDIRECT, STATE, location, pkce, query_param, start};
use reqwest::StatusCode;
use sandbox::Provider;
use serde_json::json;

#[tokio::test]
async fn google_health_exchanges_a_code_with_its_pkce_verifier_for_rotating_tokens() {
    let sb = start(Provider::GoogleHealth).await;
    let (code, verifier) = sb.approve("sandbox-user-1").await;

    let (status, body) = sb.exchange(&code, &verifier).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "https://www.googleapis.com/auth/health.activity.read");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    let refresh = body["refresh_token"].as_str().expect("access_type=offline gives a refresh token");
    let (status, again) = sb.refresh(refresh).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_ne!(again["refresh_token"], body["refresh_token"]);
    let state = sb.state().await;
    assert_eq!((state["codes_issued"].as_u64(), state["codes_redeemed"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_invalid_grant_at_google_health_and_garmin() {
    for provider in [Provider::GoogleHealth, Provider::Garmin] {
        let sb = start(provider).await;
        let (code, _) = sb.approve("sandbox-user-1").await;
        let (wrong_verifier, _) = pkce("someone-else");

        let (status, body) = sb.exchange(&code, &wrong_verifier).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{provider}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{provider}");
        assert!(body["error_description"].as_str().is_some_and(|d| d.contains("code_verifier")));
        assert_eq!(sb.state().await["invalid_grant"], 1, "{provider}");
    }
}

#[tokio::test]
async fn google_health_gives_no_refresh_token_without_offline_access() {
    let sb = start(Provider::GoogleHealth).await;
    let (verifier, challenge) = pkce("online");
    let params: Vec<(String, String)> =
        sb.authorize_params(Some(&challenge)).into_iter().filter(|(k, _)| k != "access_type").collect();
    let res = sb.decide(&params, "approve", "u").await;
    let code = query_param(&location(&res), "code").expect("code");

    let (status, body) = sb.exchange(&code, &verifier).await;

    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none(), "{body}");
}

#[tokio::test]
async fn garmin_connects_with_pkce_and_says_who_the_user_is() {
    let sb = start(Provider::Garmin).await;
    let tokens = sb.connect("runner-7").await;
    assert_eq!(tokens.body["token_type"], "bearer");
    assert!(tokens.refresh.is_some());

    let res = sb.get_bearer("/wellness-api/rest/user/id", &tokens.access).await;

    assert_eq!(res.status(), StatusCode::OK);
    let who: serde_json::Value = res.json().await.expect("JSON");
    let again: serde_json::Value =
        sb.get_bearer("/wellness-api/rest/user/id", &tokens.access).await.json().await.expect("JSON");
    assert_eq!(who["userId"].as_str().map(str::len), Some(36));
    assert_eq!(who, again);
}

#[tokio::test]
async fn a_refresh_token_works_once_and_its_reuse_is_invalid_grant_counted_in_state() {
    let sb = start(Provider::Oura).await;
    let first = sb.connect("sandbox-user-1").await;
    let old = first.refresh.expect("Oura issues refresh tokens");

    let (status, rotated) = sb.refresh(&old).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["refresh_token"].as_str().expect("a new refresh token").to_string();
    assert_ne!(new, old);
    assert_ne!(rotated["access_token"].as_str(), Some(first.access.as_str()));

    let (status, reused) = sb.refresh(&old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reused["error"], "invalid_grant");

    let (status, _) = sb.refresh(&new).await;
    assert_eq!(status, StatusCode::OK, "the successor still works");
    let state = sb.state().await;
    assert_eq!(state["refreshes"], 2);
    assert_eq!(state["invalid_grant"], 1);
}

#[tokio::test]
async fn a_replayed_code_is_invalid_grant_and_revokes_what_the_first_exchange_issued() {
    let sb = start(Provider::Oura).await;
    let (code, verifier) = sb.approve("u").await;
    let (_, first) = sb.exchange(&code, &verifier).await;
    let access = first["access_token"].as_str().expect("access token").to_string();

    let (status, body) = sb.exchange(&code, &verifier).await;

    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let res = sb.get_bearer("/v2/usercollection/personal_info", &access).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sb.state().await["code_reuse"], 1);
}

#[tokio::test]
async fn withings_answers_http_200_with_wrapped_bodies_even_for_errors() {
    let sb = start(Provider::Withings).await;
    let tokens = sb.connect("sandbox-user-1").await;
    let body = &tokens.body;
    assert_eq!(body["status"], 0);
    assert_eq!(body["body"]["expires_in"], 10800);
    assert_eq!(body["body"]["token_type"], "Bearer");
    assert_eq!(body["body"]["scope"], "user.info,user.activity");
    assert!(body["body"]["userid"].as_str().is_some_and(|id| id.parse::<u64>().is_ok()));

    let old = tokens.refresh.expect("refresh token");
    let (status, rotated) = sb.refresh(&old).await;
    assert_eq!((status, rotated["status"].as_i64()), (StatusCode::OK, Some(0)));
    let (status, reused) = sb.refresh(&old).await;
    assert_eq!(status, StatusCode::OK, "Withings errors still answer HTTP 200");
    assert_eq!(reused["status"], 503);
    assert!(reused["error"].as_str().is_some_and(|e| e.starts_with("Invalid Params")), "{reused}");

    let res = sb
        .http
        .post(sb.url("/v2/oauth2"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ]))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::OK);
    let missing_action: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(missing_action["status"], 503);
    assert_eq!(sb.state().await["invalid_grant"], 1);
}

#[tokio::test]
async fn polar_data_is_forbidden_until_the_user_is_registered_and_a_second_registration_conflicts() {
    let sb = start(Provider::Polar).await;
    let tokens = sb.connect("sandbox-user-1").await;
    assert_eq!(tokens.body["token_type"], "bearer");
    assert!(tokens.refresh.is_none() && tokens.body.get("refresh_token").is_none(), "Polar has no refresh tokens");
    let user_id = tokens.body["x_user_id"].as_u64().expect("numeric x_user_id");
    let user_path = format!("/v3/users/{user_id}");

    assert_eq!(sb.get_bearer(&user_path, &tokens.access).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(sb.get_bearer("/v3/exercises", &tokens.access).await.status(), StatusCode::FORBIDDEN);

    let register = || {
        sb.http.post(sb.url("/v3/users")).bearer_auth(&tokens.access).json(&json!({"member-id": "member-42"})).send()
    };
    let first = register().await.expect("answers");
    assert_eq!(first.status(), StatusCode::OK);
    let user: serde_json::Value = first.json().await.expect("JSON");
    assert_eq!((user["polar-user-id"].as_u64(), user["member-id"].as_str()), (Some(user_id), Some("member-42")));
    assert_eq!(register().await.expect("answers").status(), StatusCode::CONFLICT);

    let res = sb.get_bearer(&user_path, &tokens.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sb.get_bearer("/v3/exercises", &tokens.access).await.status(), StatusCode::OK);
    let (status, body) = sb.refresh("anything").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")));

    let deleted = sb.http.delete(sb.url(&user_path)).bearer_auth(&tokens.access).send().await.expect("answers");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(sb.get_bearer(&user_path, &tokens.access).await.status(), StatusCode::UNAUTHORIZED);
    let state = sb.state().await;
    assert_eq!((state["registrations"].as_u64(), state["revocations"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test]
async fn deny_sends_the_user_back_with_access_denied_and_the_state() {
    for provider in sandbox::Provider::ALL {
        let sb = start(provider).await;
        let (_, challenge) = pkce("deny");
        let params = sb.authorize_params(Some(&challenge));

        let res = sb.decide(&params, "deny", "sandbox-user-1").await;

        assert_eq!(res.status(), StatusCode::FOUND, "{provider}");
        let back = location(&res);
        assert_eq!(back.as_str().split('?').next(), Some(REDIRECT));
        assert_eq!(query_param(&back, "error").as_deref(), Some("access_denied"), "{provider}");
        assert_eq!(query_param(&back, "state").as_deref(), Some(STATE));
        assert_eq!(query_param(&back, "code"), None);
        assert_eq!(sb.state().await["consents_denied"], 1);
    }
}

#[tokio::test]
async fn the_consent_page_shows_the_client_the_scopes_and_two_real_buttons() {
    let sb = start(Provider::Oura).await;
    let mut params = sb.authorize_params(None);
    params.push(("login_hint".into(), "alice".into()));

    let res = sb.consent_page(&params).await;

    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("text/html")));
    let html = res.text().await.expect("HTML");
    assert!(html.contains("<title>Oura sandbox</title>"));
    assert!(html.contains("<form method=\"post\" action=\"/oauth/authorize\">"));
    assert!(html.contains(CLIENT_ID));
    for scope in ["personal", "daily", "heartrate"] {
        assert!(html.contains(&format!("<code>{scope}</code>")), "scope {scope} listed");
    }
    assert!(html.contains(r#"<button class="approve" type="submit" name="decision" value="approve">Approve</button>"#));
    assert!(html.contains(r#"<button class="deny" type="submit" name="decision" value="deny">Deny</button>"#));
    assert!(html.contains(r#"<input type="hidden" name="state" value="state-0123456789">"#));
    assert!(html.contains(r#"<label for="sandbox_user">Sandbox user</label>"#));
    assert!(html.contains(r#"value="alice""#), "login_hint prefills the user");
}

#[tokio::test]
async fn the_consent_page_answers_400_and_never_redirects_when_params_are_bad() {
    let cases: [(Provider, &[&str], &str); 6] = [
        (Provider::Oura, &["redirect_uri"], "redirect_uri is missing"),
        (Provider::Oura, &["state"], "state is missing"),
        (Provider::Strava, &["client_id"], "client_id is missing"),
        (Provider::GoogleHealth, &["code_challenge", "code_challenge_method"], "code_challenge is missing"),
        (Provider::Garmin, &["code_challenge", "code_challenge_method"], "requires PKCE"),
        (Provider::Withings, &["response_type"], "response_type is missing"),
    ];
    for (provider, drop, says) in cases {
        let sb = start(provider).await;
        let (_, challenge) = pkce("bad");
        let params: Vec<(String, String)> =
            sb.authorize_params(Some(&challenge)).into_iter().filter(|(k, _)| !drop.contains(&k.as_str())).collect();

        for res in [sb.consent_page(&params).await, sb.decide(&params, "approve", "u").await] {
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{provider} without {drop:?}");
            assert!(res.headers().get("location").is_none());
            let html = res.text().await.expect("HTML");
            assert!(html.contains(says), "{provider}: {says:?} not in {html}");
        }
    }

    let sb = start(Provider::Whoop).await;
    let mut params = sb.authorize_params(None);
    for (k, v) in params.iter_mut() {
        if k == "redirect_uri" {
            *v = "javascript:alert(1)".into();
        }
        if k == "state" {
            *v = "short".into();
        }
    }
    let res = sb.consent_page(&params).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await.expect("HTML");
    assert!(html.contains("redirect_uri must be http or https"));
    assert!(html.contains("state must be at least 8 characters"));
    assert_eq!(sb.state().await["codes_issued"], 0);
}

#[tokio::test]
async fn whoop_issues_a_refresh_token_only_when_the_offline_scope_is_granted() {
    let sb = start(Provider::Whoop).await;
    let with_offline = sb.connect("u1").await;
    assert!(with_offline.refresh.is_some());
    assert_eq!(with_offline.body["token_type"], "bearer");

    let params: Vec<(String, String)> = sb
        .authorize_params(None)
        .into_iter()
        .map(|(k, v)| if k == "scope" { (k, "read:recovery".to_string()) } else { (k, v) })
        .collect();
    let res = sb.decide(&params, "approve", "u2").await;
    let code = query_param(&location(&res), "code").expect("code");
    let (status, body) = sb.exchange(&code, "").await;

    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none(), "{body}");
    let profile = sb.get_bearer("/developer/v2/user/profile/basic", &with_offline.access).await;
    assert_eq!(profile.status(), StatusCode::OK);
}

#[tokio::test]
async fn strava_reports_the_scope_in_the_callback_and_the_athlete_with_the_first_tokens() {
    let sb = start(Provider::Strava).await;
    let params = sb.authorize_params(None);
    let res = sb.decide(&params, "approve", "sandbox-user-1").await;
    let back = location(&res);
    assert_eq!(query_param(&back, "scope").as_deref(), Some("read,activity:read_all"));
    let code = query_param(&back, "code").expect("code");

    let (status, body) = sb.exchange(&code, "").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 21600);
    let expires_at = body["expires_at"].as_i64().expect("expires_at");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now + 21_500..=now + 21_700).contains(&expires_at));
    let athlete_id = body["athlete"]["id"].as_u64().expect("athlete id");
    assert!(body["athlete"]["firstname"].is_string() && body["athlete"]["lastname"].is_string());
    let (_, refreshed) = sb.refresh(body["refresh_token"].as_str().expect("refresh token")).await;
    assert!(refreshed.get("athlete").is_none() && refreshed["expires_at"].is_i64());
    let access = refreshed["access_token"].as_str().expect("access token");
    let me: serde_json::Value = sb.get_bearer("/api/v3/athlete", access).await.json().await.expect("JSON");
    assert_eq!(me["id"].as_u64(), Some(athlete_id));
}

#[tokio::test]
async fn a_client_must_keep_presenting_the_secret_it_first_used() {
    let sb = start(Provider::Garmin).await;
    let (code, verifier) = sb.approve("u").await;
    let (status, _) = sb.exchange(&code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    let (code, verifier) = sb.approve("u").await;

    let (status, body) = sb
        .token_request(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
            "another secret",
        )
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(sb.state().await["invalid_client"], 1);
}

#[tokio::test]
async fn each_provider_takes_client_credentials_only_where_it_documents_them() {
    // Polar wants Basic; form credentials are refused.
    let polar = start(Provider::Polar).await;
    let (code, _) = polar.approve("u").await;
    let res = polar
        .http
        .post(polar.url("/v2/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ]))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = res.json().await.expect("JSON");
    assert!(body["error_description"].as_str().is_some_and(|d| d.contains("Basic")), "{body}");

    // Google wants the form; Basic is refused.
    let google = start(Provider::GoogleHealth).await;
    let (code, verifier) = google.approve("u").await;
    let res = google
        .http
        .post(google.url("/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ]))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Oura takes either.
    let oura = start(Provider::Oura).await;
    let (code, verifier) = oura.approve("u").await;
    let res = oura
        .http
        .post(oura.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ]))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_code_is_bound_to_its_redirect_uri() {
    let sb = start(Provider::Strava).await;
    let (code, _) = sb.approve("u").await;

    let (status, body) = sb
        .token_request(
            &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", "http://elsewhere.test/cb")],
            CLIENT_SECRET,
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["errors"][0]["resource"], "AuthorizationCode");
}

#[tokio::test]
async fn revoking_ends_the_users_tokens_at_every_provider_that_can_revoke() {
    let oura = start(Provider::Oura).await;
    let t = oura.connect("u").await;
    let res = oura.http.post(oura.url(&format!("/oauth/revoke?access_token={}", t.access))).send().await.expect("ok");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(oura.get_bearer("/v2/usercollection/personal_info", &t.access).await.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = oura.refresh(t.refresh.as_deref().unwrap_or_default()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the grant's refresh token dies with it");
    assert_eq!(oura.state().await["revocations"], 1);

    let google = start(Provider::GoogleHealth).await;
    let t = google.connect("u").await;
    let revoke = || {
        google
            .http
            .post(google.url("/revoke"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(common::form(&[("token", t.refresh.as_deref().unwrap_or_default())]))
            .send()
    };
    assert_eq!(revoke().await.expect("ok").status(), StatusCode::OK);
    assert_eq!(revoke().await.expect("ok").status(), StatusCode::BAD_REQUEST, "already revoked");

    for (provider, path) in
        [(Provider::Whoop, "/developer/v2/user/access"), (Provider::Garmin, "/wellness-api/rest/user/registration")]
    {
        let sb = start(provider).await;
        let t = sb.connect("u").await;
        let res = sb.http.delete(sb.url(path)).bearer_auth(&t.access).send().await.expect("ok");
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "{provider}");
        let again = sb.http.delete(sb.url(path)).bearer_auth(&t.access).send().await.expect("ok");
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "{provider}");
        assert_eq!(sb.state().await["revocations"], 1);
    }

    let strava = start(Provider::Strava).await;
    let t = strava.connect("u").await;
    let res = strava
        .http
        .post(strava.url("/oauth/deauthorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::form(&[("access_token", &t.access)]))
        .send()
        .await
        .expect("ok");
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(body["access_token"].as_str(), Some(t.access.as_str()));
    assert_eq!(strava.get_bearer("/api/v3/athlete", &t.access).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn start_all_serves_every_provider_on_its_own_port() {
    let all = sandbox::start_all(std::net::Ipv4Addr::LOCALHOST.into()).await.expect("all start");
    let http = reqwest::Client::new();

    let mut ports = std::collections::HashSet::new();
    for running in &all {
        assert!(ports.insert(running.addr().port()));
        let state: serde_json::Value =
            http.get(format!("{}/sandbox/state", running.url)).send().await.expect("ok").json().await.expect("JSON");
        assert_eq!(state["provider"], running.provider.id());
    }
    assert_eq!(all.len(), 7);
}

/// The hidden inputs of a rendered form, unescaped as a browser would.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| s.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    html.split(r#"<input type="hidden" name=""#)
        .skip(1)
        .filter_map(|rest| {
            let (name, rest) = rest.split_once(r#"" value=""#)?;
            let (value, _) = rest.split_once("\">")?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

#[tokio::test]
async fn submitting_the_rendered_form_as_a_browser_would_redirects_with_a_code() {
    let sb = start(Provider::GoogleHealth).await;
    let (verifier, challenge) = pkce("browser");
    let mut params = sb.authorize_params(Some(&challenge));
    for (k, v) in params.iter_mut() {
        if k == "redirect_uri" {
            *v = "http://app.test/cb?tenant=a&b=\"q\"".into();
        }
    }
    let html = sb.consent_page(&params).await.text().await.expect("HTML");

    let carried = hidden_inputs(&html);
    assert_eq!(carried, params, "every parameter rides along unchanged");
    let res = sb.decide(&carried, "approve", "sandbox-user-1").await;

    assert_eq!(res.status(), StatusCode::FOUND);
    let back = location(&res);
    assert_eq!(query_param(&back, "tenant").as_deref(), Some("a"));
    let code = query_param(&back, "code").expect("code");
    let (status, body) = sb
        .token_request(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://app.test/cb?tenant=a&b=\"q\""),
                ("code_verifier", &verifier),
            ],
            CLIENT_SECRET,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
