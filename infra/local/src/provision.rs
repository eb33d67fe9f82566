//! Creates what template.yaml declares in the local AWS emulator (moto): DynamoDB tables with their GSIs
//! and TTL, SQS queues with their dead-letter redrive, S3 buckets with their notifications to SQS, KMS keys
//! and aliases. Every physical name starts with a prefix, so each test can make its own world.

use std::collections::HashMap;

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types as ddb;
use serde_yaml::Value;

use crate::template::{Expr, Resource, Template};

/// What `!Ref` and `!GetAtt X.Arn` resolve to after provisioning.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    pub prefix: String,
    pub refs: HashMap<String, String>,
    pub arns: HashMap<String, String>,
    pub parameters: HashMap<String, String>,
}

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

impl Provisioned {
    pub fn resolve(&self, expr: &Expr) -> anyhow::Result<String> {
        match expr {
            Expr::Literal(s) => Ok(s.clone()),
            Expr::Ref(name) => self
                .parameters
                .get(name)
                .or_else(|| self.refs.get(name))
                .cloned()
                .with_context(|| format!("!Ref {name}: no such parameter or resource")),
            Expr::GetAtt(name, att) if att == "Arn" => {
                self.arns.get(name).cloned().with_context(|| format!("!GetAtt {name}.Arn: unknown resource"))
            }
            Expr::GetAtt(name, att) => bail!("!GetAtt {name}.{att} is not supported locally"),
            Expr::Sub(text) => self.substitute(text),
        }
    }

    fn substitute(&self, text: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').context("unclosed ${ in !Sub")? + start;
            let name = &rest[start + 2..end];
            let value = match name {
                "AWS::Region" => REGION.to_owned(),
                "AWS::AccountId" => ACCOUNT.to_owned(),
                "AWS::Partition" => "aws".to_owned(),
                "AWS::URLSuffix" => "amazonaws.com".to_owned(),
                "AWS::StackName" => self.prefix.clone(),
                _ if name.starts_with('!') => format!("${{{}}}", &name[1..]),
                _ => match name.split_once('.') {
                    Some((res, att)) => self.resolve(&Expr::GetAtt(res.into(), att.into()))?,
                    None => self.resolve(&Expr::Ref(name.into()))?,
                },
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A function's environment as its Lambda would see it.
    pub fn environment(&self, function: &crate::template::Function) -> anyhow::Result<HashMap<String, String>> {
        function
            .environment
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.resolve(v).with_context(|| format!("{} env {k}", function.logical_id))?)))
            .collect()
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    v.get(key).and_then(Value::as_str).with_context(|| format!("missing {key}"))
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_sequence).into_iter().flatten()
}

fn key_schema(v: &Value) -> anyhow::Result<Vec<ddb::KeySchemaElement>> {
    list(v, "KeySchema")
        .map(|k| {
            Ok(ddb::KeySchemaElement::builder()
                .attribute_name(str_of(k, "AttributeName")?)
                .key_type(ddb::KeyType::from(str_of(k, "KeyType")?))
                .build()?)
        })
        .collect()
}

/// The AWS clients the provisioner needs.
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub kms: aws_sdk_kms::Client,
}

impl Clients {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(config).force_path_style(true).build();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            kms: aws_sdk_kms::Client::new(config),
        }
    }
}

