//! AWS plumbing shared by the distributed adapters: the SDK configuration from `[aws]` (endpoint and static
//! credentials for DynamoDB Local, the default chain for real AWS), the table names, and the one place that
//! defines and creates the DynamoDB tables (key schema, stream, TTL) so that the event store, the revenue view
//! and the bridge agree on them.

use std::time::Duration;

use anyhow::{anyhow, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use crate::config::{AwsSettings, DynamoSettings};

/// The SDK configuration for every AWS client (DynamoDB, DynamoDB Streams, Kinesis).
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(settings.region.clone()));
    if !settings.endpoint_url.is_empty() {
        loader = loader.endpoint_url(&settings.endpoint_url);
    }
    if !settings.access_key_id.is_empty() {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            None,
            None,
            "orderflow-config",
        ));
    }
    loader.load().await
}

/// The DynamoDB tables of one deployment, all named `<prefix>_<role>`.
#[derive(Debug, Clone)]
pub struct Tables {
    /// (orderId S, version N); Streams NEW_IMAGE feeds the bridge.
    pub events: String,
    /// (orderId S): the latest snapshot of an order.
    pub snapshots: String,
    /// (scope S): idempotency keys, TTL attribute `expiresAt`.
    pub idempotency: String,
    /// (id S): bridge shard checkpoints (and, later, leases), and the revenue view's active table generation.
    pub checkpoints: String,
    /// (month S, dayCurrency S): daily revenue totals (generation 0; see [`Tables::revenue_generation`]).
    pub revenue_daily: String,
    /// (orderId S): per order, the currency and the last version the revenue view applied (generation 0).
    pub revenue_orders: String,
    /// (id S): events a projection parked (see `views::parked`).
    pub parked: String,
    /// (day S, id S): the audit log of admin actions (see `audit`).
    pub audit: String,
}

impl Tables {
    pub fn new(prefix: &str) -> Self {
        let name = |role: &str| format!("{prefix}_{role}");
        Self {
            events: name("events"),
            snapshots: name("snapshots"),
            idempotency: name("idempotency"),
            checkpoints: name("checkpoints"),
            revenue_daily: name("revenue_daily"),
            revenue_orders: name("revenue_orders"),
            parked: name("parked"),
            audit: name("audit"),
        }
    }
}

/// The revenue view's two tables of one generation (a rebuild fills a new generation, then switches to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueTableNames {
    pub daily: String,
    pub orders: String,
}

