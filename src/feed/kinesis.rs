//! Kinesis Data Streams, the second transport between the bridge and the projectors beside Kafka: the client
//! and stream creation. A record's data will be the same CloudEvents JSON as the Kafka value (API.md §3), its
//! partition key the orderId.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::StreamStatus;

use crate::config::{AwsSettings, KinesisSettings};

/// How long `ensure_stream` waits for a new stream to become ACTIVE.
const ACTIVE_WAIT: Duration = Duration::from_secs(60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kinesis client: the shared AWS configuration with `[kinesis] endpoint_url` over `[aws] endpoint_url`
/// (kinesalite and DynamoDB Local are two servers), and attempt and operation timeouts so a hung call becomes
/// a retry, not a stalled bridge.
pub async fn client(aws: &AwsSettings, settings: &KinesisSettings) -> aws_sdk_kinesis::Client {
    let sdk = crate::aws::sdk_config(aws).await;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&sdk).timeout_config(
        aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build(),
    );
    if !settings.endpoint_url.is_empty() {
        builder = builder.endpoint_url(&settings.endpoint_url);
    }
    aws_sdk_kinesis::Client::from_conf(builder.build())
}

/// Creates the stream with `shards` shards when it is missing and waits until it is ACTIVE; an existing stream
/// keeps its shard count (resharding is an operator's decision: readers follow it).
pub async fn ensure_stream(client: &aws_sdk_kinesis::Client, settings: &KinesisSettings) -> anyhow::Result<()> {
    let stream = &settings.stream;
    match client.create_stream().stream_name(stream).shard_count(settings.shards).send().await {
        Ok(_) => tracing::info!(%stream, shards = settings.shards, "created Kinesis stream"),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
            tracing::debug!(%stream, "Kinesis stream already exists");
        }
        Err(e) => anyhow::bail!("CreateStream {stream}: {}", DisplayErrorContext(&e)),
    }
    let deadline = Instant::now() + ACTIVE_WAIT;
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .with_context(|| format!("DescribeStreamSummary {stream}"))?;
        let status = summary.stream_description_summary().map(|d| d.stream_status().clone());
        // UPDATING (a reshard in progress) still reads and writes.
        if matches!(status, Some(StreamStatus::Active | StreamStatus::Updating)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Kinesis stream {stream} is not ACTIVE after {ACTIVE_WAIT:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kinesis sequence numbers are decimal strings of up to 128 bits and more digits than any integer type
/// holds comfortably: the longer one is the later, and equal lengths compare as text.
pub fn compare_sequence(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_by_length_then_text() {
        assert_eq!(compare_sequence("9", "10"), Ordering::Less);
        assert_eq!(
            compare_sequence("49590338271490256608559692538361571095921575989136588898", "9"),
            Ordering::Greater
        );
        assert_eq!(compare_sequence("123", "123"), Ordering::Equal);
        assert_eq!(compare_sequence("124", "123"), Ordering::Greater);
    }
}
