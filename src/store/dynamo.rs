//! The distributed event store: DynamoDB, one item per event.
//!
//! An append is **one** conditional write: every event item is put with `attribute_not_exists(orderId)` on its
//! (orderId, version) key, so two writers (two instances, a stale actor) can never both write version N; the
//! idempotency record and the snapshot ride in the same `TransactWriteItems`, so they are durable exactly when
//! the events are. A write of a single item (the common "one event, no key, no snapshot" command, or a key
//! alone) is a plain conditional `PutItem`: the same guarantee at half the write cost of a transaction.
//! Reads are strongly consistent and follow `LastEvaluatedKey`, so a stream longer than a 1 MB page loads
//! whole. The table's stream (NEW_IMAGE) is the change feed the bridge forwards to Kafka.
//!
//! # Item formats
//!
//! The bridge decodes event items with [`event_from_item`]; these are the exact attributes.
//!
//! **events** `<prefix>_events`, key (orderId S HASH, version N RANGE), Streams NEW_IMAGE:
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `orderId` | S | the order id |
//! | `version` | N | 1, 2, … within the order |
//! | `eventId` | S | a UUIDv7, hyphenated |
//! | `type` | S | the bare event type: `OrderPlaced`, `PaymentConfirmed`, `OrderShipped`, `OrderCancelled` |
//! | `schemaVersion` | N | the event type's schema version when written (see [`codec`]; read back upcast) |
//! | `recordedAt` | N | when the store wrote it, epoch milliseconds |
//! | `payload` | S | `serde_json` of [`OrderEvent`]: `{"type":"OrderPlaced","data":{…}}` |
//!
//! **snapshots** `<prefix>_snapshots`, key (orderId S): `orderId` S, `version` N, `state` S (JSON of [`Order`]).
//!
//! **idempotency** `<prefix>_idempotency`, key (scope S), TTL on `expiresAt`: `scope` S, `requestHash` S,
//! `status` N, `body` S, `etag` S (absent when none), `location` S (absent when none), `createdAt` N (epoch ms),
//! `expiresAt` N (epoch seconds). TTL deletes lazily (up to days late), so readers and the conditional put treat
//! `expiresAt < now` as gone.
//!
//! # Rebuild source
//!
//! A view rebuild reads the whole events table with a paginated, strongly consistent `Scan` (the
//! [`RebuildSource`] impl). DynamoDB returns one partition's items together and in sort-key order, so an order's
//! events come in version order, also across pages (checked against DynamoDB Local). The source does not rely
//! on that alone: it sorts each page by (orderId, version), and an order cut off at a page end is completed
//! there with a `Query` of its remaining versions, its already delivered versions skipped on the next page.
//! So every delivery holds, for each order, versions that follow what was delivered of it before.
//!
//! # Did a failed append land?
//!
//! A failed append is one of two kinds, and the command's 503 says which (`outcome` in docs/api.md §2):
//! `AppendError::Unavailable` when DynamoDB surely did not apply it, `AppendError::Unknown` when it may have.
//! The final error of a call does not tell: the SDK retries, so a call can end in "connection refused" after an
//! earlier attempt of it timed out with its request already on the wire (a frozen DynamoDB reads the request
//! later and applies it). So every write call carries a [`Delivery`] interceptor that looks at each attempt
//! that got as far as sending: an answer of 4xx (a failed condition, a cancelled transaction, throttling, a
//! validation error) means nothing was applied; an error before any byte left (the connection refused, the
//! host unreachable) too; anything else (a timeout, a connection cut after sending, a 5xx, which DynamoDB
//! documents as "may have succeeded") may have applied it. One such attempt makes the whole append `Unknown`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use uuid::Uuid;

use serde::{Deserialize, Serialize};

use super::{
    AppendError, AppendRequest, EventImport, EventStore, IdempotencyRecord, ImportError, Imported, LoadedStream,
    RawChunk, RawEvent, RebuildChunk, RebuildSource, StoreUnavailable, StoredEvent, StoredResponse, codec,
};
use crate::aws::attr::{self, Item, num, string};
use crate::aws::{Tables, dynamo_client_with_timeouts, ensure_tables, error_text};
use crate::config::StoreSettings;
use crate::domain::{Order, OrderId};

/// A DynamoDB transaction holds at most 100 items: the events, the idempotency record and the snapshot of one
/// append together. A command makes one event today, so this only guards against misuse.
pub const MAX_ITEMS_PER_APPEND: usize = 100;

/// Retries of a transaction cancelled only by a transient reason (a concurrent transaction on one of its
/// items, throttling). Safe: a cancelled transaction wrote nothing, and the retry is conditional again.
const TRANSIENT_RETRIES: u32 = 3;

/// Decodes one event item (from the events table, or a stream record's NEW_IMAGE converted to DynamoDB
/// attribute values). `position` is 0: DynamoDB has no global log.
pub fn event_from_item(item: &HashMap<String, AttributeValue>) -> Result<StoredEvent, String> {
    raw_from_item(item)?.decode().map_err(|e| format!("attribute payload: {e}"))
}