impl Tables {
    /// Generation 0 is `<prefix>_revenue_daily` / `<prefix>_revenue_orders`; generation n appends `_<n>`.
    pub fn revenue_generation(&self, generation: u64) -> RevenueTableNames {
        match generation {
            0 => RevenueTableNames { daily: self.revenue_daily.clone(), orders: self.revenue_orders.clone() },
            n => RevenueTableNames {
                daily: format!("{}_{n}", self.revenue_daily),
                orders: format!("{}_{n}", self.revenue_orders),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Table definitions and creation, shared by the event store and the revenue view (and read by the bridge).
// ---------------------------------------------------------------------------------------------------------

/// The attempt and operation timeouts of a DynamoDB client built without [`dynamo_client`] (the adapter tests
/// build their own): generous, for a DynamoDB Local that a parallel test suite keeps busy. The service itself
/// takes its timeouts from `[dynamodb]` (see [`dynamo_client`]).
const FALLBACK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FALLBACK_OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `ensure_tables` waits for a new table to become ACTIVE (seconds on AWS, instant on DynamoDB Local).
const ACTIVE_WAIT: Duration = Duration::from_secs(120);

/// The service's DynamoDB client: the SDK configuration plus the attempt and operation timeouts of `[dynamodb]`.
///
/// The SDK sets no operation timeout by default, and a hung DynamoDB (a frozen process, a black-holed
/// connection) must become a prompt 503 with `Retry-After`, not a command that waits as long as the outage. One
/// attempt may take `attempt_timeout_ms`; the SDK retries a timed-out attempt (standard retry mode) until
/// `operation_timeout_ms` is spent, so a command that meets a hung DynamoDB answers 503 after at most about one
/// operation timeout. The defaults (1 s / 3 s) are far above DynamoDB's own latency (milliseconds);
/// `config/distributed.toml` gives DynamoDB Local, which takes seconds under a burst on a small machine, more.
///
/// A write retried after a timed-out attempt is safe: every write is conditional, a transaction carries the
/// SDK's idempotency token (one per operation, the same for each of its attempts), and a plain put recognises
/// its own earlier attempt (`store::dynamo`, `own_earlier_attempt`). A write whose whole operation timed out
/// may still land later (the request can sit in a frozen server's socket): the command answers 503 with
/// `outcome: "unknown"` (`store::dynamo`, "Did a failed append land?"), the order actor reloads its state before
/// the next command, and a client retry with the same `Idempotency-Key` gets the first response, since the
/// idempotency record is written in the same transaction as the events.
pub fn dynamo_client(sdk: &SdkConfig, settings: &DynamoSettings) -> aws_sdk_dynamodb::Client {
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_millis(settings.attempt_timeout_ms))
        .operation_timeout(Duration::from_millis(settings.operation_timeout_ms))
        .build();
    let base = aws_sdk_dynamodb::Client::new(sdk);
    with_timeouts(base.config(), timeouts)
}

/// The client with attempt and operation timeouts, where its configuration has none of its own (a client from
/// [`dynamo_client`] keeps the configured ones).
pub fn dynamo_client_with_timeouts(client: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
    let wanted = TimeoutConfig::builder()
        .operation_attempt_timeout(FALLBACK_ATTEMPT_TIMEOUT)
        .operation_timeout(FALLBACK_OPERATION_TIMEOUT)
        .build();
    with_timeouts(client.config(), wanted)
}

/// `config` with `wanted` filled into the timeouts it leaves unset.
fn with_timeouts(config: &aws_sdk_dynamodb::Config, wanted: TimeoutConfig) -> aws_sdk_dynamodb::Client {
    let timeouts = match config.timeout_config() {
        // Keep what the configuration says (connect timeout, …); fill in only what it leaves unset.
        Some(current) => current.clone().to_builder().take_unset_from(wanted.into_builder()).build(),
        None => wanted,
    };
    aws_sdk_dynamodb::Client::from_conf(config.to_builder().timeout_config(timeouts).build())
}

/// A SDK error with its whole chain of causes (the plain `Display` of `SdkError` says only "service error").
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    DisplayErrorContext(error).to_string()
}

/// One table's key schema and extras.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub hash_key: (&'static str, ScalarAttributeType),
    pub range_key: Option<(&'static str, ScalarAttributeType)>,
    /// A stream on the table, with this view type.
    pub stream: Option<StreamViewType>,
    /// The attribute (epoch seconds) that DynamoDB's TTL deletes items by.
    pub ttl_attribute: Option<&'static str>,
}

impl TableSpec {
    fn new(name: &str, hash_key: &'static str, kind: ScalarAttributeType) -> Self {
        Self { name: name.to_owned(), hash_key: (hash_key, kind), range_key: None, stream: None, ttl_attribute: None }
    }
}

impl Tables {
    /// The write model's tables: events (+ stream), snapshots, idempotency (+ TTL) and the bridge's checkpoints.
    pub fn write_model_specs(&self) -> Vec<TableSpec> {
        use ScalarAttributeType::{N, S};
        vec![
            TableSpec {
                range_key: Some(("version", N)),
                stream: Some(StreamViewType::NewImage),
                ..TableSpec::new(&self.events, "orderId", S)
            },
            TableSpec::new(&self.snapshots, "orderId", S),
            TableSpec { ttl_attribute: Some("expiresAt"), ..TableSpec::new(&self.idempotency, "scope", S) },
            self.checkpoints_spec(),
            TableSpec::new(&self.parked, "id", S),
            TableSpec { range_key: Some(("id", S)), ..TableSpec::new(&self.audit, "day", S) },
        ]
    }

    /// The checkpoints table (id S), shared by the bridge and the revenue view's generation pointer.
    pub fn checkpoints_spec(&self) -> TableSpec {
        TableSpec::new(&self.checkpoints, "id", ScalarAttributeType::S)
    }

    /// The revenue view's tables of one generation: the per-order dedupe record and the daily totals.
    pub fn revenue_specs(&self, generation: u64) -> Vec<TableSpec> {
        use ScalarAttributeType::S;
        let names = self.revenue_generation(generation);
        vec![
            TableSpec::new(&names.orders, "orderId", S),
            TableSpec { range_key: Some(("dayCurrency", S)), ..TableSpec::new(&names.daily, "month", S) },
        ]
    }
}

/// Creates each table that does not exist yet (on-demand billing) and waits until all are ACTIVE, with their
/// stream and TTL switched on. Safe to run from several instances at once: a table someone else is creating
/// (`ResourceInUseException`) is simply waited for.
pub async fn ensure_tables(client: &aws_sdk_dynamodb::Client, specs: &[TableSpec]) -> anyhow::Result<()> {
    for spec in specs {
        create_table(client, spec).await?;
    }
    for spec in specs {
        let description = wait_active(client, &spec.name).await?;
        if let Some(view_type) = &spec.stream {
            let enabled = description.stream_specification().is_some_and(|s| s.stream_enabled());
            if !enabled {
                // A table made by hand without its stream would leave the bridge with nothing to read.
                tracing::info!(table = %spec.name, "enabling the table's stream");
                client
                    .update_table()
                    .table_name(&spec.name)
                    .stream_specification(stream_spec(view_type.clone())?)
                    .send()
                    .await
                    .map_err(|e| anyhow!("enabling the stream of {}: {}", spec.name, error_text(&e)))?;
                wait_active(client, &spec.name).await?;
            }
        }
        if let Some(attribute) = spec.ttl_attribute {
            enable_ttl(client, &spec.name, attribute).await?;
        }
    }
    Ok(())
}

fn stream_spec(view_type: StreamViewType) -> anyhow::Result<StreamSpecification> {
    Ok(StreamSpecification::builder().stream_enabled(true).stream_view_type(view_type).build()?)
}

async fn create_table(client: &aws_sdk_dynamodb::Client, spec: &TableSpec) -> anyhow::Result<()> {
    let mut request = client.create_table().table_name(&spec.name).billing_mode(BillingMode::PayPerRequest);
    let keys =
        std::iter::once((&spec.hash_key, KeyType::Hash)).chain(spec.range_key.as_ref().map(|k| (k, KeyType::Range)));
    for ((name, kind), key_type) in keys {
        request = request
            .key_schema(KeySchemaElement::builder().attribute_name(*name).key_type(key_type).build()?)
            .attribute_definitions(
                AttributeDefinition::builder().attribute_name(*name).attribute_type(kind.clone()).build()?,
            );
    }
    if let Some(view_type) = &spec.stream {
        request = request.stream_specification(stream_spec(view_type.clone())?);
    }
    match request.send().await {
        Ok(_) => {
            tracing::info!(table = %spec.name, "created DynamoDB table");
            Ok(())
        }
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => Ok(()),
        Err(e) => Err(anyhow!("creating table {}: {}", spec.name, error_text(&e))),
    }
}

async fn wait_active(client: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<TableDescription> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WAIT;
    loop {
        let output = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| anyhow!("describing table {table}: {}", error_text(&e)))?;
        if let Some(description) = output.table
            && description.table_status() == Some(&TableStatus::Active)
        {
            return Ok(description);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("table {table} did not become ACTIVE within {ACTIVE_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes each table that exists and waits until all are gone (deletion is asynchronous on AWS, instant on
/// DynamoDB Local), so a table of the same name could be created again at once.
pub async fn delete_tables(client: &aws_sdk_dynamodb::Client, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        match client.delete_table().table_name(*name).send().await {
            Ok(_) => tracing::info!(table = %name, "deleting DynamoDB table"),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
            // Already being deleted (the tables deleted here are ACTIVE ones, never ones still being created).
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(anyhow!("deleting table {name}: {}", error_text(&e))),
        }
    }
    let deadline = tokio::time::Instant::now() + ACTIVE_WAIT;
    for name in names {
        loop {
            match client.describe_table().table_name(*name).send().await {
                Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => break,
                Err(e) => return Err(anyhow!("describing table {name}: {}", error_text(&e))),
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    bail!("table {name} was not deleted within {ACTIVE_WAIT:?}")
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    Ok(())
}

async fn enable_ttl(client: &aws_sdk_dynamodb::Client, table: &str, attribute: &str) -> anyhow::Result<()> {
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| anyhow!("describing the TTL of {table}: {}", error_text(&e)))?;
    let status = current.time_to_live_description().and_then(|d| d.time_to_live_status());
    if matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)) {
        return Ok(());
    }
    let result = client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(TimeToLiveSpecification::builder().enabled(true).attribute_name(attribute).build()?)
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        // Another instance switched it on between our describe and update: AWS answers "already enabled".
        Err(e) if error_text(&e).contains("already enabled") => Ok(()),
        Err(e) => Err(anyhow!("enabling TTL on {table}: {}", error_text(&e))),
    }
}

/// Reading attributes of an item, with errors that name the attribute (for corrupt or foreign items).
pub mod attr {
    use std::collections::HashMap;
    use std::str::FromStr;

    use aws_sdk_dynamodb::types::AttributeValue;

    pub type Item = HashMap<String, AttributeValue>;

    /// A string attribute.
    pub fn s<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
        match item.get(name) {
            Some(AttributeValue::S(value)) => Ok(value),
            Some(_) => Err(format!("attribute {name} is not a string")),
            None => Err(format!("attribute {name} is missing")),
        }
    }

    /// An optional string attribute (absent or NULL is `None`).
    pub fn opt_s(item: &Item, name: &str) -> Result<Option<String>, String> {
        match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value.clone())),
            Some(_) => Err(format!("attribute {name} is not a string")),
        }
    }

    /// A number attribute, parsed as `T`.
    pub fn n<T: FromStr>(item: &Item, name: &str) -> Result<T, String> {
        match item.get(name) {
            Some(AttributeValue::N(value)) => {
                value.parse().map_err(|_| format!("attribute {name} is not a valid number: {value}"))
            }
            Some(_) => Err(format!("attribute {name} is not a number")),
            None => Err(format!("attribute {name} is missing")),
        }
    }

    /// A string attribute value.
    pub fn string(value: impl Into<String>) -> AttributeValue {
        AttributeValue::S(value.into())
    }

    /// A number attribute value.
    pub fn num(value: impl ToString) -> AttributeValue {
        AttributeValue::N(value.to_string())
    }
}
