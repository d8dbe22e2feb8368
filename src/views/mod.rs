//! Read models. Each view is fed by a projector (see `actors::projector`) through the [`Projection`] port and
//! queried by the HTTP layer through its own query port ([`SearchView`], [`RevenueView`]).
//!
//! Projections are idempotent: each view records, in the same transaction as its update, the version it
//! has applied per order (and, on the embedded feed, its checkpoint), so a redelivered or replayed event
//! changes nothing.

pub mod parked;
mod recent;
pub mod revenue_dynamo;
pub mod revenue_sqlite;
pub mod rules;
pub mod search_meili;
pub mod search_sqlite;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::{Currency, CustomerId, Order, OrderId, OrderStatus};
use crate::store::StoredEvent;

/// The view's backend failed; the query or the batch can be retried. Maps to 503 on queries.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("view unavailable: {0}")]
    Unavailable(String),
    /// The view refuses this event (it will fail again as it is): retried a few times, then parked.
    #[error("event refused: {0}")]
    Rejected(String),
    /// An event arrived that cannot follow what the view holds (a gap in an order's versions).
    #[error("event {order_id} v{version} does not follow the view's v{have}")]
    OutOfOrder { order_id: String, version: u64, have: u64 },
}

impl From<crate::sql::DbError> for ViewError {
    fn from(e: crate::sql::DbError) -> Self {
        ViewError::Unavailable(e.to_string())
    }
}

impl From<rusqlite::Error> for ViewError {
    fn from(e: rusqlite::Error) -> Self {
        ViewError::Unavailable(e.to_string())
    }
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: u64,
    pub skipped: u64,
}

/// The search view's projection name (both adapters).
pub const SEARCH: &str = "search";
/// The revenue view's projection name (both adapters).
pub const REVENUE: &str = "revenue";
/// Every view that can be rebuilt: what `orderflow rebuild` accepts.
pub const NAMES: [&str; 2] = [SEARCH, REVENUE];

/// The write side of a view, driven by a projector.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's name (`search`, `revenue`): a metric label and an admin route segment.
    fn name(&self) -> &'static str;

    /// Applies the events (in feed order) idempotently; stores `checkpoint` (a feed position) in the same
    /// transaction when given.
    async fn apply(&self, events: &[StoredEvent], checkpoint: Option<u64>) -> Result<ApplyReport, ViewError>;

    /// The feed position this view has durably applied up to (embedded feed).
    async fn checkpoint(&self) -> Result<u64, ViewError>;

    /// Forgets the checkpoint so that the whole feed is delivered again (a replay; the view dedupes).
    async fn reset_checkpoint(&self) -> Result<(), ViewError>;

    /// Records `event` as applied without applying it (an admin discarded it), so the order's later events
    /// can follow. A no-op for an order the view does not hold.
    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError>;

    /// Starts a rebuild: an empty copy of the view (a SQLite generation, a Meilisearch index, DynamoDB tables)
    /// to fill from the write model and swap in, while queries keep being served from the current one.
    async fn rebuild(&self) -> Result<Box<dyn Rebuilder>, ViewError>;

    /// Rewrites one order's state in the view from its whole `history` (the write model's events, in version
    /// order), for a view whose state of the order may have gone stale, and answers the version the view holds
    /// after the write (read back). `None`: the view needs no repair, because each of its writes is conditional
    /// on what it holds or it has a single writer (see `projection::reconcile`).
    async fn repair(&self, _history: &[StoredEvent]) -> Result<Option<u64>, ViewError> {
        Ok(None)
    }

    /// Whether [`Projection::repair`] does anything here (so nothing is read for a view that never needs it).
    fn repairs(&self) -> bool {
        false
    }
}

/// A view being rebuilt (see [`Projection::rebuild`]). It applies events with the view's own apply logic, so a
/// rebuilt view is exactly what the projector would have made.
#[async_trait]
pub trait Rebuilder: Send {
    /// Applies events of the write model (each order's in version order). `checkpoint` is the feed position
    /// after them where the write model's log is also the feed (embedded), stored as the copy's checkpoint;
    /// `None` where the feed keeps its own position (Kafka).
    /// The events are shared so that a step can be retried and moved to another thread without a copy.
    async fn apply(&mut self, events: Arc<[StoredEvent]>, checkpoint: Option<u64>) -> Result<(), ViewError>;
    /// Swaps the rebuilt copy in: from now on queries and the projector use it; the old copy is removed.
    async fn finish(self: Box<Self>) -> Result<(), ViewError>;
    /// Gives the copy up after a failure, removing it where that is cheap; the current view stays as it is.
    async fn abort(self: Box<Self>) {}
}

/// Sorts of `GET /orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    PlacedAtDesc,
    PlacedAtAsc,
    TotalDesc,
    TotalAsc,
}

impl SortOrder {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "placedAt:desc" => Self::PlacedAtDesc,
            "placedAt:asc" => Self::PlacedAtAsc,
            "total:desc" => Self::TotalDesc,
            "total:asc" => Self::TotalAsc,
            _ => return None,
        })
    }

    pub fn descending(self) -> bool {
        matches!(self, Self::PlacedAtDesc | Self::TotalDesc)
    }

    /// The sort key of an order under this sort.
    pub fn key(self, order: &Order) -> i64 {
        match self {
            Self::PlacedAtDesc | Self::PlacedAtAsc => order.placed_at.timestamp_millis(),
            Self::TotalDesc | Self::TotalAsc => order.total.minor() as i64,
        }
    }
}

