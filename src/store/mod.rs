//! The write model: the `EventStore` port and its adapters. Events are append-only; an append names the
//! version it expects the stream to be at, and the store refuses it (`AppendError::Conflict`) when another
//! writer got there first. An `Ok` from `append` means the events are durable.

pub mod codec;
pub mod dynamo;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Order, OrderEvent, OrderId};

/// One event as stored, with its place in the order's stream and (embedded profile) in the global log. Read
/// back (from JSON too) through the codec, so `event` always has today's shape and `schema_version` is the
/// version of that shape (see [`codec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "codec::RawStoredEvent")]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub version: u64,
    /// Position in the global log (embedded profile); 0 where the store has none.
    pub position: u64,
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    /// The W3C `traceparent` of the command that appended it (see `trace`), handed on to the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub event: OrderEvent,
}

impl StoredEvent {
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.event.occurred_at()
    }
}

/// A stream as loaded: the latest snapshot (if any) and the events after it.
#[derive(Debug, Clone, Default)]
pub struct LoadedStream {
    pub snapshot: Option<Order>,
    pub events: Vec<StoredEvent>,
}

impl LoadedStream {
    pub fn fold(&self, order_id: &OrderId) -> Option<Order> {
        Order::fold(self.snapshot.clone(), order_id, self.events.iter().map(|e| &e.event))
    }
}

/// The response a command produced, kept under its idempotency key so a retry gets it back verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    pub etag: Option<String>,
    pub location: Option<String>,
}

/// An idempotency key's record: who used it for what request (scope), a hash of the body, and the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub scope: String,
    pub request_hash: String,
    pub response: StoredResponse,
}

/// What one command wants written, all or nothing.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub order_id: OrderId,
    /// The version the stream must be at (0 for a new order).
    pub expected_version: u64,
    /// May be empty when only an idempotency record is written.
    pub events: Vec<OrderEvent>,
    /// State after the events, when it is time for a snapshot.
    pub snapshot: Option<Order>,
    pub idempotency: Option<IdempotencyRecord>,
    /// The command's W3C `traceparent`, stored with each of its events.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended to this stream since `expected_version`.
    #[error("the stream has moved past the expected version")]
    Conflict,
    /// The idempotency key was taken by a concurrent request.
    #[error("the idempotency key is already in use")]
    IdempotencyKeyTaken,
    /// Nothing was written; try again later.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The write was sent and its answer never came (a timeout mid-write): it may have landed, now or later.
    /// Only a retry with the same idempotency key (or a payment's `paymentId`) can tell.
    #[error("event store did not answer a write that it may have applied: {0}")]
    Unknown(String),
}

/// Reading failed; nothing is known. Maps to 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

impl From<StoreUnavailable> for AppendError {
    fn from(e: StoreUnavailable) -> Self {
        AppendError::Unavailable(e.0)
    }
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends atomically and durably, or not at all.
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, AppendError>;

    /// The latest snapshot and the events after it: enough to rebuild the current state.
    async fn load(&self, order_id: &OrderId) -> Result<LoadedStream, StoreUnavailable>;

    /// Every event of one order, in version order.
    async fn history(&self, order_id: &OrderId) -> Result<Vec<StoredEvent>, StoreUnavailable>;

    /// The live (unexpired) record of an idempotency key.
    async fn idempotency_get(&self, scope: &str) -> Result<Option<IdempotencyRecord>, StoreUnavailable>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreUnavailable>;
}

/// One step of reading the whole write model for a rebuild (see [`RebuildSource`]).
#[derive(Debug, Clone, Default)]
pub struct RebuildChunk {
    /// Each order's events in version order, every order's complete prefix before any later event of it.
    pub events: Vec<StoredEvent>,
    /// Where the next read starts (opaque to the caller); `None` once the whole write model has been read.
    pub next: Option<String>,
    /// The feed position after these events where the write model's log is also the feed (embedded): the
    /// rebuilt view stores it as its checkpoint. `None` where the feed keeps its own position (Kafka offsets).
    pub checkpoint: Option<u64>,
}

/// The whole write model, for rebuilding a view: read in chunks from an opaque cursor, because stores page
/// differently (the embedded log by global position, DynamoDB by a scan's `LastEvaluatedKey`). Across orders
/// there is no order; within an order the events always come in version order. It is the event store itself,
/// whose `history` a view's repair refolds (`projection::reconcile`).
#[async_trait]
pub trait RebuildSource: EventStore {
    /// About `limit` events after `cursor` (`None`: from the start).
    async fn read(&self, cursor: Option<&str>, limit: usize) -> Result<RebuildChunk, StoreUnavailable>;
    /// How far the source reaches now, for progress: the newest log position (embedded, in the same unit as
    /// [`RebuildChunk::checkpoint`]) or about how many events there are (otherwise); 0 when unknown.
    async fn head(&self) -> u64;