/// One event item as written (see [`RawEvent`]).
pub fn raw_from_item(item: &HashMap<String, AttributeValue>) -> Result<RawEvent, String> {
    let recorded_at: i64 = attr::n(item, "recordedAt")?;
    Ok(RawEvent {
        event_id: Uuid::parse_str(attr::s(item, "eventId")?).map_err(|e| format!("attribute eventId: {e}"))?,
        order_id: OrderId::parse("orderId", attr::s(item, "orderId")?)
            .map_err(|e| format!("attribute orderId: {}", e.message))?,
        version: attr::n(item, "version")?,
        position: 0,
        type_name: attr::s(item, "type")?.to_owned(),
        schema_version: attr::n(item, "schemaVersion")?,
        recorded_at: DateTime::from_timestamp_millis(recorded_at)
            .ok_or_else(|| format!("attribute recordedAt is out of range: {recorded_at}"))?,
        traceparent: attr::opt_s(item, "traceparent")?,
        payload: attr::s(item, "payload")?.to_owned(),
    })
}

fn event_item(event: &StoredEvent) -> Result<Item, String> {
    Ok(raw_item(&RawEvent::encode(event).map_err(|e| e.to_string())?))
}

/// The item of an event as written.
fn raw_item(event: &RawEvent) -> Item {
    let mut item = HashMap::from([
        ("orderId".to_owned(), string(event.order_id.as_str())),
        ("version".to_owned(), num(event.version)),
        ("eventId".to_owned(), string(event.event_id.to_string())),
        ("type".to_owned(), string(&event.type_name)),
        ("schemaVersion".to_owned(), num(event.schema_version)),
        ("recordedAt".to_owned(), num(event.recorded_at.timestamp_millis())),
        ("payload".to_owned(), string(&event.payload)),
    ]);
    if let Some(traceparent) = &event.traceparent {
        item.insert("traceparent".to_owned(), string(traceparent));
    }
    item
}

/// The attribute that keeps the Streams bridge from publishing an event item: `publish` = BOOL false, set by
/// an import or migration that was not asked to publish (`crate::lifecycle`). Items without it (every item a
/// command writes) are published.
pub const PUBLISH_ATTRIBUTE: &str = "publish";

/// Orders an import writes at once.
const IMPORT_CONCURRENCY: usize = 32;

pub struct DynamoEventStore {
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
    /// As in the SQLite store: snapshots are only kept when the deployment takes them.
    snapshot_every: u64,
    /// How long an idempotency record stays live, in seconds (the TTL attribute is in epoch seconds).
    idempotency_ttl_secs: i64,
}

impl DynamoEventStore {
    /// Wraps the client (adding timeouts where its configuration has none) and, when `create_tables`, creates
    /// the write model's tables (events, snapshots, idempotency, checkpoints) that are missing.
    pub async fn open(
        client: aws_sdk_dynamodb::Client,
        tables: Tables,
        settings: &StoreSettings,
        create_tables: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let client = dynamo_client_with_timeouts(&client);
        if create_tables {
            ensure_tables(&client, &tables.write_model_specs()).await?;
        }
        Ok(Arc::new(Self {
            client,
            tables,
            snapshot_every: settings.snapshot_every,
            idempotency_ttl_secs: i64::try_from(settings.idempotency_ttl_hours.saturating_mul(3600))
                .unwrap_or(i64::MAX),
        }))
    }

    /// Events of one order with a version above `after` (all of them for 0), in version order, every page.
    async fn query_events(&self, order_id: &OrderId, after: u64) -> Result<Vec<StoredEvent>, StoreUnavailable> {
        let raw = self.query_raw(order_id, after).await?;
        raw.iter().map(|e| e.decode().map_err(|e| corrupt(order_id, &e.to_string()))).collect()
    }

