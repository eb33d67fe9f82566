//! The sync engine's figures (docs/benchmarks.md): AWS requests per hourly sync per provider and what they
//! cost a connected user a month; worker throughput against the sandbox with 0 and 50 ms provider latency;
//! the scheduler planning many due connections.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use integration_tests::connect::{configure, consent, no_redirects, session};
use integration_tests::{TestStack, TestTenant};
use serde_json::json;
use shared::connect::{ConnectStore, Connection, ConnectionStatus, DUE_SHARDS, token_context};
use shared::ids::{TenantId, UserId};
use shared::providers::ProviderId;
use shared::sync::{SyncJob, SyncQueue, can_sync};

use crate::counting::{Counter, Tally};

/// AWS list prices, us-east-1, on-demand (checked 2026-11; see docs/benchmarks.md).
const DYNAMODB_PER_WRITE_UNIT: f64 = 1.25 / 1e6;
const DYNAMODB_PER_READ_UNIT: f64 = 0.25 / 1e6;
const SQS_PER_REQUEST: f64 = 0.40 / 1e6;
const KMS_PER_REQUEST: f64 = 0.03 / 1e4;
const LAMBDA_PER_GB_SECOND: f64 = 0.000_016_666_7;
const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;
const LAMBDA_GB: f64 = 0.25;
const SYNCS_PER_MONTH: f64 = 720.0;

pub fn figure(name: &str, value: String) {
    println!("| {name:<60} | {value:<52} |");
}

fn header() {
    println!();
    println!("| {:<60} | {:<52} |", "sync engine", "figure");
    println!("|{:-<62}|{:-<54}|", "", "");
}

/// Clients that are not counted: the bench's own waiting and seeding.
struct Plain {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    kms: aws_sdk_kms::Client,
}

fn ids(t: &TestTenant, user: &str) -> (TenantId, UserId) {
    let tenant = TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e}"));
    let user = UserId::parse(user).unwrap_or_else(|e| panic!("{e}"));
    (tenant, user)
}