/// Creates every resource of the template under `prefix`. `parameters` gives values for template
/// parameters without defaults (e.g. the operator key).
pub async fn provision(
    clients: &Clients,
    template: &Template,
    prefix: &str,
    parameters: HashMap<String, String>,
) -> anyhow::Result<Provisioned> {
    let mut out = Provisioned { prefix: prefix.to_owned(), ..Default::default() };
    for (name, default) in &template.parameters {
        if let Some(v) = parameters.get(name).or(default.as_ref()) {
            out.parameters.insert(name.clone(), v.clone());
        }
    }
    // Names and ARNs first, so that any resource may refer to any other.
    for r in &template.resources {
        let physical = physical_name(prefix, r);
        let arn = match r.kind.as_str() {
            "AWS::DynamoDB::Table" => {
                format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{physical}")
            }
            "AWS::SQS::Queue" => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{physical}"),
            "AWS::S3::Bucket" => format!("arn:aws:s3:::{physical}"),
            "AWS::IAM::Role" => format!("arn:aws:iam::{ACCOUNT}:role/{physical}"),
            "AWS::Serverless::Function" => {
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}")
            }
            _ => format!("arn:aws:local:{REGION}:{ACCOUNT}:{physical}"),
        };
        out.refs.insert(r.logical_id.clone(), physical);
        out.arns.insert(r.logical_id.clone(), arn);
    }
    for r in template.resources.iter().filter(|r| r.kind == "AWS::DynamoDB::Table") {
        create_table(clients, r, &out.refs[&r.logical_id])
            .await
            .with_context(|| format!("creating {}", r.logical_id))?;
    }
    let queues: Vec<&Resource> = template.resources.iter().filter(|r| r.kind == "AWS::SQS::Queue").collect();
    for r in &queues {
        let url = create_queue(clients, r, &out.refs[&r.logical_id])
            .await
            .with_context(|| format!("creating {}", r.logical_id))?;
        out.refs.insert(r.logical_id.clone(), url);
    }
    for r in &queues {
        if let Some(redrive) = r.properties.get("RedrivePolicy") {
            let target = Expr::parse(redrive.get("deadLetterTargetArn").context("RedrivePolicy.deadLetterTargetArn")?)?;
            let max = redrive.get("maxReceiveCount").and_then(Value::as_u64).unwrap_or(5);
            let policy = serde_json::json!({"deadLetterTargetArn": out.resolve(&target)?, "maxReceiveCount": max});
            clients
                .sqs
                .set_queue_attributes()
                .queue_url(&out.refs[&r.logical_id])
                .attributes(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy, policy.to_string())
                .send()
                .await
                .with_context(|| format!("setting the redrive policy of {}", r.logical_id))?;
        }
    }
    for r in template.resources.iter().filter(|r| r.kind == "AWS::S3::Bucket") {
        create_bucket(clients, r, &out).await.with_context(|| format!("creating {}", r.logical_id))?;
    }
    for r in template.resources.iter().filter(|r| r.kind == "AWS::KMS::Key") {
        let key = clients.kms.create_key().description(format!("{prefix} {}", r.logical_id)).send().await?;
        let meta = key.key_metadata().context("created key has no metadata")?;
        out.refs.insert(r.logical_id.clone(), meta.key_id().to_owned());
        out.arns.insert(r.logical_id.clone(), meta.arn().unwrap_or_default().to_owned());
    }
    for r in template.resources.iter().filter(|r| r.kind == "AWS::KMS::Alias") {
        let name = str_of(&r.properties, "AliasName")?.trim_start_matches("alias/");
        let alias = format!("alias/{prefix}-{name}");
        let target = out.resolve(&Expr::parse(r.properties.get("TargetKeyId").context("TargetKeyId")?)?)?;
        clients.kms.create_alias().alias_name(&alias).target_key_id(target).send().await?;
        out.refs.insert(r.logical_id.clone(), alias);
    }
    Ok(out)
}

fn physical_name(prefix: &str, r: &Resource) -> String {
    let name = format!("{prefix}-{}", r.logical_id);
    match r.kind.as_str() {
        "AWS::S3::Bucket" => name.to_lowercase(),
        "AWS::SQS::Queue" if r.properties.get("FifoQueue").and_then(Value::as_bool) == Some(true) => {
            format!("{name}.fifo")
        }
        _ => name,
    }
}