    /// [`Self::query_events`] as written.
    async fn query_raw(&self, order_id: &OrderId, after: u64) -> Result<Vec<RawEvent>, StoreUnavailable> {
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.events)
                .key_condition_expression("orderId = :id AND version > :after")
                .expression_attribute_values(":id", string(order_id.as_str()))
                .expression_attribute_values(":after", num(after))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreUnavailable(format!("query {}: {}", self.tables.events, error_text(&e))))?;
            for item in page.items.unwrap_or_default() {
                events.push(raw_from_item(&item).map_err(|e| corrupt(order_id, &e))?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(events),
            }
        }
    }

    async fn load_snapshot(&self, order_id: &OrderId) -> Result<Option<Order>, StoreUnavailable> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.snapshots)
            .key("orderId", string(order_id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreUnavailable(format!("get {}: {}", self.tables.snapshots, error_text(&e))))?;
        let Some(item) = output.item else { return Ok(None) };
        let decode = || -> Result<Order, String> {
            let version: u64 = attr::n(&item, "version")?;
            let order: Order = serde_json::from_str(attr::s(&item, "state")?).map_err(|e| format!("state: {e}"))?;
            if order.version != version {
                return Err(format!("version {version} but the state is at {}", order.version));
            }
            Ok(order)
        };
        decode().map(Some).map_err(|e| StoreUnavailable(format!("corrupt snapshot of {order_id}: {e}")))
    }

    /// The items of one append, each tagged with what it is, so a cancellation reason (by index) can be
    /// told apart: a taken version, a taken idempotency key.
    fn writes(
        &self,
        request: &AppendRequest,
        events: &[StoredEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<Write>, String> {
        let mut writes = Vec::with_capacity(events.len() + 2);
        for event in events {
            writes.push(Write {
                kind: Kind::Event,
                table: self.tables.events.clone(),
                item: event_item(event)?,
                condition: Some(Condition {
                    expression: "attribute_not_exists(orderId)",
                    names: HashMap::new(),
                    values: HashMap::new(),
                }),
            });
        }
        if let Some(record) = &request.idempotency {
            let r = &record.response;
            let mut item = HashMap::from([
                ("scope".to_owned(), string(&record.scope)),
                ("requestHash".to_owned(), string(&record.request_hash)),
                ("status".to_owned(), num(r.status)),
                ("body".to_owned(), string(&r.body)),
                ("createdAt".to_owned(), num(now.timestamp_millis())),
                ("expiresAt".to_owned(), num(now.timestamp().saturating_add(self.idempotency_ttl_secs))),
            ]);
            if let Some(etag) = &r.etag {
                item.insert("etag".to_owned(), string(etag));
            }
            if let Some(location) = &r.location {
                item.insert("location".to_owned(), string(location));
            }
            writes.push(Write {
                kind: Kind::Idempotency,
                table: self.tables.idempotency.clone(),
                item,
                // A live record with this key wins; an expired one that TTL has not deleted yet is replaced.
                condition: Some(Condition {
                    expression: "attribute_not_exists(#s) OR #e < :now",
                    names: HashMap::from([
                        ("#s".to_owned(), "scope".to_owned()),
                        ("#e".to_owned(), "expiresAt".to_owned()),
                    ]),
                    values: HashMap::from([(":now".to_owned(), num(now.timestamp()))]),
                }),
            });
        }
        if let Some(snapshot) = request.snapshot.as_ref().filter(|_| self.snapshot_every > 0) {
            // Unconditional: it commits only together with the (conditional) events that lead to it.
            let state = serde_json::to_string(snapshot).map_err(|e| e.to_string())?;
            writes.push(Write {
                kind: Kind::Snapshot,
                table: self.tables.snapshots.clone(),
                item: HashMap::from([
                    ("orderId".to_owned(), string(request.order_id.as_str())),
                    ("version".to_owned(), num(snapshot.version)),
                    ("state".to_owned(), string(state)),
                ]),
                condition: None,
            });
        }
        Ok(writes)
    }

    /// One conditional `PutItem`.
    async fn put_one(&self, write: &Write, delivery: &Delivery) -> Outcome {
        let mut request = self.client.put_item().table_name(&write.table).set_item(Some(write.item.clone()));
        if let Some(c) = &write.condition {
            request = request
                .condition_expression(c.expression)
                .set_expression_attribute_names((!c.names.is_empty()).then(|| c.names.clone()))
                .set_expression_attribute_values((!c.values.is_empty()).then(|| c.values.clone()))
                // The item that failed the condition comes back with the error, for `own_earlier_attempt`.
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        }
        match request.customize().interceptor(delivery.clone()).send().await {
            Ok(_) => Outcome::Done,
            Err(SdkError::ServiceError(e)) => match e.err() {
                PutItemError::ConditionalCheckFailedException(failed) if own_earlier_attempt(write, failed.item()) => {
                    Outcome::Done
                }
                PutItemError::ConditionalCheckFailedException(_) => Outcome::Failed(taken(write.kind)),
                PutItemError::TransactionConflictException(_) => Outcome::Transient("transaction conflict".into()),
                _ => Outcome::Failed(delivery.failed(format!("put {}: {}", write.table, error_text(e.err())))),
            },
            Err(e) => Outcome::Failed(delivery.failed(format!("put {}: {}", write.table, error_text(&e)))),
        }
    }

    /// One `TransactWriteItems` of all the writes.
    async fn transact(&self, writes: &[Write], delivery: &Delivery) -> Outcome {
        let items = match writes.iter().map(Write::transact_item).collect::<Result<Vec<_>, _>>() {
            Ok(items) => items,
            Err(e) => return Outcome::Failed(AppendError::Unavailable(format!("building the transaction: {e}"))),
        };
        let request = self.client.transact_write_items().set_transact_items(Some(items));
        match request.customize().interceptor(delivery.clone()).send().await {
            Ok(_) => Outcome::Done,
            Err(SdkError::ServiceError(e)) => match e.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    classify(writes, cancelled.cancellation_reasons())
                }
                other => Outcome::Failed(delivery.failed(format!("transaction: {}", error_text(other)))),
            },
            Err(e) => Outcome::Failed(delivery.failed(format!("transaction: {}", error_text(&e)))),
        }
    }
}

/// Watches the attempts of the write calls of one append (see "Did a failed append land?" above): set as an
/// operation interceptor on each call, it records whether any attempt that sent its request may have been
/// applied by DynamoDB.
#[derive(Debug, Clone, Default)]
struct Delivery {
    /// The current attempt got as far as sending its request.
    sending: Arc<AtomicBool>,
    /// Some attempt may have been applied.
    maybe_applied: Arc<AtomicBool>,
}

impl Delivery {
    /// The error of an append that failed: unknown if an attempt may have landed, else surely not applied.
    fn failed(&self, cause: String) -> AppendError {
        if self.maybe_applied.load(Ordering::SeqCst) {
            AppendError::Unknown(cause)
        } else {
            AppendError::Unavailable(cause)
        }
    }
}

impl Intercept for Delivery {
    fn name(&self) -> &'static str {
        "orderflow.append_delivery"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.sending.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.sending.swap(false, Ordering::SeqCst) {
            let status = context.response().map(|r| r.status().as_u16());
            let not_connected = match context.output_or_error() {
                Some(Err(e)) => e.as_connector_error().is_some_and(|e| refused_before_sending(e)),
                _ => false,
            };
            if attempt_may_have_applied(status, not_connected) {
                self.maybe_applied.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

/// Whether an attempt that sent its request may have been applied: it was unless DynamoDB answered 4xx (a
/// refusal) or the connection failed before the request left.
fn attempt_may_have_applied(status: Option<u16>, not_connected: bool) -> bool {
    match status {
        Some(status) => !(400..500).contains(&status),
        None => !not_connected,
    }
}

/// True for a connection that was never made (so no request left): refused, or no route to the host.
fn refused_before_sending(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            );
        }
        next = e.source();
    }
    false
}

