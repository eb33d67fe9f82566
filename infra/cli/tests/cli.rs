//! The built `tenantry` binary against a running local stack (moto, as `./dev test` runs it): what an
//! operator types, what it prints, and its exit status.

use std::path::PathBuf;
use std::process::Command;

use integration_tests::{TestStack, start};
use serde_json::Value;

/// What one run of the binary printed, and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    fn json(&self) -> Value {
        self.ok();
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// A fresh, empty working directory (so no `.local/operator-key` is found unless a test puts one there).
fn empty_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tenantry-cli-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Runs `tenantry args...` in `dir` with only the environment given here (none of the caller's TENANTRY_*).
async fn tenantry_in(dir: PathBuf, args: Vec<String>) -> Run {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(&args)
            .current_dir(dir)
            .env_remove("TENANTRY_API")
            .env_remove("TENANTRY_OPERATOR_KEY")
            .env_remove("TENANTRY_API_KEY")
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("the run panicked: {e}"))
    .unwrap_or_else(|e| panic!("cannot run tenantry: {e}"));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn tenantry(args: &[&str]) -> Run {
    tenantry_in(empty_dir(), args.iter().map(|a| (*a).to_owned()).collect()).await
}

/// As the operator of `s`.
async fn operator(s: &TestStack, args: &[&str]) -> Run {
    let mut all = vec!["--api", &s.base, "--operator-key", &s.operator_key];
    all.extend_from_slice(args);
    tenantry(&all).await
}

/// As a tenant, with `key`.
async fn tenant(s: &TestStack, key: &str, args: &[&str]) -> Run {
    let mut all = vec!["--api", &s.base, "--key", key];
    all.extend_from_slice(args);
    tenantry(&all).await
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_lists_shows_disables_and_enables_tenants() {
    let s = start().await;

    // Created in table form: the record on stdout with its key, the shown-once warning on stderr.
    let created = operator(&s, &["tenants", "create", "Acme Health"]).await;
    created.ok();
    let id = line_with(&created.stdout, "ten_").split_whitespace().nth(1).unwrap_or_default().to_owned();
    assert!(id.starts_with("ten_"), "{}", created.stdout);
    assert!(line_with(&created.stdout, "name").ends_with("Acme Health"), "{}", created.stdout);
    let key = line_with(&created.stdout, "api_key ").split_whitespace().nth(1).unwrap_or_default().to_owned();
    assert!(key.len() > 20, "{}", created.stdout);
    assert!(created.stderr.contains("shown only this once"), "{}", created.stderr);
    // The key printed works.
    tenant(&s, &key, &["keys", "list"]).await.ok();

    let other = operator(&s, &["--json", "tenants", "create", "Beta Sleep"]).await.json();
    assert_eq!(other["name"], "Beta Sleep");

    let list = operator(&s, &["tenants", "list"]).await;
    list.ok();
    let header = list.stdout.lines().next().unwrap_or_default();
    assert!(header.starts_with("ID") && header.contains("NAME") && header.contains("STATUS"), "{}", list.stdout);
    let row = line_with(&list.stdout, &id);
    assert!(row.contains("Acme Health") && row.contains("active"), "{row}");
    assert!(list.stdout.contains("Beta Sleep"), "{}", list.stdout);
    // Columns line up: the name starts at the same place on every line.
    let col = header.find("NAME").unwrap_or_default();
    assert_eq!(row.find("Acme Health"), Some(col), "{}", list.stdout);
    let page = operator(&s, &["tenants", "list", "--limit", "1"]).await;
    assert!(line_with(&page.ok().stdout, "more: --cursor ").len() > 15, "{}", page.stdout);

    let shown = operator(&s, &["tenants", "show", &id]).await;
    assert!(line_with(&shown.ok().stdout, "status").ends_with("active"), "{}", shown.stdout);

    let disabled = operator(&s, &["tenants", "disable", &id]).await;
    assert!(line_with(&disabled.ok().stdout, "status").ends_with("disabled"), "{}", disabled.stdout);
    let refused = tenant(&s, &key, &["keys", "list"]).await;
    assert_eq!(refused.code, 1, "a disabled tenant's key stops: {refused:?}");
    let enabled = operator(&s, &["--json", "tenants", "enable", &id]).await.json();
    assert_eq!(enabled["status"], "active");
    tenant(&s, &key, &["keys", "list"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_creates_lists_and_revokes_its_api_keys() {
    let s = start().await;
    let t = s.tenant("Keys Tenant").await;

    let created = tenant(&s, &t.api_key, &["keys", "create"]).await;
    created.ok();
    assert!(created.stderr.contains("shown only this once"), "{}", created.stderr);
    let new_id = line_with(&created.stdout, "key_").split_whitespace().nth(1).unwrap_or_default().to_owned();
    let new_key = line_with(&created.stdout, "api_key").split_whitespace().nth(1).unwrap_or_default().to_owned();
    assert!(new_id.starts_with("key_") && new_key.len() > 20, "{}", created.stdout);

    let list = tenant(&s, &new_key, &["keys", "list"]).await;
    list.ok();
    assert!(list.stdout.starts_with("ID"), "{}", list.stdout);
    assert_eq!(list.stdout.lines().filter(|l| l.starts_with("key_")).count(), 2, "{}", list.stdout);

    let revoked = tenant(&s, &t.api_key, &["keys", "revoke", &new_id]).await;
    let when = line_with(&revoked.ok().stdout, "revoked_at").split_whitespace().nth(1).unwrap_or_default();
    assert!(when.starts_with("20"), "{}", revoked.stdout);
    let after = tenant(&s, &t.api_key, &["--json", "keys", "list"]).await.json();
    let revoked_at = after["data"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["id"] == new_id.as_str()))
        .map(|k| k["revoked_at"].clone());
    assert!(revoked_at.is_some_and(|r| r.is_string()), "{after}");
    // The revoked key no longer works.
    assert_eq!(tenant(&s, &new_key, &["keys", "list"]).await.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_counts_peeks_at_and_redrives_dead_letters() {
    let s = start().await;
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    let dead = s.refs.get("SyncDeadLetters").cloned().unwrap_or_else(|| panic!("no SyncDeadLetters"));
    for body in [r#"{"tenant_id": "ten_0000000000000000000000000e", "job_id": "one"}"#, "second"] {
        if let Err(e) = sqs.send_message().queue_url(&dead).message_body(body).send().await {
            panic!("{e:?}");
        }
    }

    let list = operator(&s, &["dead-letters", "list"]).await;
    list.ok();
    assert_eq!(list.stdout.lines().next(), Some("QUEUE   MESSAGES  IN FLIGHT"), "{}", list.stdout);
    assert_eq!(line_with(&list.stdout, "sync").split_whitespace().nth(1), Some("2"), "{}", list.stdout);
    assert!(list.stdout.contains("notify") && list.stdout.contains("import"), "{}", list.stdout);

    let shown = operator(&s, &["dead-letters", "show", "sync"]).await;
    shown.ok();
    assert!(shown.stdout.starts_with("sync: 2 dead letters, 2 shown (still on the queue)"), "{}", shown.stdout);
    assert!(
        line_with(&shown.stdout, "ten_0000000000000000000000000e").contains(r#"{"job_id":"one""#),
        "{}",
        shown.stdout
    );
    assert!(line_with(&shown.stdout, "second").contains(" - "), "{}", shown.stdout);

    let moved = operator(&s, &["dead-letters", "redrive", "sync", "--limit", "1"]).await;
    assert_eq!(moved.ok().stdout, "moved 1 message from the sync dead letters back to the sync queue\n");
    let rest = operator(&s, &["--json", "dead-letters", "redrive", "sync"]).await.json();
    assert_eq!(rest["moved"], 1);
    let after = operator(&s, &["--json", "dead-letters", "list"]).await.json();
    let sync = after["queues"].as_array().and_then(|q| q.iter().find(|q| q["name"] == "sync")).cloned();
    assert_eq!(sync.map(|q| q["messages"].clone()), Some(Value::from(0)), "{after}");

    // An unknown queue: the API's code and message on stderr, exit status 1.
    let unknown = operator(&s, &["dead-letters", "show", "billing"]).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.starts_with("error: unknown_queue (404): "), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("sync, notify, import, usage, export, purge"), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("request id: "), "{}", unknown.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_print_their_code_and_message_and_exit_non_zero() {
    let s = start().await;
    let missing = operator(&s, &["tenants", "show", "ten_00000000000000000000000000"]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);
    assert!(missing.stderr.starts_with("error: not_found (404): no tenant with that id"), "{}", missing.stderr);

    let wrong_key =
        tenantry(&["--api", &s.base, "--operator-key", "op_not_the_key_at_all_0000000000000", "tenants", "list"]).await;
    assert_eq!(wrong_key.code, 1, "{wrong_key:?}");
    assert!(wrong_key.stderr.contains("(401)"), "{}", wrong_key.stderr);

    let t = s.tenant("Errors Tenant").await;
    let not_operator = tenantry(&["--api", &s.base, "--operator-key", &t.api_key, "dead-letters", "list"]).await;
    assert!(not_operator.stderr.starts_with("error: operator_key_required (403): "), "{}", not_operator.stderr);

    // An export that is not there: the API's 404, said plainly, not as a crash.
    let export = tenant(&s, &t.api_key, &["exports", "show", "exp_1"]).await;
    assert_eq!(export.code, 1, "{export:?}");
    assert!(export.stderr.contains("not_found (404)"), "{}", export.stderr);

    let user = s.user(&t, "cli-imports").await;
    let user_id = user["id"].as_str().unwrap_or_default();
    let import = s
        .call(
            "POST",
            &format!("/v1/users/{user_id}/imports/apple-health"),
            integration_tests::Auth::Bearer(&t.api_key),
            None,
        )
        .await;
    let import_id = import.body["id"].as_str().unwrap_or_default();
    let imports = tenant(&s, &t.api_key, &["imports", "list", "--user", user_id]).await;
    assert!(line_with(&imports.ok().stdout, import_id).contains("waiting_for_upload"), "{}", imports.stdout);
    let one = tenant(&s, &t.api_key, &["imports", "show", import_id]).await;
    assert!(line_with(&one.ok().stdout, "status").ends_with("waiting_for_upload"), "{}", one.stdout);

    // And an export of the user: its status, by id.
    let started =
        s.call("POST", &format!("/v1/users/{user_id}/export"), integration_tests::Auth::Bearer(&t.api_key), None).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let export_id = started.body["id"].as_str().unwrap_or_default();
    let shown = tenant(&s, &t.api_key, &["exports", "show", export_id]).await;
    let status = line_with(&shown.ok().stdout, "status");
    assert!(["pending", "running", "completed"].iter().any(|s| status.ends_with(s)), "{}", shown.stdout);
}

#[tokio::test]
async fn an_unreachable_api_is_named_with_what_to_do_about_it() {
    // Port 1 on loopback: nothing listens there.
    let run = tenantry(&["--api", "http://127.0.0.1:1", "--operator-key", "op_x", "tenants", "list"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("cannot reach the Tenantry API at http://127.0.0.1:1/"), "{}", run.stderr);
    assert!(run.stderr.contains("./dev up") && run.stderr.contains("--api"), "{}", run.stderr);
}

#[tokio::test]
async fn the_operator_key_is_read_from_the_repositorys_local_file_and_its_absence_is_explained() {
    let without = tenantry(&["--api", "http://127.0.0.1:1", "dead-letters", "list"]).await;
    assert_eq!(without.code, 2, "{without:?}");
    assert!(
        without.stderr.contains("--operator-key") && without.stderr.contains(".local/operator-key"),
        "{}",
        without.stderr
    );
    let no_tenant_key = tenantry(&["--api", "http://127.0.0.1:1", "keys", "list"]).await;
    assert_eq!(no_tenant_key.code, 2, "{no_tenant_key:?}");
    assert!(no_tenant_key.stderr.contains("--key"), "{}", no_tenant_key.stderr);

    // With the file, the key is found (and the request goes out: here to nowhere, so exit 3, not 2).
    let dir = empty_dir();
    std::fs::create_dir_all(dir.join(".local")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join(".local/operator-key"), "op_from_file\n").unwrap_or_else(|e| panic!("{e}"));
    let args = ["--api", "http://127.0.0.1:1", "dead-letters", "list"].map(str::to_owned).to_vec();
    assert_eq!(tenantry_in(dir, args).await.code, 3);
}

#[tokio::test]
async fn every_command_has_help_with_an_example() {
    for args in [
        vec!["--help"],
        vec!["tenants", "--help"],
        vec!["tenants", "create", "--help"],
        vec!["keys", "revoke", "--help"],
        vec!["dead-letters", "--help"],
        vec!["dead-letters", "redrive", "--help"],
        vec!["imports", "list", "--help"],
        vec!["exports", "show", "--help"],
    ] {
        let run = tenantry(&args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stdout.contains("Usage: tenantry") && run.stdout.contains("Example"), "{args:?}: {}", run.stdout);
    }
}
