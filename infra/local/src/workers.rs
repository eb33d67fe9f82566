//! The event sources of the local stack: each SQS event of a function in template.yaml becomes a poller
//! that hands batches to the function's handler as Lambda would (an `SqsEvent`, partial batch failures
//! honoured, failed messages left to come back and, past `maxReceiveCount`, go to the dead-letter queue),
//! and each Schedule event becomes a tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::provision::Provisioned;
use crate::template::Template;

/// A queue-triggered function's handler.
pub type QueueHandler = Arc<dyn Fn(SqsEvent) -> BoxFuture<'static, anyhow::Result<SqsBatchResponse>> + Send + Sync>;
/// A scheduled function's handler.
pub type TickHandler = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// Handlers by function logical id.
#[derive(Default, Clone)]
pub struct Workers {
    pub queues: HashMap<String, QueueHandler>,
    pub ticks: HashMap<String, TickHandler>,
}

/// How often schedules tick locally at most (a `rate(1 day)` still ticks this often, so work shows).
pub fn default_tick_cap() -> Duration {
    let secs = std::env::var("TENANTRY_TICK_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

/// `rate(5 minutes)` as a duration; `cron(...)` and anything else tick at the cap.
fn rate(expression: &str, cap: Duration) -> Duration {
    let parsed = expression.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')).and_then(|r| {
        let (n, unit) = r.split_once(' ')?;
        let n: u64 = n.parse().ok()?;
        let secs = match unit.trim_end_matches('s') {
            "minute" => 60,
            "hour" => 3600,
            "day" => 86_400,
            _ => return None,
        };
        Some(Duration::from_secs(n * secs))
    });
    parsed.map_or(cap, |d| d.min(cap))
}

/// Starts a poller per (function, queue) and a ticker per schedule that has a handler; functions in the
/// template without a local handler are reported once and skipped.
pub fn spawn(
    template: &Template,
    provisioned: &Provisioned,
    sqs: aws_sdk_sqs::Client,
    workers: &Workers,
    tick_cap: Duration,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for f in &template.functions {
        for queue in &f.queues {
            let (Some(handler), Some(url), Some(arn)) =
                (workers.queues.get(&f.logical_id), provisioned.refs.get(queue), provisioned.arns.get(queue))
            else {
                tracing::warn!(function = %f.logical_id, queue = %queue, "no local handler for this queue; not polled");
                continue;
            };
            tasks.push(tokio::spawn(poll(sqs.clone(), url.clone(), arn.clone(), handler.clone())));
        }
        for schedule in &f.schedules {
            let Some(handler) = workers.ticks.get(&f.logical_id).cloned() else {
                tracing::warn!(function = %f.logical_id, "no local handler for this schedule; not ticked");
                continue;
            };
            let every = rate(schedule, tick_cap);
            let name = f.logical_id.clone();
            tasks.push(tokio::spawn(async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    if let Err(e) = handler().await {
                        tracing::error!(function = %name, error = ?e, "scheduled run failed");
                    }
                }
            }));
        }
    }
    tasks
}

async fn poll(sqs: aws_sdk_sqs::Client, url: String, arn: String, handler: QueueHandler) {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(queue = %url, error = ?e, "receive failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<_> = messages
            .iter()
            .map(|m| {
                let attributes: HashMap<String, String> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect())
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "md5OfBody": m.md5_of_body(), "attributes": attributes, "messageAttributes": {},
                    "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event: SqsEvent = match serde_json::from_value(json!({"Records": records})) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = ?e, "could not build the SQS event");
                continue;
            }
        };
        // As Lambda does: a failed invocation deletes nothing; a partial failure deletes the rest.
        let failed: Vec<String> = match handler(event).await {
            Ok(response) => response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(),
            Err(e) => {
                tracing::error!(queue = %url, error = ?e, "handler failed; the batch will be redelivered");
                continue;
            }
        };
        for m in messages.iter().filter(|m| !failed.iter().any(|id| Some(id.as_str()) == m.message_id())) {
            if let Some(handle) = m.receipt_handle()
                && let Err(e) = sqs.delete_message().queue_url(&url).receipt_handle(handle).send().await
            {
                tracing::warn!(error = ?e, "could not delete a handled message; it will come back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_capped_and_cron_ticks_at_the_cap() {
        let cap = Duration::from_secs(60);
        assert_eq!(rate("rate(5 minutes)", Duration::from_secs(3600)), Duration::from_secs(300));
        assert_eq!(rate("rate(1 day)", cap), cap);
        assert_eq!(rate("rate(1 minute)", Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(rate("cron(0 12 * * ? *)", cap), cap);
    }
}
