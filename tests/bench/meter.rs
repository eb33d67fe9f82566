//! The AI meter's figures (docs/benchmarks.md): the latency the proxy adds over calling the sandbox LLM
//! directly (the same request, alternated, so both see the same machine), and the AWS requests one proxied
//! call makes, counted at the SDK's HTTP client.

use std::time::{Duration, Instant};

use integration_tests::TestStack;
use integration_tests::meter::{ANTHROPIC_KEY, claude, claude_body, metered_tenant, plan};

use crate::counting::Counter;
use crate::sync::figure;

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

pub async fn proxy(s: &TestStack, counter: &Counter, calls: usize) {
    println!();
    println!("| {:<60} | {:<52} |", "AI meter", "figure");
    println!("|{:-<62}|{:-<54}|", "", "");
    let (t, user) = metered_tenant(s, plan(1_000_000_000_000, 100_000)).await;
    let direct_url = format!("{}/v1/messages", s.sandboxes["anthropic"]);
    let body = claude_body("How did I sleep? [sandbox:tokens=50]", 100, false);
    let stream_body = claude_body("How did I sleep? [sandbox:tokens=50]", 100, true);
    // Warm both paths (key cache, connection pools).
    for _ in 0..5 {
        let _ = claude(s, &t, &user, &body).await.bytes().await;
    }
    let direct = |b: &serde_json::Value| {
        s.http.post(&direct_url).header("x-api-key", ANTHROPIC_KEY).header("anthropic-version", "2023-06-01").json(b)
    };
    let (mut d, mut p, mut ds, mut ps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    counter.take();
    for _ in 0..calls {
        let t0 = Instant::now();
        let _ = direct(&body).send().await.map(|r| r.bytes());
        d.push(t0.elapsed());
        let t0 = Instant::now();
        let _ = claude(s, &t, &user, &body).await.bytes().await;
        p.push(t0.elapsed());
        let t0 = Instant::now();
        if let Ok(r) = direct(&stream_body).send().await {
            let _ = r.bytes().await;
        }
        ds.push(t0.elapsed());
        let t0 = Instant::now();
        let _ = claude(s, &t, &user, &stream_body).await.bytes().await;
        ps.push(t0.elapsed());
    }
    let tally = counter.take();
    let per = |n: u64| n as f64 / (2 * calls) as f64;
    for (name, direct, proxied) in [("JSON", &mut d, &mut p), ("SSE stream, 50 events", &mut ds, &mut ps)] {
        let (d50, p50) = (pct(direct, 0.5), pct(proxied, 0.5));
        let (d99, p99) = (pct(direct, 0.99), pct(proxied, 0.99));
        figure(
            &format!("{name}: direct vs through the meter, median"),
            format!("{d50:.1?} vs {p50:.1?} (adds {:.1?})", p50.saturating_sub(d50)),
        );
        figure(
            &format!("{name}: direct vs through the meter, p99"),
            format!("{d99:.1?} vs {p99:.1?} (adds {:.1?})", p99.saturating_sub(d99)),
        );
    }
    let ops: Vec<String> = tally
        .requests
        .iter()
        .filter(|((svc, _), _)| svc == "dynamodb")
        .map(|((_, op), n)| format!("{op} {:.2}", per(*n)))
        .collect();
    figure(&format!("DynamoDB requests per proxied call ({} calls)", 2 * calls), ops.join(", "));
    // Moto's time per operation: the meter waits on four DynamoDB round trips in sequence before forwarding
    // (the authorizer's BatchGetItem; user + settings; plan + key + budget side by side; the reservation)
    // and one after (the settle), so moto dominates the figures above.
    let mean = |op: &str| {
        let (n, t) = (tally.op("dynamodb", op), tally.time.get(&("dynamodb".to_owned(), op.to_owned())));
        t.map_or(Duration::ZERO, |t| *t / n.max(1) as u32)
    };
    let (get, batch, update, tx) =
        (mean("GetItem"), mean("BatchGetItem"), mean("UpdateItem"), mean("TransactWriteItems"));
    figure(
        "moto's mean time: BatchGetItem, GetItem, UpdateItem, TransactWriteItems",
        format!("{batch:.1?}, {get:.1?}, {update:.1?}, {tx:.1?}"),
    );
    let on_path = batch + get * 2 + update + tx;
    let added = pct(&mut p, 0.5).saturating_sub(pct(&mut d, 0.5));
    figure(
        "JSON: added median less the sequential DynamoDB waits",
        format!("{:.1?} (the proxy's own work and the local gateway, estimated)", added.saturating_sub(on_path)),
    );
    figure(
        "DynamoDB writes per proxied call (UpdateItem + TransactWriteItems)",
        format!("{:.2}", per(tally.op("dynamodb", "UpdateItem") + tally.op("dynamodb", "TransactWriteItems"))),
    );
    // SQS sends only: the stack's queue pollers receive in the background meanwhile.
    figure(
        "KMS, SQS SendMessage, STS requests per proxied call",
        format!(
            "{:.3}, {:.3}, {:.3}",
            per(tally.service("kms")),
            per(tally.op("sqs", "SendMessage")),
            per(tally.service("sts"))
        ),
    );
}
