//! `tenantry`, the operator's command line: tenants, API keys, dead letters, imports and exports, all
//! through the HTTP API of the local stack or a deployed one (no AWS credentials needed).

pub mod client;
pub mod table;

use std::path::Path;

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

pub use client::{Api, CliError};

const EXAMPLES: &str = "\
Examples:
  tenantry tenants create \"Acme Health\"             # prints the tenant's first API key, once
  tenantry tenants list
  tenantry --key $KEY keys list
  tenantry dead-letters list
  tenantry --api https://api.example.com --json tenants show ten_...

The operator key comes from --operator-key, TENANTRY_OPERATOR_KEY, or ./.local/operator-key (written by
`./dev up`) when run from the repository. Exit codes: 1 the API refused, 2 bad usage, 3 API unreachable.";

#[derive(Debug, Parser)]
#[command(
    name = "tenantry",
    version,
    about = "Operate a Tenantry stack: tenants, API keys, dead letters, imports and exports",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Base URL of the Tenantry API
    #[arg(
        long,
        global = true,
        env = "TENANTRY_API",
        hide_env_values = true,
        default_value = "http://127.0.0.1:3000",
        value_name = "URL"
    )]
    pub api: String,

    /// The operator key, for tenants and dead letters [default: ./.local/operator-key]
    #[arg(long, global = true, env = "TENANTRY_OPERATOR_KEY", hide_env_values = true, value_name = "KEY")]
    pub operator_key: Option<String>,

    /// A tenant API key, for keys and imports (and exports)
    #[arg(long, global = true, env = "TENANTRY_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub key: Option<String>,

    /// Print the API's JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, disable and enable tenants (operator key)
    #[command(
        subcommand,
        after_help = "Example:\n  tenantry tenants create \"Acme Health\"\n  tenantry tenants disable ten_01jd..."
    )]
    Tenants(Tenants),
    /// Create, list and revoke a tenant's API keys (tenant key)
    #[command(subcommand, after_help = "Example:\n  TENANTRY_API_KEY=$KEY tenantry keys create")]
    Keys(Keys),
    /// Count, peek at and redrive the dead-letter queues (operator key)
    #[command(
        subcommand,
        name = "dead-letters",
        after_help = "Example:\n  tenantry dead-letters list\n  tenantry dead-letters show sync\n  tenantry dead-letters redrive sync"
    )]
    DeadLetters(DeadLetters),
    /// Apple Health imports: a user's list, one import's progress (tenant key)
    #[command(subcommand, after_help = "Example:\n  tenantry --key $KEY imports list --user usr_01jd...")]
    Imports(Imports),
    /// Data exports (tenant key)
    #[command(subcommand, after_help = "Example:\n  tenantry --key $KEY exports show exp_01jd...")]
    Exports(Exports),
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// At most this many (1 to 100)
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue from the `next` cursor a previous page printed
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Tenants {
    /// List tenants in creation order
    #[command(after_help = "Example:\n  tenantry tenants list --limit 20")]
    List(PageArgs),
    /// Create a tenant; prints its first API key, which is shown only once
    #[command(after_help = "Example:\n  tenantry tenants create \"Acme Health\"")]
    Create {
        /// The tenant's display name (1 to 100 characters)
        name: String,
    },
    /// Show one tenant
    #[command(after_help = "Example:\n  tenantry tenants show ten_01jd...")]
    Show {
        /// The tenant id (ten_...)
        id: String,
    },
    /// Disable a tenant: its keys and its end users' tokens stop working at once
    #[command(after_help = "Example:\n  tenantry tenants disable ten_01jd...")]
    Disable {
        /// The tenant id (ten_...)
        id: String,
    },
    /// Enable a disabled tenant again
    #[command(after_help = "Example:\n  tenantry tenants enable ten_01jd...")]
    Enable {
        /// The tenant id (ten_...)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// List the tenant's API keys (prefix, created, last used, revoked; never the secret)
    #[command(after_help = "Example:\n  tenantry --key $KEY keys list")]
    List(PageArgs),
    /// Create an API key; the secret is shown only once
    #[command(after_help = "Example:\n  tenantry --key $KEY keys create")]
    Create,
    /// Revoke an API key (a tenant's last active key cannot be revoked)
    #[command(after_help = "Example:\n  tenantry --key $KEY keys revoke key_01jd...")]
    Revoke {
        /// The key id (key_...), as `keys list` shows it
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// How many messages each dead-letter queue holds
    #[command(after_help = "Example:\n  tenantry dead-letters list")]
    List,
    /// Peek at a queue's messages; they stay on the queue
    #[command(
        after_help = "Example:\n  tenantry dead-letters show sync --limit 5\n  tenantry --json dead-letters show notify"
    )]
    Show {
        /// The queue: sync, notify or import (`dead-letters list` shows them all)
        queue: String,
        /// At most this many messages (1 to 100) [default: 10]
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Move a queue's messages back to the queue they came from, to be processed again
    #[command(
        after_help = "Example:\n  tenantry dead-letters redrive sync\n  tenantry dead-letters redrive import --limit 1\n\n\
                      A webhook delivery the notifier gave up on (after its 24 h retry window) stays failed when\n\
                      redriven; the tenant replays it with POST /v1/webhook-deliveries/{id}/replay."
    )]
    Redrive {
        /// The queue: sync, notify or import
        queue: String,
        /// At most this many messages (1 to 500) [default: 100]
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Imports {
    /// A user's Apple Health imports, newest first
    #[command(after_help = "Example:\n  tenantry --key $KEY imports list --user usr_01jd...")]
    List {
        /// The end user's id (usr_...)
        #[arg(long, value_name = "USER_ID")]
        user: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One import: status, bytes read, records imported, days affected, error
    #[command(after_help = "Example:\n  tenantry --key $KEY imports show imp_01jd...")]
    Show {
        /// The import id (imp_...)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Exports {
    /// One data export's status
    #[command(after_help = "Example:\n  tenantry --key $KEY exports show exp_01jd...")]
    Show {
        /// The export id
        id: String,
    },
}

/// What a command prints: the text for stdout, and a note for stderr (a warning beside the result).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn text(stdout: String) -> Self {
        Self { stdout, stderr: String::new() }
    }
}

/// Where the operator key comes from when neither the flag nor the environment gives one.
pub const OPERATOR_KEY_FILE: &str = ".local/operator-key";

impl Cli {
    fn operator_key(&self) -> Result<String, CliError> {
        if let Some(k) = self.operator_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            return Ok(k.to_owned());
        }
        let from_file = std::fs::read_to_string(Path::new(OPERATOR_KEY_FILE)).ok();
        from_file.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).ok_or_else(|| {
            CliError::Usage(format!(
                "this command needs the operator key: pass --operator-key, set TENANTRY_OPERATOR_KEY, or run from \
                 the repository after `./dev up` (it writes {OPERATOR_KEY_FILE})"
            ))
        })
    }

    fn tenant_key(&self) -> Result<String, CliError> {
        self.key.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).ok_or_else(|| {
            CliError::Usage(
                "this command needs a tenant API key: pass --key or set TENANTRY_API_KEY (`tenants create` prints \
                 a tenant's first one)"
                    .to_owned(),
            )
        })
    }
}