/// Where the next page starts. Opaque to clients; each search adapter uses the kind that suits its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// After the hit with this sort key and id (keyset pagination, stable under inserts): SQLite.
    After { key: i64, order_id: String },
    /// Skip this many hits: Meilisearch, which pages by offset.
    Offset(u64),
}

impl Cursor {
    pub fn encode(&self) -> String {
        let text = match self {
            Self::After { key, order_id } => format!("k:{key}:{order_id}"),
            Self::Offset(n) => format!("o:{n}"),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(value: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        match text.split_once(':')? {
            ("o", n) => Some(Self::Offset(n.parse().ok()?)),
            ("k", rest) => {
                let (key, id) = rest.split_once(':')?;
                let order_id = OrderId::parse("cursor", id).ok()?;
                Some(Self::After { key: key.parse().ok()?, order_id: order_id.as_str().to_owned() })
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub customer_id: Option<CustomerId>,
    pub status: Option<OrderStatus>,
    /// Words to match against item names and skus (all of them, as prefixes).
    pub text: Option<String>,
    pub placed_from: Option<DateTime<Utc>>,
    pub placed_to: Option<DateTime<Utc>>,
    pub sort: SortOrder,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    pub orders: Vec<Order>,
    pub next_cursor: Option<String>,
    pub estimated_total: u64,
}

/// An order's document as a search view serves it: the order, and its JSON serialized once (the answer to
/// `GET /orders/{id}` is these bytes as they are).
#[derive(Debug)]
pub struct Document {
    pub order: Order,
    pub json: bytes::Bytes,
}

impl Document {
    pub fn new(order: Order) -> Result<Self, ViewError> {
        let json = serde_json::to_vec(&order).map_err(|e| ViewError::Unavailable(e.to_string()))?;
        Ok(Self { order, json: json.into() })
    }

    /// A document stored as JSON text: read once, kept as it was written.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        let order = serde_json::from_str(&text)?;
        Ok(Self { order, json: text.into() })
    }
}

/// The query side of the search view.
#[async_trait]
pub trait SearchView: Send + Sync + 'static {
    async fn get(&self, order_id: &OrderId) -> Result<Option<Order>, ViewError>;
    /// The document with its JSON. Adapters that hold documents serialized answer without serializing again.
    async fn document(&self, order_id: &OrderId) -> Result<Option<Arc<Document>>, ViewError> {
        self.get(order_id).await?.map(|order| Document::new(order).map(Arc::new)).transpose()
    }
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, ViewError>;
    /// A cheap round trip to the backend, for readiness.
    async fn ping(&self) -> Result<(), ViewError>;
}

/// One (day, currency) row of `GET /revenue/daily`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevenueDay {
    pub date: NaiveDate,
    pub currency: String,
    pub gross_revenue: u64,
    pub refunds: u64,
    pub net_revenue: i64,
    pub paid_orders: u64,
    pub cancelled_orders: u64,
}

/// The query side of the revenue view.
#[async_trait]
pub trait RevenueView: Send + Sync + 'static {
    /// Days in `[from, to]` with activity, by date then currency.
    async fn daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        currency: Option<Currency>,
    ) -> Result<Vec<RevenueDay>, ViewError>;
    /// A cheap round trip to the backend, for readiness.
    async fn ping(&self) -> Result<(), ViewError>;
}

/// The most words a search matches on (Meilisearch stops at 10 too).
pub const MAX_SEARCH_WORDS: usize = 10;

/// Splits free text into the words a search matches on (letters and digits), lowercased, each once, words of
/// one character left out, at most [`MAX_SEARCH_WORDS`]. Every word is a prefix match over the whole text
/// index: a one-character prefix reads nearly all of it, and a hundred words a hundred times as much, so this
/// is what bounds the cost of any `q`. Both search adapters use it.
pub fn search_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase) {
        if terms.len() == MAX_SEARCH_WORDS {
            break;
        }
        if word.chars().count() >= 2 && !terms.contains(&word) {
            terms.push(word);
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor::After { key: -5, order_id: "o_1-x".into() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode(&Cursor::Offset(40).encode()), Some(Cursor::Offset(40)));
        assert_eq!(Cursor::decode("!!!"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("k:12:bad id")), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("o:-1")), None);
    }

    #[test]
    fn terms_split_on_punctuation() {
        assert_eq!(search_terms("Blue-Mug SKU_12 \"x\""), vec!["blue", "mug", "sku", "12"]);
        assert!(search_terms("  -- ").is_empty());
    }

    #[test]
    fn terms_are_bounded_one_character_words_and_repeats_dropped() {
        assert_eq!(search_terms("a mug b MUG mug c tea"), vec!["mug", "tea"]);
        assert!(search_terms(&"a ".repeat(100)).is_empty());
        let many: Vec<String> = (10..30).map(|n| format!("w{n}")).collect();
        assert_eq!(search_terms(&many.join(" ")), many[..MAX_SEARCH_WORDS].to_vec());
    }
}
