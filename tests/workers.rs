//! The local stack's event plumbing, on a template of its own: queues with dead letters, a bucket that
//! notifies a queue, a poller that feeds a handler with partial batch failures, and a schedule tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::FutureExt;
use tenantry_local::workers::{QueueHandler, TickHandler, Workers};
use tenantry_local::{Clients, Template};

const TEMPLATE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Resources:
  JobsDeadLetters:
    Type: AWS::SQS::Queue
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt JobsDeadLetters.Arn
        maxReceiveCount: 2
  Uploads:
    Type: AWS::S3::Bucket
    Properties:
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt Jobs.Arn
  WorkerFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: worker
    Properties:
      Environment:
        Variables:
          JOBS_URL: !Ref Jobs
      Events:
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
"#;

async fn wait_until(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..150 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn queued_messages_reach_the_handler_and_a_failing_one_ends_in_the_dead_letter_queue() {
    integration_tests::start().await; // checks the environment and installs logging
    let sdk = shared::aws::sdk_config().await;
    let clients = Clients::new(&sdk);
    let template = Template::parse(TEMPLATE).unwrap_or_else(|e| panic!("{e:?}"));
    let prefix = format!("w{}", &ulid::Ulid::new().to_string().to_lowercase()[18..]);
    let provisioned = tenantry_local::provision::provision(&clients, &template, &prefix, HashMap::new())
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let worker = template.function("WorkerFunction").unwrap_or_else(|| panic!("no worker"));
    let env = provisioned.environment(worker).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(env.get("JOBS_URL"), provisioned.refs.get("Jobs"), "!Ref of a queue is its URL");

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let ticks: Arc<Mutex<u32>> = Arc::default();
    let seen_in = seen.clone();
    let handler: QueueHandler = Arc::new(move |event: SqsEvent| {
        let seen = seen_in.clone();
        async move {
            let mut response = SqsBatchResponse::default();
            for m in event.records {
                let body = m.body.unwrap_or_default();
                if body == "poison" {
                    response.add_failure(m.message_id.unwrap_or_default());
                }
                seen.lock().map(|mut s| s.push(body)).unwrap_or_default();
            }
            Ok(response)
        }
        .boxed()
    });
    let ticks_in = ticks.clone();
    let tick: TickHandler = Arc::new(move || {
        let ticks = ticks_in.clone();
        async move {
            ticks.lock().map(|mut t| *t += 1).unwrap_or_default();
            Ok(())
        }
        .boxed()
    });
    let workers = Workers {
        queues: HashMap::from([("WorkerFunction".to_owned(), handler)]),
        ticks: HashMap::from([("WorkerFunction".to_owned(), tick)]),
    };
    let tasks = tenantry_local::workers::spawn(
        &template,
        &provisioned,
        clients.sqs.clone(),
        &workers,
        Duration::from_millis(200),
    );

    let jobs = &provisioned.refs["Jobs"];
    for body in ["one", "poison", "two"] {
        clients.sqs.send_message().queue_url(jobs).message_body(body).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    }
    let bucket = &provisioned.refs["Uploads"];
    clients
        .s3
        .put_object()
        .bucket(bucket)
        .key("imports/export.zip")
        .body(b"zip".to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));

    let count = |b: &str| seen.lock().map(|s| s.iter().filter(|x| x.as_str() == b).count()).unwrap_or(0);
    assert!(wait_until(|| count("one") == 1 && count("two") == 1).await, "handled: {seen:?}");
    assert!(
        wait_until(|| seen
            .lock()
            .map(|s| s.iter().any(|b| b.contains("ObjectCreated:Put") && b.contains("export.zip")))
            .unwrap_or(false))
        .await,
        "the bucket's ObjectCreated notification reached the queue: {seen:?}"
    );
    assert!(wait_until(|| count("poison") >= 2).await, "the failed message came back: {seen:?}");
    let dlq = &provisioned.refs["JobsDeadLetters"];
    let mut dead = Vec::new();
    for _ in 0..20 {
        let out = clients.sqs.receive_message().queue_url(dlq).wait_time_seconds(1).send().await;
        dead.extend(out.ok().and_then(|o| o.messages).unwrap_or_default().into_iter().filter_map(|m| m.body));
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead, vec!["poison".to_owned()], "only the failing message is dead-lettered");
    assert_eq!((count("one"), count("two")), (1, 1), "handled messages were deleted, not redelivered");
    assert!(wait_until(|| ticks.lock().map(|t| *t >= 2).unwrap_or(false)).await, "the schedule ticks");
    for t in tasks {
        t.abort();
    }
}