    /// The orders with an event recorded at or after `since`: those a rebuild that began then must check
    /// after its swap, because another instance may have written them to the view it replaced
    /// (`projection::reconcile`). None by default: a store whose views have a single writer (the embedded
    /// profile, whose rebuild pauses it) has nothing to reconcile.
    async fn changed_since(&self, _since: DateTime<Utc>) -> Result<Vec<OrderId>, StoreUnavailable> {
        Ok(Vec::new())
    }
}

/// What writing events as they are (import, migration) did: events written, and events found already there,
/// identical, and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub written: u64,
    pub skipped: u64,
}

impl std::ops::AddAssign for Imported {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.skipped += other.skipped;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The store holds another event at this (orderId, version): the histories disagree.
    #[error("order {order_id} version {version}: the store already holds a different event there ({detail})")]
    Different { order_id: OrderId, version: u64, detail: String },
    /// The events do not follow what the store holds of the order.
    #[error("order {order_id}: the events start at version {first} but the store holds no version {}", first - 1)]
    Gap { order_id: OrderId, first: u64 },
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// A stored event exactly as it was written: its payload in the shape of the schema version it was written
/// with, not upcast. Moving history (`orderflow migrate`, `import`, a lossless `export`) copies these, so a legacy
/// event arrives as the same legacy event, byte for byte (docs/design.md guarantee 2); only readers that use an
/// event ([`RawEvent::decode`]: actor load, history, the feed, rebuilds) see it in today's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub version: u64,
    /// Position in the global log (embedded profile); 0 where the store has none.
    pub position: u64,
    /// The event type (`OrderPlaced`, …).
    pub type_name: String,
    /// The schema version of the type that `payload` was written in.
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    /// `{"type": "<EventName>", "data": {…}}` as written.
    pub payload: String,
}

impl RawEvent {
    /// The event in today's shape (the codec's upcasters applied).
    pub fn decode(&self) -> Result<StoredEvent, codec::CodecError> {
        let event = codec::decode(&self.payload, self.schema_version)?;
        if event.type_name() != self.type_name {
            return Err(codec::CodecError(format!(
                "stored with type {} but the payload is a {}",
                self.type_name,
                event.type_name()
            )));
        }
        Ok(StoredEvent {
            event_id: self.event_id,
            order_id: self.order_id.clone(),
            version: self.version,
            position: self.position,
            schema_version: codec::schema_version(&event),
            recorded_at: self.recorded_at,
            traceparent: self.traceparent.clone(),
            event,
        })
    }

    /// How an event of today's shape is written.
    pub fn encode(event: &StoredEvent) -> Result<Self, codec::CodecError> {
        Ok(Self {
            event_id: event.event_id,
            order_id: event.order_id.clone(),
            version: event.version,
            position: event.position,
            type_name: event.event.type_name().to_owned(),
            schema_version: codec::schema_version(&event.event),
            recorded_at: event.recorded_at,
            traceparent: event.traceparent.clone(),
            payload: codec::encode(&event.event)?,
        })
    }

    /// True when two stored events are the same event (their place in a log aside): how an import recognises
    /// what a previous run already wrote.
    pub fn same_as(&self, other: &RawEvent) -> bool {
        Self { position: 0, ..self.clone() } == Self { position: 0, ..other.clone() }
    }
}

/// One step of reading the whole write model as written (see [`EventImport::read_raw`]).
#[derive(Debug, Clone, Default)]
pub struct RawChunk {
    /// Each order's events in version order, every order's complete prefix before any later event of it.
    pub events: Vec<RawEvent>,
    /// Where the next read starts (opaque to the caller); `None` once the whole write model has been read.
    pub next: Option<String>,
}

/// Reading and writing events *as they are* ([`RawEvent`]: their shape, ids, versions and timestamps kept) —
/// for `orderflow import`, `export` and `migrate` (`crate::lifecycle`). Commands never use it: they go through [`EventStore::append`].
#[async_trait]
pub trait EventImport: Send + Sync + 'static {
    /// Writes runs of events, each run one order's consecutive versions in version order, every event a
    /// conditional write of its (orderId, version). SQLite writes the whole call in one transaction; DynamoDB
    /// writes each order's events in version order, one conditional put each, so a crash leaves every order
    /// with a prefix of its run. A run's first version must follow what the store holds of the order
    /// ([`ImportError::Gap`]). Events already there and identical are skipped, which makes an import that is
    /// run again (after a crash) finish what the first one started; a different event at the same version is
    /// [`ImportError::Different`].
    ///
    /// `publish = false` marks the items so that the Streams bridge does not publish them (DynamoDB; see
    /// `crate::lifecycle`); the embedded store has no outside feed and ignores it.
    async fn import(&self, runs: &[Vec<RawEvent>], publish: bool) -> Result<Imported, ImportError>;

    /// Reads the whole write model as written, in chunks from an opaque cursor, as [`RebuildSource::read`]
    /// does in today's shape (same order, same cursors).
    async fn read_raw(&self, cursor: Option<&str>, limit: usize) -> Result<RawChunk, StoreUnavailable>;
}