fn page_query(p: &PageArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(l) = p.limit {
        q.push(("limit", l.to_string()));
    }
    if let Some(c) = &p.cursor {
        q.push(("cursor", c.clone()));
    }
    q
}

/// A list's table, and the cursor of the next page when there is one.
fn list(v: &Value, columns: &[(&str, &str)], what: &str) -> String {
    let items = v["data"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return format!("no {what}\n");
    }
    let mut out = table::objects(columns, &items);
    if let Some(next) = v["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {next}\n"));
    }
    out
}

const TENANT_FIELDS: &[&str] = &["id", "name", "status", "created_at", "updated_at"];
const KEY_FIELDS: &[&str] = &["id", "prefix", "created_at", "last_used_at", "revoked_at"];
const SHOWN_ONCE: &str = "warning: the API key above is shown only this once; store it now, it cannot be shown again.";

/// Runs the command against the API and returns what to print.
pub async fn run(cli: &Cli) -> Result<Output, CliError> {
    let api = Api::new(&cli.api)?;
    let raw = |v: Value| Ok(Output::text(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"));
    match &cli.command {
        Command::Tenants(cmd) => {
            let op = cli.operator_key()?;
            let (v, shape) = match cmd {
                Tenants::List(p) => {
                    (api.call(Method::GET, &["admin", "v1", "tenants"], &page_query(p), &op, None).await?, "list")
                }
                Tenants::Create { name } => {
                    let body = json!({ "name": name });
                    (api.call(Method::POST, &["admin", "v1", "tenants"], &[], &op, Some(&body)).await?, "created")
                }
                Tenants::Show { id } => {
                    (api.call(Method::GET, &["admin", "v1", "tenants", id], &[], &op, None).await?, "one")
                }
                Tenants::Disable { id } => {
                    (api.call(Method::POST, &["admin", "v1", "tenants", id, "disable"], &[], &op, None).await?, "one")
                }
                Tenants::Enable { id } => {
                    (api.call(Method::POST, &["admin", "v1", "tenants", id, "enable"], &[], &op, None).await?, "one")
                }
            };
            if cli.json {
                let mut out = raw(v.clone())?;
                if shape == "created" && v.get("api_key").is_some() {
                    out.stderr = SHOWN_ONCE.to_owned() + "\n";
                }
                return Ok(out);
            }
            Ok(match shape {
                "list" => Output::text(list(
                    &v,
                    &[("ID", "id"), ("NAME", "name"), ("STATUS", "status"), ("CREATED", "created_at")],
                    "tenants",
                )),
                "created" => shown_once(&v, &["id", "name", "status", "api_key_id", "api_key"]),
                _ => Output::text(table::record(&v, TENANT_FIELDS)),
            })
        }
        Command::Keys(cmd) => {
            let key = cli.tenant_key()?;
            match cmd {
                Keys::List(p) => {
                    let v = api.call(Method::GET, &["v1", "api-keys"], &page_query(p), &key, None).await?;
                    if cli.json {
                        return raw(v);
                    }
                    let columns = [
                        ("ID", "id"),
                        ("PREFIX", "prefix"),
                        ("CREATED", "created_at"),
                        ("LAST USED", "last_used_at"),
                        ("REVOKED", "revoked_at"),
                    ];
                    Ok(Output::text(list(&v, &columns, "API keys")))
                }
                Keys::Create => {
                    let v = api.call(Method::POST, &["v1", "api-keys"], &[], &key, None).await?;
                    if cli.json {
                        let mut out = raw(v)?;
                        out.stderr = SHOWN_ONCE.to_owned() + "\n";
                        return Ok(out);
                    }
                    Ok(shown_once(&v, &["id", "prefix", "created_at", "api_key"]))
                }
                Keys::Revoke { id } => {
                    let v = api.call(Method::DELETE, &["v1", "api-keys", id], &[], &key, None).await?;
                    if cli.json {
                        return raw(v);
                    }
                    Ok(Output::text(table::record(&v, KEY_FIELDS)))
                }
            }
        }
        Command::DeadLetters(cmd) => {
            let op = cli.operator_key()?;
            match cmd {
                DeadLetters::List => {
                    let v = api.call(Method::GET, &["admin", "v1", "dead-letters"], &[], &op, None).await?;
                    if cli.json {
                        return raw(v);
                    }
                    let queues = v["queues"].as_array().cloned().unwrap_or_default();
                    let columns = [("QUEUE", "name"), ("MESSAGES", "messages"), ("IN FLIGHT", "in_flight")];
                    Ok(Output::text(table::objects(&columns, &queues)))
                }
                DeadLetters::Show { queue, limit } => {
                    let q: Vec<(&str, String)> = limit.map(|l| ("limit", l.to_string())).into_iter().collect();
                    let v = api.call(Method::GET, &["admin", "v1", "dead-letters", queue], &q, &op, None).await?;
                    if cli.json {
                        return raw(v);
                    }
                    Ok(Output::text(dead_letters_table(&v)))
                }
                DeadLetters::Redrive { queue, limit } => {
                    let body = limit.map_or_else(|| json!({}), |l| json!({ "limit": l }));
                    let path = ["admin", "v1", "dead-letters", queue.as_str(), "redrive"];
                    let v = api.call(Method::POST, &path, &[], &op, Some(&body)).await?;
                    if cli.json {
                        return raw(v);
                    }
                    let moved = v["moved"].as_u64().unwrap_or(0);
                    let noun = if moved == 1 { "message" } else { "messages" };
                    Ok(Output::text(format!(
                        "moved {moved} {noun} from the {queue} dead letters back to the {queue} queue\n"
                    )))
                }
            }
        }
        Command::Imports(cmd) => {
            let key = cli.tenant_key()?;
            match cmd {
                Imports::List { user, page } => {
                    let path = ["v1", "users", user.as_str(), "imports"];
                    let v = api.call(Method::GET, &path, &page_query(page), &key, None).await?;
                    if cli.json {
                        return raw(v);
                    }
                    let mut items = v.clone();
                    // The error's code is what fits a column; `imports show` has the whole error.
                    if let Some(data) = items["data"].as_array_mut() {
                        for i in data {
                            i["error_code"] = i["error"]["code"].clone();
                        }
                    }
                    let columns = [
                        ("ID", "id"),
                        ("STATUS", "status"),
                        ("RECORDS", "records_imported"),
                        ("DAYS", "days_affected"),
                        ("BYTES", "bytes_read"),
                        ("CREATED", "created_at"),
                        ("ERROR", "error_code"),
                    ];
                    Ok(Output::text(list(&items, &columns, "imports")))
                }
                Imports::Show { id } => {
                    let v = api.call(Method::GET, &["v1", "imports", id], &[], &key, None).await?;
                    if cli.json {
                        return raw(v);
                    }
                    Ok(Output::text(table::record(&v, &["id", "user_id", "status", "bytes_read", "records_imported"])))
                }
            }
        }
        Command::Exports(Exports::Show { id }) => {
            let key = cli.tenant_key()?;
            let v = api.call(Method::GET, &["v1", "exports", id], &[], &key, None).await?;
            if cli.json {
                return raw(v);
            }
            Ok(Output::text(table::record(&v, &["id", "status"])))
        }
    }
}

/// A created object with its secret: the record on stdout, the warning on stderr.
fn shown_once(v: &Value, first: &[&str]) -> Output {
    let mut out = Output::text(table::record(v, first));
    if v.get("api_key").is_some() {
        out.stderr = SHOWN_ONCE.to_owned() + "\n";
    }
    out
}

fn dead_letters_table(v: &Value) -> String {
    let queue = v["queue"].as_str().unwrap_or_default();
    let total = v["messages"].as_u64().unwrap_or(0);
    let data = v["data"].as_array().cloned().unwrap_or_default();
    if total == 0 && data.is_empty() {
        return format!("{queue}: no dead letters\n");
    }
    let mut out = format!("{queue}: {total} dead letters, {} shown (still on the queue)\n", data.len());
    if data.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = data
        .iter()
        .map(|m| {
            vec![
                table::cell(&m["id"]),
                table::cell(&m["tenant_id"]),
                table::cell(&m["receive_count"]),
                table::cell(&m["sent_at"]),
                table::truncate(&table::cell(&m["body"]), 80),
            ]
        })
        .collect();
    out.push_str(&table::render(&["ID", "TENANT", "RECEIVES", "SENT", "BODY"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_a_one_line_description_and_an_example() {
        let root = Cli::command();
        for group in root.get_subcommands() {
            assert!(group.get_about().is_some(), "{} has no description", group.get_name());
            let example = group.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(example.contains("tenantry "), "{} has no example", group.get_name());
            for cmd in group.get_subcommands() {
                let name = format!("{} {}", group.get_name(), cmd.get_name());
                assert!(cmd.get_about().is_some(), "{name} has no description");
                let example = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(example.contains("tenantry "), "{name} has no example");
            }
        }
    }

    #[test]
    fn flags_are_global_and_read_after_the_subcommand_too() {
        let cli = Cli::try_parse_from([
            "tenantry",
            "dead-letters",
            "show",
            "sync",
            "--limit",
            "3",
            "--json",
            "--api",
            "http://x:1",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.json);
        assert_eq!(cli.api, "http://x:1");
        assert!(
            matches!(cli.command, Command::DeadLetters(DeadLetters::Show { ref queue, limit: Some(3) }) if queue == "sync")
        );
    }

    #[test]
    fn a_dead_letter_table_says_the_messages_stay_and_cuts_long_bodies() {
        let v = json!({"queue": "sync", "messages": 2, "data": [
            {"id": "m1", "body": {"job_id": "j", "note": "x".repeat(200)}, "receive_count": 6, "sent_at": "2026-11-29T10:00:00Z", "tenant_id": "ten_a"},
            {"id": "m2", "body": "plain", "receive_count": null, "sent_at": null}
        ]});
        let out = dead_letters_table(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "sync: 2 dead letters, 2 shown (still on the queue)");
        assert!(lines[1].starts_with("ID  TENANT  RECEIVES  SENT"), "{out}");
        assert!(lines[2].starts_with("m1  ten_a   6         2026-11-29T10:00:00Z  {\"job_id\""), "{out}");
        assert!(lines[2].ends_with('…') && lines[2].chars().count() < 150, "{out}");
        assert!(lines[3].starts_with("m2  -       -         -"), "{out}");
    }

    #[test]
    fn an_empty_dead_letter_queue_says_so() {
        assert_eq!(
            dead_letters_table(&json!({"queue": "import", "messages": 0, "data": []})),
            "import: no dead letters\n"
        );
    }

    #[test]
    fn a_list_says_when_it_is_empty_and_how_to_get_the_next_page() {
        assert_eq!(list(&json!({"data": [], "next_cursor": null}), &[("ID", "id")], "tenants"), "no tenants\n");
        let out = list(&json!({"data": [{"id": "a"}], "next_cursor": "abc"}), &[("ID", "id")], "tenants");
        assert_eq!(out, "ID\na\nmore: --cursor abc\n");
    }
}
