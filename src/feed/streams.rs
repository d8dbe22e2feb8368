//! DynamoDB Streams as a sharded stream (`feed::shards`): the change feed of the events table that the bridge
//! (`actors::bridge`) reads, and the decoding of a stream record's NEW_IMAGE into the event it stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as ItemValue;
use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, Record, ShardIteratorType};

use super::shards::{Listed, Page, PageError, ShardStream};
use crate::store::StoredEvent;
use crate::store::dynamo::event_from_item;

/// Per-attempt and per-operation limits on Streams calls: the SDK sets none, and a hung call would stall
/// every shard behind it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// One stream of the events table (by ARN).
pub struct DynamoStream {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// The stream is gone (disabled and expired): the table's current one must be looked up again.
    gone: AtomicBool,
}

impl DynamoStream {
    /// The stream `arn`, read with `client` (see [`streams_client_with_timeouts`]).
    pub fn new(client: &aws_sdk_dynamodbstreams::Client, arn: String) -> Self {
        Self { client: client.clone(), arn, gone: AtomicBool::new(false) }
    }

    /// A call found the stream gone.
    pub fn gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ShardStream for DynamoStream {
    type Record = Record;

    async fn list(&self) -> Result<Vec<Listed>, String> {
        let mut listed = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_stream()
                .stream_arn(&self.arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| {
                    if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) {
                        self.gone.store(true, Ordering::Relaxed);
                    }
                    format!("DescribeStream {}: {}", self.arn, DisplayErrorContext(&e))
                })?;
            let Some(description) = output.stream_description() else { break };
            for shard in description.shards() {
                if let Some(id) = shard.shard_id() {
                    let parents = shard.parent_shard_id().map(str::to_owned).into_iter().collect();
                    listed.push(Listed { id: id.to_owned(), parents });
                }
            }
            match description.last_evaluated_shard_id() {
                Some(last) => start = Some(last.to_owned()),
                None => break,
            }
        }
        Ok(listed)
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<Option<String>, String> {
        let request = self.client.get_shard_iterator().stream_arn(&self.arn).shard_id(shard);
        let request = match after {
            Some(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(sequence)
            }
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match request.send().await {
            Ok(output) => Ok(output.shard_iterator().map(str::to_owned)),
            Err(e) if after.is_some() && e.as_service_error().is_some_and(|s| s.is_trimmed_data_access_exception()) => {
                // The records after the checkpoint are past the stream's 24-hour retention: they are gone for
                // good, and the oldest record still there is the best place to go on from.
                tracing::error!(
                    shard, checkpoint = ?after,
                    "records after the checkpoint expired from the stream before the bridge read them; \
                     continuing at the trim horizon"
                );
                Box::pin(self.iterator(shard, None)).await
            }
            Err(e) => Err(format!("GetShardIterator on shard {shard}: {}", DisplayErrorContext(&e))),
        }
    }

    async fn page(&self, shard: &str, iterator: &str, limit: i32) -> Result<Page<Record>, PageError> {
        match self.client.get_records().shard_iterator(iterator).limit(limit).send().await {
            Ok(output) => {
                let last_sequence = output
                    .records()
                    .iter()
                    .rev()
                    .find_map(|r| r.dynamodb().and_then(|d| d.sequence_number()))
                    .map(str::to_owned);
                let next = output.next_shard_iterator().map(str::to_owned);
                Ok(Page { records: output.records.unwrap_or_default(), last_sequence, next })
            }
            Err(e) => {
                let service = e.as_service_error();
                let message = format!("GetRecords on shard {shard}: {}", DisplayErrorContext(&e));
                // Iterators live 15 minutes: an expired one is renewed from the checkpoint, no backoff needed.
                if service.is_some_and(|s| s.is_expired_iterator_exception()) {
                    Err(PageError::Expired)
                } else if service
                    .is_some_and(|s| s.is_trimmed_data_access_exception() || s.is_resource_not_found_exception())
                {
                    Err(PageError::Gone(message))
                } else {
                    // Throttling, a server error, a timeout: the iterator is still good for the retry.
                    Err(PageError::Failed(message))
                }
            }
        }
    }
}

pub fn streams_client_with_timeouts(client: &aws_sdk_dynamodbstreams::Client) -> aws_sdk_dynamodbstreams::Client {
    use aws_sdk_dynamodbstreams::config::timeout::TimeoutConfig;
    let config = client.config();
    let wanted = TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let timeouts = match config.timeout_config() {
        Some(current) => current.clone().to_builder().take_unset_from(wanted.into_builder()).build(),
        None => wanted,
    };
    aws_sdk_dynamodbstreams::Client::from_conf(config.to_builder().timeout_config(timeouts).build())
}

/// A stream record's NEW_IMAGE as the event it stores, through the event store's own item decoder.
pub fn decode_image(image: &HashMap<String, StreamValue>) -> Result<StoredEvent, String> {
    let item = image
        .iter()
        .map(|(name, value)| Ok((name.clone(), to_item_value(value)?)))
        .collect::<Result<HashMap<_, _>, String>>()?;
    event_from_item(&item)
}

/// The Streams SDK and the DynamoDB SDK each have their own (identical) attribute value type.
fn to_item_value(value: &StreamValue) -> Result<ItemValue, String> {
    Ok(match value {
        StreamValue::S(s) => ItemValue::S(s.clone()),
        StreamValue::N(n) => ItemValue::N(n.clone()),
        StreamValue::B(b) => ItemValue::B(b.clone()),
        StreamValue::Bool(b) => ItemValue::Bool(*b),
        StreamValue::Null(n) => ItemValue::Null(*n),
        StreamValue::Ss(v) => ItemValue::Ss(v.clone()),
        StreamValue::Ns(v) => ItemValue::Ns(v.clone()),
        StreamValue::Bs(v) => ItemValue::Bs(v.clone()),
        StreamValue::L(list) => ItemValue::L(list.iter().map(to_item_value).collect::<Result<_, _>>()?),
        StreamValue::M(map) => ItemValue::M(
            map.iter().map(|(k, v)| Ok((k.clone(), to_item_value(v)?))).collect::<Result<HashMap<_, _>, String>>()?,
        ),
        other => return Err(format!("unsupported attribute value {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(payload: &str, kind: &str) -> HashMap<String, StreamValue> {
        HashMap::from([
            ("orderId".to_owned(), StreamValue::S("o-1".into())),
            ("version".to_owned(), StreamValue::N("3".into())),
            ("eventId".to_owned(), StreamValue::S("0190f5c2-7d3e-7a51-9c1e-3f2b8d4a6e01".into())),
            ("type".to_owned(), StreamValue::S(kind.into())),
            ("schemaVersion".to_owned(), StreamValue::N("1".into())),
            ("recordedAt".to_owned(), StreamValue::N("1700000000123".into())),
            ("payload".to_owned(), StreamValue::S(payload.into())),
        ])
    }

    const PAID: &str =
        r#"{"type":"PaymentConfirmed","data":{"paymentId":"pay-1","amount":2500,"paidAt":"2023-11-14T22:13:20.123Z"}}"#;

    #[test]
    fn a_new_image_decodes_to_the_stored_event() {
        let event = decode_image(&image(PAID, "PaymentConfirmed")).unwrap();
        assert_eq!(event.order_id.to_string(), "o-1");
        assert_eq!((event.version, event.schema_version, event.position), (3, 1, 0));
        assert_eq!(event.recorded_at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(event.event.type_name(), "PaymentConfirmed");
        assert_eq!(event.event_id.to_string(), "0190f5c2-7d3e-7a51-9c1e-3f2b8d4a6e01");
    }

    #[test]
    fn a_foreign_or_inconsistent_item_is_refused() {
        assert!(decode_image(&image("not json", "PaymentConfirmed")).is_err());
        assert!(decode_image(&image(PAID, "OrderShipped")).is_err());
        let mut missing = image(PAID, "PaymentConfirmed");
        missing.remove("eventId");
        assert!(decode_image(&missing).is_err());
    }

    #[test]
    fn nested_values_convert() {
        let value = StreamValue::M(HashMap::from([(
            "l".to_owned(),
            StreamValue::L(vec![StreamValue::N("1".into()), StreamValue::Bool(true), StreamValue::Null(true)]),
        )]));
        let ItemValue::M(map) = to_item_value(&value).unwrap() else { panic!("not a map") };
        assert_eq!(
            map.get("l"),
            Some(&ItemValue::L(vec![ItemValue::N("1".into()), ItemValue::Bool(true), ItemValue::Null(true)]))
        );
    }
}