impl DynamoEventStore {
    /// Writes one live idempotency record as it was (its `createdAt`, and its expiry counted from it) unless
    /// the key is taken; `false` when it was.
    pub async fn import_idempotency(
        &self,
        record: &IdempotencyRecord,
        created_at_ms: i64,
    ) -> Result<bool, StoreUnavailable> {
        let created = DateTime::from_timestamp_millis(created_at_ms)
            .ok_or_else(|| StoreUnavailable(format!("idempotency record {}: bad createdAt", record.scope)))?;
        let request = AppendRequest {
            order_id: OrderId::generate(),
            expected_version: 0,
            events: Vec::new(),
            snapshot: None,
            idempotency: Some(record.clone()),
            traceparent: None,
        };
        let mut writes = self.writes(&request, &[], created).map_err(StoreUnavailable)?;
        for write in &mut writes {
            // Only where the key is free: a live record there is the target's own, an older one is left alone too.
            write.condition = Some(Condition {
                expression: "attribute_not_exists(#s)",
                names: HashMap::from([("#s".to_owned(), "scope".to_owned())]),
                values: HashMap::new(),
            });
        }
        let Some(write) = writes.first() else { return Ok(false) };
        match self.put_one(write, &Delivery::default()).await {
            Outcome::Done => Ok(true),
            Outcome::Failed(AppendError::IdempotencyKeyTaken) => Ok(false),
            Outcome::Failed(e) => Err(StoreUnavailable(e.to_string())),
            Outcome::Transient(reason) => Err(StoreUnavailable(reason)),
        }
    }

    /// One order's events that are not there yet, in version order, one conditional `PutItem` each.
    async fn import_run(&self, run: &[RawEvent], publish: bool) -> Result<Imported, ImportError> {
        let mut done = Imported::default();
        for event in run {
            let mut item = raw_item(event);
            if !publish {
                item.insert(PUBLISH_ATTRIBUTE.to_owned(), AttributeValue::Bool(false));
            }
            let write = Write {
                kind: Kind::Event,
                table: self.tables.events.clone(),
                item,
                condition: Some(Condition {
                    expression: "attribute_not_exists(orderId)",
                    names: HashMap::new(),
                    values: HashMap::new(),
                }),
            };
            let mut attempt = 0;
            loop {
                match self.put_one(&write, &Delivery::default()).await {
                    Outcome::Done => done.written += 1,
                    Outcome::Failed(AppendError::Conflict) => {
                        // Another writer got there since the check: what is there decides.
                        let there = self.query_raw(&event.order_id, event.version - 1).await?;
                        match there.first().filter(|e| e.version == event.version) {
                            Some(existing) if existing.same_as(event) => done.skipped += 1,
                            Some(existing) => return Err(super::sqlite::different(event, existing)),
                            None => {
                                return Err(StoreUnavailable(format!(
                                    "order {} version {}: the conditional put failed, yet nothing is there",
                                    event.order_id, event.version
                                ))
                                .into());
                            }
                        }
                    }
                    Outcome::Failed(e) => return Err(StoreUnavailable(e.to_string()).into()),
                    Outcome::Transient(reason) if attempt >= TRANSIENT_RETRIES => {
                        return Err(StoreUnavailable(format!("import of {}: {reason}", event.order_id)).into());
                    }
                    Outcome::Transient(_) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(20 * (1 << attempt))).await;
                        continue;
                    }
                }
                break;
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl EventImport for DynamoEventStore {
    async fn read_raw(&self, cursor: Option<&str>, limit: usize) -> Result<RawChunk, StoreUnavailable> {
        self.scan_raw(cursor, limit).await
    }

    /// First reads which of the events are there already, and the version before each run (`BatchGetItem`,
    /// 100 keys a call): those there are compared and skipped, so a run that starts again after a crash costs
    /// reads, not failed writes. The rest of each run is written in version order, one conditional `PutItem` an
    /// event (cheaper than a transaction, and an order cut short by a crash is a prefix of its history, which
    /// the next run completes), up to [`IMPORT_CONCURRENCY`] orders at once. The condition still decides should
    /// another writer get there in between.
    async fn import(&self, runs: &[Vec<RawEvent>], publish: bool) -> Result<Imported, ImportError> {
        // Every event's key, and the version before each run (which must be there).
        let before = runs.iter().filter_map(|run| run.first()).filter(|e| e.version > 1);
        let keys: Vec<(&OrderId, u64)> = runs
            .iter()
            .flatten()
            .map(|e| (&e.order_id, e.version))
            .chain(before.map(|e| (&e.order_id, e.version - 1)))
            .collect();
        let reads: Vec<_> = keys.chunks(100).map(|chunk| self.existing(chunk)).collect();
        let mut there: HashMap<(String, u64), RawEvent> = HashMap::new();
        let mut found = futures_util::stream::iter(reads).buffer_unordered(IMPORT_CONCURRENCY);
        while let Some(events) = found.next().await {
            there.extend(events?.into_iter().map(|e| ((e.order_id.as_str().to_owned(), e.version), e)));
        }
        let mut done = Imported::default();
        let mut pending_runs = Vec::with_capacity(runs.len());
        for run in runs {
            if let Some(first) = run.first().filter(|e| e.version > 1)
                && !there.contains_key(&(first.order_id.as_str().to_owned(), first.version - 1))
            {
                return Err(ImportError::Gap { order_id: first.order_id.clone(), first: first.version });
            }
            let mut pending = Vec::new();
            for event in run {
                match there.get(&(event.order_id.as_str().to_owned(), event.version)) {
                    Some(existing) if existing.same_as(event) => done.skipped += 1,
                    Some(existing) => return Err(super::sqlite::different(event, existing)),
                    None => pending.push(event.clone()),
                }
            }
            if !pending.is_empty() {
                pending_runs.push(pending);
            }
        }
        // The futures made up front (lazy until polled): a closure inside the stream would not be `Send` here.
        let writes: Vec<_> = pending_runs.iter().map(|run| self.import_run(run, publish)).collect();
        let mut results = futures_util::stream::iter(writes).buffer_unordered(IMPORT_CONCURRENCY);
        let mut first_error = None;
        while let Some(result) = results.next().await {
            match result {
                Ok(imported) => done += imported,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(done), Err)
    }
}

impl DynamoEventStore {
    /// The events among these keys (at most 100) that are in the table, read consistently; keys DynamoDB
    /// leaves unprocessed (throttling, the 16 MB limit) are asked again.
    async fn existing(&self, keys: &[(&OrderId, u64)]) -> Result<Vec<RawEvent>, StoreUnavailable> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let table = &self.tables.events;
        let mut request = keys
            .iter()
            .map(|(id, version)| {
                HashMap::from([("orderId".to_owned(), string(id.as_str())), ("version".to_owned(), num(*version))])
            })
            .collect::<Vec<_>>();
        let mut events = Vec::new();
        let mut attempt = 0u32;
        while !request.is_empty() {
            let wanted = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut request)))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreUnavailable(format!("building a read of {table}: {e}")))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(table, wanted)
                .send()
                .await
                .map_err(|e| StoreUnavailable(format!("batch get {table}: {}", error_text(&e))))?;
            for item in output.responses.and_then(|mut r| r.remove(table)).unwrap_or_default() {
                events
                    .push(raw_from_item(&item).map_err(|e| StoreUnavailable(format!("corrupt item in {table}: {e}")))?);
            }
            if let Some(left) = output.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                request = left.keys;
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * (1 << attempt.min(6)))).await;
            }
        }
        Ok(events)
    }
}

