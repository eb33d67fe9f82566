//! The hosted Connect page in real headless Chromium (Debian `chromium` + `chromium-driver`, driven over
//! the WebDriver protocol): open the link at phone width, click Connect on sandbox Oura, approve at the
//! provider, land back on the page with the card Connected. Saves a screenshot under tests/output/.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use integration_tests::connect::{configure, session};
use integration_tests::start;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    profile: std::path::PathBuf,
    base: String,
    http: reqwest::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Each run's browser profile is a few MB; leave no trail on a shared machine.
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Driver {
    async fn start() -> Driver {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run ./dev test, which installs chromium and chromium-driver"
            );
        }
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9515);
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let profile = std::env::temp_dir().join(format!("tenantry-chromium-{}", ulid::Ulid::new()));
        let mut driver = Driver { child, profile: profile.clone(), base, http, session: String::new() };
        for _ in 0..100 {
            if driver.http.get(format!("{}/status", driver.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=390,844", format!("--user-data-dir={}", profile.display())]
        }}}});
        let created = driver.call("POST", "/session", caps).await;
        driver.session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        driver
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let response: Value = match req.send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        };
        assert!(response["value"].get("error").is_none(), "webdriver {method} {path}: {response}");
        response["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call("POST", &format!("/session/{}/url", self.session), json!({"url": url})).await;
    }

    /// A click that submits a form returns before the navigation ends; wait for where it leads.
    async fn wait_for_url_containing(&self, part: &str) {
        let mut url = Value::Null;
        for _ in 0..100 {
            url = self.call("GET", &format!("/session/{}/url", self.session), Value::Null).await;
            if url.as_str().is_some_and(|u| u.contains(part)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the browser never reached a URL with `{part}`; it is at {url}");
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call("POST", &format!("/session/{}/element", self.session), json!({"using": "css selector", "value": css}))
            .await;
        found[ELEMENT].as_str().unwrap_or_default().to_owned()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/session/{}/element/{element}/click", self.session), json!({})).await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call("GET", &format!("/session/{}/element/{element}/text", self.session), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn script(&self, script: &str) -> Value {
        self.call("POST", &format!("/session/{}/execute/sync", self.session), json!({"script": script, "args": []}))
            .await
    }

    async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let b64 = self.call("GET", &format!("/session/{}/screenshot", self.session), Value::Null).await;
        let png =
            base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).unwrap_or_default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("output");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("saving {}: {e}", path.display()));
        path
    }
}

#[tokio::test]
async fn a_person_connects_sandbox_oura_in_a_real_browser_at_phone_width() {
    let s = start().await;
    let t = s.tenant("Acme Fitness").await;
    configure(&s, &t, "oura").await;
    configure(&s, &t, "garmin").await;
    let user = s.user(&t, "browser-user").await;
    let url = session(&s, &t, user["id"].as_str().unwrap_or_default()).await;

    let b = Driver::start().await;
    b.go(&url).await;
    assert_eq!(b.text("h1").await, "Connect your devices");
    assert_eq!(b.text("li[data-provider=oura] .state").await, "Not connected");
    let overflow = b.script("return document.documentElement.scrollWidth <= window.innerWidth").await;
    assert_eq!(overflow, json!(true), "no sideways scrolling at phone width");
    let unnamed = b
        .script("return [...document.querySelectorAll('button')].filter(b => !(b.getAttribute('aria-label') || b.textContent.trim())).length")
        .await;
    assert_eq!(unnamed, json!(0), "every button has an accessible name");
    // Keyboard: the first Tab lands on the first card's Connect button.
    let first_focus = b
        .script("document.body.focus(); const f = [...document.querySelectorAll('a[href], button')]; return f[0].getAttribute('aria-label') || f[0].textContent")
        .await;
    assert_eq!(first_focus, json!("Connect Oura"));

    b.click("li[data-provider=oura] button").await;
    b.wait_for_url_containing("/oauth/authorize").await;
    assert!(b.text("h1").await.contains("Oura sandbox"), "at the provider's consent page");
    b.click("button.approve").await;
    b.wait_for_url_containing("result=connected").await;

    assert_eq!(b.text("li[data-provider=oura] .state").await, "Connected");
    assert_eq!(b.text("li[data-provider=garmin] .state").await, "Not connected");
    assert!(b.text("[role=status]").await.contains("Oura is connected"));
    let shot = b.screenshot("connect-page-connected.png").await;
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "a screenshot at {}", shot.display());

    // The first connect imports a year of history; the card shows how far it is while it runs.
    let landed = b.call("GET", &format!("/session/{}/url", b.session), Value::Null).await;
    let history = "const p = document.querySelector('li[data-provider=oura] .history progress'); \
                   return p ? {value: p.value, label: document.querySelector('li[data-provider=oura] .history label').textContent} : null";
    let mut seen = Vec::new();
    for _ in 0..300 {
        let h = b.script(history).await;
        if h.is_null() {
            break;
        }
        if seen.is_empty() {
            b.screenshot("connect-page-importing.png").await;
        }
        seen.push(h);
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.go(landed.as_str().unwrap_or_default()).await;
    }
    assert!(b.script(history).await.is_null(), "the import finished: {seen:?}");
    for h in &seen {
        let label = h["label"].as_str().unwrap_or_default();
        assert!(label.starts_with("Importing your history") && label.ends_with("of 365 days"), "{h}");
        assert!(h["value"].as_f64().is_some_and(|v| (0.0..=100.0).contains(&v)), "{h}");
    }

    // Sync now: the card says Syncing, then Connected again once the worker is done.
    b.click("li[data-provider=oura] button[aria-label='Sync Oura now']").await;
    b.wait_for_url_containing("result=sync_started").await;
    let here = b.call("GET", &format!("/session/{}/url", b.session), Value::Null).await;
    let mut state = String::new();
    for _ in 0..300 {
        b.go(here.as_str().unwrap_or_default()).await;
        state = b.text("li[data-provider=oura] .state").await;
        if state == "Connected" {
            break;
        }
        assert_eq!(state, "Syncing", "the card shows the sync in progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "Connected", "the sync finished");
    b.screenshot("connect-page-synced.png").await;
    b.call("DELETE", &format!("/session/{}", b.session), Value::Null).await;

    let r = s
        .call(
            "GET",
            &format!("/v1/users/{}/connections", user["id"].as_str().unwrap_or_default()),
            integration_tests::Auth::Bearer(&t.api_key),
            None,
        )
        .await;
    assert_eq!(r.body["data"][0]["status"], "connected", "{}", r.body);
}
