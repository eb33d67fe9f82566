//! Small helpers every DynamoDB adapter of ours uses: attribute access, the expected outcome of a
//! conditional write, the old item a failed condition returns, and the one-item read and delete every store does.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::tenancy::StoreError;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub fn req_s(item: &Item, key: &str) -> anyhow::Result<String> {
    get_s(item, key).map(str::to_owned).with_context(|| format!("stored item lacks `{key}`"))
}

/// Whether a write was refused by its condition expression (the expected outcome of a conditional write).
pub fn conditional_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(ProvideErrorMetadata::code) == Some("ConditionalCheckFailedException")
}

/// The item as it was when an update's condition failed (asked for with `ReturnValuesOnConditionCheckFailure`);
/// `None` when there was no item.
pub fn old_item<R>(e: &SdkError<UpdateItemError, R>) -> Option<Item> {
    match e.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(c) => c.item.clone(),
        _ => None,
    }
}

/// Maps an SDK failure to `StoreError::Unavailable` with what we were doing.
pub fn unavailable<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Unavailable(anyhow::Error::new(e).context(what))
}

/// The item at (`pk`, `sk`), read consistently (the tables' every key is that pair); `None` when absent.
pub async fn get_consistent(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
    what: &'static str,
) -> Result<Option<Item>, StoreError> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable(what))?;
    Ok(out.item)
}

/// Deletes the item at (`pk`, `sk`); `NotFound` when there was none.
pub async fn delete_existing(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
    what: &'static str,
) -> Result<(), StoreError> {
    let out = client
        .delete_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .condition_expression("attribute_exists(pk)")
        .send()
        .await;
    match out {
        Ok(_) => Ok(()),
        Err(e) if conditional_failed(&e) => Err(StoreError::NotFound),
        Err(e) => Err(unavailable(what)(e)),
    }
}

/// Every item a query finds, page after page: `query` is the request without its start key.
pub async fn query_all(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    what: &'static str,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = query.clone().set_exclusive_start_key(start).send().await.map_err(unavailable(what))?;
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}

/// Puts an item only where none is (`attribute_not_exists(pk)`): `true` when it was put, `false` when the
/// item was there (the expected outcome for markers of things already done).
pub async fn put_if_absent(
    put: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder,
    what: &'static str,
) -> Result<bool, StoreError> {
    match put.condition_expression("attribute_not_exists(pk)").send().await {
        Ok(_) => Ok(true),
        Err(e) if conditional_failed(&e) => Ok(false),
        Err(e) => Err(unavailable(what)(e)),
    }
}

/// Sends an update that carries its own condition: `true` when it was applied, `false` when the condition
/// refused it (the expected outcome of a compare-and-set).
pub async fn update_if(
    update: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    what: &'static str,
) -> Result<bool, StoreError> {
    match update.send().await {
        Ok(_) => Ok(true),
        Err(e) if conditional_failed(&e) => Ok(false),
        Err(e) => Err(unavailable(what)(e)),
    }
}