/// What an item of an append is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    Idempotency,
    Snapshot,
}

struct Condition {
    expression: &'static str,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

struct Write {
    kind: Kind,
    table: String,
    item: Item,
    condition: Option<Condition>,
}

impl Write {
    fn transact_item(&self) -> Result<TransactWriteItem, aws_sdk_dynamodb::error::BuildError> {
        let mut put = Put::builder().table_name(&self.table).set_item(Some(self.item.clone()));
        if let Some(c) = &self.condition {
            put = put
                .condition_expression(c.expression)
                .set_expression_attribute_names((!c.names.is_empty()).then(|| c.names.clone()))
                .set_expression_attribute_values((!c.values.is_empty()).then(|| c.values.clone()));
        }
        Ok(TransactWriteItem::builder().put(put.build()?).build())
    }
}

enum Outcome {
    Done,
    /// Cancelled for a passing reason; nothing was written.
    Transient(String),
    Failed(AppendError),
}

/// True when the item that failed its condition is this very write: the SDK retries an attempt that timed out
/// (`[dynamodb] attempt_timeout_ms`), and when the timed-out attempt had in fact been written, the retry finds
/// its own item in place. That is a success, not a lost race: reporting a conflict would make the actor
/// re-decide against its own write and answer, say, 409 `order_already_exists` to a place that went through, and
/// a taken key would answer 422 `idempotency_key_reused` to the request that took it. An event is this write's
/// when its `eventId` (made once per append) matches; an idempotency record (written alone when a command makes
/// no event) when it is the same item, down to its `createdAt` millisecond. (Transactions need no such check:
/// the SDK's idempotency token makes DynamoDB answer a retried transaction with the first one's success.)
fn own_earlier_attempt(write: &Write, existing: Option<&Item>) -> bool {
    let Some(existing) = existing else { return false };
    match write.kind {
        Kind::Event => existing.get("eventId").is_some_and(|id| write.item.get("eventId") == Some(id)),
        Kind::Idempotency => existing == &write.item,
        Kind::Snapshot => false,
    }
}

/// The error when the condition of an item of this kind fails.
fn taken(kind: Kind) -> AppendError {
    match kind {
        Kind::Event => AppendError::Conflict,
        Kind::Idempotency => AppendError::IdempotencyKeyTaken,
        // Snapshots are written unconditionally; a failed condition there would be a bug, not a conflict.
        Kind::Snapshot => AppendError::Unavailable("unexpected condition failure on the snapshot".into()),
    }
}

/// Maps the cancellation reasons of a transaction (one per item, in request order) to an outcome. A taken
/// idempotency key wins over a taken version, as in the SQLite store (which checks the key first).
fn classify(writes: &[Write], reasons: &[CancellationReason]) -> Outcome {
    let mut key_taken = false;
    let mut version_taken = false;
    let mut transient = None;
    let mut other = None;
    for (i, reason) in reasons.iter().enumerate() {
        let code = reason.code().unwrap_or("None");
        match code {
            "None" => {}
            "ConditionalCheckFailed" => match writes.get(i).map(|w| w.kind) {
                Some(Kind::Idempotency) => key_taken = true,
                Some(Kind::Event) => version_taken = true,
                _ => other = Some(format!("item {i}: {code}")),
            },
            "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded" => {
                transient = Some(code.to_owned())
            }
            _ => other = Some(format!("item {i}: {code} {}", reason.message().unwrap_or_default())),
        }
    }
    if key_taken {
        Outcome::Failed(AppendError::IdempotencyKeyTaken)
    } else if version_taken {
        Outcome::Failed(AppendError::Conflict)
    } else if let Some(reason) = other {
        Outcome::Failed(AppendError::Unavailable(format!("transaction cancelled: {reason}")))
    } else {
        Outcome::Transient(transient.unwrap_or_else(|| "transaction cancelled without a reason".into()))
    }
}

fn corrupt(order_id: &OrderId, error: &str) -> StoreUnavailable {
    StoreUnavailable(format!("corrupt event item of order {order_id}: {error}"))
}

/// Now, to the millisecond: what `recordedAt` keeps, so an appended event equals the same event loaded.
fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, AppendError> {
        let now = now_ms();
        let stored: Vec<StoredEvent> = request
            .events
            .iter()
            .enumerate()
            .map(|(i, event)| StoredEvent {
                event_id: Uuid::now_v7(),
                order_id: request.order_id.clone(),
                version: request.expected_version + 1 + i as u64,
                position: 0,
                schema_version: codec::schema_version(event),
                recorded_at: now,
                traceparent: request.traceparent.clone(),
                event: event.clone(),
            })
            .collect();
        let writes = self.writes(&request, &stored, now).map_err(AppendError::Unavailable)?;
        if writes.len() > MAX_ITEMS_PER_APPEND {
            return Err(AppendError::Unavailable(format!(
                "an append is one DynamoDB transaction of at most {MAX_ITEMS_PER_APPEND} items (events, idempotency \
                 record, snapshot); this one has {} events and {} items in all",
                stored.len(),
                writes.len()
            )));
        }
        // One for the whole append: a retried call after one that may have landed leaves the append unknown.
        let delivery = Delivery::default();
        let mut attempt = 0;
        loop {
            let outcome = match writes.as_slice() {
                [] => Outcome::Done,
                [one] => self.put_one(one, &delivery).await,
                many => self.transact(many, &delivery).await,
            };
            match outcome {
                Outcome::Done => break,
                Outcome::Failed(e) => return Err(e),
                Outcome::Transient(reason) if attempt >= TRANSIENT_RETRIES => {
                    return Err(delivery.failed(format!("append cancelled {} times: {reason}", attempt + 1)));
                }
                Outcome::Transient(reason) => {
                    attempt += 1;
                    tracing::debug!(order_id = %request.order_id, %reason, attempt, "retrying a cancelled append");
                    // Backoff with a little jitter so two contenders do not collide again in lockstep.
                    let jitter = u64::from(Utc::now().timestamp_subsec_micros() % 20);
                    tokio::time::sleep(Duration::from_millis(20 * (1 << attempt) + jitter)).await;
                }
            }
        }
        for event in &stored {
            crate::telemetry::event_appended(event.event.type_name());
        }
        Ok(stored)
    }

