//! No token or secret reaches the logs: the logs of a whole Connect flow (every level from debug, our
//! crates and the AWS SDK's) are captured and searched for each secret that passed through.

use std::io::Write;
use std::sync::{Arc, Mutex};

use integration_tests::connect::{configure, consent, no_redirects, session, stored_tokens};
use integration_tests::{Auth, start};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_or_secret_appears_in_the_logs_of_a_whole_connect_flow() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Before the stack starts, so its own logging setup finds this one in place. The sandbox providers
    // stand in for the outside world; their logs are not ours.
    let installed = tracing_subscriber::fmt()
        .with_env_filter("debug,sandbox=off")
        .json()
        .with_writer(move || writer.clone())
        .try_init();
    assert!(installed.is_ok(), "this test binary must own the log subscriber");

    let s = start().await;
    let t = s.tenant("Quiet").await;
    configure(&s, &t, "oura").await;
    let user = s.user(&t, "eve").await;
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let url = session(&s, &t, &user_id).await;
    let callback = consent(&url, "oura", "approve").await;
    let back = no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(back.status().is_redirection());
    let r = s.call("GET", &format!("/v1/users/{user_id}/connections"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1), "{}", r.body);

    // The tokens themselves, opened from the vault the way the platform would.
    let tokens = stored_tokens(&s, &t, &user_id).await;
    let query: std::collections::HashMap<String, String> = url::Url::parse(&callback)
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();

    let secrets = [
        ("access token", tokens["access_token"].as_str().unwrap_or_default().to_owned()),
        ("refresh token", tokens["refresh_token"].as_str().unwrap_or_default().to_owned()),
        ("client secret", "oura-secret-value".to_owned()),
        ("authorization code", query.get("code").cloned().unwrap_or_default()),
        ("state", query.get("state").and_then(|s| s.split_once('.')).map(|(_, r)| r.to_owned()).unwrap_or_default()),
        ("connect link secret", url.rsplit('.').next().unwrap_or_default().to_owned()),
        ("tenant API key", t.api_key.rsplit('.').next().unwrap_or_default().to_owned()),
        ("operator key", s.operator_key.clone()),
    ];
    let logs = String::from_utf8_lossy(&captured.0.lock().map(|v| v.clone()).unwrap_or_default()).into_owned();
    assert!(logs.contains("connection stored"), "the capture saw the flow ({} bytes)", logs.len());
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} was found for the search: `{secret}`");
        assert!(!logs.contains(secret.as_str()), "the {what} appears in the logs");
    }
}
