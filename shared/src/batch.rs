//! SQS-triggered functions with partial batch failures: every message of a batch runs concurrently, and only
//! the ones that must come back are reported (`ReportBatchItemFailures`), so one bad message never makes SQS
//! redeliver the whole batch. And the sending side: messages queued ten to a SendMessageBatch call.

use std::future::Future;

use anyhow::Context;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

/// Runs `one` on each message; `one` answers true when its message must come back. Each runs in a `message`
/// span whose `request_id` is the SQS message id; `one` names the tenant once it knows it
/// (`shared::telemetry::record_tenant`), so every log line of a message carries both.
pub async fn partial<'a, F, Fut>(event: &'a SqsEvent, one: F) -> SqsBatchResponse
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = bool>,
{
    use tracing::Instrument;
    let mut response = SqsBatchResponse::default();
    let runs = event.records.iter().map(|message| {
        let id = message.message_id.as_deref().unwrap_or_default();
        one(message).instrument(tracing::info_span!("message", request_id = %id, tenant_id = tracing::field::Empty))
    });
    let results = futures::future::join_all(runs).await;
    for (message, retry) in event.records.iter().zip(results) {
        if retry && let Some(id) = &message.message_id {
            response.add_failure(id.clone());
        }
    }
    response
}

/// Queues messages (body, delay in seconds, at most 900), ten to a SendMessageBatch call. Entries SQS refuses
/// are sent again (three tries); what still fails is an error naming how many of `what`.
pub async fn send_many(
    client: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[(String, i32)],
    what: &str,
) -> anyhow::Result<()> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    for chunk in messages.chunks(10) {
        let mut pending: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, (body, delay))| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .delay_seconds((*delay).clamp(0, 900))
                    .build()
            })
            .collect::<Result<_, _>>()
            .with_context(|| format!("building a batch of {what}"))?;
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            let out = client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .with_context(|| format!("queueing {what}"))?;
            let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
            pending.retain(|e| failed.contains(&e.id()));
        }
        anyhow::ensure!(pending.is_empty(), "SQS refused {} {what} three times", pending.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tests::Lines;

    #[tokio::test]
    async fn every_log_line_of_a_message_carries_the_message_id_and_the_tenant_once_known() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "msg-a", "body": "{\"tenant_id\": \"ten_a\"}"},
            {"messageId": "msg-b", "body": "{\"tenant_id\": \"ten_b\"}"},
        ]}))
        .expect("an SQS event");
        let lines = Lines::default();
        let subscriber = crate::telemetry::json_subscriber(tracing_subscriber::EnvFilter::new("info"), lines.clone());
        let _logs = tracing::subscriber::set_default(subscriber.finish());

        let response = partial(&event, |message| async move {
            let body: serde_json::Value =
                serde_json::from_str(message.body.as_deref().unwrap_or("{}")).unwrap_or_default();
            crate::telemetry::record_tenant(&body["tenant_id"].as_str().unwrap_or_default());
            tracing::info!("working");
            tokio::task::yield_now().await;
            tracing::info!("done");
            message.message_id.as_deref() == Some("msg-b")
        })
        .await;

        let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, ["msg-b"]);
        let logged = lines.parsed();
        assert_eq!(logged.len(), 4, "{logged:?}");
        for line in &logged {
            let tenant = line["request_id"].as_str().map(|id| id.replace("msg-", "ten_"));
            assert_eq!(line["tenant_id"].as_str(), tenant.as_deref(), "{line}");
            assert_eq!(line["span"], "message", "{line}");
        }
    }
}