    async fn load(&self, order_id: &OrderId) -> Result<LoadedStream, StoreUnavailable> {
        // Snapshot first, then the events after it: a snapshot is only ever written together with the events
        // up to its version, so whatever is appended in between is simply part of the tail.
        let snapshot = self.load_snapshot(order_id).await?;
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        let events = self.query_events(order_id, after).await?;
        Ok(LoadedStream { snapshot, events })
    }

    async fn history(&self, order_id: &OrderId) -> Result<Vec<StoredEvent>, StoreUnavailable> {
        self.query_events(order_id, 0).await
    }

    async fn idempotency_get(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreUnavailable> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.idempotency)
            .key("scope", string(scope))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreUnavailable(format!("get {}: {}", self.tables.idempotency, error_text(&e))))?;
        let Some(item) = output.item else { return Ok(None) };
        let decode = || -> Result<Option<IdempotencyRecord>, String> {
            let expires_at: i64 = attr::n(&item, "expiresAt")?;
            if expires_at < Utc::now().timestamp() {
                return Ok(None);
            }
            Ok(Some(IdempotencyRecord {
                scope: scope.to_owned(),
                request_hash: attr::s(&item, "requestHash")?.to_owned(),
                response: StoredResponse {
                    status: attr::n(&item, "status")?,
                    body: attr::s(&item, "body")?.to_owned(),
                    etag: attr::opt_s(&item, "etag")?,
                    location: attr::opt_s(&item, "location")?,
                },
            }))
        };
        decode().map_err(|e| StoreUnavailable(format!("corrupt idempotency record: {e}")))
    }

    async fn ping(&self) -> Result<(), StoreUnavailable> {
        self.client
            .describe_table()
            .table_name(&self.tables.events)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreUnavailable(format!("describe {}: {}", self.tables.events, error_text(&e))))
    }
}

/// Where a rebuild's scan goes on: the scan's `LastEvaluatedKey` (orderId, version), and how far that order
/// (the one cut off at the page end) was already delivered by the `Query` that completed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ScanCursor {
    #[serde(rename = "o")]
    order_id: String,
    #[serde(rename = "v")]
    version: u64,
    #[serde(rename = "d")]
    delivered: u64,
}

impl ScanCursor {
    fn decode(text: &str) -> Result<Self, StoreUnavailable> {
        serde_json::from_str(text).map_err(|_| StoreUnavailable(format!("not a rebuild cursor: {text:?}")))
    }

    fn start_key(&self) -> Item {
        HashMap::from([("orderId".to_owned(), string(&self.order_id)), ("version".to_owned(), num(self.version))])
    }