/// The stored connection item's `last_synced_at` and backfill status, read without the counted clients.
async fn stored(s: &TestStack, plain: &Plain, t: &TestTenant, user: &str, p: ProviderId) -> (Option<String>, String) {
    let out = plain
        .dynamodb
        .get_item()
        .table_name(&s.table)
        .key("pk", AttributeValue::S(t.id.clone()))
        .key("sk", AttributeValue::S(format!("conn#{user}#{p}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let item = out.item().cloned().unwrap_or_default();
    let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    (get("last_synced_at"), get("backfill_status").unwrap_or_default())
}

/// Waits until the connection synced after `before`, its backfill (if any) is done and both queues are empty.
async fn settle(s: &TestStack, plain: &Plain, t: &TestTenant, user: &str, p: ProviderId, before: Option<&str>) {
    for _ in 0..1_200 {
        let (synced, backfill) = stored(s, plain, t, user, p).await;
        let moved = synced.is_some() && synced.as_deref() != before;
        if moved
            && (backfill.is_empty() || backfill == "completed")
            && integration_tests::messages_waiting(&plain.sqs, &s.refs["SyncQueue"]).await == 0
            && integration_tests::messages_waiting(&plain.sqs, &s.refs["NotifyQueue"]).await == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{p}: the sync did not settle: {:?}", stored(s, plain, t, user, p).await);
}

async fn fault(s: &TestStack, p: ProviderId, body: serde_json::Value) {
    let r = s.http.post(format!("{}/sandbox/faults", s.sandboxes[p.as_str()])).json(&body).send().await;
    assert!(r.is_ok_and(|r| r.status().is_success()), "fault {body}");
}

/// Connects a new user of `t` to the provider's sandbox through the Connect flow and waits for the backfill.
async fn connect(s: &TestStack, plain: &Plain, t: &TestTenant, p: ProviderId) -> String {
    configure(s, t, p.as_str()).await;
    let user = s.user(t, &format!("bench-{p}")).await;
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let url = session(s, t, &user_id).await;
    let callback = consent(&url, p.as_str(), "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    settle(s, plain, t, &user_id, p, None).await;
    user_id
}

struct PerSync {
    tally: Tally,
    wall: Duration,
}

impl PerSync {
    /// SQS requests as Lambda's event source mapping would make them: the worker's and the stack's sends
    /// and deletes as counted, plus one ReceiveMessage per message deleted (the local pollers' idle long
    /// polls are not a per-sync cost and are left out).
    fn sqs(&self) -> u64 {
        self.tally.service("sqs") - self.tally.op("sqs", "ReceiveMessage") + self.tally.op("sqs", "DeleteMessage")
    }

    /// The vault keeps a decrypted data key for 5 minutes, so the measured sync (just after the backfill)
    /// opens the tokens without KMS; an hourly sync always finds that cache expired and pays one Decrypt.
    fn kms_billed(&self) -> u64 {
        self.tally.service("kms").max(1)
    }

    fn cost_per_month(&self) -> f64 {
        let t = &self.tally;
        let dynamodb = t.write_units as f64 * DYNAMODB_PER_WRITE_UNIT + t.read_units() as f64 * DYNAMODB_PER_READ_UNIT;
        let sqs = self.sqs() as f64 * SQS_PER_REQUEST;
        let kms = self.kms_billed() as f64 * KMS_PER_REQUEST;
        // One invocation for the sync job, one for the notifier's event it emits.
        let lambda = self.wall.as_secs_f64() * LAMBDA_GB * LAMBDA_PER_GB_SECOND + 2.0 * LAMBDA_PER_REQUEST;
        (dynamodb + sqs + kms + lambda) * SYNCS_PER_MONTH
    }
}

/// One hourly sync job (days=2) of a connected, backfilled user, counted from enqueue to settled.
async fn one_sync(
    s: &TestStack,
    plain: &Plain,
    counter: &Counter,
    queue: &SyncQueue,
    t: &TestTenant,
    user: &str,
    p: ProviderId,
) -> PerSync {
    let (before, _) = stored(s, plain, t, user, p).await;
    let (tenant, user_id) = ids(t, user);
    // last_synced_at has second precision: a sync within the same second would look like no sync.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    counter.take();
    let t0 = Instant::now();
    queue.send(&SyncJob::new(tenant, user_id, p, 2)).await.unwrap_or_else(|e| panic!("{e:?}"));
    settle(s, plain, t, user, p, before.as_deref()).await;
    let wall = t0.elapsed();
    // The notifier's delete lands just after its queue reads empty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    PerSync { tally: counter.take(), wall }
}

pub async fn requests_per_sync(s: &TestStack, counter: &Counter) -> (TestTenant, String) {
    let plain = plain().await;
    let t = s.tenant("Bench sync").await;
    let queue =
        SyncQueue::new(aws_sdk_sqs::Client::new(&counter.wrap(&shared::aws::sdk_config().await)), &s.refs["SyncQueue"]);
    header();
    figure("prices: AWS list, us-east-1, on-demand", "DynamoDB $1.25/M WRU, $0.25/M RRU; SQS $0.40/M".into());
    figure("prices (continued)", "KMS $0.03/10k; Lambda 256 MB $0.0000166667/GB-s, $0.20/M".into());
    let mut oura_user = String::new();
    for p in ProviderId::ALL.into_iter().filter(|p| can_sync(*p)) {
        let user = connect(s, &plain, &t, p).await;
        let one = one_sync(s, &plain, counter, &queue, &t, &user, p).await;
        let tl = &one.tally;
        let kms = tl.service("kms");
        figure(
            &format!("{p}: AWS requests per hourly sync (days=2)"),
            format!(
                "DynamoDB {} ({} items written), SQS {}, KMS {} (billed {}), STS {}",
                tl.service("dynamodb"),
                tl.items_written,
                one.sqs(),
                kms,
                one.kms_billed(),
                tl.service("sts")
            ),
        );
        figure(
            &format!("{p}: cost per connected user-month, hourly sync"),
            format!(
                "${:.5} (WRU {}, RRU {}, {:.0?} wall)",
                one.cost_per_month(),
                tl.write_units,
                tl.read_units(),
                one.wall
            ),
        );
        if p == ProviderId::Oura {
            oura_user = user;
        }
    }
    (t, oura_user)
}

async fn plain() -> Plain {
    let sdk = shared::aws::sdk_config().await;
    Plain {
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        kms: aws_sdk_kms::Client::new(&sdk),
    }
}

/// `n` more Oura connections of `t` holding the same sandbox grant as `template_user` (sealed for each user).
async fn clone_connections(s: &TestStack, t: &TestTenant, template_user: &str, n: usize) -> Vec<String> {
    let plain = plain().await;
    let vault = shared::vault::Vault::new(plain.kms.clone(), s.token_key_id.clone());
    let store = ConnectStore::new(plain.dynamodb.clone(), &s.table);
    let (tenant, template) = ids(t, template_user);
    let original = store
        .connection(&tenant, &template, ProviderId::Oura)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .unwrap_or_else(|| panic!("no Oura connection to copy"));
    let tokens = vault
        .open(&token_context(&tenant, &template, ProviderId::Oura), &original.tokens_sealed)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut users = Vec::new();
    for i in 0..n {
        use secrecy::ExposeSecret;
        let user = s.user(t, &format!("bench-worker-{i}")).await;
        let user_id = UserId::parse(user["id"].as_str().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        let sealed = vault
            .seal(&token_context(&tenant, &user_id, ProviderId::Oura), tokens.expose_secret())
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let c = Connection {
            provider: ProviderId::Oura,
            status: ConnectionStatus::Connected,
            provider_user_id: None,
            scopes: original.scopes.clone(),
            connected_at: original.connected_at.clone(),
            last_synced_at: None,
            last_error: None,
            tokens_sealed: sealed,
            token_version: 0,
            backfill: None,
        };
        store.put_connection(&tenant, &user_id, &c).await.unwrap_or_else(|e| panic!("{e:?}"));
        users.push(user_id.to_string());
    }
    users
}

/// Jobs a second through the stack's SQS poller and worker: `users.len()` jobs queued at once, timed until
/// the queue is empty and every connection synced.
async fn throughput(s: &TestStack, t: &TestTenant, users: &[String]) -> (f64, Duration) {
    let plain = plain().await;
    let queue = SyncQueue::new(plain.sqs.clone(), &s.refs["SyncQueue"]);
    let before: Vec<Option<String>> =
        futures::future::join_all(users.iter().map(|u| stored(s, &plain, t, u, ProviderId::Oura)))
            .await
            .into_iter()
            .map(|(l, _)| l)
            .collect();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let t0 = Instant::now();
    futures::future::join_all(users.iter().map(|u| {
        let (tenant, user) = ids(t, u);
        let queue = queue.clone();
        async move { queue.send(&SyncJob::new(tenant, user, ProviderId::Oura, 2)).await }
    }))
    .await
    .into_iter()
    .for_each(|r| r.unwrap_or_else(|e| panic!("{e:?}")));
    for _ in 0..6_000 {
        if integration_tests::messages_waiting(&plain.sqs, &s.refs["SyncQueue"]).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    let after = futures::future::join_all(users.iter().map(|u| stored(s, &plain, t, u, ProviderId::Oura))).await;
    let synced = after.iter().zip(&before).filter(|((now, _), was)| now.is_some() && now != *was).count();
    assert_eq!(synced, users.len(), "every queued job synced its connection");
    (users.len() as f64 / elapsed.as_secs_f64(), elapsed)
}

pub async fn worker_throughput(s: &TestStack, t: &TestTenant, oura_user: &str, n: usize) {
    let users = clone_connections(s, t, oura_user, n).await;
    // The sandbox's own rate limit is not what this measures.
    fault(s, ProviderId::Oura, json!({"rate_limit": 1_000_000})).await;
    let mut results = Vec::new();
    for latency in [0u64, 50] {
        let body = if latency == 0 { json!({"data": "none"}) } else { json!({"data": "slow", "slow_ms": latency}) };
        fault(s, ProviderId::Oura, body).await;
        let (rate, elapsed) = throughput(s, t, &users).await;
        figure(
            &format!("worker: {n} Oura sync jobs (days=2), provider latency {latency} ms"),
            format!("{rate:.1} jobs/s ({elapsed:.1?} for all)"),
        );
        results.push(rate);
    }
    fault(s, ProviderId::Oura, json!({"data": "none"})).await;
    figure("worker: throughput at 50 ms / at 0 ms", format!("{:.2}", results[1] / results[0]));
}

/// The due-index attributes `put_connection` writes (shared/src/connect.rs `due_pk`, `due_sk`).
fn due_pk(tenant: &TenantId, user: &UserId) -> String {
    let shard = shared::apikey::hash_secret(&format!("{tenant}{user}"))
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("due#{}", shard % DUE_SHARDS)
}

/// `n` due connections (one per user, over four tenants and every provider that syncs), straight into the
/// table with the attributes `put_connection` writes, 25 to a BatchWriteItem, four requests at a time.
async fn seed(plain: &Plain, table: &str, n: usize) -> HashMap<(TenantId, ProviderId), usize> {
    let tenants: Vec<TenantId> = (0..4).map(|_| TenantId::generate()).collect();
    let providers: Vec<ProviderId> = ProviderId::ALL.into_iter().filter(|p| can_sync(*p)).collect();
    let due_at = shared::time::format(shared::time::now() - time::Duration::minutes(5));
    let mut per_app: HashMap<(TenantId, ProviderId), usize> = HashMap::new();
    let mut batches: Vec<Vec<WriteRequest>> = Vec::new();
    for i in 0..n {
        let (tenant, user, p) = (&tenants[i % tenants.len()], UserId::generate(), providers[i % providers.len()]);
        *per_app.entry((tenant.clone(), p)).or_default() += 1;
        let s = |v: String| AttributeValue::S(v);
        let item = HashMap::from([
            ("pk".to_owned(), s(tenant.to_string())),
            ("sk".to_owned(), s(format!("conn#{user}#{p}"))),
            ("user_id".to_owned(), s(user.to_string())),
            ("provider".to_owned(), s(p.as_str().to_owned())),
            ("status".to_owned(), s("connected".to_owned())),
            ("tokens".to_owned(), s("sealed-by-the-bench".to_owned())),
            ("token_version".to_owned(), AttributeValue::N("0".into())),
            ("connected_at".to_owned(), s(due_at.clone())),
            ("gsi1pk".to_owned(), s(due_pk(tenant, &user))),
            ("gsi1sk".to_owned(), s(format!("{due_at}#{tenant}#{user}#{p}"))),
        ]);
        let put = PutRequest::builder().set_item(Some(item)).build().unwrap_or_else(|e| panic!("{e}"));
        if batches.last().is_none_or(|b| b.len() == 25) {
            batches.push(Vec::new());
        }
        if let Some(b) = batches.last_mut() {
            b.push(WriteRequest::builder().put_request(put).build());
        }
    }
    let write = |batch: Vec<WriteRequest>| async move {
        let mut pending = HashMap::from([(table.to_owned(), batch)]);
        while !pending.values().all(Vec::is_empty) {
            let out = plain
                .dynamodb
                .batch_write_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            pending = out.unprocessed_items.unwrap_or_default();
        }
    };
    let mut batches = batches.into_iter();
    loop {
        let group: Vec<_> = batches.by_ref().take(4).collect();
        if group.is_empty() {
            break;
        }
        futures::future::join_all(group.into_iter().map(write)).await;
    }
    per_app
}

pub async fn scheduler_planning(s: &TestStack, counter: &Counter, n: usize) {
    let plain = plain().await;
    let t0 = Instant::now();
    let per_app = seed(&plain, &s.table, n).await;
    figure(
        &format!("scheduler: seeding {n} due connections into moto"),
        format!("{:.1?} (BatchWriteItem)", t0.elapsed()),
    );

    // The jobs go to a queue of the bench's own, so no worker runs them.
    let url = plain
        .sqs
        .create_queue()
        .queue_name(format!("{}-bench-plan", s.prefix))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .queue_url
        .unwrap_or_default();
    let counted = counter.wrap(&shared::aws::sdk_config().await);
    let mut scheduler = sync_scheduler::Scheduler::new(
        ConnectStore::new(aws_sdk_dynamodb::Client::new(&counted), &s.table),
        SyncQueue::new(aws_sdk_sqs::Client::new(&counted), url),
    );
    // Budgets wide open, so the figure is the planning itself; the real budgets' ticks are computed below.
    for b in scheduler.budgets.values_mut() {
        *b = usize::MAX / 16;
    }
    counter.take();
    let t0 = Instant::now();
    let (mut planned, mut ticks) = (0, 0);
    while planned < n && ticks < 20 {
        planned += scheduler.tick().await.unwrap_or_else(|e| panic!("{e:?}")).planned;
        ticks += 1;
    }
    let elapsed = t0.elapsed();
    let tally = counter.take();
    let sends = tally.op("sqs", "SendMessage") + tally.op("sqs", "SendMessageBatch");
    figure(
        &format!("scheduler: plan {planned} of {n} due connections"),
        format!("{elapsed:.1?}, {ticks} tick(s), {:.0} connections/s", planned as f64 / elapsed.as_secs_f64()),
    );
    figure(
        "scheduler: SQS calls per job",
        format!("{:.2} (SendMessageBatch, ten jobs a call)", sends as f64 / planned.max(1) as f64),
    );
    figure(
        "scheduler: DynamoDB calls per job",
        format!(
            "{:.2} ({} Query, {} UpdateItem)",
            tally.service("dynamodb") as f64 / planned.max(1) as f64,
            tally.op("dynamodb", "Query"),
            tally.op("dynamodb", "UpdateItem")
        ),
    );
    // Budgets are per tenant app (tenant and provider) and tick.
    let real_ticks = per_app.iter().map(|((_, p), c)| c.div_ceil(sync_scheduler::budget(*p))).max().unwrap_or(0);
    figure(
        &format!("scheduler: ticks for {n} under the real budgets"),
        format!(
            "{real_ticks} ({} min at one tick per {} s)",
            real_ticks as i64 * sync_scheduler::TICK_SECONDS / 60,
            sync_scheduler::TICK_SECONDS
        ),
    );
}
