//! SQS-triggered functions with partial batch failures: every message of a batch runs concurrently, and only
//! the ones that must come back are reported (`ReportBatchItemFailures`), so one bad message never makes SQS
//! redeliver the whole batch.

use std::future::Future;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

/// Runs `one` on each message; `one` answers true when its message must come back.
pub async fn partial<'a, F, Fut>(event: &'a SqsEvent, one: F) -> SqsBatchResponse
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut response = SqsBatchResponse::default();
    let results = futures::future::join_all(event.records.iter().map(one)).await;
    for (message, retry) in event.records.iter().zip(results) {
        if retry && let Some(id) = &message.message_id {
            response.add_failure(id.clone());
        }
    }
    response
}