    /// True for an event the previous chunk already delivered.
    fn delivered(&self, event: &RawEvent) -> bool {
        event.order_id.as_str() == self.order_id && event.version <= self.delivered
    }
}

impl DynamoEventStore {
    /// The whole events table as written, in chunks (see [`RebuildSource::read`]).
    async fn scan_raw(&self, cursor: Option<&str>, limit: usize) -> Result<RawChunk, StoreUnavailable> {
        let table = &self.tables.events;
        let cursor = cursor.map(ScanCursor::decode).transpose()?;
        let page = self
            .client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX).max(1))
            .set_exclusive_start_key(cursor.as_ref().map(ScanCursor::start_key))
            .send()
            .await
            .map_err(|e| StoreUnavailable(format!("scan {table}: {}", error_text(&e))))?;
        let mut events = Vec::new();
        for item in page.items.unwrap_or_default() {
            let event = raw_from_item(&item).map_err(|e| StoreUnavailable(format!("corrupt item in {table}: {e}")))?;
            if !cursor.as_ref().is_some_and(|c| c.delivered(&event)) {
                events.push(event);
            }
        }
        // Version order within each order whatever order the page came in; across orders nothing is promised.
        events.sort_by(|a, b| (a.order_id.as_str(), a.version).cmp(&(b.order_id.as_str(), b.version)));
        let Some(key) = page.last_evaluated_key.filter(|k| !k.is_empty()) else {
            return Ok(RawChunk { events, next: None });
        };
        // The page may have stopped in the middle of an order: deliver the rest of it now, so that a view never
        // sees a later version of it before an earlier one, whichever way the next page starts.
        let decode = || -> Result<(OrderId, u64), String> {
            let id = OrderId::parse("orderId", attr::s(&key, "orderId")?).map_err(|e| e.message)?;
            Ok((id, attr::n(&key, "version")?))
        };
        let (order_id, version) =
            decode().map_err(|e| StoreUnavailable(format!("unexpected LastEvaluatedKey of {table}: {e}")))?;
        let have = events
            .iter()
            .filter(|e| e.order_id == order_id)
            .map(|e| e.version)
            .max()
            .or_else(|| cursor.as_ref().filter(|c| c.order_id == order_id.as_str()).map(|c| c.delivered))
            .unwrap_or(0);
        let rest = self.query_raw(&order_id, have).await?;
        let delivered = rest.last().map_or(have, |e| e.version);
        events.extend(rest);
        let next = ScanCursor { order_id: order_id.as_str().to_owned(), version, delivered };
        let next = serde_json::to_string(&next).map_err(|e| StoreUnavailable(format!("rebuild cursor: {e}")))?;
        Ok(RawChunk { events, next: Some(next) })
    }
}