async fn create_table(clients: &Clients, r: &Resource, name: &str) -> anyhow::Result<()> {
    let p = &r.properties;
    let mut req = clients.dynamodb.create_table().table_name(name).billing_mode(ddb::BillingMode::PayPerRequest);
    for a in list(p, "AttributeDefinitions") {
        req = req.attribute_definitions(
            ddb::AttributeDefinition::builder()
                .attribute_name(str_of(a, "AttributeName")?)
                .attribute_type(ddb::ScalarAttributeType::from(str_of(a, "AttributeType")?))
                .build()?,
        );
    }
    req = req.set_key_schema(Some(key_schema(p)?));
    for g in list(p, "GlobalSecondaryIndexes") {
        let projection = g.get("Projection").context("GSI without Projection")?;
        let projection = ddb::Projection::builder()
            .projection_type(ddb::ProjectionType::from(str_of(projection, "ProjectionType")?))
            .set_non_key_attributes(
                projection
                    .get("NonKeyAttributes")
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
            )
            .build();
        req = req.global_secondary_indexes(
            ddb::GlobalSecondaryIndex::builder()
                .index_name(str_of(g, "IndexName")?)
                .set_key_schema(Some(key_schema(g)?))
                .projection(projection)
                .build()?,
        );
    }
    req.send().await?;
    if let Some(ttl) = p.get("TimeToLiveSpecification")
        && ttl.get("Enabled").and_then(Value::as_bool) == Some(true)
    {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                ddb::TimeToLiveSpecification::builder()
                    .attribute_name(str_of(ttl, "AttributeName")?)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await?;
    }
    Ok(())
}

async fn create_queue(clients: &Clients, r: &Resource, name: &str) -> anyhow::Result<String> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let p = &r.properties;
    let mut req = clients.sqs.create_queue().queue_name(name);
    for (prop, attr) in [
        ("FifoQueue", A::FifoQueue),
        ("VisibilityTimeout", A::VisibilityTimeout),
        ("MessageRetentionPeriod", A::MessageRetentionPeriod),
        ("DelaySeconds", A::DelaySeconds),
        ("ContentBasedDeduplication", A::ContentBasedDeduplication),
        ("ReceiveMessageWaitTimeSeconds", A::ReceiveMessageWaitTimeSeconds),
    ] {
        let value = match p.get(prop) {
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => continue,
        };
        req = req.attributes(attr, value);
    }
    req.send().await?;
    // Queue URLs carry the host the client called; ask for the URL as the docs advise.
    let url = clients.sqs.get_queue_url().queue_name(name).send().await?;
    url.queue_url().map(str::to_owned).context("no queue url")
}

async fn create_bucket(clients: &Clients, r: &Resource, out: &Provisioned) -> anyhow::Result<()> {
    use aws_sdk_s3::types as s3;
    let name = &out.refs[&r.logical_id];
    clients.s3.create_bucket().bucket(name).send().await?;
    let configs =
        r.properties.get("NotificationConfiguration").map(|n| list(n, "QueueConfigurations").collect::<Vec<_>>());
    let mut notifications = s3::NotificationConfiguration::builder();
    for q in configs.into_iter().flatten() {
        let queue_arn = out.resolve(&Expr::parse(q.get("Queue").context("QueueConfigurations.Queue")?)?)?;
        let mut rules = Vec::new();
        for rule in q
            .get("Filter")
            .and_then(|f| f.get("S3Key"))
            .map(|k| list(k, "Rules").collect::<Vec<_>>())
            .into_iter()
            .flatten()
        {
            rules.push(
                s3::FilterRule::builder()
                    .name(s3::FilterRuleName::from(str_of(rule, "Name")?.to_lowercase().as_str()))
                    .value(str_of(rule, "Value")?)
                    .build(),
            );
        }
        let mut config =
            s3::QueueConfiguration::builder().queue_arn(queue_arn).events(s3::Event::from(str_of(q, "Event")?));
        if !rules.is_empty() {
            config = config.filter(
                s3::NotificationConfigurationFilter::builder()
                    .key(s3::S3KeyFilter::builder().set_filter_rules(Some(rules)).build())
                    .build(),
            );
        }
        notifications = notifications.queue_configurations(config.build()?);
    }
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(name)
        .notification_configuration(notifications.build())
        .send()
        .await?;
    Ok(())
}