#[async_trait]
impl RebuildSource for DynamoEventStore {
    async fn read(&self, cursor: Option<&str>, limit: usize) -> Result<RebuildChunk, StoreUnavailable> {
        let RawChunk { events, next } = self.scan_raw(cursor, limit).await?;
        let table = &self.tables.events;
        let events = events
            .iter()
            .map(|e| e.decode().map_err(|e| StoreUnavailable(format!("corrupt item in {table}: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(RebuildChunk { events, next, checkpoint: None })
    }

    /// A filtered scan of the whole events table (only the ids come back): as costly as a rebuild's read, and
    /// run once per rebuild, after its swap.
    async fn changed_since(&self, since: DateTime<Utc>) -> Result<Vec<OrderId>, StoreUnavailable> {
        let table = &self.tables.events;
        let mut orders = std::collections::BTreeSet::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(table)
                .filter_expression("recordedAt >= :since")
                .projection_expression("orderId")
                .expression_attribute_values(":since", num(since.timestamp_millis()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreUnavailable(format!("scan {table}: {}", error_text(&e))))?;
            for item in page.items.unwrap_or_default() {
                let id = attr::s(&item, "orderId").map_err(|e| StoreUnavailable(format!("scan {table}: {e}")))?;
                orders.insert(id.to_owned());
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(orders.into_iter().filter_map(|id| OrderId::parse("orderId", &id).ok()).collect())
    }

    /// The table's `ItemCount`: exact on DynamoDB Local, refreshed about every six hours on AWS, so progress
    /// can run past it there.
    async fn head(&self) -> u64 {
        match self.client.describe_table().table_name(&self.tables.events).send().await {
            Ok(output) => output.table.and_then(|t| t.item_count).map_or(0, |n| u64::try_from(n).unwrap_or(0)),
            Err(e) => {
                tracing::warn!(table = %self.tables.events, error = %error_text(&e), "no item count for rebuild progress");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Money, OrderEvent, Text};

    fn stored() -> StoredEvent {
        StoredEvent {
            event_id: Uuid::now_v7(),
            order_id: OrderId::parse("orderId", "o-1").unwrap(),
            version: 3,
            position: 0,
            schema_version: 1,
            recorded_at: now_ms(),
            // Stored with the event and read back with it (the bridge hands it on as a Kafka header).
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            event: OrderEvent::PaymentConfirmed {
                payment_id: Text::parse("paymentId", "p-1", 128).unwrap(),
                amount: Money::from_minor(1250),
                paid_at: now_ms(),
            },
        }
    }

    #[test]
    fn event_items_round_trip() {
        let event = stored();
        let item = event_item(&event).unwrap();
        assert_eq!(item.get("type"), Some(&string("PaymentConfirmed")));
        assert_eq!(item.get("version"), Some(&num(3)));
        assert_eq!(event_from_item(&item), Ok(event));
    }

    #[test]
    fn an_item_written_with_schema_version_1_reads_in_todays_shape() {
        // An `OrderPlaced` item as orderflow wrote it before schema version 2 (no `shippingAddress`).
        let payload = r#"{"type":"OrderPlaced","data":{"customerId":"c-1","currency":"EUR","items":[],"total":0,"placedAt":"2026-12-06T05:13:06.271Z"}}"#;
        let mut item = event_item(&stored()).unwrap();
        item.insert("type".into(), string("OrderPlaced"));
        item.insert("payload".into(), string(payload));
        item.insert("schemaVersion".into(), num(1));
        let event = event_from_item(&item).unwrap();
        assert_eq!(event.schema_version, 2);
        assert!(matches!(event.event, OrderEvent::OrderPlaced { shipping_address: None, .. }));
        // A version from a newer orderflow is refused, not misread.
        item.insert("schemaVersion".into(), num(3));
        assert!(event_from_item(&item).unwrap_err().contains("schema version 3"));
    }

    #[test]
    fn corrupt_items_are_errors_not_panics() {
        let mut item = event_item(&stored()).unwrap();
        item.insert("type".into(), string("OrderShipped"));
        assert!(event_from_item(&item).unwrap_err().contains("type"));
        item.remove("eventId");
        assert!(event_from_item(&item).is_err());
        let mut item = event_item(&stored()).unwrap();
        item.insert("version".into(), string("3"));
        assert!(event_from_item(&item).unwrap_err().contains("version"));
        item.insert("version".into(), num("-1"));
        assert!(event_from_item(&item).is_err());
    }

    #[test]
    fn a_retried_put_that_finds_its_own_event_succeeded() {
        let event = event_item(&stored()).unwrap();
        let write = |kind, item: &Item| Write { kind, table: "t".into(), item: item.clone(), condition: None };
        assert!(own_earlier_attempt(&write(Kind::Event, &event), Some(&event)));
        let mut other = event.clone();
        other.insert("eventId".into(), string(Uuid::now_v7().to_string()));
        assert!(!own_earlier_attempt(&write(Kind::Event, &event), Some(&other)));
        assert!(!own_earlier_attempt(&write(Kind::Event, &event), None));
        assert!(!own_earlier_attempt(&write(Kind::Snapshot, &event), Some(&event)));
    }

    #[test]
    fn a_retried_put_that_finds_its_own_idempotency_record_succeeded() {
        let record = HashMap::from([
            ("scope".to_owned(), string("admin POST /orders k1")),
            ("requestHash".to_owned(), string("h1")),
            ("status".to_owned(), num(200)),
            ("body".to_owned(), string("{}")),
            ("createdAt".to_owned(), num(1_700_000_000_123_i64)),
            ("expiresAt".to_owned(), num(1_700_086_400_i64)),
        ]);
        let write = Write { kind: Kind::Idempotency, table: "t".into(), item: record.clone(), condition: None };
        assert!(own_earlier_attempt(&write, Some(&record)));
        // Another request's record under the same key (another body, or the same body a moment apart) is not.
        let mut other = record.clone();
        other.insert("createdAt".into(), num(1_700_000_000_124_i64));
        assert!(!own_earlier_attempt(&write, Some(&other)));
        assert!(!own_earlier_attempt(&write, None));
    }

    #[test]
    fn only_a_refusal_or_a_connection_never_made_means_not_applied() {
        assert!(!attempt_may_have_applied(Some(400), false), "a failed condition, throttling, a bad request");
        assert!(attempt_may_have_applied(Some(500), false), "DynamoDB: a 500 may have succeeded");
        assert!(attempt_may_have_applied(Some(200), false), "an answer it could not read");
        assert!(attempt_may_have_applied(None, false), "a timeout or a connection cut after sending");
        assert!(!attempt_may_have_applied(None, true));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(refused_before_sending(&refused));
        let wrapped = std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!refused_before_sending(&wrapped), "reset after sending: may have been applied");
        let delivery = Delivery::default();
        assert!(matches!(delivery.failed("x".into()), AppendError::Unavailable(_)));
        delivery.maybe_applied.store(true, Ordering::SeqCst);
        assert!(matches!(delivery.failed("x".into()), AppendError::Unknown(_)));
    }

    #[test]
    fn cancellation_reasons_map_by_item() {
        let write = |kind| Write { kind, table: "t".into(), item: HashMap::new(), condition: None };
        let writes = [write(Kind::Event), write(Kind::Idempotency), write(Kind::Snapshot)];
        let reason = |code: &str| CancellationReason::builder().code(code).build();
        let none = reason("None");
        let failed = reason("ConditionalCheckFailed");
        let outcome = |reasons: &[CancellationReason]| match classify(&writes, reasons) {
            Outcome::Done => "done".to_owned(),
            Outcome::Transient(_) => "transient".to_owned(),
            Outcome::Failed(e) => format!("{e:?}"),
        };
        assert_eq!(outcome(&[failed.clone(), none.clone(), none.clone()]), "Conflict");
        assert_eq!(outcome(&[none.clone(), failed.clone(), none.clone()]), "IdempotencyKeyTaken");
        assert_eq!(outcome(&[failed.clone(), failed.clone(), none.clone()]), "IdempotencyKeyTaken");
        assert_eq!(outcome(&[reason("TransactionConflict"), none.clone(), none.clone()]), "transient");
        assert!(outcome(&[reason("ValidationError"), none.clone(), none]).starts_with("Unavailable"));
    }
}
